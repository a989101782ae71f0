//! Buckets and site-days in PostgreSQL: batches travel as arrays (`UNNEST`), one statement per
//! table and chunk.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::PgConnection;
use tally_common::bucket::Bucket;
use tally_common::enforcement::{CapSetting, exceeds_cap};
use tally_common::p95::DailyP95;
use tally_common::time::{BucketStart, DAY_SLOTS};

use super::{CapRecord, PgStore, bucket_start, db, now, parse, stamp, to_i64, to_u64};
use crate::store::{
    BucketStore, DayKey, DirtyDay, DirtyDayBuckets, KeyRange, Measured, MergeStats, SiteDay, SiteDays, StoreError,
};

/// Rows per statement: arrays of any length are one parameter each; this bounds one statement's
/// work and memory.
const CHUNK: usize = 10_000;

/// The cap records of the sites among `rows`' that ever had a cap, by site.
async fn cap_records(
    conn: &mut PgConnection,
    rows: &[(&str, Measured)],
) -> Result<HashMap<String, CapRecord>, StoreError> {
    let sites: Vec<&str> = rows.iter().map(|(site, _)| *site).collect::<BTreeSet<_>>().into_iter().collect();
    let history: Vec<(String, String, Option<i64>, i64)> = sqlx::query_as(
        "SELECT site_id, effective_at, cap_bps, version FROM cap_history
         WHERE site_id IN (SELECT DISTINCT site_id FROM cap_history
                           WHERE cap_bps IS NOT NULL AND site_id = ANY($1))
         ORDER BY site_id, effective_at, version",
    )
    .bind(&sites)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut records: HashMap<String, CapRecord> = HashMap::new();
    for (site, since, cap, version) in history {
        records.entry(site).or_default().history.push(CapSetting {
            since: parse(&since, "cap history time")?,
            cap_bps: cap.map(|c| to_u64(c, "cap")).transpose()?,
            version: to_u64(version, "policy version")?,
        });
    }
    if records.is_empty() {
        // No site of these rows ever had a cap: nothing to judge, and no second query on ingest.
        return Ok(records);
    }
    let applied: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT site_id, reported_at, version FROM policy_applied WHERE site_id = ANY($1) ORDER BY site_id, reported_at",
    )
    .bind(&sites)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    for (site, at, version) in applied {
        if let Some(record) = records.get_mut(&site) {
            record.applied.push((parse(&at, "policy report time")?, to_u64(version, "policy version")?));
        }
    }
    Ok(records)
}

