//! The agent's store on a full disk (issue 15, item 2; issue 30): closed buckets go to the space
//! the journal keeps ahead and stay in memory while the disk is full, shipped from there; one
//! ERROR says so; once space returns they are written without a restart. Stopped and started
//! again on the full disk, the agent loses none and measures on; one it could write nowhere is
//! named at ERROR. A full disk is never taken for damage; a read-only one stops the agent with
//! one ERROR saying what to do.

mod support;

use tally_testkit::tmpfs;

use support::{Logs, field};
use tally_agent::clock::{ScaledClock, TEST_CLOCK_VAR};
use tally_agent::journal::RESERVED_RECORDS;
use tally_agent::store::{Stopping, Store};
use tally_common::bucket::Bucket;
use tally_common::time::BucketStart;
use tally_testkit::Logged;
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
    let opened = Store::open(disk.path(), 10_000).expect("a store opens on a full disk");
    assert_eq!(opened.moved_aside, None);
    assert_eq!(opened.store.oldest_pending(10).unwrap(), [bucket(0), bucket(1)]);
    drop(opened);
    let entries: Vec<String> = std::fs::read_dir(disk.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!entries.iter().any(|e| e.contains("corrupt")), "{entries:?}");
    disk.free();
    let opened = Store::open(disk.path(), 10_000).unwrap();
    assert_eq!(opened.store.oldest_pending(10).unwrap(), [bucket(0), bucket(1)]);
}

/// The journal keeps space allocated ahead: buckets closed while the disk is full are on the
/// disk, and a store dropped (the agent stopped) and opened again on the still full disk has them
/// all, to ship at once and to write to the store once there is space.
#[test]
fn buckets_closed_while_the_disk_is_full_survive_a_restart_on_the_full_disk() {
    let disk = match Tmpfs::mount(2 * 1024) {
        Ok(disk) => disk,
        Err(why) => return skip!(&why),
    };
    let (logs, _guard) = Logs::capture();
    let mut store = Store::open(disk.path(), 10_000).unwrap().store;
    let mut expected: Vec<Bucket> = (0..5).map(bucket).collect();
    store.add_closed(&expected).unwrap();
    disk.fill(0);
    // sled writes into space it took before: closing goes on until it fails, and 13 more.
    let mut k = 5;
    while store.full().is_none() {
        assert!(k < 1_000, "sled never filled the disk");
        store.add_closed(&[bucket(k)]).unwrap();
        expected.push(bucket(k));
        k += 1;
    }
    for _ in 0..13 {
        store.add_closed(&[bucket(k)]).unwrap();
        expected.push(bucket(k));
        k += 1;
    }
    assert_eq!(store.before_stop().unwrap(), Stopping::default(), "the journal's reserve took every one");
    drop(store);

    let opened = Store::open(disk.path(), 10_000).expect("a store opens on a full disk");
    let mut store = opened.store;
    assert_eq!(store.oldest_pending(10_000).unwrap(), expected, "all pending after the restart");
    assert_eq!(store.pending_count(), expected.len());
    store.add_closed(&[bucket(k)]).unwrap();
    expected.push(bucket(k));
    store.delete_acknowledged(&expected[..3]).unwrap();
    drop(store);

    disk.free();
    let mut store = Store::open(disk.path(), 10_000).unwrap().store;
    store.add_closed(&[bucket(k + 1)]).unwrap();
    expected.push(bucket(k + 1));
    assert_eq!(store.full(), None);
    let shipped = store.oldest_pending(10_000).unwrap();
    // The acknowledgement of the second run was in memory only: those three are sent again
    // (harmless, R10); nothing closed is missing.
    assert_eq!(shipped, expected, "everything closed is in the store");
    assert!(logs.lines_with("lost").is_empty(), "{}", logs.text());
}

/// Past the journal's reserve a bucket is in memory only: written if space comes back before
/// the stop, else named as lost — exactly those, and no other.
#[test]
fn past_the_reserve_a_stop_names_exactly_the_buckets_it_loses() {
    let disk = match Tmpfs::mount(2 * 1024) {
        Ok(disk) => disk,
        Err(why) => return skip!(&why),
    };
    let mut store = Store::open(disk.path(), 100_000).unwrap().store;
    store.add_closed(&[bucket(0)]).unwrap();
    disk.fill(0);
    // More than the reserve holds, even rounded up to whole pages.
    let closed = (RESERVED_RECORDS + 300) as i64;
    for k in 1..closed {
        store.add_closed(&[bucket(k)]).unwrap();
    }
    assert_eq!(store.pending_count(), closed as usize, "all shipped from memory");
    let Stopping { dropped, lost } = store.before_stop().unwrap();
    assert_eq!(dropped, []);
    assert!(!lost.is_empty() && lost.len() < 300, "{} lost", lost.len());
    assert_eq!(store.pending_count(), closed as usize - lost.len(), "the lost are no longer counted");
    drop(store);
    disk.free();
    let kept = Store::open(disk.path(), 100_000).unwrap().store.oldest_pending(100_000).unwrap();
    let kept_count = closed - lost.len() as i64;
    assert_eq!(kept, (0..kept_count).map(bucket).collect::<Vec<_>>(), "the reserve held the older ones");
    assert_eq!(lost, (kept_count..closed).map(bucket).collect::<Vec<_>>(), "each other bucket is named as lost");
}

