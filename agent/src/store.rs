//! The agent's local store: sled under `STATE_DIR/store`, guarded by `STATE_DIR/agent.lock`.
//!
//! On-disk layout (every value postcard-encoded unless said otherwise):
//! - tree `pending`: closed buckets waiting for the collector. Key: the bucket start, i64 seconds
//!   since the epoch, 8 bytes big-endian with the sign bit flipped so that key order is time
//!   order (oldest first). Value: `(max_bps: u64, samples: u8)`.
//! - default tree, key `open`: `Option<Bucket>`, the open bucket's running max. Saved at least
//!   once a minute and at shutdown, not every tick (flash wear).
//! - default tree, key `sampler`: `Sampler`, the last counter readings with their boot id and
//!   monotonic time, so a quick restart within one boot loses no interval.
//! - default tree, key `discards`: `DiscardCounters`, discarded intervals by reason (R3).
//! - default tree, key `dropped`: `u64`, closed buckets dropped because retention was exceeded.
//! - default tree, key `policy`: `Policy`, the last cap the collector pushed (R17), re-applied at
//!   start before the collector is reached.
//!
//! Invariants:
//! - A bucket enters `pending` when it closes and is on disk before it is logged or offered to
//!   the uplink: sled's `flush()` writes with `pwrite` and `sync_file_range`, which neither
//!   empties the disk's cache nor commits the file's size, so [`Store::sync`] follows it with
//!   `fdatasync` on sled's data file. A saved policy is synced the same way before the agent
//!   reports it applied.
//! - The open bucket, the counters and the deletions after an ack are only flushed: a power cut
//!   costs at most the open bucket's last minute, and a bucket whose deletion is lost is sent
//!   again, which is harmless (R10). It leaves only when the collector acknowledged it
//!   ([`Store::delete_acknowledged`]) or when retention drops it (ERROR log, `dropped` counter).
//! - One value per bucket start: a bucket closed again (the wall clock stepped back) is merged
//!   with `max`, as the collector does (R10).
//! - At most `max_pending` buckets are kept; the overflow policy is drop-oldest.
//!
//! - Every pending bucket is also in the journal ([`crate::journal`]), synced when it closes:
//!   whatever sled loses to damage is put back from it at start.
//!
//! Only one process opens the store at a time: the lock file is taken before sled is opened, so a
//! sled that fails to open is corrupt, never merely busy. A corrupt store is moved aside and a
//! fresh one started, so the agent does not crash-loop.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::journal::Journal;
use tally_common::bucket::Bucket;
use tally_common::sampler::{DiscardCounters, Sampler};
use tally_common::time::BucketStart;
use tally_common::wire::Policy;

const PENDING: &str = "pending";
/// sled 0.34's data file in its directory.
const DATA_FILE: &str = "db";
const OPEN: &[u8] = b"open";
const SAMPLER: &[u8] = b"sampler";
const DISCARDS: &[u8] = b"discards";
const DROPPED: &[u8] = b"dropped";
const POLICY: &[u8] = b"policy";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("another tally-agent is using {0} (its lock file is held)")]
    Busy(PathBuf),
    #[error("cannot use the state directory {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("cannot sync the store to disk: {0}")]
    Sync(std::io::Error),
    #[error("the journal of closed buckets: {0}")]
    Journal(std::io::Error),
    #[error("store value {key} does not decode: {source}")]
    Decode { key: String, source: postcard::Error },
}

/// What [`Store::open`] found.
#[derive(Debug)]
pub struct Opened {
    pub store: Store,
    /// Where a corrupt store was moved, if it was.
    pub moved_aside: Option<(PathBuf, String)>,
    /// Closed buckets sled had lost, put back from the journal.
    pub restored: usize,
    /// Journal records that were damaged and skipped.
    pub journal_damaged: usize,
}

#[derive(Debug)]
pub struct Store {
    db: sled::Db,
    /// sled's data file, opened once, for `fdatasync` ([`Store::sync`]).
    data_file: File,
    pending: sled::Tree,
    pending_count: usize,
    max_pending: usize,
    journal: Journal,
    _lock: File,
}

impl Store {
    /// Opens (or creates) the store in `state_dir`, keeping at most `max_pending` closed buckets.
    pub fn open(state_dir: &Path, max_pending: usize) -> Result<Opened, StoreError> {
        let state_error = |source| StoreError::StateDir { path: state_dir.to_owned(), source };
        std::fs::create_dir_all(state_dir).map_err(state_error)?;
        let lock = take_lock(state_dir)?;
        let dir = state_dir.join("store");
        let (db, moved_aside) = match open_sled(&dir) {
            Ok(db) => (db, None),
            Err(e) => {
                let aside = aside_name(&dir);
                std::fs::rename(&dir, &aside).map_err(state_error)?;
                (open_sled(&dir)?, Some((aside, e.to_string())))
            }
        };
        let data_path = dir.join(DATA_FILE);
        let data_file = File::open(&data_path).map_err(|source| StoreError::StateDir { path: data_path, source })?;
        let pending = db.open_tree(PENDING)?;
        let (journal, replay) = Journal::open(state_dir).map_err(StoreError::Journal)?;
        let mut store =
            Store { db, data_file, pending_count: pending.len(), pending, max_pending, journal, _lock: lock };
        let mut restored = 0;
        for bucket in replay.live.values() {
            if !store.pending.contains_key(bucket_key(bucket.start))? {
                restored += 1;
            }
        }
        let lost: Vec<Bucket> = replay.live.into_values().collect();
        store.add_closed(&lost)?;
        // From here on the journal holds exactly what is pending, whatever it held before.
        let pending = store.oldest_pending(usize::MAX)?;
        store.journal.rewrite(&pending).map_err(StoreError::Journal)?;
        Ok(Opened { store, moved_aside, restored, journal_damaged: replay.damaged })
    }