/// Merges buckets (R10) inside the caller's write transaction: the rows, the days they mark
/// dirty, and the violations of their sites' caps (R17). The months' partitions exist already
/// ([`PgStore::ensure_partitions_for`]).
pub(super) async fn merge(conn: &mut PgConnection, rows: &[(&str, Measured)]) -> Result<MergeStats, StoreError> {
    let mut stats = MergeStats::default();
    let received = now();
    let caps = cap_records(&mut *conn, rows).await?;
    // One row per key (a statement's upsert may touch a row once): repeats merge here first.
    let mut merged: BTreeMap<(&str, i64), (i64, i64)> = BTreeMap::new();
    let mut over: BTreeMap<(&str, i64), (i64, i64)> = BTreeMap::new();
    for (site, m) in rows {
        let b = &m.bucket;
        let (max_bps, samples) = (to_i64(b.max_bps, "max_bps")?, i64::from(b.samples));
        let key = (*site, b.start.unix());
        match merged.get_mut(&key) {
            Some(row) => {
                stats.merged += 1;
                *row = (row.0.max(max_bps), row.1.max(samples));
            }
            None => {
                merged.insert(key, (max_bps, samples));
            }
        }
        if let Some(cap) =
            caps.get(*site).and_then(|record| record.judging(m)).filter(|cap| exceeds_cap(b.max_bps, *cap))
        {
            let cap = to_i64(cap, "cap")?;
            let row = over.entry(key).or_insert((max_bps, cap));
            *row = (row.0.max(max_bps), cap);
        }
    }
    let merged: Vec<_> = merged.into_iter().collect();
    for chunk in merged.chunks(CHUNK) {
        let (sites, starts): (Vec<&str>, Vec<i64>) = chunk.iter().map(|(key, _)| *key).unzip();
        let (maxima, samples): (Vec<i64>, Vec<i64>) = chunk.iter().map(|(_, row)| *row).unzip();
        // The keys stored before (a partitioned table has no `xmax` to tell in RETURNING).
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM UNNEST($1::text[], $2::bigint[]) AS k (site, start)
             JOIN buckets b ON b.site_id = k.site AND b.bucket_start = k.start",
        )
        .bind(&sites)
        .bind(&starts)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO buckets (site_id, bucket_start, max_bps, samples, received_at, last_received_at)
             SELECT site, start, max_bps, samples, $5, $5
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS b (site, start, max_bps, samples)
             ON CONFLICT (site_id, bucket_start) DO UPDATE SET
                 max_bps = GREATEST(buckets.max_bps, excluded.max_bps),
                 samples = GREATEST(buckets.samples, excluded.samples),
                 last_received_at = excluded.last_received_at",
        )
        .bind(&sites)
        .bind(&starts)
        .bind(&maxima)
        .bind(&samples)
        .bind(&received)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        let (inserted, updated) = (chunk.len() as i64 - stored, stored);
        stats.inserted += to_u64(inserted, "count")?;
        stats.merged += to_u64(updated, "count")?;

        let days: BTreeSet<(&str, String)> = chunk
            .iter()
            .map(|((site, start), _)| Ok((*site, bucket_start(*start)?.day().to_string())))
            .collect::<Result<_, StoreError>>()?;
        let (sites, days): (Vec<&str>, Vec<String>) = days.into_iter().unzip();
        sqlx::query(
            "INSERT INTO dirty_days (site_id, day, generation)
             SELECT site, day, 1 FROM UNNEST($1::text[], $2::text[]) AS d (site, day)
             ON CONFLICT (site_id, day) DO UPDATE SET generation = dirty_days.generation + 1",
        )
        .bind(&sites)
        .bind(&days)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    let over: Vec<_> = over.into_iter().collect();
    for chunk in over.chunks(CHUNK) {
        let (sites, starts): (Vec<&str>, Vec<i64>) = chunk.iter().map(|(key, _)| *key).unzip();
        let (maxima, caps): (Vec<i64>, Vec<i64>) = chunk.iter().map(|(_, row)| *row).unzip();
        sqlx::query(
            "INSERT INTO enforcement_violations (site_id, bucket_start, max_bps, cap_bps, recorded_at)
             SELECT site, start, max_bps, cap_bps, $5
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS v (site, start, max_bps, cap_bps)
             ON CONFLICT (site_id, bucket_start) DO UPDATE SET
                 max_bps = GREATEST(enforcement_violations.max_bps, excluded.max_bps), cap_bps = excluded.cap_bps",
        )
        .bind(&sites)
        .bind(&starts)
        .bind(&maxima)
        .bind(&caps)
        .bind(&received)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    Ok(stats)
}

/// A dirty day's row: site, day, generation, its buckets' starts and maxima.
type DirtyRow = (String, String, i64, Option<Vec<i64>>, Option<Vec<i64>>);

/// A stored date, or corrupt.
fn day_of(text: &str) -> Result<NaiveDate, StoreError> {
    parse(text, "day")
}

impl BucketStore for PgStore {
    async fn merge_buckets(&self, rows: &[(&str, Bucket)]) -> Result<MergeStats, StoreError> {
        let rows: Vec<(&str, Measured)> = rows.iter().map(|(site, b)| (*site, Measured::from(*b))).collect();
        self.ensure_partitions_for(rows.iter().map(|(_, m)| m.bucket.start)).await?;
        let mut tx = self.begin_write().await?;
        let stats = merge(&mut tx, &rows).await?;
        tx.commit().await?;
        Ok(stats)
    }

