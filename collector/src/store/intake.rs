//! What agents send besides the buckets that are billed: buckets kept in quarantine for their
//! time, refusals counted per site and reason, the agents' own discard totals (R3); and when
//! each site last sent a bucket and was last connected.

use std::future::Future;

use chrono::{DateTime, Utc};
use tally_common::bucket::Bucket;
use tally_common::sampler::DiscardCounters;
use tally_common::time::BucketStart;
use tally_common::wire::Refusal;

use super::{Measured, MergeStats, StoreError};

/// A site's quarantine holds at most this many buckets (100 days of a clock gone wrong); beyond,
/// a bucket refused for its time is only counted.
pub const MAX_QUARANTINED_PER_SITE: u64 = 28_800;

/// One agent's batch, checked, as the store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intake {
    pub site: String,
    /// Billed: merged as `merge_buckets` does (R10), each judged by its stamp (R26).
    pub buckets: Vec<Measured>,
    /// Sound but refused for their time ([`Refusal::is_a_clock_fault`]): quarantined.
    pub wrong_time: Vec<(Bucket, Refusal)>,
    /// Refused outright.
    pub refused: Vec<Refusal>,
    /// The agent's discard totals, replacing the ones it sent before.
    pub discards: DiscardCounters,
}

/// What [`IntakeStore::ingest`] did with one [`Intake`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    /// How many of its `wrong_time` buckets (the first ones) went into the quarantine; the rest
    /// found it full and were only counted.
    pub quarantined: usize,
}

/// A bucket in quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedBucket {
    pub bucket: Bucket,
    pub reason: Refusal,
    /// When it last arrived.
    pub at: DateTime<Utc>,
}

/// Buckets of one site refused for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalCount {
    pub reason: Refusal,
    pub count: u64,
    pub last_at: DateTime<Utc>,
}

/// The discard totals a site's agent last sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentDiscards {
    pub counters: DiscardCounters,
    pub reported_at: DateTime<Utc>,
}

/// Everything kept about what a site's agent sent and was not billed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteIntake {
    /// By reason.
    pub refusals: Vec<RefusalCount>,
    pub discards: Option<AgentDiscards>,
    /// Buckets in quarantine, oldest start first.
    pub quarantined: Vec<QuarantinedBucket>,
}

/// When a site last sent a bucket, and when its agent was last connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteActivity {
    pub site: String,
    pub account: String,
    /// The start of its latest bucket; `None` before the first.
    pub last_bucket: Option<BucketStart>,
    /// `None` if its agent never connected.
    pub last_connected: Option<DateTime<Utc>>,
    /// When the site was added: a site is expected to report from then on.
    pub added_at: DateTime<Utc>,
}

/// A row of `site_activity`'s query: site, account, latest bucket start, last connection, added.
pub(super) type ActivityRow = (String, String, Option<i64>, Option<String>, String);

/// The agents' batches as a whole: billed buckets, quarantine, refusals, discard totals; and
/// the sites' activity.
pub trait IntakeStore: Send + Sync {
    /// Stores batches of any sites in one transaction, all or nothing: their buckets merged as
    /// [`super::BucketStore::merge_buckets`] merges them, their wrong-time buckets quarantined
    /// (merged with `max` per site and start, up to [`MAX_QUARANTINED_PER_SITE`]), their
    /// refusals counted (quarantined ones included), their discard totals kept.
    fn ingest(
        &self,
        batches: &[Intake],
    ) -> impl Future<Output = Result<(MergeStats, Vec<Ingested>), StoreError>> + Send;
    fn site_intake(&self, site: &str) -> impl Future<Output = Result<SiteIntake, StoreError>> + Send;
    /// Keeps when each site's agent was last connected, the latest time winning.
    fn record_presence(&self, seen: &[(String, DateTime<Utc>)]) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every site's activity (of `account`, or of all), by site.
    fn site_activity(
        &self,
        account: Option<&str>,
    ) -> impl Future<Output = Result<Vec<SiteActivity>, StoreError>> + Send;
    /// Takes the buckets starting at `released` out of the site's quarantine and merges `accepted`
    /// as buckets (R10), in one transaction. Returns how many left the quarantine.
    fn release_quarantined(
        &self,
        site: &str,
        released: &[BucketStart],
        accepted: &[Bucket],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
