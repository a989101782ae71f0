//! `tally-agent doctor` as an installer runs it, with the real binary against a real collector on
//! loopback: every check passes on a sound socket (root: shaping and LAN capture need it), and
//! each fault injected fails its own line with what to do, and the exit code.

mod support;

use std::path::Path;
use std::process::Command;

use support::FakeTree;
use support::collector::{Collector, acme_hq, binary, enroll_token};
use tally_agent::clock::{ScaledClock, TEST_CLOCK_VAR};
use tally_testkit::skip;
use tally_testkit::tmpfs::Tmpfs;

/// What `doctor` said: its exit code, and each line's (state, check, text).
struct Said {
    code: Option<i32>,
    text: String,
}

impl Said {
    /// The line of check `what`: whether it passed, and what it said.
    fn line(&self, what: &str) -> (bool, &str) {
        let found = self.text.lines().find_map(|l| {
            let (state, rest) = l.split_at(5);
            rest.strip_prefix(what).and_then(|r| r.strip_prefix(": ")).map(|said| (state == "OK   ", said))
        });
        found.unwrap_or_else(|| panic!("no {what} line in\n{}", self.text))
    }

    fn fails(&self, what: &str, with: &str) {
        assert_ne!(self.code, Some(0), "{}", self.text);
        let (ok, said) = self.line(what);
        assert!(!ok && said.contains(with), "{what} should fail with {with:?}:\n{}", self.text);
    }

    fn passes(&self, what: &str) {
        assert!(self.line(what).0, "{what} should pass:\n{}", self.text);
    }
}

/// `tally-agent doctor` on `config`, through `wrapper` (a command that runs it, or nothing), with
/// `env` set.
fn doctor(config: &Path, wrapper: &[&str], env: &[(&str, String)]) -> Said {
    let program = env!("CARGO_BIN_EXE_tally-agent");
    let mut command = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    };
    command.args(["doctor", "--config"]).arg(config).envs(env.iter().map(|(k, v)| (k, v)));
    let out = command.output().unwrap();
    Said { code: out.status.code(), text: String::from_utf8_lossy(&out.stdout).into_owned() }
}

#[test]
fn a_sound_socket_passes_and_each_fault_is_named_with_what_to_do() {
    if binary().is_none() {
        skip!("the collector binary is not built; run `cargo test --workspace`");
        return;
    }
    let root = rustix::process::geteuid().is_root();
    let tree = FakeTree::new();
    tree.add("eth1", 2, Some(1_000));
    let collector = acme_hq("127.0.0.1", "info");
    let server = collector.serve();
    let config = tree.write_config(&["eth1"], "");

    // Before enrollment: the collector and the clock cannot be checked, and it says how to enroll.
    let said = doctor(&config, &[], &[]);
    said.fails("collector", "not enrolled: run `tally-agent enroll --collector HOST:PORT --token-file FILE`");
    said.fails("clock", "not checked: not enrolled");
    said.passes("WAN interfaces");
    assert_eq!(said.line("WAN interfaces").1, "eth1 (1000 Mbps)");

    let token = enroll_token(&collector);
    let out = Command::new(env!("CARGO_BIN_EXE_tally-agent"))
        .args(["enroll", "--collector", &collector.quic.to_string(), "--token", &token, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A sound socket: every line OK, exit code 0.
    let said = doctor(&config, &[], &[]);
    for what in ["WAN interfaces", "counters", "collector", "clock", "disk"] {
        said.passes(what);
    }
    assert!(said.line("collector").1.contains(&format!("{} answers as site hq", collector.quic)), "{}", said.text);
    if root {
        assert_eq!(said.code, Some(0), "{}", said.text);
        assert!(said.text.ends_with("every check passed: this socket is ready\n"), "{}", said.text);
    } else {
        skip!("not root: shaping and LAN capture need root, so the sound socket's exit code 0 is not checked");
    }

    // A WAN interface that does not exist.
    let wrong = tree.dir.path().join("wrong-wan.toml");
    std::fs::write(&wrong, tree.config_text(&["nope0"], "")).unwrap();
    let said = doctor(&wrong, &[], &[]);
    said.fails("WAN interfaces", &format!("nope0 not found: fix `wan` in {}", wrong.display()));
    said.fails("counters", "no WAN interface to read");

    // Counters the driver garbles.
    std::fs::write(tree.sys().join("eth1/statistics/rx_bytes"), "garbage\n").unwrap();
    doctor(&config, &[], &[]).fails("counters", "the byte counters of eth1 cannot be read");
    tree.set("eth1", 0, 0);

    // No iproute2: caps cannot be applied.
    let empty = tempfile::tempdir().unwrap();
    let said = doctor(&config, &[], &[("PATH", empty.path().display().to_string())]);
    said.fails("shaping for caps", "`tc` is not installed: install iproute2");
    said.passes("collector");

    // Without CAP_NET_RAW (a unit that lost the capability).
    if root && Command::new("setpriv").arg("--version").output().is_ok() {
        let drop = ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", "--"];
        doctor(&config, &drop, &[]).fails("LAN capture", "CAP_NET_RAW is missing");
    } else {
        skip!("not root, or no setpriv: the missing CAP_NET_RAW is not injected");
    }

    // A clock two hours ahead of the collector's.
    let ahead = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 7_200;
    let clock = format!("{ahead}:{}:1", ScaledClock::now_anchor().as_nanos());
    doctor(&config, &[], &[(TEST_CLOCK_VAR, clock)]).fails("clock", "s ahead of the collector's");

    // Another collector (its own CA) where this socket's collector should be.
    let identity = tree.state().join("identity/collector");
    let enrolled_with = std::fs::read_to_string(&identity).unwrap();
    let impostor = Collector::new().quic_on("127.0.0.1", "log = \"info\"");
    let _impostor = impostor.serve();
    std::fs::write(&identity, format!("{}\n", impostor.quic)).unwrap();
    let said = doctor(&config, &[], &[]);
    said.fails("collector", "presents a certificate that is not from the CA this socket enrolled with");
    said.fails("clock", "not checked: the collector is unreachable");
    std::fs::write(&identity, enrolled_with).unwrap();

    // The collector stopped.
    server.stop();
    let said = doctor(&config, &[], &[]);
    said.fails("collector", "unreachable");
    said.fails("clock", "not checked: the collector is unreachable");

    // Too little disk for the retention: 35 days need 25 MiB.
    match Tmpfs::mount(8 * 1024) {
        Ok(disk) => {
            let small = tree.dir.path().join("small-disk.toml");
            let text = tree.config_text(&["eth1"], "").replace(
                &format!("state_dir = {:?}", tree.state()),
                &format!("state_dir = {:?}", disk.path().join("state")),
            );
            std::fs::write(&small, text).unwrap();
            doctor(&small, &[], &[]).fails("disk", "MiB needed to keep 35 days of buckets");
        }
        Err(why) => skip!(&format!("{why}: the small disk is not injected")),
    }
}
