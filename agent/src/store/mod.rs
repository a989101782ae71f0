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

use crate::journal::Journal;
use crate::lan::{DeviceDay, LanDay};
use chrono::{DateTime, TimeDelta, Utc};
use tally_common::bucket::Bucket;
use tally_common::enforcement::CapSetting;
use tally_common::sampler::{DiscardCounters, Sampler};
use tally_common::time::BucketStart;
use tally_common::wire::Policy;

mod disk;
mod full_disk;
mod lan_days;
mod shown;
#[cfg(test)]
mod tests;

use self::disk::{LOCK_WAIT, Sled, aside_name, bucket_key, decode_bucket, encode, take_lock};
pub use self::disk::{POOL_TIMER_SLACK, is_locked, private_dir};
use self::full_disk::what_to_do;
use self::lan_days::{lan_day_key, lan_record};

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

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match &self.sled {
            Some(sled) => sled.get(key),
            None => Ok(None),
        }
    }
}

impl StoreError {
    /// The state directory cannot be used: waiting does not help, someone must fix it.
    pub fn is_state_dir(&self) -> bool {
        matches!(self, StoreError::StateDir { .. })
    }
}
