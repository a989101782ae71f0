//! `backup` and `restore` of an embedded-store installation: one tar file holding `tally.db`, a
//! consistent copy taken while `serve` runs (SQLite's `VACUUM INTO`), and the CA's files
//! (`ca/ca.pem`, `ca/ca.key`: agents enrolled before keep working after a restore). On
//! PostgreSQL the database is PostgreSQL's to back up (`pg_dump`), with the CA directory beside.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::agents::ca::Ca;
use crate::config::Config;
use crate::store::sqlite::SqliteStore;

/// The store's name inside a backup.
const DATABASE: &str = "tally.db";
/// The CA's directory inside a backup, and its files.
const CA: &str = "ca";
const CA_FILES: [&str; 2] = ["ca.pem", "ca.key"];
/// Everything a backup holds.
const FILES: [&str; 3] = [DATABASE, "ca/ca.pem", "ca/ca.key"];

/// Writes a backup of the installation of `config` to `to` (replaced whole, or left untouched
/// on an error). Returns what it holds, for the operator.
pub async fn backup(config: &Config, to: &Path) -> anyhow::Result<String> {
    if config.database_url.is_some() {
        bail!(
            "this collector's store is PostgreSQL: back it up with pg_dump, and keep the CA directory (ca_dir) with it"
        );
    }
    if !config.database().exists() {
        bail!("no store at {} (is --config missing?)", config.database().display());
    }
    let store = SqliteStore::open(&config.database()).await.context("opening the store")?;
    // Beside the backup (same file system, so the rename is atomic), removed in every case.
    let work = Scratch(PathBuf::from(format!("{}.partial", to.display())));
    let _ = std::fs::remove_dir_all(&work.0);
    std::fs::create_dir(&work.0).with_context(|| format!("creating {}", work.0.display()))?;
    let copy = work.0.join(DATABASE);
    store.copy_to(&copy).await.context("copying the store")?;
    let partial = work.0.join("backup.tar");
    let mut archive = tar::Builder::new(File::create(&partial).with_context(|| partial.display().to_string())?);
    archive.append_path_with_name(&copy, DATABASE)?;
    for name in CA_FILES {
        let path = config.ca_dir().join(name);
        archive.append_path_with_name(&path, format!("{CA}/{name}")).with_context(|| path.display().to_string())?;
    }
    let file = archive.into_inner()?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&partial, to).with_context(|| format!("writing {}", to.display()))?;
    if let Some(dir) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    let bytes = std::fs::metadata(to)?.len();
    Ok(format!("backup written to {} ({bytes} bytes): the store and the CA ({})", to.display(), CA_FILES.join(", ")))
}

/// A working directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Restores the backup at `from` into the installation of `config`, which must hold neither a
/// store nor a CA. Only what a backup writes is accepted: regular files named `tally.db`,
/// `ca/ca.pem` and `ca/ca.key`, none empty, together no larger than the space free. The store
/// must pass [`SqliteStore::open_restored`]'s checks and the CA's certificate and key must belong
/// together; anything else is refused by name, and the data directory is left as it was.
pub async fn restore(config: &Config, from: &Path) -> anyhow::Result<String> {
    if config.database_url.is_some() {
        bail!("this collector's store is PostgreSQL: restore it with pg_restore, and its CA directory beside it");
    }
    let (database, ca_dir) = (config.database(), config.ca_dir());
    if database.exists() {
        bail!("{} exists: restore into a new data_dir", database.display());
    }
    if ca_dir.read_dir().is_ok_and(|mut files| files.next().is_some()) {
        bail!("{} holds a CA: restore into a new data_dir", ca_dir.display());
    }
    let created = !config.data_dir.exists();
    let restored = restore_checked(config, from).await;
    if restored.is_err() && created {
        // Empty again once the staging directory is gone: as it was, absent.
        let _ = std::fs::remove_dir(&config.data_dir);
    }
    restored
}

