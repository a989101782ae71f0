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
//! - default tree, key `quarantined`: `u64`, buckets the collector kept in quarantine because
//!   their time was wrong (this socket's clock; wire protocol 2).
//! - default tree, key `policy`: `Policy`, the last cap the collector pushed (R17), re-applied at
//!   start before the collector is reached.
//! - default tree, key `applied`: `Vec<CapSetting>`, the policies applied, with when (this
//!   socket's clock), oldest first, as far back as a pending bucket can go: what each bucket is
//!   stamped with when it is sent (R26).
//! - default tree, keys `lan/` + the day (i32 days since 1970-01-01, big-endian, sign bit
//!   flipped): [`LanDay`], one UTC day's devices on the LAN (R29) with the version saved last
//!   and the version the collector acknowledged. Saved with the state each minute when a device
//!   was added, and when the day ends; deleted once a past day's last version is acknowledged;
//!   days older than the retention are dropped.
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
//! - On a full disk (sled fails, or does not open at start) closed buckets still go to the
//!   journal, into the space it keeps allocated ahead, and are shipped from memory; once there is
//!   space, sled is opened again and takes what the journal and memory hold. A bucket neither
//!   could take is kept in memory and, if the agent stops before there is space, named at ERROR
//!   as lost ([`Store::before_stop`]).
//!
//! Only one process opens the store at a time: the lock file is taken before sled is opened, so a
//! sled that fails to open is corrupt, never merely busy. A corrupt store is moved aside and a
//! fresh one started, so the agent does not crash-loop.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::journal::Journal;
use crate::lan::DeviceDay;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use tally_common::bucket::Bucket;
use tally_common::enforcement::CapSetting;
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
const QUARANTINED: &[u8] = b"quarantined";
const POLICY: &[u8] = b"policy";
const APPLIED: &[u8] = b"applied";
const LAN_DAY_PREFIX: &[u8] = b"lan/";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("another tally-agent is using {0} (its lock file is held)")]
    Busy(PathBuf),
    #[error("cannot use {path}: {}", what_to_do(source))]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("cannot sync the store to disk: {0}")]
    Sync(std::io::Error),
    #[error("the journal of closed buckets: {0}")]
    Journal(std::io::Error),
    #[error("{0}: closed buckets are kept in memory")]
    Full(String),
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
    dir: PathBuf,
    /// `None` while the disk is full: sled fails every call after an I/O error, so it is
    /// dropped, and opened again once there is space ([`Store::add_closed`]).
    sled: Option<Sled>,
    /// Closed buckets kept in memory while the disk is full, at most `max_pending`.
    unsaved: BTreeMap<BucketStart, Bucket>,
    /// Those of them the journal could not take either (its reserve used up): on no disk.
    unjournaled: BTreeSet<BucketStart>,
    /// While the disk is full: the buckets the store held when it filled (still on disk, read
    /// once so the uplink can go on shipping them), and those acknowledged since, to remove
    /// from the store once it opens again.
    stored_when_full: BTreeMap<BucketStart, Bucket>,
    acknowledged_when_full: Vec<Bucket>,
    /// Why the store is writing to memory, for `status` and the logs.
    full: Option<String>,
    max_pending: usize,
    journal: Journal,
    _lock: File,
}

/// Whether `sent` holds everything of `held`: deleting `held` once `sent` is acknowledged loses
/// nothing.
fn covered(held: &Bucket, sent: &Bucket) -> bool {
    held.max_bps <= sent.max_bps && held.samples <= sent.samples
}

/// What [`Store::before_stop`] could not keep.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stopping {
    /// Beyond the retention bound.
    pub dropped: Vec<Bucket>,
    /// On no disk: lost with the process.
    pub lost: Vec<Bucket>,
}

/// Free space needed before sled is opened again after the disk was full.
const SPACE_TO_RECOVER: u64 = 1 << 20;

/// sled, its `pending` tree and its data file.
#[derive(Debug)]
struct Sled {
    db: sled::Db,
    pending: sled::Tree,
    pending_count: usize,
    /// sled's data file, opened once, for `fdatasync` ([`Sled::sync`]).
    data_file: File,
}

impl Sled {
    fn open(dir: &Path) -> Result<Sled, StoreError> {
        let db = open_sled(dir)?;
        let data_path = dir.join(DATA_FILE);
        let data_file = File::open(&data_path).map_err(|source| StoreError::StateDir { path: data_path, source })?;
        let pending = db.open_tree(PENDING)?;
        Ok(Sled { db, pending_count: pending.len(), pending, data_file })
    }

