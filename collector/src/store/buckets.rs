//! Buckets and site-days: the 5-minute maxima agents send (R10) and each site's daily P95 (R5).

use std::future::Future;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use tally_common::bucket::Bucket;
use tally_common::p95::DailyP95;
use tally_common::time::BucketStart;

use super::StoreError;

/// A site's day whose buckets changed since its daily P95 was last computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyDay {
    pub site: String,
    pub day: NaiveDate,
    /// Bumped by every merge into the day: a recomputation clears only the generation it read.
    pub generation: i64,
}

/// A site-day's key: (site, day).
pub type DayKey = (String, NaiveDate);

/// Site-day keys after `after` through `through`, in (site, day) order; `None` leaves that end
/// open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRange {
    pub after: Option<DayKey>,
    pub through: Option<DayKey>,
}

/// A dirty day with its buckets' `(start, max_bps)`.
pub type DirtyDayBuckets = (DirtyDay, Vec<(BucketStart, u64)>);

/// A site's computed day (R5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteDay {
    pub site: String,
    pub day: NaiveDate,
    pub p95: DailyP95,
}

/// An account's days read in one snapshot: the computed days (R5), and the days whose buckets
/// changed since, with their buckets, for the reader to compute in memory (R35).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteDays {
    pub computed: Vec<SiteDay>,
    pub dirty: Vec<DirtyDayBuckets>,
}

/// A bucket to bill, with the policy version its socket stamped on it: the cap it enforced while
/// measuring (R26, wire protocol 2). `None`: unstamped (version 1, `import-buckets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    pub bucket: Bucket,
    pub policy_version: Option<u64>,
}

impl From<Bucket> for Measured {
    fn from(bucket: Bucket) -> Measured {
        Measured { bucket, policy_version: None }
    }
}

/// What a merge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Rows that did not exist.
    pub inserted: u64,
    /// Rows that existed and were merged with max (R10).
    pub merged: u64,
}

/// Buckets as agents measured them (R10), the dirty-day marks they leave, and each site's computed days (R5).
pub trait BucketStore: Send + Sync {
    /// Merges buckets of any sites in one transaction (R10): all or nothing. The days they fall
    /// on are marked dirty, and buckets above their site's cap × 1.05 recorded as enforcement
    /// violations (R17), in the same transaction.
    fn merge_buckets(&self, rows: &[(&str, Bucket)]) -> impl Future<Output = Result<MergeStats, StoreError>> + Send;
    /// A site's buckets of one UTC day, in time order.
    fn buckets_of_day(
        &self,
        site: &str,
        day: NaiveDate,
    ) -> impl Future<Output = Result<Vec<Bucket>, StoreError>> + Send;
    /// How many of `account`'s buckets of finalized `month` (`YYYY-MM`) starting in
    /// `[from, until)` arrived after it was finalized (R9, whether new or sent again): noted as
    /// they arrive, so this reads only them.
    fn late_buckets(
        &self,
        account: &str,
        month: &str,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// The key in the middle of the dirty days unclaimed at `now`, to split them in halves;
    /// `None` when none is.
    fn dirty_days_midpoint(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<DayKey>, StoreError>> + Send;
    /// Claims up to `limit` dirty days of `range` unclaimed at `now`, by site and day, each with
    /// its buckets' starts and maxima (in no particular order): everything a recomputation
    /// reads. Each is this caller's until `now + lease` (R30: collectors recompute different
    /// days; a day whose claimant dies is taken again after its lease).
    fn claim_dirty_days(
        &self,
        range: &KeyRange,
        limit: usize,
        now: DateTime<Utc>,
        lease: TimeDelta,
    ) -> impl Future<Output = Result<Vec<DirtyDayBuckets>, StoreError>> + Send;
    /// How many site-days are dirty, claimed or not (`/metrics`).
    fn dirty_days_waiting(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Saves computed days and clears each dirty mark whose generation is unchanged, in one
    /// transaction; the marks of days that changed meanwhile stay, unclaimed.
    fn save_site_days(&self, days: &[(DirtyDay, DailyP95)]) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The days of an account's sites in `[from, until)` as one consistent snapshot (a read
    /// transaction): the computed days, and the dirty ones (claimed or not) with their buckets.
    /// It writes nothing (R35).
    fn site_days(
        &self,
        account: &str,
        from: NaiveDate,
        until: NaiveDate,
    ) -> impl Future<Output = Result<SiteDays, StoreError>> + Send;
}