async fn restore_checked(config: &Config, from: &Path) -> anyhow::Result<String> {
    let (database, ca_dir) = (config.database(), config.ca_dir());
    // Everything is unpacked and checked aside first: a damaged backup leaves nothing behind.
    std::fs::create_dir_all(&config.data_dir).with_context(|| config.data_dir.display().to_string())?;
    let staged = Scratch(config.data_dir.join("restore.partial"));
    let _ = std::fs::remove_dir_all(&staged.0);
    let (staged_database, staged_ca) = (staged.0.join(DATABASE), staged.0.join(CA));
    std::fs::create_dir_all(&staged_ca)?;
    let mut room = free_bytes(&config.data_dir)?;
    let mut archive = tar::Archive::new(File::open(from).with_context(|| format!("opening {}", from.display()))?);
    let mut restored: Vec<String> = Vec::new();
    for entry in archive.entries().with_context(|| format!("{} is not a backup", from.display()))? {
        let mut entry = entry.with_context(|| format!("{} is damaged", from.display()))?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let refuse = |why: String| anyhow::anyhow!("{}: {name:?} {why}", from.display());
        let target = destination(&name, &staged_database, &staged_ca)
            .ok_or_else(|| refuse(format!("is not part of a backup (it holds {})", FILES.join(", "))))?;
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            return Err(refuse(format!("is not a regular file ({kind:?})")));
        }
        if restored.contains(&name) {
            return Err(refuse("is there twice".into()));
        }
        let size = entry.header().size()?;
        if size == 0 {
            return Err(refuse("is empty".into()));
        }
        room = room.checked_sub(size).ok_or_else(|| {
            refuse(format!("is {size} bytes: more than the space free in {}", config.data_dir.display()))
        })?;
        let mut file = File::create(&target).with_context(|| target.display().to_string())?;
        let copied = std::io::copy(&mut (&mut entry).take(size), &mut file)
            .with_context(|| format!("{} is damaged at {name}", from.display()))?;
        if copied != size {
            return Err(refuse(format!("is cut short ({copied} of {size} bytes): the backup is damaged")));
        }
        file.sync_all()?;
        restored.push(name);
    }
    let missing: Vec<&str> = FILES.iter().copied().filter(|f| !restored.iter().any(|r| r == f)).collect();
    if !missing.is_empty() {
        bail!("{} holds no {}: a backup holds {}", from.display(), missing.join(", "), FILES.join(", "));
    }
    let store = SqliteStore::open_restored(&staged_database)
        .await
        .with_context(|| format!("{}: its {DATABASE}", from.display()))?;
    drop(store);
    Ca::load_existing(&staged_ca).with_context(|| format!("{}: its CA", from.display()))?;
    std::fs::create_dir_all(&ca_dir)?;
    for file in std::fs::read_dir(&staged_ca)? {
        let file = file?;
        std::fs::rename(file.path(), ca_dir.join(file.file_name()))?;
    }
    // The store last: its presence says the restore is complete.
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", staged_database.display()));
        if side.exists() {
            std::fs::rename(&side, format!("{}{suffix}", database.display()))?;
        }
    }
    std::fs::rename(&staged_database, &database)?;
    File::open(&config.data_dir)?.sync_all()?;
    Ok(format!("restored {} into {} and {}", restored.join(", "), database.display(), ca_dir.display()))
}

/// Free space for this process in the file system of `dir`.
fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let stat = rustix::fs::statvfs(dir).with_context(|| format!("the space free in {}", dir.display()))?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Where a backup's entry goes: the store, or a file of the CA; nothing else (no path leaves the
/// data directory).
fn destination(name: &str, database: &Path, ca_dir: &Path) -> Option<PathBuf> {
    if name == DATABASE {
        return Some(database.to_owned());
    }
    let file = name.strip_prefix(CA)?.strip_prefix('/')?;
    CA_FILES.contains(&file).then(|| ca_dir.join(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_store_and_the_cas_files_are_restored() {
        let (db, ca) = (Path::new("/d/tally.db"), Path::new("/d/ca"));
        assert_eq!(destination("tally.db", db, ca), Some(db.to_owned()));
        assert_eq!(destination("ca/ca.key", db, ca), Some(ca.join("ca.key")));
        for bad in
            ["ca/../x", "ca/..", "ca/", "../tally.db", "/etc/passwd", "ca/a/b", "other", "cax/ca.pem", "ca/x.key"]
        {
            assert_eq!(destination(bad, db, ca), None, "{bad}");
        }
    }
}
