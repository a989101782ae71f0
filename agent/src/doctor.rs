//! `tally-agent doctor`: the installer's pre-flight check. Each line is one thing the agent needs,
//! OK with what was found, or FAIL with what to do; the command exits 0 only when every line is
//! OK. It reads, and changes nothing but a throwaway IFB device it creates and deletes at once.

use std::path::Path;
use std::process::Command;

use tally_common::wire::MAX_CLOCK_OFFSET;

use crate::clock::Clock;
use crate::config::Config;
use crate::netif::{NetPaths, Wan};
use crate::uplink::{Identity, probe};

/// One line of the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub what: &'static str,
    pub ok: bool,
    /// What was found, or what to do.
    pub said: String,
}

impl Check {
    fn ok(what: &'static str, said: impl Into<String>) -> Check {
        Check { what, ok: true, said: said.into() }
    }

    fn fail(what: &'static str, said: impl Into<String>) -> Check {
        Check { what, ok: false, said: said.into() }
    }
}

/// The name of the IFB device the shaping check creates and deletes.
const TRIAL_IFB: &str = "tally-doctor";
/// Bytes a kept bucket costs on disk (sled's record and its share of the journal), with room.
const BYTES_PER_BUCKET: u64 = 1_024;
/// Room the store needs beyond its buckets: sled's segments and the journal's reserve.
const STORE_OVERHEAD: u64 = 16 << 20;
/// Bit 13 of the capability sets: CAP_NET_RAW.
const CAP_NET_RAW: u32 = 13;

/// Every check, in the order a field engineer fixes them.
pub async fn run(config: &Config, config_file: Option<&Path>, clock: &impl Clock) -> Vec<Check> {
    let mut checks = wan_and_counters(config, config_file);
    checks.push(shaping());
    checks.push(lan_capture(&std::fs::read_to_string("/proc/self/status").unwrap_or_default()));
    checks.extend(collector_and_clock(config, clock).await);
    checks.push(disk(config));
    checks
}

/// The check as lines: `OK   what: found` or `FAIL what: what to do`.
pub fn table(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        out += &format!("{} {}: {}\n", if c.ok { "OK  " } else { "FAIL" }, c.what, c.said);
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    out += &match failed {
        0 => "every check passed: this socket is ready\n".to_owned(),
        n => format!("{n} check(s) failed: fix them and run `tally-agent doctor` again\n"),
    };
    out
}

/// The WAN interfaces (`wan`, or those with a default route) with their speeds, and whether their
/// byte counters can be read.
fn wan_and_counters(config: &Config, config_file: Option<&Path>) -> Vec<Check> {
    let paths = NetPaths::from_config(config);
    let file = config_file.map_or("the configuration (--config)".to_owned(), |f| f.display().to_string());
    let names = if config.wan.is_empty() { paths.default_route_interfaces() } else { config.wan.clone() };
    if names.is_empty() {
        let fix = format!(
            "no interface carries a default route: set `wan` in {file} to the WAN interfaces (`ip -br link` lists them)"
        );
        return vec![Check::fail("WAN interfaces", fix), Check::fail("counters", "no WAN interface to read")];
    }
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    for name in &names {
        match Wan::open(&paths, name, config) {
            Some(wan) => found.push(wan),
            None => missing.push(name.to_string()),
        }
    }
    let speeds: Vec<String> = found
        .iter()
        .map(|w| match w.speed_mbps {
            Some(speed) => format!("{} ({speed} Mbps)", w.name),
            None => format!(
                "{} (speed unknown: readings above max_link_mbps = {} are discarded)",
                w.name, config.max_link_mbps
            ),
        })
        .collect();
    let wan = match (found.is_empty(), missing.is_empty()) {
        (_, true) => Check::ok("WAN interfaces", speeds.join(", ")),
        (true, false) => Check::fail(
            "WAN interfaces",
            format!("{} not found: fix `wan` in {file} (`ip -br link` lists the interfaces)", missing.join(", ")),
        ),
        (false, false) => Check::fail(
            "WAN interfaces",
            format!("{} found, but {} not: fix `wan` in {file}", speeds.join(", "), missing.join(", ")),
        ),
    };
    let mut unreadable = Vec::new();
    let mut source = crate::netif::counter_source(&paths);
    let _ = source.refresh();
    for wan in &mut found {
        if wan.read(&*source, &paths, config).is_none() {
            unreadable.push(wan.name.to_string());
        }
    }
    let counters = match (found.is_empty(), unreadable.is_empty()) {
        (true, _) => Check::fail("counters", "no WAN interface to read"),
        (false, true) => Check::ok("counters", "the byte counters of every WAN interface are readable"),
        (false, false) => Check::fail(
            "counters",
            format!(
                "the byte counters of {} cannot be read ({}/IF/statistics): check the driver",
                unreadable.join(", "),
                paths.sysfs_net.display()
            ),
        ),
    };
    vec![wan, counters]
}

/// Whether caps can be applied: `tc` runs, and an IFB device (for the download direction) can be
/// created, which also needs CAP_NET_ADMIN.
fn shaping() -> Check {
    const WHAT: &str = "shaping for caps";
    if Command::new("tc").arg("-V").output().is_err() {
        return Check::fail(WHAT, "`tc` is not installed: install iproute2 (apt install iproute2)");
    }
    let created = Command::new("ip").args(["link", "add", "name", TRIAL_IFB, "type", "ifb"]).output();
    match created {
        Err(e) => Check::fail(WHAT, format!("`ip` cannot run ({e}): install iproute2 (apt install iproute2)")),
        Ok(out) if !out.status.success() => {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            Check::fail(
                WHAT,
                format!(
                    "an IFB device cannot be created ({why}): run as root or with CAP_NET_ADMIN (the systemd unit \
                     grants it), and make sure the kernel has the ifb module"
                ),
            )
        }
        Ok(_) => {
            let _ = Command::new("ip").args(["link", "del", TRIAL_IFB]).output();
            Check::ok(WHAT, "tc runs and an IFB device can be created")
        }
    }
}

