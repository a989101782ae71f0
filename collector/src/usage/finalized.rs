//! A finalized month as it is read (R9): the document the engine saved, which never changes, and
//! the overlays read beside it — when it was finalized, the buckets and events that arrived
//! later, its over-usage with their resolutions.
//!
//! The document is saved without the overlays' fields ([`document`]), so the API serves its saved
//! bytes with the overlays spliced in, never parsing it; an entity tag over the document and the
//! overlays lets a client that has it ask again for nothing (`If-None-Match`, 304), and is
//! computed from small reads without the document. A document saved before (with the overlays'
//! fields at their first values), or a month with late events (whose figures come from the
//! document's meters), is parsed: served as [`report::build`](super::report::build) makes it.
//!
//! What parses documents to render them (the console) keeps the last few parsed in [`Parsed`]:
//! a document never changes, so a parse holds as long as the month's finalization does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tally_common::kinds::LicenseKind;
use tally_common::time::{Month, MonthWindowSetting, rfc3339};

use super::document::{OverusageReport, UsageReport, WindowJson};
use crate::digest::sha256_hex;
use crate::store::{Store, StoreError};

/// The fields of a report that a finalized month's overlays give; never in its saved document.
const OVERLAID: [&str; 4] = ["finalized_at", "late_buckets", "late_events", "overusage"];

/// A report as the engine saves it when it finalizes the month: without the overlays' fields.
pub fn document(report: &UsageReport) -> Result<String, StoreError> {
    let unwritable = |e: serde_json::Error| StoreError::Database(format!("a report cannot be written as JSON: {e}"));
    let mut value = serde_json::to_value(report).map_err(unwritable)?;
    if let Some(fields) = value.as_object_mut() {
        for field in OVERLAID {
            fields.remove(field);
        }
    }
    serde_json::to_string(&value).map_err(unwritable)
}

/// A finalized month's answer: its entity tag and what to send.
#[derive(Debug)]
pub struct Served {
    /// A strong entity tag, quoted as the `ETag` header wants it.
    pub etag: String,
    pub body: Body,
}

#[derive(Debug)]
pub enum Body {
    /// `If-None-Match` named the tag: nothing.
    Unchanged,
    /// The report as JSON ending with a newline.
    Saved(Vec<u8>),
    /// The document is to be parsed: the report as `report::build` makes it.
    Parse,
}

/// What the overlays are made from, read without the document: the entity tag's input.
#[derive(Serialize)]
struct OverlayFacts<'a> {
    account: &'a str,
    month: Month,
    finalized_at: String,
    /// The month's late buckets, over the calendar month (the window is the document's).
    late_buckets_in_month: u64,
    late_events: Vec<(LicenseKind, u64)>,
    late_lan_sightings: u64,
    overusage: Vec<OverusageReport>,
}

/// `account`'s finalized `month` for the API, or `None` when the month is not finalized (its
/// report is computed each time). `if_none_match` is the request's header, if any.
pub async fn serve<S: Store>(
    store: &S,
    account: &str,
    month: Month,
    if_none_match: Option<&str>,
) -> Result<Option<Served>, StoreError> {
    let key = month.to_string();
    let Some(finalized_at) = store.finalized_at(account, &key).await? else { return Ok(None) };
    let calendar = month.window(MonthWindowSetting::Calendar);
    let (late_buckets_in_month, late_events, late_lan_sightings, overusage) = tokio::try_join!(
        store.late_buckets(account, &key, calendar.start_time(), calendar.end_time()),
        store.events_received_after(account, &key, finalized_at),
        store.lan_sightings_received_after(account, &key, finalized_at),
        store.overusages(account, &key),
    )?;
    let facts = OverlayFacts {
        account,
        month,
        finalized_at: rfc3339(finalized_at),
        late_buckets_in_month,
        late_events,
        late_lan_sightings,
        overusage: overusage.iter().map(OverusageReport::from).collect(),
    };
    let facts_json = serde_json::to_vec(&facts).map_err(|e| StoreError::Database(e.to_string()))?;
    let etag = format!("\"{}\"", &sha256_hex(&facts_json)[..32]);
    let body = match if_none_match.is_some_and(|header| names_tag(header, &etag)) {
        true => Body::Unchanged,
        false => spliced(store, &facts, finalized_at).await?.map_or(Body::Parse, Body::Saved),
    };
    Ok(Some(Served { etag, body }))
}

