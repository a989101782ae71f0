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

/// Rows of one column `value`: the integers bound at parameter `$n` by [`ints`].
macro_rules! int_list {
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

/// A list of integers bound as one parameter ([`int_list`]): a JSON array.
pub(super) fn ints(list: &[i64]) -> Result<String, super::StoreError> {
    super::to_json(&list)
}

impl super::SqliteStore {
    /// Makes room for buckets starting at `starts` before a write transaction stores them: one
    /// table holds every month here.
    pub(super) async fn ensure_partitions_for(
        &self,
        _starts: impl Iterator<Item = tally_common::time::BucketStart>,
    ) -> Result<(), super::StoreError> {
        Ok(())
    }
}

/// `rows` as a table named `batch` with the columns' names, bound at parameter `$first` by
/// [`add_rows`]: one JSON array of arrays, so any number of rows stays far from SQLite's limit of
/// parameters.
pub(super) fn source(rows: &super::Rows, first: usize) -> String {
    let columns: Vec<String> =
        rows.columns.iter().enumerate().map(|(i, (name, _))| format!("value->>{i} AS {name}")).collect();
    format!("(SELECT {} FROM json_each(${first})) AS batch", columns.join(", "))
}

/// Adds `rows` to `args` ([`source`]), after the statement's other parameters: `[[a, b], …]`,
/// written row by row.
pub(super) fn add_rows(args: &mut sqlx::sqlite::SqliteArguments, rows: &super::Rows) -> Result<(), super::StoreError> {
    use std::fmt::Write;
    let mut json = String::with_capacity(rows.len() * 16 * rows.columns.len() + 2);
    json.push('[');
    for row in 0..rows.len() {
        json.push_str(if row == 0 { "[" } else { ",[" });
        for (i, (name, column)) in rows.columns.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            let missing = || super::StoreError::Database(format!("column {name} has fewer rows than the first"));
            match column {
                super::Column::Texts(values) => json.push_str(&super::to_json(values.get(row).ok_or_else(missing)?)?),
                super::Column::Ints(values) => {
                    let _ = write!(json, "{}", values.get(row).ok_or_else(missing)?);
                }
            }
        }
        json.push(']');
    }
    json.push(']');
    sqlx::Arguments::add(args, json).map_err(super::unbindable)
}

/// The buckets `(start, max_bps)` of each range of `ranges` (columns `i`, its place from 0, `site`,
/// `first` and `until`), all within `[from, until)`: a list per range, in the ranges' order.
/// One row per range, its buckets folded into one text "start max,start max": sqlx hands
/// SQLite's rows over one by one, and a range's hundreds of rows cost far more than one string.
pub(super) async fn buckets_in_ranges(
    conn: &mut super::Conn,
    ranges: &super::Rows,
    from: i64,
    until: i64,
) -> Result<Vec<Vec<(i64, i64)>>, super::StoreError> {
    let statement = format!(
        "SELECT (SELECT string_agg(b.bucket_start || ' ' || b.max_bps, ',' ORDER BY b.bucket_start)
                 FROM buckets b WHERE b.site_id = batch.site AND b.bucket_start >= batch.first
                   AND b.bucket_start < batch.until AND b.bucket_start >= $1 AND b.bucket_start < $2)
         FROM {} ORDER BY batch.i",
        source(ranges, 3)
    );
    let mut args = super::Args::default();
    sqlx::Arguments::add(&mut args, from).map_err(super::unbindable)?;
    sqlx::Arguments::add(&mut args, until).map_err(super::unbindable)?;
    add_rows(&mut args, ranges)?;
    let folded: Vec<Option<String>> =
        sqlx::query_scalar_with(sqlx::AssertSqlSafe(statement), args).fetch_all(conn).await.map_err(super::db)?;
    folded
        .iter()
        .map(|buckets| {
            (buckets.as_deref().unwrap_or_default().split_terminator(','))
                .map(|pair| {
                    let corrupt = || super::StoreError::Corrupt(format!("bucket {pair:?} of a site's range"));
                    let (start, bps) = pair.split_once(' ').ok_or_else(corrupt)?;
                    Ok((start.parse().map_err(|_| corrupt())?, bps.parse().map_err(|_| corrupt())?))
                })
                .collect()
        })
        .collect()
}