/// Whether the LAN's devices can be captured (R29): CAP_NET_RAW in the effective set of
/// `/proc/self/status`.
fn lan_capture(status: &str) -> Check {
    const WHAT: &str = "LAN capture";
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    if effective & (1 << CAP_NET_RAW) != 0 {
        Check::ok(WHAT, "CAP_NET_RAW is held: the LAN's devices can be counted")
    } else {
        Check::fail(
            WHAT,
            "CAP_NET_RAW is missing, so the LAN's devices are not counted: run as root, or under the systemd unit \
             (AmbientCapabilities=CAP_NET_RAW)",
        )
    }
}

/// The collector reached with the enrolled identity (its certificate from the CA pinned at
/// enrollment), and this socket's clock against the collector's.
async fn collector_and_clock(config: &Config, clock: &impl Clock) -> Vec<Check> {
    const COLLECTOR: &str = "collector";
    const CLOCK: &str = "clock";
    let unchecked = |why: &str| Check::fail(CLOCK, format!("not checked: {why}"));
    let identity = match Identity::load(&config.state_dir) {
        Ok(Some(identity)) => identity,
        Ok(None) => {
            let fix = "not enrolled: run `tally-agent enroll --collector HOST:PORT --token-file FILE` with the \
                       site's one-time token";
            return vec![Check::fail(COLLECTOR, fix), unchecked("not enrolled")];
        }
        Err(why) => return vec![Check::fail(COLLECTOR, why), unchecked("the identity is damaged")],
    };
    let tried = identity.collectors.join(", ");
    match probe(&identity, clock).await {
        Ok((collector, greeted)) => {
            let reached = Check::ok(
                COLLECTOR,
                format!(
                    "{collector} answers as site {}, with a certificate from the CA pinned at enrollment",
                    greeted.site
                ),
            );
            let clock = match greeted.clock_offset_s {
                None => Check::ok(CLOCK, "not compared: the collector is too old to say its time"),
                Some(offset) if offset.abs() <= MAX_CLOCK_OFFSET.num_seconds() => {
                    Check::ok(CLOCK, format!("within {} s of the collector's", offset.abs()))
                }
                Some(offset) => Check::fail(
                    CLOCK,
                    format!(
                        "{} s {} the collector's: buckets would carry wrong times; fix the time (timedatectl \
                         set-ntp true, or the NTP server)",
                        offset.abs(),
                        if offset > 0 { "ahead of" } else { "behind" }
                    ),
                ),
            };
            vec![reached, clock]
        }
        Err(e) => {
            let message = e.to_string();
            let fix = if message.contains("certificate") || message.contains("UnknownIssuer") {
                format!(
                    "{tried} presents a certificate that is not from the CA this socket enrolled with ({message}): \
                     check the address, or enroll again against the right collector"
                )
            } else {
                format!("{message}: check the address, the firewall (UDP to the collector's port) and that it runs")
            };
            vec![Check::fail(COLLECTOR, fix), unchecked("the collector is unreachable")]
        }
    }
}

/// Free space where the store lives, for `retention_days` of buckets kept while the collector is
/// unreachable.
fn disk(config: &Config) -> Check {
    const WHAT: &str = "disk";
    let needed = u64::from(config.retention_days) * 288 * BYTES_PER_BUCKET + STORE_OVERHEAD;
    let dir = config.state_dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
    let mib = |bytes: u64| bytes >> 20;
    match rustix::fs::statvfs(dir) {
        Err(e) => Check::fail(WHAT, format!("cannot tell the free space of {}: {e}", dir.display())),
        Ok(fs) => {
            let free = fs.f_bavail.saturating_mul(fs.f_frsize);
            if free >= needed {
                Check::ok(
                    WHAT,
                    format!(
                        "{} MiB free in {}, {} MiB needed for {} days of buckets",
                        mib(free),
                        dir.display(),
                        mib(needed),
                        config.retention_days
                    ),
                )
            } else {
                Check::fail(
                    WHAT,
                    format!(
                        "{} MiB free in {}, {} MiB needed to keep {} days of buckets while the collector is unreachable: \
                         free space, or lower retention_days",
                        mib(free),
                        dir.display(),
                        mib(needed),
                        config.retention_days
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_net_raw_is_read_from_the_effective_set() {
        assert!(lan_capture("Name:\ttally\nCapEff:\t000001fffeffffff\n").ok);
        assert!(!lan_capture("CapEff:\t0000000000000000\n").ok);
        assert!(lan_capture("CapEff:\t0000000000002000\n").ok, "bit 13 alone");
        assert!(!lan_capture("").ok);
    }

    #[test]
    fn the_table_says_what_failed_and_what_to_do() {
        let checks = [Check::ok("disk", "plenty"), Check::fail("clock", "fix it")];
        assert_eq!(
            table(&checks),
            "OK   disk: plenty\nFAIL clock: fix it\n1 check(s) failed: fix them and run `tally-agent doctor` again\n"
        );
    }
}
