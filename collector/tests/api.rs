//! The HTTP API of the real `serve` process: the usage report behind the operator's bearer
//! token, and problem+json for every refusal.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use support::Collector;

const TOKEN: &str = "op-0123456789abcdef0123456789abcdef";

struct Serving {
    child: Child,
    http: String,
}

impl Drop for Serving {
    /// SIGTERM to the process group that `timeout` leads, so the collector under it stops too.
    fn drop(&mut self) {
        let group = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
        let _ = self.child.wait();
    }
}

fn serve(c: &Collector) -> Serving {
    let mut child = Command::new("timeout")
        .args(["120", env!("CARGO_BIN_EXE_tally-collector"), "--config"])
        .arg(c.dir.path().join("c.toml"))
        .arg("serve")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("HTTP API serving") {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "serve exited");
    }
    let http = line.split("http=").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
    Serving { child, http }
}

/// A GET over HTTP/1.1: status, content type, body.
fn get(http: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut stream = TcpStream::connect(http).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(stream, "GET {path} HTTP/1.1\r\nHost: tally\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

#[test]
fn the_usage_report_is_served_to_the_operator_and_refusals_are_problems() {
    let c = Collector::with_config(&format!(
        "http_listen = \"127.0.0.1:0\"\nquic_listen = \"127.0.0.1:0\"\noperator_token = \"{TOKEN}\""
    ));
    c.ok(&["account", "add", "--id", "acme", "--name", "Acme"]);
    c.ok(&["site", "add", "--account", "acme", "--id", "hq", "--name", "HQ", "--country", "US", "--type", "socket"]);
    let csv = c.file("b.csv", "site,bucket_start,max_bps\nhq,2026-10-07T10:00:00Z,5000000\n");
    c.ok(&["import-buckets", "--csv", &csv]);
    let serving = serve(&c);
    let http = serving.http.as_str();

    let (status, _, body) = get(http, "/v1/accounts/acme/usage?month=2026-10", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["account"], "acme");
    assert_eq!(report["month"], "2026-10");
    let hq = &report["sites"][0];
    assert_eq!(hq["site"], "hq");
    let oct7 = hq["days"].as_array().unwrap().iter().find(|d| d["date"] == "2026-10-07").unwrap();
    assert_eq!(oct7["buckets_present"], 1);
    assert_eq!(oct7["p95_bps"], 0, "one bucket of 288 is far inside the discarded top 14 (R5)");

    for (path, token, want, field) in [
        ("/v1/accounts/acme/usage?month=2026-10", None, 401, None),
        ("/v1/accounts/acme/usage?month=2026-10", Some("op-wrong-wrong-wrong-wrong-wrong-wrong"), 401, None),
        ("/v1/accounts/acme/usage", Some(TOKEN), 400, Some("month")),
        ("/v1/accounts/acme/usage?month=2026-13", Some(TOKEN), 400, Some("month")),
        ("/v1/accounts/nobody/usage?month=2026-10", Some(TOKEN), 404, None),
    ] {
        let (status, content_type, body) = get(http, path, token);
        assert_eq!(status, want, "{path}: {body}");
        assert_eq!(content_type, "application/problem+json", "{path}");
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["status"], want);
        assert!(!problem["detail"].as_str().unwrap().is_empty());
        if let Some(field) = field {
            assert_eq!(problem["errors"][0]["field"], field, "{body}");
        }
    }
}
