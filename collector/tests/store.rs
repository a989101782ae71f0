//! The store conformance suite (`store_conformance/`) on the SQLite backend: a real database
//! file per test, opened again for the restart checks.

mod store_conformance;

use std::path::PathBuf;

use store_conformance::{Backend, conformance_tests};
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

conformance_tests!(Sqlite::new());
