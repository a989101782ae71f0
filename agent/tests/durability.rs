//! A closed bucket is on the disk itself before it is logged or offered to the uplink (issue 15,
//! item 4): the real agent under `strace` on an accelerated clock; every `bucket closed` line is
//! preceded by an `fdatasync` of sled's data file since the one before.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::FakeTree;
use tally_agent::clock::{ScaledClock, TEST_CLOCK_VAR};
use tally_testkit::skip;

/// 100× faster: a bucket closes every 3 s.
const SCALE: u64 = 100;
const BUCKETS: usize = 3;

#[test]
fn every_closed_bucket_is_synced_before_it_is_logged() {
    if Command::new("strace").arg("-V").output().is_err() {
        return skip!("strace is not installed (apt-get install strace)");
    }
    let tree = FakeTree::new();
    tree.add("eth1", 2, Some(1_000));
    let config = tree.write_config(&["eth1"], "");
    let clock = format!("1791331200:{}:{SCALE}", ScaledClock::now_anchor().as_nanos());
    let (trace, log) = (tree.dir.path().join("strace.txt"), tree.dir.path().join("agent.log"));
    let mut strace = Command::new("strace")
        .args(["-f", "-y", "-s", "200", "-e", "trace=fdatasync,fsync,write", "-o"])
        .arg(&trace)
        .args(["--", env!("CARGO_BIN_EXE_tally-agent"), "run", "--config"])
        .arg(&config)
        .env(TEST_CLOCK_VAR, clock)
        .env_remove("RUST_LOG")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();

    // Until the agent has logged a few closed buckets (a bucket every 3 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    while closed_lines(&log) < BUCKETS {
        assert!(Instant::now() < deadline, "no {BUCKETS} closed buckets in 60 s:\n{}", read(&log));
        std::thread::sleep(Duration::from_millis(100));
    }
    let agent = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id())).unwrap();
    let agent: i32 = agent.split_whitespace().next().unwrap().parse().unwrap();
    rustix::process::kill_process(rustix::process::Pid::from_raw(agent).unwrap(), rustix::process::Signal::TERM)
        .unwrap();
    strace.wait().unwrap();

    let trace = read(&trace);
    let mut synced = false;
    let mut checked = 0;
    for line in trace.lines() {
        if (line.contains(" fdatasync(") || line.contains(" fsync(")) && line.contains("/store/db>") {
            assert!(line.trim_end().ends_with("= 0"), "a failed sync: {line}");
            synced = true;
        } else if line.contains(" write(2") && line.contains("bucket closed") {
            assert!(synced, "logged before its sync:\n{line}\n\nthe trace:\n{trace}");
            synced = false;
            checked += 1;
        }
    }
    assert!(checked >= BUCKETS, "{checked} closed buckets in the trace:\n{trace}");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn closed_lines(log: &Path) -> usize {
    read(log).lines().filter(|l| l.contains("bucket closed")).count()
}
