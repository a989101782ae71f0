//! Devices on a socket's LAN (R29): a hardware address seen in ARP, IPv6 neighbour discovery or
//! a DHCP client request, and nothing else.
//!
//! - [`Mac`]: a hardware address, with the bits R29 and the device meter read (broadcast or
//!   multicast: never a device; locally administered: a randomized, private address).
//! - [`identify`]: the device an Ethernet frame identifies, if any. The frame comes from a
//!   peer on the LAN and may be anything: every length is checked, nothing panics.
//! - [`filter`]: the classic BPF program a capture socket runs in the kernel, so that only the
//!   frames [`identify`] reads, received on one interface, are copied to the agent.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A hardware (MAC) address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Group addresses (broadcast among them) name no one device.
    pub fn is_group(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Set by the device itself, not by its maker: phones' private (randomized) addresses.
    pub fn is_locally_administered(self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// Whether it can name a device at all: not a group address, not all zeros.
    pub fn is_device(self) -> bool {
        !self.is_group() && self.0 != [0; 6]
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Mac {
    type Err = String;

    /// Six hexadecimal octets separated by `:` or `-`.
    fn from_str(text: &str) -> Result<Mac, String> {
        let octets: Vec<&str> = text.split([':', '-']).collect();
        let bad = || format!("{text:?} is not a hardware address (aa:bb:cc:dd:ee:ff)");
        if octets.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0; 6];
        for (slot, octet) in mac.iter_mut().zip(octets) {
            if octet.len() != 2 {
                return Err(bad());
            }
            *slot = u8::from_str_radix(octet, 16).map_err(|_| bad())?;
        }
        Ok(Mac(mac))
    }
}

/// What identified a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    Arp,
    NeighbourDiscovery,
    Dhcp,
}

impl Protocol {
    /// Its name in the collector's store and logs.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Arp => "arp",
            Protocol::NeighbourDiscovery => "neighbour_discovery",
            Protocol::Dhcp => "dhcp",
        }
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: [u16; 2] = [0x8100, 0x88a8];
const ICMPV6: u8 = 58;
const UDP: u8 = 17;
const DHCP_SERVER_PORT: u16 = 67;

/// The device `frame` (an Ethernet frame, from its destination address on) identifies: the
/// sender of an ARP packet, the source (or, in an advertisement, target) link-layer address of
/// a neighbour discovery message, the client of a DHCP request. `None` for anything else, for a
/// truncated or malformed packet, and for an address that names no device ([`Mac::is_device`]).
pub fn identify(frame: &[u8]) -> Option<(Mac, Protocol)> {
    let mut ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let mut payload = frame.get(14..)?;
    // At most two VLAN tags (802.1Q, 802.1ad), should the kernel leave them in.
    for _ in 0..2 {
        if !ETHERTYPE_VLAN.contains(&ethertype) {
            break;
        }
        ethertype = u16::from_be_bytes([*payload.get(2)?, *payload.get(3)?]);
        payload = payload.get(4..)?;
    }
    let found = match ethertype {
        ETHERTYPE_ARP => (arp_sender(payload)?, Protocol::Arp),
        ETHERTYPE_IPV6 => (neighbour(payload)?, Protocol::NeighbourDiscovery),
        ETHERTYPE_IPV4 => (dhcp_client(payload)?, Protocol::Dhcp),
        _ => return None,
    };
    found.0.is_device().then_some(found)
}

fn mac_at(bytes: &[u8], at: usize) -> Option<Mac> {
    Some(Mac(bytes.get(at..at + 6)?.try_into().ok()?))
}

/// ARP over Ethernet for IPv4: the sender's hardware address.
fn arp_sender(arp: &[u8]) -> Option<Mac> {
    let (hardware, protocol) = (arp.get(0..2)?, arp.get(2..4)?);
    if hardware != [0, 1] || protocol != [0x08, 0x00] || arp.get(4..6)? != [6, 4] {
        return None;
    }
    mac_at(arp, 8)
}

/// IPv6 neighbour discovery (router and neighbour solicitations and advertisements, hop limit
/// 255 as RFC 4861 requires): the source link-layer address option, or in a neighbour
/// advertisement the target link-layer address (the advertiser's own).
fn neighbour(ipv6: &[u8]) -> Option<Mac> {
    if ipv6.first()? >> 4 != 6 || *ipv6.get(6)? != ICMPV6 || *ipv6.get(7)? != 255 {
        return None;
    }
    let icmp = ipv6.get(40..)?;
    let (fixed, wanted) = match icmp.first()? {
        133 => (8, 1),  // router solicitation
        134 => (16, 1), // router advertisement
        135 => (24, 1), // neighbour solicitation
        136 => (24, 2), // neighbour advertisement
        _ => return None,
    };
    let mut options = icmp.get(fixed..)?;
    while options.len() >= 8 {
        let (kind, units) = (options[0], usize::from(options[1]));
        if units == 0 {
            return None; // RFC 4861: a zero-length option makes the message invalid
        }
        // The option's whole length must fit the packet before any of it is read: one that
        // claims more than the packet holds makes the message invalid.
        let option = options.get(..units * 8)?;
        if kind == wanted {
            return mac_at(option, 2);
        }
        options = &options[units * 8..];
    }
    None
}

/// A DHCP (BOOTP) request from a client (UDP to port 67, an unfragmented IPv4 packet): its
/// client hardware address.
fn dhcp_client(ipv4: &[u8]) -> Option<Mac> {
    let header = usize::from(ipv4.first()? & 0x0f) * 4;
    let fragment = u16::from_be_bytes([*ipv4.get(6)?, *ipv4.get(7)?]);
    if ipv4.first()? >> 4 != 4 || header < 20 || *ipv4.get(9)? != UDP || fragment & 0x3fff != 0 {
        return None;
    }
    let udp = ipv4.get(header..)?;
    if u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]) != DHCP_SERVER_PORT {
        return None;
    }
    let bootp = udp.get(8..)?;
    // A request (op 1) for Ethernet (htype 1, hlen 6).
    if bootp.get(0..3)? != [1, 1, 6] {
        return None;
    }
    mac_at(bootp, 28)
}

