//! Shared by the agent's tests: a fake sysfs/procfs tree, a paused-time clock, captured logs.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod collector;
pub mod lan;
pub mod namespaces;
pub use tally_testkit::postgres as pg_cluster;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tally_agent::clock::Clock;
use tally_agent::config::{Config, parse};
use tally_agent::measure::{Meter, NoNotify};
use tally_agent::netif::{remove_fake_interface, write_fake_counters, write_fake_interface};
use tally_agent::status::Status;
use tally_agent::store::Store;
use tally_common::counters::Counters;

/// A directory with `sys/` (as /sys/class/net) and `proc/` trees, and a state directory.
pub struct FakeTree {
    pub dir: tempfile::TempDir,
}

impl FakeTree {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let random = dir.path().join("proc/sys/kernel/random");
        std::fs::create_dir_all(&random).unwrap();
        std::fs::write(random.join("boot_id"), "6a0f7c52-1111-4c2b-9d0e-3f0e2a1b4c5d\n").unwrap();
        std::fs::create_dir_all(dir.path().join("sys")).unwrap();
        FakeTree { dir }
    }

    pub fn sys(&self) -> PathBuf {
        self.dir.path().join("sys")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn add(&self, name: &str, ifindex: u32, speed_mbps: Option<u64>) {
        write_fake_interface(&self.sys(), name, ifindex, speed_mbps, Counters::default()).unwrap();
    }

    pub fn remove(&self, name: &str) {
        remove_fake_interface(&self.sys(), name).unwrap();
    }

    pub fn set(&self, name: &str, rx_bytes: u64, tx_bytes: u64) {
        write_fake_counters(&self.sys(), name, Counters { rx_bytes, tx_bytes }).unwrap();
    }

    /// The configuration text measuring `wan` in this tree, plus `extra` lines.
    pub fn config_text(&self, wan: &[&str], extra: &str) -> String {
        format!(
            "state_dir = {:?}\nwan = {:?}\nsysfs_net = {:?}\nprocfs = {:?}\nlog = \"debug,sled=warn\"\n{extra}\n",
            self.state(),
            wan,
            self.sys(),
            self.dir.path().join("proc"),
        )
    }

    pub fn config(&self, wan: &[&str], extra: &str) -> Config {
        parse(&self.config_text(wan, extra)).unwrap()
    }

    pub fn write_config(&self, wan: &[&str], extra: &str) -> PathBuf {
        let path = self.dir.path().join("agent.toml");
        std::fs::write(&path, self.config_text(wan, extra)).unwrap();
        path
    }
}

/// A clock on paused tokio time, whose wall clock can be stepped and whose process can "stall".
pub struct TestClock {
    wall_at_start: DateTime<Utc>,
    start: tokio::time::Instant,
    wall_step: Mutex<TimeDelta>,
    stalled: Mutex<Duration>,
}

impl TestClock {
    pub fn starting_at(wall: &str) -> Self {
        TestClock {
            wall_at_start: wall.parse().unwrap(),
            start: tokio::time::Instant::now(),
            wall_step: Mutex::new(TimeDelta::zero()),
            stalled: Mutex::new(Duration::ZERO),
        }
    }

    /// Steps the wall clock (NTP, an operator) without touching the monotonic clock.
    pub fn step_wall(&self, by: TimeDelta) {
        *self.wall_step.lock().unwrap() += by;
    }

    /// Both clocks jump forward as if the process had been frozen for `d`.
    pub fn stall(&self, d: Duration) {
        *self.stalled.lock().unwrap() += d;
    }
}

impl Clock for TestClock {
    fn wall(&self) -> DateTime<Utc> {
        self.wall_at_start
            + TimeDelta::from_std(self.start.elapsed() + *self.stalled.lock().unwrap()).unwrap()
            + *self.wall_step.lock().unwrap()
    }

    fn monotonic(&self) -> Duration {
        Duration::from_secs(1_000) + self.start.elapsed() + *self.stalled.lock().unwrap()
    }
}

/// Log lines written while the guard lives, on this thread.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("debug,sled=warn")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs.clone(), tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text().lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The `key=value` field of a log line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next().map(|v| v.trim_matches('"'))
}

/// Runs `meter` on `clock` for `ticks` ticks after the first; before tick `i` (at `5i − 2.5` s)
/// calls `script(i)` to move the fake counters or the clocks. Stops 2.5 s after the last tick.
pub async fn drive(meter: &mut Meter, clock: &TestClock, ticks: u64, mut script: impl FnMut(u64)) {
    let start = tokio::time::Instant::now();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let steps = async move {
        for i in 1..=ticks {
            tokio::time::sleep_until(start + Duration::from_millis(5_000 * i - 2_500)).await;
            script(i);
        }
        tokio::time::sleep_until(start + Duration::from_millis(5_000 * ticks + 2_500)).await;
        let _ = stop.send(());
    };
    let shutdown = async move {
        let _ = stopped.await;
    };
    let (result, ()) = tokio::join!(meter.run(clock, shutdown, &NoNotify), steps);
    result.unwrap();
}

/// A meter over `tree`'s store.
pub fn meter(config: Config) -> Meter {
    let store = Store::open(&config.state_dir, config.max_pending_buckets()).unwrap().store;
    Meter::new(
        config,
        std::rc::Rc::new(std::cell::RefCell::new(store)),
        Arc::new(Mutex::new(Status::default())),
        tally_agent::lan::Devices::new(tally_agent::lan::DeviceDay::new(chrono::Utc::now().date_naive())),
    )
    .unwrap()
}

/// Waits until an agent running on `config` answers `tally-agent status` (its status socket: the
/// agent's store is open and it measures).
pub fn wait_until_running(config: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally-agent"))
            .args(["status", "--format", "json", "--config"])
            .arg(config)
            .output()
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if status["running"] == true {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the agent did not answer status within 30 s: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
