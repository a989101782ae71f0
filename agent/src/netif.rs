//! The WAN interfaces and their counters, as the kernel shows them: which interfaces to measure
//! (configured, or those carrying a default route), their byte counters, their link speed, their
//! ifindex, and the machine's boot id (R1, R3).
//!
//! The counters come from a [`CounterSource`], read once a tick for every interface: the
//! kernel's ([`KernelCounters`]: one rtnetlink request) when `sysfs_net` is the kernel's own, or
//! a tree of plain files laid out as sysfs's ([`TreeCounters`]: tests and demos, whose trees
//! these functions write). A tree's files are opened when the interface is found and read with
//! `pread` into stack buffers: no path lookup and no allocation per tick.
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tally_common::bandwidth::Bandwidth;
use tally_common::counters::{CounterWidth, Counters, plausibility_cap};
use tally_common::sampler::{InterfaceName, InterfaceReading};

use crate::config::Config;
use crate::link_stats::LinkStats;

/// The kernel's own view of the network interfaces.
pub const KERNEL_SYSFS_NET: &str = "/sys/class/net";

/// Where a tick's counters come from.
pub trait CounterSource: std::fmt::Debug {
    /// Once a tick, before the interfaces are read: the kernel's source reads them all here.
    fn refresh(&mut self) -> io::Result<()>;
    /// `wan`'s counters as this tick read them; an error when it is gone.
    fn counters(&self, wan: &Wan, paths: &NetPaths) -> io::Result<Counters>;
}

/// The kernel's counters: every interface in one rtnetlink request a tick, by ifindex.
#[derive(Debug)]
pub struct KernelCounters {
    stats: LinkStats,
    links: Vec<(u32, Counters)>,
}

impl KernelCounters {
    pub fn open() -> io::Result<KernelCounters> {
        Ok(KernelCounters { stats: LinkStats::open()?, links: Vec::new() })
    }
}

impl CounterSource for KernelCounters {
    fn refresh(&mut self) -> io::Result<()> {
        self.stats.read(&mut self.links)
    }

    fn counters(&self, wan: &Wan, _: &NetPaths) -> io::Result<Counters> {
        let found = self.links.iter().find(|(ifindex, _)| *ifindex == wan.ifindex).map(|(_, counters)| *counters);
        found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no link of ifindex {}", wan.ifindex)))
    }
}

/// A tree of plain files laid out as sysfs's (and `/proc/net/dev`), read interface by interface.
#[derive(Debug, Default)]
pub struct TreeCounters;

impl CounterSource for TreeCounters {
    fn refresh(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn counters(&self, wan: &Wan, paths: &NetPaths) -> io::Result<Counters> {
        match &wan.source {
            Source::Sysfs { rx, tx } => Ok(Counters { rx_bytes: read_number(rx)?, tx_bytes: read_number(tx)? }),
            Source::ProcNetDev => paths.proc_net_dev(&wan.name),
        }
    }
}

/// The counter source for `paths`: the kernel's when they are the kernel's own (a tree's files
/// if its netlink socket cannot be had, said at WARN), else the tree's.
pub fn counter_source(paths: &NetPaths) -> Box<dyn CounterSource> {
    if paths.sysfs_net != Path::new(KERNEL_SYSFS_NET) {
        return Box::new(TreeCounters);
    }
    match KernelCounters::open() {
        Ok(kernel) => Box::new(kernel),
        Err(e) => {
            tracing::warn!(error = %e, "no netlink socket for the counters: reading sysfs's files, one per counter");
            Box::new(TreeCounters)
        }
    }
}

/// How wide an interface's counters are, for the wrap rule (R3): 32 bits when the configuration
/// says so (`counters_32bit`) or the kernel's `long` is (`kernel_bits`: the running kernel's for
/// the agent; a replay takes it from its flag, never from the host it runs on).
pub fn counter_width(name: &InterfaceName, config: &Config, kernel_bits: u32) -> CounterWidth {
    if config.counters_32bit.contains(name) || kernel_bits == 32 { CounterWidth::Bits32 } else { CounterWidth::Bits64 }
}

/// Where the kernel's network views are.
#[derive(Debug, Clone)]
pub struct NetPaths {
    pub sysfs_net: PathBuf,
    pub procfs: PathBuf,
}

impl NetPaths {
    pub fn from_config(config: &Config) -> Self {
        NetPaths { sysfs_net: config.sysfs_net.clone(), procfs: config.procfs.clone() }
    }

