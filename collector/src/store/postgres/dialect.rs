//! What PostgreSQL's SQL says its own way, for the one implementation in `store/sql/`: the
//! fragments as macros (each expands to a string literal, so statements stay constants), the
//! values bound their own way as functions.
//!
//! Whatever must happen once when several collectors share the database (R30) is decided here
//! by row locks: the changes checked against R17 and orders lock their account's row first.

/// The larger of two values.
macro_rules! greatest {
    ($a:literal, $b:literal) => {
        concat!("GREATEST(", $a, ", ", $b, ")")
    };
}

/// The smaller of two values.
macro_rules! least {
    ($a:literal, $b:literal) => {
        concat!("LEAST(", $a, ", ", $b, ")")
    };
}

/// Rows of one column `value`: the texts bound at parameter `$n` by [`texts`].
macro_rules! text_list {
    ($n:literal) => {
        concat!("(SELECT unnest($", stringify!($n), "::text[]) AS value)")
    };
}

/// Rows of one column `value`: the integers bound at parameter `$n` by [`ints`].
macro_rules! int_list {
    ($n:literal) => {
        concat!("(SELECT unnest($", stringify!($n), "::bigint[]) AS value)")
    };
}

/// Locks the rows a `SELECT` reads until the transaction ends.
macro_rules! for_update {
    () => {
        " FOR UPDATE"
    };
}

/// Locks the rows a `SELECT` reads until the transaction ends, skipping those another
/// transaction holds: collectors claiming at once take different rows instead of waiting.
macro_rules! skip_locked {
    () => {
        " FOR UPDATE SKIP LOCKED"
    };
}

/// The next policy version, from the sequence every collector draws from.
macro_rules! next_policy_version {
    () => {
        "nextval('policy_versions')"
    };
}

/// A list of texts bound as one parameter ([`text_list`]): an array.
pub(super) fn texts<'a>(list: &[&'a str]) -> Result<Vec<&'a str>, super::StoreError> {
    Ok(list.to_vec())
}

/// A list of integers bound as one parameter ([`int_list`]): an array.
pub(super) fn ints(list: &[i64]) -> Result<Vec<i64>, super::StoreError> {
    Ok(list.to_vec())
}

/// `rows` as a table named `batch` with the columns' names, bound from parameter `$first` on by
/// [`add_rows`]: one array per column (`UNNEST`), any number of rows in one statement.
pub(super) fn source(rows: &super::Rows, first: usize) -> String {
    let arrays: Vec<String> = (rows.columns.iter().enumerate())
        .map(|(i, (_, column))| {
            let kind = match column {
                super::Column::Texts(_) => "text",
                super::Column::Ints(_) => "bigint",
            };
            format!("${}::{kind}[]", first + i)
        })
        .collect();
    let names: Vec<&str> = rows.columns.iter().map(|(name, _)| *name).collect();
    format!("UNNEST({}) AS batch ({})", arrays.join(", "), names.join(", "))
}

/// Adds `rows` to `args` ([`source`]), after the statement's other parameters.
pub(super) fn add_rows(args: &mut sqlx::postgres::PgArguments, rows: &super::Rows) -> Result<(), super::StoreError> {
    for (_, column) in &rows.columns {
        match column {
            super::Column::Texts(values) => sqlx::Arguments::add(args, values),
            super::Column::Ints(values) => sqlx::Arguments::add(args, values),
        }
        .map_err(super::unbindable)?;
    }
    Ok(())
}

/// The buckets `(start, max_bps)` of each range of `ranges` (columns `i`, its place from 0, `site`,
/// `first` and `until`), all within `[from, until)`: a list per range, in the ranges' order.
/// One pass: each range one scan of the bucket index, the rows sent as they are read (binary,
/// no text to make and parse), and only the partitions of `[from, until)`'s months scanned.
pub(super) async fn buckets_in_ranges(
    conn: &mut super::Conn,
    ranges: &super::Rows,
    from: i64,
    until: i64,
) -> Result<Vec<Vec<(i64, i64)>>, super::StoreError> {
    let (statement, args) = ranges_read(ranges, from, until)?;
    let rows: Vec<(i64, i64, i64)> =
        sqlx::query_as_with(sqlx::AssertSqlSafe(statement), args).fetch_all(conn).await.map_err(super::db)?;
    let mut found = vec![Vec::new(); ranges.len()];
    for (i, start, bps) in rows {
        let range = usize::try_from(i).ok().and_then(|i| found.get_mut(i));
        range.ok_or_else(|| super::StoreError::Corrupt(format!("bucket range {i} read")))?.push((start, bps));
    }
    Ok(found)
}

/// [`buckets_in_ranges`]'s statement and its arguments.
fn ranges_read(ranges: &super::Rows, from: i64, until: i64) -> Result<(String, super::Args), super::StoreError> {
    let statement = format!(
        "SELECT batch.i, b.bucket_start, b.max_bps FROM {} JOIN buckets b
            ON b.site_id = batch.site AND b.bucket_start >= batch.first AND b.bucket_start < batch.until
         WHERE b.bucket_start >= $1 AND b.bucket_start < $2",
        source(ranges, 3)
    );
    let mut args = super::Args::default();
    sqlx::Arguments::add(&mut args, from).map_err(super::unbindable)?;
    sqlx::Arguments::add(&mut args, until).map_err(super::unbindable)?;
    add_rows(&mut args, ranges)?;
    Ok((statement, args))
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use tally_common::time::BucketStart;

    use super::super::{PgStore, Rows};

    /// A read of October's ranges plans a scan of October's partition alone: the plain bounds
    /// let PostgreSQL prune September's and November's (`EXPLAIN`).
    #[tokio::test]
    async fn a_read_of_a_months_ranges_scans_that_months_partition_alone() {
        let url = match tally_testkit::postgres::cluster() {
            Ok(cluster) => cluster.database(),
            Err(why) => return tally_testkit::skip!(&why),
        };
        let store = PgStore::open(&url).await.unwrap();
        let first_of = |m: u32, d: u32| BucketStart::first_of_day(NaiveDate::from_ymd_opt(2026, m, d).unwrap());
        store.ensure_partitions_for([first_of(9, 1), first_of(10, 1), first_of(11, 1)].into_iter()).await.unwrap();
        let (from, until) = (first_of(10, 3).unix(), first_of(10, 5).unix());
        let ranges = Rows::default()
            .ints("i", [0, 1])
            .texts("site", ["hq", "branch"])
            .ints("first", [from, from + 86_400])
            .ints("until", [until - 86_400, until]);
        let (statement, args) = super::ranges_read(&ranges, from, until).unwrap();
        let plan: Vec<String> = sqlx::query_scalar_with(sqlx::AssertSqlSafe(format!("EXPLAIN {statement}")), args)
            .fetch_all(store.pool())
            .await
            .unwrap();
        let plan = plan.join("\n");
        let scanned: Vec<&str> = ["buckets_2026_09", "buckets_2026_10", "buckets_2026_11"]
            .into_iter()
            .filter(|partition| plan.contains(partition))
            .collect();
        assert_eq!(scanned, ["buckets_2026_10"], "{plan}");
    }
}
