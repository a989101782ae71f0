//! Write transactions, the one way the SQLite backend writes.
//!
//! Each begins `IMMEDIATE`: it takes the write lock before reading, so it never fails half-way
//! with SQLITE_BUSY the way a deferred transaction that reads and then writes does in WAL mode
//! (without waiting, when another writer committed since it began). The lock is waited for by
//! this process's writers in a queue (`SqliteStore::writer`), and against other processes (the
//! admin commands, a second collector) by SQLite's busy timeout, retried a few times here.
//!
//! A write that fails to begin or to commit is remembered until one commits ([`StoreHealth`],
//! `/healthz`), and logged at most once a minute: on a full disk every agent's batch fails.
//!
//! A transaction that is not committed — an error on the way, a failed `COMMIT` (a full disk) —
//! closes its connection instead of handing it back to the pool: SQLite may keep such a
//! transaction open, and sqlx would then run the next one on that connection as a savepoint of
//! it, which "commits" without ever reaching the disk and holds the write lock for good.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection};
use tokio::sync::OwnedMutexGuard;

use super::{SqliteStore, db};
use crate::store::stored::Health;
use crate::store::{StoreError, StoreHealth};

/// How often `BEGIN IMMEDIATE` may meet SQLITE_BUSY (another process held the write lock for a
/// whole busy timeout) before the write fails.
const BEGIN_ATTEMPTS: u32 = 3;

/// An open write transaction; derefs to its connection.
pub(super) struct WriteTx {
    conn: PoolConnection<Sqlite>,
    _queued: OwnedMutexGuard<()>,
    open: bool,
    health: Arc<Health>,
}

impl StoreHealth for SqliteStore {
    fn write_failure(&self) -> Option<String> {
        self.health.failure()
    }

    async fn probe(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop).map_err(db)
    }
}

impl SqliteStore {
    /// Begins a write transaction.
    pub(super) async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let queued = self.writer.clone().lock_owned().await;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let mut attempt = 1;
        loop {
            match sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
                Ok(_) => return Ok(WriteTx { conn, _queued: queued, open: true, health: self.health.clone() }),
                Err(e) if is_busy(&e) && attempt < BEGIN_ATTEMPTS => {
                    tracing::warn!(attempt, "the store's write lock stayed busy: trying again");
                    attempt += 1;
                }
                Err(e) => {
                    let e = db(e);
                    self.health.failed(&e);
                    return Err(e);
                }
            }
        }
    }
}

impl WriteTx {
    /// Commits; `Ok` only when the transaction is on disk.
    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        if let Err(e) = sqlx::query("COMMIT").execute(&mut *self.conn).await {
            let e = db(e);
            self.health.failed(&e);
            return Err(e);
        }
        self.open = false;
        self.health.committed();
        Ok(())
    }

    /// Undoes the transaction, for a change refused by a rule.
    pub(super) async fn rollback(mut self) -> Result<(), StoreError> {
        sqlx::query("ROLLBACK").execute(&mut *self.conn).await.map_err(db)?;
        self.open = false;
        Ok(())
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if self.open {
            // Closing the connection ends the transaction in SQLite (rolled back) and its locks.
            self.conn.close_on_drop();
        }
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

/// SQLITE_BUSY, with any extended code.
fn is_busy(e: &sqlx::Error) -> bool {
    let code = match e {
        sqlx::Error::Database(d) => d.code().and_then(|c| c.parse::<i32>().ok()),
        _ => None,
    };
    code.is_some_and(|c| c & 0xff == 5)
}
