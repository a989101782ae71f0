//! Passive discovery of the devices on the socket's LAN (R29): one packet socket per LAN
//! interface, running the kernel filter of [`tally_common::lan::filter`], so that only the ARP,
//! neighbour discovery and DHCP requests received there reach the agent, never the site's
//! traffic and never what the socket sends. A capture blocks in the kernel until such a frame
//! arrives: read on a thread of its own, it costs the 5-second tick nothing.

use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use tally_common::lan::{Mac, SNAP_LENGTH, filter, identify};

pub use tally_common::lan::Protocol as Via;

mod day;

use crate::status::LanStatus;

pub use self::day::{DeviceDay, Devices, LanDay, Recorded, Seen, SharedDevices};

/// `ETH_P_ALL`: every protocol, before the filter.
const ETH_P_ALL: u16 = 0x0003;
/// How long a capture lets frames gather after the first before reading them
/// ([`Capture::next_burst`]): a device is counted at most this late, and a LAN full of chatty
/// devices wakes the agent a few times a minute.
pub const GATHER: Duration = Duration::from_secs(30);
/// The capture socket's receive buffer: thousands of frames, a flood's gathering (what does not
/// fit is dropped by the kernel; a device repeats itself).
const RECEIVE_BUFFER: usize = 4 << 20;

/// A capture socket on one LAN interface.
#[derive(Debug)]
pub struct Capture {
    socket: Socket,
    pub interface: String,
    /// Frames the kernel let through: what the filter could not tell from a device's.
    read: AtomicU64,
}

impl Capture {
    /// Opens the capture on `interface` (its `ifindex`); needs CAP_NET_RAW.
    pub fn open(interface: &str, ifindex: u32) -> io::Result<Capture> {
        let every_protocol = Protocol::from(i32::from(ETH_P_ALL.to_be()));
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(every_protocol))?;
        let program: Vec<SockFilter> =
            filter(ifindex).iter().map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k)).collect();
        socket.attach_filter(&program)?;
        // Room for the frames of a burst's gathering: more than the socket's default when the
        // agent may (CAP_NET_ADMIN, which the unit grants).
        if rustix::net::sockopt::set_socket_recv_buffer_size_force(&socket, RECEIVE_BUFFER).is_err() {
            socket.set_recv_buffer_size(RECEIVE_BUFFER)?;
        }
        // Frames queued between the socket's creation and its filter: dropped unread.
        socket.set_nonblocking(true)?;
        let mut scratch = [0u8; 1];
        while (&socket).read(&mut scratch).is_ok() {}
        socket.set_nonblocking(false)?;
        Ok(Capture { socket, interface: interface.to_owned(), read: AtomicU64::new(0) })
    }

    /// The next device a frame identifies, but for the socket's own addresses `own`; blocks
    /// until one arrives.
    pub fn next(&self, own: &[Mac]) -> io::Result<(Mac, Via)> {
        let mut frame = [0u8; SNAP_LENGTH as usize];
        loop {
            let length = (&self.socket).read(&mut frame)?;
            self.read.fetch_add(1, Ordering::Relaxed);
            match identify(&frame[..length]) {
                Some((mac, via)) if !own.contains(&mac) => return Ok((mac, via)),
                _ => continue,
            }
        }
    }

    /// Blocks until a device's frame arrives, lets the frames that follow gather in the socket
    /// for `gather`, then hands `found` every device they identify: one wake-up for a burst, not
    /// one per frame (a LAN's devices repeat themselves; the count needs each once a day).
    pub fn next_burst(&self, own: &[Mac], gather: Duration, found: &mut impl FnMut(Mac, Via)) -> io::Result<()> {
        let (mac, via) = self.next(own)?;
        found(mac, via);
        std::thread::sleep(gather);
        self.socket.set_nonblocking(true)?;
        let drained = loop {
            match self.next(own) {
                Ok((mac, via)) => found(mac, via),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.socket.set_nonblocking(false)?;
        drained
    }

    /// How many frames reached the agent since the capture opened.
    pub fn frames_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

/// `IFF_UP` in an interface's `flags`.
const IFF_UP: u32 = 0x1;
/// `ARPHRD_ETHER`: the frames start with an Ethernet header.
const ARPHRD_ETHER: u32 = 1;

/// A LAN interface to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LanInterface {
    pub name: String,
    pub ifindex: u32,
}

fn sysfs_number(sysfs_net: &Path, name: &str, file: &str) -> Option<u32> {
    let text = std::fs::read_to_string(sysfs_net.join(name).join(file)).ok()?;
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The interfaces whose devices are counted: those of `configured` that exist, or by default
/// every Ethernet interface that is up and is neither one of `wans`, loopback, nor one of the
/// agent's IFB devices. Read from `sysfs_net` (`/sys/class/net`).
pub fn interfaces(sysfs_net: &Path, configured: &[String], wans: &[String]) -> Vec<LanInterface> {
    let is_lan = |name: &String| {
        !wans.contains(name)
            && !name.starts_with(crate::shaper::IFB_PREFIX)
            && sysfs_number(sysfs_net, name, "type") == Some(ARPHRD_ETHER)
            && sysfs_number(sysfs_net, name, "flags").is_some_and(|f| f & IFF_UP != 0)
    };
    let mut names: Vec<String> = match configured.is_empty() {
        false => configured.to_vec(),
        true => std::fs::read_dir(sysfs_net)
            .map(|dir| dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(is_lan).collect())
            .unwrap_or_default(),
    };
    names.sort();
    names
        .into_iter()
        .filter_map(|name| Some(LanInterface { ifindex: sysfs_number(sysfs_net, &name, "ifindex")?, name }))
        .collect()
}

/// The hardware addresses of every interface of this socket: never a device (R29).
pub fn own_addresses(sysfs_net: &Path) -> Vec<Mac> {
    let Ok(dir) = std::fs::read_dir(sysfs_net) else { return Vec::new() };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("address")).ok()?.trim().parse::<Mac>().ok())
        .filter(|mac| mac.is_device())
        .collect()
}