    fn interface_file(&self, name: &str, file: &str) -> PathBuf {
        self.sysfs_net.join(name).join(file)
    }

    /// The machine's boot id (`/proc/sys/kernel/random/boot_id`), 0 when unreadable.
    pub fn boot_id(&self) -> u128 {
        let text = std::fs::read_to_string(self.procfs.join("sys/kernel/random/boot_id")).unwrap_or_default();
        let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
        u128::from_str_radix(&hex, 16).unwrap_or(0)
    }

    /// The interfaces that carry an IPv4 or IPv6 default route, in the order the kernel lists them.
    pub fn default_route_interfaces(&self) -> Vec<InterfaceName> {
        let mut names: Vec<InterfaceName> = Vec::new();
        let mut add = |name: &str| {
            if let Ok(name) = crate::config::interface_name(name)
                && name != "lo"
                && !names.contains(&name)
            {
                names.push(name);
            }
        };
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        let v4 = std::fs::read_to_string(self.procfs.join("net/route")).unwrap_or_default();
        for line in v4.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 8 && f[1] == "00000000" && f[7] == "00000000" {
                add(f[0]);
            }
        }
        // dest dest_len src src_len next_hop metric refcnt use flags iface
        let v6 = std::fs::read_to_string(self.procfs.join("net/ipv6_route")).unwrap_or_default();
        for line in v6.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 10 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" {
                add(f[9]);
            }
        }
        names
    }

    /// Link speed in Mbps when the kernel knows it (`speed` is -1 or unreadable otherwise).
    pub fn speed_mbps(&self, name: &str) -> Option<u64> {
        let text = std::fs::read_to_string(self.interface_file(name, "speed")).ok()?;
        text.trim().parse::<i64>().ok().filter(|s| *s > 0).map(|s| s as u64)
    }

    /// Counters of `name` from `/proc/net/dev`, for kernels or trees without sysfs statistics.
    fn proc_net_dev(&self, name: &str) -> io::Result<Counters> {
        let text = std::fs::read_to_string(self.procfs.join("net/dev"))?;
        for line in text.lines().skip(2) {
            let Some((iface, stats)) = line.split_once(':') else { continue };
            if iface.trim() != name {
                continue;
            }
            // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes ...
            let f: Vec<u64> = stats.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            if f.len() >= 16 {
                return Ok(Counters { rx_bytes: f[0], tx_bytes: f[8] });
            }
        }
        Err(io::Error::new(io::ErrorKind::NotFound, format!("{name} is not in /proc/net/dev")))
    }
}

/// How a WAN interface's counters are read.
#[derive(Debug)]
enum Source {
    /// The statistics files, kept open: a tick reads them with `pread` at offset 0, which makes
    /// sysfs render them afresh. Once the interface is removed the kernel fails those reads
    /// (ENODEV), and the interface is looked up again by name.
    Sysfs {
        rx: File,
        tx: File,
    },
    ProcNetDev,
}

/// One WAN interface being measured.
#[derive(Debug)]
pub struct Wan {
    pub name: InterfaceName,
    pub ifindex: u32,
    pub speed_mbps: Option<u64>,
    pub cap: Bandwidth,
    pub width: CounterWidth,
    source: Source,
}

