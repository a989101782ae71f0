//! The agent's store on a full disk (issue 15, item 2): closed buckets are kept in memory while
//! the disk is full and shipped from there, one ERROR says so, and once space returns they are
//! written without a restart. A full disk is never taken for damage.

mod support;

use tally_testkit::tmpfs;

use support::Logs;
use tally_agent::store::Store;
use tally_common::bucket::Bucket;
use tally_common::time::BucketStart;
use tally_testkit::skip;
use tmpfs::Tmpfs;

fn bucket(k: i64) -> Bucket {
    Bucket { start: BucketStart::from_unix(1_791_331_200 + 300 * k).unwrap(), max_bps: 1_000 + k as u64, samples: 60 }
}

#[test]
fn closed_buckets_wait_in_memory_while_the_disk_is_full() {
    let disk = match Tmpfs::mount(2 * 1024) {
        Ok(disk) => disk,
        Err(why) => return skip!(&why),
    };
    let (logs, _guard) = Logs::capture();
    let mut store = Store::open(disk.path(), 10_000).unwrap().store;
    let mut expected: Vec<Bucket> = (0..5).map(bucket).collect();
    store.add_closed(&expected).unwrap();
    disk.fill(4);

    // 200 buckets close while the disk is full: none is refused, none is lost.
    for k in 5..205 {
        assert_eq!(store.add_closed(&[bucket(k)]).unwrap(), [], "bucket {k}");
        expected.push(bucket(k));
    }
    assert!(store.full().is_some_and(|why| why.contains("is full")), "{:?}", store.full());
    assert_eq!(store.oldest_pending(10_000).unwrap(), expected, "shipped from memory, oldest first");
    // The collector acknowledges ten of them meanwhile.
    let acked: Vec<Bucket> = (100..110).map(bucket).collect();
    store.delete_acknowledged(&acked).unwrap();
    expected.retain(|b| !acked.contains(b));
    assert_eq!(store.pending_count(), expected.len());
    assert_eq!(logs.lines_with("is full").len(), 1, "one ERROR:\n{}", logs.text());
    assert!(logs.lines_with("is full")[0].contains("ERROR"));

    // Space returns: the next closed bucket brings everything to the disk, no restart.
    disk.free();
    store.add_closed(&[bucket(205)]).unwrap();
    expected.push(bucket(205));
    assert_eq!(store.full(), None);
    assert_eq!(logs.lines_with("has space again").len(), 1, "{}", logs.text());
    drop(store);
    let opened = Store::open(disk.path(), 10_000).unwrap();
    assert_eq!(opened.store.oldest_pending(10_000).unwrap(), expected, "on disk after a restart");
    assert_eq!((opened.restored, opened.journal_damaged, opened.moved_aside), (0, 0, None));
}

#[test]
fn a_store_on_a_full_disk_is_not_moved_aside() {
    let disk = match Tmpfs::mount(2 * 1024) {
        Ok(disk) => disk,
        Err(why) => return skip!(&why),
    };
    let mut store = Store::open(disk.path(), 10_000).unwrap().store;
    store.add_closed(&[bucket(0), bucket(1)]).unwrap();
    drop(store);
    disk.fill(0);
    match Store::open(disk.path(), 10_000) {
        Ok(opened) => {
            assert_eq!(opened.moved_aside, None);
            assert_eq!(opened.store.oldest_pending(10).unwrap(), [bucket(0), bucket(1)]);
        }
        Err(e) => assert!(e.is_out_of_space(), "{e}"),
    }
    let entries: Vec<String> = std::fs::read_dir(disk.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!entries.iter().any(|e| e.contains("corrupt")), "{entries:?}");
    disk.free();
    let opened = Store::open(disk.path(), 10_000).unwrap();
    assert_eq!(opened.store.oldest_pending(10).unwrap(), [bucket(0), bucket(1)]);
}
