//! Per-site caps end to end (R17), in two network namespaces joined by a veth pair: the real
//! collector in `a`, the real agent in `b` measuring and shaping `vB`, TCP generators pushing
//! 200 Mbit/s each way across the pair.
//!
//! - A 20 Mbit/s cap set on the collector reaches the agent at connect; the agent's samples and
//!   the bytes received each way stay within cap × 1.1; the shaping is what `tc` shows.
//! - After a restart without the collector (and with the qdiscs gone, as after a reboot), the
//!   agent re-applies the cap from its store.
//! - Lifting the cap on the collector is applied within 5 s, and the full rate comes back.
//! - Without CAP_NET_ADMIN the agent reports the failure to the collector, logs it once at ERROR,
//!   and keeps measuring.
//!
//! Needs root (CI runs as root); elsewhere each test prints why it is skipped.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::collector::{Collector, Logged, acme_hq, binary, enroll_token};
use support::field;
use support::namespaces::Namespaces;
use tally_testkit::skip;

const CAP_BPS: f64 = 20e6;
const OFFERED_BPS: f64 = 200e6;

/// `serve ADDR`: accepts connections, prints `listening`, then `received BYTES SECONDS` for each
/// connection when it closes. `send HOST RATE SECONDS`: one TCP connection paced at RATE bit/s.
const GENERATOR: &str = r#"
import socket, sys, time, threading
if sys.argv[1] == "serve":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[2], 9100))
    s.listen(8)
    print("listening", flush=True)
    def drain(c):
        n, t0 = 0, time.monotonic()
        while True:
            b = c.recv(1 << 20)
            if not b:
                break
            n += len(b)
        print("received", n, time.monotonic() - t0, flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=drain, args=(c,), daemon=True).start()
else:
    host, rate, seconds = sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    s = socket.create_connection((host, 9100))
    chunk, sent, start = b"x" * 65536, 0, time.monotonic()
    while time.monotonic() - start < seconds:
        if sent * 8 < rate * (time.monotonic() - start):
            sent += s.send(chunk)
        else:
            time.sleep(0.001)
    s.close()
"#;

/// A receiver in one namespace, read line by line.
struct Receiver {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Receiver {
    fn start(ns: &Namespaces, namespace: &str, address: &str) -> Receiver {
        let mut child = ns
            .exec(namespace, "python3")
            .args(["-c", GENERATOR, "serve", address])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "listening");
        Receiver { child, out }
    }

