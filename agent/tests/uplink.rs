//! End to end, real processes over real QUIC: the collector binary serves, the agent binary
//! enrolls with a one-time token and ships its buckets.
//!
//! - Measuring a fake sysfs tree on an accelerated clock: every bucket the agent closed is read
//!   back from the collector with its value, across a collector outage.
//! - A backlog of days (seeded through the agent's own store, as if the collector had been away)
//!   arrives exactly once and oldest first.
//! - The collector SIGKILLed ten times during ingest: nothing acknowledged is lost, nothing is
//!   stored twice (R10).
//! - 20 % random packet loss (nftables, in network namespaces): the backlog still arrives whole.
//! - A socket offline while its cap was lowered ships buckets stamped with the policy it was
//!   still enforcing: they are judged against that cap, not the new one (R26).
//! - A socket whose clock is a day ahead: the agent says so at ERROR, its buckets are kept in the
//!   collector's quarantine (never deleted unseen), and the operator bills them a day earlier.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::collector::{
    Collector, Logged, acme_hq, acme_hq_with, assert_same_buckets, binary, buckets, committed_batches, enroll_token,
    run, seed_backlog,
};
use support::namespaces::Namespaces;
use support::{FakeTree, field};
use tally_agent::clock::{ScaledClock, TEST_CLOCK_VAR};
use tally_common::bucket::Bucket;
use tally_common::enforcement::CapSetting;
use tally_common::time::BucketStart;
use tally_testkit::skip;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tally-agent"))
}

/// `tally-agent enroll` with `cmd` (the agent binary, maybe inside a namespace).
fn enroll(mut cmd: Command, config: &Path, collector: &Collector, token: &str) -> std::process::Output {
    cmd.args(["enroll", "--collector", &collector.quic.to_string(), "--token", token, "--config"])
        .arg(config)
        .output()
        .unwrap()
}

/// The agent's `status --format json`.
fn status(config: &Path) -> serde_json::Value {
    let out = run(
        Path::new(env!("CARGO_BIN_EXE_tally-agent")),
        &["status", "--format", "json", "--config", config.to_str().unwrap()],
    );
    serde_json::from_str(&out).unwrap()
}

/// The buckets the agent logged as closed: start (Unix seconds) → max bit/s.
fn closed_buckets(agent_log: &str) -> BTreeMap<i64, u64> {
    agent_log
        .lines()
        .filter(|l| l.contains("bucket closed"))
        .map(|l| {
            let start: chrono::DateTime<chrono::Utc> = field(l, "start").unwrap().parse().unwrap();
            (start.timestamp(), field(l, "max_bps").unwrap().parse().unwrap())
        })
        .collect()
}

/// The collector received `expected` exactly once and oldest first, and stored it: the batches
/// it committed, in the order it logged them, cover disjoint ascending ranges, and their sizes
/// add up to the number of buckets (so none came twice: every one was stored).
fn assert_received_once_in_order(collector_log: &str, collector: &Collector, expected: &BTreeMap<i64, u64>) {
    assert_same_buckets(&buckets(collector, expected.keys().copied()), expected);
    let batches = committed_batches(collector_log);
    for pair in batches.windows(2) {
        assert!(pair[0].1 < pair[1].0, "batches out of order or overlapping: {pair:?}");
    }
    assert_eq!(batches.iter().map(|b| b.2).sum::<usize>(), expected.len(), "batches {batches:?}");
}

