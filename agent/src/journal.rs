//! The journal: closed buckets not yet acknowledged, kept a second time beside sled in
//! `STATE_DIR/journal`, because sled's recovery silently drops what it cannot read.
//!
//! Append-only, fixed-size records of 22 bytes, each with its own CRC-32:
//! `tag (1) | bucket start (i64 BE) | max_bps (u64 BE) | samples (1) | crc32 of the 18 before (BE)`.
//! Tag `C` is a closed bucket, appended and synced (`fdatasync`) when it closes; tag `R` removes
//! one (acknowledged, or dropped by retention), appended without a sync: a removal lost to a
//! power cut only sends a bucket twice, which is harmless (R10). When removals outnumber the
//! live records the journal is rewritten with the live ones (a new file synced, then renamed).
//!
//! At start the journal is replayed: what it holds and sled lacks is put back into sled. A record
//! whose CRC does not match is skipped (the fixed size keeps the next one readable) and counted.
//!
//! The file keeps [`RESERVED_RECORDS`] records' worth of space allocated past its end
//! (`fallocate` with `KEEP_SIZE`), taken again after each append while there is space: on a full
//! disk, closed buckets are still appended there, on the disk, until the reserve is used up.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use tally_common::bucket::Bucket;
use tally_common::time::BucketStart;

const RECORD: usize = 22;
const CLOSED: u8 = b'C';
const REMOVED: u8 = b'R';
/// Rewrite when the file holds this many records more than twice the live ones.
const SLACK: usize = 1_024;
/// Records that fit in the space kept allocated past the end: two days of closed buckets, each
/// closed again once.
pub const RESERVED_RECORDS: usize = 4 * 288;

/// What a replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Closed buckets not removed, by start.
    pub live: BTreeMap<BucketStart, Bucket>,
    /// Records whose CRC or content was wrong, and a torn record at the end.
    pub damaged: usize,
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    records: usize,
}

impl Journal {
    /// Opens (or creates) the journal in `state_dir` and replays it.
    pub fn open(state_dir: &Path) -> std::io::Result<(Journal, Replay)> {
        let path = state_dir.join("journal");
        let bytes = read(&path)?;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        // A torn record at the end would misalign every record after it.
        let whole = bytes.len() / RECORD * RECORD;
        if whole != bytes.len() {
            file.set_len(whole as u64)?;
        }
        sync_dir(state_dir)?;
        let journal = Journal { path, file, records: whole / RECORD };
        journal.reserve();
        Ok((journal, replay(&bytes)))
    }

    /// Reads the journal again: what it holds now.
    pub fn replay(&self) -> std::io::Result<Replay> {
        Ok(replay(&read(&self.path)?))
    }

    /// Appends closed buckets and syncs: they are on the disk when this returns.
    pub fn closed(&mut self, buckets: &[Bucket]) -> std::io::Result<()> {
        let records: Vec<u8> = buckets.iter().flat_map(|b| record(CLOSED, b)).collect();
        self.append(&records, true)
    }

    /// Appends removals, without a sync.
    pub fn removed(&mut self, starts: &[BucketStart]) -> std::io::Result<()> {
        let records: Vec<u8> = starts
            .iter()
            .flat_map(|start| record(REMOVED, &Bucket { start: *start, max_bps: 0, samples: 0 }))
            .collect();
        self.append(&records, false)
    }

    /// Appends whole records; a write cut short (a full disk) is cut off again, so the records
    /// after it stay aligned.
    fn append(&mut self, records: &[u8], sync: bool) -> std::io::Result<()> {
        let written = self.file.write_all(records).and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            let _ = self.file.set_len((self.records * RECORD) as u64);
            return Err(e);
        }
        self.records += records.len() / RECORD;
        self.reserve();
        Ok(())
    }

    /// Keeps [`RESERVED_RECORDS`] records' worth of space allocated past the end, when the disk
    /// has it (cheap when it is allocated already).
    fn reserve(&self) {
        let end = (self.records * RECORD) as u64;
        let reserved = rustix::fs::fallocate(
            &self.file,
            rustix::fs::FallocateFlags::KEEP_SIZE,
            end,
            (RESERVED_RECORDS * RECORD) as u64,
        );
        if let Err(e) = reserved {
            tracing::debug!(error = %e, "the journal's reserve is not allocated");
        }
    }

    /// Whether the journal has grown enough past `live` records to be rewritten.
    pub fn wants_rewrite(&self, live: usize) -> bool {
        self.records > 2 * live + SLACK
    }

    /// Replaces the journal with `live`: a new file written and synced, renamed over the old.
    pub fn rewrite(&mut self, live: &[Bucket]) -> std::io::Result<()> {
        let fresh = self.path.with_extension("new");
        let mut file = File::create(&fresh)?;
        file.write_all(&live.iter().flat_map(|b| record(CLOSED, b)).collect::<Vec<u8>>())?;
        file.sync_all()?;
        std::fs::rename(&fresh, &self.path)?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.records = live.len();
        self.reserve();
        Ok(())
    }
}

fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(bytes)
}

fn record(tag: u8, bucket: &Bucket) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[0] = tag;
    r[1..9].copy_from_slice(&bucket.start.unix().to_be_bytes());
    r[9..17].copy_from_slice(&bucket.max_bps.to_be_bytes());
    r[17] = bucket.samples;
    let crc = crc32fast::hash(&r[..18]);
    r[18..].copy_from_slice(&crc.to_be_bytes());
    r
}

fn replay(bytes: &[u8]) -> Replay {
    let mut replay = Replay::default();
    let mut chunks = bytes.chunks_exact(RECORD);
    for r in &mut chunks {
        let crc = u32::from_be_bytes([r[18], r[19], r[20], r[21]]);
        let start = i64::from_be_bytes(r[1..9].try_into().unwrap_or_default());
        let start = match BucketStart::from_unix(start) {
            Ok(start) if crc32fast::hash(&r[..18]) == crc => start,
            _ => {
                replay.damaged += 1;
                continue;
            }
        };
        let max_bps = u64::from_be_bytes(r[9..17].try_into().unwrap_or_default());
        match r[0] {
            CLOSED => {
                let bucket = Bucket { start, max_bps, samples: r[17] };
                replay.live.entry(start).and_modify(|b| b.merge(&bucket)).or_insert(bucket);
            }
            REMOVED => {
                replay.live.remove(&start);
            }
            _ => replay.damaged += 1,
        }
    }
    if !chunks.remainder().is_empty() {
        replay.damaged += 1;
    }
    replay
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(k: i64, max_bps: u64) -> Bucket {
        Bucket { start: BucketStart::from_unix(1_791_331_200 + 300 * k).unwrap(), max_bps, samples: 60 }
    }

    #[test]
    fn replay_keeps_what_was_closed_and_not_removed_and_counts_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, replay) = Journal::open(dir.path()).unwrap();
        assert_eq!(replay, Replay::default());
        journal.closed(&[bucket(0, 10), bucket(1, 20), bucket(2, 30)]).unwrap();
        journal.closed(&[bucket(1, 25)]).unwrap();
        journal.removed(&[bucket(0, 0).start]).unwrap();
        drop(journal);
        let (_, replay) = Journal::open(dir.path()).unwrap();
        assert_eq!(replay.live.into_values().collect::<Vec<_>>(), [bucket(1, 25), bucket(2, 30)]);
        assert_eq!(replay.damaged, 0);

        // One record's byte flipped, and half a record at the end.
        let path = dir.path().join("journal");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[2 * RECORD + 10] ^= 0x40; // the record of bucket 2
        bytes.extend_from_slice(&record(CLOSED, &bucket(9, 1))[..7]);
        std::fs::write(&path, &bytes).unwrap();
        let (mut journal, replay) = Journal::open(dir.path()).unwrap();
        assert_eq!(replay.live.into_values().collect::<Vec<_>>(), [bucket(1, 25)], "the damaged record alone is lost");
        assert_eq!(replay.damaged, 2);
        // The torn tail was cut: what is appended next reads back.
        journal.closed(&[bucket(3, 40)]).unwrap();
        let (_, replay) = Journal::open(dir.path()).unwrap();
        assert!(replay.live.contains_key(&bucket(3, 0).start));
    }

    #[test]
    fn a_rewrite_keeps_only_the_live_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path()).unwrap();
        for k in 0..2_000 {
            journal.closed(&[bucket(k, 1)]).unwrap();
            journal.removed(&[bucket(k, 0).start]).unwrap();
        }
        journal.closed(&[bucket(5_000, 7)]).unwrap();
        assert!(journal.wants_rewrite(1));
        journal.rewrite(&[bucket(5_000, 7)]).unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("journal")).unwrap().len(), RECORD as u64);
        journal.closed(&[bucket(5_001, 8)]).unwrap();
        let (_, replay) = Journal::open(dir.path()).unwrap();
        assert_eq!(replay.live.into_values().collect::<Vec<_>>(), [bucket(5_000, 7), bucket(5_001, 8)]);
    }
}
