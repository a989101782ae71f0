//! `make run` (`scripts/run-local.sh`) as a new user meets it: a first run that fails half-way
//! (an unknown country) or finds its port taken, then runs that succeed in a stand-alone country
//! (R17: the script adds the pool and the cap), are stopped by Ctrl-C and by SIGTERM with exit
//! code 0, and leave no process behind. The script runs the binaries under test (`TALLY_BIN`)
//! on a data directory and ports of its own; the agent measures an interface that does not exist,
//! so nothing on this machine is shaped. Every example the docs mark runs against it.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tally_testkit::skip;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/run-local.sh");

struct Setup {
    dir: tempfile::TempDir,
    bin: PathBuf,
    http_port: u16,
}

fn setup() -> Option<Setup> {
    let bin = Path::new(env!("CARGO_BIN_EXE_tally-collector")).parent().unwrap().to_owned();
    if !bin.join("tally-agent").exists() {
        skip!("the agent binary is not built; run `cargo test --workspace`");
        return None;
    }
    if Command::new("ss").arg("-V").output().is_err() {
        skip!("ss (iproute2) is not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let quic_port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let http_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let data = dir.path().join("tally-data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(
        data.join("collector.toml"),
        format!(
            "data_dir = {:?}\nquic_listen = \"127.0.0.1:{quic_port}\"\nhttp_listen = \"127.0.0.1:{http_port}\"\n\
             operator_token = \"local-operator-token-of-the-test\"\n",
            data.join("collector")
        ),
    )
    .unwrap();
    std::fs::write(data.join("agent.toml"), format!("state_dir = {:?}\nwan = [\"tally-none0\"]\n", data.join("agent")))
        .unwrap();
    Some(Setup { dir, bin, http_port })
}

impl Setup {
    fn data(&self) -> PathBuf {
        self.dir.path().join("tally-data")
    }

    /// The script, its stderr merged into its stdout.
    fn script(&self, country: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .args(["-c", "exec bash \"$0\" 2>&1", SCRIPT])
            .env("TALLY_BIN", &self.bin)
            .env("TALLY_DATA", self.data())
            .env("TALLY_COUNTRY", country)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped());
        command
    }

    /// Runs the script to its end: exit code and everything it printed.
    fn fails(&self, country: &str) -> String {
        let out = self.script(country).output().unwrap();
        assert!(!out.status.success(), "the run should fail");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts the script in a process group of its own (as a terminal runs it) and reads its
    /// output until it says Tally runs; returns it with what it printed.
    fn start(&self, country: &str) -> (Child, String) {
        let mut command = self.script(country);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (mut seen, mut line) = (String::new(), String::new());
        while !seen.contains("sign in with the contact person's token") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "the script ended before Tally ran:\n{seen}");
            seen += &line;
        }
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        (child, seen)
    }

    /// The processes whose command line names this test's data directory.
    fn left_behind(&self) -> Vec<String> {
        let data = self.data().display().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&data) && !c.contains("run_local"))
            .collect()
    }

    fn collector(&self, line: &str) -> String {
        let out = Command::new(self.bin.join("tally-collector"))
            .arg("--config")
            .arg(self.data().join("collector.toml"))
            .args(line.split_whitespace())
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

#[test]
fn a_failed_first_run_is_fixed_by_running_again_and_every_exit_stops_everything() {
    let Some(s) = setup() else { return };

    // Fails half-way: the account is made, the site is refused.
    let said = s.fails("XX");
    assert!(said.contains("country XX is not in the region table"), "{said}");
    assert!(s.left_behind().is_empty(), "{:?}", s.left_behind());

    // The HTTP port is taken: said before anything starts.
    let holder = TcpListener::bind(("127.0.0.1", s.http_port)).unwrap();
    let said = s.fails("CN");
    assert!(said.contains(&format!("TCP port {} is in use", s.http_port)), "{said}");
    drop(holder);

    // Run again in a stand-alone country: it completes the setup and runs; Ctrl-C exits 0.
    let (mut run, said) = s.start("CN");
    assert!(said.contains("site local added in china (CN)"), "{said}");
    let sites = s.collector("site list --account local");
    assert!(sites.contains("10000.0 Mbps"), "R17: a cap in a stand-alone group: {sites}");
    assert!(s.collector("account list").contains("Local contact <contact@local.example>"));
    let token = std::fs::read_to_string(s.data().join("contact-token")).unwrap().trim().to_owned();
    assert!(token.starts_with("tally_"));
    // The console's address and a token that signs in there.
    let console =
        format!("console:  http://127.0.0.1:{}/ — sign in with the contact person's token: {token}", s.http_port);
    assert!(said.contains(&console), "{said}");
    let mut http = std::net::TcpStream::connect(("127.0.0.1", s.http_port)).unwrap();
    let form = format!("token={token}");
    write!(http, "POST /login HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}", form.len()).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut http, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 303") && answer.contains("tally_session="), "{answer}");
    rustix::process::kill_process_group(rustix::process::Pid::from_child(&run), rustix::process::Signal::INT).unwrap();
    assert_eq!(run.wait().unwrap().code(), Some(0), "Ctrl-C is a normal way out");
    assert!(s.left_behind().is_empty(), "{:?}", s.left_behind());
    let log = std::fs::read_to_string(s.data().join("collector.log")).unwrap();
    assert!(log.trim_end().ends_with("collector stopped"), "the shutdown lines reach the log: {log}");

    // And again: everything is reused; SIGTERM to the script alone stops everything too.
    let (mut run, said) = s.start("CN");
    assert!(!said.contains("added"), "nothing is added twice: {said}");
    rustix::process::kill_process(rustix::process::Pid::from_child(&run), rustix::process::Signal::TERM).unwrap();
    assert_eq!(run.wait().unwrap().code(), Some(0));
    assert!(s.left_behind().is_empty(), "{:?}", s.left_behind());
}

/// The examples README.md and docs/ mark (`<!-- example -->` before a ```sh block), each with
/// the file it is in.
fn marked_examples() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut examples = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if line.trim() != "<!-- example -->" {
                continue;
            }
            assert_eq!(lines.next(), Some("```sh"), "{}: a marked example is a ```sh block", file.display());
            let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            examples.push((file.file_name().unwrap().to_string_lossy().into_owned(), block.join("\n")));
        }
    }
    examples
}