/// Whether an `If-None-Match` header names `etag` (or is `*`).
fn names_tag(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

/// The saved document with the overlays spliced in, when that is how it can be served: a
/// document saved without the overlays' fields, and no late event.
async fn spliced<S: Store>(
    store: &S,
    facts: &OverlayFacts<'_>,
    finalized_at: DateTime<Utc>,
) -> Result<Option<Vec<u8>>, StoreError> {
    if !facts.late_events.is_empty() || facts.late_lan_sightings > 0 {
        return Ok(None);
    }
    let key = facts.month.to_string();
    let Some((_, document)) = store.finalized_report(facts.account, &key).await? else { return Ok(None) };
    let document = document.trim_end();
    // A document saved before the overlays were kept apart holds their fields (unescaped, a key
    // of the report itself: text inside a string has its quotes escaped).
    if OVERLAID.iter().any(|field| document.contains(&format!("\"{field}\":"))) || !document.ends_with('}') {
        return Ok(None);
    }
    let Some(window) = window_of(document) else { return Ok(None) };
    let late_buckets = match facts.late_buckets_in_month {
        0 => 0,
        _ => {
            let (from, until) = (parsed_time(&window.start)?, parsed_time(&window.end)?);
            store.late_buckets(facts.account, &key, from, until).await?
        }
    };
    #[derive(Serialize)]
    struct Overlays<'a> {
        finalized_at: String,
        late_buckets: u64,
        overusage: &'a [OverusageReport],
    }
    let overlays = Overlays { finalized_at: rfc3339(finalized_at), late_buckets, overusage: &facts.overusage };
    let overlays = serde_json::to_string(&overlays).map_err(|e| StoreError::Database(e.to_string()))?;
    let mut body = Vec::with_capacity(document.len() + overlays.len() + 2);
    body.extend_from_slice(&document.as_bytes()[..document.len() - 1]);
    body.push(b',');
    body.extend_from_slice(&overlays.as_bytes()[1..]);
    body.push(b'\n');
    Ok(Some(body))
}

/// The window a saved document was computed over, read from its `"window"` field without
/// parsing the rest (the field comes near its start).
fn window_of(document: &str) -> Option<WindowJson> {
    let at = document.find("\"window\":")? + "\"window\":".len();
    let mut fields = serde_json::Deserializer::from_str(&document[at..]);
    serde::Deserialize::deserialize(&mut fields).ok()
}

fn parsed_time(text: &str) -> Result<DateTime<Utc>, StoreError> {
    text.parse().map_err(|_| StoreError::Corrupt(format!("a finalized report's window bound {text:?}")))
}

/// Documents parsed lately, each by account, month and the time it was finalized (which names it:
/// a month is finalized once). Bounded: the last [`Parsed::KEPT`] read.
#[derive(Debug, Default)]
pub struct Parsed(Mutex<VecDeque<(Key, Arc<UsageReport>)>>);

type Key = (String, Month, DateTime<Utc>);

impl Parsed {
    /// Documents kept: a 1,000-site month is a few MiB parsed.
    pub const KEPT: usize = 4;

    /// The document of `account`'s `month` finalized at `at`, parsed, if it was lately.
    pub fn get(&self, account: &str, month: Month, at: DateTime<Utc>) -> Option<Arc<UsageReport>> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().find(|((a, m, t), _)| a == account && *m == month && *t == at).map(|(_, r)| r.clone())
    }

    /// Keeps a parsed document, forgetting the oldest beyond [`Parsed::KEPT`].
    pub fn keep(&self, account: &str, month: Month, at: DateTime<Utc>, document: Arc<UsageReport>) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|((a, m, _), _)| !(a == account && *m == month));
        kept.push_back(((account.to_owned(), month, at), document));
        while kept.len() > Self::KEPT {
            kept.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_documents_are_found_by_their_finalization_and_the_oldest_forgotten() {
        let document: UsageReport = serde_json::from_value(serde_json::json!({
            "account": "acme", "month": "2026-10", "status": "finalized",
            "window": {"start": "2026-10-01T00:00:00Z", "end": "2026-10-31T00:00:00Z", "setting": "article"},
            "bandwidth_pool": [], "sites": [], "meters": [], "generated_at": "2026-11-16T12:00:00Z",
        }))
        .unwrap();
        let (document, at) = (Arc::new(document), DateTime::<Utc>::from_timestamp(1_790_000_000, 0).unwrap());
        let month = |m: u32| Month::new(2026, m).unwrap();
        let parsed = Parsed::default();
        parsed.keep("acme", month(10), at, document.clone());
        assert!(parsed.get("acme", month(10), at).is_some());
        assert!(
            parsed.get("acme", month(10), at + chrono::TimeDelta::milliseconds(1)).is_none(),
            "another finalization"
        );
        assert!(parsed.get("other", month(10), at).is_none());
        for m in 1..=Parsed::KEPT as u32 {
            parsed.keep("acme", month(m), at, document.clone());
        }
        assert!(parsed.get("acme", month(10), at).is_none(), "the oldest forgotten");
        assert!(parsed.get("acme", month(1), at).is_some());
    }
}