/// One instruction of a classic BPF program (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfInstruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const fn op(code: u16, jt: u8, jf: u8, k: u32) -> BpfInstruction {
    BpfInstruction { code, jt, jf, k }
}

// Classic BPF opcodes (linux/filter.h).
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_W_ABS: u16 = 0x20;
const LDX_MSH: u16 = 0xb1;
const LD_H_IND: u16 = 0x48;
const JEQ: u16 = 0x15;
const JSET: u16 = 0x45;
const JGE: u16 = 0x35;
const JGT: u16 = 0x25;
const RET: u16 = 0x06;
/// The ancillary loads of the packet's type and its interface (`SKF_AD_OFF + SKF_AD_PKTTYPE`,
/// `SKF_AD_OFF + SKF_AD_IFINDEX`).
const PACKET_TYPE: u32 = 0xffff_f000 + 4;
const IFINDEX: u32 = 0xffff_f000 + 8;
/// `PACKET_OUTGOING`: a frame this host sends.
const OUTGOING: u32 = 4;
/// How many bytes of an accepted frame are copied: enough for every field [`identify`] reads
/// (a router advertisement's options included).
pub const SNAP_LENGTH: u32 = 512;

/// The kernel's filter for a capture socket on interface `ifindex`: frames it receives there
/// (not those it sends) that are ARP, ICMPv6 router or neighbour solicitations or
/// advertisements, or UDP to port 67 in an unfragmented IPv4 packet; the first [`SNAP_LENGTH`]
/// bytes of each. Everything else stays in the kernel.
pub fn filter(ifindex: u32) -> [BpfInstruction; 22] {
    let mut program = [op(RET, 0, 0, 0); 22];
    program[0] = op(LD_W_ABS, 0, 0, IFINDEX);
    program[1] = op(JEQ, 0, 19, ifindex); // → 21, drop
    program[2..].copy_from_slice(&FRAMES);
    program
}

