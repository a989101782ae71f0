//! Every interface's byte counters from the kernel in one request: an rtnetlink `RTM_GETSTATS`
//! dump asking only for each link's 64-bit statistics (`IFLA_STATS_LINK_64`), by ifindex. One
//! `sendto` and usually one `recv` a tick, where reading sysfs takes a syscall (and a call into
//! the driver) per counter.
//!
//! An interface removed, or removed and created again, is missing from the dump under its old
//! ifindex: the meter then looks it up again by name, as when a sysfs file fails (R3).

use std::io;
use std::os::fd::OwnedFd;

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use tally_common::counters::Counters;

const NLMSG_HEADER: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWSTATS: u16 = 92;
const RTM_GETSTATS: u16 = 94;
/// `struct if_stats_msg`: family, two pads, ifindex, filter mask.
const IF_STATS_MSG: usize = 12;
const IFLA_STATS_LINK_64: u16 = 1;
/// `struct rtnl_link_stats64` begins rx_packets, tx_packets, rx_bytes, tx_bytes (u64 each).
const RX_BYTES: usize = 16;
const TX_BYTES: usize = 24;

/// A netlink socket asking the kernel for its links' statistics.
#[derive(Debug)]
pub struct LinkStats {
    socket: OwnedFd,
    sequence: u32,
    buffer: Vec<u8>,
}

impl LinkStats {
    pub fn open() -> io::Result<LinkStats> {
        let socket = rustix::net::socket_with(AddressFamily::NETLINK, SocketType::RAW, SocketFlags::CLOEXEC, None)?;
        Ok(LinkStats { socket, sequence: 0, buffer: vec![0; 32 << 10] })
    }

    /// Every link's counters, by ifindex, into `links` (cleared first).
    pub fn read(&mut self, links: &mut Vec<(u32, Counters)>) -> io::Result<()> {
        links.clear();
        self.sequence = self.sequence.wrapping_add(1);
        let mut request = [0u8; NLMSG_HEADER + IF_STATS_MSG];
        request[0..4].copy_from_slice(&((NLMSG_HEADER + IF_STATS_MSG) as u32).to_ne_bytes());
        request[4..6].copy_from_slice(&RTM_GETSTATS.to_ne_bytes());
        request[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        request[8..12].copy_from_slice(&self.sequence.to_ne_bytes());
        // if_stats_msg: AF_UNSPEC, every ifindex, only IFLA_STATS_LINK_64.
        request[NLMSG_HEADER + 8..].copy_from_slice(&(1u32 << (IFLA_STATS_LINK_64 - 1)).to_ne_bytes());
        rustix::net::sendto(&self.socket, &request, SendFlags::empty(), &SocketAddrNetlink::new(0, 0))?;
        loop {
            let (_, received) = rustix::net::recv(&self.socket, &mut self.buffer[..], RecvFlags::empty())?;
            if received > self.buffer.len() {
                return Err(invalid("a netlink message larger than its buffer"));
            }
            if parse(&self.buffer[..received], self.sequence, links)? {
                return Ok(());
            }
        }
    }
}

/// Adds the links of one datagram of the dump to `links`; true once the dump is done.
fn parse(mut datagram: &[u8], sequence: u32, links: &mut Vec<(u32, Counters)>) -> io::Result<bool> {
    while datagram.len() >= NLMSG_HEADER {
        let length = u32_at(datagram, 0) as usize;
        if length < NLMSG_HEADER || length > datagram.len() {
            return Err(invalid("a netlink message of a wrong length"));
        }
        let (message, rest) = datagram.split_at(length);
        datagram = rest.get(aligned(length) - length..).unwrap_or_default();
        if u32_at(message, 8) != sequence {
            continue; // an answer to an earlier request, given up on
        }
        match u16_at(message, 4) {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = message.get(NLMSG_HEADER..NLMSG_HEADER + 4).map_or(0, |b| u32_at(b, 0) as i32);
                return Err(io::Error::from_raw_os_error(-code));
            }
            RTM_NEWSTATS => {
                let ifindex = message.get(NLMSG_HEADER + 4..).map(|b| u32_at(b, 0));
                let counters = message.get(NLMSG_HEADER + IF_STATS_MSG..).and_then(link_64);
                if let (Some(ifindex), Some(counters)) = (ifindex, counters) {
                    links.push((ifindex, counters));
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

/// The byte counters in a message's attributes, from its `IFLA_STATS_LINK_64`.
fn link_64(mut attributes: &[u8]) -> Option<Counters> {
    while attributes.len() >= 4 {
        let length = usize::from(u16_at(attributes, 0));
        if length < 4 || length > attributes.len() {
            return None;
        }
        if u16_at(attributes, 2) == IFLA_STATS_LINK_64 && length >= 4 + TX_BYTES + 8 {
            let stats = &attributes[4..length];
            return Some(Counters { rx_bytes: u64_at(stats, RX_BYTES), tx_bytes: u64_at(stats, TX_BYTES) });
        }
        attributes = attributes.get(aligned(length)..).unwrap_or_default();
    }
    None
}

fn aligned(length: usize) -> usize {
    (length + 3) & !3
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_ne_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_ne_bytes(word)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loopback's counters from the dump lie between two reads of its sysfs files.
    #[test]
    fn the_dump_gives_each_links_counters_as_sysfs_shows_them() {
        let sysfs = |file: &str| -> u64 {
            std::fs::read_to_string(format!("/sys/class/net/lo/statistics/{file}")).unwrap().trim().parse().unwrap()
        };
        let ifindex: u32 = std::fs::read_to_string("/sys/class/net/lo/ifindex").unwrap().trim().parse().unwrap();
        let mut stats = LinkStats::open().unwrap();
        let mut links = Vec::new();
        for _ in 0..3 {
            let before = (sysfs("rx_bytes"), sysfs("tx_bytes"));
            stats.read(&mut links).unwrap();
            let after = (sysfs("rx_bytes"), sysfs("tx_bytes"));
            let lo = links.iter().find(|(i, _)| *i == ifindex).map(|(_, c)| *c).expect("the loopback is in the dump");
            assert!((before.0..=after.0).contains(&lo.rx_bytes) && (before.1..=after.1).contains(&lo.tx_bytes));
        }
        let names = std::fs::read_dir("/sys/class/net").unwrap().count();
        assert_eq!(links.len(), names, "every link of this namespace: {links:?}");
    }

    /// What a peer cannot send (the kernel is the only peer), but a wrong length must still not
    /// panic: a message cut short, an attribute past its message.
    #[test]
    fn a_damaged_answer_is_an_error_not_a_panic() {
        let mut links = Vec::new();
        let mut message = vec![0u8; NLMSG_HEADER + IF_STATS_MSG + 4];
        let length = message.len() as u32;
        message[0..4].copy_from_slice(&(length + 8).to_ne_bytes());
        assert!(parse(&message, 0, &mut links).is_err());
        message[0..4].copy_from_slice(&length.to_ne_bytes());
        message[4..6].copy_from_slice(&RTM_NEWSTATS.to_ne_bytes());
        let attribute = NLMSG_HEADER + IF_STATS_MSG;
        message[attribute..attribute + 2].copy_from_slice(&200u16.to_ne_bytes());
        assert!(!parse(&message, 0, &mut links).unwrap(), "not done");
        assert!(links.is_empty());
    }
}
