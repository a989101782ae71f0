//! What a site's agent sent that was not billed, as the operator sees it: refusals per reason,
//! the agent's discard totals (R3), and the quarantine of buckets refused for their time (a
//! socket's wrong clock), which the operator accepts (as measured, or shifted by a whole number
//! of 5-minute slots) or discards. A quarantined bucket is never billed, deleted or re-dated
//! unless the operator says so.

use std::fmt::Write;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tally_common::bandwidth::Bandwidth;
use tally_common::bucket::Bucket;
use tally_common::time::{BucketStart, rfc3339};
use tally_common::wire::MAX_BUCKET_AHEAD;

use crate::accounts::ChangeError;
use crate::store::{SiteIntake, Store, StoreError};

/// `site intake` and `GET /v1/accounts/{account}/sites/{site}/intake`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IntakeReport {
    pub site: String,
    /// Buckets refused, by reason (`not_on_boundary`, `out_of_range`, `in_the_future`,
    /// `too_old`, `above_sanity_bound`, `bad_sample_count`); quarantined ones included.
    pub refusals: Vec<RefusalView>,
    /// The discard totals the agent last sent (R3); `null` before its first batch.
    pub agent_discards: Option<DiscardsView>,
    /// Buckets refused for their time and kept, oldest first: not billed until accepted.
    pub quarantined: Vec<QuarantinedView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RefusalView {
    pub reason: String,
    pub count: u64,
    pub last_at: String,
}

/// Intervals the agent measured no sample for, by reason, since its store was created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DiscardsView {
    pub counter_reset: u64,
    pub above_cap: u64,
    pub elapsed_too_short: u64,
    pub elapsed_too_long: u64,
    pub reported_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QuarantinedView {
    pub start: String,
    pub max_bps: u64,
    pub samples: u8,
    /// `in_the_future` or `too_old`.
    pub reason: String,
    pub quarantined_at: String,
}

impl IntakeReport {
    fn new(site: &str, intake: &SiteIntake) -> IntakeReport {
        IntakeReport {
            site: site.to_owned(),
            refusals: intake
                .refusals
                .iter()
                .map(|r| RefusalView { reason: r.reason.name().into(), count: r.count, last_at: rfc3339(r.last_at) })
                .collect(),
            agent_discards: intake.discards.as_ref().map(|d| DiscardsView {
                counter_reset: d.counters.counter_reset,
                above_cap: d.counters.above_cap,
                elapsed_too_short: d.counters.elapsed_too_short,
                elapsed_too_long: d.counters.elapsed_too_long,
                reported_at: rfc3339(d.reported_at),
            }),
            quarantined: intake
                .quarantined
                .iter()
                .map(|q| QuarantinedView {
                    start: q.bucket.start.to_string(),
                    max_bps: q.bucket.max_bps,
                    samples: q.bucket.samples,
                    reason: q.reason.name().into(),
                    quarantined_at: rfc3339(q.at),
                })
                .collect(),
        }
    }
}

/// The site's intake report.
pub async fn report(store: &impl Store, site: &str) -> Result<IntakeReport, StoreError> {
    Ok(IntakeReport::new(site, &store.site_intake(site).await?))
}

/// The report for people.
pub fn table(report: &IntakeReport) -> String {
    let mut out = format!("site {}\n", report.site);
    if report.refusals.is_empty() {
        out += "refused buckets: none\n";
    }
    for r in &report.refusals {
        let _ = writeln!(out, "refused {:<20} {:>8}  last {}", r.reason, r.count, r.last_at);
    }
    match &report.agent_discards {
        Some(d) => {
            let _ = writeln!(
                out,
                "agent discards (R3): counter_reset {}, above_cap {}, elapsed_too_short {}, elapsed_too_long {} \
                 (reported {})",
                d.counter_reset, d.above_cap, d.elapsed_too_short, d.elapsed_too_long, d.reported_at
            );
        }
        None => out += "agent discards (R3): none reported yet\n",
    }
    let _ = writeln!(out, "quarantined buckets: {}", report.quarantined.len());
    for q in &report.quarantined {
        let _ = writeln!(
            out,
            "  {}  {:>12}  {:>2} samples  {:<13}  since {}",
            q.start,
            Bandwidth(q.max_bps).to_string(),
            q.samples,
            q.reason,
            q.quarantined_at
        );
    }
    out
}

/// What the operator does with a site's quarantine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Bill the buckets at their start moved by `shift` (zero: as measured).
    Accept {
        shift: TimeDelta,
    },
    Discard,
}

/// Empties the site's quarantine as `release` says, all or nothing. An accepted bucket must not
/// start in the future (past `now` plus the usual margin) once shifted, and the shift must be
/// a whole number of 5-minute slots. Returns how many buckets left the quarantine.
pub async fn release(store: &impl Store, site: &str, release: Release, now: DateTime<Utc>) -> Result<u64, ChangeError> {
    let held = store.site_intake(site).await?.quarantined;
    let released: Vec<BucketStart> = held.iter().map(|q| q.bucket.start).collect();
    let accepted = match release {
        Release::Discard => Vec::new(),
        Release::Accept { shift } => {
            let mut accepted = Vec::with_capacity(held.len());
            for q in &held {
                let moved = q.bucket.start.unix().checked_add(shift.num_seconds());
                let start = moved.and_then(|s| BucketStart::from_unix(s).ok()).ok_or_else(|| {
                    ChangeError::Invalid(format!(
                        "a shift of {} minutes does not move {} to a 5-minute boundary: nothing was changed",
                        shift.num_minutes(),
                        q.bucket.start
                    ))
                })?;
                if start.time() > now + MAX_BUCKET_AHEAD {
                    return Err(ChangeError::Invalid(format!(
                        "{start} (quarantined as {}) is still in the future: shift it back with --shift-minutes; \
                         nothing was changed",
                        q.bucket.start
                    )));
                }
                accepted.push(Bucket { start, ..q.bucket });
            }
            accepted
        }
    };
    Ok(store.release_quarantined(site, &released, &accepted).await?)
}