    async fn buckets_of_day(&self, site: &str, day: NaiveDate) -> Result<Vec<Bucket>, StoreError> {
        let first = BucketStart::first_of_day(day).unix();
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT bucket_start, max_bps, samples FROM buckets
             WHERE site_id = $1 AND bucket_start >= $2 AND bucket_start < $3 ORDER BY bucket_start",
        )
        .bind(site)
        .bind(first)
        .bind(first + 86_400)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(start, max_bps, samples)| {
                Ok(Bucket {
                    start: bucket_start(start)?,
                    max_bps: to_u64(max_bps, "max_bps")?,
                    samples: u8::try_from(samples).map_err(|_| StoreError::Corrupt(format!("samples {samples}")))?,
                })
            })
            .collect()
    }

    async fn buckets_received_after(
        &self,
        account: &str,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM buckets b JOIN sites s ON s.id = b.site_id
             WHERE s.account_id = $1 AND b.bucket_start >= $2 AND b.bucket_start < $3
               AND coalesce(b.last_received_at, b.received_at) > $4",
        )
        .bind(account)
        .bind(from.timestamp())
        .bind(until.timestamp())
        .bind(stamp(since))
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        to_u64(count, "count")
    }

    async fn dirty_days_midpoint(&self, now: DateTime<Utc>) -> Result<Option<DayKey>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "WITH free AS (SELECT site_id, day FROM dirty_days WHERE coalesce(claimed_until, '') <= $1)
             SELECT site_id, day FROM free ORDER BY site_id, day OFFSET (SELECT count(*) / 2 FROM free) LIMIT 1",
        )
        .bind(stamp(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|(site, day)| Ok((site, day_of(&day)?))).transpose()
    }

    async fn claim_dirty_days(
        &self,
        range: &KeyRange,
        limit: usize,
        now: DateTime<Utc>,
        lease: TimeDelta,
    ) -> Result<Vec<DirtyDayBuckets>, StoreError> {
        let (after, through) = (range.after.as_ref(), range.through.as_ref());
        // SKIP LOCKED: collectors claiming at once take different days instead of waiting.
        let claim = format!(
            "WITH d AS (
                 UPDATE dirty_days SET claimed_until = $7 WHERE (site_id, day) IN (
                     SELECT site_id, day FROM dirty_days
                     WHERE coalesce(claimed_until, '') <= $6
                       AND ($1::text IS NULL OR (site_id, day) > ($1, $2))
                       AND ($3::text IS NULL OR (site_id, day) <= ($3, $4))
                     ORDER BY site_id, day LIMIT $5 FOR UPDATE SKIP LOCKED)
                 RETURNING site_id, day, generation)
             {WITH_BUCKETS}"
        );
        // Built from constants only.
        let rows: Vec<DirtyRow> = sqlx::query_as(sqlx::AssertSqlSafe(claim))
            .bind(after.map(|(site, _)| site))
            .bind(after.map(|(_, day)| day.to_string()))
            .bind(through.map(|(site, _)| site))
            .bind(through.map(|(_, day)| day.to_string()))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(stamp(now))
            .bind(stamp(now + lease))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.into_iter().map(dirty_day).collect()
    }

    async fn dirty_days_waiting(&self) -> Result<u64, StoreError> {
        let waiting: i64 = sqlx::query_scalar(super::counts::DIRTY_DAYS).fetch_one(&self.pool).await.map_err(db)?;
        to_u64(waiting, "dirty days")
    }

    async fn save_site_days(&self, days: &[(DirtyDay, DailyP95)]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let computed = now();
        for chunk in days.chunks(CHUNK) {
            let sites: Vec<&str> = chunk.iter().map(|(d, _)| d.site.as_str()).collect();
            let dates: Vec<String> = chunk.iter().map(|(d, _)| d.day.to_string()).collect();
            let generations: Vec<i64> = chunk.iter().map(|(d, _)| d.generation).collect();
            let p95s: Vec<i64> = chunk.iter().map(|(_, p)| to_i64(p.p95_bps, "p95")).collect::<Result<_, _>>()?;
            let present: Vec<i64> = chunk.iter().map(|(_, p)| i64::from(p.buckets_present)).collect();
            sqlx::query(
                "INSERT INTO site_days (site_id, day, p95_bps, buckets_present, computed_at)
                 SELECT * , $5 FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[])
                 ON CONFLICT (site_id, day) DO UPDATE SET
                     p95_bps = excluded.p95_bps, buckets_present = excluded.buckets_present,
                     computed_at = excluded.computed_at",
            )
            .bind(&sites)
            .bind(&dates)
            .bind(&p95s)
            .bind(&present)
            .bind(&computed)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            // Clear each mark only if no merge bumped its generation meanwhile.
            sqlx::query(
                "DELETE FROM dirty_days WHERE (site_id, day, generation) IN
                     (SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]))",
            )
            .bind(&sites)
            .bind(&dates)
            .bind(&generations)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            // The marks left changed meanwhile: free for the next pass at once.
            sqlx::query(
                "UPDATE dirty_days SET claimed_until = NULL
                 WHERE (site_id, day) IN (SELECT * FROM UNNEST($1::text[], $2::text[])) AND claimed_until IS NOT NULL",
            )
            .bind(&sites)
            .bind(&dates)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await
    }

    async fn site_days(&self, account: &str, from: NaiveDate, until: NaiveDate) -> Result<SiteDays, StoreError> {
        // One snapshot for both reads, and a transaction that cannot write (R35).
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let dirty: Vec<DirtyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH d AS ({}) {WITH_BUCKETS}",
            super::counts::ACCOUNT_DIRTY_DAYS
        )))
        .bind(account)
        .bind(from.to_string())
        .bind(until.to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT d.site_id, d.day, d.p95_bps, d.buckets_present
             FROM site_days d JOIN sites s ON s.id = d.site_id
             WHERE s.account_id = $1 AND d.day >= $2 AND d.day < $3 ORDER BY d.site_id, d.day",
        )
        .bind(account)
        .bind(from.to_string())
        .bind(until.to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let computed = rows
            .into_iter()
            .map(|(site, day, p95, present)| {
                let present = u16::try_from(present)
                    .ok()
                    .filter(|n| usize::from(*n) <= DAY_SLOTS)
                    .ok_or_else(|| StoreError::Corrupt(format!("buckets present {present} of {site} {day}")))?;
                Ok(SiteDay {
                    day: day_of(&day)?,
                    p95: DailyP95 {
                        p95_bps: to_u64(p95, "p95")?,
                        buckets_present: present,
                        buckets_expected: DAY_SLOTS as u16,
                    },
                    site,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(SiteDays { computed, dirty: dirty.into_iter().map(dirty_day).collect::<Result<_, _>>()? })
    }
}

/// The dirty days of `d` (site_id, day, generation) with their buckets' starts and maxima.
const WITH_BUCKETS: &str = "SELECT d.site_id, d.day, d.generation, b.starts, b.maxima
     FROM d
     LEFT JOIN LATERAL (
         SELECT array_agg(bucket_start ORDER BY bucket_start) AS starts,
                array_agg(max_bps ORDER BY bucket_start) AS maxima
         FROM buckets WHERE site_id = d.site_id
           AND bucket_start >= extract(epoch FROM d.day::date)::bigint
           AND bucket_start < extract(epoch FROM d.day::date)::bigint + 86400) b ON true
     ORDER BY d.site_id, d.day";

fn dirty_day((site, day, generation, starts, maxima): DirtyRow) -> Result<DirtyDayBuckets, StoreError> {
    let buckets = starts
        .unwrap_or_default()
        .into_iter()
        .zip(maxima.unwrap_or_default())
        .map(|(start, bps)| Ok((bucket_start(start)?, to_u64(bps, "max_bps")?)))
        .collect::<Result<_, StoreError>>()?;
    Ok((DirtyDay { day: day_of(&day)?, site, generation }, buckets))
}
