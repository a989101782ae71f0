//! The real collector for the tests of both crates: a data directory and a configuration of its
//! own, its admin commands, and `serve`, ready when its HTTP listener answers `/healthz` (never
//! when a line of log text appears).
//!
//! Every collector gets an HTTP and a QUIC port picked here, so a test knows its addresses before
//! it starts (a test that configures `http_listen` or `quic_listen` itself owns them). Its clock is
//! shifted to `TALLY_TEST_NOW` when that is set, and its store is PostgreSQL when
//! `TALLY_TEST_STORE=postgres`: `make test` reruns the binaries that depend on either.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

use crate::postgres;
use crate::process::Logged;

/// The instant a test starts at: `TALLY_TEST_NOW` (RFC 3339), so that CI can run the suite on
/// the last day of a month or at 23:59:59 UTC; the real time when unset. Each test's collector
/// processes run on a clock shifted to start there.
pub const TEST_NOW_VAR: &str = "TALLY_TEST_NOW";

/// The store the tests' collectors use: `TALLY_TEST_STORE=postgres` runs a test binary again on
/// PostgreSQL, each collector on a database of its own on the binary's throwaway cluster; else
/// the embedded SQLite file.
pub const TEST_STORE_VAR: &str = "TALLY_TEST_STORE";

/// Where the tests whose collectors follow `TALLY_TEST_NOW` are recorded, one `BINARY<TAB>TEST`
/// line each: `make test` runs just those again at the instants where dates go wrong. A test
/// whose collectors are all set to a fixed instant ([`Collector::at`]) is not listed.
pub const CLOCK_USERS_VAR: &str = "TALLY_CLOCK_USERS";

/// The collector's clock offset in milliseconds (`tally_collector::clock::OFFSET_VAR`).
pub const CLOCK_OFFSET_VAR: &str = "TALLY_CLOCK_OFFSET_MS";

/// How long `serve` may take to answer its first `/healthz`.
const READY_WITHIN: Duration = Duration::from_secs(60);

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

/// The PostgreSQL database of a new collector, when the tests run on PostgreSQL.
fn test_database() -> Option<String> {
    match std::env::var(TEST_STORE_VAR).as_deref() {
        Ok("postgres") => {
            let cluster = postgres::cluster().unwrap_or_else(|why| panic!("{TEST_STORE_VAR}=postgres: {why}"));
            Some(cluster.database())
        }
        Ok("sqlite") | Err(_) => None,
        Ok(other) => panic!("{TEST_STORE_VAR}={other:?}: expected postgres or sqlite"),
    }
}

/// The `tally-collector` binary cargo built beside the running test or benchmark (a test binary
/// lives in `deps/` under the profile's directory, the programs in that directory).
pub fn binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile = exe.parent().and_then(Path::parent).ok_or("the test binary has no profile directory")?;
    let path = profile.join("tally-collector");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} is not built: run the tests with `cargo test --workspace`", path.display()))
    }
}

/// A port nobody listens on now, on 127.0.0.1, for TCP and for UDP.
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a TCP port");
        let port = tcp.local_addr().expect("its address").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A collector data directory and configuration, driven through the real binary.
