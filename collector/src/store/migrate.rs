//! `tally-collector migrate-store`: copies an SQLite store into an empty PostgreSQL one, every
//! table as it is (both have the same columns, [`stored`](super::stored)), in one transaction on
//! the target, then checks that every table holds as many rows on both sides and that the
//! buckets are the same (a SHA-256 over every row, in key order). The source is only read.

use sqlx::postgres::PgArguments;
use sqlx::sqlite::SqliteRow;
use sqlx::{Arguments, PgConnection, Row};

use super::StoreError;
use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use crate::digest::hex;

/// Every table, each after the tables it refers to.
const TABLES: [&str; 31] = [
    "accounts",
    "contract_terms",
    "sites",
    "site_groups",
    "licenses",
    "buckets",
    "enrollment_tokens",
    "certificates",
    "site_days",
    "dirty_days",
    "finalized_months",
    "usage_events",
    "overusages",
    "resolutions",
    "notification_recipients",
    "recipient_changes",
    "outbox",
    "policy_reports",
    "policy_applied",
    "cap_history",
    "enforcement_violations",
    "api_tokens",
    "console_sessions",
    "orders",
    "order_items",
    "order_item_history",
    "quarantined_buckets",
    "refusals",
    "agent_discards",
    "site_presence",
    "late_buckets",
];

/// Rows read and written at a time.
const PAGE: i64 = 20_000;

/// What a migration copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Rows per table, in [`TABLES`] order.
    pub rows: Vec<(&'static str, u64)>,
    /// The SHA-256 of every bucket, in (site, start) order: the same on both sides.
    pub buckets_sha256: String,
}

/// A column's type on PostgreSQL, which says how to read it from SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Integer,
    Boolean,
}

/// Copies `from` into `to`, which must hold no account yet.
pub async fn copy(from: &SqliteStore, to: &PgStore) -> Result<Migrated, StoreError> {
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts").fetch_one(to.pool()).await.map_err(pg)?;
    if accounts > 0 {
        return Err(StoreError::Database(format!(
            "the target store is not empty ({accounts} account(s)): migrate-store copies into a new database only"
        )));
    }
    let span: (Option<i64>, Option<i64>) = sqlx::query_as("SELECT min(bucket_start), max(bucket_start) FROM buckets")
        .fetch_one(from.pool())
        .await
        .map_err(lite)?;
    if let (Some(first), Some(last)) = span {
        to.ensure_partitions_between(first, last).await?;
    }
    let mut tx = to.pool().begin().await.map_err(pg)?;
    let mut rows = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        rows.push((table, copy_table(from, &mut tx, table).await?));
    }
    // Identities and the policy sequence continue after the rows copied.
    for table in ["licenses", "overusages", "outbox", "api_tokens", "orders", "order_items", "recipient_changes"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false) FROM {table}"
        )))
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
    }
    sqlx::query("SELECT setval('policy_versions', coalesce(max(policy_version), 0) + 1, false) FROM sites")
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
    tx.commit().await.map_err(pg)?;

    for (table, copied) in &rows {
        let count = format!("SELECT count(*) FROM {table}");
        let source: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(count.clone())).fetch_one(from.pool()).await.map_err(lite)?;
        let target: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count)).fetch_one(to.pool()).await.map_err(pg)?;
        if source != target || u64::try_from(target).ok() != Some(*copied) {
            return Err(StoreError::Corrupt(format!(
                "{table}: {source} row(s) in the source, {target} in the target after copying {copied}"
            )));
        }
    }
    let (source, target) = (bucket_digest_sqlite(from).await?, bucket_digest_pg(to).await?);
    if source != target {
        return Err(StoreError::Corrupt(format!("the buckets differ after copying: SHA-256 {source} and {target}")));
    }
    Ok(Migrated { rows, buckets_sha256: target })
}

