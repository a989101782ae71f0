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

use chrono::{DateTime, Timelike, Utc};
use serde_json::Value;
use tally_common::kinds::LicenseKind;
use tally_common::region::RegionTable;

pub use crate::store::MeterEvent;
use crate::validation::FieldError;

/// Events per request.
pub const MAX_BATCH: usize = 10_000;

/// A request's events: the good ones with their index in the batch, and the errors of the bad.
#[derive(Debug, Default)]
pub struct Batch {
    pub good: Vec<(usize, MeterEvent)>,
    pub errors: Vec<FieldError>,
}

/// Validates the events of a request body (`{"events": [...]}`); each error names
/// `events[i].field`. A body without a list of events is one error.
pub fn parse_batch(body: &Value, regions: &RegionTable) -> Result<Batch, FieldError> {
    let events = body
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| FieldError::new("events", "required: a list of events"))?;
    if events.len() > MAX_BATCH {
        return Err(FieldError::new("events", format!("at most {MAX_BATCH} events per request")));
    }
    let mut batch = Batch::default();
    for (i, event) in events.iter().enumerate() {
        match parse_event(event, regions) {
            Ok(event) => batch.good.push((i, event)),
            Err((field, message)) => batch.errors.push(FieldError::new(format!("events[{i}].{field}"), message)),
        }
    }
    Ok(batch)
}

type Invalid = (&'static str, String);

fn parse_event(value: &Value, regions: &RegionTable) -> Result<MeterEvent, Invalid> {
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
    let event = |meter, subject, region, quantity, counted| MeterEvent {
        id: id.clone(),
        account: account.clone(),
        meter,
        occurred_at,
        subject,
        region,
        quantity,
        counted,
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
            event(LicenseKind::Devices, device, None, 1, !flag("is_socket")?)
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
