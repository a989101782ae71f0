//! The collector for the agent's end-to-end tests: the test kit's, with account `acme` and site
//! `hq`, and the buckets it stored. Also an agent's backlog seeded through the agent's own store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tally_common::bucket::Bucket;
use tally_common::time::BucketStart;
pub use tally_testkit::{Collector, Logged};

/// The collector binary, built by the same `cargo test --workspace` next to the agent's.
pub fn binary() -> Option<PathBuf> {
    tally_testkit::collector::binary().ok()
}

pub fn run(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A collector with account `acme` and site `hq`, which agents reach at `ip` (one of its
/// certificate's names); `log` is its log filter. Its age bound is ten years: the agents of these
/// tests run on accelerated clocks from a fixed past date (so that no test depends on today's),
/// and an accelerated clock started now would run into the future. [`acme_hq_with`] keeps the
/// default bound.
pub fn acme_hq(ip: &str, log: &str) -> Collector {
    acme_hq_with(ip, log, "max_bucket_age_days = 3650")
}

/// [`acme_hq`] with `extra` configuration lines instead of the age bound.
pub fn acme_hq_with(ip: &str, log: &str, extra: &str) -> Collector {
    let collector = Collector::new().quic_on(ip, &format!("log = \"{log}\"\n{extra}"));
    add_acme_hq(&collector);
    collector
}

/// Account `acme` and its site `hq`, on `collector`.
pub fn add_acme_hq(collector: &Collector) {
    collector.ok(&["account", "add", "--id", "acme", "--name", "Acme"]);
    collector.ok(&[
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
    ]);
}

/// A one-time enrollment token for site `hq`.
pub fn enroll_token(collector: &Collector) -> String {
    collector.ok(&["site", "enroll-token", "--site", "hq"]).trim().to_owned()
}

/// Site `hq`'s stored buckets on the days of `starts`: start (Unix seconds) → max bit/s.
pub fn buckets(collector: &Collector, starts: impl IntoIterator<Item = i64>) -> BTreeMap<i64, u64> {
    let days: std::collections::BTreeSet<String> =
        starts.into_iter().map(|s| BucketStart::from_unix(s).unwrap().time().format("%F").to_string()).collect();
    let mut stored = BTreeMap::new();
    for day in days {
        let json = collector.ok(&["site", "buckets", "--site", "hq", "--date", &day, "--format", "json"]);
        let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
        for row in rows.as_array().unwrap() {
            let start = chrono::DateTime::parse_from_rfc3339(row["start"].as_str().unwrap()).unwrap().timestamp();
            stored.insert(start, row["max_bps"].as_u64().unwrap());
        }
    }
    stored
}

/// `count` contiguous closed buckets ending an hour ago, each with its own value, added to the
/// agent's store in `state_dir` as if the agent had measured them while the collector was away.
pub fn seed_backlog(state_dir: &Path, count: usize) -> BTreeMap<i64, u64> {
    let now = chrono::Utc::now().timestamp();
    let last = (now - 3600) / 300 * 300;
    let buckets: Vec<Bucket> = (0..count as i64)
        .map(|i| Bucket {
            start: BucketStart::from_unix(last - 300 * (count as i64 - 1 - i)).unwrap(),
            max_bps: 1_000_000 + 7_919 * i as u64,
            samples: 60,
        })
        .collect();
    let mut opened = tally_agent::store::Store::open(state_dir, 35 * 288).unwrap();
    assert!(opened.store.add_closed(&buckets).unwrap().is_empty());
    buckets.iter().map(|b| (b.start.unix(), b.max_bps)).collect()
}

/// The `(first, last, buckets)` of each batch the collector committed, from its debug log.
pub fn committed_batches(log: &str) -> Vec<(i64, i64, usize)> {
    log.lines()
        .filter(|l| l.contains("batch committed"))
        .map(|l| {
            let get = |key| -> i64 { super::field(l, key).unwrap().parse().unwrap() };
            (get("first"), get("last"), get("buckets") as usize)
        })
        .collect()
}

/// Panics, with a short account of the differences, unless `stored` is exactly `expected`.
pub fn assert_same_buckets(stored: &BTreeMap<i64, u64>, expected: &BTreeMap<i64, u64>) {
    let missing: Vec<_> = expected.keys().filter(|k| !stored.contains_key(k)).collect();
    let extra: Vec<_> = stored.keys().filter(|k| !expected.contains_key(k)).collect();
    let changed: Vec<_> = expected
        .iter()
        .filter(|(k, v)| stored.get(k).is_some_and(|s| s != *v))
        .map(|(k, v)| (k, v, stored[k]))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && changed.is_empty(),
        "{} missing (first {:?}), {} not expected (first {:?}), {} with another value (first {:?})",
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first(),
        changed.len(),
        changed.first()
    );
}
