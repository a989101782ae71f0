//! `tally-agent status`: what the agent measures, what it holds, what it discarded.
//!
//! A running agent keeps a [`Status`] up to date and answers on a Unix socket in its state
//! directory (the store itself is locked by the running agent). When no agent runs, `status`
//! reads the store directly.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tally_common::bandwidth::Bandwidth;
use tally_common::bucket::Bucket;
use tally_common::sampler::{DiscardCounters, Interval};
use tally_common::time::rfc3339;
use tally_common::wire::MAX_CLOCK_OFFSET;

use crate::netif::Wan;

/// Everything `status` shows, as JSON (`--format json`) or a table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Whether this came from a running agent.
    pub running: bool,
    pub agent_version: String,
    pub store: String,
    pub interfaces: Vec<InterfaceStatus>,
    pub last_sample: Option<SampleView>,
    pub open_bucket: Option<BucketView>,
    pub pending_buckets: usize,
    pub oldest_pending: Option<String>,
    pub discarded: DiscardCounters,
    pub dropped_buckets: u64,
    /// Buckets the collector quarantined because their time was wrong (this socket's clock).
    #[serde(default)]
    pub quarantined_buckets: u64,
    /// Set while the disk is full and closed buckets are kept in memory.
    #[serde(default)]
    pub disk_full: Option<String>,
    /// `None` until the agent is enrolled.
    pub uplink: Option<UplinkStatus>,
    /// The site's cap (R17); `None` until the collector first sent one.
    pub policy: Option<PolicyStatus>,
    /// The LAN's devices (R29); `None` when no LAN interface is watched.
    #[serde(default)]
    pub lan: Option<LanStatus>,
}

/// What `status` shows of the LAN.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LanStatus {
    pub interfaces: Vec<String>,
    pub devices_today: usize,
    /// Of them, with a locally administered (randomized, private) address.
    pub private_addresses_today: usize,
    /// Sightings not kept today: the day was full (`max_lan_devices_per_day`).
    pub over_limit_today: u64,
}

/// The collector's policy for this site, and whether it is in force here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    pub version: u64,
    /// `None`: no cap.
    pub cap_bps: Option<u64>,
    /// Whether the shaping is in place; `None` when not known (the agent is not running).
    pub applied: Option<bool>,
    /// What was done, or why it failed.
    pub detail: String,
    pub at: Option<String>,
}

/// The link to the collector of an enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkStatus {
    /// The collector connected to, or tried.
    pub collector: String,
    /// `connected`, `connecting` (no attempt finished yet), `unreachable`, or `not running`.
    pub state: String,
    /// While unreachable: since when (the first failed attempt of the outage), why, and when
    /// the next attempt is (RFC 3339).
    #[serde(default)]
    pub unreachable_since: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub next_attempt_at: Option<String>,
    /// When this run last connected (RFC 3339); `None` before its first connection.
    #[serde(default)]
    pub connected_at: Option<String>,
    pub last_ack: Option<String>,
    /// This socket's clock minus the collector's, in seconds, at the last welcome (wire
    /// protocol 2); over 60 s either way, bucket times are wrong.
    #[serde(default)]
    pub clock_offset_s: Option<i64>,
    /// How many times this run connected again after losing the collector.
    #[serde(default)]
    pub reconnects: u64,
}

