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
//! An event's `time` must be at most `max_event_age_days` old and at most [`MAX_AHEAD`] after now
//! (a time from a wrong clock, 1970 or 9999, is refused rather than billed), and not before the
//! account's life began (checked by the caller, who knows the accounts). An event of a finalized
//! month is stored and counted as late, and never changes it (R33).

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use serde_json::Value;
use tally_common::kinds::LicenseKind;
use tally_common::region::RegionTable;
use tally_common::time::rfc3339;

pub use crate::store::MeterEvent;
use crate::validation::FieldError;

/// Events per request.
pub const MAX_BATCH: usize = 10_000;
/// How far ahead of the collector's clock an event's time may be (the sender's clock may be a
/// little fast).
pub const MAX_AHEAD: TimeDelta = TimeDelta::minutes(5);

/// The largest event count accepted (2⁵³ − 1): JSON carries it exactly, and a month's sums of
/// such counts stay far from overflowing.
pub const MAX_COUNT: u64 = (1 << 53) - 1;

/// The times an event may have at `now`: from `max_age` before it to [`MAX_AHEAD`] after it.
pub fn accepted_times(now: DateTime<Utc>, max_age: TimeDelta) -> (DateTime<Utc>, DateTime<Utc>) {
    (now - max_age, now + MAX_AHEAD)
}

/// A request's events: the good ones with their index in the batch, and the errors of the bad.
#[derive(Debug, Default)]
pub struct Batch {
    pub good: Vec<(usize, MeterEvent)>,
    pub errors: Vec<FieldError>,
}

/// Validates the events of a request body (`{"events": [...]}`); each error names
/// `events[i].field`. A body without a list of events is one error.
pub fn parse_batch(
    body: &Value,
    regions: &RegionTable,
    (now, max_age): (DateTime<Utc>, TimeDelta),
) -> Result<Batch, FieldError> {
    let events = body
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| FieldError::new("events", "required: a list of events"))?;
    if events.len() > MAX_BATCH {
        return Err(FieldError::new("events", format!("at most {MAX_BATCH} events per request")));
    }
    let mut batch = Batch::default();
    for (i, event) in events.iter().enumerate() {
        match parse_event(event, regions, accepted_times(now, max_age)) {
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
        return Err((
            "time",
            format!("{time} is outside the accepted times, {from} to {to} (at most max_event_age_days old)"),
        ));
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
    let count = value.and_then(Value::as_u64).ok_or(("count", "required: a non-negative integer".to_owned()))?;
    match count <= MAX_COUNT {
        true => Ok(count),
        false => Err(("count", format!("{count} is more than the largest count accepted, {MAX_COUNT} (2^53 - 1)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn events_are_accepted_back_to_their_maximum_age_and_a_little_ahead() {
        let days_62 = TimeDelta::days(62);
        assert_eq!(
            accepted_times(at("2026-03-01T00:00:00Z"), days_62),
            (at("2025-12-29T00:00:00Z"), at("2026-03-01T00:05:00Z"))
        );
        let regions = RegionTable::builtin();
        let now = at("2026-11-16T12:00:00Z");
        for (time, accepted) in [
            ("2026-09-15T12:00:00Z", true),
            ("2026-10-01T00:00:00Z", true),
            ("2026-11-16T12:05:00Z", true),
            ("2026-09-15T11:59:59Z", false),
            ("2026-11-16T12:05:01Z", false),
            ("1970-01-01T00:00:00Z", false),
            ("0001-01-01T00:00:00Z", false),
            ("9999-12-31T23:59:59Z", false),
        ] {
            let event =
                serde_json::json!({"id": "e", "type": "dem_user", "account": "acme", "time": time, "user": "u"});
            let batch = parse_batch(&serde_json::json!({ "events": [event] }), &regions, (now, days_62)).unwrap();
            assert_eq!(batch.good.len() == 1, accepted, "{time}: {:?}", batch.errors);
            if !accepted {
                assert_eq!(batch.errors[0].field, "events[0].time");
            }
        }
    }

    #[test]
    fn a_count_beyond_2_pow_53_minus_1_is_refused_by_name() {
        let regions = RegionTable::builtin();
        let now = at("2026-11-16T12:00:00Z");
        for (count, accepted) in [(MAX_COUNT, true), (MAX_COUNT + 1, false), (u64::MAX, false)] {
            let event = serde_json::json!({"id": "e", "type": "data_lake_hour", "account": "acme",
                "time": "2026-11-16T10:00:00Z", "count": count});
            let batch = parse_batch(&serde_json::json!({ "events": [event] }), &regions, (now, TimeDelta::days(62)));
            let batch = batch.unwrap();
            assert_eq!(batch.good.len() == 1, accepted, "{count}");
            if !accepted {
                assert_eq!(batch.errors[0].field, "events[0].count");
                assert!(batch.errors[0].message.contains("9007199254740991"), "{:?}", batch.errors);
            }
        }
    }
}
