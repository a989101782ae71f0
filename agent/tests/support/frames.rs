//! Frames a LAN's devices send (R29), built byte by byte, and `ip` for the tests that make LANs.

use std::process::Command;

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