/// Every marked example of the docs runs as written after `make run`, as a reader runs it from
/// the repository: in a directory with make run's `tally-data` and `target/release` (here the
/// binaries under test), the console on the port this test had free instead of 8080.
#[test]
fn every_marked_example_of_the_docs_runs_after_make_run() {
    let Some(s) = setup() else { return };
    let examples = marked_examples();
    let files: std::collections::BTreeSet<&str> = examples.iter().map(|(file, _)| file.as_str()).collect();
    assert!(examples.len() >= 7 && files.len() >= 4, "{files:?}: {} examples", examples.len());
    // The README fits on a screen or two and leads to every page of docs/.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.lines().count() <= 200, "README.md has {} lines", readme.lines().count());
    for page in std::fs::read_dir(root.join("docs")).unwrap().map(|e| e.unwrap().file_name()) {
        let page = page.to_string_lossy();
        if page.ends_with(".md") {
            assert!(readme.contains(&format!("(docs/{page})")), "README.md does not link docs/{page}");
        }
    }
    std::fs::create_dir(s.dir.path().join("target")).unwrap();
    std::os::unix::fs::symlink(&s.bin, s.dir.path().join("target/release")).unwrap();
    let (mut run, _) = s.start("US");
    for (file, example) in &examples {
        let script = example.replace("127.0.0.1:8080", &format!("127.0.0.1:{}", s.http_port));
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(s.dir.path())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "an example of {file} failed:\n{example}\n--- it said:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    rustix::process::kill_process_group(rustix::process::Pid::from_child(&run), rustix::process::Signal::INT).unwrap();
    assert_eq!(run.wait().unwrap().code(), Some(0));
}
