//! The SQLite backend: one database file in WAL mode with `synchronous = FULL` (a commit is on
//! disk when it returns), foreign keys on, a busy timeout so admin commands can write while
//! `serve` runs. Migrations: `collector/migrations/sqlite/`. Queries are checked at run time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite};
use tally_common::bucket::Bucket;
use tally_common::enforcement::{CapViolation, exceeds_cap};
use tally_common::kinds::ItemStatus;
use tally_common::p95::DailyP95;
use tally_common::time::{BucketStart, DAY_SLOTS, Month, rfc3339};

use crate::orders::rules::SiteFacts;
use crate::orders::{Created, NewOrder, Order, OrderPage, Transition, TransitionRefused};

use super::{
    Account, ApiToken, CapChange, CertificateRecord, Channel, DayKey, DirtyDay, DirtyDayBuckets, EnforcementViolation,
    KeyRange, License, MergeStats, MeterCounts, MeterEvent, NewLicense, NewOverusage, Notification, OutboxItem,
    Overusage, PolicyReport, Resolution, ResolutionKind, Role, Site, SiteDay, SitePolicy, Store, StoreError,
    TokenRecord, TokenRefusal,
};

/// Buckets per statement when merging: 5 parameters each, under SQLite's limit of 32,766.
const MERGE_CHUNK: usize = 1_000;

mod orders;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Taken by this process's checked write transactions before `BEGIN IMMEDIATE`: they queue
    /// here instead of in SQLite's busy handler, whose growing sleeps make a long tail.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `path` and applies the migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(format!("{}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(db)?;
        MIGRATIONS.run(&pool).await.map_err(|e| StoreError::Database(format!("migrations: {e}")))?;
        orders::build_missing_docs(&pool).await?;
        Ok(SqliteStore { pool, writer: Default::default() })
    }
}

async fn sites_of_account(conn: &mut sqlx::SqliteConnection, account: &str) -> Result<Vec<Site>, StoreError> {
    let rows: Vec<SiteRow> = sqlx::query_as(
        "SELECT id, account_id, name, country, region_group, site_type, cap_bps FROM sites
         WHERE account_id = ? ORDER BY id",
    )
    .bind(account)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    rows.into_iter().map(SiteRow::into_site).collect()
}

async fn licenses_of_account(conn: &mut sqlx::SqliteConnection, account: &str) -> Result<Vec<License>, StoreError> {
    let rows: Vec<LicenseRow> = sqlx::query_as(
        "SELECT id, account_id, kind, region, quantity, block_size, per_unit, effective_from, effective_to
         FROM licenses WHERE account_id = ? ORDER BY id",
    )
    .bind(account)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    rows.into_iter()
        .map(|r| {
            let terms = NewLicense {
                kind: parse(&r.kind, "license kind")?,
                quantity: to_u64(r.quantity, "quantity")?,
                block_size: r.block_size.map(|b| to_u64(b, "block size")).transpose()?,
                per_unit: r.per_unit.map(|p| to_u64(p, "events per unit")).transpose()?,
                effective_from: parse(&r.effective_from, "effective_from")?,
                effective_to: parse(&r.effective_to, "effective_to")?,
                account: r.account_id,
                region: r.region,
            };
            Ok(License { id: r.id, terms })
        })
        .collect()
}

/// The caps of the capped sites among `rows`' (R17), by site.
async fn caps_of(
    conn: &mut sqlx::SqliteConnection,
    rows: &[(String, Bucket)],
) -> Result<HashMap<String, u64>, StoreError> {
    let sites: BTreeSet<&str> = rows.iter().map(|(site, _)| site.as_str()).collect();
    let sites = serde_json::to_string(&sites).map_err(|e| StoreError::Database(e.to_string()))?;
    let caps: Vec<(String, i64)> = sqlx::query_as(
        "SELECT id, cap_bps FROM sites WHERE cap_bps IS NOT NULL AND id IN (SELECT value FROM json_each(?))",
    )
    .bind(sites)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    caps.into_iter().map(|(site, cap)| Ok((site, to_u64(cap, "cap")?))).collect()
}

async fn insert_site(conn: &mut sqlx::SqliteConnection, s: &Site) -> Result<(), StoreError> {
    let cap = s.cap_bps.map(|c| to_i64(c, "cap")).transpose()?;
    sqlx::query(
        "INSERT INTO sites (id, account_id, name, country, region_group, site_type, cap_bps, created_at, policy_version)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, (SELECT coalesce(max(policy_version), 0) + 1 FROM sites))",
    )
    .bind(&s.id)
    .bind(&s.account)
    .bind(&s.name)
    .bind(s.country.as_str())
    .bind(s.region_group.as_str())
    .bind(s.site_type.as_str())
    .bind(cap)
    .bind(now())
    .execute(conn)
    .await
    .map_err(insert_error("site", &s.id))?;
    Ok(())
}

