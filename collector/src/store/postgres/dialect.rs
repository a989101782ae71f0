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

/// Rows sent with a statement as one array parameter per column, read back as a table by
/// [`source`](Rows::source) (`UNNEST`): any number of rows in one statement.
#[derive(Default)]
pub(super) struct Rows {
    columns: Vec<(&'static str, Column)>,
}

enum Column {
    Texts(Vec<String>),
    Ints(Vec<i64>),
}

impl Rows {
    /// A text column.
    pub(super) fn texts<T: ToString>(mut self, name: &'static str, values: impl IntoIterator<Item = T>) -> Self {
        self.columns.push((name, Column::Texts(values.into_iter().map(|v| v.to_string()).collect())));
        self
    }

    /// An integer column.
    pub(super) fn ints(mut self, name: &'static str, values: impl IntoIterator<Item = i64>) -> Self {
        self.columns.push((name, Column::Ints(values.into_iter().collect())));
        self
    }

    /// The rows as a table named `batch` with the columns' names, bound from parameter `$first` on.
    pub(super) fn source(&self, first: usize) -> String {
        let arrays: Vec<String> = (self.columns.iter().enumerate())
            .map(|(i, (_, column))| {
                let kind = match column {
                    Column::Texts(_) => "text",
                    Column::Ints(_) => "bigint",
                };
                format!("${}::{kind}[]", first + i)
            })
            .collect();
        let names: Vec<&str> = self.columns.iter().map(|(name, _)| *name).collect();
        format!("UNNEST({}) AS batch ({})", arrays.join(", "), names.join(", "))
    }

    /// Adds the rows to `args`, after the statement's other parameters.
    pub(super) fn add_to(&self, args: &mut sqlx::postgres::PgArguments) -> Result<(), super::StoreError> {
        for (_, column) in &self.columns {
            match column {
                Column::Texts(values) => sqlx::Arguments::add(args, values),
                Column::Ints(values) => sqlx::Arguments::add(args, values),
            }
            .map_err(super::unbindable)?;
        }
        Ok(())
    }
}
