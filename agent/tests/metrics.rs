//! Monitoring, end to end: a real Prometheus server scrapes the collector's `metrics_listen`
//! while a real agent ships a backlog of one day over QUIC; PromQL through Prometheus' HTTP API
//! returns the number of buckets the agent shipped, and the agent connected; every query of the
//! Grafana dashboard (`deploy/grafana/tally.json`) is valid there and reads exposed metrics.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::FakeTree;
use support::collector::{Logged, acme_hq_with, binary, enroll_token};
use tally_testkit::skip;

const PROMETHEUS: &str = "/usr/bin/prometheus";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` on `port` of loopback: the answer's body.
fn http_get(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

/// A PromQL query's single value through Prometheus' HTTP API; `None` while it has no sample.
fn query(port: u16, promql: &str) -> Option<f64> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body: serde_json::Value =
        serde_json::from_str(&http_get(port, &format!("/api/v1/query?query={encoded}"))).ok()?;
    assert_eq!(body["status"], "success", "{promql}: {body}");
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Polls `promql` until it equals `expected` (Prometheus scrapes every second), for at most a
/// minute; the last value otherwise.
fn settles_at(port: u16, promql: &str, expected: f64) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = query(port, promql);
        if value == Some(expected) || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_scrapes_the_buckets_a_real_agent_shipped() {
    if binary().is_none() {
        skip!("the collector binary is not built; run `cargo test --workspace`");
        return;
    };
    if !Path::new(PROMETHEUS).exists() {
        skip!("prometheus is not installed (apt-get install prometheus)");
        return;
    }
    let tree = FakeTree::new();
    let metrics_port = free_port();
    let extra = format!("max_bucket_age_days = 3650\nmetrics_listen = \"127.0.0.1:{metrics_port}\"");
    let collector = acme_hq_with("127.0.0.1", "info", &extra);
    let server = collector.serve();
    let http = collector.http_address().to_string();
    // The WAN interface is down, so the agent closes no bucket (R4): it ships exactly the backlog.
    let config = tree.write_config(&["wan0"], "");
    let agent = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally-agent"));
        cmd.args(args).arg("--config").arg(&config);
        cmd
    };
    let token = enroll_token(&collector);
    let enrolled = agent(&["enroll", "--collector", &collector.quic.to_string(), "--token", &token]).output().unwrap();
    assert!(enrolled.status.success(), "{}", String::from_utf8_lossy(&enrolled.stderr));
    let used = agent(&["enroll", "--collector", &collector.quic.to_string(), "--token", &token]).output().unwrap();
    assert!(!used.status.success(), "a token works once");
    let shipped = support::collector::seed_backlog(&tree.state(), 288);
    let mut running = Logged::spawn(agent(&["run"]));
    running.until("backlog replayed");

    let prometheus_port = free_port();
    let prometheus_config = tree.dir.path().join("prometheus.yml");
    std::fs::write(
        &prometheus_config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tally\n    static_configs:\n      \
             - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .unwrap();
    let mut prometheus = Logged::spawn({
        let mut cmd = Command::new(PROMETHEUS);
        cmd.arg(format!("--config.file={}", prometheus_config.display()))
            .arg(format!("--storage.tsdb.path={}", tree.dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"));
        cmd
    });
    prometheus.until("Server is ready to receive web requests");

    let stored = shipped.len() as f64;
    assert_eq!(settles_at(prometheus_port, "tally_buckets_stored_total", stored), Some(stored));
    assert_eq!(settles_at(prometheus_port, "tally_buckets_received_total", stored), Some(stored));
    assert_eq!(settles_at(prometheus_port, "tally_agents_connected", 1.0), Some(1.0));
    let completed = "sum(tally_handshakes_total{result=\"completed\"})";
    assert_eq!(settles_at(prometheus_port, completed, 3.0), Some(3.0), "two enrollments' and the run's");
    let refused = "tally_connections_refused_total{code=\"EnrollmentRefused\"}";
    assert_eq!(settles_at(prometheus_port, refused, 1.0), Some(1.0), "the token used twice");
    let port: u16 = http.rsplit(':').next().unwrap().parse().unwrap();
    let health = http_get(port, "/healthz");
    assert!(health.contains("ok"), "{http}: {health:?}");
    let healthz = "tally_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"}";
    assert_eq!(settles_at(prometheus_port, healthz, 1.0), Some(1.0));
    let commits = "tally_group_commit_seconds_count > 0";
    assert!(query(prometheus_port, commits).is_some(), "the group commits' latency is recorded");

    // metrics_listen serves the OpenMetrics text without a token.
    let exposed = http_get(metrics_port, "/metrics");
    assert!(exposed.ends_with("# EOF\n") && exposed.contains("tally_buckets_stored_total 288"), "{exposed}");

    // The Grafana dashboard: every query is valid PromQL to this Prometheus, and every metric it
    // reads is one the collector exposes.
    let dashboard = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/tally.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    let families: Vec<&str> = exposed.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.len() >= 13, "{exprs:?}");
    for expr in exprs {
        query(prometheus_port, expr);
        for name in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("tally_")) {
            let family =
                ["_total", "_bucket", "_count", "_sum"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
            assert!(families.contains(&family), "{expr}: {name} is not exposed ({families:?})");
        }
    }
    prometheus.stop();
    running.stop();
    server.stop();
}
