//! Passive discovery of the devices on the socket's LAN (R29): one packet socket per LAN
//! interface, running the kernel filter of [`tally_common::lan::filter`], so that only the ARP,
//! neighbour discovery and DHCP requests received there reach the agent, never the site's
//! traffic and never what the socket sends. A capture blocks in the kernel until such a frame
//! arrives: read on a thread of its own, it costs the 5-second tick nothing.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};

use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use tally_common::lan::{Mac, SNAP_LENGTH, filter, identify};

pub use tally_common::lan::Protocol as Via;

/// `ETH_P_ALL`: every protocol, before the filter.
const ETH_P_ALL: u16 = 0x0003;

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

    /// How many frames reached the agent since the capture opened.
    pub fn frames_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}