/// [`filter`] after its interface's check (jumps are relative).
const FRAMES: [BpfInstruction; 20] = [
    op(LD_W_ABS, 0, 0, PACKET_TYPE),
    op(JEQ, 17, 0, OUTGOING), // → 19, drop
    op(LD_H_ABS, 0, 0, 12),
    op(JEQ, 14, 0, ETHERTYPE_ARP as u32), // → 18, accept
    op(JEQ, 0, 5, ETHERTYPE_IPV6 as u32), // else → 10
    // IPv6: ICMPv6 of types 133 to 136.
    op(LD_B_ABS, 0, 0, 14 + 6),
    op(JEQ, 0, 12, ICMPV6 as u32),
    op(LD_B_ABS, 0, 0, 14 + 40),
    op(JGE, 0, 10, 133),
    op(JGT, 9, 8, 136),
    // 10. IPv4: UDP, not a later fragment, to port 67.
    op(JEQ, 0, 8, ETHERTYPE_IPV4 as u32),
    op(LD_B_ABS, 0, 0, 14 + 9),
    op(JEQ, 0, 6, UDP as u32),
    op(LD_H_ABS, 0, 0, 14 + 6),
    op(JSET, 4, 0, 0x3fff), // more fragments, or an offset
    op(LDX_MSH, 0, 0, 14),
    op(LD_H_IND, 0, 0, 14 + 2),
    op(JEQ, 0, 1, DHCP_SERVER_PORT as u32),
    op(RET, 0, 0, SNAP_LENGTH), // 18. accept
    op(RET, 0, 0, 0),           // 19. drop
];

#[cfg(test)]
mod frames {
    //! Frames as devices send them.

    pub(super) const DEVICE: [u8; 6] = [0x3c, 0x22, 0xfb, 0x10, 0x20, 0x30];

    fn ethernet(source: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0xff; 6];
        frame.extend(source);
        frame.extend(ethertype.to_be_bytes());
        frame.extend(payload);
        frame
    }

    pub(super) fn arp_request(sender: [u8; 6]) -> Vec<u8> {
        let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
        arp.extend(sender);
        arp.extend([192, 168, 1, 23]);
        arp.extend([0; 6]);
        arp.extend([192, 168, 1, 1]);
        ethernet(sender, 0x0806, &arp)
    }

    /// An ICMPv6 message of `kind` with `fixed` bytes before its options, and one link-layer
    /// address option of `option` kind.
    pub(super) fn ndp(kind: u8, fixed: usize, option: u8, mac: [u8; 6], hop_limit: u8) -> Vec<u8> {
        let mut icmp = vec![kind, 0, 0, 0];
        icmp.resize(fixed, 0);
        icmp.extend([option, 1]);
        icmp.extend(mac);
        let mut ipv6 = vec![0x60, 0, 0, 0];
        ipv6.extend((icmp.len() as u16).to_be_bytes());
        ipv6.extend([58, hop_limit]);
        ipv6.extend([0xfe, 0x80].iter().chain(&[0; 14]));
        ipv6.extend([0xff, 0x02].iter().chain(&[0; 13]).chain(&[1]));
        ipv6.extend(icmp);
        ethernet(mac, 0x86dd, &ipv6)
    }

    /// A DHCP discover from `client` (UDP 68 → 67), with the IPv4 flags and fragment field.
    pub(super) fn dhcp_discover(client: [u8; 6], fragment: u16) -> Vec<u8> {
        let mut bootp = vec![1, 1, 6, 0, 0x12, 0x34, 0x56, 0x78];
        bootp.resize(28, 0);
        bootp.extend(client);
        bootp.resize(236, 0);
        bootp.extend([99, 130, 83, 99, 53, 1, 1, 255]);
        let mut udp = vec![0, 68, 0, 67];
        udp.extend(((bootp.len() + 8) as u16).to_be_bytes());
        udp.extend([0, 0]);
        udp.extend(bootp);
        let mut ipv4 = vec![0x45, 0];
        ipv4.extend(((udp.len() + 20) as u16).to_be_bytes());
        ipv4.extend([0, 0]);
        ipv4.extend(fragment.to_be_bytes());
        ipv4.extend([64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255]);
        ipv4.extend(udp);
        ethernet(client, 0x0800, &ipv4)
    }
}

#[cfg(test)]
mod tests {
    use super::frames::*;
    use super::*;

