//! LANs for the tests of R29: the frames their devices send, built byte by byte; a LAN between
//! two namespaces; the agent that watches it, its configuration and its `status`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::collector::Logged;
use super::namespaces::Namespaces;

pub fn ethernet(destination: [u8; 6], source: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    [&destination[..], &source, &ethertype.to_be_bytes(), payload].concat()
}

pub fn arp(sender: [u8; 6]) -> Vec<u8> {
    let body = [&[0, 1, 8, 0, 6, 4, 0, 1][..], &sender, &[192, 0, 2, 77], &[0; 6], &[192, 0, 2, 2]].concat();
    ethernet([0xff; 6], sender, 0x0806, &body)
}

/// A neighbour solicitation with a source link-layer address option.
pub fn neighbour_solicitation(source: [u8; 6]) -> Vec<u8> {
    let icmp = [&[135, 0, 0, 0, 0, 0, 0, 0][..], &[0xfe, 0x80], &[0; 13], &[2], &[1, 1], &source].concat();
    let header = [&[0x60, 0, 0, 0][..], &(icmp.len() as u16).to_be_bytes(), &[58, 255], &[0xfe, 0x80], &[0; 13], &[1]];
    let ipv6 = [&header.concat()[..], &[0xff, 0x02], &[0; 9], &[1, 0xff, 0, 0, 2], &icmp].concat();
    ethernet([0x33, 0x33, 0xff, 0, 0, 2], source, 0x86dd, &ipv6)
}

/// UDP from `source` to the IPv4 broadcast address, to `port`: a DHCP discover at port 67.
pub fn udp_broadcast(source: [u8; 6], port: u16) -> Vec<u8> {
    let mut bootp = vec![1, 1, 6, 0];
    bootp.resize(28, 0);
    bootp.extend(source);
    bootp.resize(240, 0);
    let udp = [&[0, 68][..], &port.to_be_bytes(), &((bootp.len() + 8) as u16).to_be_bytes(), &[0, 0], &bootp].concat();
    let total = ((udp.len() + 20) as u16).to_be_bytes();
    let ipv4 = [&[0x45, 0][..], &total, &[0, 0, 0, 0, 64, 17, 0, 0], &[0; 4], &[255; 4], &udp].concat();
    ethernet([0xff; 6], source, 0x0800, &ipv4)
}

/// Runs `ip` with `args`; its output.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `sysctl -w` each of `settings` in namespace `ns`.
pub fn sysctl(namespaces: &Namespaces, ns: &str, settings: &[&str]) {
    for setting in settings {
        assert!(namespaces.exec(ns, "sysctl").args(["-qw", setting]).status().unwrap().success(), "{setting}");
    }
}

/// A LAN between the namespaces: `lanB`, the socket's, in b; `lanA`, the devices' side, in a;
/// both up, and IPv6 off on both sides, so that neither says anything of its own.
pub fn add_lan(namespaces: &Namespaces) {
    let (a, b) = (namespaces.a.as_str(), namespaces.b.as_str());
    ip(&["link", "add", "lanB", "netns", b, "type", "veth", "peer", "name", "lanA", "netns", a]);
    for side in [a, b] {
        sysctl(namespaces, side, &["net.ipv6.conf.all.disable_ipv6=1"]);
    }
    ip(&["-n", b, "link", "set", "lanB", "up"]);
    ip(&["-n", a, "link", "set", "lanA", "up"]);
}

/// An agent's configuration in `dir`: its state there, its WAN `vB`, and `extra` lines.
pub fn agent_config(dir: &Path, extra: &str) -> PathBuf {
    let config = dir.join("agent.toml");
    std::fs::write(&config, format!("state_dir = {:?}\nwan = [\"vB\"]\n{extra}\n", dir.join("state"))).unwrap();
    config
}

/// `tally-agent run` in namespace b, under `timeout` (a hung agent ends the test, not CI).
pub fn run_agent(namespaces: &Namespaces, config: &Path) -> Logged {
    Logged::spawn(agent_run(namespaces, config))
}

/// [`run_agent`] on the test clock `clock` (`TALLY_AGENT_TEST_CLOCK`).
pub fn run_agent_on(namespaces: &Namespaces, config: &Path, clock: &str) -> Logged {
    let mut cmd = agent_run(namespaces, config);
    cmd.env(tally_agent::clock::TEST_CLOCK_VAR, clock);
    Logged::spawn(cmd)
}

fn agent_run(namespaces: &Namespaces, config: &Path) -> std::process::Command {
    let mut cmd = namespaces.exec(&namespaces.b, "timeout");
    cmd.arg("300").arg(env!("CARGO_BIN_EXE_tally-agent")).args(["run", "--config"]).arg(config);
    cmd
}

/// `tally-agent status --format json` in namespace b.
pub fn agent_status(namespaces: &Namespaces, config: &Path) -> serde_json::Value {
    let out = namespaces
        .exec(&namespaces.b, env!("CARGO_BIN_EXE_tally-agent"))
        .args(["status", "--format", "json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Today's devices in the agent's `status` once it shows `devices`, or after three times the
/// capture's gathering.
pub fn devices_today(namespaces: &Namespaces, config: &Path, devices: u64) -> serde_json::Value {
    let deadline = Instant::now() + tally_agent::lan::GATHER * 3;
    loop {
        let status = agent_status(namespaces, config);
        if status["lan"]["devices_today"].as_u64() == Some(devices) || Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