impl Wan {
    /// Finds `name`'s counters; `None` when the interface does not exist (yet).
    pub fn open(paths: &NetPaths, name: &InterfaceName, config: &Config) -> Option<Wan> {
        let ifindex = read_number(&File::open(paths.interface_file(name, "ifindex")).ok()?).ok()? as u32;
        let stats = |file| File::open(paths.interface_file(name, file));
        let source = match (stats("statistics/rx_bytes"), stats("statistics/tx_bytes")) {
            (Ok(rx), Ok(tx)) => Source::Sysfs { rx, tx },
            _ => {
                paths.proc_net_dev(name).ok()?;
                Source::ProcNetDev
            }
        };
        let speed_mbps = paths.speed_mbps(name);
        let width = counter_width(name, config, usize::BITS);
        Some(Wan {
            name: name.clone(),
            ifindex,
            speed_mbps,
            cap: plausibility_cap(speed_mbps, config.max_link_mbps),
            width,
            source,
        })
    }

    /// This tick's reading from `source`, or `None` when the interface is gone. A failed read
    /// looks the interface up again by name, which finds a re-created interface with its new
    /// ifindex.
    pub fn read(&mut self, source: &dyn CounterSource, paths: &NetPaths, config: &Config) -> Option<InterfaceReading> {
        let counters = match source.counters(self, paths) {
            Ok(counters) => counters,
            Err(_) => {
                *self = Wan::open(paths, &self.name, config)?;
                source.counters(self, paths).ok()?
            }
        };
        Some(InterfaceReading {
            name: self.name.clone(),
            ifindex: self.ifindex,
            counters,
            cap: self.cap,
            width: self.width,
        })
    }

    /// A one-line description for the log: speed, cap and (on a real system) addresses.
    pub fn describe(&self) -> String {
        let speed = self.speed_mbps.map_or("speed unknown".to_owned(), |s| format!("{s} Mbps"));
        let addresses: Vec<String> = pnet_datalink::interfaces()
            .into_iter()
            .filter(|i| i.name == self.name.as_str())
            .flat_map(|i| i.ips.into_iter().map(|ip| ip.to_string()))
            .collect();
        let addresses = if addresses.is_empty() { String::new() } else { format!(", {}", addresses.join(" ")) };
        // R3: the plausibility cap is the link speed + 5 %, or the configured fallback.
        let cap = match self.speed_mbps {
            Some(_) => format!("cap {}", self.cap),
            None => format!("cap {} from max_link_mbps, the link speed being unknown", self.cap),
        };
        format!("{} (ifindex {}, {speed}, {cap}{addresses})", self.name, self.ifindex)
    }
}

/// Reads a decimal number from the start of a small kernel file into a stack buffer.
fn read_number(file: &File) -> io::Result<u64> {
    let mut buf = [0u8; 32];
    let n = file.read_at(&mut buf, 0)?;
    let text = std::str::from_utf8(&buf[..n]).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not text"))?;
    text.trim().parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not a number"))
}

/// Writes a fake interface into a sysfs-like tree (new files, as a new interface gets): for tests
/// and demos.
pub fn write_fake_interface(
    root: &Path,
    name: &str,
    ifindex: u32,
    speed: Option<u64>,
    counters: Counters,
) -> io::Result<()> {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("statistics"))?;
    std::fs::write(dir.join("ifindex"), format!("{ifindex}\n"))?;
    std::fs::write(dir.join("speed"), speed.map_or("-1\n".to_owned(), |s| format!("{s}\n")))?;
    write_fake_counters(root, name, counters)
}

/// Updates a fake interface's counters in place (same inode, as the kernel's files).
pub fn write_fake_counters(root: &Path, name: &str, counters: Counters) -> io::Result<()> {
    let dir = root.join(name).join("statistics");
    std::fs::write(dir.join("rx_bytes"), format!("{}\n", counters.rx_bytes))?;
    std::fs::write(dir.join("tx_bytes"), format!("{}\n", counters.tx_bytes))
}

