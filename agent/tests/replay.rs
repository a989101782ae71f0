//! `tally-agent replay` over the adversarial traces in `tests/traces/`, through the real binary:
//! no sample above the true rate, each anomaly discarded for the right reason, and the
//! Contract's JSON document.

use std::process::Command;

use serde_json::Value;

const TRUE_RATE: u64 = 8_000_000;

fn replay(trace: &str, config: Option<&str>) -> (Value, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally-agent"));
    cmd.args(["replay", "--trace", &format!("{}/tests/traces/{trace}", env!("CARGO_MANIFEST_DIR"))]);
    if let Some(text) = config {
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(path);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{trace}: {}", String::from_utf8_lossy(&out.stderr));
    (serde_json::from_slice(&out.stdout).unwrap(), out)
}

/// Checks the document's shape and returns (valid sample values, discard reasons, bucket maxima).
fn read(doc: &Value) -> (Vec<u64>, Vec<String>, Vec<u64>) {
    let mut values = Vec::new();
    let mut reasons = Vec::new();
    for s in doc["samples"].as_array().unwrap() {
        let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["bps", "down_bps", "end", "reason", "start", "up_bps"]);
        match (&s["bps"], &s["reason"]) {
            (Value::Number(n), Value::Null) => {
                let bps = n.as_u64().unwrap();
                assert_eq!(bps, s["up_bps"].as_u64().unwrap().max(s["down_bps"].as_u64().unwrap()), "R1");
                values.push(bps);
            }
            (Value::Null, Value::String(r)) => {
                assert!(s["up_bps"].is_null() && s["down_bps"].is_null());
                reasons.push(r.clone());
            }
            other => panic!("a sample has both or neither of bps and reason: {other:?}"),
        }
    }
    let maxima = doc["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let samples = b["samples"].as_u64().unwrap();
            assert!((1..=60).contains(&samples));
            let start: chrono::DateTime<chrono::Utc> = b["start"].as_str().unwrap().parse().unwrap();
            assert_eq!(start.timestamp() % 300, 0, "buckets start on 5-minute boundaries (R2)");
            b["max_bps"].as_u64().unwrap()
        })
        .collect();
    (values, reasons, maxima)
}

fn assert_never_above(trace: &str, values: &[u64], maxima: &[u64], true_rate: u64) {
    for v in values.iter().chain(maxima) {
        assert!(*v <= true_rate, "{trace}: {v} bit/s is above the true rate {true_rate}");
    }
}

#[test]
fn every_adversarial_trace_stays_at_or_below_the_true_rate() {
    let cases: [(&str, Option<&str>, u64, &[&str]); 7] = [
        ("wrap32.csv", Some("counters_32bit = [\"eth1\"]"), TRUE_RATE, &[]),
        ("wrap32.csv", None, TRUE_RATE, &["counter_reset"]),
        ("reset_to_zero.csv", None, TRUE_RATE, &["counter_reset"]),
        ("reset_to_zero.csv", Some("counters_32bit = [\"eth1\"]"), TRUE_RATE, &["counter_reset"]),
        ("reappear.csv", None, TRUE_RATE + 400_000, &[]),
        ("above_link_speed.csv", None, TRUE_RATE, &["above_cap"]),
        ("stall.csv", None, TRUE_RATE, &["elapsed_too_long"]),
    ];
    for (trace, config, true_rate, expected) in cases {
        let (doc, _) = replay(trace, config);
        let (values, reasons, maxima) = read(&doc);
        assert_never_above(trace, &values, &maxima, true_rate);
        assert_eq!(reasons, expected, "{trace} with {config:?}");
        assert!(values.len() >= 20, "{trace}: the rest of the trace is measured");
    }
    let (doc, _) = replay("clock_steps.csv", None);
    let (values, reasons, maxima) = read(&doc);
    assert_never_above("clock_steps.csv", &values, &maxima, TRUE_RATE);
    assert_eq!(reasons, ["elapsed_too_short", "elapsed_too_long"]);
}

