//! Metered events (`POST /v1/usage/events`, R12, R13): validated one by one, each reduced to what
//! its meter counts. A bad event is refused with the field named; the good ones of the same batch
//! are kept.
//!
//! Event types and their fields (besides `id`, `type`, `account` and `time`, RFC 3339):
//! - `ztna_session`: `user`, `authenticated`, `generated_traffic`, `remote` (booleans),
//!   `work_country` (ISO code: its region group gives the ZTNA region). Counted when
//!   authenticated, with traffic, and remote (not behind a site).
//! - `ai_security_activity`: `user`, `enabled`. Counted when enabled.
//! - `dem_user`: `user`.
//! - `device_sighting`: `device`, `source` (`inline`, `lan_discovery`, `integration`),
//!   `is_socket`. Counted unless it is a Socket.
//! - `data_lake_hour`: `count`, the events of the UTC hour that `time` falls in.
//!
//! An event's `time` must fall in this calendar month or the one before (UTC), and at most
//! [`MAX_AHEAD`] after now: a month is closed after it is finalized (R9), and a time from a
//! wrong clock (1970, 9999) would otherwise be billed in a month nobody bought.

use chrono::{DateTime, Days, TimeDelta, Timelike, Utc};
use serde_json::Value;
use tally_common::kinds::LicenseKind;
use tally_common::region::RegionTable;
use tally_common::time::{Month, rfc3339};

pub use crate::store::MeterEvent;
use crate::validation::FieldError;

/// Events per request.
pub const MAX_BATCH: usize = 10_000;
/// How far ahead of the collector's clock an event's time may be (the sender's clock may be a
/// little fast).
pub const MAX_AHEAD: TimeDelta = TimeDelta::minutes(5);

/// The times an event may have at `now`: from the first day of the previous month (UTC) to
/// [`MAX_AHEAD`] after `now`.
pub fn accepted_times(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let this_month = Month::containing(now.date_naive()).first_day();
    let previous = Month::containing(this_month - Days::new(1)).first_day();
    (previous.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(), now + MAX_AHEAD)
}

/// A request's events: the good ones with their index in the batch, and the errors of the bad.
#[derive(Debug, Default)]
pub struct Batch {
    pub good: Vec<(usize, MeterEvent)>,
    pub errors: Vec<FieldError>,
}

/// Validates the events of a request body (`{"events": [...]}`); each error names
/// `events[i].field`. A body without a list of events is one error.
pub fn parse_batch(body: &Value, regions: &RegionTable, now: DateTime<Utc>) -> Result<Batch, FieldError> {
    let events = body
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| FieldError::new("events", "required: a list of events"))?;
    if events.len() > MAX_BATCH {
        return Err(FieldError::new("events", format!("at most {MAX_BATCH} events per request")));
    }
    let mut batch = Batch::default();
    for (i, event) in events.iter().enumerate() {
        match parse_event(event, regions, accepted_times(now)) {
            Ok(event) => batch.good.push((i, event)),
            Err((field, message)) => batch.errors.push(FieldError::new(format!("events[{i}].{field}"), message)),
        }
    }
    Ok(batch)
}

