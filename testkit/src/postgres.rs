//! A throwaway PostgreSQL cluster for tests: `initdb` and `pg_ctl` on a free port in a temp
//! dir, started once per test binary (the first test that asks), stopped and removed by a
//! watchdog when the binary exits. Each test takes a database of its own. PostgreSQL refuses to
//! run as root: as root, the cluster runs as the `postgres` user.
//!
//! The tests' cluster is for correctness, not durability (they kill collectors, never the
//! database): `fsync` is off. The benchmarks' ([`durable_cluster`]) keeps PostgreSQL's defaults,
//! a commit on disk when it returns, as the SQLite store's.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The role every test database belongs to (`initdb -U`).
const ROLE: &str = "tally";

#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    databases: AtomicU32,
}

/// The binary's cluster, started on first use; `Err` says why it cannot run here (for `skip`).
pub fn cluster() -> Result<&'static Cluster, String> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(false)).as_ref().map_err(Clone::clone)
}

/// A cluster with PostgreSQL's durable defaults (`fsync`, `synchronous_commit`), for benchmarks.
pub fn durable_cluster() -> Result<&'static Cluster, String> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(true)).as_ref().map_err(Clone::clone)
}

impl Cluster {
    fn start(durable: bool) -> Result<Cluster, String> {
        let bin = server_binaries().ok_or(
            "PostgreSQL's server binaries (initdb, pg_ctl) were not found on PATH or in Debian's \
             /usr/lib/postgresql/<version>/bin: install postgresql (Debian: apt-get install postgresql-15)",
        )?;
        let dir = tempfile::Builder::new().prefix("tally-pg-").tempdir().map_err(|e| e.to_string())?.keep();
        if as_root() {
            run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
        }
        let data = dir.join("data");
        run(as_server_user(&bin.join("initdb"))
            .args(["--auth=trust", "--no-sync", "--locale=C", "--encoding=UTF8", "-U", ROLE, "-D"])
            .arg(&data))?;
        let port = free_port()?;
        let fast = if durable { "" } else { "-c fsync=off -c synchronous_commit=off -c full_page_writes=off" };
        let options =
            format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 {fast}", dir.display());
        run(as_server_user(&bin.join("pg_ctl"))
            .args(["-w", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(dir.join("log"))
            .args(["-o", &options, "start"]))?;
        // Stops the cluster and removes its directory once this process is gone.
        let watchdog = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; \"$0\" -D \"$1/data\" -m immediate stop; rm -rf \"$1\"",
            pid = std::process::id()
        );
        // In a process group of its own: a test killed with its group (`timeout`, Ctrl-C) does
        // not take the watchdog with it, which then stops the cluster.
        as_server_user(Path::new("sh"))
            .process_group(0)
            .args(["-c", &watchdog])
            .arg(bin.join("pg_ctl"))
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the cluster's watchdog: {e}"))?;
        Ok(Cluster { bin, dir, port, databases: AtomicU32::new(0) })
    }

    /// A new, empty database: its URL.
    pub fn database(&self) -> String {
        let name = format!("test{}", self.databases.fetch_add(1, Ordering::Relaxed));
        run(Command::new(self.bin.join("createdb")).args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            ROLE,
            &name,
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        self.url(&name)
    }

    /// `pg_dump` of the database at `url` (one of this cluster's), without the random key of its
    /// `\restrict` lines: two dumps of the same data are the same bytes.
    pub fn dump(&self, url: &str) -> Vec<u8> {
        let output = Command::new(self.bin.join("pg_dump")).args(["--data-only", url]).output().unwrap();
        assert!(output.status.success(), "pg_dump {url}: {}", String::from_utf8_lossy(&output.stderr));
        let keyed = |line: &&[u8]| line.starts_with(b"\\restrict ") || line.starts_with(b"\\unrestrict ");
        output.stdout.split_inclusive(|b| *b == b'\n').filter(|line| !keyed(line)).flatten().copied().collect()
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{database}", self.port)
    }

    /// Where the cluster lives; removed once it is stopped.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

/// The directory of `initdb`, `pg_ctl` and `createdb`: found through PATH, or Debian's newest
/// version.
fn server_binaries() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").is_file())
        // The directory of the real binaries (a PATH entry may hold links to a few of them).
        .and_then(|dir| Some(dir.join("initdb").canonicalize().ok()?.parent()?.to_owned()))
        .filter(|dir| dir.join("pg_ctl").is_file() && dir.join("createdb").is_file());
    on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version = entry.file_name().to_str()?.parse().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .filter(|(_, bin)| bin.join("initdb").is_file())
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    })
}

fn as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `program`, run as the `postgres` user when this process is root.
fn as_server_user(program: &Path) -> Command {
    if as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.stdin(Stdio::null()).output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{command:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}