/// Copies one table, page by page in key order; returns the rows copied.
async fn copy_table(from: &SqliteStore, to: &mut PgConnection, table: &str) -> Result<u64, StoreError> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *to)
    .await
    .map_err(pg)?;
    let columns: Vec<(String, Kind)> = columns
        .into_iter()
        .map(|(name, data_type)| {
            let kind = match data_type.as_str() {
                "text" => Kind::Text,
                "bigint" => Kind::Integer,
                "boolean" => Kind::Boolean,
                other => return Err(StoreError::Database(format!("{table}.{name}: no copy for type {other}"))),
            };
            Ok((name, kind))
        })
        .collect::<Result<_, _>>()?;
    let names: Vec<&str> = columns.iter().map(|(name, _)| name.as_str()).collect();
    let key: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT name FROM pragma_table_info('{table}') WHERE pk > 0 ORDER BY pk"
    )))
    .fetch_all(from.pool())
    .await
    .map_err(lite)?;
    // Accounts managed by a partner come after their partner (`partner_id` refers to `accounts`).
    let order = match table {
        "accounts" => "partner_id IS NOT NULL, id".to_owned(),
        _ if key.is_empty() => "rowid".to_owned(),
        _ => key.join(", "),
    };
    let select = format!("SELECT {} FROM {table} ORDER BY {order} LIMIT ?1 OFFSET ?2", names.join(", "));
    let unnest: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| {
            let array = match kind {
                Kind::Text => "text[]",
                Kind::Integer => "bigint[]",
                Kind::Boolean => "boolean[]",
            };
            format!("${}::{array}", i + 1)
        })
        .collect();
    let insert = format!("INSERT INTO {table} ({}) SELECT * FROM UNNEST({})", names.join(", "), unnest.join(", "));
    let mut copied = 0u64;
    loop {
        let page: Vec<SqliteRow> = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
            .bind(PAGE)
            .bind(i64::try_from(copied).unwrap_or(i64::MAX))
            .fetch_all(from.pool())
            .await
            .map_err(lite)?;
        if page.is_empty() {
            return Ok(copied);
        }
        let mut arguments = PgArguments::default();
        for (i, (name, kind)) in columns.iter().enumerate() {
            let cell = |e: sqlx::Error| StoreError::Corrupt(format!("{table}.{name}: {e}"));
            let added = match kind {
                Kind::Text => arguments.add(
                    page.iter()
                        .map(|r| r.try_get::<Option<String>, _>(i))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(cell)?,
                ),
                Kind::Integer => arguments.add(
                    page.iter().map(|r| r.try_get::<Option<i64>, _>(i)).collect::<Result<Vec<_>, _>>().map_err(cell)?,
                ),
                Kind::Boolean => arguments.add(
                    page.iter()
                        .map(|r| r.try_get::<Option<bool>, _>(i))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(cell)?,
                ),
            };
            added.map_err(|e| StoreError::Database(format!("{table}.{name}: {e}")))?;
        }
        sqlx::query_with(sqlx::AssertSqlSafe(insert.clone()), arguments)
            .execute(&mut *to)
            .await
            .map_err(|e| StoreError::Database(format!("copying {table}: {e}")))?;
        copied += page.len() as u64;
    }
}

/// A page of buckets after a key: `(site, start, max_bps, samples)`, in key order.
type BucketPage = Vec<(String, i64, i64, i64)>;

/// The SHA-256 of every bucket row `site start max samples\n`, in key order, read page by page
/// with `page(after)`.
async fn bucket_digest<F, P>(mut page: P) -> Result<String, StoreError>
where
    P: FnMut((String, i64)) -> F,
    F: std::future::Future<Output = Result<BucketPage, StoreError>>,
{
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut after = (String::new(), i64::MIN);
    loop {
        let rows = page(after.clone()).await?;
        let Some(last) = rows.last() else { return Ok(hex(digest.finish().as_ref())) };
        after = (last.0.clone(), last.1);
        for (site, start, max_bps, samples) in &rows {
            digest.update(format!("{site} {start} {max_bps} {samples}\n").as_bytes());
        }
    }
}

async fn bucket_digest_sqlite(store: &SqliteStore) -> Result<String, StoreError> {
    bucket_digest(|(site, start)| async move {
        sqlx::query_as(
            "SELECT site_id, bucket_start, max_bps, samples FROM buckets WHERE (site_id, bucket_start) > (?1, ?2)
             ORDER BY site_id, bucket_start LIMIT ?3",
        )
        .bind(site)
        .bind(start)
        .bind(PAGE)
        .fetch_all(store.pool())
        .await
        .map_err(lite)
    })
    .await
}

async fn bucket_digest_pg(store: &PgStore) -> Result<String, StoreError> {
    bucket_digest(|(site, start)| async move {
        sqlx::query_as(
            "SELECT site_id, bucket_start, max_bps, samples FROM buckets WHERE (site_id, bucket_start) > ($1, $2)
             ORDER BY site_id, bucket_start LIMIT $3",
        )
        .bind(site)
        .bind(start)
        .bind(PAGE)
        .fetch_all(store.pool())
        .await
        .map_err(pg)
    })
    .await
}

fn lite(e: sqlx::Error) -> StoreError {
    StoreError::Database(format!("reading the SQLite store: {e}"))
}

fn pg(e: sqlx::Error) -> StoreError {
    StoreError::Database(format!("PostgreSQL: {e}"))
}