/// At most this many addresses of a subnet are swept: a /22 (around the socket's address in a
/// larger subnet).
const SWEEP_PREFIX: u8 = 22;
/// The discard service: the datagram is dropped; the ARP request the kernel sends to deliver it
/// is what makes a quiet device answer, and its answer what the capture sees.
const DISCARD_PORT: u16 = 9;
/// Between two datagrams of a sweep: a /22 takes about a second, and no burst fills the
/// kernel's neighbour table at once.
const SWEEP_PACE: std::time::Duration = std::time::Duration::from_millis(1);

/// The addresses a sweep of the subnet `address/prefix` sends to: every host address of it (of
/// the /22 around `address` when it is larger) but `address` itself; none of a point-to-point
/// /31 or a /32.
pub fn sweep_targets(address: std::net::Ipv4Addr, prefix: u8) -> Vec<std::net::Ipv4Addr> {
    if prefix > 30 {
        return Vec::new();
    }
    let prefix = prefix.max(SWEEP_PREFIX);
    let mask = u32::MAX << (32 - prefix);
    let network = u32::from(address) & mask;
    let broadcast = network | !mask;
    (network + 1..broadcast).map(std::net::Ipv4Addr::from).filter(|a| *a != address).collect()
}

/// Sweeps `interface`'s IPv4 subnets once: an empty datagram to each address, sent out of that
/// interface only. Returns how many were sent.
pub fn sweep(interface: &str) -> io::Result<usize> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    socket.bind_device(Some(interface.as_bytes()))?;
    let subnets: Vec<(std::net::Ipv4Addr, u8)> = pnet_datalink::interfaces()
        .into_iter()
        .filter(|i| i.name == interface)
        .flat_map(|i| i.ips)
        .filter_map(|ip| match ip.ip() {
            std::net::IpAddr::V4(address) => Some((address, ip.prefix())),
            std::net::IpAddr::V6(_) => None,
        })
        .collect();
    let mut sent = 0;
    for (address, prefix) in subnets {
        for target in sweep_targets(address, prefix) {
            // A device that is not there is the kernel's business (its ARP request goes unanswered).
            if socket.send_to(&[], &std::net::SocketAddrV4::new(target, DISCARD_PORT).into()).is_ok() {
                sent += 1;
            }
            std::thread::sleep(SWEEP_PACE);
        }
    }
    Ok(sent)
}