/// Removes a fake interface as the kernel removes one: reads through files still open fail
/// (the kernel answers ENODEV; here the files are emptied first), then the directory goes.
pub fn remove_fake_interface(root: &Path, name: &str) -> io::Result<()> {
    let dir = root.join(name);
    for file in ["ifindex", "statistics/rx_bytes", "statistics/tx_bytes"] {
        std::fs::write(dir.join(file), "")?;
    }
    std::fs::remove_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> NetPaths {
        NetPaths { sysfs_net: dir.join("sys"), procfs: dir.join("proc") }
    }

    #[test]
    fn default_routes_come_from_both_route_tables() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        std::fs::create_dir_all(p.procfs.join("net")).unwrap();
        std::fs::write(
            p.procfs.join("net/route"),
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth1\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
        )
        .unwrap();
        std::fs::write(
            p.procfs.join("net/ipv6_route"),
            "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 lte0\n\
             00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n",
        )
        .unwrap();
        let names: Vec<String> = p.default_route_interfaces().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["eth1", "lte0"]);
    }

    #[test]
    fn counters_come_from_sysfs_or_proc_net_dev() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let config = Config::default();
        let eth1 = crate::config::interface_name("eth1").unwrap();
        write_fake_interface(&p.sysfs_net, "eth1", 3, Some(1000), Counters { rx_bytes: 10, tx_bytes: 20 }).unwrap();
        let mut wan = Wan::open(&p, &eth1, &config).unwrap();
        assert_eq!(wan.cap, Bandwidth(1_050_000_000));
        write_fake_counters(&p.sysfs_net, "eth1", Counters { rx_bytes: 11, tx_bytes: 22 }).unwrap();
        let r = wan.read(&TreeCounters, &p, &config).unwrap();
        assert_eq!((r.counters.rx_bytes, r.counters.tx_bytes, r.ifindex), (11, 22, 3));

        let lte0 = crate::config::interface_name("lte0").unwrap();
        std::fs::create_dir_all(p.sysfs_net.join("lte0")).unwrap();
        std::fs::write(p.sysfs_net.join("lte0/ifindex"), "9\n").unwrap();
        std::fs::create_dir_all(p.procfs.join("net")).unwrap();
        std::fs::write(
            p.procfs.join("net/dev"),
            "Inter-|   Receive    |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes ...\n\
             \x20 lte0: 1234 5 0 0 0 0 0 0 5678 6 0 0 0 0 0 0\n",
        )
        .unwrap();
        let mut wan = Wan::open(&p, &lte0, &config).unwrap();
        assert_eq!(wan.speed_mbps, None);
        assert_eq!(wan.cap, Bandwidth(10_000_000_000));
        let r = wan.read(&TreeCounters, &p, &config).unwrap();
        assert_eq!((r.counters.rx_bytes, r.counters.tx_bytes), (1234, 5678));
    }

    #[test]
    fn a_re_created_interface_is_read_with_its_new_ifindex() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let config = Config::default();
        let eth1 = crate::config::interface_name("eth1").unwrap();
        write_fake_interface(&p.sysfs_net, "eth1", 3, None, Counters::default()).unwrap();
        let mut wan = Wan::open(&p, &eth1, &config).unwrap();
        remove_fake_interface(&p.sysfs_net, "eth1").unwrap();
        assert!(wan.read(&TreeCounters, &p, &config).is_none(), "gone");
        write_fake_interface(&p.sysfs_net, "eth1", 8, None, Counters::default()).unwrap();
        assert_eq!(wan.read(&TreeCounters, &p, &config).unwrap().ifindex, 8);
    }

    #[test]
    fn boot_id_is_read_as_a_number() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        std::fs::create_dir_all(p.procfs.join("sys/kernel/random")).unwrap();
        std::fs::write(p.procfs.join("sys/kernel/random/boot_id"), "0b6f1bd3-2d5c-4b3e-9c53-1e0e6a9f1b2c\n").unwrap();
        assert_eq!(p.boot_id(), 0x0b6f1bd32d5c4b3e9c531e0e6a9f1b2c);
    }
}
