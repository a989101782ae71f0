//! A PostgreSQL cluster started by a test process is stopped and removed when that process
//! ends, however it ends: here SIGKILL to its whole process group, as `timeout` or a Ctrl-C
//! does (issue 30: a benchmark's cluster once outlived its process).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tally_testkit::{postgres, skip};

const HOLDER: &str = "TALLY_TEST_CLUSTER_HOLDER";

/// Run again as a process of its own (with [`HOLDER`] set), the test starts the cluster, says
/// where, and waits to be killed.
#[test]
fn cluster_stops_when_its_process_group_is_killed() {
    let cluster = match postgres::cluster() {
        Ok(cluster) => cluster,
        Err(why) => return skip!(&why),
    };
    if std::env::var_os(HOLDER).is_some() {
        println!("\ncluster at {}", cluster.dir().display());
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "cluster_stops_when_its_process_group_is_killed", "--nocapture"])
        .env(HOLDER, "1")
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let dir = BufReader::new(holder.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("cluster at ").map(PathBuf::from))
        .expect("the holder says where its cluster is");
    assert!(dir.join("data/postmaster.pid").exists(), "{} is running", dir.display());
    let group = rustix::process::Pid::from_raw(holder.id() as i32).unwrap();
    rustix::process::kill_process_group(group, rustix::process::Signal::KILL).unwrap();
    holder.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while dir.exists() {
        assert!(Instant::now() < deadline, "{} still there 30 s after its process was killed", dir.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}
