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