#[test]
fn a_32_bit_wrap_replays_as_the_true_rate_in_every_sample_and_bucket() {
    let (doc, _) = replay("wrap32.csv", Some("counters_32bit = [\"eth1\"]"));
    let (values, reasons, maxima) = read(&doc);
    assert_eq!(values, vec![TRUE_RATE; 24]);
    assert!(reasons.is_empty());
    assert_eq!(maxima, [TRUE_RATE]);
    assert_eq!(doc["buckets"][0]["samples"], 24);
    assert_eq!(doc["samples"][0]["start"], "2026-10-07T10:00:00Z");
    assert_eq!(doc["samples"][0]["end"], "2026-10-07T10:00:05Z");
    assert_eq!(doc["samples"][0]["up_bps"], 4_000_000);
}

#[test]
fn the_table_format_shows_samples_buckets_and_anomalies() {
    let out = Command::new(env!("CARGO_BIN_EXE_tally-agent"))
        .args(["replay", "--format", "table", "--trace"])
        .arg(format!("{}/tests/traces/above_link_speed.csv", env!("CARGO_MANIFEST_DIR")))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("above_cap"));
    assert!(text.contains("anomaly: eth1: rx_bytes went from 25000000 to 10030000000"), "{text}");
}

#[test]
fn a_bad_trace_is_refused_with_every_line_named() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("bad.csv");
    std::fs::write(&trace, "time,interface,rx_bytes,tx_bytes\n2026-10-07T10:00:00Z,eth1,1,2\nyesterday,eth1,1,2\n2026-10-07T10:00:05Z,eth/1,-4,2\n2026-10-07T10:00:05Z,eth1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tally-agent")).args(["replay", "--trace"]).arg(&trace).output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no partial document");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("4 error(s)"), "{err}");
    assert!(err.contains("line 3: time \"yesterday\" is not RFC 3339"), "{err}");
    assert!(err.contains("line 4: \"eth/1\" is not a valid interface name"), "{err}");
    assert!(err.contains("line 4: rx_bytes \"-4\" is not a non-negative integer"), "{err}");
    assert!(err.contains("line 5: expected time,interface,rx_bytes,tx_bytes[,speed_mbps], found 2 fields"), "{err}");
}

/// A trace saved by a spreadsheet (byte-order mark, CRLF, quoted fields) replays like the plain one.
#[test]
fn a_trace_with_a_bom_crlf_and_quotes_replays_as_the_plain_one() {
    let dir = tempfile::tempdir().unwrap();
    let plain =
        "time,interface,rx_bytes,tx_bytes\n2026-10-07T10:00:00Z,eth1,0,0\n2026-10-07T10:00:05Z,eth1,5000000,0\n";
    let exported = "\u{feff}time,interface,rx_bytes,tx_bytes\r\n\"2026-10-07T10:00:00Z\",\"eth1\",0,0\r\n2026-10-07T10:00:05Z,eth1,\"5000000\",0\r\n";
    let run = |name: &str, text: &str| {
        let trace = dir.path().join(name);
        std::fs::write(&trace, text).unwrap();
        let out =
            Command::new(env!("CARGO_BIN_EXE_tally-agent")).args(["replay", "--trace"]).arg(&trace).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let (plain, exported) = (run("plain.csv", plain), run("exported.csv", exported));
    assert_eq!(plain, exported);
    assert_eq!(plain["samples"][0]["bps"], 8_000_000, "{plain}");
}

/// R4: intervals in which no interface was measured are no samples, and a bucket made only of
/// them is not emitted (it used to be a bucket of 0 bit/s with 60 "valid" samples).
#[test]
fn a_window_without_a_measured_interface_emits_no_bucket() {
    let (doc, _) = replay("no_interface_measured.csv", None);
    let (values, reasons, _) = read(&doc);
    assert_eq!(reasons, vec!["no_interface_measured"; 60]);
    assert_eq!(values, vec![TRUE_RATE; 60]);
    let buckets = doc["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 1, "{buckets:?}");
    let only = &buckets[0];
    assert_eq!(
        (only["start"].as_str(), only["max_bps"].as_u64(), only["samples"].as_u64()),
        (Some("2026-10-07T10:05:00Z"), Some(TRUE_RATE), Some(60))
    );
}