    #[test]
    fn arp_ndp_and_dhcp_name_their_sender() {
        let device = Mac(DEVICE);
        assert_eq!(identify(&arp_request(DEVICE)), Some((device, Protocol::Arp)));
        for (kind, fixed, option) in [(133, 8, 1), (134, 16, 1), (135, 24, 1), (136, 24, 2)] {
            let frame = ndp(kind, fixed, option, DEVICE, 255);
            assert_eq!(identify(&frame), Some((device, Protocol::NeighbourDiscovery)), "type {kind}");
        }
        assert_eq!(identify(&dhcp_discover(DEVICE, 0x4000)), Some((device, Protocol::Dhcp)), "DF set");
    }

    #[test]
    fn what_is_not_a_device_announcing_itself_is_ignored() {
        // A neighbour advertisement's source option is not the advertiser's; a message that
        // crossed a router (hop limit below 255) is no neighbour's.
        assert_eq!(identify(&ndp(136, 24, 1, DEVICE, 255)), None);
        assert_eq!(identify(&ndp(135, 24, 1, DEVICE, 64)), None);
        assert_eq!(identify(&ndp(128, 8, 1, DEVICE, 255)), None, "an echo request");
        // A later fragment, a DHCP answer (op 2), a group or empty address.
        assert_eq!(identify(&dhcp_discover(DEVICE, 0x0010)), None);
        let mut reply = dhcp_discover(DEVICE, 0);
        reply[14 + 20 + 8] = 2;
        assert_eq!(identify(&reply), None);
        assert_eq!(identify(&arp_request([0xff; 6])), None);
        assert_eq!(identify(&arp_request([0x01, 0, 0x5e, 0, 0, 1])), None);
        assert_eq!(identify(&arp_request([0; 6])), None);
    }

    #[test]
    fn a_vlan_tag_is_looked_through() {
        let plain = arp_request(DEVICE);
        let mut tagged = plain[..12].to_vec();
        tagged.extend([0x81, 0x00, 0x00, 0x0a]);
        tagged.extend(&plain[12..]);
        assert_eq!(identify(&tagged), Some((Mac(DEVICE), Protocol::Arp)));
    }

    #[test]
    fn every_truncation_of_a_frame_is_refused_without_a_panic() {
        for frame in [arp_request(DEVICE), ndp(134, 16, 1, DEVICE, 255), dhcp_discover(DEVICE, 0)] {
            assert!(identify(&frame).is_some());
            let needed = (0..frame.len()).find(|&n| identify(&frame[..n]).is_some()).unwrap_or(frame.len());
            for n in 0..needed {
                assert_eq!(identify(&frame[..n]), None, "{n} bytes");
            }
        }
        // A zero-length option ends the walk instead of looping.
        let mut zero = ndp(135, 24, 3, DEVICE, 255);
        zero[14 + 40 + 24 + 1] = 0;
        assert_eq!(identify(&zero), None);
        // An option that claims 200 × 8 bytes of a packet that has 8 identifies nobody, even
        // though its first bytes hold an address.
        let mut long = ndp(135, 24, 1, DEVICE, 255);
        long[14 + 40 + 24 + 1] = 200;
        assert_eq!(identify(&long), None);
    }

    /// Runs [`filter`] of interface 7 on `frame` as the kernel would for a frame of
    /// `packet_type` received on interface 7: the bytes it keeps. Only the instructions the
    /// program uses.
    fn filtered(frame: &[u8], packet_type: u32) -> u32 {
        filtered_on(frame, packet_type, 7)
    }

