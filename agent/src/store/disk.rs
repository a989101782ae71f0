//! sled, its files and the agent's lock on the disk: opening (waiting out a lock this process let go of a
//! moment ago), syncing to the disk itself, a corrupt store's new name, and how values are
//! encoded.

use std::fs::File;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tally_common::bucket::Bucket;
use tally_common::time::BucketStart;

use crate::clock::{Clock, SystemClock};

use super::{DATA_FILE, DROPPED, PENDING, StoreError};

/// sled, its `pending` tree and its data file.
#[derive(Debug)]
pub(super) struct Sled {
    pub(super) db: sled::Db,
    pub(super) pending: sled::Tree,
    pub(super) pending_count: usize,
    /// sled's data file, opened once, for `fdatasync` ([`Sled::sync`]).
    pub(super) data_file: File,
}

impl Sled {
    pub(super) fn open(dir: &Path) -> Result<Sled, StoreError> {
        let db = with_pool_timer_slack(|| {
            let db = open_sled(dir)?;
            start_pool(&db);
            Ok::<_, StoreError>(db)
        })?;
        let data_path = dir.join(DATA_FILE);
        let data_file = File::open(&data_path).map_err(|source| StoreError::StateDir { path: data_path, source })?;
        let pending = db.open_tree(PENDING)?;
        Ok(Sled { db, pending_count: pending.len(), pending, data_file })
    }

    /// Flushes and then syncs sled's data file: what was written is on the disk itself.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file.sync_data().map_err(StoreError::Sync)
    }

    pub(super) fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.db.get(key)? {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Decode { key: String::from_utf8_lossy(key).into_owned(), source }),
        }
    }

    pub(super) fn pending(&self) -> impl Iterator<Item = Result<Bucket, StoreError>> + '_ {
        self.pending.iter().map(|kv| kv.map_err(StoreError::from).and_then(|(k, v)| decode_bucket(&k, &v)))
    }

    /// Merges `buckets` into `pending`, drops the oldest beyond `max_pending`, syncs.
    pub(super) fn add_closed(&mut self, buckets: &[Bucket], max_pending: usize) -> Result<Vec<Bucket>, StoreError> {
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

/// The timer slack sled's I/O pool is started with: how late the kernel may end its threads'
/// timed waits. A minute: each idle thread then looks for work about once a minute.
pub const POOL_TIMER_SLACK: NonZeroU64 = match NonZeroU64::new(60_000_000_000) {
    Some(slack) => slack,
    None => panic!("a minute is not zero"),
};

/// Runs `start`, which starts sled's I/O pool, with this thread's timer slack at
/// [`POOL_TIMER_SLACK`], and restores the thread's own slack after.
///
/// Why: sled 0.34's pool (`threadpool.rs`) keeps 7 threads for the life of the process, each in
/// a condition-variable wait with a 1-second deadline, to look for work that comes at most every
/// few seconds here: 7 wake-ups a second on a socket, and no `Config` field reaches the pool. A
/// timed wait may end up to its thread's timer slack late (`PR_SET_TIMERSLACK`), and a new thread
/// takes its creator's slack, so the pool's threads, created here, wake about once a minute each
/// instead. Work is not delayed: a job reaches the pool through `notify_all`, which wakes the
/// waiting threads at once whatever their slack (a flush still returns as soon as its data is
/// written; `store::tests` checks both). That also wakes all 7 at each flush, the minute's save
/// and each closed bucket: about 15 wake-ups a minute in all, from 430.
///
/// What would break it on a sled upgrade: a pool started elsewhere than at the first job of the
/// thread that opens a store (the tests then find pool threads without the slack), or one that
/// waits without a deadline (then this is harmless and can go). Threads sled adds later, when
/// more than 7 jobs wait at once, take the slack of the thread that queued the job and exit after
/// a few idle seconds; the agent's few jobs at a time never queue that many.
fn with_pool_timer_slack<T>(start: impl FnOnce() -> T) -> T {
    let own = rustix::thread::current_timer_slack().ok().and_then(NonZeroU64::new);
    let set = rustix::thread::set_current_timer_slack(Some(POOL_TIMER_SLACK));
    let started = start();
    if set.is_ok() {
        // `None` (our slack unreadable) restores the thread's default slack.
        let _ = rustix::thread::set_current_timer_slack(own);
    }
    started
}

/// Starts sled's I/O pool, which sled starts at its first write to its log: the `dropped` count
/// written again as it is, and flushed. On a full disk the write fails, and the pool starts with
/// a later flush, without the slack: nothing but the wake-ups depends on this.
fn start_pool(db: &sled::Db) {
    let dropped = db.get(DROPPED).ok().flatten().map_or_else(|| encode(&0u64), |v| v.to_vec());
    if let Err(e) = db.insert(DROPPED, dropped).and_then(|_| db.flush()) {
        tracing::debug!(error = %e, "sled's I/O pool was not started at open");
    }
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
pub(super) const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

pub(super) fn take_lock(state_dir: &Path, wait: std::time::Duration) -> Result<File, StoreError> {
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

pub(super) fn aside_name(dir: &Path) -> PathBuf {
    let stamp = SystemClock.wall().format("%Y%m%dT%H%M%SZ");
    let mut name = dir.as_os_str().to_owned();
    name.push(format!(".corrupt-{stamp}"));
    PathBuf::from(name)
}

/// The key of a bucket: big-endian with the sign bit flipped, so keys sort by time.
pub(super) fn bucket_key(start: BucketStart) -> [u8; 8] {
    ((start.unix() as u64) ^ (1 << 63)).to_be_bytes()
}

pub(super) fn decode_bucket(key: &[u8], value: &[u8]) -> Result<Bucket, StoreError> {
    let decode_error = |source| StoreError::Decode { key: format!("pending/{key:02x?}"), source };
    let raw: [u8; 8] = key.try_into().map_err(|_| decode_error(postcard::Error::DeserializeUnexpectedEnd))?;
    let secs = (u64::from_be_bytes(raw) ^ (1 << 63)) as i64;
    let start = BucketStart::from_unix(secs).map_err(|_| decode_error(postcard::Error::DeserializeBadEncoding))?;
    let (max_bps, samples): (u64, u8) = postcard::from_bytes(value).map_err(decode_error)?;
    Ok(Bucket { start, max_bps, samples })
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain structs into a Vec cannot fail.
    postcard::to_allocvec(value).unwrap_or_default()
}
