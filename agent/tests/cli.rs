//! The agent's command line, with the real binary: `validate`, `default-config`, `status` while
//! `run` runs, SIGTERM, and a corrupt store.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::FakeTree;
use tally_agent::clock::{ScaledClock, TEST_CLOCK_VAR};
use tally_testkit::Logged;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tally-agent"))
}

#[test]
fn validate_reports_every_error_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "wan = [\"eth 1\"]\nretention_days = 0\nspeed = 3\n").unwrap();
    let out = agent().args(["validate", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("3 error(s)"), "{err}");
    assert!(err.contains("wan[0]: \"eth 1\" is not a valid interface name"), "{err}");
    assert!(err.contains("retention_days: 0 is out of range"), "{err}");
    assert!(err.contains("speed: unknown key"), "{err}");
    let out = agent().args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "run refuses the same configuration before opening anything");
}

#[test]
fn the_default_config_is_valid_and_commented() {
    let out = agent().arg("default-config").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().filter(|l| l.starts_with('#')).count() > 10);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, &text).unwrap();
    let out = agent().args(["validate", "--config"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{} is valid\n", path.display()));
    // Without a file, it says what it checked.
    let out = agent().arg("validate").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    match std::path::Path::new(tally_agent::config::SYSTEM_CONFIG).exists() {
        true => assert!(said.contains(tally_agent::config::SYSTEM_CONFIG), "{said}"),
        false => assert!(said.contains("no configuration file") && said.contains("the defaults are valid"), "{said}"),
    }
}

#[test]
fn every_command_says_which_configuration_it_reads_by_default() {
    for command in ["run", "validate", "status", "enroll", "replay"] {
        let out = agent().args([command, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("--config <FILE>"), "{command}: {help}");
        assert!(
            help.contains("/etc/tally-agent/agent.toml") && help.contains("/var/lib/tally-agent"),
            "{command}: {help}"
        );
    }
}

/// A running agent on an accelerated clock, with its log read line by line.
/// `tally-agent run` over `tree` on an accelerated clock, its log read line by line.
fn run_agent(tree: &FakeTree) -> Logged {
    let config = tree.write_config(&["eth1"], "");
    let clock = format!("1791331200:{}:100", ScaledClock::now_anchor().as_nanos());
    let mut command = agent();
    command.args(["run", "--config"]).arg(config).env(TEST_CLOCK_VAR, clock);
    Logged::spawn(command)
}

#[test]
fn status_answers_while_run_runs_and_sigterm_saves_the_open_bucket() {
    let tree = FakeTree::new();
    tree.add("eth1", 2, Some(1_000));
    let mut agent_run = run_agent(&tree);
    // Let a few samples arrive (the counters stand still: 0 bit/s).
    for _ in 0..3 {
        agent_run.until(" sample start=");
    }
    let config = tree.dir.path().join("agent.toml");
    let out = agent().args(["status", "--format", "json", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["running"], true);
    assert_eq!(status["interfaces"][0]["name"], "eth1");
    assert_eq!(status["interfaces"][0]["speed_mbps"], 1000);
    assert_eq!(status["interfaces"][0]["cap_bps"], 1_050_000_000u64);
    assert_eq!(status["last_sample"]["bps"], 0);
    assert!(status["open_bucket"]["samples"].as_u64().unwrap() >= 1);
    assert_eq!(status["discarded"]["counter_reset"], 0);
    let table = agent().args(["status", "--config"]).arg(&config).output().unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("running") && table.contains("eth1 (ifindex 2): 1000 Mbps, cap 1050.0 Mbps"), "{table}");
    // A second agent without --config would measure into another store: refused, naming this one.
    let second = agent().arg("run").output().unwrap();
    assert_eq!(second.status.code(), Some(64));
    let refused = String::from_utf8_lossy(&second.stderr);
    assert!(refused.contains("an agent is already running (pid "), "{refused}");
    assert!(refused.contains(&format!("run --config {}", config.display())), "the first one, named: {refused}");

    let started = Instant::now();
    let log = agent_run.stop();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
    let stop = log.lines().find(|l| l.contains("stopping: open bucket and last counters saved")).expect(&log);
    assert!(stop.contains("open_start=") && stop.contains("open_max_bps=0"), "plain fields: {stop}");
    assert!(!stop.contains("Some("), "no Rust debug text in the log: {stop}");

    let out = agent().args(["status", "--format", "json", "--config"]).arg(&config).output().unwrap();
    let stopped: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stopped["running"], false);
    assert!(stopped["open_bucket"]["samples"].as_u64().unwrap() >= 1, "the open bucket was saved: {stopped}");
}

#[test]
fn a_corrupt_store_is_moved_aside_and_measuring_goes_on() {
    let tree = FakeTree::new();
    tree.add("eth1", 2, Some(1_000));
    let store = tree.state().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("conf"), b"\x00\x01garbage").unwrap();
    std::fs::write(store.join("db"), vec![0x5a; 8192]).unwrap();
    let mut agent_run = run_agent(&tree);
    let error = agent_run.until("moved aside");
    assert!(error.contains("ERROR") && error.contains("store.corrupt-"), "{error}");
    agent_run.until(" sample start=");
    agent_run.stop();
    let aside: Vec<String> = std::fs::read_dir(tree.state())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("store.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(tree.state().join(&aside[0]).join("db").exists(), "kept for inspection");
}

/// `status` only reads: with no store (an agent that never ran, or a missing `--config`) it says
/// so and creates nothing.
#[test]
fn status_without_a_store_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, format!("state_dir = {state:?}\n")).unwrap();
    let out = agent().args(["status", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no store at") && err.contains("is --config missing?"), "{err}");
    assert!(!state.exists(), "status created {}", state.display());
}

/// `tally-agent default-config | head -1`: the reader is gone before the agent writes; the agent
/// exits quietly instead of panicking on the broken pipe.
#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let mut child = agent().arg("default-config").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "{:?}: {stderr}", out.status);
}
