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

/// Rows sent with a statement as one parameter, a JSON array of arrays, read back as a table
/// by [`source`](Rows::source): any number of rows, never near SQLite's limit of parameters.
#[derive(Default)]
pub(super) struct Rows {
    columns: Vec<&'static str>,
    values: Vec<Vec<serde_json::Value>>,
}

impl Rows {
    /// A text column.
    pub(super) fn texts<T: ToString>(self, name: &'static str, values: impl IntoIterator<Item = T>) -> Self {
        self.column(name, values.into_iter().map(|v| serde_json::Value::from(v.to_string())))
    }

    /// An integer column.
    pub(super) fn ints(self, name: &'static str, values: impl IntoIterator<Item = i64>) -> Self {
        self.column(name, values.into_iter().map(serde_json::Value::from))
    }

    fn column(mut self, name: &'static str, values: impl Iterator<Item = serde_json::Value>) -> Self {
        for (row, value) in values.enumerate() {
            match self.values.get_mut(row) {
                Some(row) => row.push(value),
                None => self.values.push(vec![value]),
            }
        }
        self.columns.push(name);
        self
    }

    /// The rows as a table named `batch` with the columns' names, bound at parameter `$first`.
    pub(super) fn source(&self, first: usize) -> String {
        let columns: Vec<String> =
            self.columns.iter().enumerate().map(|(i, name)| format!("value->>{i} AS {name}")).collect();
        format!("(SELECT {} FROM json_each(${first})) AS batch", columns.join(", "))
    }

    /// Adds the rows to `args`, after the statement's other parameters.
    pub(super) fn add_to(&self, args: &mut sqlx::sqlite::SqliteArguments) -> Result<(), super::StoreError> {
        sqlx::Arguments::add(args, super::to_json(&self.values)?).map_err(super::unbindable)
    }
}