#[test]
fn an_enrolled_agent_ships_every_closed_bucket_and_replays_a_backlog() {
    if binary().is_none() {
        skip!("the collector binary is not built; run `cargo test --workspace`");
        return;
    };
    let tree = FakeTree::new();
    tree.add("eth1", 2, Some(1_000));
    let collector = acme_hq("127.0.0.1", "info");
    let token = enroll_token(&collector);
    let server = collector.serve();

    let agent_config = tree.write_config(&["eth1"], "");
    // A token whose fingerprint is not this collector's CA: the agent refuses the collector
    // before it sends the secret, so the real token stays usable.
    let mut forged = token.clone();
    let last = if forged.ends_with('0') { "1" } else { "0" };
    forged.replace_range(forged.len() - 1.., last);
    let out = enroll(agent(), &agent_config, &collector, &forged);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match the token's fingerprint"), "{err}");
    // From a file, so that the token is not in the process list.
    let token_file = tree.dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let out = agent()
        .args(["enroll", "--collector", &collector.quic.to_string(), "--token-file"])
        .arg(&token_file)
        .arg("--config")
        .arg(&agent_config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("enrolled as site hq"));
    for dir in [tree.state(), tree.state().join("identity")] {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dir).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
    }
    // From standard input.
    let mut again = agent()
        .args(["enroll", "--collector", &collector.quic.to_string(), "--token", "-", "--config"])
        .arg(&agent_config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut again.stdin.take().unwrap(), token.as_bytes()).unwrap();
    let again = again.wait_with_output().unwrap();
    assert!(!again.status.success(), "a token works once");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already used"), "{err}");

    // Traffic that changes from bucket to bucket, so each bucket has its own value.
    let anchor = ScaledClock::now_anchor();
    let running = Arc::new(AtomicBool::new(true));
    let writer = {
        let (running, sys) = (running.clone(), tree.sys());
        std::thread::spawn(move || {
            let mut rx = 0u64;
            while running.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
                let scaled_s = (ScaledClock::now_anchor() - anchor).as_secs() * 100;
                rx += (1 + (scaled_s / 300) % 7) * 125_000 * 100 / 100; // 1..7 Mbps, per 10 ms real
                let counters = tally_common::counters::Counters { rx_bytes: rx, tx_bytes: rx / 3 };
                tally_agent::netif::write_fake_counters(&sys, "eth1", counters).unwrap();
            }
        })
    };
    let run_agent = |anchor: Duration| {
        let mut cmd = agent();
        cmd.args(["run", "--config"])
            .arg(&agent_config)
            .env(TEST_CLOCK_VAR, format!("1791331200:{}:100", anchor.as_nanos()));
        Logged::spawn(cmd)
    };
    let mut measuring = run_agent(anchor);
    measuring.until("connected to the collector");
    for _ in 0..3 {
        measuring.until("batch acknowledged");
    }
    // The collector goes away; buckets pile up; it comes back.
    server.stop();
    for _ in 0..3 {
        measuring.until("bucket closed");
    }
    let retrying = measuring.until("collector unreachable, retrying");
    assert!(retrying.contains("WARN"), "{retrying}");
    let attempt: u64 = field(&retrying, "attempt_s").unwrap().parse().unwrap();
    assert!(attempt <= 10, "an attempt is bounded: {retrying}");
    assert!(field(&retrying, "retry_in_s").is_some(), "{retrying}");
    // `status` tells the truth: enrolled, unreachable since when and why, the next try, what waits.
    let down = &status(&agent_config)["uplink"];
    assert_eq!(down["state"], "unreachable", "{down}");
    assert_eq!(down["collector"], collector.quic.to_string(), "{down}");
    for field in ["unreachable_since", "last_error", "next_attempt_at"] {
        assert!(down[field].as_str().is_some_and(|v| !v.is_empty()), "{field}: {down}");
    }
    let out = agent().args(["status", "--config"]).arg(&agent_config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let said = format!("uplink: enrolled to {}; unreachable since ", collector.quic);
    assert!(
        text.contains(&said) && text.contains("; next try in ") && text.contains("bucket(s) waiting, oldest"),
        "{text}"
    );
    assert!(!text.contains("not enrolled"), "{text}");
    let server = collector.serve();
    measuring.until("connected to the collector");
    measuring.until("backlog replayed");
    let uplink = &status(&agent_config)["uplink"];
    assert_eq!((uplink["state"].as_str(), uplink["reconnects"].as_u64()), (Some("connected"), Some(1)), "{uplink}");
    let agent_log = measuring.stop();
    running.store(false, Ordering::Relaxed);
    writer.join().unwrap();
    server.stop();

    let closed = closed_buckets(&agent_log);
    assert!(closed.len() >= 6, "{agent_log}");
    let stored = buckets(&collector, closed.keys().copied());
    // Every bucket the agent closed reached the collector, with its value; the last one may
    // still be in flight when the agent stopped.
    let shipped: BTreeMap<i64, u64> =
        closed.iter().filter(|(k, _)| stored.contains_key(*k)).map(|(k, v)| (*k, *v)).collect();
    assert!(shipped.len() + 1 >= closed.len(), "closed {closed:?}\nstored {stored:?}");
    for (start, max) in &shipped {
        assert_eq!(stored[start], *max, "bucket {start}");
    }
    let status = status(&agent_config);
    assert!(status["pending_buckets"].as_u64().unwrap() <= 1, "acknowledged buckets left the agent's store: {status}");
}

