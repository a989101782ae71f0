//! The buckets' monthly partitions (`buckets_YYYY_MM`, declarative range partitions on
//! `bucket_start`). Each month's is created before any bucket of it is written: when the store
//! opens, the current month's and the next two; before a merge, any month its buckets reach (a
//! backlog, an import). Created in a transaction of its own under an advisory lock, so two
//! collectors never race on one, and never inside an ingest, which would hold the table's lock
//! until it commits.

use std::collections::BTreeSet;
use std::sync::Mutex;

use chrono::NaiveDate;
use tally_common::time::{BucketStart, Month, day_start};

use super::{PgStore, db};
use crate::store::StoreError;

/// The advisory lock partition creation takes (any number: the store's own).
const PARTITION_LOCK: i64 = 0x7461_6c6c_7970;

/// The months whose partition this process knows exists.
#[derive(Debug, Default)]
pub(super) struct Known(Mutex<BTreeSet<Month>>);

impl Known {
    fn missing(&self, months: &BTreeSet<Month>) -> Vec<Month> {
        let known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        months.difference(&known).copied().collect()
    }

    fn add(&self, month: Month) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(month);
    }
}

impl PgStore {
    /// Creates the partitions of `today`'s month and the next two.
    pub(super) async fn ensure_partitions_ahead(&self, today: NaiveDate) -> Result<(), StoreError> {
        let this = Month::containing(today);
        self.ensure_partitions([this, this.next(), this.next().next()].into_iter().collect()).await
    }

    /// Creates the partitions of every month from `first`'s to `last`'s (bucket starts).
    pub(in crate::store) async fn ensure_partitions_between(&self, first: i64, last: i64) -> Result<(), StoreError> {
        let month = |unix| BucketStart::from_unix(unix).map(|s| Month::containing(s.day()));
        let (first, last) = (month(first), month(last));
        let (Ok(mut month), Ok(last)) = (first, last) else {
            return Err(StoreError::Corrupt("a bucket start outside the calendar".to_owned()));
        };
        let mut months = BTreeSet::from([month]);
        while month < last {
            month = month.next();
            months.insert(month);
        }
        self.ensure_partitions(months).await
    }

    /// Creates the partitions of the months of `starts` that do not have one yet.
    pub(super) async fn ensure_partitions_for(
        &self,
        starts: impl Iterator<Item = BucketStart>,
    ) -> Result<(), StoreError> {
        self.ensure_partitions(starts.map(|s| Month::containing(s.day())).collect()).await
    }

    async fn ensure_partitions(&self, months: BTreeSet<Month>) -> Result<(), StoreError> {
        let missing = self.partitions.missing(&months);
        if missing.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(PARTITION_LOCK).execute(&mut *tx).await.map_err(db)?;
        for month in &missing {
            let from = day_start(month.first_day()).timestamp();
            let to = day_start(month.next().first_day()).timestamp();
            let name = format!("buckets_{}", month.to_string().replace('-', "_"));
            // Names and bounds are made here from a `Month`, never from input: no binding needed.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF buckets FOR VALUES FROM ({from}) TO ({to})"
            )))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await?;
        for month in missing {
            self.partitions.add(month);
        }
        Ok(())
    }
}
