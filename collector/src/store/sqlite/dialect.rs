//! What SQLite's SQL says its own way, for the one implementation in `store/sql/`: the
//! fragments as macros (each expands to a string literal, so statements stay constants), the
//! values bound their own way as functions.
//!
//! Writes need no row locks here: every write transaction holds the database's write lock from
//! its `BEGIN IMMEDIATE` ([`write`](super::write)).

/// The larger of two values.
macro_rules! greatest {
    ($a:literal, $b:literal) => {
        concat!("max(", $a, ", ", $b, ")")
    };
}

/// The smaller of two values.
macro_rules! least {
    ($a:literal, $b:literal) => {
        concat!("min(", $a, ", ", $b, ")")
    };
}

/// Rows of one column `value`: the texts bound at parameter `$n` by [`texts`].
macro_rules! text_list {
    ($n:literal) => {
        concat!("(SELECT value FROM json_each($", stringify!($n), "))")
    };
}

/// Locks the rows a `SELECT` reads until the transaction ends: SQLite's write transactions are one at a time already.
macro_rules! for_update {
    () => {
        ""
    };
}

/// Locks the rows a `SELECT` reads until the transaction ends, skipping those another
/// transaction holds: nothing to say here.
macro_rules! skip_locked {
    () => {
        ""
    };
}

/// The next policy version: one more than any site's.
macro_rules! next_policy_version {
    () => {
        "(SELECT coalesce(max(policy_version), 0) + 1 FROM sites)"
    };
}

/// A list of texts bound as one parameter ([`text_list`]): a JSON array.
pub(super) fn texts(list: &[&str]) -> Result<String, super::StoreError> {
    super::to_json(&list)
}

/// Locks `account`'s row until the transaction ends: SQLite's write transactions are one at a
/// time already.
pub(super) async fn lock_account(_: &mut sqlx::SqliteConnection, _account: &str) -> Result<(), super::StoreError> {
    Ok(())
}