    fn filtered_on(frame: &[u8], packet_type: u32, ifindex: u32) -> u32 {
        let program = filter(7);
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let load = |at: u32, width: usize| -> Option<u32> {
            let bytes = frame.get(at as usize..at as usize + width)?;
            Some(bytes.iter().fold(0, |v, b| v << 8 | u32::from(*b)))
        };
        loop {
            let BpfInstruction { code, jt, jf, k } = program[pc];
            pc += 1;
            let jump = |taken: bool| usize::from(if taken { jt } else { jf });
            match code {
                LD_W_ABS if k == PACKET_TYPE => a = packet_type,
                LD_W_ABS if k == IFINDEX => a = ifindex,
                LD_H_ABS => match load(k, 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_B_ABS => match load(k, 1) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LDX_MSH => match load(k, 1) {
                    Some(v) => x = (v & 0xf) * 4,
                    None => return 0,
                },
                LD_H_IND => match load(x + k, 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                JEQ => pc += jump(a == k),
                JGT => pc += jump(a > k),
                JGE => pc += jump(a >= k),
                JSET => pc += jump(a & k != 0),
                RET => return k,
                other => panic!("opcode {other:#x} at {}", pc - 1),
            }
        }
    }

    #[test]
    fn the_kernel_filter_keeps_what_identifies_a_device_and_drops_the_rest() {
        let kept = [
            arp_request(DEVICE),
            ndp(133, 8, 1, DEVICE, 255),
            ndp(134, 16, 1, DEVICE, 255),
            ndp(135, 24, 1, DEVICE, 255),
            ndp(136, 24, 2, DEVICE, 255),
            dhcp_discover(DEVICE, 0),
            dhcp_discover(DEVICE, 0x4000),
        ];
        for frame in &kept {
            assert!(identify(frame).is_some());
            assert_eq!(filtered(frame, 0), SNAP_LENGTH, "received: {frame:02x?}");
            assert_eq!(filtered(frame, 1), SNAP_LENGTH, "broadcast");
            assert_eq!(filtered(frame, OUTGOING), 0, "sent by this host");
            assert_eq!(filtered_on(frame, 0, 8), 0, "received on another interface");
        }
        let mut tcp = dhcp_discover(DEVICE, 0);
        tcp[14 + 9] = 6;
        let mut to_68 = dhcp_discover(DEVICE, 0);
        to_68[14 + 20 + 3] = 68;
        let mut long_header = dhcp_discover(DEVICE, 0);
        long_header[14] = 0x46; // the UDP header is 4 bytes further: port 67 is not where it was
        let dropped = [
            ndp(128, 8, 1, DEVICE, 255),
            ndp(137, 8, 1, DEVICE, 255),
            dhcp_discover(DEVICE, 0x0010),
            dhcp_discover(DEVICE, 0x2000),
            tcp,
            to_68,
            long_header,
            vec![0; 60],
            vec![],
        ];
        for frame in &dropped {
            assert_eq!(filtered(frame, 0), 0, "{frame:02x?}");
        }
        // The filter never keeps less than what identify reads, of any frame.
        for len in 0..kept[5].len() {
            let cut = &kept[5][..len];
            assert!(identify(cut).is_none() || filtered(cut, 0) == SNAP_LENGTH, "{len}");
        }
    }

    proptest::proptest! {
        /// Any bytes, and any good frame with bytes changed: no panic, and only devices named
        /// (the fuzz target `lan_frame` does the same, longer).
        #[test]
        fn no_frame_panics_or_names_a_group(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            which in 0usize..3,
            changes in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 0..6),
        ) {
            let mut frame = [arp_request(DEVICE), ndp(134, 16, 1, DEVICE, 255), dhcp_discover(DEVICE, 0)][which].clone();
            for (at, byte) in changes {
                if let Some(slot) = frame.get_mut(at) {
                    *slot = byte;
                }
            }
            for candidate in [&bytes, &frame] {
                if let Some((mac, _)) = identify(candidate) {
                    proptest::prop_assert!(mac.is_device());
                }
            }
        }
    }

    #[test]
    fn addresses_read_and_show_as_colon_hex() {
        let mac: Mac = "3C:22:fb:10:20:30".parse().unwrap();
        assert_eq!((mac, mac.to_string()), (Mac(DEVICE), "3c:22:fb:10:20:30".to_owned()));
        assert_eq!("3c-22-fb-10-20-30".parse::<Mac>(), Ok(mac));
        for bad in ["", "3c:22:fb:10:20", "3c:22:fb:10:20:30:40", "3c:22:fb:10:20:3g", "3c:22:fb:10:2:300"] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?}");
        }
        assert!(
            !mac.is_locally_administered() && "da:a1:19:00:00:01".parse::<Mac>().unwrap().is_locally_administered()
        );
    }
}