    /// Adds closed buckets, merging with any pending value of the same start (R10), drops the
    /// oldest beyond the retention bound, and syncs to disk. Returns the buckets dropped.
    pub fn add_closed(&mut self, buckets: &[Bucket]) -> Result<Vec<Bucket>, StoreError> {
        self.journal.closed(buckets).map_err(StoreError::Journal)?;
        for bucket in buckets {
            let key = bucket_key(bucket.start);
            let mut merged = *bucket;
            if let Some(old) = self.pending.get(key)? {
                merged.merge(&decode_bucket(&key, &old)?);
            } else {
                self.pending_count += 1;
            }
            self.pending.insert(key, encode(&(merged.max_bps, merged.samples)))?;
        }
        let mut dropped = Vec::new();
        while self.pending_count > self.max_pending {
            let Some((key, value)) = self.pending.pop_min()? else { break };
            self.pending_count -= 1;
            dropped.push(decode_bucket(&key, &value)?);
        }
        if !dropped.is_empty() {
            let total = self.dropped()? + dropped.len() as u64;
            self.db.insert(DROPPED, encode(&total))?;
            let starts: Vec<BucketStart> = dropped.iter().map(|b| b.start).collect();
            self.journal.removed(&starts).map_err(StoreError::Journal)?;
        }
        self.sync()?;
        Ok(dropped)
    }

    /// Flushes and then syncs sled's data file: what was written is on the disk itself.
    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file.sync_data().map_err(StoreError::Sync)
    }

    /// Up to `limit` pending buckets, oldest first.
    pub fn oldest_pending(&self, limit: usize) -> Result<Vec<Bucket>, StoreError> {
        self.pending
            .iter()
            .take(limit)
            .map(|kv| kv.map_err(StoreError::from).and_then(|(k, v)| decode_bucket(&k, &v)))
            .collect()
    }

    /// Removes buckets the collector acknowledged, and flushes.
    pub fn delete_acknowledged(&mut self, starts: &[BucketStart]) -> Result<(), StoreError> {
        self.journal.removed(starts).map_err(StoreError::Journal)?;
        for start in starts {
            if self.pending.remove(bucket_key(*start))?.is_some() {
                self.pending_count -= 1;
            }
        }
        self.db.flush()?;
        if self.journal.wants_rewrite(self.pending_count) {
            let pending = self.oldest_pending(usize::MAX)?;
            self.journal.rewrite(&pending).map_err(StoreError::Journal)?;
        }
        Ok(())
    }

    pub fn is_pending(&self, start: BucketStart) -> Result<bool, StoreError> {
        Ok(self.pending.contains_key(bucket_key(start))?)
    }

    pub fn pending_count(&self) -> usize {
        self.pending_count
    }

    pub fn open_bucket(&self) -> Result<Option<Bucket>, StoreError> {
        Ok(self.get(OPEN)?.flatten())
    }

    pub fn sampler(&self) -> Result<Sampler, StoreError> {
        Ok(self.get(SAMPLER)?.unwrap_or_default())
    }

    pub fn discards(&self) -> Result<DiscardCounters, StoreError> {
        Ok(self.get(DISCARDS)?.unwrap_or_default())
    }

    pub fn dropped(&self) -> Result<u64, StoreError> {
        Ok(self.get(DROPPED)?.unwrap_or_default())
    }

    pub fn policy(&self) -> Result<Option<Policy>, StoreError> {
        self.get(POLICY)
    }

    /// Keeps the collector's latest policy, on disk when it returns.
    pub fn save_policy(&self, policy: &Policy) -> Result<(), StoreError> {
        self.db.insert(POLICY, encode(policy))?;
        self.sync()?;
        Ok(())
    }

    /// Saves what lives between ticks (the open bucket, the last counters, the discard
    /// counters) in one batch, and flushes.
    pub fn save_state(
        &self,
        open: Option<&Bucket>,
        sampler: &Sampler,
        discards: &DiscardCounters,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(OPEN, encode(&open));
        batch.insert(SAMPLER, encode(sampler));
        batch.insert(DISCARDS, encode(discards));
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.db.get(key)? {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Decode { key: String::from_utf8_lossy(key).into_owned(), source }),
        }
    }
}