impl UplinkStatus {
    /// An enrolled agent's link before its first attempt ends (`connecting`), or of a stopped
    /// agent (`not running`).
    pub fn enrolled(collector: &str, state: &str) -> UplinkStatus {
        UplinkStatus {
            collector: collector.to_owned(),
            state: state.to_owned(),
            unreachable_since: None,
            last_error: None,
            next_attempt_at: None,
            connected_at: None,
            last_ack: None,
            clock_offset_s: None,
            reconnects: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub ifindex: u32,
    pub speed_mbps: Option<u64>,
    pub cap_bps: u64,
}

impl From<&Wan> for InterfaceStatus {
    fn from(wan: &Wan) -> Self {
        InterfaceStatus {
            name: wan.name.to_string(),
            ifindex: wan.ifindex,
            speed_mbps: wan.speed_mbps,
            cap_bps: wan.cap.bps(),
        }
    }
}

/// One interval as the Contract's replay JSON shows it: `bps` null and a reason when invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleView {
    pub start: String,
    pub end: String,
    pub bps: Option<u64>,
    pub up_bps: Option<u64>,
    pub down_bps: Option<u64>,
    pub reason: Option<String>,
}

impl From<&Interval> for SampleView {
    fn from(iv: &Interval) -> Self {
        let sample = iv.outcome.ok();
        SampleView {
            start: rfc3339(iv.start),
            end: rfc3339(iv.end),
            bps: iv.bps(),
            up_bps: sample.map(|s| s.up_bps),
            down_bps: sample.map(|s| s.down_bps),
            reason: iv.outcome.err().map(|r| r.to_string()),
        }
    }
}

/// A bucket as the Contract's JSON shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketView {
    pub start: String,
    pub max_bps: u64,
    pub samples: u8,
}

impl From<&Bucket> for BucketView {
    fn from(b: &Bucket) -> Self {
        BucketView { start: b.start.to_string(), max_bps: b.max_bps, samples: b.samples }
    }
}

/// The running agent's status, shared between the sampler loop and the status socket.
pub type SharedStatus = Arc<Mutex<Status>>;

/// Runs `f` on the shared status (a poisoned lock is still usable: the status is plain data).
pub fn update(shared: &SharedStatus, f: impl FnOnce(&mut Status)) {
    f(&mut shared.lock().unwrap_or_else(PoisonError::into_inner));
}

/// The count of pending buckets, the oldest one's start and why they are in memory, read
/// together so they always agree (`Store::pending_summary`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub count: usize,
    pub oldest: Option<String>,
    pub disk_full: Option<String>,
}

impl Status {
    /// Records what the store's pending buckets are.
    pub fn set_pending(&mut self, pending: Pending) {
        self.pending_buckets = pending.count;
        self.oldest_pending = pending.oldest;
        self.disk_full = pending.disk_full;
    }
}

/// Serves the shared status on `listener`, one JSON document per connection.
pub async fn serve(listener: tokio::net::UnixListener, shared: SharedStatus) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let json = {
            let status = shared.lock().unwrap_or_else(PoisonError::into_inner);
            serde_json::to_vec(&*status).unwrap_or_default()
        };
        let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, &json).await;
    }
}

/// Asks a running agent for its status; `None` when none answers on `socket`.
pub fn query(socket: &Path) -> Option<Status> {
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut json = Vec::new();
    stream.read_to_end(&mut json).ok()?;
    serde_json::from_slice(&json).ok()
}

