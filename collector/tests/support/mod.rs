//! Shared by the collector's tests: the real binary on a data directory of its own.
#![allow(dead_code, unreachable_pub)]

pub mod http;
#[path = "../../../testing/postgres.rs"]
pub mod pg_cluster;
pub mod quic;
pub mod sinks;
#[path = "../../../testing/skip.rs"]
pub mod skip;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Output, Stdio};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

/// The instant a test starts at: `TALLY_TEST_NOW` (RFC 3339), so that CI can run the suite on
/// the last day of a month or at 23:59:59 UTC; the real time when unset. Each test's collector
/// processes run on a clock shifted to start there (`tally_collector::clock`).
pub const TEST_NOW_VAR: &str = "TALLY_TEST_NOW";

/// How far a test started now must shift the collector's clock to start at `TALLY_TEST_NOW`.
pub fn test_clock_offset() -> TimeDelta {
    match std::env::var(TEST_NOW_VAR) {
        Ok(at) => {
            let at: DateTime<Utc> = at.parse().unwrap_or_else(|e| panic!("{TEST_NOW_VAR}={at:?}: {e}"));
            at - Utc::now()
        }
        Err(_) => TimeDelta::zero(),
    }
}

/// The clock of tests whose data is October 2026 (the golden month): October's window and its
/// grace have passed (R9), November is open, and pools of 2026 are in force for R17.
pub const MID_NOVEMBER_2026: &str = "2026-11-16T12:00:00Z";

/// The store the tests' collectors use: `TALLY_TEST_STORE=postgres` runs a test binary again
/// on PostgreSQL (`make test` does, for the report, API, orders, notification and enforcement
/// tests), each collector on a database of its own on the binary's throwaway cluster; else the
/// embedded SQLite file.
pub const TEST_STORE_VAR: &str = "TALLY_TEST_STORE";

/// The PostgreSQL database of a new collector, when the tests run on PostgreSQL.
fn test_database() -> Option<String> {
    match std::env::var(TEST_STORE_VAR).as_deref() {
        Ok("postgres") => {
            let cluster = pg_cluster::cluster().unwrap_or_else(|why| panic!("{TEST_STORE_VAR}=postgres: {why}"));
            Some(cluster.database())
        }
        Ok("sqlite") | Err(_) => None,
        Ok(other) => panic!("{TEST_STORE_VAR}={other:?}: expected postgres or sqlite"),
    }
}

/// A collector data directory and configuration, driven through the real binary.
pub struct Collector {
    pub dir: tempfile::TempDir,
    /// The shift of every process's clock (see [`TEST_NOW_VAR`]).
    pub offset: TimeDelta,
    /// Its PostgreSQL database; `None`: the SQLite file in its data directory.
    pub database_url: Option<String>,
    /// Its CA's directory, when it is not in the data directory (on PostgreSQL, shared, R30).
    ca_dir: Option<PathBuf>,
}

impl Collector {
    pub fn new() -> Self {
        Collector::with_config("")
    }

    /// With `extra` configuration lines.
    pub fn with_config(extra: &str) -> Self {
        Collector::on(test_database(), extra)
    }

    /// On the store at `database_url` (PostgreSQL), or SQLite, with `extra` configuration lines.
    pub fn on(database_url: Option<String>, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = database_url.as_ref().map(|_| dir.path().join("ca"));
        let c = Collector { dir, offset: test_clock_offset(), database_url, ca_dir };
        c.configure(extra);
        if c.database_url.is_some() {
            // Collectors on PostgreSQL share a CA made once (R30).
            c.ok(&["ca", "init"]);
        }
        c
    }

    /// Another collector on this one's database, with its CA and clock (R30), and `extra`
    /// configuration lines.
    pub fn beside(&self, extra: &str) -> Self {
        let c = Collector {
            dir: tempfile::tempdir().unwrap(),
            offset: self.offset,
            database_url: self.database_url.clone(),
            ca_dir: self.ca_dir.clone(),
        };
        c.configure(extra);
        c
    }

    /// Rewrites the configuration: its store, and `extra` lines.
    pub fn configure(&self, extra: &str) {
        let store = match (&self.database_url, &self.ca_dir) {
            (Some(url), Some(ca_dir)) => format!("database_url = {url:?}\nca_dir = {ca_dir:?}\n"),
            _ => String::new(),
        };
        let config = format!("data_dir = {:?}\n{store}{extra}\n", self.dir.path().join("data"));
        std::fs::write(self.dir.path().join("c.toml"), config).unwrap();
    }

    /// This collector's processes start their clock at `instant` (RFC 3339), whatever the date.
    pub fn at(mut self, instant: &str) -> Self {
        self.offset = instant.parse::<DateTime<Utc>>().unwrap() - Utc::now();
        self
    }

    /// The time now on this collector's clock.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }

    /// Today, UTC, on this collector's clock.
    pub fn today(&self) -> NaiveDate {
        self.now().date_naive()
    }

    /// The real binary on this collector's clock.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tally-collector"));
        command.env(tally_collector::clock::OFFSET_VAR, self.offset.num_milliseconds().to_string());
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().arg("--config").arg(self.dir.path().join("c.toml")).args(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }

    /// `serve` on this configuration, under `timeout` so a hung process ends the test.
    pub fn serve(&self) -> Serving {
        let mut child = Command::new("timeout")
            .args(["120", env!("CARGO_BIN_EXE_tally-collector"), "--config"])
            .arg(self.dir.path().join("c.toml"))
            .arg("serve")
            .env(tally_collector::clock::OFFSET_VAR, self.offset.num_milliseconds().to_string())
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Some(BufReader::new(child.stderr.take().unwrap()));
        Serving { child, log }
    }

    /// Every byte the store holds, to search: SQLite's files, or a dump of the PostgreSQL
    /// database.
    pub fn store_bytes(&self) -> Vec<u8> {
        match &self.database_url {
            Some(url) => pg_cluster::cluster().unwrap().dump(url),
            None => ["tally.db", "tally.db-wal"]
                .iter()
                .flat_map(|file| std::fs::read(self.data_file(file)).unwrap_or_default())
                .collect(),
        }
    }

    /// A file of the collector's CA: in its data directory, or the one shared by collectors on
    /// PostgreSQL (R30).
    pub fn ca_file(&self, name: &str) -> PathBuf {
        match &self.ca_dir {
            Some(dir) => dir.join(name),
            None => self.data_file("ca").join(name),
        }
    }

    /// A file of the embedded store's data directory.
    pub fn data_file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join("data").join(name)
    }

    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

/// A collector on free ports with account `acme`, enrolled in the EoP (contact Ann), and its
/// site `hq` in the US.
pub fn acme_with_hq() -> Collector {
    let c = Collector::with_config("http_listen = \"127.0.0.1:0\"\nquic_listen = \"127.0.0.1:0\"");
    c.ok(&args("account add --id acme --name Acme --eop-contact-name Ann --eop-contact-email ann@acme.example"));
    c.ok(&args("site add --account acme --id hq --name HQ --country US --type socket"));
    c
}

/// A command line of words without spaces.
pub fn args(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// A running `serve`, its log read line by line. Dropping it SIGKILLs the process group that
/// `timeout` leads, so the collector under it dies too (a crash, as far as the store knows).
pub struct Serving {
    child: Child,
    log: Option<BufReader<ChildStderr>>,
}

impl Serving {
    /// Reads the log until `count` lines contained `needle`; returns the last of them.
    pub fn until(&mut self, needle: &str, count: usize) -> String {
        let log = self.log.as_mut().expect("the log is still read here");
        let (mut seen, mut line, mut all) = (0, String::new(), String::new());
        while seen < count {
            line.clear();
            assert!(log.read_line(&mut line).unwrap() > 0, "serve exited before {count} × {needle:?}:\n{all}");
            all += &line;
            if line.contains(needle) {
                seen += 1;
            }
        }
        line
    }

    /// Keeps reading the log in the background, so the collector never blocks on a full pipe.
    pub fn drain_log(&mut self) {
        if let Some(mut log) = self.log.take() {
            std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let group = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = self.child.wait();
    }
}

impl Serving {
    /// SIGTERM to the collector, and waits for it to end (`timeout` exits with its status).
    pub fn terminate(mut self) {
        let collector = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(collector, rustix::process::Signal::TERM).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve did not end cleanly on SIGTERM: {status}");
    }

    /// The collector's process id (the child of `timeout`).
    pub fn pid(&self) -> u32 {
        let leader = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{leader}/task/{leader}/children")).unwrap();
        children.split_whitespace().next().and_then(|p| p.parse().ok()).expect("timeout runs the collector")
    }

    /// The collector's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

/// `account` gets a site and a 100 Mbps Group 1 pool for 2026, and the site runs at `bps` all of
/// Oct 7.
pub fn licensed_100_mbps_running_at(c: &Collector, account: &str, site: &str, bps: u64) {
    c.ok(&args(&format!("site add --account {account} --id {site} --name {site} --country US --type socket")));
    c.ok(&args(&format!(
        "license add --account {account} --kind bandwidth_pool --region group1 --quantity 100 --from 2026-01-01 --to 2026-12-31"
    )));
    let mut csv = String::from("site,bucket_start,max_bps\n");
    for slot in 0..288 {
        csv += &format!("{site},2026-10-07T{:02}:{:02}:00Z,{bps}\n", slot / 12, slot % 12 * 5);
    }
    let file = c.file(&format!("{site}.csv"), &csv);
    c.ok(&["import-buckets", "--csv", &file]);
}
