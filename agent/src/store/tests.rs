use chrono::NaiveDate;

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

/// sled's I/O pool waits out its idle deadlines with [`disk::POOL_TIMER_SLACK`], this thread
/// keeps its own slack, and a flush still returns as soon as its data is written: the pool is
/// woken for work, not at its deadline (a delay of the slack would take a minute).
#[test]
fn sleds_pool_sleeps_with_a_long_timer_slack_and_a_flush_is_not_delayed() {
    let own = rustix::thread::current_timer_slack().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), 10_000).unwrap().store;
    assert_eq!(rustix::thread::current_timer_slack().unwrap(), own, "the opening thread's own slack is back");
    let pool: Vec<u64> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .map(|task| task.unwrap().path())
        .filter(|task| std::fs::read_to_string(task.join("comm")).unwrap_or_default().starts_with("sled-io"))
        // A thread's slack is in `/proc/TID/`, not under `task/`. (Other tests' threads come and
        // go meanwhile; sled's pool threads stay.)
        .filter_map(|task| {
            std::fs::read_to_string(Path::new("/proc").join(task.file_name()?).join("timerslack_ns")).ok()
        })
        .map(|slack| slack.trim().parse().unwrap())
        .collect();
    assert!(pool.len() >= 7, "sled's pool started at the store's opening: {pool:?}");
    assert!(pool.iter().all(|slack| *slack == disk::POOL_TIMER_SLACK.get()), "{pool:?}");
    let mut slowest = std::time::Duration::ZERO;
    for k in 0..20 {
        let started = std::time::Instant::now();
        store.add_closed(&[bucket(k, 1_000 + k as u64)]).unwrap();
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < std::time::Duration::from_secs(2), "a closed bucket's flush took {slowest:?}");
    assert_eq!(store.pending_count(), 20);
}
