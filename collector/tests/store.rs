//! The store conformance suite (`store_conformance/`) on both backends: SQLite, a real database
//! file per test; PostgreSQL, a database per test on the throwaway cluster this binary starts.
//! Each is opened again for the restart checks.

mod store_conformance;

use tally_testkit::postgres as pg_cluster;

use std::path::PathBuf;

use store_conformance::Backend;
use tally_collector::store::postgres::PgStore;
use tally_collector::store::sqlite::SqliteStore;

struct Sqlite {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Sqlite {
    fn new() -> Sqlite {
        let dir = tempfile::tempdir().unwrap();
        Sqlite { path: dir.path().join("tally.db"), _dir: dir }
    }
}

impl Backend for Sqlite {
    type Store = SqliteStore;
    async fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.path).await.unwrap()
    }
}

struct Postgres {
    url: String,
}

impl Postgres {
    /// A new database, or why there is no cluster here.
    fn new() -> Result<Postgres, String> {
        Ok(Postgres { url: pg_cluster::cluster()?.database() })
    }
}

impl Backend for Postgres {
    type Store = PgStore;
    async fn open(&self) -> PgStore {
        PgStore::open(&self.url).await.unwrap()
    }
}

mod sqlite {
    use super::store_conformance::{self, conformance_tests};
    conformance_tests!(super::Sqlite::new());
}

mod postgres {
    use super::store_conformance::{self, conformance_tests};
    conformance_tests!(match super::Postgres::new() {
        Ok(backend) => backend,
        Err(why) => return tally_testkit::skip!(&why),
    });
}

/// Both migrations describe the same tables: each column by name, kind (SQLite's `INTEGER`
/// holds PostgreSQL's `bigint` and `boolean`) and whether it may be NULL. (PostgreSQL's monthly
/// partitions of `buckets` are the one table of its own.)
#[tokio::test]
async fn both_schemas_hold_the_same_tables_and_columns() {
    let postgres = match Postgres::new() {
        Ok(backend) => backend,
        Err(why) => return tally_testkit::skip!(&why),
    };
    let sqlite = Sqlite::new();
    let _ = (sqlite.open().await, postgres.open().await);

    type Columns = std::collections::BTreeSet<(String, String, String, bool)>;
    let lite = sqlx::SqlitePool::connect(&format!("sqlite://{}", sqlite.path.display())).await.unwrap();
    let rows: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT m.name, c.name, upper(c.type), c.\"notnull\" OR c.pk = 1 FROM sqlite_master m, pragma_table_info(m.name) c
         WHERE m.type = 'table' AND m.name NOT LIKE '\\_%' ESCAPE '\\' AND m.name NOT LIKE 'sqlite%'",
    )
    .fetch_all(&lite)
    .await
    .unwrap();
    let lite: Columns = rows
        .into_iter()
        .map(|(table, column, kind, not_null)| {
            let kind = match kind.as_str() {
                "INTEGER" => "integer",
                "TEXT" => "text",
                other => panic!("{table}.{column}: a column of type {other}"),
            };
            (table, column, kind.to_owned(), not_null)
        })
        .collect();
    let pg = sqlx::PgPool::connect(&postgres.url).await.unwrap();
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text, c.is_nullable::text
         FROM information_schema.columns c JOIN information_schema.tables t USING (table_schema, table_name)
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
           AND c.table_name NOT LIKE '\\_%' AND c.table_name !~ '^buckets_[0-9]{4}_[0-9]{2}$'",
    )
    .fetch_all(&pg)
    .await
    .unwrap();
    let pg: Columns = rows
        .into_iter()
        .map(|(table, column, kind, nullable)| {
            let kind = match kind.as_str() {
                "bigint" | "boolean" => "integer",
                "text" => "text",
                other => panic!("{table}.{column}: a column of type {other}"),
            };
            (table, column, kind.to_owned(), nullable == "NO")
        })
        .collect();
    let only = |a: &Columns, b: &Columns| a.difference(b).cloned().collect::<Vec<_>>();
    assert_eq!((only(&lite, &pg), only(&pg, &lite)), (vec![], vec![]), "(SQLite's alone, PostgreSQL's alone)");
    assert!(lite.len() > 100, "{} columns", lite.len());
}