    /// Flushes and then syncs sled's data file: what was written is on the disk itself.
    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file.sync_data().map_err(StoreError::Sync)
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.db.get(key)? {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Decode { key: String::from_utf8_lossy(key).into_owned(), source }),
        }
    }

    fn pending(&self) -> impl Iterator<Item = Result<Bucket, StoreError>> + '_ {
        self.pending.iter().map(|kv| kv.map_err(StoreError::from).and_then(|(k, v)| decode_bucket(&k, &v)))
    }

    /// Merges `buckets` into `pending`, drops the oldest beyond `max_pending`, syncs.
    fn add_closed(&mut self, buckets: &[Bucket], max_pending: usize) -> Result<Vec<Bucket>, StoreError> {
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
        while self.pending_count > max_pending {
            let Some((key, value)) = self.pending.pop_min()? else { break };
            self.pending_count -= 1;
            dropped.push(decode_bucket(&key, &value)?);
        }
        if !dropped.is_empty() {
            let total = self.get::<u64>(DROPPED)?.unwrap_or_default() + dropped.len() as u64;
            self.db.insert(DROPPED, encode(&total))?;
        }
        self.sync()?;
        Ok(dropped)
    }
}

impl Store {
    /// Opens (or creates) the store in `state_dir`, keeping at most `max_pending` closed buckets.
    /// On a full disk sled may not open: the journal's buckets are then shipped from memory
    /// until there is space, and the store is written then.
    pub fn open(state_dir: &Path, max_pending: usize) -> Result<Opened, StoreError> {
        let state_error = |source| StoreError::StateDir { path: state_dir.to_owned(), source };
        private_dir(state_dir).map_err(state_error)?;
        let lock = take_lock(state_dir, LOCK_WAIT)?;
        let dir = state_dir.join("store");
        let (journal, replay) = Journal::open(state_dir).map_err(StoreError::Journal)?;
        let mut moved_aside = None;
        let sled = match Sled::open(&dir) {
            // A full or read-only disk is not damage: the store stays where it is.
            Err(e) if e.is_out_of_space() => Err(e),
            Err(e) => {
                let aside = aside_name(&dir);
                std::fs::rename(&dir, &aside).map_err(state_error)?;
                moved_aside = Some((aside, e.to_string()));
                Ok(Sled::open(&dir)?)
            }
            ok => ok,
        };
        let mut store = Store {
            dir,
            sled: None,
            unsaved: BTreeMap::new(),
            unjournaled: BTreeSet::new(),
            stored_when_full: BTreeMap::new(),
            acknowledged_when_full: Vec::new(),
            full: None,
            max_pending,
            journal,
            _lock: lock,
        };
        let restored = match sled {
            Ok(sled) => {
                let restored = replay
                    .live
                    .keys()
                    .filter(|start| !sled.pending.contains_key(bucket_key(**start)).unwrap_or(false))
                    .count();
                store.sled = Some(sled);
                // (What the retention bound drops here was due to go before this start.)
                store.restore_from_journal(replay.live)?;
                restored
            }
            Err(e) => {
                store.stored_when_full = replay.live;
                store.disk_full(&e);
                0
            }
        };
        Ok(Opened { store, moved_aside, restored, journal_damaged: replay.damaged })
    }

