//! The usage engine on a generated month (issue 5's benchmark):
//! `cargo bench -p tally-collector --bench usage`.
//!
//! `SITES` (10,000) sites in `ACCOUNTS` (100) accounts over the five region groups, October 2026,
//! each site with every tenth slot of each day measured: 8.9 million buckets for 10,000 sites,
//! on each store of `USAGE_STORES` (both: `sqlite,postgres`) with its own schema and durability:
//! an SQLite file; a PostgreSQL database on a throwaway cluster with PostgreSQL's defaults.
//! 1. Cold: every site-day recomputed from the buckets, then every account's report.
//! 2. Incremental: one new day of buckets arrives (Oct 31); its site-days recomputed, then every
//!    account's report again.
//! 3. The same monthly P95 per account and region group with one SQL query (window functions)
//!    on the same database; its figures must equal the engine's.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{Datelike, NaiveDate, Utc};
use tally_testkit::postgres as pg_cluster;

use tally_collector::store::postgres::PgStore;
use tally_collector::store::sqlite::SqliteStore;
use tally_collector::store::{Account, ContractTerm, Site, Store};
use tally_collector::usage::{self, report};
use tally_common::bucket::Bucket;
use tally_common::kinds::SiteType;
use tally_common::region::RegionGroup;
use tally_common::time::{BucketStart, Month, MonthWindowSetting};

const COUNTRIES: [(&str, RegionGroup); 5] = [
    ("US", RegionGroup::Group1),
    ("JP", RegionGroup::Group2),
    ("CN", RegionGroup::China),
    ("VN", RegionGroup::Vietnam),
    ("MA", RegionGroup::Morocco),
];

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 10, d).unwrap_or_default()
}

