//! Buckets, their dirty days and the site-days computed from them. Batches travel as the
//! [`Rows`] (as the dialect sends them), one statement per table and chunk whatever the batch's
//! size.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::{Arguments, AssertSqlSafe, QueryBuilder};
use tally_common::bucket::Bucket;
use tally_common::enforcement::{CapSetting, exceeds_cap};
use tally_common::p95::DailyP95;
use tally_common::time::{BucketStart, DAY_SLOTS, Month};

use super::dialect::{add_rows, buckets_in_ranges, source, texts};
use super::{Args, Backend, CapRecord, Rows, Conn, Db, bucket_start, db, now, parse, stamp, to_i64, to_u64, unbindable};
use crate::store::{
    BucketStore, DayKey, DirtyDay, DirtyDayBuckets, KeyRange, Measured, MergeStats, SiteDay, SiteDays, StoreError,
};

/// Rows per statement: bounds one statement's work and memory.
const CHUNK: usize = 10_000;

/// The cap records of the sites among `rows`' that ever had a cap, by site.
async fn cap_records(conn: &mut Conn, rows: &[(&str, Measured)]) -> Result<HashMap<String, CapRecord>, StoreError> {
    let sites: Vec<&str> = rows.iter().map(|(site, _)| *site).collect::<BTreeSet<_>>().into_iter().collect();
    let history: Vec<(String, String, Option<i64>, i64)> = sqlx::query_as(concat!(
        "SELECT site_id, effective_at, cap_bps, version FROM cap_history
         WHERE site_id IN (SELECT DISTINCT site_id FROM cap_history
                           WHERE cap_bps IS NOT NULL AND site_id IN ",
        text_list!(1),
        ") ORDER BY site_id, effective_at, version"
    ))
    .bind(texts(&sites)?)
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
    let applied: Vec<(String, String, i64)> = sqlx::query_as(concat!(
        "SELECT site_id, reported_at, version FROM policy_applied WHERE site_id IN ",
        text_list!(1),
        " ORDER BY site_id, reported_at"
    ))
    .bind(texts(&sites)?)
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

/// Runs `statement`, whose `{}` is where `rows` are read as the table `batch`, with `first` as its
/// first parameters (`$1`…) and the rows after them; returns the rows it changed.
async fn execute_with_rows(conn: &mut Conn, statement: &str, first: &[&str], rows: &Rows) -> Result<u64, StoreError> {
    let statement = statement.replacen("{}", &source(rows, first.len() + 1), 1);
    let done = sqlx::query_with(AssertSqlSafe(statement), arguments(first, rows)?).execute(conn).await.map_err(db)?;
    Ok(done.rows_affected())
}

/// `first` followed by `rows`, a statement's arguments.
fn arguments(first: &[&str], rows: &Rows) -> Result<Args, StoreError> {
    let mut args = Args::default();
    for value in first {
        args.add(*value).map_err(unbindable)?;
    }
    add_rows(&mut args, rows)?;
    Ok(args)
}

/// Merges buckets (R10) inside the caller's write transaction: the rows, the days they mark
/// dirty, and the violations of their sites' caps (R17). The months' partitions exist already
/// ([`Backend::ensure_partitions_for`]).
pub(super) async fn merge(conn: &mut Conn, rows: &[(&str, Measured)]) -> Result<MergeStats, StoreError> {
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
        let keys = Rows::default()
            .texts("site", chunk.iter().map(|((site, _), _)| site))
            .ints("start", chunk.iter().map(|((_, start), _)| *start));
        // The keys stored before (a partitioned table has no `xmax` to tell in RETURNING).
        let stored: i64 = sqlx::query_scalar_with(
            AssertSqlSafe(format!(
                "SELECT count(*) FROM {} JOIN buckets b ON b.site_id = batch.site AND b.bucket_start = batch.start",
                source(&keys, 1)
            )),
            arguments(&[], &keys)?,
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
        let buckets = keys
            .ints("max_bps", chunk.iter().map(|(_, (max_bps, _))| *max_bps))
            .ints("samples", chunk.iter().map(|(_, (_, samples))| *samples));
        const MERGE: &str = concat!(
            "INSERT INTO buckets (site_id, bucket_start, max_bps, samples, received_at, last_received_at)
             SELECT site, start, max_bps, samples, $1, $1 FROM {} WHERE true
             ON CONFLICT (site_id, bucket_start) DO UPDATE SET max_bps = ",
            greatest!("buckets.max_bps", "excluded.max_bps"),
            ", samples = ",
            greatest!("buckets.samples", "excluded.samples"),
            ", last_received_at = excluded.last_received_at"
        );
        execute_with_rows(&mut *conn, MERGE, &[received.as_str()], &buckets).await?;
        stats.inserted += to_u64(chunk.len() as i64 - stored, "count")?;
        stats.merged += to_u64(stored, "count")?;

        let days: BTreeSet<(&str, NaiveDate)> = chunk
            .iter()
            .map(|((site, start), _)| Ok((*site, bucket_start(*start)?.day())))
            .collect::<Result<_, _>>()?;
        let days = Rows::default()
            .texts("site", days.iter().map(|(site, _)| site))
            .texts("day", days.iter().map(|(_, day)| day));
        const MARK_DIRTY: &str = "INSERT INTO dirty_days (site_id, day, generation) SELECT site, day, 1 FROM {} WHERE true
            ON CONFLICT (site_id, day) DO UPDATE SET generation = dirty_days.generation + 1";
        execute_with_rows(&mut *conn, MARK_DIRTY, &[], &days).await?;
    }
    note_late(&mut *conn, merged.iter().map(|(key, _)| *key)).await?;
    let over: Vec<_> = over.into_iter().collect();
    for chunk in over.chunks(CHUNK) {
        let violations = Rows::default()
            .texts("site", chunk.iter().map(|((site, _), _)| site))
            .ints("start", chunk.iter().map(|((_, start), _)| *start))
            .ints("max_bps", chunk.iter().map(|(_, (max_bps, _))| *max_bps))
            .ints("cap_bps", chunk.iter().map(|(_, (_, cap))| *cap));
        const RECORD_VIOLATIONS: &str = concat!(
            "INSERT INTO enforcement_violations (site_id, bucket_start, max_bps, cap_bps, recorded_at)
             SELECT site, start, max_bps, cap_bps, $1 FROM {} WHERE true
             ON CONFLICT (site_id, bucket_start) DO UPDATE SET max_bps = ",
            greatest!("enforcement_violations.max_bps", "excluded.max_bps"),
            ", cap_bps = excluded.cap_bps"
        );
        execute_with_rows(&mut *conn, RECORD_VIOLATIONS, &[received.as_str()], &violations).await?;
    }
    Ok(stats)
}

/// Notes the buckets of `keys` (site, start) of a month already finalized for their site's account (R9's
/// late buckets). Only a month before the current one can be finalized: the current month's
/// buckets, nearly all of those that arrive, cost nothing here.
async fn note_late<'a>(conn: &mut Conn, keys: impl Iterator<Item = (&'a str, i64)>) -> Result<(), StoreError> {
    let current = Month::containing(crate::clock::now().date_naive());
    let mut earlier = Vec::new();
    for (site, start) in keys {
        let month = Month::containing(bucket_start(start)?.day());
        if month < current {
            earlier.push((site, month.to_string(), start));
        }
    }
    if earlier.is_empty() {
        return Ok(());
    }
    let sites: Vec<&str> = earlier.iter().map(|(site, _, _)| *site).collect::<BTreeSet<_>>().into_iter().collect();
    let months: Vec<&str> =
        earlier.iter().map(|(_, month, _)| month.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    let finalized: Vec<(String, String, String)> = sqlx::query_as(concat!(
        "SELECT s.id, f.month, s.account_id FROM sites s JOIN finalized_months f ON f.account_id = s.account_id
         WHERE s.id IN ",
        text_list!(1),
        " AND f.month IN ",
        text_list!(2)
    ))
    .bind(texts(&sites)?)
    .bind(texts(&months)?)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let account_of: HashMap<(&str, &str), &str> =
        finalized.iter().map(|(site, month, account)| ((site.as_str(), month.as_str()), account.as_str())).collect();
    let late: Vec<(&str, &str, &str, i64)> = earlier
        .iter()
        .filter_map(|(site, month, start)| {
            account_of.get(&(*site, month.as_str())).map(|account| (*account, month.as_str(), *site, *start))
        })
        .collect();
    if late.is_empty() {
        return Ok(());
    }
    let rows = Rows::default()
        .texts("account", late.iter().map(|(account, ..)| account))
        .texts("month", late.iter().map(|(_, month, ..)| month))
        .texts("site", late.iter().map(|(_, _, site, _)| site))
        .ints("start", late.iter().map(|(.., start)| *start));
    const NOTE_LATE: &str = "INSERT INTO late_buckets (account_id, month, site_id, bucket_start)
        SELECT account, month, site, start FROM {} WHERE true ON CONFLICT DO NOTHING";
    execute_with_rows(conn, NOTE_LATE, &[], &rows).await?;
    Ok(())
}

/// Appends `range`'s bounds to a WHERE clause on `(site_id, day)`.
fn push_range(query: &mut QueryBuilder<Db>, range: &KeyRange) {
    if let Some((site, day)) = &range.after {
        query.push(" AND (site_id, day) > (").push_bind(site.clone()).push(", ").push_bind(day.to_string()).push(")");
    }
    if let Some((site, day)) = &range.through {
        query.push(" AND (site_id, day) <= (").push_bind(site.clone()).push(", ").push_bind(day.to_string()).push(")");
    }
}

impl BucketStore for Backend {
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

    async fn late_buckets(
        &self,
        account: &str,
        month: &str,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM late_buckets
             WHERE account_id = $1 AND month = $2 AND bucket_start >= $3 AND bucket_start < $4",
        )
        .bind(account)
        .bind(month)
        .bind(from.timestamp())
        .bind(until.timestamp())
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        to_u64(count, "count")
    }

    async fn dirty_days_midpoint(&self, now: DateTime<Utc>) -> Result<Option<DayKey>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "WITH free AS (SELECT site_id, day FROM dirty_days WHERE coalesce(claimed_until, '') <= $1)
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut tx = self.begin_write().await?;
        let mut claim = QueryBuilder::<Db>::new("UPDATE dirty_days SET claimed_until = ");
        claim.push_bind(stamp(now + lease));
        claim.push(
            " WHERE (site_id, day) IN (SELECT site_id, day FROM dirty_days WHERE coalesce(claimed_until, '') <= ",
        );
        claim.push_bind(stamp(now));
        push_range(&mut claim, range);
        claim.push(" ORDER BY site_id, day LIMIT ").push_bind(limit);
        claim.push(concat!(skip_locked!(), ") RETURNING site_id, day, generation"));
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
        for chunk in days.chunks(CHUNK) {
            let site_days = Rows::default()
                .texts("site", chunk.iter().map(|(d, _)| &d.site))
                .texts("day", chunk.iter().map(|(d, _)| d.day))
                .ints("p95_bps", chunk.iter().map(|(_, p)| to_i64(p.p95_bps, "p95")).collect::<Result<Vec<_>, _>>()?)
                .ints("present", chunk.iter().map(|(_, p)| i64::from(p.buckets_present)));
            const SAVE_DAYS: &str = "INSERT INTO site_days (site_id, day, p95_bps, buckets_present, computed_at)
                SELECT site, day, p95_bps, present, $1 FROM {} WHERE true
                ON CONFLICT (site_id, day) DO UPDATE SET
                p95_bps = excluded.p95_bps, buckets_present = excluded.buckets_present,
                computed_at = excluded.computed_at";
            execute_with_rows(&mut tx, SAVE_DAYS, &[computed.as_str()], &site_days).await?;
            // Clear each mark only if no merge bumped its generation meanwhile. (The CTE lets
            // SQLite look each key up; `IN (VALUES ...)` scans the whole table.)
            let done = Rows::default()
                .texts("site", chunk.iter().map(|(d, _)| &d.site))
                .texts("day", chunk.iter().map(|(d, _)| d.day))
                .ints("generation", chunk.iter().map(|(d, _)| d.generation));
            const CLEAR_MARKS: &str = "WITH done AS (SELECT site, day, generation FROM {})
                DELETE FROM dirty_days WHERE (site_id, day, generation) IN (SELECT site, day, generation FROM done)";
            let cleared = execute_with_rows(&mut tx, CLEAR_MARKS, &[], &done).await?;
            if cleared == chunk.len() as u64 {
                continue;
            }
            // The marks left changed meanwhile: free for the next pass at once.
            const RELEASE_MARKS: &str = "WITH done AS (SELECT site, day FROM {})
                UPDATE dirty_days SET claimed_until = NULL
                WHERE (site_id, day) IN (SELECT site, day FROM done) AND claimed_until IS NOT NULL";
            execute_with_rows(&mut tx, RELEASE_MARKS, &[], &done).await?;
        }
        tx.commit().await
    }

    async fn site_days(&self, account: &str, from: NaiveDate, until: NaiveDate) -> Result<SiteDays, StoreError> {
        // One snapshot for both reads, and a transaction that cannot write (R35).
        let mut tx = self.begin_read().await?;
        // One row per site, its days folded into "day p95 present,…" (see `with_buckets`).
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT d.site_id, string_agg(d.day || ' ' || d.p95_bps || ' ' || d.buckets_present, ',' ORDER BY d.day)
             FROM site_days d JOIN sites s ON s.id = d.site_id
             WHERE s.account_id = $1 AND d.day >= $2 AND d.day < $3 GROUP BY d.site_id ORDER BY d.site_id",
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
        let mut computed = Vec::new();
        for (site, folded) in rows {
            for day in folded.split(',') {
                let corrupt = || StoreError::Corrupt(format!("site day {day:?} of {site}"));
                let mut fields = day.split(' ');
                let mut field = || fields.next().ok_or_else(corrupt);
                let (date, p95, present) = (field()?, field()?, field()?);
                computed.push(SiteDay {
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
        Ok(SiteDays { computed, dirty })
    }
}

/// The buckets' `(start, max_bps)` of each day of `days` (site, day, generation), in key order.
/// Each site's days are read in one ordered range, from its first day to the end of its last
/// (the engine's batch of a cold month: each site's month in one index scan, not a lookup per
/// day), up to [`CHUNK`] sites a statement.
async fn with_buckets(conn: &mut Conn, days: &[(String, String, i64)]) -> Result<Vec<DirtyDayBuckets>, StoreError> {
    let mut days = days
        .iter()
        .map(|(site, day, generation)| Ok(DirtyDay { day: parse(day, "day")?, site: site.clone(), generation: *generation }))
        .collect::<Result<Vec<_>, StoreError>>()?;
    days.sort_by(|a, b| (&a.site, a.day).cmp(&(&b.site, b.day)));
    // Each site's first and last day: its days are next to each other once sorted.
    let sites: Vec<&[DirtyDay]> = days.chunk_by(|a, b| a.site == b.site).collect();
    let mut ranges = Vec::with_capacity(sites.len());
    for chunk in sites.chunks(CHUNK) {
        let start = |day: Option<&DirtyDay>| day.map_or(0, |d| BucketStart::first_of_day(d.day).unix());
        let firsts: Vec<i64> = chunk.iter().map(|days| start(days.first())).collect();
        let untils: Vec<i64> = chunk.iter().map(|days| start(days.last()) + 86_400).collect();
        // The whole chunk's span once more as plain bounds: only its months' partitions are read.
        let (from, to) = (firsts.iter().min().copied(), untils.iter().max().copied());
        let (Some(from), Some(to)) = (from, to) else { continue };
        let rows = Rows::default()
            .ints("i", 0..chunk.len() as i64)
            .texts("site", chunk.iter().map(|days| days.first().map_or("", |d| d.site.as_str())))
            .ints("first", firsts)
            .ints("until", untils);
        ranges.extend(buckets_in_ranges(&mut *conn, &rows, from, to).await?);
    }
    let mut found = Vec::with_capacity(days.len());
    for (days, mut buckets) in sites.into_iter().zip(ranges) {
        buckets.sort_unstable();
        for day in days {
            let first = BucketStart::first_of_day(day.day).unix();
            let of_day = &buckets[buckets.partition_point(|b| b.0 < first)..buckets.partition_point(|b| b.0 < first + 86_400)];
            let of_day = of_day
                .iter()
                .map(|&(start, bps)| Ok((bucket_start(start)?, to_u64(bps, "max_bps")?)))
                .collect::<Result<_, StoreError>>()?;
            found.push((day.clone(), of_day));
        }
    }
    Ok(found)
}