/// `tally-agent run` with its state directory on `disk`, over `tree`, on a clock 200× faster than
/// real time (a bucket every 1.5 s) that every run of the test shares.
fn run_on(tree: &support::FakeTree, disk: &Tmpfs, clock: &str) -> Logged {
    let state = disk.path().join("state");
    let text = tree
        .config_text(&["eth1"], "")
        .replace(&format!("state_dir = {:?}", tree.state()), &format!("state_dir = {state:?}"));
    let config = tree.dir.path().join("agent.toml");
    std::fs::write(&config, text).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tally-agent"));
    command.args(["run", "--config"]).arg(config).env(TEST_CLOCK_VAR, clock);
    Logged::spawn(command)
}

/// The starts of the buckets a log says closed.
fn closed_in(log: &str) -> Vec<String> {
    log.lines().filter(|l| l.contains("bucket closed")).map(|l| field(l, "start").unwrap().to_owned()).collect()
}

/// The real agent stopped while its disk is full, and started again on the still full disk:
/// it starts, measures on, says so once at ERROR, and every bucket either run closed is in the
/// store once there is space; the stop lines count what is pending, truly.
#[test]
fn the_agent_stopped_and_started_on_a_full_disk_loses_no_bucket() {
    let disk = match Tmpfs::mount(4 * 1024) {
        Ok(disk) => disk,
        Err(why) => return skip!(&why),
    };
    let tree = support::FakeTree::new();
    tree.add("eth1", 2, Some(1_000));
    let clock = format!("1791331200:{}:200", ScaledClock::now_anchor().as_nanos());

    let mut first = run_on(&tree, &disk, &clock);
    first.until_n("bucket closed", 2);
    disk.fill(0);
    first.until("is full");
    first.until_n("bucket closed", 4);
    let log = first.stop();
    let stop = log.lines().find(|l| l.contains("stopping:")).unwrap();
    let mut closed = closed_in(&log);
    assert_eq!(field(stop, "pending"), Some(closed.len().to_string().as_str()), "{stop}");
    assert!(stop.contains("the disk is full"), "{stop}");
    assert!(!log.contains("lost"), "{log}");

    let mut second = run_on(&tree, &disk, &clock);
    let opened = second.until("store opened");
    assert_eq!(field(&opened, "pending"), Some(closed.len().to_string().as_str()), "{opened}");
    second.until_n("bucket closed", 3);
    let log = second.stop();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.len() == 1 && errors[0].contains("is full"), "one ERROR, the full disk:\n{log}");
    closed.extend(closed_in(&log));
    let stop = log.lines().find(|l| l.contains("stopping:")).unwrap();
    assert_eq!(field(stop, "pending"), Some(closed.len().to_string().as_str()), "{stop}");

    disk.free();
    let store = Store::open(&disk.path().join("state"), 10_000).unwrap().store;
    let pending: Vec<String> = store.oldest_pending(10_000).unwrap().iter().map(|b| b.start.to_string()).collect();
    assert_eq!(pending, closed, "every bucket closed by either run is pending");
}

/// A state directory on a read-only mount (root ignores file modes; a mount does not): one ERROR
/// naming the file and what to do, and exit code 73, which the systemd unit does not restart.
#[test]
fn a_read_only_state_directory_stops_the_agent_with_one_error_saying_what_to_do() {
    let disk = match Tmpfs::mount(1024) {
        Ok(disk) => disk,
        Err(why) => return skip!(&why),
    };
    let tree = support::FakeTree::new();
    tree.add("eth1", 2, Some(1_000));
    let clock = format!("1791331200:{}:200", ScaledClock::now_anchor().as_nanos());
    run_on(&tree, &disk, &clock).until("store opened");
    disk.remount_read_only();
    let (status, log) = run_on(&tree, &disk, &clock).finish();
    assert_eq!(status.code(), Some(73), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    let lock = disk.path().join("state/agent.lock");
    assert!(errors[0].contains(&format!("{}: Read-only file system", lock.display())), "{log}");
    assert!(errors[0].contains("remount it read-write, or set `state_dir` to a writable directory"), "{log}");
}
