//! A child process of a test (an agent, a collector's `serve`, a container) whose log, its
//! stderr, is read line by line. Dropping it SIGKILLs it: a test that fails leaves nothing
//! running.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};

use rustix::process::{Pid, Signal, kill_process, kill_process_group};

#[derive(Debug)]
pub struct Logged {
    child: Child,
    /// `None` once [`Logged::drain_log`] hands the log to a thread of its own.
    log: Option<BufReader<ChildStderr>>,
    /// Every line read so far.
    pub seen: String,
}

impl Logged {
    /// Spawns `command` with its stderr piped (and `RUST_LOG` removed: the configuration's log
    /// filter rules).
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        let log = Some(BufReader::new(child.stderr.take().expect("stderr is piped")));
        Logged { child, log, seen: String::new() }
    }

    /// Reads the log up to the next line containing `needle`, and returns that line.
    pub fn until(&mut self, needle: &str) -> String {
        self.until_n(needle, 1)
    }

    /// Reads the log until `count` more lines contained `needle`; returns the last of them.
    pub fn until_n(&mut self, needle: &str, count: usize) -> String {
        let log = self.log.as_mut().expect("the log is still read here");
        let (mut found, mut line) = (0, String::new());
        while found < count {
            line.clear();
            let read = log.read_line(&mut line).expect("reading the log");
            assert!(read > 0, "exited before logging {count} × {needle:?}:\n{}", self.seen);
            self.seen += &line;
            if line.contains(needle) {
                found += 1;
            }
        }
        line
    }

    /// Keeps reading the log in the background, so the process never blocks on a full pipe.
    pub fn drain_log(&mut self) {
        if let Some(mut log) = self.log.take() {
            std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
        }
    }

    /// SIGTERM (`timeout` forwards it), and waits: the process must exit successfully. Returns
    /// the whole log.
    pub fn stop(mut self) -> String {
        kill_process(Pid::from_child(&self.child), Signal::TERM).expect("SIGTERM");
        let rest = self.rest();
        let status = self.child.wait().expect("waiting for the process");
        assert!(status.success(), "did not end cleanly on SIGTERM ({status}):\n{}{rest}", self.seen);
        std::mem::take(&mut self.seen) + &rest
    }

    /// SIGKILL, to the process group when the process leads one (`timeout` does, so what runs
    /// under it dies too). Returns the whole log.
    pub fn kill(mut self) -> String {
        self.kill_now();
        let rest = self.rest();
        let _ = self.child.wait();
        std::mem::take(&mut self.seen) + &rest
    }

    /// Waits for the process to end by itself. Returns its status and the whole log.
    pub fn finish(mut self) -> (ExitStatus, String) {
        let rest = self.rest();
        let status = self.child.wait().expect("waiting for the process");
        (status, std::mem::take(&mut self.seen) + &rest)
    }

    /// The process's exit status, if it has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Everything the log holds up to now, for the message of a failing test (read to its end
    /// when the process has ended).
    pub fn log_so_far(&mut self) -> String {
        let rest = if self.exited().is_some() { self.rest() } else { String::new() };
        self.seen.clone() + &rest
    }

    /// The process's id; under `timeout`, the id of the process it runs.
    pub fn pid(&self) -> u32 {
        let leader = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{leader}/task/{leader}/children")).unwrap_or_default();
        children.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(leader)
    }

    /// The process's resident memory ([`Logged::pid`]), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("the process's status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in KiB")
    }

    /// SIGKILL, and waits until the process under `timeout` has exited too: until then it may
    /// hold its listeners, and a collector started next on the same port would look ready.
    fn kill_now(&mut self) {
        let inner = self.pid();
        let pid = Pid::from_child(&self.child);
        if kill_process_group(pid, Signal::KILL).is_err() {
            let _ = kill_process(pid, Signal::KILL);
        }
        let _ = self.child.wait();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while alive(inner) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn rest(&mut self) -> String {
        let mut rest = String::new();
        if let Some(log) = self.log.as_mut() {
            let _ = log.read_to_string(&mut rest);
        }
        rest
    }
}

/// Whether process `pid` still runs (a zombie has exited: its files are closed).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

impl Drop for Logged {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill_now();
            let _ = self.child.wait();
        }
    }
}