/// An enrolled agent whose WAN interface is down (`wan0` is not in the tree), so the buckets it
/// ships are exactly the `days` of backlog seeded into its store (R4: it closes none).
fn agent_with_backlog(
    tree: &FakeTree,
    collector: &Collector,
    days: usize,
    cmd: Command,
) -> (std::path::PathBuf, BTreeMap<i64, u64>) {
    let config = tree.write_config(&["wan0"], "");
    let out = enroll(cmd, &config, collector, &enroll_token(collector));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (config.clone(), seed_backlog(&tree.state(), days * 288))
}

#[test]
fn a_backlog_of_days_arrives_exactly_once_and_oldest_first() {
    if binary().is_none() {
        skip!("the collector binary is not built; run `cargo test --workspace`");
        return;
    };
    let tree = FakeTree::new();
    let collector = acme_hq("127.0.0.1", "info,tally_collector::agents=debug");
    let server = collector.serve();
    let (config, seeded) = agent_with_backlog(&tree, &collector, 3, agent());
    let mut running = Logged::spawn({
        let mut cmd = agent();
        cmd.args(["run", "--config"]).arg(&config);
        cmd
    });
    let connected = running.until("connected to the collector");
    assert_eq!(field(&connected, "backlog"), Some("864"), "{connected}");
    let replayed = running.until("backlog replayed");
    assert_eq!(field(&replayed, "buckets"), Some("864"), "{replayed}");
    let live = status(&config);
    assert_eq!(live["running"], true);
    assert_eq!(live["pending_buckets"] == 0, live["oldest_pending"].is_null(), "count and oldest agree: {live}");
    let agent_log = running.stop();
    let collector_log = server.stop();

    // With the WAN down no sample is valid, so no bucket closes (R4): the backlog is all.
    assert!(closed_buckets(&agent_log).is_empty(), "{agent_log}");
    let expected = seeded;
    assert_received_once_in_order(&collector_log, &collector, &expected);
    let stopped = status(&config);
    assert_eq!((stopped["pending_buckets"].as_u64(), stopped["oldest_pending"].as_str()), (Some(0), None));
}

#[test]
fn sigkills_of_the_collector_during_ingest_lose_nothing_acknowledged() {
    if binary().is_none() {
        skip!("the collector binary is not built; run `cargo test --workspace`");
        return;
    };
    let tree = FakeTree::new();
    let collector = acme_hq("127.0.0.1", "info,tally_collector::agents=debug");
    let mut server = collector.serve();
    let (config, seeded) = agent_with_backlog(&tree, &collector, 30, agent());
    let mut running = Logged::spawn({
        let mut cmd = agent();
        cmd.args(["run", "--config"]).arg(&config);
        cmd
    });
    // Kill after the first or second commit of each life, at once or a few ms later: before,
    // during or after the ack.
    let mut random = u64::from(std::process::id());
    println!("kill schedule seed {random}");
    for life in 0..10 {
        for _ in 0..1 + life % 2 {
            server.until("batch committed");
        }
        random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        std::thread::sleep(Duration::from_millis(random >> 60));
        server.kill();
        server = collector.serve();
    }
    running.until("backlog replayed");
    let agent_log = running.stop();
    server.stop();

    // Every bucket is stored once, with the value the agent measured: a bucket acknowledged
    // but lost would be missing, one counted twice would be over its value or duplicated.
    let expected: BTreeMap<i64, u64> = seeded.into_iter().chain(closed_buckets(&agent_log)).collect();
    assert_same_buckets(&buckets(&collector, expected.keys().copied()), &expected);
    assert_eq!(status(&config)["pending_buckets"], 0);
}

