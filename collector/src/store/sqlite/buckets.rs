//! Buckets and site-days in SQLite.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::{QueryBuilder, Sqlite};
use tally_common::bucket::Bucket;
use tally_common::enforcement::{CapSetting, exceeds_cap};
use tally_common::p95::DailyP95;
use tally_common::time::{BucketStart, DAY_SLOTS};

use super::{CapRecord, SqliteStore, bucket_start, db, now, parse, stamp, to_i64, to_u64};
use crate::store::{
    BucketStore, DayKey, DirtyDay, DirtyDayBuckets, KeyRange, Measured, MergeStats, SiteDay, SiteDays, StoreError,
};

/// Buckets per statement when merging: 5 parameters each, under SQLite's limit of 32,766.
const MERGE_CHUNK: usize = 1_000;

/// The cap records of the sites among `rows`' that ever had a cap, by site.
async fn cap_records(
    conn: &mut sqlx::SqliteConnection,
    rows: &[(&str, Measured)],
) -> Result<HashMap<String, CapRecord>, StoreError> {
    let sites: BTreeSet<&str> = rows.iter().map(|(site, _)| *site).collect();
    let sites = serde_json::to_string(&sites).map_err(|e| StoreError::Database(e.to_string()))?;
    let history: Vec<(String, String, Option<i64>, i64)> = sqlx::query_as(
        "SELECT site_id, effective_at, cap_bps, version FROM cap_history
         WHERE site_id IN (SELECT DISTINCT site_id FROM cap_history
                           WHERE cap_bps IS NOT NULL AND site_id IN (SELECT value FROM json_each(?)))
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
        "SELECT site_id, reported_at, version FROM policy_applied
         WHERE site_id IN (SELECT value FROM json_each(?)) ORDER BY site_id, reported_at",
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

#[derive(sqlx::FromRow)]
struct BucketRow {
    bucket_start: i64,
    max_bps: i64,
    samples: i64,
}

/// Merges buckets (R10) inside the caller's write transaction: the rows, the days they mark
/// dirty, and the violations of their sites' caps (R17).
pub(super) async fn merge(
    conn: &mut sqlx::SqliteConnection,
    rows: &[(&str, Measured)],
) -> Result<MergeStats, StoreError> {
    let mut stats = MergeStats::default();
    let received = now();
    let caps = cap_records(&mut *conn, rows).await?;
    // A few statements per chunk rather than per row: SQLite runs each on its own thread.
    for chunk in rows.chunks(MERGE_CHUNK) {
        // A join on the keys: SQLite looks each one up (`IN (VALUES ...)` would scan the table).
        let mut select = QueryBuilder::<Sqlite>::new("WITH batch (site_id, bucket_start) AS (VALUES ");
        let mut values = select.separated(", ");
        for (site, Measured { bucket: b, .. }) in chunk {
            values.push("(").push_bind_unseparated(site).push_unseparated(", ");
            values.push_bind_unseparated(b.start.unix()).push_unseparated(")");
        }
        select.push(
            ") SELECT b.site_id, b.bucket_start FROM batch
                   JOIN buckets b ON b.site_id = batch.site_id AND b.bucket_start = batch.bucket_start",
        );
        let stored: Vec<(String, i64)> = select.build_query_as().fetch_all(&mut *conn).await.map_err(db)?;
        // Stored before, or earlier in this chunk: merged; otherwise new.
        let mut known: HashSet<(&str, i64)> = stored.iter().map(|(site, start)| (site.as_str(), *start)).collect();
        for (site, Measured { bucket: b, .. }) in chunk {
            if known.insert((site, b.start.unix())) {
                stats.inserted += 1;
            } else {
                stats.merged += 1;
            }
        }
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO buckets (site_id, bucket_start, max_bps, samples, received_at, last_received_at) ",
        );
        let mut bound = Vec::with_capacity(chunk.len());
        for (site, Measured { bucket: b, .. }) in chunk {
            bound.push((site, b.start.unix(), to_i64(b.max_bps, "max_bps")?, i64::from(b.samples)));
        }
        insert.push_values(bound, |mut row, (site, start, max_bps, samples)| {
            row.push_bind(site).push_bind(start).push_bind(max_bps).push_bind(samples);
            row.push_bind(&received).push_bind(&received);
        });
        insert.push(
            " ON CONFLICT (site_id, bucket_start) DO UPDATE SET
                     max_bps = max(max_bps, excluded.max_bps),
                     samples = max(samples, excluded.samples),
                     last_received_at = excluded.last_received_at",
        );
        insert.build().execute(&mut *conn).await.map_err(db)?;

        let days: BTreeSet<(&str, NaiveDate)> = chunk.iter().map(|(site, m)| (*site, m.bucket.start.day())).collect();
        let mut dirty = QueryBuilder::<Sqlite>::new("INSERT INTO dirty_days (site_id, day, generation) ");
        dirty.push_values(days, |mut row, (site, day)| {
            row.push_bind(site).push_bind(day.to_string()).push_bind(1);
        });
        dirty.push(" ON CONFLICT (site_id, day) DO UPDATE SET generation = generation + 1");
        dirty.build().execute(&mut *conn).await.map_err(db)?;

        let over: Vec<(&str, &Bucket, u64)> = chunk
            .iter()
            .filter_map(|(site, m)| {
                caps.get(*site).and_then(|record| record.judging(m)).map(|cap| (*site, &m.bucket, cap))
            })
            .filter(|(_, b, cap)| exceeds_cap(b.max_bps, *cap))
            .collect();
        if !over.is_empty() {
            let mut record = QueryBuilder::<Sqlite>::new(
                "INSERT INTO enforcement_violations (site_id, bucket_start, max_bps, cap_bps, recorded_at) ",
            );
            let mut bound = Vec::with_capacity(over.len());
            for (site, b, cap) in over {
                bound.push((site, b.start.unix(), to_i64(b.max_bps, "max_bps")?, to_i64(cap, "cap")?));
            }
            record.push_values(bound, |mut row, (site, start, max_bps, cap)| {
                row.push_bind(site).push_bind(start).push_bind(max_bps).push_bind(cap).push_bind(&received);
            });
            record.push(
                " ON CONFLICT (site_id, bucket_start) DO UPDATE SET
                         max_bps = max(max_bps, excluded.max_bps), cap_bps = excluded.cap_bps",
            );
            record.build().execute(&mut *conn).await.map_err(db)?;
        }
    }
    Ok(stats)
}

/// Appends `range`'s bounds to a WHERE clause on `(site_id, day)`.
fn push_range(query: &mut QueryBuilder<Sqlite>, range: &KeyRange) {
    if let Some((site, day)) = &range.after {
        query.push(" AND (site_id, day) > (").push_bind(site.clone()).push(", ").push_bind(day.to_string()).push(")");
    }
    if let Some((site, day)) = &range.through {
        query.push(" AND (site_id, day) <= (").push_bind(site.clone()).push(", ").push_bind(day.to_string()).push(")");
    }
}

impl BucketStore for SqliteStore {
    async fn merge_buckets(&self, rows: &[(&str, Bucket)]) -> Result<MergeStats, StoreError> {
        let rows: Vec<(&str, Measured)> = rows.iter().map(|(site, b)| (*site, Measured::from(*b))).collect();
        let mut tx = self.begin_write().await?;
        let stats = merge(&mut tx, &rows).await?;
        tx.commit().await?;
        Ok(stats)
    }

    async fn buckets_of_day(&self, site: &str, day: NaiveDate) -> Result<Vec<Bucket>, StoreError> {
        let first = BucketStart::first_of_day(day).unix();
        let rows: Vec<BucketRow> = sqlx::query_as(
            "SELECT bucket_start, max_bps, samples FROM buckets
             WHERE site_id = ? AND bucket_start >= ? AND bucket_start < ? ORDER BY bucket_start",
        )
        .bind(site)
        .bind(first)
        .bind(first + 86_400)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|r| {
                Ok(Bucket {
                    start: bucket_start(r.bucket_start)?,
                    max_bps: to_u64(r.max_bps, "max_bps")?,
                    samples: u8::try_from(r.samples)
                        .map_err(|_| StoreError::Corrupt(format!("samples {}", r.samples)))?,
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
             WHERE s.account_id = ? AND b.bucket_start >= ? AND b.bucket_start < ?
               AND coalesce(b.last_received_at, b.received_at) > ?",
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
            "WITH free AS (SELECT site_id, day FROM dirty_days WHERE coalesce(claimed_until, '') <= ?1)
             SELECT site_id, day FROM free ORDER BY site_id, day LIMIT 1 OFFSET (SELECT count(*) / 2 FROM free)",
        )
        .bind(stamp(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|(site, day)| Ok((site, parse(&day, "day")?))).transpose()
    }

    async fn claim_dirty_days(
        &self,
        range: &KeyRange,
        limit: usize,
        now: DateTime<Utc>,
        lease: TimeDelta,
    ) -> Result<Vec<DirtyDayBuckets>, StoreError> {
        // Three parameters a claimed day below: at most 30,000, under SQLite's limit of 32,766.
        let limit = i64::try_from(limit.min(10_000)).unwrap_or(i64::MAX);
        let mut tx = self.begin_write().await?;
        let mut claim = QueryBuilder::<Sqlite>::new("UPDATE dirty_days SET claimed_until = ");
        claim.push_bind(stamp(now + lease));
        claim.push(
            " WHERE (site_id, day) IN (SELECT site_id, day FROM dirty_days WHERE coalesce(claimed_until, '') <= ",
        );
        claim.push_bind(stamp(now));
        push_range(&mut claim, range);
        claim.push(" ORDER BY site_id, day LIMIT ").push_bind(limit).push(") RETURNING site_id, day, generation");
        let claimed: Vec<(String, String, i64)> = claim.build_query_as().fetch_all(&mut *tx).await.map_err(db)?;
        if claimed.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let days = with_buckets(&mut tx, &claimed).await?;
        tx.commit().await?;
        Ok(days)
    }

    async fn dirty_days_waiting(&self) -> Result<u64, StoreError> {
        let waiting: i64 = sqlx::query_scalar(super::counts::DIRTY_DAYS).fetch_one(&self.pool).await.map_err(db)?;
        to_u64(waiting, "dirty days")
    }

    async fn save_site_days(&self, days: &[(DirtyDay, DailyP95)]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let computed = now();
        for chunk in days.chunks(MERGE_CHUNK) {
            let mut upsert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO site_days (site_id, day, p95_bps, buckets_present, computed_at) ",
            );
            let mut rows = Vec::with_capacity(chunk.len());
            for (dirty, p95) in chunk {
                rows.push((
                    &dirty.site,
                    dirty.day.to_string(),
                    to_i64(p95.p95_bps, "p95")?,
                    i64::from(p95.buckets_present),
                ));
            }
            upsert.push_values(rows, |mut row, (site, day, p95, present)| {
                row.push_bind(site).push_bind(day).push_bind(p95).push_bind(present).push_bind(&computed);
            });
            upsert.push(
                " ON CONFLICT (site_id, day) DO UPDATE SET
                     p95_bps = excluded.p95_bps, buckets_present = excluded.buckets_present,
                     computed_at = excluded.computed_at",
            );
            upsert.build().execute(&mut *tx).await.map_err(db)?;
            // Clear each mark only if no merge bumped its generation meanwhile. (The CTE lets
            // SQLite look each key up; `IN (VALUES ...)` scans the whole table.)
            let mut clear = QueryBuilder::<Sqlite>::new("WITH done (site_id, day, generation) AS (VALUES ");
            let mut values = clear.separated(", ");
            for (dirty, _) in chunk {
                values.push("(").push_bind_unseparated(&dirty.site).push_unseparated(", ");
                values.push_bind_unseparated(dirty.day.to_string()).push_unseparated(", ");
                values.push_bind_unseparated(dirty.generation).push_unseparated(")");
            }
            clear.push(
                ") DELETE FROM dirty_days WHERE (site_id, day, generation) IN
                     (SELECT site_id, day, generation FROM done)",
            );
            clear.build().execute(&mut *tx).await.map_err(db)?;
            // The marks left changed meanwhile: free for the next pass at once.
            let mut release = QueryBuilder::<Sqlite>::new("WITH done (site_id, day) AS (VALUES ");
            let mut values = release.separated(", ");
            for (dirty, _) in chunk {
                values.push("(").push_bind_unseparated(&dirty.site).push_unseparated(", ");
                values.push_bind_unseparated(dirty.day.to_string()).push_unseparated(")");
            }
            release.push(
                ") UPDATE dirty_days SET claimed_until = NULL
                   WHERE (site_id, day) IN (SELECT site_id, day FROM done) AND claimed_until IS NOT NULL",
            );
            release.build().execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await
    }

    async fn site_days(&self, account: &str, from: NaiveDate, until: NaiveDate) -> Result<SiteDays, StoreError> {
        // A deferred transaction: one snapshot from its first read, and no write lock (R35).
        let mut tx = self.pool.begin().await.map_err(db)?;
        // One row per site, its days folded into "day p95 present,…" (see `with_buckets`).
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT d.site_id, group_concat(d.day || ' ' || d.p95_bps || ' ' || d.buckets_present)
             FROM site_days d JOIN sites s ON s.id = d.site_id
             WHERE s.account_id = ? AND d.day >= ? AND d.day < ? GROUP BY d.site_id ORDER BY d.site_id",
        )
        .bind(account)
        .bind(from.to_string())
        .bind(until.to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let dirty: Vec<(String, String, i64)> = sqlx::query_as(super::counts::ACCOUNT_DIRTY_DAYS)
            .bind(account)
            .bind(from.to_string())
            .bind(until.to_string())
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        let dirty = with_buckets(&mut tx, &dirty).await?;
        tx.commit().await.map_err(db)?;
        let mut days = Vec::new();
        for (site, folded) in rows {
            for day in folded.split(',') {
                let corrupt = || StoreError::Corrupt(format!("site day {day:?} of {site}"));
                let mut fields = day.split(' ');
                let mut field = || fields.next().ok_or_else(corrupt);
                let (date, p95, present) = (field()?, field()?, field()?);
                days.push(SiteDay {
                    site: site.clone(),
                    day: date.parse().map_err(|_| corrupt())?,
                    p95: DailyP95 {
                        p95_bps: p95.parse().map_err(|_| corrupt())?,
                        buckets_present: present.parse().ok().filter(|n| *n <= DAY_SLOTS as u16).ok_or_else(corrupt)?,
                        buckets_expected: DAY_SLOTS as u16,
                    },
                });
            }
        }
        days.sort_by(|a, b| (&a.site, a.day).cmp(&(&b.site, b.day)));
        Ok(SiteDays { computed: days, dirty })
    }
}

/// The buckets' `(start, max_bps)` of each day of `days` (site, day, generation), a query per
/// [`MERGE_CHUNK`] days: three variables a day, far under SQLite's limit of 32,766 whatever the
/// number of days (a report of an account whose whole month is not summarized yet).
async fn with_buckets(
    conn: &mut sqlx::SqliteConnection,
    days: &[(String, String, i64)],
) -> Result<Vec<DirtyDayBuckets>, StoreError> {
    let mut found = Vec::with_capacity(days.len());
    for chunk in days.chunks(MERGE_CHUNK) {
        found.extend(chunk_with_buckets(&mut *conn, chunk).await?);
    }
    Ok(found)
}

/// [`with_buckets`] of up to [`MERGE_CHUNK`] days, in one query.
async fn chunk_with_buckets(
    conn: &mut sqlx::SqliteConnection,
    days: &[(String, String, i64)],
) -> Result<Vec<DirtyDayBuckets>, StoreError> {
    // One row per day, its buckets folded into one text value "start max,start max": sqlx hands
    // rows over one by one, and a day's 288 rows cost far more than one string.
    let mut query = QueryBuilder::<Sqlite>::new("WITH d (site_id, day, generation) AS (VALUES ");
    let mut values = query.separated(", ");
    for (site, day, generation) in days {
        values.push("(").push_bind_unseparated(site).push_unseparated(", ").push_bind_unseparated(day);
        values.push_unseparated(", ").push_bind_unseparated(generation).push_unseparated(")");
    }
    query.push(
        ") SELECT d.site_id, d.day, d.generation,
                (SELECT group_concat(b.bucket_start || ' ' || b.max_bps) FROM buckets b
                 WHERE b.site_id = d.site_id
                   AND b.bucket_start >= unixepoch(d.day) AND b.bucket_start < unixepoch(d.day) + 86400)
         FROM d ORDER BY d.site_id, d.day",
    );
    let rows: Vec<(String, String, i64, Option<String>)> =
        query.build_query_as().fetch_all(&mut *conn).await.map_err(db)?;
    rows.into_iter()
        .map(|(site, day, generation, buckets)| {
            let buckets = buckets
                .as_deref()
                .unwrap_or_default()
                .split_terminator(',')
                .map(|pair| {
                    let corrupt = || StoreError::Corrupt(format!("bucket {pair:?} of {site} {day}"));
                    let (start, bps) = pair.split_once(' ').ok_or_else(corrupt)?;
                    Ok((bucket_start(start.parse().map_err(|_| corrupt())?)?, bps.parse().map_err(|_| corrupt())?))
                })
                .collect::<Result<_, StoreError>>()?;
            Ok((DirtyDay { day: parse(&day, "day")?, site, generation }, buckets))
        })
        .collect()
}
