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
