//! The real collector binary for the agent's end-to-end tests: its configuration, its admin
//! commands, `serve` with a captured log, and the buckets it stored. Also an agent's backlog
//! seeded through the agent's own store.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};

use rustix::process::{Pid, Signal, kill_process};
use tally_common::bucket::Bucket;
use tally_common::time::BucketStart;

/// The collector binary, built by the same `cargo test --workspace` next to the agent's.
pub fn binary() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_BIN_EXE_tally-agent")).with_file_name("tally-collector");
    path.exists().then_some(path)
}

/// A child process whose log (stderr) is read line by line.
pub struct Logged {
    child: Child,
    log: BufReader<ChildStderr>,
    pub seen: String,
}

impl Logged {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.env_remove("RUST_LOG").stderr(Stdio::piped()).spawn().unwrap();
        let log = BufReader::new(child.stderr.take().unwrap());
        Logged { child, log, seen: String::new() }
    }

    /// Reads the log up to the next line containing `needle`, and returns that line.
    pub fn until(&mut self, needle: &str) -> String {
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

    /// SIGTERM; the process must exit successfully. Returns the whole log.
    pub fn stop(mut self) -> String {
        kill_process(Pid::from_child(&self.child), Signal::TERM).unwrap();
        let rest = self.rest();
        assert!(self.child.wait().unwrap().success(), "{}{rest}", self.seen);
        self.seen + &rest
    }

    /// SIGKILL to the process group (`timeout` leads one), so the process under `timeout`
    /// dies too. Returns the whole log.
    pub fn kill(mut self) -> String {
        rustix::process::kill_process_group(Pid::from_child(&self.child), Signal::KILL).unwrap();
        let rest = self.rest();
        self.child.wait().unwrap();
        self.seen + &rest
    }

    /// Waits for the process to end by itself. Returns the whole log.
    pub fn finish(mut self) -> String {
        let rest = self.rest();
        self.child.wait().unwrap();
        self.seen + &rest
    }

    fn rest(&mut self) -> String {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.log, &mut rest).unwrap();
        rest
    }
}

pub fn run(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A collector with its own data directory, account `acme` and site `hq`.
pub struct TestCollector {
    bin: PathBuf,
    config: PathBuf,
    /// `HOST:PORT` of its QUIC endpoint.
    pub address: String,
    /// Runs `serve` inside this network namespace.
    pub namespace: Option<String>,
}

impl TestCollector {
    /// Listening on `ip` (one of its certificate's names); `log` is its log filter. Its age bound
    /// is ten years: the agents of these tests run on accelerated clocks from a fixed past date
    /// (so that no test depends on today's), and an accelerated clock started now would run into
    /// the future. [`TestCollector::with_config`] keeps the default bound.
    pub fn new(bin: PathBuf, dir: &Path, ip: &str, log: &str) -> Self {
        TestCollector::with_config(bin, dir, ip, log, "max_bucket_age_days = 3650")
    }

    /// [`TestCollector::new`] with `extra` configuration lines instead of the age bound.
    pub fn with_config(bin: PathBuf, dir: &Path, ip: &str, log: &str, extra: &str) -> Self {
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.join("collector.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\nquic_listen = \"{ip}:{port}\"\nhttp_listen = \"127.0.0.1:0\"\n\
                 server_names = [\"{ip}\"]\nlog = \"{log}\"\n{extra}\n",
                dir.join("collector")
            ),
        )
        .unwrap();
        let collector = TestCollector { bin, config, address: format!("{ip}:{port}"), namespace: None };
        collector.admin(&["account", "add", "--id", "acme", "--name", "Acme"]);
        collector.admin(&[
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
        collector
    }

    pub fn config(&self) -> &str {
        self.config.to_str().unwrap()
    }

    pub fn admin(&self, args: &[&str]) -> String {
        run(&self.bin, &[&["--config", self.config()], args].concat())
    }

    /// [`TestCollector::admin`] with the collector's clock at `at` (`TALLY_CLOCK_OFFSET_MS`).
    pub fn admin_at(&self, at: chrono::DateTime<chrono::Utc>, args: &[&str]) -> String {
        let offset = (at - chrono::Utc::now()).num_milliseconds();
        let out = Command::new(&self.bin)
            .env("TALLY_CLOCK_OFFSET_MS", offset.to_string())
            .args([&["--config", self.config()], args].concat())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn enroll_token(&self) -> String {
        self.admin(&["site", "enroll-token", "--site", "hq"]).trim().to_owned()
    }

    /// Starts `serve` (under `timeout`, which forwards SIGTERM, so a hung process ends the test
    /// instead of CI) and waits until it listens.
    pub fn serve(&self) -> Logged {
        let mut cmd = Command::new("timeout");
        if let Some(ns) = &self.namespace {
            cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, "timeout"]);
        }
        cmd.arg("300").arg(&self.bin).args(["--config", self.config(), "serve"]);
        let mut logged = Logged::spawn(cmd);
        logged.until("ingest listening");
        logged
    }

    /// Site `hq`'s stored buckets on the days of `starts`: start (Unix seconds) → max bit/s.
    pub fn buckets(&self, starts: impl IntoIterator<Item = i64>) -> BTreeMap<i64, u64> {
        let days: std::collections::BTreeSet<String> =
            starts.into_iter().map(|s| BucketStart::from_unix(s).unwrap().time().format("%F").to_string()).collect();
        let mut stored = BTreeMap::new();
        for day in days {
            let json = self.admin(&["site", "buckets", "--site", "hq", "--date", &day, "--format", "json"]);
            let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
            for row in rows.as_array().unwrap() {
                let start = chrono::DateTime::parse_from_rfc3339(row["start"].as_str().unwrap()).unwrap().timestamp();
                stored.insert(start, row["max_bps"].as_u64().unwrap());
            }
        }
        stored
    }
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
