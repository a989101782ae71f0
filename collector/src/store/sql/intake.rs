//! The agents' batches as a whole: quarantine, refusals, discard totals, presence.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use tally_common::bucket::Bucket;
use tally_common::time::BucketStart;
use tally_common::wire::Refusal;

use super::{Backend, Db, bucket_start, buckets::merge, db, now, parse, site_intake, stamp, to_i64, to_u64};
use crate::store::{
    Ingested, Intake, IntakeStore, MAX_QUARANTINED_PER_SITE, Measured, MergeStats, SiteActivity, SiteIntake, StoreError,
};

/// Rows per statement: 2 parameters each, far under either database's limit.
const MERGE_CHUNK: usize = 1_000;

impl IntakeStore for Backend {
    async fn ingest(&self, batches: &[Intake]) -> Result<(MergeStats, Vec<Ingested>), StoreError> {
        let rows: Vec<(&str, Measured)> =
            batches.iter().flat_map(|b| b.buckets.iter().map(|bucket| (b.site.as_str(), *bucket))).collect();
        self.ensure_partitions_for(rows.iter().map(|(_, m)| m.bucket.start)).await?;
        let mut tx = self.begin_write().await?;
        let at = now();
        let stats = merge(&mut tx, &rows).await?;
        let mut room: HashMap<&str, u64> = HashMap::new();
        let mut outcomes = Vec::with_capacity(batches.len());
        for batch in batches {
            let site = batch.site.as_str();
            if !room.contains_key(site) && !batch.wrong_time.is_empty() {
                let held: i64 = sqlx::query_scalar("SELECT count(*) FROM quarantined_buckets WHERE site_id = $1")
                    .bind(site)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?;
                room.insert(site, MAX_QUARANTINED_PER_SITE.saturating_sub(to_u64(held, "quarantine size")?));
            }
            let left = room.get(site).copied().unwrap_or_default();
            let kept = batch.wrong_time.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            for (bucket, reason) in &batch.wrong_time[..kept] {
                // A start already held does not take more room; counting it does no harm.
                sqlx::query(concat!(
                    "INSERT INTO quarantined_buckets (site_id, bucket_start, max_bps, samples, reason, quarantined_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (site_id, bucket_start) DO UPDATE SET max_bps = ",
                    greatest!("quarantined_buckets.max_bps", "excluded.max_bps"),
                    ", samples = ",
                    greatest!("quarantined_buckets.samples", "excluded.samples"),
                    ", reason = excluded.reason, quarantined_at = excluded.quarantined_at"
                ))
                .bind(site)
                .bind(bucket.start.unix())
                .bind(to_i64(bucket.max_bps, "max_bps")?)
                .bind(i64::from(bucket.samples))
                .bind(reason.name())
                .bind(&at)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            if let Some(left) = room.get_mut(site) {
                *left -= kept as u64;
            }
            outcomes.push(Ingested { quarantined: kept });

            let mut counts: HashMap<Refusal, i64> = HashMap::new();
            for reason in batch.refused.iter().chain(batch.wrong_time.iter().map(|(_, reason)| reason)) {
                *counts.entry(*reason).or_default() += 1;
            }
            if !counts.is_empty() {
                let mut count = QueryBuilder::<Db>::new("INSERT INTO refusals (site_id, reason, count, last_at) ");
                count.push_values(counts, |mut row, (reason, n)| {
                    row.push_bind(site).push_bind(reason.name()).push_bind(n).push_bind(&at);
                });
                count.push(
                    " ON CONFLICT (site_id, reason) DO UPDATE SET
                         count = refusals.count + excluded.count, last_at = excluded.last_at",
                );
                count.build().execute(&mut *tx).await.map_err(db)?;
            }
            let d = &batch.discards;
            sqlx::query(
                "INSERT INTO agent_discards
                     (site_id, counter_reset, above_cap, elapsed_too_short, elapsed_too_long, reported_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (site_id) DO UPDATE SET
                     counter_reset = excluded.counter_reset, above_cap = excluded.above_cap,
                     elapsed_too_short = excluded.elapsed_too_short, elapsed_too_long = excluded.elapsed_too_long,
                     reported_at = excluded.reported_at",
            )
            .bind(site)
            .bind(to_i64(d.counter_reset, "counter_reset")?)
            .bind(to_i64(d.above_cap, "above_cap")?)
            .bind(to_i64(d.elapsed_too_short, "elapsed_too_short")?)
            .bind(to_i64(d.elapsed_too_long, "elapsed_too_long")?)
            .bind(&at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await?;
        Ok((stats, outcomes))
    }

    async fn site_intake(&self, site: &str) -> Result<SiteIntake, StoreError> {
        let refusals: Vec<(String, i64, String)> =
            sqlx::query_as("SELECT reason, count, last_at FROM refusals WHERE site_id = $1 ORDER BY reason")
                .bind(site)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        let discards: Option<(i64, i64, i64, i64, String)> = sqlx::query_as(
            "SELECT counter_reset, above_cap, elapsed_too_short, elapsed_too_long, reported_at
             FROM agent_discards WHERE site_id = $1",
        )
        .bind(site)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let quarantined: Vec<(i64, i64, i64, String, String)> = sqlx::query_as(
            "SELECT bucket_start, max_bps, samples, reason, quarantined_at
             FROM quarantined_buckets WHERE site_id = $1 ORDER BY bucket_start",
        )
        .bind(site)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        site_intake((refusals, discards, quarantined))
    }

    async fn record_presence(&self, seen: &[(String, DateTime<Utc>)]) -> Result<(), StoreError> {
        // One row per site: an upsert may touch a row once per statement.
        let mut latest: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
        for (site, at) in seen {
            let entry = latest.entry(site.as_str()).or_insert(*at);
            *entry = (*entry).max(*at);
        }
        let seen: Vec<(&str, DateTime<Utc>)> = latest.into_iter().collect();
        let mut tx = self.begin_write().await?;
        for chunk in seen.chunks(MERGE_CHUNK) {
            let mut upsert = QueryBuilder::<Db>::new("INSERT INTO site_presence (site_id, last_connected_at) ");
            upsert.push_values(chunk, |mut row, (site, at)| {
                row.push_bind(site).push_bind(stamp(*at));
            });
            upsert.push(concat!(
                " ON CONFLICT (site_id) DO UPDATE SET last_connected_at = ",
                greatest!("site_presence.last_connected_at", "excluded.last_connected_at")
            ));
            upsert.build().execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await
    }

    async fn site_activity(&self, account: Option<&str>) -> Result<Vec<SiteActivity>, StoreError> {
        // Each site's latest bucket through the primary key, not a scan of its buckets.
        let rows: Vec<crate::store::intake::ActivityRow> = sqlx::query_as(
            "SELECT s.id, s.account_id, (SELECT max(bucket_start) FROM buckets WHERE site_id = s.id),
                    p.last_connected_at, s.created_at
             FROM sites s LEFT JOIN site_presence p ON p.site_id = s.id
             WHERE $1 IS NULL OR s.account_id = $1 ORDER BY s.id",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(site, account, last_bucket, last_connected, added)| {
                Ok(SiteActivity {
                    site,
                    account,
                    last_bucket: last_bucket.map(bucket_start).transpose()?,
                    last_connected: last_connected.map(|at| parse(&at, "last connection")).transpose()?,
                    added_at: parse(&added, "site creation")?,
                })
            })
            .collect()
    }

    async fn release_quarantined(
        &self,
        site: &str,
        released: &[BucketStart],
        accepted: &[Bucket],
    ) -> Result<u64, StoreError> {
        self.ensure_partitions_for(accepted.iter().map(|b| b.start)).await?;
        let mut tx = self.begin_write().await?;
        let mut left = 0;
        for start in released {
            left += sqlx::query("DELETE FROM quarantined_buckets WHERE site_id = $1 AND bucket_start = $2")
                .bind(site)
                .bind(start.unix())
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
        }
        let rows: Vec<(&str, Measured)> = accepted.iter().map(|b| (site, Measured::from(*b))).collect();
        merge(&mut tx, &rows).await?;
        tx.commit().await?;
        Ok(left)
    }
}
