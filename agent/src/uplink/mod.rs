//! The link to the collector: enrollment ([`enroll`], [`identity`], [`tls`]), then the uplink
//! that ships closed buckets over one [`connection`] at a time, and the LAN's days ([`lan`]).
//!
//! Enrollment: the token names the collector CA's SHA-256 fingerprint; the agent generates its
//! key pair here (it never leaves the socket), connects without a certificate, trusts the
//! collector only if its chain carries a CA with that fingerprint, and sends a certificate
//! request with the token's secret. The answer's certificate, the key (mode 0600), the CA and the
//! collector's address are kept in `STATE_DIR/identity/`.
//!
//! Uplink: pending buckets leave the store only after the collector's ack (which it sends only
//! once they are committed), oldest first, in batches. Reconnects back off exponentially with
//! jitter from 1 s to about 5 min (each attempt bounded to 10 s); each failed attempt is logged
//! with its real delay, at WARN the first of an outage and at INFO after, so a field engineer
//! sees a line at least every 5 minutes while the collector is unreachable. The collector's policies
//! (R17) go to the enforcer, and its reports come back, on the same stream.
//!
//! Clocks (wire protocol 2): at each welcome the agent compares its wall clock with the
//! collector's and logs an ERROR when they differ by more than a minute; buckets the collector
//! refused for their time are kept in its quarantine, and the agent counts them (`status`) and
//! says so at ERROR once per run.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use chrono::NaiveDate;
use tally_common::bucket::Bucket;
use tally_common::enforcement::stamp;
use tally_common::lan::Mac;
use tally_common::time::rfc3339;
use tally_common::wire::{
    AckV2, AgentMessage, BucketBatch, CollectorList, CollectorMessage, ErrorCode, MAX_CLOCK_OFFSET, Policy,
    PolicyApplied, StampedBatch, StampedBucket, WireBucket,
};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::route::Route;
use crate::status::{self, SharedStatus, UplinkStatus};
use crate::store::Store;

mod connection;
mod enroll;
mod identity;
mod lan;
mod tls;

pub use self::connection::{Greeted, probe};
use self::connection::{endpoint, greet, open, receive, send};
pub use self::enroll::enroll;
pub use self::identity::Identity;
use self::identity::save_collectors;
use self::lan::{LanProgress, lan_acknowledged, send_lan_day};

/// Buckets per batch: a day of one site.
pub const MAX_BATCH: usize = 288;
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The backoff doubles up to this; with the jitter and a connection attempt the agent logs a
/// line at least every 5 minutes while the collector stays unreachable.
const LAST_RETRY: Duration = Duration::from_secs(240);

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("collector {0} unreachable: {1}")]
    Unreachable(String, String),
    #[error("the collector refused: {explanation} ({message})")]
    Refused { code: ErrorCode, explanation: &'static str, message: String },
    #[error("the collector closed the connection: {0}")]
    Closed(String),
    #[error("the collector sent something this agent cannot read")]
    Garbled,
    #[error("{0}")]
    Local(String),
}

/// What the uplink shares with the rest of the agent, all on one thread.
#[derive(Debug)]
pub struct Link {
    /// Where the identity is kept: the list of collectors is updated there.
    pub state_dir: PathBuf,
    pub store: Rc<RefCell<Store>>,
    pub status: SharedStatus,
    /// Woken when buckets close.
    pub closed: Rc<tokio::sync::Notify>,
    /// Policies from the collector, for the enforcer.
    pub policies: watch::Sender<Option<Policy>>,
    /// The enforcer's reports, for the collector.
    pub reports: watch::Receiver<Option<PolicyApplied>>,
    /// The socket's own hardware addresses, sent with its LAN's devices (R29).
    pub own: Vec<Mac>,
}

/// What was sent and awaits its acknowledgement.
enum InFlight {
    Buckets(Vec<Bucket>),
    /// Devices of a LAN day from `offset` on; `last` when they are the day's last.
    Lan {
        day: NaiveDate,
        offset: usize,
        sent: usize,
        last: bool,
    },
}