/// Site `s`'s buckets of one day: every tenth slot, values varying by site, day and slot.
fn buckets_of(s: usize, date: NaiveDate) -> Vec<(String, Bucket)> {
    let first = BucketStart::first_of_day(date).unix();
    (0..288)
        .step_by(10)
        .filter_map(|slot| {
            let start = BucketStart::from_unix(first + 300 * slot as i64).ok()?;
            let value = 1_000_000 + ((s * 7_919 + slot * 104_729 + date.ordinal() as usize * 13) % 50_000_000) as u64;
            Some((format!("s{s:05}"), Bucket { start, max_bps: value, samples: 60 }))
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let (sites, accounts) = (setting("SITES", 10_000), setting("ACCOUNTS", 100));
    let stores = std::env::var("USAGE_STORES").unwrap_or_else(|_| "sqlite,postgres".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        for backend in stores.split(',') {
            println!("--- {backend}");
            match backend {
                "sqlite" => {
                    let dir = tempfile::tempdir()?;
                    let path = dir.path().join("tally.db");
                    let store = SqliteStore::open(&path).await?;
                    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
                    let pool = sqlx::SqlitePool::connect_with(options).await?;
                    let size = async || {
                        let file = |name: &str| std::fs::metadata(dir.path().join(name)).map_or(0, |m| m.len());
                        Ok(file("tally.db") + file("tally.db-wal"))
                    };
                    bench(store, sites, accounts, size, single_query(&pool)).await?;
                }
                "postgres" => {
                    let cluster = pg_cluster::durable_cluster().map_err(anyhow::Error::msg)?;
                    let url = cluster.database();
                    let store = PgStore::open(&url).await?;
                    let pool = sqlx::PgPool::connect(&url).await?;
                    let size = async || {
                        let bytes: i64 =
                            sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(&pool).await?;
                        Ok(bytes as u64)
                    };
                    bench(store, sites, accounts, size, single_query(&pool)).await?;
                }
                other => anyhow::bail!("USAGE_STORES: {other:?} is neither sqlite nor postgres"),
            }
        }
        anyhow::Ok(())
    })
}

/// The benchmark on `store`; `size` is its database's size in bytes, `single` the single query
/// on the same database.
async fn bench<S: Store + Clone + 'static>(
    store: S,
    sites: usize,
    accounts: usize,
    size: impl AsyncFn() -> anyhow::Result<u64>,
    single: impl std::future::Future<Output = anyhow::Result<BTreeMap<(String, String), u64>>>,
) -> anyhow::Result<()> {
    let empty = size().await?;
    for a in 0..accounts {
        let account = Account {
            id: format!("a{a:03}"),
            name: format!("Account {a}"),
            partner: None,
            eop_contact_name: None,
            eop_contact_email: None,
        };
        store
            .add_account(&account, ContractTerm::months_from(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), 24))
            .await?;
    }
    for s in 0..sites {
        let (country, group) = COUNTRIES[s % COUNTRIES.len()];
        let site = Site {
            id: format!("s{s:05}"),
            account: format!("a{:03}", s % accounts),
            name: format!("site {s}"),
            country: country.parse()?,
            region_group: group,
            site_type: SiteType::Socket,
            cap_bps: None,
        };
        store.add_site(&site).await?;
    }
    let started = Instant::now();
    let mut count = 0;
    for d in 1..=30 {
        let mut rows = Vec::new();
        for s in 0..sites {
            rows.extend(buckets_of(s, day(d)));
        }
        count += rows.len();
        for chunk in rows.chunks(100_000) {
            store.merge_buckets(&chunk.iter().map(|(site, b)| (site.as_str(), *b)).collect::<Vec<_>>()).await?;
        }
    }
    println!("generated {count} buckets of Oct 1-30 for {sites} sites in {:.1} s", started.elapsed().as_secs_f64());
    // What a month of buckets takes: a site measured in every slot has 288 a day.
    let per_bucket = (size().await?.saturating_sub(empty)) as f64 / count as f64;
    println!(
        "store: {per_bucket:.0} bytes per bucket stored, {:.1} MiB per site for a 31-day month of 8,928 buckets",
        per_bucket * 8_928.0 / 1_048_576.0
    );

    let october: Month = "2026-10".parse()?;
    let now = Utc::now(); // a report never finalizes (R35): computed, never saved
    let reports = |store: &S| {
        let store = store.clone();
        async move {
            let mut pools = BTreeMap::new();
            for a in 0..accounts {
                let id = format!("a{a:03}");
                let r = report::build(&store, &id, october, MonthWindowSetting::Calendar, now).await?;
                for p in r.bandwidth_pool {
                    pools.insert((id.clone(), p.region_group.to_string()), p.monthly_p95_bps);
                }
            }
            anyhow::Ok(pools)
        }
    };

    let started = Instant::now();
    let days = usage::refresh(&store).await?;
    let cold_refresh = started.elapsed().as_secs_f64();
    reports(&store).await?;
    let cold = started.elapsed().as_secs_f64();
    println!("cold: {days} site-days recomputed in {cold_refresh:.2} s; with {accounts} reports {cold:.2} s");

    let mut rows = Vec::new();
    for s in 0..sites {
        rows.extend(buckets_of(s, day(31)));
    }
    for chunk in rows.chunks(100_000) {
        store.merge_buckets(&chunk.iter().map(|(site, b)| (site.as_str(), *b)).collect::<Vec<_>>()).await?;
    }
    let started = Instant::now();
    let days = usage::refresh(&store).await?;
    let incremental_refresh = started.elapsed().as_secs_f64();
    let engine = reports(&store).await?;
    let incremental = started.elapsed().as_secs_f64();
    println!(
        "incremental: one new day ({} buckets), {days} site-days recomputed in {incremental_refresh:.2} s; \
         with {accounts} reports {incremental:.2} s",
        rows.len()
    );

    let started = Instant::now();
    let single = single.await?;
    let single_seconds = started.elapsed().as_secs_f64();
    println!(
        "single SQL query: {single_seconds:.2} s; engine cold {:.1}x, incremental {:.1}x faster",
        single_seconds / cold,
        single_seconds / incremental
    );
    let engine: BTreeMap<_, _> = engine.into_iter().filter(|(_, v)| *v > 0).collect();
    anyhow::ensure!(engine == single, "the single query and the engine disagree");
    println!("the single query's {} monthly P95 figures equal the engine's", single.len());
    Ok(())
}

/// Every account's monthly P95 per region group for October (calendar window), in one query
/// (the same text on both databases).
async fn single_query<'c, E>(db: E) -> anyhow::Result<BTreeMap<(String, String), u64>>
where
    E: sqlx::Executor<'c>,
    for<'r> (String, String, i64): sqlx::FromRow<'r, <E::Database as sqlx::Database>::Row>,
    i64: sqlx::Encode<'c, E::Database> + sqlx::Type<E::Database>,
    <E::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<E::Database>,
{
    let (from, until) = (BucketStart::first_of_day(day(1)).unix(), BucketStart::first_of_day(day(31)).unix() + 86_400);
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "WITH ranked AS (
             SELECT site_id, bucket_start / 86400 AS day, max_bps,
                    row_number() OVER (PARTITION BY site_id, bucket_start / 86400 ORDER BY max_bps DESC) AS rank
             FROM buckets WHERE bucket_start >= $1 AND bucket_start < $2),
         site_days AS (
             SELECT site_id, day, max(CASE WHEN rank = 15 THEN max_bps ELSE 0 END) AS p95
             FROM ranked GROUP BY site_id, day),
         aggregates AS (
             SELECT s.account_id, s.region_group, d.day, CAST(sum(d.p95) AS BIGINT) AS total
             FROM site_days d JOIN sites s ON s.id = d.site_id GROUP BY s.account_id, s.region_group, d.day)
         SELECT account_id, region_group, max(total) FROM aggregates
         GROUP BY account_id, region_group HAVING max(total) > 0",
    )
    .bind(from)
    .bind(until)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(a, g, v)| ((a, g), v as u64)).collect())
}