#[derive(Debug)]
pub struct Collector {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    /// The shift of every process's clock (see [`TEST_NOW_VAR`]).
    pub offset: TimeDelta,
    /// Its PostgreSQL database; `None`: the SQLite file in its data directory.
    pub database_url: Option<String>,
    /// Its CA's directory, when it is not in the data directory (on PostgreSQL, shared, R30).
    ca_dir: Option<PathBuf>,
    /// Where `serve` answers HTTP (API, console, `/healthz`), unless the configuration says.
    pub http: SocketAddr,
    /// Where `serve` listens for agents (QUIC), unless the configuration says.
    pub quic: SocketAddr,
    /// `serve` and every command run inside this network namespace.
    pub namespace: Option<String>,
    /// Its clock follows `TALLY_TEST_NOW` (not set to an instant by [`Collector::at`]).
    follows_test_now: bool,
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
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca_dir = database_url.as_ref().map(|_| dir.path().join("ca"));
        let c = Collector::in_dir(dir, database_url, ca_dir, test_clock_offset(), extra);
        if c.database_url.is_some() {
            // Collectors on PostgreSQL share a CA made once (R30).
            c.ok(&["ca", "init"]);
        }
        c
    }

    /// Another collector on this one's database, with its CA and clock (R30), and `extra`
    /// configuration lines.
    pub fn beside(&self, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut c = Collector::in_dir(dir, self.database_url.clone(), self.ca_dir.clone(), self.offset, extra);
        c.follows_test_now = self.follows_test_now;
        c
    }

    fn in_dir(
        dir: tempfile::TempDir,
        database_url: Option<String>,
        ca_dir: Option<PathBuf>,
        offset: TimeDelta,
        extra: &str,
    ) -> Self {
        let bin = binary().unwrap_or_else(|why| panic!("{why}"));
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let c = Collector {
            dir,
            bin,
            offset,
            database_url,
            ca_dir,
            http: loopback(free_port()),
            quic: loopback(free_port()),
            namespace: None,
            follows_test_now: true,
        };
        c.configure(extra);
        c
    }

    /// Rewrites the configuration: its store, its addresses and `extra` lines (which may name
    /// `http_listen` or `quic_listen` themselves).
    pub fn configure(&self, extra: &str) {
        let mut config = format!("data_dir = {:?}\n", self.dir.path().join("data"));
        if let (Some(url), Some(ca_dir)) = (&self.database_url, &self.ca_dir) {
            config += &format!("database_url = {url:?}\nca_dir = {ca_dir:?}\n");
        }
        let sets = |key: &str| extra.lines().any(|line| line.trim_start().starts_with(key));
        if !sets("http_listen") {
            config += &format!("http_listen = \"{}\"\n", self.http);
        }
        if !sets("quic_listen") {
            config += &format!("quic_listen = \"{}\"\n", self.quic);
        }
        if !self.quic.ip().is_loopback() && !sets("server_names") {
            config += &format!("server_names = [\"{}\"]\n", self.quic.ip());
        }
        std::fs::write(self.config(), format!("{config}{extra}\n")).expect("writing the configuration");
    }

    /// Its configuration file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("c.toml")
    }

    /// Agents reach it at `ip` (one of its certificate's names), on its QUIC port.
    pub fn quic_on(mut self, ip: &str, extra: &str) -> Self {
        self.quic.set_ip(ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}")));
        self.configure(extra);
        self
    }

    /// This collector's processes start their clock at `instant` (RFC 3339), whatever the date.
    pub fn at(mut self, instant: &str) -> Self {
        self.offset = instant.parse::<DateTime<Utc>>().expect("an RFC 3339 instant") - Utc::now();
        self.follows_test_now = false;
        self
    }

    /// The offset a collector served in the test's own process runs at; the test is listed as
    /// following the test clock when this collector does ([`CLOCK_USERS_VAR`]).
    pub fn in_process_offset(&self) -> TimeDelta {
        if self.follows_test_now {
            record_clock_use();
        }
        self.offset
    }

    /// The time now on this collector's clock.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }

    /// Today, UTC, on this collector's clock.
    pub fn today(&self) -> NaiveDate {
        self.now().date_naive()
    }

    /// The real binary on this collector's clock (in its namespace).
    pub fn command(&self) -> Command {
        self.command_at(self.offset)
    }

    fn command_at(&self, offset: TimeDelta) -> Command {
        if self.follows_test_now && offset == self.offset {
            record_clock_use();
        }
        let mut command = self.in_namespace(&self.bin);
        command.env(CLOCK_OFFSET_VAR, offset.num_milliseconds().to_string());
        command
    }

    /// `program`, inside the collector's namespace when it has one.
    fn in_namespace(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.namespace {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().arg("--config").arg(self.config()).args(args).output().expect("running tally-collector")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        checked(args, self.run(args))
    }

    /// [`Collector::ok`] with the clock at `at`.
    pub fn ok_at(&self, at: DateTime<Utc>, args: &[&str]) -> String {
        let output = self.command_at(at - Utc::now()).arg("--config").arg(self.config()).args(args).output();
        checked(args, output.expect("running tally-collector"))
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8(out.stderr).expect("UTF-8")
    }

    /// `serve` on this configuration (under `timeout`, so a hung process ends the test), once
    /// its HTTP listener answers `/healthz`.
    pub fn serve(&self) -> Logged {
        self.serve_under(&[])
    }

    /// [`Collector::serve`], the collector run by `wrapper` (a program and its arguments, such
    /// as `prlimit --nofile=256:256`).
    pub fn serve_under(&self, wrapper: &[&str]) -> Logged {
        if self.follows_test_now {
            record_clock_use();
        }
        let mut command = self.in_namespace("timeout");
        command.arg("120").args(wrapper).arg(&self.bin).arg("--config").arg(self.config()).arg("serve");
        command.env(CLOCK_OFFSET_VAR, self.offset.num_milliseconds().to_string());
        let mut serving = Logged::spawn(command);
        self.wait_until_ready(&mut serving);
        serving
    }

    /// Polls the HTTP listener until it answers `/healthz` ([`wait_for_healthz`]); over TLS or
    /// inside a namespace, until the collector's own `healthcheck` passes.
    fn wait_until_ready(&self, serving: &mut Logged) {
        let tls = std::fs::read_to_string(self.config()).is_ok_and(|text| text.contains("http_tls_cert"));
        match (&self.namespace, tls) {
            (None, false) => wait_for_healthz(self.http_address(), serving),
            // Its own probe, over TLS and pinned to the configured certificate: a collector that
            // served this port before (plain, or another certificate) is never taken for it.
            (_, true) | (Some(_), _) => wait_until(serving, || self.run(&["healthcheck"]).status.success()),
        }
    }

    /// The HTTP address `serve` answers on: the configuration's `http_listen`, with a wildcard
    /// address read as loopback.
    pub fn http_address(&self) -> SocketAddr {
        let text = std::fs::read_to_string(self.config()).expect("the configuration");
        let configured = text.lines().rev().find_map(|line| {
            let value = line.trim().strip_prefix("http_listen")?.trim().strip_prefix('=')?;
            value.trim().trim_matches('"').parse::<SocketAddr>().ok()
        });
        let mut address = configured.unwrap_or(self.http);
        if address.ip().is_unspecified() {
            address.set_ip([127, 0, 0, 1].into());
        }
        address
    }

    /// Every byte the store holds, to search: SQLite's files, or a dump of the PostgreSQL
    /// database.
    pub fn store_bytes(&self) -> Vec<u8> {
        match &self.database_url {
            Some(url) => postgres::cluster().expect("the cluster this collector uses").dump(url),
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
    pub fn data_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("data").join(name)
    }

    /// Writes `text` to the file `name` in the collector's directory; returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("writing a file");
        path.display().to_string()
    }
}