/// Ships pending buckets until `shutdown`, reconnecting as needed; relays policies and reports.
pub async fn run(
    identity: Identity,
    mut link: Link,
    clock: &impl Clock,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), UplinkError> {
    let tls = identity.client_config().map_err(|e| UplinkError::Local(e.to_string()))?;
    let endpoint = endpoint(tls)?;
    let mut route = Route::new(&identity.site, identity.collectors.clone());
    let mut retry = FIRST_RETRY;
    let mut last_error = String::new();
    let mut seq = 0u64;
    let mut quarantine_told = false;
    // Since when the collector is unreachable (and on the wall clock), and how many attempts
    // failed since.
    let mut outage: Option<(tokio::time::Instant, String, u32)> = None;
    status::update(&link.status, |s| s.uplink = Some(UplinkStatus::enrolled(route.current(), "connecting")));
    tokio::pin!(shutdown);
    loop {
        let attempt = tokio::time::Instant::now();
        let session = session(&endpoint, &mut route, &mut link, clock, &mut seq, &mut retry, &mut quarantine_told);
        let error = tokio::select! {
            () = &mut shutdown => break,
            Err(e) = session => e,
        };
        if retry == FIRST_RETRY {
            // The session reached the collector (or this is the first attempt): a new outage.
            outage = None;
        }
        let attempted_at = rfc3339(clock.wall() - chrono::TimeDelta::from_std(attempt.elapsed()).unwrap_or_default());
        let (since, since_wall, failures) = outage.get_or_insert((attempt, attempted_at, 0));
        *failures += 1;
        let wait = jittered(retry, seq);
        let message = error.to_string();
        // Each retry with its real delay: the first of an outage (or a new reason) at WARN, the
        // others at INFO; at least one line every 5 minutes while unreachable.
        let (attempt_s, down_s, retry_in_s) = (attempt.elapsed().as_secs(), since.elapsed().as_secs(), wait.as_secs());
        let failed = route.current().to_owned();
        // The next attempt goes to the next collector (R30), after the same backoff.
        route.failed();
        let next = route.current();
        if message != last_error || *failures == 1 {
            tracing::warn!(collector = %failed, error = %message, attempt_s, retry_in_s, next = %next, "collector unreachable, retrying");
            last_error = message.clone();
        } else {
            tracing::info!(collector = %failed, error = %message, failures = *failures, down_s, attempt_s, retry_in_s, next = %next, "collector still unreachable, retrying");
        }
        let next_attempt_at = rfc3339(clock.wall() + chrono::TimeDelta::from_std(wait).unwrap_or_default());
        status::update(&link.status, |s| {
            let u = s.uplink.get_or_insert_with(|| UplinkStatus::enrolled(&failed, "unreachable"));
            u.collector = failed.clone();
            u.state = "unreachable".into();
            u.unreachable_since = Some(since_wall.clone());
            u.last_error = Some(message.clone());
            u.next_attempt_at = Some(next_attempt_at);
        });
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(wait) => {}
        }
        retry = (retry * 2).min(LAST_RETRY);
    }
    endpoint.close(0u32.into(), b"agent stopping");
    Ok(())
}

/// A list of collectors from the one connected (R30): kept, and saved with the identity, when
/// valid and new.
fn learn_collectors(route: &mut Route, state_dir: &Path, list: CollectorList) {
    if !list.is_valid() {
        tracing::warn!(addresses = list.addresses.len(), "the collector sent an invalid list of collectors: ignored");
        return;
    }
    if route.update(list.addresses) {
        let collectors = route.addresses().to_vec();
        match save_collectors(state_dir, &collectors) {
            Ok(()) => tracing::info!(collectors = %collectors.join(" "), "collectors this socket may use"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot save the list of collectors: using it until the agent restarts")
            }
        }
    }
}

/// `base` ± 20 %, spread by `salt` so sockets that lost the collector together do not return together.
fn jittered(base: Duration, salt: u64) -> Duration {
    let nanos =
        rustix::time::clock_gettime(rustix::time::ClockId::Monotonic).tv_nsec as u64 ^ salt.wrapping_mul(0x9e37_79b9);
    let permille = 800 + nanos % 401;
    base * permille as u32 / 1000
}