type Invalid = (&'static str, String);

fn parse_event(
    value: &Value,
    regions: &RegionTable,
    (earliest, latest): (DateTime<Utc>, DateTime<Utc>),
) -> Result<MeterEvent, Invalid> {
    let text = |field: &'static str| -> Result<String, Invalid> {
        match value.get(field).and_then(Value::as_str) {
            Some(s) if !s.trim().is_empty() && s.len() <= 256 => Ok(s.to_owned()),
            Some(_) => Err((field, "must be 1 to 256 characters".into())),
            None => Err((field, "required: a string".into())),
        }
    };
    let flag = |field: &'static str| -> Result<bool, Invalid> {
        value.get(field).and_then(Value::as_bool).ok_or((field, "required: true or false".into()))
    };
    let id = text("id")?;
    let kind = text("type")?;
    let account = text("account")?;
    let time = text("time")?;
    let occurred_at = DateTime::parse_from_rfc3339(&time)
        .map_err(|e| ("time", format!("{time:?} is not an RFC 3339 time: {e}")))?
        .with_timezone(&Utc);
    if !(earliest..=latest).contains(&occurred_at) {
        let (from, to) = (rfc3339(earliest), rfc3339(latest));
        return Err(("time", format!("{time} is outside the accepted times, {from} to {to} (this month or the last)")));
    }
    let event = |meter, subject, region, quantity, counted| MeterEvent {
        id: id.clone(),
        account: account.clone(),
        meter,
        occurred_at,
        subject,
        region,
        quantity,
        counted,
        source: None,
    };
    Ok(match kind.as_str() {
        "ztna_session" => {
            let user = text("user")?;
            let counted = flag("authenticated")? & flag("generated_traffic")? & flag("remote")?;
            let country = text("work_country")?;
            let code = country.parse().map_err(|e| ("work_country", format!("{e}")))?;
            let group = regions.group_of(code).map_err(|e| ("work_country", e.to_string()))?;
            event(LicenseKind::ZtnaUsers, user, Some(group.ztna_region()), 1, counted)
        }
        "ai_security_activity" => {
            let user = text("user")?;
            event(LicenseKind::AiSecurityUsers, user, None, 1, flag("enabled")?)
        }
        "dem_user" => event(LicenseKind::DemUsers, text("user")?, None, 1, true),
        "device_sighting" => {
            let device = text("device")?;
            let source = text("source")?;
            if !["inline", "lan_discovery", "integration"].contains(&source.as_str()) {
                return Err(("source", format!("{source:?} is not one of inline, lan_discovery, integration")));
            }
            MeterEvent { source: Some(source), ..event(LicenseKind::Devices, device, None, 1, !flag("is_socket")?) }
        }
        "data_lake_hour" => {
            let count = event_count(value.get("count"))?;
            let hour = occurred_at.with_minute(0).and_then(|t| t.with_second(0)).and_then(|t| t.with_nanosecond(0));
            let hour = hour.ok_or(("time", "has no UTC hour".to_owned()))?;
            event(LicenseKind::DataLake, tally_common::time::rfc3339(hour), None, count, true)
        }
        other => {
            return Err((
                "type",
                format!(
                    "{other:?} is not one of ztna_session, ai_security_activity, dem_user, device_sighting, data_lake_hour"
                ),
            ));
        }
    })
}

fn event_count(value: Option<&Value>) -> Result<u64, Invalid> {
    value
        .and_then(Value::as_u64)
        .filter(|n| *n <= i64::MAX as u64)
        .ok_or(("count", "required: a non-negative integer".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn events_are_accepted_from_the_previous_month_to_a_little_ahead() {
        assert_eq!(
            accepted_times(at("2026-03-01T00:00:00Z")),
            (at("2026-02-01T00:00:00Z"), at("2026-03-01T00:05:00Z"))
        );
        assert_eq!(accepted_times(at("2027-01-31T23:59:59Z")).0, at("2026-12-01T00:00:00Z"));
        let regions = RegionTable::builtin();
        let now = at("2026-11-16T12:00:00Z");
        for (time, accepted) in [
            ("2026-10-01T00:00:00Z", true),
            ("2026-11-16T12:05:00Z", true),
            ("2026-09-30T23:59:59Z", false),
            ("2026-11-16T12:05:01Z", false),
            ("1970-01-01T00:00:00Z", false),
            ("0001-01-01T00:00:00Z", false),
            ("9999-12-31T23:59:59Z", false),
        ] {
            let event =
                serde_json::json!({"id": "e", "type": "dem_user", "account": "acme", "time": time, "user": "u"});
            let batch = parse_batch(&serde_json::json!({ "events": [event] }), &regions, now).unwrap();
            assert_eq!(batch.good.len() == 1, accepted, "{time}: {:?}", batch.errors);
            if !accepted {
                assert_eq!(batch.errors[0].field, "events[0].time");
            }
        }
    }
}
