//! Real traffic: two network namespaces joined by a veth pair, a UDP generator sending a known
//! rate for a known time from one side, and the real agent measuring the other side's veth. Each
//! of the agent's samples taken while the generator ran is within 5 % of the true rate, as the
//! sender's own interface counters saw it.
//!
//! Needs root (CI runs as root); elsewhere the test prints why it is skipped.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use chrono::{DateTime, Utc};
use support::field;

const RATE_BPS: u64 = 20_000_000;
const SECONDS: f64 = 22.0;

/// Two namespaces and a veth pair, removed on drop.
struct Namespaces {
    a: String,
    b: String,
}

impl Namespaces {
    fn create() -> Result<Self, String> {
        let id = std::process::id();
        let ns = Namespaces { a: format!("tally-t{id}-a"), b: format!("tally-t{id}-b") };
        let steps: [&[&str]; 9] = [
            &["netns", "add", &ns.a],
            &["netns", "add", &ns.b],
            &["link", "add", "vA", "netns", &ns.a, "type", "veth", "peer", "name", "vB", "netns", &ns.b],
            &["-n", &ns.a, "addr", "add", "192.0.2.1/24", "dev", "vA"],
            &["-n", &ns.b, "addr", "add", "192.0.2.2/24", "dev", "vB"],
            &["-n", &ns.a, "link", "set", "vA", "up"],
            &["-n", &ns.b, "link", "set", "vB", "up"],
            &["-n", &ns.a, "link", "set", "lo", "up"],
            &["-n", &ns.b, "link", "set", "lo", "up"],
        ];
        for step in steps {
            let out = Command::new("ip").args(step).output().map_err(|e| format!("ip: {e}"))?;
            if !out.status.success() {
                return Err(format!("ip {}: {}", step.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
            }
        }
        Ok(ns)
    }

    fn exec(&self, ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]);
        cmd
    }

    fn tx_bytes(&self) -> u64 {
        let out = self.exec(&self.a, "cat").arg("/sys/class/net/vA/statistics/tx_bytes").output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
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

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn samples_of_real_traffic_are_within_five_percent_of_the_true_rate() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: creating network namespaces needs root");
        return;
    }
    let ns = match Namespaces::create() {
        Ok(ns) => ns,
        Err(e) => {
            println!("skipped: cannot create network namespaces here: {e}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("state_dir = {:?}\nwan = [\"vB\"]\nlog = \"debug,sled=warn\"\n", dir.path().join("state")),
    )
    .unwrap();

    let receiver = ns.exec(&ns.b, "python3").args(["-c", RECEIVER]).spawn().unwrap();
    let mut agent = ns
        .exec(&ns.b, env!("CARGO_BIN_EXE_tally-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(agent.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("store opened") {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "the agent exited");
    }

    let before = ns.tx_bytes();
    let generator = ns
        .exec(&ns.a, "python3")
        .args(["-c", GENERATOR, &RATE_BPS.to_string(), &SECONDS.to_string()])
        .output()
        .unwrap();
    let after = ns.tx_bytes();
    assert!(generator.status.success(), "{}", String::from_utf8_lossy(&generator.stderr));
    let report = String::from_utf8(generator.stdout).unwrap();
    let fields: Vec<f64> = report.split_whitespace().map(|f| f.parse().unwrap()).collect();
    let (start, end, seconds) = (fields[0], fields[1], fields[2]);
    let true_rate = (after - before) as f64 * 8.0 / seconds;
    assert!((true_rate / RATE_BPS as f64 - 1.0).abs() < 0.05, "the generator kept its rate: {true_rate}");

    // Let the sample covering the generator's last second be logged, then stop.
    let mut samples = Vec::new();
    loop {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "the agent exited");
        if line.contains(" sample start=") {
            let at: DateTime<Utc> = field(&line, "start").unwrap().parse().unwrap();
            let at = at.timestamp() as f64;
            if at >= start && at + 5.0 <= end {
                samples.push(field(&line, "bps").unwrap().parse::<u64>().unwrap());
            }
            if at > end {
                break;
            }
        }
    }
    kill(agent);
    kill(receiver);

    assert!(samples.len() >= 3, "samples inside the generator's run: {samples:?}");
    for s in &samples {
        let off = (*s as f64 / true_rate - 1.0).abs();
        assert!(off <= 0.05, "sample {s} bit/s is {:.1} % off the true rate {true_rate:.0}", off * 100.0);
    }
    println!("true rate {true_rate:.0} bit/s; agent samples {samples:?}");
}