/// One connection: hello, then batches (one in flight at a time), policies and reports until
/// an error.
async fn session(
    endpoint: &quinn::Endpoint,
    route: &mut Route,
    link: &mut Link,
    clock: &impl Clock,
    seq: &mut u64,
    retry: &mut Duration,
    quarantine_told: &mut bool,
) -> Result<(), UplinkError> {
    let local = |e: crate::store::StoreError| UplinkError::Local(e.to_string());
    let (_conn, mut tx, mut rx) = open(endpoint, route.current(), route.attempt()).await?;
    let collector = route.current().to_owned();
    let mut buf = Vec::new();
    // A collector gets only the messages of the version it answers in.
    let Greeted { site, clock_offset_s, version } = greet(&mut tx, &mut rx, &mut buf, clock).await?;
    let (stamps, lan) = (version >= 2, version >= 4);
    *retry = FIRST_RETRY;
    let mut backlog = link.store.borrow().pending_count();
    tracing::info!(%collector, %site, backlog, clock_offset_s, "connected to the collector");
    if let Some(offset) = clock_offset_s.filter(|o| o.abs() > MAX_CLOCK_OFFSET.num_seconds()) {
        let way = if offset > 0 { "ahead of" } else { "behind" };
        tracing::error!(
            offset_s = offset,
            "this socket's clock is {} s {way} the collector's: the buckets it measures carry wrong times, and \
             the collector quarantines those it cannot place (not billed); fix the socket's time (NTP)",
            offset.abs()
        );
    }
    let quarantined = link.store.borrow().quarantined().map_err(local)?;
    status::update(&link.status, |s| {
        s.quarantined_buckets = quarantined;
        // One connected before makes this a reconnection.
        let reconnects = s.uplink.as_ref().filter(|u| u.connected_at.is_some()).map_or(0, |u| u.reconnects + 1);
        s.uplink = Some(UplinkStatus {
            connected_at: Some(rfc3339(clock.wall())),
            clock_offset_s,
            reconnects,
            ..UplinkStatus::enrolled(&collector, "connected")
        })
    });
    let mut replayed = 0usize;
    // The batch sent and not yet acknowledged.
    let mut in_flight: Option<InFlight> = None;
    let mut lan_progress: Option<LanProgress> = None;
    loop {
        if in_flight.is_none() {
            let (batch, discarded, applied) = {
                let store = link.store.borrow();
                let applied = if stamps { store.applied_policies().map_err(local)? } else { Vec::new() };
                (store.oldest_pending(MAX_BATCH).map_err(local)?, store.discards().map_err(local)?, applied)
            };
            if batch.is_empty() {
                if backlog > 0 && replayed >= backlog {
                    tracing::info!(buckets = replayed, "backlog replayed");
                }
                replayed = 0;
                backlog = 0;
                if lan {
                    in_flight = send_lan_day(&mut tx, link, seq, &mut lan_progress).await?;
                }
            } else {
                *seq += 1;
                let wire = batch.iter().copied().map(WireBucket::from);
                let message = if stamps {
                    let buckets = wire
                        .zip(&batch)
                        .map(|(bucket, b)| StampedBucket {
                            bucket,
                            policy_version: stamp(&applied, b.start.time(), b.start.end()),
                        })
                        .collect();
                    AgentMessage::StampedBuckets(StampedBatch { seq: *seq, buckets, discarded })
                } else {
                    AgentMessage::Buckets(BucketBatch { seq: *seq, buckets: wire.collect(), discarded })
                };
                send(&mut tx, &message).await?;
                in_flight = Some(InFlight::Buckets(batch));
            }
        }
        let ack = tokio::select! {
            message = receive(&mut rx, &mut buf) => match message? {
                CollectorMessage::Ack(ack) => Some(AckV2::from(ack)),
                CollectorMessage::AckV2(ack) => Some(ack),
                CollectorMessage::LanAck(ack) => {
                    if let Some(InFlight::Lan { day, offset, sent, last }) = in_flight.take_if(|_| ack.seq == *seq) {
                        lan_acknowledged(link, ack, day, offset + sent, last, &mut lan_progress, clock.wall().date_naive()).map_err(local)?;
                    }
                    None
                }
                CollectorMessage::Policy(policy) => {
                    tracing::info!(version = policy.version, cap_bps = policy.cap_bps, "policy received");
                    link.policies.send_replace(Some(policy));
                    None
                }
                CollectorMessage::Collectors(list) => {
                    learn_collectors(route, &link.state_dir, list);
                    None
                }
                _ => return Err(UplinkError::Garbled),
            },
            () = link.closed.notified(), if in_flight.is_none() => None,
            Ok(()) = link.reports.changed() => {
                let report = link.reports.borrow_and_update().clone();
                if let Some(report) = report {
                    send(&mut tx, &AgentMessage::PolicyApplied(report)).await?;
                }
                None
            }
        };
        let Some(ack) = ack.filter(|ack| ack.seq == *seq) else { continue };
        let Some(InFlight::Buckets(batch)) = in_flight.take_if(|f| matches!(f, InFlight::Buckets(_))) else { continue };
        for refused in &ack.refused {
            tracing::warn!(start = refused.start, reason = %refused.reason, "the collector refused a bucket");
        }
        if let Some(first) = ack.quarantined.first() {
            let buckets = ack.quarantined.len();
            link.store.borrow().count_quarantined(buckets as u64).map_err(local)?;
            let first_start = rfc3339(chrono::DateTime::from_timestamp(first.start, 0).unwrap_or_default());
            if !std::mem::replace(quarantine_told, true) {
                tracing::error!(
                    buckets, first = %first_start, reason = %first.reason, clock_offset_s,
                    "the collector quarantined buckets because of their time (this socket's clock): they are not \
                     billed until the operator accepts them; fix the socket's time (said once per run, `status` \
                     counts them)"
                );
            } else {
                tracing::debug!(buckets, first = %first_start, "the collector quarantined buckets");
            }
        }
        link.store.borrow_mut().delete_acknowledged(&batch).map_err(local)?;
        replayed += batch.len();
        tracing::debug!(seq = *seq, buckets = batch.len(), "batch acknowledged");
        let pending = link.store.borrow().pending_summary().map_err(local)?;
        let quarantined = link.store.borrow().quarantined().map_err(local)?;
        status::update(&link.status, |s| {
            s.set_pending(pending);
            s.quarantined_buckets = quarantined;
            if let Some(u) = &mut s.uplink {
                u.last_ack = Some(rfc3339(clock.wall()));
            }
        });
    }
}