impl Default for Collector {
    fn default() -> Self {
        Collector::new()
    }
}

/// Lists the running test in [`CLOCK_USERS_VAR`]'s file, when it is set.
fn record_clock_use() {
    let Some(path) = std::env::var_os(CLOCK_USERS_VAR) else { return };
    // libtest runs each test on a thread named after it (the main thread only with one thread).
    let thread = std::thread::current();
    let Some(test) = thread.name().filter(|name| *name != "main") else { return };
    let exe = std::env::current_exe().expect("the test binary's path");
    let line = format!("{}\t{test}\n", exe.display());
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path);
    file.and_then(|mut f| f.write_all(line.as_bytes()))
        .unwrap_or_else(|e| panic!("{CLOCK_USERS_VAR}={}: {e}", path.display()));
}

fn checked(args: &[&str], out: Output) -> String {
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Waits until the `serve` process `serving` answers `GET /healthz` at `address` (any status: a
/// collector short of disk answers 503 and still serves); panics with its log if it exits first.
pub fn wait_for_healthz(address: SocketAddr, serving: &mut Logged) {
    wait_until(serving, || crate::http::try_get(address, "/healthz").is_some());
}

/// Polls `ready` every 20 ms for at most [`READY_WITHIN`] while `serving` runs.
fn wait_until(serving: &mut Logged, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + READY_WITHIN;
    while !ready() {
        if let Some(status) = serving.exited() {
            panic!("serve exited ({status}) before it was ready:\n{}", serving.log_so_far());
        }
        assert!(Instant::now() < deadline, "serve was not ready within {READY_WITHIN:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
