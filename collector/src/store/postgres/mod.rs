//! The PostgreSQL backend, for providers that outgrow one machine (R30): several collectors
//! share one database. Migrations: `collector/migrations/postgres/` (sqlx takes an advisory
//! lock, so collectors starting together apply them once). The tables and columns are the
//! SQLite store's ([`stored`](super::stored)); buckets are partitioned by month ([`partitions`]).
//!
//! Whatever must happen once is decided by the database, never by which collector runs it:
//! changes checked against R17 and orders lock their account's row first (`FOR UPDATE`), token
//! redemption and month finalization are single conditional statements, merges are upserts.
//!
//! Each concern of the [`Store`](super::Store) trait is `store/sql/`'s, compiled here with this
//! backend's [`dialect`]; this file connects, begins and commits.

#[macro_use]
mod dialect;
mod partitions;

concerns!();

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, Transaction};

use super::StoreHealth;
/// The conversions and rows both backends share, used by every file here as `super::…`.
use super::stored::*;
use super::{StoreError, cause};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections each collector keeps: its writers (ingest, the engine, the API) and readers.
const POOL_SIZE: u32 = 10;

/// The store the one implementation of each concern (`store/sql/`) is compiled for here.
type Backend = PgStore;
/// Its database, whose connection and arguments the concerns use (`Conn`, `Args`).
type Db = sqlx::Postgres;

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Why the last write transaction failed, until one commits.
    health: Arc<Health>,
    /// The months whose bucket partition is known to exist.
    partitions: Arc<partitions::Known>,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and applies the migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = connect(url, &[]).await?;
        MIGRATIONS.run(&pool).await.map_err(|e| StoreError::Database(format!("migrations: {e}")))?;
        let store = PgStore { pool, health: Default::default(), partitions: Default::default() };
        store.ensure_partitions_ahead(crate::clock::now().date_naive()).await?;
        orders::build_missing_docs(&store).await?;
        Ok(store)
    }

    /// Connects to `url` to read only (R35): every transaction is read-only; nothing is
    /// migrated or created.
    pub async fn open_read_only(url: &str) -> Result<Self, StoreError> {
        let pool = connect(url, &[("default_transaction_read_only", "on")]).await?;
        let applied: i64 = sqlx::query_scalar(counts::SCHEMA_VERSION).fetch_one(&pool).await.map_err(db)?;
        schema_current(applied, &MIGRATIONS)?;
        Ok(PgStore { pool, health: Default::default(), partitions: Default::default() })
    }

    pub(in crate::store) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Begins a read transaction: one snapshot for all its reads, and no write (R35).
    async fn begin_read(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        Ok(tx)
    }

    /// Begins a write transaction.
    async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        match self.pool.begin().await {
            Ok(tx) => Ok(WriteTx { tx, health: self.health.clone() }),
            Err(e) => {
                let e = db(e);
                self.health.failed(&e);
                Err(e)
            }
        }
    }
}

impl StoreHealth for PgStore {
    fn write_failure(&self) -> Option<String> {
        self.health.failure()
    }

    async fn probe(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop).map_err(db)
    }
}

/// The pool of connections to `url`, each with the server settings `settings` beside the
/// store's own.
async fn connect(url: &str, settings: &[(&str, &str)]) -> Result<PgPool, StoreError> {
    let options: PgConnectOptions =
        url.parse().map_err(|e| StoreError::Database(format!("database_url {}: {e}", redacted(url))))?;
    // The server's notices ("already exists, skipping") are not the operator's business.
    let options = options.options([("client_min_messages", "warning")].into_iter().chain(settings.iter().copied()));
    PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|e| StoreError::Unavailable(format!("{}: connecting to {}: {e}", cause::NO_ANSWER, redacted(url))))
}

/// A database URL with its password hidden, for messages: `postgres://user:***@host/db`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.rsplit_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

/// An open write transaction; derefs to its connection. Dropped without [`commit`](Self::commit),
/// it rolls back.
struct WriteTx {
    tx: Transaction<'static, Postgres>,
    health: Arc<Health>,
}

impl WriteTx {
    /// Commits; `Ok` only when PostgreSQL has the transaction.
    async fn commit(self) -> Result<(), StoreError> {
        match self.tx.commit().await {
            Ok(()) => {
                self.health.committed();
                Ok(())
            }
            Err(e) => {
                let e = db(e);
                self.health.failed(&e);
                Err(e)
            }
        }
    }

    /// Undoes the transaction, for a change refused by a rule.
    async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await.map_err(db)
    }
}

impl Deref for WriteTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// A database error. What passes when its cause does is `Unavailable`: the server unreachable
/// or shutting down, a full disk or other exhausted resource (SQLSTATE classes 08, 53, 57P).
fn db(e: sqlx::Error) -> StoreError {
    let error = match &e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            StoreError::Unavailable(format!("{}: {e}", cause::NO_ANSWER))
        }
        sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")) => {
            StoreError::Unavailable(format!("{}: {e}", cause::NO_ANSWER))
        }
        sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("53")) => {
            StoreError::Unavailable(format!("{}: {e}", cause::OUT_OF_RESOURCES))
        }
        _ => StoreError::Database(e.to_string()),
    };
    counted(error)
}