/// The human-readable form, as of `now` (how long ago, how soon).
pub fn table(s: &Status, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut out = String::new();
    let state = if s.running { "running" } else { "not running (from its store)" };
    out += &format!("{}: {state}\nstore: {}\n", s.agent_version, s.store);
    if s.running {
        out += "interfaces:\n";
        if s.interfaces.is_empty() {
            out += "  none found (no configured WAN interface exists, or no default route)\n";
        }
        for i in &s.interfaces {
            let speed = i.speed_mbps.map_or("speed unknown".into(), |m| format!("{m} Mbps"));
            out += &format!("  {} (ifindex {}): {speed}, cap {}\n", i.name, i.ifindex, Bandwidth(i.cap_bps));
        }
        match &s.last_sample {
            Some(v) => {
                let value = match (v.bps, &v.reason) {
                    (Some(bps), _) => format!("{} (up {}, down {})", Bandwidth(bps), mbps(v.up_bps), mbps(v.down_bps)),
                    (None, reason) => format!("discarded: {}", reason.as_deref().unwrap_or("?")),
                };
                out += &format!("last sample: {} .. {}: {value}\n", v.start, v.end);
            }
            None => out += "last sample: none yet\n",
        }
    }
    match &s.open_bucket {
        Some(b) => {
            out += &format!("open bucket: {} max {} from {} samples\n", b.start, Bandwidth(b.max_bps), b.samples)
        }
        None => out += "open bucket: none\n",
    }
    let oldest = s.oldest_pending.as_deref().map_or(String::new(), |o| format!(", oldest {o}"));
    out += &format!("pending buckets: {}{oldest}\n", s.pending_buckets);
    if let Some(full) = &s.disk_full {
        out += &format!("disk full: {full}; closed buckets are kept in memory until there is space\n");
    }
    let d = &s.discarded;
    out += &format!(
        "discarded intervals: {} (counter reset {}, above cap {}, elapsed too short {}, elapsed too long {})\n",
        d.total(),
        d.counter_reset,
        d.above_cap,
        d.elapsed_too_short,
        d.elapsed_too_long
    );
    out += &format!("buckets dropped by retention: {}\n", s.dropped_buckets);
    if s.quarantined_buckets > 0 {
        out += &format!(
            "buckets quarantined by the collector (wrong time, check this socket's clock): {}\n",
            s.quarantined_buckets
        );
    }
    match &s.uplink {
        Some(u) => out += &uplink_line(u, s, now),
        None => out += "uplink: not enrolled (run `tally-agent enroll`)\n",
    }
    match &s.policy {
        Some(p) => {
            let cap = p.cap_bps.map_or("no cap".to_owned(), |c| format!("cap {}", Bandwidth(c)));
            let applied = match p.applied {
                Some(true) => "applied",
                Some(false) => "NOT applied",
                None => "not applied (agent not running)",
            };
            out += &format!("policy: version {}, {cap}, {applied}: {}\n", p.version, p.detail);
        }
        None => out += "policy: none received from the collector yet\n",
    }
    if let Some(lan) = &s.lan {
        out += &format!(
            "LAN devices today: {} ({} with private addresses) on {}\n",
            lan.devices_today,
            lan.private_addresses_today,
            lan.interfaces.join(" ")
        );
        if lan.over_limit_today > 0 {
            out += &format!("LAN sightings over max_lan_devices_per_day today: {}\n", lan.over_limit_today);
        }
    }
    out
}

/// The link in words: connected with its last acknowledgement, or unreachable since when, why,
/// when it tries next and what waits.
fn uplink_line(u: &UplinkStatus, s: &Status, now: chrono::DateTime<chrono::Utc>) -> String {
    let waiting = match &s.oldest_pending {
        Some(oldest) => format!("{} bucket(s) waiting, oldest {oldest}", s.pending_buckets),
        None => "no bucket waiting".to_owned(),
    };
    let mut out = match u.state.as_str() {
        "connected" => {
            let ack = u.last_ack.as_deref().unwrap_or("none yet");
            let since = u.connected_at.as_deref().unwrap_or("?");
            format!(
                "uplink: connected to {} since {since}, last acknowledgement {ack}, {} reconnects\n",
                u.collector, u.reconnects
            )
        }
        "unreachable" => {
            let since = u.unreachable_since.as_deref().unwrap_or("?");
            let why = u.last_error.as_deref().unwrap_or("?");
            let next = u
                .next_attempt_at
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or("soon".to_owned(), |t| {
                    format!("in {} s", (t.with_timezone(&chrono::Utc) - now).num_seconds().max(0))
                });
            format!(
                "uplink: enrolled to {}; unreachable since {since} ({why}); next try {next}; {waiting}\n",
                u.collector
            )
        }
        state => format!("uplink: enrolled to {} ({state}); {waiting}\n", u.collector),
    };
    if let Some(offset) = u.clock_offset_s.filter(|o| o.abs() > MAX_CLOCK_OFFSET.num_seconds()) {
        out += &format!("CLOCK WRONG: this socket's clock is {offset} s off the collector's: fix its time\n");
    }
    out
}

fn mbps(bps: Option<u64>) -> String {
    bps.map_or("-".into(), |b| Bandwidth(b).to_string())
}