    /// Puts into sled the journal's buckets (`live`) and those only memory holds, removes what
    /// was acknowledged while the disk was full, and rewrites the journal with exactly what is
    /// pending. Returns the buckets the retention bound dropped. On a full disk, enters the
    /// full-disk state instead.
    fn restore_from_journal(&mut self, mut live: BTreeMap<BucketStart, Bucket>) -> Result<Vec<Bucket>, StoreError> {
        for bucket in self.unsaved.values() {
            live.entry(bucket.start).and_modify(|b| b.merge(bucket)).or_insert(*bucket);
        }
        let restored: Vec<Bucket> = live.into_values().collect();
        let written = (|| -> Result<Vec<Bucket>, StoreError> {
            let sled = self.sled.as_mut().ok_or_else(|| StoreError::Full(String::new()))?;
            let dropped = sled.add_closed(&restored, self.max_pending)?;
            let acknowledged = std::mem::take(&mut self.acknowledged_when_full);
            self.remove_pending(&acknowledged)?;
            let pending = self.oldest_pending(usize::MAX)?;
            self.journal.rewrite(&pending).map_err(StoreError::Journal)?;
            Ok(dropped)
        })();
        match written {
            Ok(dropped) => {
                self.unsaved.clear();
                self.unjournaled.clear();
                self.stored_when_full.clear();
                Ok(dropped)
            }
            Err(e) if e.is_out_of_space() => {
                self.disk_full(&e);
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// Adds closed buckets, merging with any pending value of the same start (R10), drops the
    /// oldest beyond the retention bound, and syncs to disk. Returns the buckets dropped.
    ///
    /// The journal takes them first: on a full disk, into its reserve. They are then kept in
    /// memory too (within the same retention bound), shipped from there, and written to the
    /// store once there is space again.
    pub fn add_closed(&mut self, buckets: &[Bucket]) -> Result<Vec<Bucket>, StoreError> {
        for bucket in buckets {
            self.unsaved.entry(bucket.start).and_modify(|b| b.merge(bucket)).or_insert(*bucket);
        }
        if let Err(e) = self.journal.closed(buckets) {
            let e = StoreError::Journal(e);
            if !e.is_out_of_space() {
                return Err(e);
            }
            self.unjournaled.extend(buckets.iter().map(|b| b.start));
            self.disk_full(&e);
        }
        if self.full.is_some() {
            let mut dropped = self.recover()?;
            while self.unsaved.len() > self.max_pending {
                let Some((start, bucket)) = self.unsaved.pop_first() else { break };
                self.unjournaled.remove(&start);
                dropped.push(bucket);
            }
            return Ok(dropped);
        }
        let sled = self.sled.as_mut().ok_or_else(|| StoreError::Full(String::new()))?;
        let waiting: Vec<Bucket> = self.unsaved.values().copied().collect();
        match sled.add_closed(&waiting, self.max_pending) {
            Ok(dropped) => {
                self.unsaved.clear();
                let starts: Vec<BucketStart> = dropped.iter().map(|b| b.start).collect();
                // A removal not journaled only brings a dropped bucket back to be dropped again.
                if let Err(e) = self.journal.removed(&starts) {
                    tracing::debug!(error = %e, "the journal did not take the removal of dropped buckets");
                }
                Ok(dropped)
            }
            Err(e) if e.is_out_of_space() => {
                self.disk_full(&e);
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

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
    fn disk_full(&mut self, error: &StoreError) {
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
    fn recover(&mut self) -> Result<Vec<Bucket>, StoreError> {
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

    /// Up to `limit` pending buckets, oldest first: the store's and those kept in memory.
    pub fn oldest_pending(&self, limit: usize) -> Result<Vec<Bucket>, StoreError> {
        let mut pending: BTreeMap<BucketStart, Bucket> = BTreeMap::new();
        match &self.sled {
            Some(sled) => {
                for bucket in sled.pending().take(limit) {
                    let bucket = bucket?;
                    pending.insert(bucket.start, bucket);
                }
            }
            None => pending.extend(self.stored_when_full.iter().take(limit)),
        }
        for bucket in self.unsaved.values() {
            pending.entry(bucket.start).and_modify(|b| b.merge(bucket)).or_insert(*bucket);
        }
        Ok(pending.into_values().take(limit).collect())
    }

    /// Removes the buckets the collector acknowledged, as they were sent, and flushes. A bucket
    /// that closed again with more since it was sent (the clock stepped back) stays pending with
    /// what it holds now, to be sent again: only what was sent is deleted. On a full disk they
    /// are removed from memory, and from the store and the journal once there is space.
    pub fn delete_acknowledged(&mut self, sent: &[Bucket]) -> Result<(), StoreError> {
        for bucket in sent {
            if self.unsaved.get(&bucket.start).is_some_and(|held| covered(held, bucket)) {
                self.unsaved.remove(&bucket.start);
            }
            if self.stored_when_full.get(&bucket.start).is_some_and(|held| covered(held, bucket)) {
                self.stored_when_full.remove(&bucket.start);
            }
        }
        if self.full.is_some() {
            // The journal holds them too: removed from the store once it is written again.
            self.acknowledged_when_full.extend_from_slice(sent);
        }
        match self.remove_pending(sent) {
            Err(e) if e.is_out_of_space() => {
                self.disk_full(&e);
                Ok(())
            }
            other => other,
        }
    }

    /// Removes the stored buckets that `sent` covers (see [`Store::delete_acknowledged`]).
    fn remove_pending(&mut self, sent: &[Bucket]) -> Result<(), StoreError> {
        let Some(sled) = self.sled.as_mut() else { return Ok(()) };
        let mut removed = Vec::with_capacity(sent.len());
        for bucket in sent {
            let key = bucket_key(bucket.start);
            if let Some(value) = sled.pending.get(key)?
                && covered(&decode_bucket(&key, &value)?, bucket)
            {
                removed.push(bucket.start);
            }
        }
        self.journal.removed(&removed).map_err(StoreError::Journal)?;
        for start in &removed {
            if sled.pending.remove(bucket_key(*start))?.is_some() {
                sled.pending_count -= 1;
            }
        }
        sled.db.flush()?;
        if self.journal.wants_rewrite(sled.pending_count) {
            let pending: Vec<Bucket> = sled.pending().collect::<Result<_, _>>()?;
            self.journal.rewrite(&pending).map_err(StoreError::Journal)?;
        }
        Ok(())
    }

    pub fn is_pending(&self, start: BucketStart) -> Result<bool, StoreError> {
        let stored = match &self.sled {
            Some(sled) => sled.pending.contains_key(bucket_key(start))?,
            None => self.stored_when_full.contains_key(&start),
        };
        Ok(stored || self.unsaved.contains_key(&start))
    }

    pub fn pending_count(&self) -> usize {
        // Memory holds buckets only while the disk is full; one may be in the store as well.
        let stored = self.sled.as_ref().map_or(self.stored_when_full.len(), |s| s.pending_count);
        stored + self.unsaved.keys().filter(|start| !self.stored_when_full.contains_key(start)).count()
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

    pub fn quarantined(&self) -> Result<u64, StoreError> {
        Ok(self.get(QUARANTINED)?.unwrap_or_default())
    }

    /// Counts `n` more buckets the collector quarantined. Not synced: a count, not a bucket (on
    /// a full disk it is not kept at all; the collector holds the buckets themselves).
    pub fn count_quarantined(&self, n: u64) -> Result<(), StoreError> {
        if let Some(sled) = &self.sled {
            sled.db.insert(QUARANTINED, encode(&(self.quarantined()? + n)))?;
        }
        Ok(())
    }

    pub fn policy(&self) -> Result<Option<Policy>, StoreError> {
        self.get(POLICY)
    }

    /// Keeps the collector's latest policy, on disk when it returns.
    pub fn save_policy(&self, policy: &Policy) -> Result<(), StoreError> {
        let sled = self.sled.as_ref().ok_or_else(|| StoreError::Full(self.full.clone().unwrap_or_default()))?;
        sled.db.insert(POLICY, encode(policy))?;
        sled.sync()
    }

    /// The policies applied, oldest first ([`Store::record_applied`]).
    pub fn applied_policies(&self) -> Result<Vec<CapSetting>, StoreError> {
        Ok(self.get(APPLIED)?.unwrap_or_default())
    }

    /// Records that `setting` was applied from `setting.since` on, unless it is the version
    /// applied last; on disk when it returns. What no pending bucket can need any more (superseded
    /// longer ago than `max_pending` buckets span) is forgotten.
    pub fn record_applied(&self, setting: CapSetting) -> Result<(), StoreError> {
        let mut applied = self.applied_policies()?;
        if applied.last().is_some_and(|last| last.version == setting.version) {
            return Ok(());
        }
        applied.push(setting);
        let span = TimeDelta::minutes(5 * i64::try_from(self.max_pending).unwrap_or(i64::MAX / 300));
        let oldest_needed = setting.since.checked_sub_signed(span).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let in_force_then = applied.iter().rposition(|a| a.since <= oldest_needed).unwrap_or(0);
        applied.drain(..in_force_then);
        let sled = self.sled.as_ref().ok_or_else(|| StoreError::Full(self.full.clone().unwrap_or_default()))?;
        sled.db.insert(APPLIED, encode(&applied))?;
        sled.sync()
    }

    /// Saves what lives between ticks (the open bucket, the last counters, the discard
    /// counters) and the LAN's days that changed, in one batch, and flushes. Returns whether it
    /// saved: on a full disk nothing is (the full state is logged once by [`Store::add_closed`]).
    pub fn save_state(
        &mut self,
        open: Option<&Bucket>,
        sampler: &Sampler,
        discards: &DiscardCounters,
        lan: &[DeviceDay],
    ) -> Result<bool, StoreError> {
        let Some(sled) = &self.sled else { return Ok(false) };
        let mut batch = sled::Batch::default();
        batch.insert(OPEN, encode(&open));
        batch.insert(SAMPLER, encode(sampler));
        batch.insert(DISCARDS, encode(discards));
        for day in lan {
            let key = lan_day_key(day.day);
            let kept = lan_record(sled, &key);
            let (version, shipped) = kept.map_or((1, 0), |k| (k.version + 1, k.shipped));
            batch.insert(key.as_slice(), encode(&LanDay { devices: day.clone(), version, shipped }));
        }
        match sled.db.apply_batch(batch).and_then(|()| sled.db.flush().map(|_| ())) {
            Err(e) if StoreError::from(e.clone()).is_out_of_space() => {
                self.disk_full(&StoreError::from(e));
                Ok(false)
            }
            other => other.map(|()| true).map_err(StoreError::from),
        }
    }

    /// The LAN's day `day` as saved ([`Store::save_state`]).
    pub fn lan_day(&self, day: NaiveDate) -> Option<LanDay> {
        self.sled.as_ref().and_then(|sled| lan_record(sled, &lan_day_key(day)))
    }

    /// The oldest LAN day the collector has not acknowledged in its latest version.
    pub fn unshipped_lan_day(&self) -> Result<Option<LanDay>, StoreError> {
        let Some(sled) = &self.sled else { return Ok(None) };
        for entry in sled.db.scan_prefix(LAN_DAY_PREFIX) {
            let (key, value) = entry?;
            match postcard::from_bytes::<LanDay>(&value) {
                Ok(day) if day.shipped < day.version => return Ok(Some(day)),
                Ok(_) => {}
                // Damaged: dropped, so that it neither stops the uplink nor comes back.
                Err(_) => {
                    sled.db.remove(&key)?;
                }
            }
        }
        Ok(None)
    }

    /// The collector acknowledged `day` as of `version`: a day before `today` acknowledged in
    /// its latest version is deleted. Only flushed: a lost acknowledgement sends the day again,
    /// which the collector merges (R29).
    pub fn lan_day_shipped(&self, day: NaiveDate, version: u64, today: NaiveDate) -> Result<(), StoreError> {
        let Some(sled) = &self.sled else { return Ok(()) };
        let key = lan_day_key(day);
        let Some(mut kept) = lan_record(sled, &key) else { return Ok(()) };
        kept.shipped = kept.shipped.max(version);
        if day < today && kept.shipped >= kept.version {
            sled.db.remove(&key)?;
        } else {
            sled.db.insert(&key, encode(&kept))?;
        }
        sled.db.flush()?;
        Ok(())
    }

    /// Drops the LAN days before `oldest` (a collector unreachable for longer than the
    /// retention); returns how many.
    pub fn drop_lan_days_before(&self, oldest: NaiveDate) -> Result<usize, StoreError> {
        let Some(sled) = &self.sled else { return Ok(0) };
        let old: Vec<sled::IVec> =
            sled.db.range(lan_day_key(NaiveDate::MIN)..lan_day_key(oldest)).keys().collect::<Result<_, _>>()?;
        for key in &old {
            sled.db.remove(key)?;
        }
        Ok(old.len())
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match &self.sled {
            Some(sled) => sled.get(key),
            None => Ok(None),
        }
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
fn what_to_do(error: &std::io::Error) -> String {
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

impl StoreError {
    /// The state directory cannot be used: waiting does not help, someone must fix it.
    pub fn is_state_dir(&self) -> bool {
        matches!(self, StoreError::StateDir { .. })
    }
}

/// Free space for an unprivileged writer on the file system of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Creates `dir` and its missing parents readable by their owner only (the state directory
/// holds the socket's key; systemd's `StateDirectory=` makes it 0700 too).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Whether another process holds the store (a running agent).
pub fn is_locked(state_dir: &Path) -> bool {
    matches!(take_lock(state_dir, std::time::Duration::ZERO), Err(StoreError::Busy(_)))
}

/// How long [`Store::open`] waits for the lock. A process forked by another thread of this one
/// (to run `tc`, say) holds a copy of the lock's file until it executes its program: a store
/// closed and opened again meanwhile would otherwise be taken for busy.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

fn take_lock(state_dir: &Path, wait: std::time::Duration) -> Result<File, StoreError> {
    let path = state_dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::StateDir { path: path.clone(), source })?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(StoreError::Busy(state_dir.to_owned())),
            Err(e) => return Err(StoreError::StateDir { path, source: e.into() }),
        }
    }
}

/// How long sled's own file lock may stay held by this process's previous sled.
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn open_sled(dir: &Path) -> sled::Result<sled::Db> {
    // The agent's lock says no other process uses the store; a sled dropped a moment ago by this
    // one (a reopen after a full disk, or in tests) lets go of its file lock only once its
    // threads have: wait for that rather than take the store for corrupt. sled names this error
    // only in its message.
    let deadline = std::time::Instant::now() + SLED_LOCK_WAIT;
    loop {
        // Flushes are explicit: at each closed bucket, each minute's save, and shutdown.
        match sled::Config::new().path(dir).flush_every_ms(None).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn aside_name(dir: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut name = dir.as_os_str().to_owned();
    name.push(format!(".corrupt-{stamp}"));
    PathBuf::from(name)
}

/// One UTC day's devices on the LAN as the store keeps them until the collector has them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LanDay {
    pub devices: DeviceDay,
    /// Incremented at each save.
    pub version: u64,
    /// The version the collector acknowledged last (0: none).
    pub shipped: u64,
}

/// A LAN day as kept; `None` when there is none, or when it is damaged (it is then written anew:
/// a day's devices are counted again from its next sightings, and no bucket depends on them).
fn lan_record(sled: &Sled, key: &[u8]) -> Option<LanDay> {
    sled.get(key).ok().flatten()
}

fn lan_day_key(day: NaiveDate) -> Vec<u8> {
    let mut key = LAN_DAY_PREFIX.to_vec();
    key.extend_from_slice(&((day.to_epoch_days() as u32) ^ (1 << 31)).to_be_bytes());
    key
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
        store.delete_acknowledged(&[bucket(1, 11), bucket(9, 0)]).unwrap();
        assert_eq!(store.pending_count(), 2);
    }

    /// A bucket closes again with more (the clock stepped back) while its first value is in
    /// flight: the acknowledgement of the first deletes nothing; the merged value stays pending,
    /// across a restart too.
    #[test]
    fn an_acknowledgement_deletes_only_what_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 100).unwrap().store;
        store.add_closed(&[bucket(1, 10), bucket(2, 20)]).unwrap();
        let sent = store.oldest_pending(10).unwrap();
        store.add_closed(&[bucket(1, 15)]).unwrap();
        store.delete_acknowledged(&sent).unwrap();
        let pending = |store: &Store| store.oldest_pending(10).unwrap().iter().map(|b| b.max_bps).collect::<Vec<_>>();
        assert_eq!(pending(&store), [15], "the value never sent stays");
        drop(store);
        let mut store = Store::open(dir.path(), 100).unwrap().store;
        assert_eq!(pending(&store), [15], "and survives a restart (the journal agrees)");
        store.delete_acknowledged(&store.oldest_pending(10).unwrap()).unwrap();
        assert_eq!(store.pending_count(), 0);
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
            store.save_state(Some(&bucket(2, 7)), &Sampler::default(), &discards, &[]).unwrap();
            assert!(matches!(Store::open(dir.path(), 10), Err(StoreError::Busy(_))));
            assert!(is_locked(dir.path()));
        }
        let store = Store::open(dir.path(), 10).unwrap().store;
        assert_eq!(store.pending_count(), 1);
        assert_eq!(store.open_bucket().unwrap(), Some(bucket(2, 7)));
        assert_eq!(store.discards().unwrap().counter_reset, 1);
    }

    /// A LAN day (R29) is unshipped until the collector acknowledged its latest version; a past
    /// day then goes, today stays (its devices resume after a restart); old days are dropped.
    #[test]
    fn lan_days_wait_for_their_latest_version_to_be_acknowledged() {
        use crate::lan::Via;
        use tally_common::lan::Mac;
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap().store;
        let (yesterday, today) =
            (NaiveDate::from_ymd_opt(2026, 11, 30).unwrap(), NaiveDate::from_ymd_opt(2026, 12, 1).unwrap());
        let mut day = DeviceDay::new(yesterday);
        day.record(Mac([0, 1, 2, 3, 4, 5]), Via::Arp, 100, 10);
        let mut now = DeviceDay::new(today);
        now.record(Mac([0, 1, 2, 3, 4, 6]), Via::Dhcp, 200, 10);
        let save = |store: &mut Store, days: &[DeviceDay]| {
            assert!(store.save_state(None, &Sampler::default(), &DiscardCounters::default(), days).unwrap());
        };
        save(&mut store, &[day.clone(), now.clone()]);
        let first = store.unshipped_lan_day().unwrap().unwrap();
        assert_eq!((first.devices.day, first.version, first.shipped), (yesterday, 1, 0));
        // Saved again while in flight: the acknowledgement of version 1 does not ship version 2.
        day.record(Mac([0, 1, 2, 3, 4, 7]), Via::Arp, 300, 10);
        save(&mut store, std::slice::from_ref(&day));
        store.lan_day_shipped(yesterday, 1, today).unwrap();
        assert_eq!(store.unshipped_lan_day().unwrap().unwrap().devices, day);
        store.lan_day_shipped(yesterday, 2, today).unwrap();
        assert!(store.lan_day(yesterday).is_none(), "a past day acknowledged whole is deleted");
        assert_eq!(store.unshipped_lan_day().unwrap().unwrap().devices, now);
        store.lan_day_shipped(today, 1, today).unwrap();
        assert!(store.unshipped_lan_day().unwrap().is_none());
        drop(store);
        let store = Store::open(dir.path(), 10).unwrap().store;
        assert_eq!(store.lan_day(today).unwrap().devices, now, "today's devices resume after a restart");
        assert_eq!(store.drop_lan_days_before(today).unwrap(), 0);
        assert_eq!(store.drop_lan_days_before(today + chrono::Days::new(1)).unwrap(), 1);
        assert!(store.lan_day(today).is_none());
        // A damaged day is dropped, not an error that would stop the uplink or the agent.
        let mut store = store;
        save(&mut store, std::slice::from_ref(&now));
        store.sled.as_ref().unwrap().db.insert(lan_day_key(today), b"\xff\xff".to_vec()).unwrap();
        assert!(store.lan_day(today).is_none());
        assert!(store.unshipped_lan_day().unwrap().is_none());
        save(&mut store, std::slice::from_ref(&now));
        assert_eq!(store.lan_day(today).unwrap().version, 1, "written anew");
    }

    /// The cause of a `Busy` once seen in `disk_full.rs`: a child forked by another thread
    /// held a copy of the lock for a moment after the store was closed. Here a second holder of
    /// the lock lets go after 50 ms: the store opens all the same; a holder that stays is an
    /// agent running, and `Busy`.
    #[test]
    fn a_lock_held_for_a_moment_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), 10).unwrap());
        let holder = take_lock(dir.path(), std::time::Duration::ZERO).unwrap();
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(holder);
        });
        assert!(Store::open(dir.path(), 10).is_ok(), "opened once the moment passed");
        letting_go.join().unwrap();
        let _running = take_lock(dir.path(), std::time::Duration::ZERO).unwrap();
        assert!(matches!(Store::open(dir.path(), 10), Err(StoreError::Busy(_))));
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
    fn applied_policies_are_kept_as_far_back_as_a_pending_bucket_goes() {
        let dir = tempfile::tempdir().unwrap();
        // 288 buckets: a day.
        let store = Store::open(dir.path(), 288).unwrap().store;
        let at = |hours: i64| DateTime::from_timestamp(1_790_000_000 + hours * 3_600, 0).unwrap();
        let setting = |hours, version, cap_bps| CapSetting { since: at(hours), cap_bps, version };
        store.record_applied(setting(0, 3, Some(50_000_000))).unwrap();
        store.record_applied(setting(1, 3, Some(50_000_000))).unwrap();
        store.record_applied(setting(2, 4, None)).unwrap();
        assert_eq!(store.applied_policies().unwrap(), [setting(0, 3, Some(50_000_000)), setting(2, 4, None)]);
        // A day and more later: version 3 was superseded before the oldest bucket that can wait.
        store.record_applied(setting(30, 5, Some(20_000_000))).unwrap();
        assert_eq!(store.applied_policies().unwrap(), [setting(2, 4, None), setting(30, 5, Some(20_000_000))]);
        drop(store);
        let store = Store::open(dir.path(), 288).unwrap().store;
        assert_eq!(store.applied_policies().unwrap().len(), 2, "kept across a restart");
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
