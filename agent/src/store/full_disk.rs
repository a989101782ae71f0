//! The store on a full disk: closed buckets kept in memory and in the journal's reserve, sled
//! dropped until there is space again, and what a stop could write nowhere.

use std::path::Path;

use tally_common::bucket::Bucket;

use super::{Sled, Stopping, Store, StoreError};

/// Free space needed before sled is opened again after the disk was full.
const SPACE_TO_RECOVER: u64 = 1 << 20;

impl Store {
    /// Before the agent stops: what only memory holds is tried once more, in the store or else
    /// the journal. Returns what the retention bound dropped meanwhile, and the buckets that could
    /// be written nowhere, lost with the process (and no longer counted as pending).
    pub fn before_stop(&mut self) -> Result<Stopping, StoreError> {
        if self.full.is_none() {
            return Ok(Stopping::default());
        }
        let dropped = self.recover()?;
        let unwritten: Vec<Bucket> =
            self.unsaved.values().filter(|b| self.unjournaled.contains(&b.start)).copied().collect();
        let lost = if unwritten.is_empty() || self.journal.closed(&unwritten).is_ok() {
            Vec::new()
        } else {
            for bucket in &unwritten {
                self.unsaved.remove(&bucket.start);
            }
            unwritten
        };
        self.unjournaled.clear();
        Ok(Stopping { dropped, lost })
    }

    /// Enters (or stays in) the full-disk state: sled is dropped, one ERROR says where and how
    /// much space is left.
    pub(super) fn disk_full(&mut self, error: &StoreError) {
        if let Some(sled) = self.sled.take() {
            self.stored_when_full = sled.pending().filter_map(Result::ok).map(|b| (b.start, b)).collect();
        }
        if self.full.is_none() {
            let free = free_bytes(&self.dir).map_or_else(|| "unknown".to_owned(), |b| format!("{} KiB", b / 1024));
            let message = format!("the disk of {} is full ({free} free)", self.dir.display());
            tracing::error!(
                error = %error,
                "{message}: closed buckets go to the space the journal keeps ahead and stay in memory, shipped from \
                 there; they are written to the store once there is space"
            );
            self.full = Some(message);
        }
    }

    /// Once there is room again: opens sled and puts back what the journal and memory hold.
    /// Returns the buckets the retention bound dropped.
    pub(super) fn recover(&mut self) -> Result<Vec<Bucket>, StoreError> {
        if self.sled.is_some() || free_bytes(&self.dir).is_none_or(|free| free < SPACE_TO_RECOVER) {
            return Ok(Vec::new());
        }
        match Sled::open(&self.dir) {
            Ok(sled) => self.sled = Some(sled),
            Err(e) => {
                tracing::debug!(error = %e, "the store does not open yet");
                return Ok(Vec::new());
            }
        }
        let live = self.journal.replay().map_err(StoreError::Journal)?.live;
        let waiting = self.unsaved.len();
        let full = self.full.take();
        let dropped = self.restore_from_journal(live)?;
        if self.full.is_none() {
            tracing::info!(
                buckets = waiting,
                "the disk has space again: the closed buckets kept in memory and in the journal are in the store"
            );
        } else {
            self.full = full;
        }
        Ok(dropped)
    }

    /// Why closed buckets are in memory, while they are.
    pub fn full(&self) -> Option<&str> {
        self.full.as_deref()
    }
}

impl StoreError {
    /// A full disk (or quota) or a read-only file system: not damage, and it passes.
    pub fn is_out_of_space(&self) -> bool {
        let io = match self {
            StoreError::Full(_) => return true,
            StoreError::Sled(sled::Error::Io(e)) | StoreError::Sync(e) | StoreError::Journal(e) => e,
            _ => return false,
        };
        // sled wraps the OS error in an error of its own kind, keeping the kind.
        matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::ReadOnlyFilesystem)
            || matches!(io.raw_os_error(), Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error()
                || code == rustix::io::Errno::DQUOT.raw_os_error()
                || code == rustix::io::Errno::ROFS.raw_os_error())
    }
}

/// An error of the state directory, with what the field engineer can do about it.
pub(super) fn what_to_do(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ReadOnlyFilesystem => format!(
            "{error}: the agent keeps its closed buckets there; remount it read-write, or set `state_dir` to a writable directory"
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!("{error}: the agent's user must own the state directory (systemd's StateDirectory= does this)")
        }
        _ => error.to_string(),
    }
}

/// Free space for an unprivileged writer on the file system of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}
