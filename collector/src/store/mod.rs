//! The collector's store: one [`Store`] trait, two backends chosen by the store URL: SQLite
//! (embedded, the default; [`sqlite`]) and PostgreSQL (several collectors on one database;
//! [`postgres`]), each with its own migrations directory describing the same tables.
//!
//! Each concern's methods are written once, in `sql/` (one file per trait), and compiled into
//! each backend (a `#[path]` module in each): the same statements, `$N` parameters (SQLite reads
//! them too), concrete sqlx types. What the dialects truly say apart lives in each backend's
//! `dialect.rs`: a few SQL fragments as macros (`greatest!`, `text_list!`, `for_update!`,
//! `skip_locked!`, `next_policy_version!`) and the values they bind their own way (`Rows`, a
//! batch of rows as one parameter: `UNNEST` arrays on PostgreSQL, a JSON array on SQLite); each
//! backend's `mod.rs` keeps how it connects, begins and commits. (Code generic over sqlx's
//! `Database` would need a bound per type it binds or reads and per executor, repeated on every
//! impl; compiling one text twice keeps the statements whole and the build as it was.) The store
//! stores and reads; the rules live in Rust above the SQL ([`MonthDevices::count`],
//! [`MonthEvents::counts`], R26's `judging_cap`, an order's document made by serde).
//!
//! `Store` is the sum of one trait per concern, each in its own module with the types it speaks:
//!
//! | trait | owns |
//! |---|---|
//! | [`AccountStore`] | accounts, sites, licenses; changes checked against R17 |
//! | [`BucketStore`] | buckets (R10), dirty-day marks, each site's computed days (R5) |
//! | [`IntakeStore`] | agents' batches as a whole: quarantine, refusals, discard totals (R3) |
//! | [`UsageStore`] | metered events (R12, R13), finalized months (R9), over-usage (R14, R16) |
//! | [`DeviceStore`] | devices seen on the sockets' LANs, and the sockets' own addresses (R29) |
//! | [`AccessStore`] | API tokens, enrollment tokens, site certificates |
//! | [`OrderStore`] | orders and their items' lifecycle (R20–R25) |
//! | [`OutboxStore`] | notification recipients and the outbox (R15, R23) |
//! | [`PolicyStore`] | caps as pushed to agents, their reports, cap violations (R17) |
//!
//! Invariants every backend keeps (the conformance suite, `collector/tests/store.rs`, checks
//! them against any backend):
//! - one bucket row per (site, bucket start); a repeated bucket is merged with `max` of the value
//!   and of the sample count (R10), so ingest is idempotent;
//! - a call that writes several rows writes all of them or none (one transaction);
//! - an enforcement violation is recorded with the bucket that causes it, never without it;
//! - the outbox rows a change causes are written in that change's transaction;
//! - a commit is durable when the call returns (SQLite: WAL with `synchronous = FULL`).
//!
//! Storage errors are mapped to [`StoreError`] here, once; callers never see sqlx types.

mod access;
mod accounts;
mod buckets;
mod devices;
mod intake;
pub mod migrate;
mod orders;
mod outbox;
mod policies;

/// The one implementation of each concern (`sql/`), compiled into the backend module that says
/// `concerns!()` (beside its `Backend` store and its `Db`).
macro_rules! concerns {
    () => {
        type Conn = <Db as sqlx::Database>::Connection;
        type Args = <Db as sqlx::Database>::Arguments;

        #[path = "../sql/access.rs"]
        mod access;
        #[path = "../sql/accounts.rs"]
        mod accounts;
        #[path = "../sql/buckets.rs"]
        mod buckets;
        #[path = "../sql/devices.rs"]
        mod devices;
        #[path = "../sql/intake.rs"]
        mod intake;
        #[path = "../sql/orders.rs"]
        mod orders;
        #[path = "../sql/outbox.rs"]
        mod outbox;
        #[path = "../sql/policies.rs"]
        mod policies;
        #[path = "../sql/usage.rs"]
        mod usage;
    };
}

#[allow(clippy::duplicate_mod)]
pub mod postgres;
#[allow(clippy::duplicate_mod)]
pub mod sqlite;
mod stored;
pub mod transition;
mod usage;

pub use access::*;
pub use accounts::*;
pub use buckets::*;
pub use devices::*;
pub use intake::*;
pub use orders::*;
pub use outbox::*;
pub use policies::*;
pub use usage::*;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {id:?} already exists")]
    Duplicate { what: &'static str, id: String },
    #[error("{what} {id:?} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("the store holds a value it cannot read: {0}")]
    Corrupt(String),
    #[error("store error: {0}")]
    Database(String),
    /// The store cannot write for now (a full disk, an I/O error, a read-only file system, a
    /// database that does not answer): nothing was written; the same call succeeds once the
    /// cause is gone. The text begins with the cause in words, then `: ` and the details.
    #[error("the store cannot write now: {0}")]
    Unavailable(String),
}

/// The causes of [`StoreError::Unavailable`], as its text begins.
pub mod cause {
    pub const NO_ANSWER: &str = "the database does not answer";
    pub const OUT_OF_RESOURCES: &str = "the database is out of resources";
    pub const DISK_FULL: &str = "the disk is full";
    pub const DISK_FAILS: &str = "the disk fails";
    pub const READ_ONLY: &str = "the store is read-only";
}

impl StoreError {
    /// Why the store is unavailable, in words, without the database's own message.
    pub fn cause(&self) -> Option<&str> {
        match self {
            StoreError::Unavailable(why) => Some(why.split(": ").next().unwrap_or(why)),
            _ => None,
        }
    }

    /// The kind of a failure of the store itself, for `/metrics`; `None` for a duplicate or a
    /// missing row, which are answers, not failures.
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            StoreError::Unavailable(_) => Some("unavailable"),
            StoreError::Database(_) => Some("database"),
            StoreError::Corrupt(_) => Some("corrupt"),
            StoreError::Duplicate { .. } | StoreError::NotFound { .. } => None,
        }
    }
}

/// Whether the store answers and can write (`/healthz`).
pub trait StoreHealth: Send + Sync {
    /// Why the last write did not commit (a full disk, say), until one commits again.
    fn write_failure(&self) -> Option<String>;
    /// Asks the database a trivial question now.
    fn probe(&self) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
}

/// Everything the collector stores: a backend implements each concern's trait and is a `Store`.
pub trait Store:
    AccountStore
    + BucketStore
    + IntakeStore
    + UsageStore
    + DeviceStore
    + AccessStore
    + OrderStore
    + OutboxStore
    + PolicyStore
    + StoreHealth
{
}

impl<T> Store for T where
    T: AccountStore
        + BucketStore
        + IntakeStore
        + UsageStore
        + DeviceStore
        + AccessStore
        + OrderStore
        + OutboxStore
        + PolicyStore
        + StoreHealth
{
}