async fn insert_license(conn: &mut sqlx::SqliteConnection, l: &NewLicense) -> Result<i64, StoreError> {
    let id = sqlx::query(
        "INSERT INTO licenses (account_id, kind, region, quantity, block_size, per_unit, effective_from, effective_to, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&l.account)
    .bind(l.kind.as_str())
    .bind(&l.region)
    .bind(to_i64(l.quantity, "quantity")?)
    .bind(l.block_size.map(|b| to_i64(b, "block size")).transpose()?)
    .bind(l.per_unit.map(|p| to_i64(p, "events per unit")).transpose()?)
    .bind(l.effective_from.to_string())
    .bind(l.effective_to.to_string())
    .bind(now())
    .execute(conn)
    .await
    .map_err(insert_error("license", &l.account))?
    .last_insert_rowid();
    Ok(id)
}

/// Over-usage rows with their resolution, filtered by `$filter` (a literal: the SQL stays static).
macro_rules! select_overusage {
    ($filter:literal) => {
        concat!(
            "SELECT o.id, o.account_id, o.month, o.license, o.region, o.measured, o.licensed, o.excess, o.flags,
                 r.kind AS resolution, r.quantity AS resolved_quantity, r.license_id, r.created_at AS resolved_at
             FROM overusages o LEFT JOIN resolutions r ON r.overusage_id = o.id ",
            $filter
        )
    };
}

#[derive(sqlx::FromRow)]
struct OverusageRow {
    id: i64,
    account_id: String,
    month: String,
    license: String,
    region: String,
    measured: i64,
    licensed: i64,
    excess: i64,
    flags: String,
    resolution: Option<String>,
    resolved_quantity: Option<i64>,
    license_id: Option<i64>,
    resolved_at: Option<String>,
}

impl OverusageRow {
    fn into_overusage(self) -> Result<Overusage, StoreError> {
        let resolution = match (self.resolution, self.resolved_quantity, self.resolved_at) {
            (Some(kind), Some(quantity), Some(at)) => Some(Resolution {
                kind: match kind.as_str() {
                    "true_up" => ResolutionKind::TrueUp,
                    "true_forward" => ResolutionKind::TrueForward,
                    other => return Err(StoreError::Corrupt(format!("resolution kind {other:?}"))),
                },
                quantity: to_u64(quantity, "quantity")?,
                license_id: self.license_id,
                at: parse(&at, "resolved_at")?,
            }),
            _ => None,
        };
        let flags =
            self.flags.split(',').filter(|f| !f.is_empty()).map(|f| parse(f, "flag")).collect::<Result<_, _>>()?;
        Ok(Overusage {
            id: self.id,
            account: self.account_id,
            month: self.month,
            found: NewOverusage {
                license: parse(&self.license, "license")?,
                region: Some(self.region).filter(|r| !r.is_empty()),
                measured: to_u64(self.measured, "measured")?,
                licensed: to_u64(self.licensed, "licensed")?,
                excess: to_u64(self.excess, "excess")?,
                flags,
            },
            resolution,
        })
    }
}

/// Outbox rows filtered by `$filter` (a literal).
macro_rules! select_outbox {
    ($filter:literal) => {
        concat!(
            "SELECT id, account_id, topic, channel, recipient, subject, body, attempts, delivered_at, last_error
             FROM outbox ",
            $filter
        )
    };
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    account_id: String,
    topic: String,
    channel: String,
    recipient: String,
    subject: String,
    body: String,
    attempts: i64,
    delivered_at: Option<String>,
    last_error: Option<String>,
}

impl OutboxRow {
    fn into_item(self) -> Result<OutboxItem, StoreError> {
        Ok(OutboxItem {
            id: self.id,
            channel: parse(&self.channel, "channel")?,
            attempts: u32::try_from(self.attempts)
                .map_err(|_| StoreError::Corrupt(format!("attempts {}", self.attempts)))?,
            delivered_at: self.delivered_at.map(|t| parse(&t, "delivered_at")).transpose()?,
            account: self.account_id,
            topic: self.topic,
            recipient: self.recipient,
            subject: self.subject,
            body: self.body,
            last_error: self.last_error,
        })
    }
}

fn policy_from_row((site, version, cap): (String, i64, Option<i64>)) -> Result<SitePolicy, StoreError> {
    Ok(SitePolicy {
        site,
        version: to_u64(version, "policy version")?,
        cap_bps: cap.map(|c| to_u64(c, "cap")).transpose()?,
    })
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Maps a unique-key violation to `Duplicate`, anything else to `Database`.
fn insert_error(what: &'static str, id: &str) -> impl FnOnce(sqlx::Error) -> StoreError {
    let id = id.to_owned();
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate { what, id },
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
            StoreError::NotFound { what: "referenced account", id: format!("(for {what} {id})") }
        }
        _ => db(e),
    }
}

fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Database(format!("{what} {value} does not fit the store")))
}

fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is negative")))
}

fn bucket_start(unix: i64) -> Result<BucketStart, StoreError> {
    BucketStart::from_unix(unix).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse<T: FromStr>(value: &str, what: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| StoreError::Corrupt(format!("{what} {value:?}: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn now() -> String {
    stamp(crate::clock::now())
}

/// Stored times: RFC 3339 UTC with milliseconds, one fixed format so text order is time order.
fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: String,
    name: String,
    partner_id: Option<String>,
    eop_contact_name: Option<String>,
    eop_contact_email: Option<String>,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: i64,
    role: String,
    account_id: Option<String>,
    contact: bool,
    created_at: String,
    revoked_at: Option<String>,
}

impl From<AccountRow> for Account {
    fn from(r: AccountRow) -> Account {
        Account {
            id: r.id,
            name: r.name,
            partner: r.partner_id,
            eop_contact_name: r.eop_contact_name,
            eop_contact_email: r.eop_contact_email,
        }
    }
}

#[derive(sqlx::FromRow)]
struct SiteRow {
    id: String,
    account_id: String,
    name: String,
    country: String,
    region_group: String,
    site_type: String,
    cap_bps: Option<i64>,
}

impl SiteRow {
    fn into_site(self) -> Result<Site, StoreError> {
        Ok(Site {
            country: parse(&self.country, "country")?,
            region_group: parse(&self.region_group, "region group")?,
            site_type: parse(&self.site_type, "site type")?,
            cap_bps: self.cap_bps.map(|c| to_u64(c, "cap")).transpose()?,
            id: self.id,
            account: self.account_id,
            name: self.name,
        })
    }
}

#[derive(sqlx::FromRow)]
struct LicenseRow {
    id: i64,
    account_id: String,
    kind: String,
    region: Option<String>,
    quantity: i64,
    block_size: Option<i64>,
    per_unit: Option<i64>,
    effective_from: String,
    effective_to: String,
}

#[derive(sqlx::FromRow)]
struct BucketRow {
    bucket_start: i64,
    max_bps: i64,
    samples: i64,
}

impl Store for SqliteStore {
    async fn add_account(&self, a: &Account) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO accounts (id, name, partner_id, eop_contact_name, eop_contact_email, created_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&a.id)
        .bind(&a.name)
        .bind(&a.partner)
        .bind(&a.eop_contact_name)
        .bind(&a.eop_contact_email)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(insert_error("account", &a.id))?;
        Ok(())
    }

    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let row: Option<AccountRow> = sqlx::query_as(
            "SELECT id, name, partner_id, eop_contact_name, eop_contact_email FROM accounts WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.map(Account::from))
    }

    async fn account_ids(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT id FROM accounts ORDER BY id").fetch_all(&self.pool).await.map_err(db)
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows: Vec<AccountRow> = sqlx::query_as(
            "SELECT id, name, partner_id, eop_contact_name, eop_contact_email FROM accounts ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.into_iter().map(Account::from).collect())
    }

    async fn update_account(&self, a: &Account) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE accounts SET name = ?, eop_contact_name = ?, eop_contact_email = ? WHERE id = ?")
                .bind(&a.name)
                .bind(&a.eop_contact_name)
                .bind(&a.eop_contact_email)
                .bind(&a.id)
                .execute(&self.pool)
                .await
                .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_site(&self, s: &Site) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        insert_site(&mut conn, s).await
    }

    async fn apply_checked(&self, change: &CapChange, day: NaiveDate) -> Result<Vec<CapViolation>, StoreError> {
        let _writing = self.writer.lock().await;
        // IMMEDIATE: two changes to one account never both pass the check against the old state.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let account = match change {
            CapChange::AddSite(site) | CapChange::UpdateSite(site) => site.account.clone(),
            CapChange::UpdateLicense { id, .. } => sqlx::query_scalar("SELECT account_id FROM licenses WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .ok_or_else(|| StoreError::NotFound { what: "license", id: id.to_string() })?,
        };
        let mut sites = sites_of_account(&mut tx, &account).await?;
        let mut licenses = licenses_of_account(&mut tx, &account).await?;
        match change {
            CapChange::AddSite(site) => sites.push(site.clone()),
            CapChange::UpdateSite(site) => match sites.iter_mut().find(|s| s.id == site.id) {
                Some(stored) => *stored = site.clone(),
                None => return Err(StoreError::NotFound { what: "site", id: site.id.clone() }),
            },
            CapChange::UpdateLicense { id, quantity, effective_to } => {
                if let Some(license) = licenses.iter_mut().find(|l| l.id == *id) {
                    (license.terms.quantity, license.terms.effective_to) = (*quantity, *effective_to);
                }
            }
        }
        let violations = super::cap_violations(&sites, &licenses, day)?;
        if !violations.is_empty() {
            return Ok(violations); // dropping `tx` rolls back
        }
        match change {
            CapChange::AddSite(site) => insert_site(&mut tx, site).await?,
            CapChange::UpdateSite(site) => {
                let cap = site.cap_bps.map(|c| to_i64(c, "cap")).transpose()?;
                // A new cap is a new policy version (pushed to the agent).
                sqlx::query(
                    "UPDATE sites SET country = ?, region_group = ?, site_type = ?,
                         policy_version = CASE WHEN cap_bps IS ? THEN policy_version
                                          ELSE (SELECT coalesce(max(policy_version), 0) + 1 FROM sites) END,
                         cap_bps = ?
                     WHERE id = ?",
                )
                .bind(site.country.as_str())
                .bind(site.region_group.as_str())
                .bind(site.site_type.as_str())
                .bind(cap)
                .bind(cap)
                .bind(&site.id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            CapChange::UpdateLicense { id, quantity, effective_to } => {
                sqlx::query("UPDATE licenses SET quantity = ?, effective_to = ? WHERE id = ?")
                    .bind(to_i64(*quantity, "quantity")?)
                    .bind(effective_to.to_string())
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(Vec::new())
    }

    async fn site(&self, id: &str) -> Result<Option<Site>, StoreError> {
        let row: Option<SiteRow> = sqlx::query_as(
            "SELECT id, account_id, name, country, region_group, site_type, cap_bps FROM sites WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(SiteRow::into_site).transpose()
    }

    async fn sites_of_account(&self, account: &str) -> Result<Vec<Site>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        sites_of_account(&mut conn, account).await
    }

    async fn licenses_of_account(&self, account: &str) -> Result<Vec<License>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        licenses_of_account(&mut conn, account).await
    }

    async fn add_license(&self, l: &NewLicense) -> Result<i64, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        insert_license(&mut conn, l).await
    }

    async fn merge_buckets(&self, rows: &[(String, Bucket)]) -> Result<MergeStats, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut stats = MergeStats::default();
        let received = now();
        let caps = caps_of(&mut tx, rows).await?;
        // A few statements per chunk rather than per row: SQLite runs each on its own thread.
        for chunk in rows.chunks(MERGE_CHUNK) {
            // A join on the keys: SQLite looks each one up (`IN (VALUES ...)` would scan the table).
            let mut select = QueryBuilder::<Sqlite>::new("WITH batch (site_id, bucket_start) AS (VALUES ");
            let mut values = select.separated(", ");
            for (site, b) in chunk {
                values.push("(").push_bind_unseparated(site).push_unseparated(", ");
                values.push_bind_unseparated(b.start.unix()).push_unseparated(")");
            }
            select.push(
                ") SELECT b.site_id, b.bucket_start FROM batch
                   JOIN buckets b ON b.site_id = batch.site_id AND b.bucket_start = batch.bucket_start",
            );
            let stored: Vec<(String, i64)> = select.build_query_as().fetch_all(&mut *tx).await.map_err(db)?;
            // Stored before, or earlier in this chunk: merged; otherwise new.
            let mut known: HashSet<(&str, i64)> = stored.iter().map(|(site, start)| (site.as_str(), *start)).collect();
            for (site, b) in chunk {
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
            for (site, b) in chunk {
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
            insert.build().execute(&mut *tx).await.map_err(db)?;

            let days: BTreeSet<(&str, NaiveDate)> =
                chunk.iter().map(|(site, b)| (site.as_str(), b.start.day())).collect();
            let mut dirty = QueryBuilder::<Sqlite>::new("INSERT INTO dirty_days (site_id, day, generation) ");
            dirty.push_values(days, |mut row, (site, day)| {
                row.push_bind(site).push_bind(day.to_string()).push_bind(1);
            });
            dirty.push(" ON CONFLICT (site_id, day) DO UPDATE SET generation = generation + 1");
            dirty.build().execute(&mut *tx).await.map_err(db)?;

            let over: Vec<(&String, &Bucket, u64)> = chunk
                .iter()
                .filter_map(|(site, b)| caps.get(site).map(|cap| (site, b, *cap)))
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
                record.build().execute(&mut *tx).await.map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(stats)
    }

    async fn policies_since(&self, version: u64) -> Result<Vec<SitePolicy>, StoreError> {
        let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT id, policy_version, cap_bps FROM sites WHERE policy_version > ? ORDER BY policy_version",
        )
        .bind(to_i64(version, "policy version")?)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter().map(policy_from_row).collect()
    }

    async fn policy(&self, site: &str) -> Result<Option<SitePolicy>, StoreError> {
        let row: Option<(String, i64, Option<i64>)> =
            sqlx::query_as("SELECT id, policy_version, cap_bps FROM sites WHERE id = ?")
                .bind(site)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        row.map(policy_from_row).transpose()
    }

    async fn record_policy_report(&self, site: &str, report: &PolicyReport) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO policy_reports (site_id, version, ok, detail, reported_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (site_id) DO UPDATE SET version = excluded.version, ok = excluded.ok,
                 detail = excluded.detail, reported_at = excluded.reported_at",
        )
        .bind(site)
        .bind(to_i64(report.version, "policy version")?)
        .bind(report.ok)
        .bind(&report.detail)
        .bind(stamp(report.at))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn policy_report(&self, site: &str) -> Result<Option<PolicyReport>, StoreError> {
        let row: Option<(i64, bool, String, String)> =
            sqlx::query_as("SELECT version, ok, detail, reported_at FROM policy_reports WHERE site_id = ?")
                .bind(site)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        row.map(|(version, ok, detail, at)| {
            Ok(PolicyReport { version: to_u64(version, "policy version")?, ok, detail, at: parse(&at, "reported_at")? })
        })
        .transpose()
    }

    async fn enforcement_violations(
        &self,
        account: &str,
        site: Option<&str>,
        from: BucketStart,
        to: BucketStart,
    ) -> Result<Vec<EnforcementViolation>, StoreError> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT v.site_id, v.bucket_start, v.max_bps, v.cap_bps
             FROM enforcement_violations v JOIN sites s ON s.id = v.site_id
             WHERE s.account_id = ? AND (? IS NULL OR v.site_id = ?) AND v.bucket_start >= ? AND v.bucket_start < ?
             ORDER BY v.site_id, v.bucket_start",
        )
        .bind(account)
        .bind(site)
        .bind(site)
        .bind(from.unix())
        .bind(to.unix())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(site, start, max_bps, cap_bps)| {
                Ok(EnforcementViolation {
                    site,
                    bucket_start: bucket_start(start)?,
                    max_bps: to_u64(max_bps, "max_bps")?,
                    cap_bps: to_u64(cap_bps, "cap_bps")?,
                })
            })
            .collect()
    }

    async fn create_order(&self, order: &NewOrder) -> Result<Created, StoreError> {
        let _writing = self.writer.lock().await;
        // IMMEDIATE: two requests with one idempotency key never both create an order.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let created = orders::create(&mut tx, order).await?;
        tx.commit().await.map_err(db)?;
        Ok(created)
    }

    async fn order(&self, account: &str, id: i64) -> Result<Option<Order>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        Ok(orders::load(&mut conn, account, &[id]).await?.pop())
    }

    async fn orders(
        &self,
        account: &str,
        status: Option<ItemStatus>,
        after: i64,
        limit: u32,
    ) -> Result<OrderPage, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        orders::page_json(&mut conn, account, status, after, limit).await
    }

    async fn transition_items(&self, transition: &Transition) -> Result<Result<Order, TransitionRefused>, StoreError> {
        let _writing = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let result = orders::transition(&mut tx, transition).await?;
        if result.is_ok() {
            tx.commit().await.map_err(db)?;
        }
        Ok(result)
    }

    async fn site_facts(&self, account: &str) -> Result<BTreeMap<String, SiteFacts>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        orders::site_facts(&mut conn, account).await
    }

    async fn add_api_token(
        &self,
        hash: &str,
        role: Role,
        account: Option<&str>,
        contact: bool,
    ) -> Result<i64, StoreError> {
        let id =
            sqlx::query("INSERT INTO api_tokens (hash, role, account_id, contact, created_at) VALUES (?, ?, ?, ?, ?)")
                .bind(hash)
                .bind(role.as_str())
                .bind(account)
                .bind(contact)
                .bind(now())
                .execute(&self.pool)
                .await
                .map_err(insert_error("token", account.unwrap_or("operator")))?
                .last_insert_rowid();
        Ok(id)
    }

    async fn api_token(&self, hash: &str) -> Result<Option<ApiToken>, StoreError> {
        let row: Option<(i64, String, Option<String>, bool, bool)> = sqlx::query_as(
            "SELECT id, role, account_id, contact, revoked_at IS NOT NULL FROM api_tokens WHERE hash = ?",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|(id, role, account, contact, revoked)| {
            Ok(ApiToken { id, role: parse(&role, "token role")?, account, contact, revoked })
        })
        .transpose()
    }

    async fn api_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows: Vec<TokenRow> =
            sqlx::query_as("SELECT id, role, account_id, contact, created_at, revoked_at FROM api_tokens ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.into_iter()
            .map(|r| {
                Ok(TokenRecord {
                    id: r.id,
                    role: parse(&r.role, "token role")?,
                    account: r.account_id,
                    contact: r.contact,
                    created_at: r.created_at,
                    revoked_at: r.revoked_at,
                })
            })
            .collect()
    }

    async fn revoke_api_token(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?")
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_enroll_token(
        &self,
        token_hash: &str,
        site: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO enrollment_tokens (token_hash, site_id, expires_at) VALUES (?, ?, ?)")
            .bind(token_hash)
            .bind(site)
            .bind(rfc3339(expires_at))
            .execute(&self.pool)
            .await
            .map_err(insert_error("enrollment token for site", site))?;
        Ok(())
    }

    async fn redeem_enroll_token(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<String, TokenRefusal>, StoreError> {
        let now = rfc3339(now);
        // One statement: two agents racing with the same token cannot both win.
        let site: Option<String> = sqlx::query_scalar(
            "UPDATE enrollment_tokens SET used_at = ?
             WHERE token_hash = ? AND used_at IS NULL AND expires_at > ? RETURNING site_id",
        )
        .bind(&now)
        .bind(token_hash)
        .bind(&now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some(site) = site {
            return Ok(Ok(site));
        }
        let used: Option<Option<String>> =
            sqlx::query_scalar("SELECT used_at FROM enrollment_tokens WHERE token_hash = ?")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(Err(match used {
            None => TokenRefusal::Unknown,
            Some(Some(_)) => TokenRefusal::Used,
            Some(None) => TokenRefusal::Expired,
        }))
    }

    async fn add_certificate(&self, serial: &str, site: &str, not_after: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO certificates (serial, site_id, not_after, created_at) VALUES (?, ?, ?, ?)")
            .bind(serial)
            .bind(site)
            .bind(rfc3339(not_after))
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(insert_error("certificate", serial))?;
        Ok(())
    }

    async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        let row: Option<(String, String, Option<String>)> =
            sqlx::query_as("SELECT serial, site_id, revoked_at FROM certificates WHERE serial = ?")
                .bind(serial)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(row.map(|(serial, site, revoked_at)| CertificateRecord { serial, site, revoked: revoked_at.is_some() }))
    }

    async fn revoke_site(&self, site: &str, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query("UPDATE certificates SET revoked_at = ? WHERE site_id = ? AND revoked_at IS NULL")
            .bind(rfc3339(now))
            .bind(site)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
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

    async fn dirty_days_midpoint(&self) -> Result<Option<DayKey>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT site_id, day FROM dirty_days ORDER BY site_id, day
             LIMIT 1 OFFSET (SELECT count(*) / 2 FROM dirty_days)",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|(site, day)| Ok((site, parse(&day, "day")?))).transpose()
    }

    async fn dirty_days(&self, range: &KeyRange, limit: usize) -> Result<Vec<DirtyDayBuckets>, StoreError> {
        // One row per dirty day, its buckets folded into one text value "start max,start max":
        // sqlx hands rows over one by one, and a day's 288 rows cost far more than one string.
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT d.site_id, d.day, d.generation,
                    (SELECT group_concat(b.bucket_start || ' ' || b.max_bps) FROM buckets b
                     WHERE b.site_id = d.site_id
                       AND b.bucket_start >= unixepoch(d.day) AND b.bucket_start < unixepoch(d.day) + 86400)
             FROM (SELECT site_id, day, generation FROM dirty_days WHERE true",
        );
        if let Some((site, day)) = &range.after {
            query.push(" AND (site_id, day) > (").push_bind(site).push(", ").push_bind(day.to_string()).push(")");
        }
        if let Some((site, day)) = &range.through {
            query.push(" AND (site_id, day) <= (").push_bind(site).push(", ").push_bind(day.to_string()).push(")");
        }
        query.push(" ORDER BY site_id, day LIMIT ").push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        query.push(") d ORDER BY d.site_id, d.day");
        let rows: Vec<(String, String, i64, Option<String>)> =
            query.build_query_as().fetch_all(&self.pool).await.map_err(db)?;
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

    async fn save_site_days(&self, days: &[(DirtyDay, DailyP95)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
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
        }
        tx.commit().await.map_err(db)
    }

    async fn site_days(&self, account: &str, from: NaiveDate, until: NaiveDate) -> Result<Vec<SiteDay>, StoreError> {
        // One row per site, its days folded into "day p95 present,…" (see `dirty_days`).
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT d.site_id, group_concat(d.day || ' ' || d.p95_bps || ' ' || d.buckets_present)
             FROM site_days d JOIN sites s ON s.id = d.site_id
             WHERE s.account_id = ? AND d.day >= ? AND d.day < ? GROUP BY d.site_id ORDER BY d.site_id",
        )
        .bind(account)
        .bind(from.to_string())
        .bind(until.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
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
        Ok(days)
    }

    async fn finalized_report(
        &self,
        account: &str,
        month: &str,
    ) -> Result<Option<(DateTime<Utc>, String)>, StoreError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT finalized_at, report FROM finalized_months WHERE account_id = ? AND month = ?")
                .bind(account)
                .bind(month)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        row.map(|(at, report)| Ok((parse(&at, "finalized_at")?, report))).transpose()
    }

    async fn finalize_month(
        &self,
        account: &str,
        month: &str,
        at: DateTime<Utc>,
        report: &str,
        overusage: &[NewOverusage],
        notification: Option<&Notification>,
    ) -> Result<(DateTime<Utc>, String), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let inserted = sqlx::query(
            "INSERT INTO finalized_months (account_id, month, finalized_at, report) VALUES (?, ?, ?, ?)
             ON CONFLICT (account_id, month) DO NOTHING",
        )
        .bind(account)
        .bind(month)
        .bind(stamp(at))
        .bind(report)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if inserted == 1 {
            for o in overusage {
                let flags: Vec<&str> = o.flags.iter().map(|f| f.as_str()).collect();
                sqlx::query(
                    "INSERT INTO overusages (account_id, month, license, region, measured, licensed, excess, flags, created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(account)
                .bind(month)
                .bind(o.license.as_str())
                .bind(o.region.as_deref().unwrap_or(""))
                .bind(to_i64(o.measured, "measured")?)
                .bind(to_i64(o.licensed, "licensed")?)
                .bind(to_i64(o.excess, "excess")?)
                .bind(flags.join(","))
                .bind(stamp(at))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            if let Some(n) = notification {
                // The account's recipients and its managing partner's (R15).
                sqlx::query(
                    "INSERT INTO outbox (account_id, topic, channel, recipient, subject, body, next_attempt_at)
                     SELECT DISTINCT ?, ?, r.channel, r.address, ?, CASE r.channel WHEN 'email' THEN ? ELSE ? END, ?
                     FROM notification_recipients r
                     WHERE r.account_id = ? OR r.account_id = (SELECT partner_id FROM accounts WHERE id = ?)
                     ON CONFLICT (account_id, topic, channel, recipient) DO NOTHING",
                )
                .bind(account)
                .bind(month)
                .bind(&n.subject)
                .bind(&n.text)
                .bind(&n.json)
                .bind(stamp(at))
                .bind(account)
                .bind(account)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)?;
        self.finalized_report(account, month)
            .await?
            .ok_or_else(|| StoreError::Database(format!("the finalized report of {account} {month} vanished")))
    }

    async fn overusages(&self, account: &str, month: &str) -> Result<Vec<Overusage>, StoreError> {
        let rows: Vec<OverusageRow> =
            sqlx::query_as(select_overusage!("WHERE o.account_id = ? AND o.month = ? ORDER BY o.id"))
                .bind(account)
                .bind(month)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.into_iter().map(OverusageRow::into_overusage).collect()
    }

    async fn overusage(&self, id: i64) -> Result<Option<Overusage>, StoreError> {
        let row: Option<OverusageRow> = sqlx::query_as(select_overusage!("WHERE o.id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(OverusageRow::into_overusage).transpose()
    }

    async fn resolve_overusage(
        &self,
        id: i64,
        resolution: &Resolution,
        new_license: Option<&NewLicense>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let resolved: Option<i64> = sqlx::query_scalar("SELECT 1 FROM resolutions WHERE overusage_id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if resolved.is_some() {
            return Ok(false);
        }
        let license_id = match new_license {
            Some(l) => Some(insert_license(&mut tx, l).await?),
            None => None,
        };
        sqlx::query(
            "INSERT INTO resolutions (overusage_id, kind, quantity, license_id, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(resolution.kind.as_str())
        .bind(to_i64(resolution.quantity, "quantity")?)
        .bind(license_id)
        .bind(stamp(resolution.at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
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

    async fn add_usage_events(&self, events: &[MeterEvent]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let received = now();
        let mut added = 0;
        for e in events {
            let month = Month::containing(e.occurred_at.date_naive()).to_string();
            added += sqlx::query(
                "INSERT INTO usage_events
                     (id, account_id, meter, month, subject, region, quantity, counted, occurred_at, received_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&e.id)
            .bind(&e.account)
            .bind(e.meter.as_str())
            .bind(month)
            .bind(&e.subject)
            .bind(e.region.map(|r| r.as_str()))
            .bind(to_i64(e.quantity, "quantity")?)
            .bind(e.counted)
            .bind(stamp(e.occurred_at))
            .bind(&received)
            .execute(&mut *tx)
            .await
            .map_err(insert_error("usage event of account", &e.account))?
            .rows_affected();
        }
        tx.commit().await.map_err(db)?;
        Ok(added)
    }

    async fn meter_counts(&self, account: &str, month: &str) -> Result<MeterCounts, StoreError> {
        let (ai_security_users, dem_users, devices, peak): (i64, i64, i64, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT count(DISTINCT subject) FROM usage_events
                     WHERE account_id = ?1 AND month = ?2 AND meter = 'ai_security_users' AND counted = 1),
                    (SELECT count(DISTINCT subject) FROM usage_events
                     WHERE account_id = ?1 AND month = ?2 AND meter = 'dem_users' AND counted = 1),
                    (SELECT count(DISTINCT subject) FROM usage_events
                     WHERE account_id = ?1 AND month = ?2 AND meter = 'devices' AND counted = 1),
                    (SELECT max(total) FROM (SELECT sum(quantity) AS total FROM usage_events
                     WHERE account_id = ?1 AND month = ?2 AND meter = 'data_lake' GROUP BY subject))",
        )
        .bind(account)
        .bind(month)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        // Each user once, in the region of their latest counted session (R12).
        let by_region: Vec<(String, i64)> = sqlx::query_as(
            "SELECT region, count(*) FROM (
                 SELECT region, row_number() OVER (PARTITION BY subject ORDER BY occurred_at DESC, id DESC) AS latest
                 FROM usage_events
                 WHERE account_id = ? AND month = ? AND meter = 'ztna_users' AND counted = 1)
             WHERE latest = 1 GROUP BY region ORDER BY region",
        )
        .bind(account)
        .bind(month)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let ztna_by_region = by_region
            .into_iter()
            .map(|(region, n)| Ok((parse(&region, "ZTNA region")?, to_u64(n, "count")?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(MeterCounts {
            ztna_by_region,
            ai_security_users: to_u64(ai_security_users, "count")?,
            dem_users: to_u64(dem_users, "count")?,
            devices: to_u64(devices, "count")?,
            data_lake_peak_hour: to_u64(peak.unwrap_or(0), "count")?,
        })
    }

    async fn add_recipient(&self, account: &str, channel: Channel, address: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO notification_recipients (account_id, channel, address) VALUES (?, ?, ?)")
            .bind(account)
            .bind(channel.as_str())
            .bind(address)
            .execute(&self.pool)
            .await
            .map_err(insert_error("recipient of account", account))?;
        Ok(())
    }

    async fn due_notifications(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        channels: &[Channel],
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let channels: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
        let rows: Vec<OutboxRow> = sqlx::query_as(select_outbox!(
            "WHERE delivered_at IS NULL AND next_attempt_at <= ? AND channel IN (SELECT value FROM json_each(?))
             ORDER BY next_attempt_at, id LIMIT ?"
        ))
        .bind(stamp(now))
        .bind(to_json(&channels)?)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter().map(OutboxRow::into_item).collect()
    }

    async fn mark_delivered(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?")
            .bind(stamp(at))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn mark_failed(&self, id: i64, error: &str, next_attempt: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?")
            .bind(error)
            .bind(stamp(next_attempt))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn notifications(&self, account: Option<&str>) -> Result<Vec<OutboxItem>, StoreError> {
        let rows: Vec<OutboxRow> = sqlx::query_as(select_outbox!("WHERE ? IS NULL OR account_id = ? ORDER BY id"))
            .bind(account)
            .bind(account)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.into_iter().map(OutboxRow::into_item).collect()
    }
}
