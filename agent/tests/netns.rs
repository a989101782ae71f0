//! Real traffic: two network namespaces joined by a veth pair, a UDP generator sending a known
//! rate for a known time from one side, and the real agent measuring the other side's veth. Each
//! of the agent's samples taken while the generator ran is within 5 % of the true rate, as the
//! sender's own interface counters saw it.
//!
//! Needs root (CI runs as root); elsewhere the test prints why it is skipped.

mod support;

use std::path::Path;
use std::process::Child;

use chrono::{DateTime, Utc};
use support::namespaces::Namespaces;
use support::{field, wait_until_running};
use tally_testkit::{Logged, skip};

const RATE_BPS: u64 = 20_000_000;
const SECONDS: f64 = 22.0;

/// What the sending side's veth counted.
fn tx_bytes(ns: &Namespaces) -> u64 {
    let out = ns.exec(&ns.a, "cat").arg("/sys/class/net/vA/statistics/tx_bytes").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

/// Paces UDP datagrams so the bytes on the wire (payload + UDP, IPv4 and Ethernet headers)
/// follow the rate; prints its start and end wall-clock times.
const GENERATOR: &str = r#"
import socket, sys, time
rate, seconds, size = int(sys.argv[1]), float(sys.argv[2]), 1200
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload, wire = b"x" * size, size + 8 + 20 + 14
start_wall, start = time.time(), time.monotonic()
sent = 0
while True:
    elapsed = time.monotonic() - start
    if elapsed >= seconds:
        break
    while sent * 8 < rate * elapsed:
        s.sendto(payload, ("192.0.2.2", 9000))
        sent += wire
    time.sleep(0.0005)
print(start_wall, time.time(), time.monotonic() - start)
"#;

const RECEIVER: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.2", 9000))
while True:
    s.recv(65536)
"#;

/// The real agent measuring `vB` in namespace b, its state in `dir`, running.
fn run_agent(ns: &Namespaces, dir: &Path) -> Logged {
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!("state_dir = {:?}\nwan = [\"vB\"]\nlog = \"debug,sled=warn\"\n", dir.join("state")),
    )
    .unwrap();
    let agent = Logged::spawn({
        let mut command = ns.exec(&ns.b, env!("CARGO_BIN_EXE_tally-agent"));
        command.args(["run", "--config"]).arg(&config);
        command
    });
    wait_until_running(&config);
    agent
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn samples_of_real_traffic_are_within_five_percent_of_the_true_rate() {
    let ns = match Namespaces::create("t") {
        Ok(ns) => ns,
        Err(e) => {
            skip!(&e.to_string());
            return;
        }
    };
    let receiver = ns.exec(&ns.b, "python3").args(["-c", RECEIVER]).spawn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut agent = run_agent(&ns, dir.path());

    let before = tx_bytes(&ns);
    let generator = ns
        .exec(&ns.a, "python3")
        .args(["-c", GENERATOR, &RATE_BPS.to_string(), &SECONDS.to_string()])
        .output()
        .unwrap();
    let after = tx_bytes(&ns);
    assert!(generator.status.success(), "{}", String::from_utf8_lossy(&generator.stderr));
    let report = String::from_utf8(generator.stdout).unwrap();
    let fields: Vec<f64> = report.split_whitespace().map(|f| f.parse().unwrap()).collect();
    let (start, end, seconds) = (fields[0], fields[1], fields[2]);
    let true_rate = (after - before) as f64 * 8.0 / seconds;
    assert!((true_rate / RATE_BPS as f64 - 1.0).abs() < 0.05, "the generator kept its rate: {true_rate}");

    // Let the sample covering the generator's last second be logged, then stop.
    let mut samples = Vec::new();
    loop {
        let line = agent.until(" sample start=");
        let at: DateTime<Utc> = field(&line, "start").unwrap().parse().unwrap();
        let at = at.timestamp() as f64;
        if at >= start && at + 5.0 <= end {
            samples.push(field(&line, "bps").unwrap().parse::<u64>().unwrap());
        }
        if at > end {
            break;
        }
    }
    agent.kill();
    kill(receiver);

    assert!(samples.len() >= 3, "samples inside the generator's run: {samples:?}");
    for s in &samples {
        let off = (*s as f64 / true_rate - 1.0).abs();
        assert!(off <= 0.05, "sample {s} bit/s is {:.1} % off the true rate {true_rate:.0}", off * 100.0);
    }
    println!("true rate {true_rate:.0} bit/s; agent samples {samples:?}");
}

/// The kernel's counter source reads every link by ifindex in one request a tick (R3): the WAN's
/// veth removed and created again under the same name is found under its new ifindex, re-baselined
/// (no sample spans the two interfaces' counters), and measured again.
#[test]
fn a_wan_removed_and_created_again_is_measured_under_its_new_ifindex() {
    let ns = match Namespaces::create("r") {
        Ok(ns) => ns,
        Err(e) => {
            skip!(&e.to_string());
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let mut agent = run_agent(&ns, dir.path());
    agent.until(" sample start=");
    let ifindex = || {
        let out = ns.exec(&ns.b, "cat").arg("/sys/class/net/vB/ifindex").output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let old = ifindex();
    for step in [
        vec!["-n", ns.b.as_str(), "link", "del", "vB"],
        vec!["link", "add", "vA", "netns", &ns.a, "type", "veth", "peer", "name", "vB", "netns", &ns.b],
        vec!["-n", ns.b.as_str(), "link", "set", "vB", "up"],
    ] {
        assert!(std::process::Command::new("ip").args(&step).status().unwrap().success(), "ip {step:?}");
    }
    let new = ifindex();
    assert_ne!(old, new);
    let changed = agent.until("ifindex changed");
    assert!(changed.contains(&format!("from {old} to {new}")), "{changed}");
    let sample = agent.until(" sample start=");
    let bps: u64 = field(&sample, "bps").unwrap().parse().unwrap();
    assert!(bps < 1_000_000, "an idle veth measured at {bps} bit/s: {sample}");
    agent.kill();
}