/// Sweeps the interfaces `names` every `every` on a thread of its own (`lan_arp_sweep_minutes`),
/// the first time at once.
pub fn sweep_every(names: Vec<String>, every: std::time::Duration) {
    let spawned = std::thread::Builder::new().name("lan-sweep".into()).spawn(move || {
        loop {
            for name in &names {
                match sweep(name) {
                    Ok(sent) => tracing::debug!(interface = %name, addresses = sent, "LAN swept (ARP)"),
                    Err(e) => tracing::warn!(interface = %name, error = %e, "cannot sweep this LAN interface"),
                }
            }
            std::thread::sleep(every);
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the LAN sweep thread");
    }
}

/// What `status` shows of the LAN: the interfaces watched, with `today`'s figures.
fn shown(interfaces: Vec<String>, today: &DeviceDay) -> LanStatus {
    LanStatus {
        interfaces,
        devices_today: today.devices.len(),
        private_addresses_today: today.locally_administered(),
        over_limit_today: today.over_limit,
    }
}

/// Watches `lan` until the process ends: a thread per interface blocks on its capture, and
/// today's devices are kept in `devices` and shown in `status`; returns the interfaces watched.
/// Without CAP_NET_RAW, one ERROR (and none watched); measuring goes on either way.
pub fn watch(
    lan: &[LanInterface],
    own: Vec<Mac>,
    limit: usize,
    wall: impl Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync + 'static,
    devices: SharedDevices,
    status: crate::status::SharedStatus,
) -> Vec<String> {
    let mut captures = Vec::new();
    for interface in lan {
        match Capture::open(&interface.name, interface.ifindex) {
            Ok(capture) => captures.push(capture),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                tracing::error!(
                    error = %e,
                    "LAN device discovery needs CAP_NET_RAW (the unit grants it): no device is counted; measuring goes on"
                );
                return Vec::new();
            }
            Err(e) => tracing::error!(interface = %interface.name, error = %e, "cannot watch this LAN interface"),
        }
    }
    let names: Vec<String> = captures.iter().map(|c| c.interface.clone()).collect();
    if names.is_empty() {
        tracing::info!("no LAN interface to watch for devices");
        return names;
    }
    tracing::info!(interfaces = %names.join(" "), "watching the LAN for devices (ARP, neighbour discovery, DHCP)");
    status.lock().unwrap_or_else(PoisonError::into_inner).lan =
        Some(shown(names.clone(), &devices.lock().unwrap_or_else(PoisonError::into_inner).today));
    let wall = Arc::new(wall);
    let own = Arc::new(own);
    for capture in captures {
        let (devices, status, wall, own) = (devices.clone(), status.clone(), wall.clone(), own.clone());
        let spawned = std::thread::Builder::new().name(format!("lan-{}", capture.interface)).spawn(move || {
            loop {
                let mut added = false;
                let mut record = |mac, via| {
                    let mut devices = devices.lock().unwrap_or_else(PoisonError::into_inner);
                    let recorded = devices.record(mac, via, wall(), limit);
                    if recorded == (Recorded::OverLimit { first: true }) {
                        tracing::warn!(
                            limit,
                            "more LAN devices today than max_lan_devices_per_day: the rest are counted, not kept"
                        );
                    }
                    added |= recorded != Recorded::Again;
                };
                if let Err(e) = capture.next_burst(&own, GATHER, &mut record) {
                    tracing::error!(interface = %capture.interface, error = %e, "LAN capture ended");
                    return;
                }
                if added {
                    let today = devices.lock().unwrap_or_else(PoisonError::into_inner).today.clone();
                    let mut shown = status.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(lan) = shown.lan.take() {
                        shown.lan = Some(self::shown(lan.interfaces, &today));
                    }
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a LAN capture thread");
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> Mac {
        Mac([0x02 * (n % 2), 0x1b, 0x21, 0, 0, n])
    }

    /// The capture threads' days: saved when a device is added and when the day ends; what a
    /// full disk did not save is saved with the next.
    #[test]
    fn a_day_is_saved_when_it_gains_a_device_and_when_it_ends() {
        let at = |text: &str| text.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        let devices = Devices::new(DeviceDay::new(at("2026-11-30T00:00:00Z").date_naive()));
        let mut devices = devices.lock().unwrap();
        assert!(devices.take_changed().is_empty());
        devices.record(mac(1), Via::Arp, at("2026-11-30T23:59:59Z"), 10);
        let saved = devices.take_changed();
        assert_eq!(saved.len(), 1);
        devices.record(mac(1), Via::Arp, at("2026-11-30T23:59:59Z"), 10);
        assert!(devices.take_changed().is_empty(), "a sighting again changes no device");
        // Midnight: yesterday is saved whole, today once it has a device.
        devices.record(mac(2), Via::Dhcp, at("2026-12-01T00:00:00Z"), 10);
        let saved = devices.take_changed();
        let days: Vec<_> = saved.iter().map(|d| (d.day.to_string(), d.devices.len())).collect();
        assert_eq!(days, [("2026-11-30".to_owned(), 1), ("2026-12-01".to_owned(), 1)]);
        devices.put_back(saved.clone());
        assert_eq!(devices.take_changed(), saved, "not saved: kept for the next save");
    }

    #[test]
    fn a_sweep_covers_the_subnet_up_to_a_22_but_the_socket() {
        let address = |text: &str| text.parse::<std::net::Ipv4Addr>().unwrap();
        let small = sweep_targets(address("192.0.2.2"), 24);
        assert_eq!((small.len(), small[0], small[252]), (253, address("192.0.2.1"), address("192.0.2.254")));
        assert!(!small.contains(&address("192.0.2.2")));
        let large = sweep_targets(address("10.1.2.3"), 16);
        assert_eq!((large.len(), large[0], large[1020]), (1_021, address("10.1.0.1"), address("10.1.3.254")));
        assert_eq!(sweep_targets(address("10.0.0.1"), 30), [address("10.0.0.2")]);
        assert!(sweep_targets(address("10.0.0.1"), 31).is_empty() && sweep_targets(address("10.0.0.1"), 32).is_empty());
    }

    #[test]
    fn a_day_keeps_each_device_once_with_its_first_and_last_sighting() {
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let mut today = DeviceDay::new(day);
        assert_eq!(today.record(mac(1), Via::Arp, 100, 3), Recorded::New);
        assert_eq!(today.record(mac(1), Via::Dhcp, 50, 3), Recorded::Again);
        assert_eq!(today.record(mac(1), Via::Arp, 400, 3), Recorded::Again);
        assert_eq!(today.devices[&mac(1)], Seen { first: 50, last: 400, via: Via::Arp });
        assert_eq!(today.record(mac(2), Via::NeighbourDiscovery, 120, 3), Recorded::New);
        assert_eq!(today.record(mac(3), Via::Dhcp, 130, 3), Recorded::New);
        // Full: counted, the first refusal said once; a known device still moves.
        assert_eq!(today.record(mac(4), Via::Arp, 140, 3), Recorded::OverLimit { first: true });
        assert_eq!(today.record(mac(5), Via::Arp, 150, 3), Recorded::OverLimit { first: false });
        assert_eq!(today.record(mac(2), Via::Arp, 160, 3), Recorded::Again);
        assert_eq!((today.devices.len(), today.over_limit, today.locally_administered()), (3, 2, 2));
    }
}
