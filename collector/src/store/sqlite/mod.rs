//! The SQLite backend: one database file in WAL mode with `synchronous = FULL` (a commit is on
//! disk when it returns), foreign keys on, a busy timeout so admin commands can write while
//! `serve` runs. Migrations: `collector/migrations/sqlite/`. Queries are checked at run time.
//!
//! Each concern of the [`Store`](super::Store) trait is `store/sql/`'s, compiled here with this
//! backend's [`dialect`]; this file opens the database, [`write`] begins and commits.

#[macro_use]
mod dialect;
mod write;

concerns!();

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// The conversions and rows both backends share, used by every file here as `super::…`.
use super::stored::*;
use super::{StoreError, cause};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The store the one implementation of each concern (`store/sql/`) is compiled for here.
type Backend = SqliteStore;
/// Its database, whose connection and arguments the concerns use (`Conn`, `Args`).
type Db = sqlx::Sqlite;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Taken by this process's write transactions before `BEGIN IMMEDIATE` ([`write`]): they
    /// queue here instead of in SQLite's busy handler, whose growing sleeps make a long tail.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Why the last write transaction failed, until one commits ([`write`]).
    health: std::sync::Arc<Health>,
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
        let store = SqliteStore { pool, writer: Default::default(), health: Default::default() };
        orders::build_missing_docs(&store).await?;
        Ok(store)
    }
}

impl SqliteStore {
    /// Opens the database at `path` to read only (R35): every write fails; nothing is created
    /// or migrated.
    pub async fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(db)?;
        let applied: i64 = sqlx::query_scalar(counts::SCHEMA_VERSION).fetch_one(&pool).await.map_err(db)?;
        schema_current(applied, &MIGRATIONS)?;
        Ok(SqliteStore { pool, writer: Default::default(), health: Default::default() })
    }

    /// Opens a database restored from a backup, once it is checked: SQLite's integrity check, a
    /// schema version this collector knows (read before anything is written), and, once migrated,
    /// every table a new store has.
    pub async fn open_restored(path: &Path) -> Result<Self, StoreError> {
        let refused = StoreError::Database;
        let options = SqliteConnectOptions::new().filename(path).read_only(true);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.map_err(db)?;
        let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&pool)
            .await
            .map_err(|e| refused(format!("not a SQLite database ({e})")))?;
        if integrity != "ok" {
            return Err(refused(format!("SQLite's integrity check fails: {integrity}")));
        }
        let applied: i64 = sqlx::query_scalar(counts::SCHEMA_VERSION)
            .fetch_one(&pool)
            .await
            .map_err(|_| refused("not a Tally store (it has no schema version)".into()))?;
        let known = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
        if applied == 0 || applied > known {
            return Err(refused(format!(
                "its schema is at version {applied}; this collector knows versions 1 to {known} (restore with the collector that made it, or a newer one)"
            )));
        }
        pool.close().await;
        let store = SqliteStore::open(path).await?;
        let present = table_names(&store.pool).await?;
        let missing: Vec<String> = tables_of_a_new_store().await?.difference(&present).cloned().collect();
        if !missing.is_empty() {
            store.pool.close().await;
            return Err(refused(format!("tables a store has are missing: {}", missing.join(", "))));
        }
        Ok(store)
    }

    /// Begins a read transaction: one snapshot from its first read, and no write lock (R35).
    async fn begin_read(&self) -> Result<sqlx::Transaction<'static, Db>, StoreError> {
        self.pool.begin().await.map_err(db)
    }

    pub(in crate::store) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A consistent copy of the whole database in a new file at `path`, while others read and
    /// write (SQLite's `VACUUM INTO`: one read transaction).
    pub async fn copy_to(&self, path: &Path) -> Result<(), StoreError> {
        let path = path.to_str().ok_or_else(|| StoreError::Database(format!("{} is not UTF-8", path.display())))?;
        sqlx::query("VACUUM INTO ?").bind(path).execute(&self.pool).await.map_err(db)?;
        Ok(())
    }
}

async fn table_names(pool: &SqlitePool) -> Result<std::collections::BTreeSet<String>, StoreError> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'").fetch_all(pool).await.map_err(db)?;
    Ok(names.into_iter().collect())
}

/// The tables a new store has: the migrations run on an empty database in memory.
async fn tables_of_a_new_store() -> Result<std::collections::BTreeSet<String>, StoreError> {
    let options = SqliteConnectOptions::new().in_memory(true);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.map_err(db)?;
    MIGRATIONS.run(&pool).await.map_err(|e| StoreError::Database(format!("migrations: {e}")))?;
    let tables = table_names(&pool).await;
    pool.close().await;
    tables
}

/// A database error; a full disk, an I/O error or a read-only file (SQLITE_FULL, SQLITE_IOERR,
/// SQLITE_READONLY, with any extended code) is `Unavailable`: it passes when the cause does.
fn db(e: sqlx::Error) -> StoreError {
    let code = match &e {
        sqlx::Error::Database(d) => d.code().and_then(|c| c.parse::<i32>().ok()),
        _ => None,
    };
    let error = match code.map(|c| c & 0xff) {
        Some(8) => StoreError::Unavailable(format!("{}: {e}", cause::READ_ONLY)),
        Some(10) => StoreError::Unavailable(format!("{}: {e}", cause::DISK_FAILS)),
        Some(13) => StoreError::Unavailable(format!("{}: {e}", cause::DISK_FULL)),
        _ => StoreError::Database(e.to_string()),
    };
    counted(error)
}