    /// The rate of the next connection to close, in bit/s.
    fn received_bps(&mut self) -> f64 {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let fields: Vec<f64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap()).collect();
        fields[0] * 8.0 / fields[1]
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes `OFFERED_BPS` each way for `seconds`; returns (wall-clock start, end) and the rates
/// received by the agent's side and by the peer.
fn push_both_ways(
    ns: &Namespaces,
    at_agent: &mut Receiver,
    at_peer: &mut Receiver,
    seconds: f64,
) -> (f64, f64, f64, f64) {
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let start = now();
    let send = |namespace: &str, to: &str| {
        ns.exec(namespace, "python3")
            .args(["-c", GENERATOR, "send", to, &OFFERED_BPS.to_string(), &seconds.to_string()])
            .spawn()
            .unwrap()
    };
    let mut down = send(&ns.a, "192.0.2.2");
    let mut up = send(&ns.b, "192.0.2.1");
    assert!(down.wait().unwrap().success() && up.wait().unwrap().success(), "a generator failed");
    let end = now();
    (start, end, at_agent.received_bps(), at_peer.received_bps())
}

/// The agent's samples (bit/s) whose 5-second interval lies within `[from, to]` (Unix seconds),
/// read from its log until a sample starts after `to`.
fn samples_between(agent: &mut Logged, from: f64, to: f64) -> Vec<u64> {
    let mut samples = Vec::new();
    loop {
        let line = agent.until(" sample start=");
        let start = chrono::DateTime::parse_from_rfc3339(field(&line, "start").unwrap()).unwrap().timestamp() as f64;
        if start >= from && start + 5.0 <= to {
            samples.push(field(&line, "bps").unwrap().parse().unwrap());
        }
        if start > to {
            return samples;
        }
    }
}

fn qdiscs(ns: &Namespaces) -> String {
    let out = ns.exec(&ns.b, "tc").args(["-s", "qdisc", "show"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

struct Setup {
    ns: Namespaces,
    collector: Collector,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

/// Namespaces, a collector in `a` with site `hq` capped at 20 Mbit/s, an agent's configuration.
fn setup(tag: &str) -> Option<Setup> {
    if binary().is_none() {
        skip!("the collector binary is not built; run `cargo test --workspace`");
        return None;
    };
    let ns = match Namespaces::create(tag) {
        Ok(ns) => ns,
        Err(e) => {
            skip!(&e.to_string());
            return None;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let mut collector = acme_hq("192.0.2.1", "info");
    collector.namespace = Some(ns.a.clone());
    collector.ok(&["site", "set", "--site", "hq", "--cap-mbps", "20"]);
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("state_dir = {:?}\nwan = [\"vB\"]\nlog = \"debug,sled=warn\"\n", dir.path().join("state")),
    )
    .unwrap();
    Some(Setup { ns, collector, config, _dir: dir })
}

/// `tally-agent enroll` in `b`, against the running collector.
fn enroll(setup: &Setup) {
    let (ns, collector) = (&setup.ns, &setup.collector);
    let out = ns
        .exec(&ns.b, env!("CARGO_BIN_EXE_tally-agent"))
        .args(["enroll", "--collector", &collector.quic.to_string(), "--token", &enroll_token(collector), "--config"])
        .arg(&setup.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "enroll: {}", String::from_utf8_lossy(&out.stderr));
}

/// The agent in `b` (under `timeout`, so a hung agent ends the test), `wrapper` first if any.
fn agent(setup: &Setup, wrapper: &[&str]) -> Logged {
    let mut cmd = setup.ns.exec(&setup.ns.b, "timeout");
    cmd.arg("300").args(wrapper).arg(env!("CARGO_BIN_EXE_tally-agent")).args(["run", "--config"]).arg(&setup.config);
    Logged::spawn(cmd)
}

/// `tally-agent status --format json` of the running agent: its `policy`.
fn agent_policy(setup: &Setup) -> serde_json::Value {
    let out = setup
        .ns
        .exec(&setup.ns.b, env!("CARGO_BIN_EXE_tally-agent"))
        .args(["status", "--format", "json", "--config"])
        .arg(&setup.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["policy"].clone()
}

/// The collector's view of site `hq`'s enforcement.
fn enforcement(collector: &Collector) -> serde_json::Value {
    serde_json::from_str(&collector.ok(&["site", "enforcement", "--site", "hq", "--format", "json"])).unwrap()
}

fn assert_within_cap(what: &str, bps: f64) {
    assert!(bps <= CAP_BPS * 1.1, "{what}: {:.1} Mbit/s is above the cap × 1.1", bps / 1e6);
}

#[test]
fn a_cap_shapes_both_directions_survives_a_restart_and_lifting_it_restores_full_rate() {
    let Some(setup) = setup("s") else { return };
    let (ns, collector) = (&setup.ns, &setup.collector);
    let mut server = collector.serve();
    enroll(&setup);
    let mut running = agent(&setup, &[]);
    let applied = running.until("policy applied");
    assert!(applied.contains("cap=20.0 Mbps"), "{applied}");
    server.until("policy applied");
    let shown = qdiscs(ns);
    assert!(shown.contains("qdisc tbf 7a11: dev vB root") && shown.contains("rate 20Mbit"), "{shown}");
    assert!(shown.contains("dev ifb-vB root") && shown.contains("qdisc ingress ffff: dev vB"), "{shown}");
    let report = enforcement(collector);
    assert_eq!(report["agent_report"]["ok"], true, "{report}");
    assert_eq!(report["in_force"], true, "{report}");
    let policy = agent_policy(&setup);
    assert_eq!(
        (&policy["version"], &policy["cap_bps"], &policy["applied"]),
        (&report["policy_version"], &json!(20_000_000), &json!(true))
    );

    let mut at_agent = Receiver::start(ns, &ns.b, "192.0.2.2");
    let mut at_peer = Receiver::start(ns, &ns.a, "192.0.2.1");
    let (start, end, down, up) = push_both_ways(ns, &mut at_agent, &mut at_peer, 16.0);
    let samples = samples_between(&mut running, start, end);
    println!("capped: down {:.1} Mbit/s, up {:.1} Mbit/s, samples {samples:?}", down / 1e6, up / 1e6);
    assert_within_cap("received by the agent's side", down);
    assert_within_cap("received by the peer", up);
    assert!(samples.len() >= 2, "samples inside the run: {samples:?}");
    for s in &samples {
        assert_within_cap("a sample", *s as f64);
    }
    assert!(samples.iter().any(|s| *s as f64 > CAP_BPS * 0.5), "traffic did flow, up to the cap: {samples:?}");

    // A reboot: the agent and the collector stop, the qdiscs vanish; the agent comes back alone.
    running.stop();
    server.stop();
    for args in [&["qdisc", "del", "dev", "vB", "root"][..], &["qdisc", "del", "dev", "vB", "ingress"]] {
        assert!(ns.exec(&ns.b, "tc").args(args).status().unwrap().success());
    }
    assert!(ns.exec(&ns.b, "ip").args(["link", "del", "ifb-vB"]).status().unwrap().success());
    assert!(!qdiscs(ns).contains("tbf"));
    let mut running = agent(&setup, &[]);
    running.until("policy applied");
    assert!(qdiscs(ns).contains("qdisc tbf 7a11: dev vB root"), "re-applied from the store without the collector");

    let mut server = collector.serve();
    let reported = server.until("policy applied");
    let again = running.until("policy applied");
    assert!(again.contains("DEBUG") && again.contains("as before"), "the same policy is logged at INFO once: {again}");
    let asked = Instant::now();
    collector.ok(&["site", "set", "--site", "hq", "--no-cap"]);
    let lifted = running.until("policy applied");
    let took = asked.elapsed();
    assert!(lifted.contains("cap=none"), "{lifted}");
    assert!(took <= Duration::from_secs(5), "the change took {took:?} to be applied");
    // The agent reported the unchanged policy twice on that connection (from its store, then
    // received again): the collector logged it once; its next line is the lifted cap's.
    let lifted_report = server.until("policy applied");
    let version = |line: &str| line.split_whitespace().find(|w| w.starts_with("version=")).map(str::to_owned);
    assert_ne!(version(&lifted_report), version(&reported), "{reported}\n{lifted_report}");
    let shown = qdiscs(ns);
    assert!(!shown.contains("tbf") && !shown.contains("ifb-vB") && !shown.contains("ingress"), "{shown}");

    let (_, _, down, up) = push_both_ways(ns, &mut at_agent, &mut at_peer, 6.0);
    println!("lifted in {took:?}: down {:.1} Mbit/s, up {:.1} Mbit/s", down / 1e6, up / 1e6);
    for (what, bps) in [("down", down), ("up", up)] {
        assert!(bps >= OFFERED_BPS * 0.75, "{what}: {:.1} Mbit/s: the full rate did not come back", bps / 1e6);
    }
    running.stop();
    server.stop();
}

#[test]
fn without_cap_net_admin_the_failure_is_reported_once_and_measuring_goes_on() {
    let Some(setup) = setup("p") else { return };
    if Command::new("setpriv").arg("--version").output().is_err() {
        skip!("setpriv (util-linux) is not installed");
        return;
    }
    let (ns, collector) = (&setup.ns, &setup.collector);
    let mut server = collector.serve();
    enroll(&setup);
    // Root without CAP_NET_ADMIN, as a socket whose unit lost the capability.
    let mut running = agent(&setup, &["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", "--"]);
    let failed = running.until("policy NOT applied");
    assert!(failed.contains("ERROR") && failed.contains("CAP_NET_ADMIN"), "{failed}");
    server.until("could not apply its policy");
    let report = enforcement(collector);
    assert_eq!(report["agent_report"]["ok"], false, "{report}");
    assert_eq!(report["in_force"], false, "{report}");
    assert!(report["agent_report"]["detail"].as_str().unwrap().contains("CAP_NET_ADMIN"), "{report}");
    let policy = agent_policy(&setup);
    assert_eq!((&policy["cap_bps"], &policy["applied"]), (&json!(20_000_000), &json!(false)), "{policy}");

    // A second policy fails the same way: reported again, not logged at ERROR again.
    collector.ok(&["site", "set", "--site", "hq", "--cap-mbps", "30"]);
    server.until("could not apply its policy");
    running.until("policy not applied (as before)");
    let after: Vec<String> = (0..2).map(|_| running.until(" sample start=")).collect();
    let log = running.stop();
    server.stop();
    assert_eq!(log.matches("policy NOT applied").count(), 1, "logged once at ERROR:\n{log}");
    assert!(after.iter().all(|l| field(l, "bps").is_some()), "measuring goes on: {after:?}");
    assert!(!qdiscs(ns).contains("tbf"), "nothing was installed");
}