#[test]
fn the_backlog_arrives_whole_through_twenty_percent_packet_loss() {
    if binary().is_none() {
        skip!("the collector binary is not built; run `cargo test --workspace`");
        return;
    };
    let ns = match Namespaces::create("u") {
        Ok(ns) => ns,
        Err(e) => {
            skip!(&e.to_string());
            return;
        }
    };
    let tree = FakeTree::new();
    let mut collector = acme_hq("192.0.2.2", "info");
    collector.namespace = Some(ns.b.clone());
    let port = collector.quic.port().to_string();
    let rules = format!(
        "add table inet loss; add chain inet loss input {{ type filter hook input priority 0; }}; \
         add rule inet loss input udp dport {port} numgen random mod 100 < 20 counter drop"
    );
    let out = ns.exec(&ns.b, "nft").arg(&rules).output().unwrap();
    assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
    let server = collector.serve();
    let (config, seeded) = agent_with_backlog(&tree, &collector, 2, ns.exec(&ns.a, env!("CARGO_BIN_EXE_tally-agent")));
    let mut running = Logged::spawn({
        let mut cmd = ns.exec(&ns.a, "timeout");
        cmd.arg("300").arg(env!("CARGO_BIN_EXE_tally-agent")).args(["run", "--config"]).arg(&config);
        cmd
    });
    running.until("backlog replayed");
    let agent_log = running.stop();
    server.stop();

    let counter = ns.exec(&ns.b, "nft").args(["list", "chain", "inet", "loss", "input"]).output().unwrap();
    let counter = String::from_utf8(counter.stdout).unwrap();
    let dropped: u64 =
        counter.split("packets ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().parse().unwrap();
    assert!(dropped > 0, "the loss rule dropped nothing: {counter}");
    println!("{dropped} packets dropped on the way to the collector");
    let expected: BTreeMap<i64, u64> = seeded.into_iter().chain(closed_buckets(&agent_log)).collect();
    assert_same_buckets(&buckets(&collector, expected.keys().copied()), &expected);
}

#[test]
fn a_clock_a_day_ahead_is_reported_and_its_buckets_quarantined_until_the_operator_accepts_them() {
    if binary().is_none() {
        skip!("the collector binary is not built; run `cargo test --workspace`");
        return;
    };
    let tree = FakeTree::new();
    tree.add("eth1", 2, Some(1_000));
    let collector = acme_hq_with("127.0.0.1", "info", "");
    let server = collector.serve();
    let config = tree.write_config(&["eth1"], "");
    let out = enroll(agent(), &config, &collector, &enroll_token(&collector));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A day ahead less two hours, 100 times faster than real time: for the 72 s this test may
    // take, every bucket closes a whole day less up to two hours ahead of the collector.
    let now = chrono::Utc::now().timestamp();
    let epoch = now + 86_400 - 7_200;
    let mut cmd = agent();
    cmd.args(["run", "--config"])
        .arg(&config)
        .env(TEST_CLOCK_VAR, format!("{epoch}:{}:100", ScaledClock::now_anchor().as_nanos()));
    let mut running = Logged::spawn(cmd);
    let wrong = running.until("clock is");
    assert!(wrong.contains("ERROR") && wrong.contains("ahead of the collector's"), "{wrong}");
    let offset: i64 = field(&wrong, "offset_s").unwrap().parse().unwrap();
    // Its clock runs 100 times faster: a second after the start it is 100 s further ahead.
    assert!((86_400 - 7_200 - 5..86_400).contains(&offset), "{wrong}");
    let told = running.until("the collector quarantined buckets");
    assert!(told.contains("ERROR"), "{told}");
    for _ in 0..2 {
        running.until("bucket closed");
    }
    running.until("batch acknowledged");
    let live = status(&config);
    let quarantined = live["quarantined_buckets"].as_u64().unwrap();
    assert!(quarantined >= 2, "{live}");
    assert_eq!(live["uplink"]["clock_offset_s"].as_i64(), Some(offset), "{live}");
    let log = running.stop();
    let told = |level: &str| log.lines().filter(|l| l.contains(level) && l.contains("quarantined buckets")).count();
    assert_eq!((told("ERROR"), told("DEBUG") >= 1), (1, true), "said at ERROR once per run:\n{log}");
    let stopped = status(&config);
    let quarantined = stopped["quarantined_buckets"].as_u64().unwrap();
    // A bucket that closed as the agent stopped may still wait for its ack.
    let pending = stopped["pending_buckets"].as_u64().unwrap();

    // The collector kept every one, counted them, and billed none.
    let intake: serde_json::Value =
        serde_json::from_str(&collector.ok(&["site", "intake", "--site", "hq", "--format", "json"])).unwrap();
    let held = intake["quarantined"].as_array().unwrap();
    let kept = held.len() as u64;
    assert!((quarantined..=quarantined + pending).contains(&kept), "agent {stopped}\ncollector {intake}");
    assert!(held.iter().all(|q| q["reason"] == "in_the_future"), "{intake}");
    assert_eq!(intake["refusals"][0]["reason"], "in_the_future");
    assert_eq!(intake["refusals"][0]["count"].as_u64(), Some(kept));
    assert!(intake["agent_discards"]["reported_at"].is_string(), "{intake}");
    let starts: Vec<i64> = held
        .iter()
        .map(|q| chrono::DateTime::parse_from_rfc3339(q["start"].as_str().unwrap()).unwrap().timestamp())
        .collect();
    assert!(buckets(&collector, starts.iter().copied()).is_empty(), "nothing from the future is billed");

    // As measured they would still be in the future: refused. A day earlier: billed.
    let out = collector.run(&["site", "quarantine", "--site", "hq", "--accept"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("still in the future"));
    let accepted = collector.ok(&["site", "quarantine", "--site", "hq", "--accept", "--shift-minutes", "-1440"]);
    assert!(accepted.contains(&format!("{kept} quarantined buckets accepted")), "{accepted}");
    let billed = buckets(&collector, starts.iter().map(|s| s - 86_400));
    assert_eq!(billed.len() as u64, kept, "{billed:?}");
    server.stop();
}

#[test]
fn buckets_are_stamped_with_the_policy_the_socket_enforced_and_judged_by_it() {
    if binary().is_none() {
        skip!("the collector binary is not built; run `cargo test --workspace`");
        return;
    };
    let tree = FakeTree::new();
    let collector = acme_hq("127.0.0.1", "info");
    let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc();
    // The cap of hq: 50 Mbit/s from 6 October 00:00, lowered to 20 at 12:00 while the socket
    // was offline.
    collector.ok_at(at("2026-10-06T00:00:00Z"), &["site", "set", "--site", "hq", "--cap-mbps", "50"]);
    let enforcement = || -> serde_json::Value {
        let json = collector.ok(&["site", "enforcement", "--site", "hq", "--month", "2026-10", "--format", "json"]);
        serde_json::from_str(&json).unwrap()
    };
    let fifty = enforcement()["policy_version"].as_u64().unwrap();
    collector.ok_at(at("2026-10-06T12:00:00Z"), &["site", "set", "--site", "hq", "--cap-mbps", "20"]);
    let server = collector.serve();
    let config = tree.write_config(&["wan0"], "");
    let out = enroll(agent(), &config, &collector, &enroll_token(&collector));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The socket's own record: it applied 50 at 18:00 (its store was new then) and never heard
    // of 20. Buckets of 40 Mbit/s at 16:00, before it had applied anything (unstamped), and at
    // 22:00 (stamped 50).
    let bucket = |text: &str| Bucket {
        start: BucketStart::from_unix(at(text).timestamp()).unwrap(),
        max_bps: 40_000_000,
        samples: 60,
    };
    let (before, after) = (bucket("2026-10-06T16:00:00Z"), bucket("2026-10-06T22:00:00Z"));
    {
        let opened = tally_agent::store::Store::open(&tree.state(), 35 * 288).unwrap();
        let mut store = opened.store;
        let applied = CapSetting { since: at("2026-10-06T18:00:00Z"), cap_bps: Some(50_000_000), version: fifty };
        store.record_applied(applied).unwrap();
        assert!(store.add_closed(&[before, after]).unwrap().is_empty());
    }
    let mut running = Logged::spawn({
        let mut cmd = agent();
        cmd.args(["run", "--config"]).arg(&config);
        cmd
    });
    running.until("backlog replayed");
    running.stop();
    server.stop();

    // 16:00 is judged as unstamped: the cap in force was 20 and no socket had said it shaped at
    // 50, so 40 Mbit/s breaks it. 22:00 was measured under the 50 the socket enforced: no
    // violation, although the cap in force was 20.
    let report = enforcement();
    let violations: Vec<(&str, u64)> = report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["bucket_start"].as_str().unwrap(), v["cap_bps"].as_u64().unwrap()))
        .collect();
    assert_eq!(violations, [("2026-10-06T16:00:00Z", 20_000_000)], "{report}");
    assert_eq!(
        buckets(&collector, [after.start.unix()]).get(&after.start.unix()),
        Some(&40_000_000),
        "billed as measured"
    );
}
