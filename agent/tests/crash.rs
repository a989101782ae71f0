//! Crash safety: the real binary over a fake sysfs tree on an accelerated clock, killed with
//! SIGKILL at 20 pseudo-random moments and restarted. No closed bucket is lost, none is closed
//! twice, and the open bucket restored at each start is not lower than the one last saved (or,
//! when the kill fell between storing that bucket closed and logging it, it is pending).

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{FakeTree, field};
use tally_agent::clock::{ScaledClock, TEST_CLOCK_VAR};
use tally_agent::store::Store;

/// 100× faster: a tick every 50 ms, a bucket every 3 s, a state save every 0.6 s.
const SCALE: u64 = 100;
const KILLS: usize = 20;

fn spawn(config: &std::path::Path, clock: &str, log: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tally-agent"))
        .args(["run", "--config"])
        .arg(config)
        .env(TEST_CLOCK_VAR, clock)
        .env_remove("RUST_LOG")
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .unwrap()
}

/// A small deterministic generator, so a failing run can be repeated.
fn next(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *seed >> 33
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let tree = FakeTree::new();
    tree.add("eth1", 2, Some(1_000));
    let config = tree.write_config(&["eth1"], "");
    let anchor = ScaledClock::now_anchor();
    let clock = format!("1791331200:{}:{SCALE}", anchor.as_nanos());

    // Traffic: 8 Mbps, plus 40 Mbps for a while every few seconds so buckets differ.
    let running = Arc::new(AtomicBool::new(true));
    let writer = {
        let running = running.clone();
        let sys = tree.sys();
        std::thread::spawn(move || {
            let mut rx = 0u64;
            while running.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
                let scaled_ms = (ScaledClock::now_anchor() - anchor).as_millis() as u64 * SCALE;
                let rate_bytes_per_s = if (scaled_ms / 1_000) % 97 < 20 { 6_000_000 } else { 1_000_000 };
                rx += rate_bytes_per_s * 10 * SCALE / 1_000;
                let counters = tally_common::counters::Counters { rx_bytes: rx, tx_bytes: rx / 4 };
                tally_agent::netif::write_fake_counters(&sys, "eth1", counters).unwrap();
            }
        })
    };

    let mut seed = 0x7a11_u64;
    println!("kill schedule seed: {seed:#x}");
    let mut closed: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_saved: Option<(String, u64)> = None;
    // Buckets closed and stored but killed before being logged: start → the value last saved.
    let mut stored_unlogged: BTreeMap<String, u64> = BTreeMap::new();
    // The bucket each SIGKILLed run had open when it was killed: the only one it may have
    // stored without the line saying so.
    let mut open_at_kill: std::collections::BTreeSet<String> = Default::default();
    for run in 0..=KILLS {
        let log_path = tree.dir.path().join(format!("run-{run}.log"));
        let mut child = spawn(&config, &clock, &log_path);
        let wait_ms = if run == KILLS { 4_000 } else { 300 + next(&mut seed) % 2_700 };
        std::thread::sleep(Duration::from_millis(wait_ms));
        if run == KILLS {
            rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM)
                .unwrap();
            assert!(child.wait().unwrap().success(), "a graceful stop exits 0");
        } else {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
        let log = std::fs::read_to_string(&log_path).unwrap();

        // The restored open bucket is at least what the previous run last saved.
        let Some(opened) = log.lines().find(|l| l.contains("store opened")) else {
            // Killed while starting (a slow start on a busy machine), before its store opened:
            // a moment like any other, with nothing written to check.
            assert!(!log.contains("bucket closed"), "run {run} closed a bucket without a store: {log}");
            continue;
        };
        if let Some((start, max)) = last_saved.take().filter(|(start, _)| !closed.contains_key(start)) {
            match field(opened, "open_start") {
                Some(restored_start) => {
                    assert_eq!(restored_start, start.as_str(), "run {run}: {opened}");
                    let restored: u64 = field(opened, "open_max_bps").unwrap().parse().unwrap();
                    assert!(restored >= max, "run {run}: open bucket restored at {restored}, saved at {max}");
                }
                // Killed after the bucket closed and was stored, before the line saying so: it is
                // not restored as open because it is pending (checked at the end).
                None => {
                    stored_unlogged.insert(start, max);
                }
            }
        }
        let mut open = field(opened, "open_start").map(str::to_owned);
        for line in log.lines() {
            if line.contains("bucket closed") {
                let start = field(line, "start").unwrap().to_owned();
                let max = field(line, "max_bps").unwrap().parse().unwrap();
                assert!(closed.insert(start.clone(), max).is_none(), "run {run}: bucket {start} closed twice");
                let next = start.parse::<chrono::DateTime<chrono::Utc>>().unwrap() + chrono::TimeDelta::minutes(5);
                open = Some(next.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            }
            if line.contains("state saved") {
                last_saved = field(line, "open_start")
                    .map(|s| (s.to_owned(), field(line, "open_max_bps").unwrap().parse().unwrap()));
                open = last_saved.as_ref().map(|(start, _)| start.clone()).or(open);
            }
        }
        if run < KILLS {
            open_at_kill.extend(open);
        }
    }
    running.store(false, Ordering::Relaxed);
    writer.join().unwrap();

    let store = Store::open(&tree.state(), 10_000).unwrap().store;
    let mut pending: BTreeMap<String, u64> =
        store.oldest_pending(10_000).unwrap().iter().map(|b| (b.start.to_string(), b.max_bps)).collect();
    for (start, saved) in &stored_unlogged {
        let stored = pending.remove(start).unwrap_or_else(|| panic!("bucket {start} was neither restored nor stored"));
        assert!(stored >= *saved, "bucket {start} stored at {stored}, its open state saved at {saved}");
    }
    // A bucket stored by a run killed before it could log it (and before it saved its state).
    let unlogged: Vec<String> = pending.keys().filter(|start| !closed.contains_key(*start)).cloned().collect();
    for start in unlogged {
        assert!(open_at_kill.contains(&start), "bucket {start} is pending, but no run closed it: {open_at_kill:?}");
        pending.remove(&start);
    }
    assert!(closed.len() >= 8, "the runs closed {} buckets", closed.len());
    assert_eq!(pending, closed, "every closed bucket is pending, once, with the value it closed with");
}
