//! The agent's configuration file: parsed and validated before anything is opened or bound,
//! every error reported at once (`tally-agent validate` exits 64 on any).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use tally_common::config_file::ConfigErrors;
use tally_common::config_file::{Fields, defaults, load};
use tally_common::sampler::{InterfaceName, MAX_INTERFACES};

/// The configuration file read when no `--config` names one, if it exists (the systemd unit's).
pub const SYSTEM_CONFIG: &str = "/etc/tally-agent/agent.toml";

/// The commented example printed by `tally-agent default-config`; every value is the default.
pub const DEFAULT_CONFIG: &str = r#"# tally-agent configuration (TOML). Every key is optional; the values shown are the defaults.

# Where the agent keeps its store: closed buckets waiting for the collector, the open bucket,
# the last counter readings and the discard counters. systemd's StateDirectory= creates it.
state_dir = "/var/lib/tally-agent"

# The last-mile (WAN) interfaces to measure, e.g. ["eth1", "lte0"]. Empty: every interface that
# carries an IPv4 or IPv6 default route, re-checked each minute (an LTE modem can appear later).
wan = []

# Plausibility cap for an interface whose link speed the kernel does not report, in Mbps (R3).
# With a known speed the cap is that speed + 5 %. A faster reading is discarded, never billed.
max_link_mbps = 10000

# Interfaces whose byte counters are 32 bits wide even on this 64-bit kernel (R3). Only their
# decreases may be unwrapped as a wrap; any other decrease is a reset.
counters_32bit = []

# The LAN interfaces whose devices are counted (R29: a hardware address seen in ARP, IPv6
# neighbour discovery or a DHCP request), e.g. ["lan0"]. Empty: every interface that is up and is
# neither a WAN interface, loopback nor the agent's own (ifb-*).
lan = []

# At most this many distinct devices a day are kept; more are counted and logged once at WARN.
max_lan_devices_per_day = 4096

# Every this many minutes, sweep each LAN IPv4 subnet (at most 1,022 addresses: the /22 around
# the socket's address) with one empty UDP datagram per address, so that quiet devices answer
# the kernel's ARP request and are counted. 0: off, the capture only listens.
lan_arp_sweep_minutes = 0

# How many days of closed buckets to keep while the collector is unreachable. Past that the
# oldest are dropped, logged at ERROR and counted.
retention_days = 35

# Log filter, in RUST_LOG syntax: "info", "debug", "info,tally_agent::measure=debug", ...
log = "info"

# Where the counters are read. Change only to replay a recorded tree in a test.
sysfs_net = "/sys/class/net"
procfs = "/proc"
"#;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub state_dir: PathBuf,
    pub wan: Vec<InterfaceName>,
    pub max_link_mbps: u64,
    pub counters_32bit: BTreeSet<InterfaceName>,
    pub retention_days: u32,
    /// LAN interfaces to watch for devices; empty: found at start.
    pub lan: Vec<InterfaceName>,
    pub max_lan_devices_per_day: usize,
    /// Minutes between active ARP sweeps of the LAN subnets; `None`: no sweep.
    pub lan_arp_sweep_minutes: Option<u32>,
    pub log: String,
    pub sysfs_net: PathBuf,
    pub procfs: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        defaults(DEFAULT_CONFIG, parse)
    }
}

impl Config {
    /// Reads and validates `path`; without a path, the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        path.map_or_else(|| Ok(Config::default()), |path| load(path, parse))
    }

    /// The sled store's directory.
    pub fn store_dir(&self) -> PathBuf {
        self.state_dir.join("store")
    }

    /// Where a running agent answers `tally-agent status`.
    pub fn status_socket(&self) -> PathBuf {
        self.state_dir.join("status.sock")
    }

    /// The most closed buckets kept unsent.
    pub fn max_pending_buckets(&self) -> usize {
        self.retention_days as usize * 288
    }
}