/// Whether another process holds the store (a running agent).
pub fn is_locked(state_dir: &Path) -> bool {
    matches!(take_lock(state_dir), Err(StoreError::Busy(_)))
}

fn take_lock(state_dir: &Path) -> Result<File, StoreError> {
    let path = state_dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::StateDir { path: path.clone(), source })?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(StoreError::Busy(state_dir.to_owned())),
        Err(e) => Err(StoreError::StateDir { path, source: e.into() }),
    }
}

fn open_sled(dir: &Path) -> sled::Result<sled::Db> {
    // Flushes are explicit: at each closed bucket, each minute's save, and shutdown.
    sled::Config::new().path(dir).flush_every_ms(None).open()
}

fn aside_name(dir: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut name = dir.as_os_str().to_owned();
    name.push(format!(".corrupt-{stamp}"));
    PathBuf::from(name)
}

/// The key of a bucket: big-endian with the sign bit flipped, so keys sort by time.
fn bucket_key(start: BucketStart) -> [u8; 8] {
    ((start.unix() as u64) ^ (1 << 63)).to_be_bytes()
}

fn decode_bucket(key: &[u8], value: &[u8]) -> Result<Bucket, StoreError> {
    let decode_error = |source| StoreError::Decode { key: format!("pending/{key:02x?}"), source };
    let raw: [u8; 8] = key.try_into().map_err(|_| decode_error(postcard::Error::DeserializeUnexpectedEnd))?;
    let secs = (u64::from_be_bytes(raw) ^ (1 << 63)) as i64;
    let start = BucketStart::from_unix(secs).map_err(|_| decode_error(postcard::Error::DeserializeBadEncoding))?;
    let (max_bps, samples): (u64, u8) = postcard::from_bytes(value).map_err(decode_error)?;
    Ok(Bucket { start, max_bps, samples })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain structs into a Vec cannot fail.
    postcard::to_allocvec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(k: i64, max_bps: u64) -> Bucket {
        Bucket { start: BucketStart::from_unix(1_790_000_100 + 300 * k).unwrap(), max_bps, samples: 60 }
    }

    #[test]
    fn pending_buckets_come_back_oldest_first_and_merge_with_max() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 100).unwrap().store;
        store.add_closed(&[bucket(3, 30), bucket(1, 10), bucket(2, 20)]).unwrap();
        store.add_closed(&[bucket(2, 5), bucket(1, 11)]).unwrap();
        let pending: Vec<u64> = store.oldest_pending(10).unwrap().iter().map(|b| b.max_bps).collect();
        assert_eq!(pending, [11, 20, 30]);
        assert_eq!(store.pending_count(), 3);
        store.delete_acknowledged(&[bucket(1, 0).start, bucket(9, 0).start]).unwrap();
        assert_eq!(store.pending_count(), 2);
    }

    #[test]
    fn retention_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 3).unwrap().store;
        let dropped = store.add_closed(&(0..5).map(|k| bucket(k, k as u64)).collect::<Vec<_>>()).unwrap();
        assert_eq!(dropped.iter().map(|b| b.max_bps).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(store.dropped().unwrap(), 2);
        assert_eq!(store.oldest_pending(1).unwrap()[0].max_bps, 2);
    }

    #[test]
    fn state_survives_a_reopen_and_a_second_agent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path(), 10).unwrap().store;
            store.add_closed(&[bucket(1, 10)]).unwrap();
            let mut discards = DiscardCounters::default();
            discards.count(tally_common::sampler::DiscardReason::CounterReset);
            store.save_state(Some(&bucket(2, 7)), &Sampler::default(), &discards).unwrap();
            assert!(matches!(Store::open(dir.path(), 10), Err(StoreError::Busy(_))));
            assert!(is_locked(dir.path()));
        }
        let store = Store::open(dir.path(), 10).unwrap().store;
        assert_eq!(store.pending_count(), 1);
        assert_eq!(store.open_bucket().unwrap(), Some(bucket(2, 7)));
        assert_eq!(store.discards().unwrap().counter_reset, 1);
    }

    #[test]
    fn the_policy_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy { version: 7, cap_bps: Some(20_000_000) };
        {
            let store = Store::open(dir.path(), 10).unwrap().store;
            assert_eq!(store.policy().unwrap(), None);
            store.save_policy(&policy).unwrap();
        }
        assert_eq!(Store::open(dir.path(), 10).unwrap().store.policy().unwrap(), Some(policy));
    }

    #[test]
    fn a_corrupt_store_is_moved_aside_and_a_fresh_one_started() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("store")).unwrap();
        std::fs::write(dir.path().join("store/conf"), b"\xff\xfe not a sled config").unwrap();
        std::fs::write(dir.path().join("store/db"), vec![0xAB; 4096]).unwrap();
        let opened = Store::open(dir.path(), 10).unwrap();
        let (aside, _why) = opened.moved_aside.expect("moved aside");
        assert!(aside.to_string_lossy().contains("store.corrupt-"));
        assert!(aside.join("db").exists(), "the corrupt files are kept for inspection");
        assert_eq!(opened.store.pending_count(), 0);
    }
}
