//! End to end, real processes over real QUIC on 127.0.0.1: the collector binary serves, the
//! agent binary enrolls with a one-time token, measures a fake sysfs tree on an accelerated
//! clock, and ships its buckets; every bucket the agent closed is read back from the collector
//! with its value. Then the collector goes away, the agent keeps a backlog, and when the
//! collector returns the backlog arrives complete.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{FakeTree, field};
use tally_agent::clock::{ScaledClock, TEST_CLOCK_VAR};

/// The collector binary, built by the same `cargo test --workspace` next to the agent's.
fn collector_binary() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_BIN_EXE_tally-agent")).with_file_name("tally-collector");
    path.exists().then_some(path)
}

struct Logged {
    child: Child,
    log: BufReader<ChildStderr>,
    seen: String,
}

impl Logged {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.env_remove("RUST_LOG").stderr(Stdio::piped()).spawn().unwrap();
        let log = BufReader::new(child.stderr.take().unwrap());
        Logged { child, log, seen: String::new() }
    }

    fn until(&mut self, needle: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.log.read_line(&mut line).unwrap() > 0, "exited before logging {needle:?}:\n{}", self.seen);
            self.seen += &line;
            if line.contains(needle) {
                return line.clone();
            }
        }
    }

    fn stop(mut self) -> String {
        rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), rustix::process::Signal::TERM)
            .unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.log, &mut rest).unwrap();
        assert!(self.child.wait().unwrap().success(), "{}{rest}", self.seen);
        self.seen + &rest
    }
}

fn run(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn an_enrolled_agent_ships_every_closed_bucket_and_replays_a_backlog() {
    let Some(collector) = collector_binary() else {
        println!("skipped: the collector binary is not built; run `cargo test --workspace`");
        return;
    };
    let tree = FakeTree::new();
    tree.add("eth1", 2, Some(1_000));
    let dir = tree.dir.path();
    let port = free_udp_port();
    let collector_config = dir.join("collector.toml");
    std::fs::write(
        &collector_config,
        format!(
            "data_dir = {:?}\nquic_listen = \"127.0.0.1:{port}\"\nhttp_listen = \"127.0.0.1:0\"\nlog = \"info\"\n",
            dir.join("collector")
        ),
    )
    .unwrap();
    let c = collector_config.to_str().unwrap();
    run(&collector, &["--config", c, "account", "add", "--id", "acme", "--name", "Acme"]);
    run(
        &collector,
        &[
            "--config",
            c,
            "site",
            "add",
            "--account",
            "acme",
            "--id",
            "hq",
            "--name",
            "HQ",
            "--country",
            "US",
            "--type",
            "socket",
        ],
    );
    let token = run(&collector, &["--config", c, "site", "enroll-token", "--site", "hq"]);

    // Under `timeout`, which forwards SIGTERM: a hung process ends the test instead of CI.
    let serve = |collector: &Path| {
        let mut cmd = Command::new("timeout");
        cmd.arg("300").arg(collector).args(["--config", c, "serve"]);
        let mut logged = Logged::spawn(cmd);
        logged.until("ingest listening");
        logged
    };
    let server = serve(&collector);

    let agent_config = tree.write_config(&["eth1"], "");
    let address = format!("127.0.0.1:{port}");
    // A token whose fingerprint is not this collector's CA: the agent refuses the collector
    // before it sends the secret, so the real token stays usable.
    let mut forged = token.trim().to_owned();
    let last = if forged.ends_with('0') { "1" } else { "0" };
    forged.replace_range(forged.len() - 1.., last);
    let out = Command::new(env!("CARGO_BIN_EXE_tally-agent"))
        .args(["enroll", "--collector", &address, "--token", &forged, "--config"])
        .arg(&agent_config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match the token's fingerprint"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_tally-agent"))
        .args(["enroll", "--collector", &address, "--token", token.trim(), "--config"])
        .arg(&agent_config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("enrolled as site hq"));
    let again = Command::new(env!("CARGO_BIN_EXE_tally-agent"))
        .args(["enroll", "--collector", &address, "--token", token.trim(), "--config"])
        .arg(&agent_config)
        .output()
        .unwrap();
    assert!(!again.status.success(), "a token works once");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already used"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

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
    let agent = |anchor: Duration| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally-agent"));
        cmd.args(["run", "--config"])
            .arg(&agent_config)
            .env(TEST_CLOCK_VAR, format!("1791331200:{}:100", anchor.as_nanos()));
        Logged::spawn(cmd)
    };
    let mut measuring = agent(anchor);
    measuring.until("connected to the collector");
    for _ in 0..3 {
        measuring.until("batch acknowledged");
    }
    // The collector goes away; buckets pile up; it comes back.
    server.stop();
    for _ in 0..3 {
        measuring.until("bucket closed");
    }
    measuring.until("collector unreachable, retrying");
    let server = serve(&collector);
    measuring.until("connected to the collector");
    measuring.until("backlog replayed");
    let agent_log = measuring.stop();
    running.store(false, Ordering::Relaxed);
    writer.join().unwrap();
    server.stop();

    let closed: BTreeMap<String, u64> = agent_log
        .lines()
        .filter(|l| l.contains("bucket closed"))
        .map(|l| (field(l, "start").unwrap().to_owned(), field(l, "max_bps").unwrap().parse().unwrap()))
        .collect();
    assert!(closed.len() >= 6, "{agent_log}");
    let days: std::collections::BTreeSet<&str> = closed.keys().map(|s| &s[..10]).collect();
    let mut stored = BTreeMap::new();
    for day in days {
        let json =
            run(&collector, &["--config", c, "site", "buckets", "--site", "hq", "--date", day, "--format", "json"]);
        let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
        for row in rows.as_array().unwrap() {
            stored.insert(row["start"].as_str().unwrap().to_owned(), row["max_bps"].as_u64().unwrap());
        }
    }
    // Every bucket the agent closed reached the collector, with its value; the last ones may
    // still be in flight when the agent stopped.
    let shipped: BTreeMap<String, u64> =
        closed.iter().filter(|(k, _)| stored.contains_key(*k)).map(|(k, v)| (k.clone(), *v)).collect();
    assert!(shipped.len() + 1 >= closed.len(), "closed {closed:?}\nstored {stored:?}");
    for (start, max) in &shipped {
        assert_eq!(stored[start], *max, "bucket {start}");
    }
    let status = run(
        Path::new(env!("CARGO_BIN_EXE_tally-agent")),
        &["status", "--format", "json", "--config", agent_config.to_str().unwrap()],
    );
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(status["pending_buckets"].as_u64().unwrap() <= 1, "acknowledged buckets left the agent's store: {status}");
}