/// Parses and validates configuration text, collecting every error.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let mut fields = Fields::parse(text)?;
    let state_dir = fields.path("state_dir", "/var/lib/tally-agent");
    let wan = interfaces(&mut fields, "wan");
    let max_link_mbps = fields.integer("max_link_mbps", 10_000, 1, 1_000_000);
    let counters_32bit = interfaces(&mut fields, "counters_32bit").into_iter().collect();
    let retention_days = fields.integer("retention_days", 35, 1, 3_650) as u32;
    let lan = interfaces(&mut fields, "lan");
    let max_lan_devices_per_day = fields.integer("max_lan_devices_per_day", 4_096, 1, 1 << 20) as usize;
    let lan_arp_sweep_minutes = Some(fields.integer("lan_arp_sweep_minutes", 0, 0, 1_440) as u32).filter(|m| *m > 0);
    let log = fields.string("log", "info");
    let sysfs_net = fields.path("sysfs_net", "/sys/class/net");
    let procfs = fields.path("procfs", "/proc");

    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
        fields.error(format!("log: {log:?} is not a valid filter: {e}"));
    }
    if wan.len() > MAX_INTERFACES {
        fields.error(format!("wan: {} interfaces listed, at most {MAX_INTERFACES} are supported", wan.len()));
    }
    if let Some(both) = lan.iter().find(|name| wan.contains(name)) {
        fields.error(format!("lan: {both} is a WAN interface too"));
    }
    let known = [
        "state_dir",
        "wan",
        "max_link_mbps",
        "counters_32bit",
        "retention_days",
        "lan",
        "max_lan_devices_per_day",
        "lan_arp_sweep_minutes",
        "log",
        "sysfs_net",
        "procfs",
    ];
    fields.finish(&known, || Config {
        state_dir,
        wan,
        max_link_mbps,
        counters_32bit,
        retention_days,
        lan,
        max_lan_devices_per_day,
        lan_arp_sweep_minutes,
        log,
        sysfs_net,
        procfs,
    })
}

/// A list of interface names, each valid and listed once.
fn interfaces(fields: &mut Fields, key: &str) -> Vec<InterfaceName> {
    let items = match fields.get(key) {
        None => return Vec::new(),
        Some(toml::Value::Array(items)) => items.clone(),
        Some(other) => {
            let found = other.type_str();
            fields.error(format!("{key}: expected a list of interface names, found {found}"));
            return Vec::new();
        }
    };
    let mut names = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str().map(interface_name) {
            Some(Ok(name)) if names.contains(&name) => fields.error(format!("{key}[{i}]: {name} is listed twice")),
            Some(Ok(name)) => names.push(name),
            Some(Err(e)) => fields.error(format!("{key}[{i}]: {e}")),
            None => fields.error(format!("{key}[{i}]: expected an interface name, found {}", item.type_str())),
        }
    }
    names
}

/// A Linux interface name: 1 to 15 bytes, no `/`, no white space, not `.` or `..`.
pub fn interface_name(s: &str) -> Result<InterfaceName, String> {
    let valid = !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.bytes().any(|b| b == b'/' || b.is_ascii_whitespace() || b == 0);
    match InterfaceName::try_from(s) {
        Ok(name) if valid => Ok(name),
        _ => Err(format!("{s:?} is not a valid interface name (1 to 15 bytes, no '/' or spaces)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_parses_to_the_defaults() {
        let config = parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(config.state_dir, Path::new("/var/lib/tally-agent"));
        assert_eq!(config.max_link_mbps, 10_000);
        assert_eq!(config.max_pending_buckets(), 35 * 288);
        assert_eq!(parse("").unwrap(), config);
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let text = r#"
            wan = ["eth1", "eth1", "a/b", 7]
            max_link_mbps = 0
            retention_days = "long"
            log = "info,[=bad"
            colour = true
        "#;
        let errors = parse(text).unwrap_err().errors;
        assert_eq!(errors.len(), 7, "{errors:#?}");
        assert!(errors.iter().any(|e| e == "wan[1]: eth1 is listed twice"));
        assert!(errors.iter().any(|e| e.starts_with("wan[2]: \"a/b\" is not a valid interface name")));
        assert!(errors.iter().any(|e| e == "wan[3]: expected an interface name, found integer"));
        assert!(errors.iter().any(|e| e == "max_link_mbps: 0 is out of range, expected 1 to 1000000"));
        assert!(errors.iter().any(|e| e == "retention_days: expected an integer, found string"));
        assert!(errors.iter().any(|e| e.starts_with("log: \"info,[=bad\" is not a valid filter")));
        assert!(errors.iter().any(|e| e.starts_with("colour: unknown key")));
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let errors = parse("wan = [\"eth1\"\nlog = 3").unwrap_err().errors;
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("line 2"), "{}", errors[0]);
    }
}
