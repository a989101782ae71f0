//! The agent ↔ collector protocol: the messages, and their frames ([`frame`]).
//!
//! One long-lived bidirectional QUIC stream per connection, ALPN [`ALPN`]. The agent's first
//! frame is [`AgentMessage::Hello`] with its [`PROTOCOL_VERSION`]; the collector answers
//! a welcome or an [`CollectorMessage::Error`] and closes. The site is identified by the client
//! certificate, never by a message.
//!
//! Versions. Frames are postcard, which is not self-describing: a message's shape never changes
//! once released, and a version adds messages (new variants at the end of the enums) instead.
//! A collector speaks every version from [`OLDEST_PROTOCOL_VERSION`] on and answers each agent in
//! the version its `Hello` stated; the new messages go only to agents that said they speak them.
//! - Version 1: `Welcome`, `Ack`, and the refusals up to `BadSampleCount`.
//! - Version 2: [`WelcomeV2`] carries the collector's clock (the agent checks its own against it),
//!   [`AckV2`] says which refused buckets the collector kept in quarantine, and
//!   [`Refusal::TooOld`] exists. A version-1 agent is told `OutOfRange` for a bucket too old
//!   ([`Refusal::for_version`]). Agents send [`StampedBatch`]: each bucket with the policy
//!   version the socket had applied while measuring it (R26).
//! - Version 3: [`CollectorList`] follows each welcome and each enrollment: the collectors the
//!   agent may use (R30), which it keeps and fails over along.
//! - Version 4: [`lan::LanSightings`] and [`lan::LanAck`]: the devices a socket saw on its LAN
//!   (R29), sent only to a collector that welcomed the agent in version 4.
//!
//! Buckets travel as [`WireBucket`], unvalidated: the collector checks each one
//! ([`WireBucket::validate`]) and refuses the bad ones in its [`Ack`] instead of failing the whole
//! batch, so one bad bucket can never wedge an agent's backlog. The agent deletes a batch from its
//! store only once it has the batch's ack, which the collector sends only after committing.

pub mod frame;
pub mod lan;

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::bucket::Bucket;
use crate::sampler::DiscardCounters;
use crate::time::{BucketStart, SAMPLES_PER_BUCKET, TimeError};

/// The newest protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 4;
/// The oldest protocol version a collector still serves.
pub const OLDEST_PROTOCOL_VERSION: u16 = 1;
/// The QUIC application protocol.
pub const ALPN: &[u8] = b"tally/1";
/// How far in the future a bucket may start, for the collector to accept it.
pub const MAX_BUCKET_AHEAD: TimeDelta = TimeDelta::minutes(10);

/// Messages from the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentMessage {
    Hello(Hello),
    Buckets(BucketBatch),
    PolicyApplied(PolicyApplied),
    /// The only message of a connection without a client certificate.
    Enroll(EnrollRequest),
    /// Version 2 and later: buckets stamped with the policy the socket enforced (R26).
    StampedBuckets(StampedBatch),
    /// Version 4 and later: one day's devices on the LAN (R29).
    LanSightings(lan::LanSightings),
}

/// Messages from the collector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CollectorMessage {
    Welcome(Welcome),
    Ack(Ack),
    Policy(Policy),
    Error(ErrorMessage),
    Enrolled(Enrolled),
    /// Version 2 and later.
    WelcomeV2(WelcomeV2),
    /// Version 2 and later.
    AckV2(AckV2),
    /// Version 3 and later.
    Collectors(CollectorList),
    /// Version 4 and later.
    LanAck(lan::LanAck),
}

/// The collectors an agent may use, `HOST:PORT` each (R30): any of them serves it. Sent after
/// each welcome and each enrollment when the collector knows its fleet's addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectorList {
    pub addresses: Vec<String>,
}

/// At most this many addresses in a [`CollectorList`], each at most [`MAX_ADDRESS_LEN`] bytes:
/// an agent keeps no more.
pub const MAX_COLLECTORS: usize = 64;
pub const MAX_ADDRESS_LEN: usize = 255;

impl CollectorList {
    /// Whether every address is `HOST:PORT` within the bounds an agent keeps.
    pub fn is_valid(&self) -> bool {
        !self.addresses.is_empty()
            && self.addresses.len() <= MAX_COLLECTORS
            && self.addresses.iter().all(|a| is_host_port(a))
    }
}

/// `HOST:PORT`: a name or address (IPv6 in brackets), a port from 1 to 65535, printable
/// characters only, at most [`MAX_ADDRESS_LEN`] bytes.
pub fn is_host_port(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else { return false };
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    address.len() <= MAX_ADDRESS_LEN
        && !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b))
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// An agent asks for its certificate: the one-time secret of its enrollment token, and a
/// certificate request for the key pair it generated (the private key never leaves the socket).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub protocol_version: u16,
    pub token_secret: String,
    /// PKCS#10, DER.
    pub csr_der: Vec<u8>,
}

impl fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("token_secret", &"<redacted>")
            .field("csr_bytes", &self.csr_der.len())
            .finish()
    }
}

/// The collector's answer to an accepted enrollment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    pub site: String,
    /// The socket's certificate, DER, signed by the collector's CA.
    pub cert_der: Vec<u8>,
    /// The CA certificate, DER: the agent trusts only this from now on.
    pub ca_der: Vec<u8>,
}

/// The agent's first frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u16,
    /// The agent's build, for the collector's logs (`tally-agent 0.1.0`).
    pub agent_version: String,
}

/// The collector's answer to a hello it accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol_version: u16,
    /// The site the client certificate names, so the agent can log who it is.
    pub site: String,
}

/// The collector's answer to a hello it accepts, from version 2 on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeV2 {
    pub protocol_version: u16,
    pub site: String,
    /// The collector's clock when it sent this, milliseconds since the epoch: the agent logs an
    /// ERROR when its own differs by more than [`MAX_CLOCK_OFFSET`].
    pub collector_time_ms: i64,
}

/// How far an agent's clock may be from the collector's before the agent says so at ERROR.
pub const MAX_CLOCK_OFFSET: TimeDelta = TimeDelta::seconds(60);

/// Closed buckets, oldest first, with the agent's discard totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketBatch {
    /// Chosen by the agent, echoed in the [`Ack`].
    pub seq: u64,
    pub buckets: Vec<WireBucket>,
    /// Discarded intervals since the agent's store was created (totals, not increments).
    pub discarded: DiscardCounters,
}

/// Closed buckets, oldest first, each stamped with the policy version the socket enforced while
/// measuring it (version 2 and later), with the agent's discard totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StampedBatch {
    pub seq: u64,
    pub buckets: Vec<StampedBucket>,
    pub discarded: DiscardCounters,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StampedBucket {
    pub bucket: WireBucket,
    /// The policy version of the highest cap the socket applied during the bucket
    /// ([`crate::enforcement::stamp`]); `None` when it had applied none.
    pub policy_version: Option<u64>,
}

impl From<BucketBatch> for StampedBatch {
    /// A version-1 batch: no bucket is stamped.
    fn from(batch: BucketBatch) -> StampedBatch {
        let buckets = batch.buckets.into_iter().map(|bucket| StampedBucket { bucket, policy_version: None }).collect();
        StampedBatch { seq: batch.seq, buckets, discarded: batch.discarded }
    }
}

/// A bucket as sent: nothing about it is trusted until [`WireBucket::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireBucket {
    /// Seconds since the epoch.
    pub start: i64,
    pub max_bps: u64,
    pub samples: u8,
}

impl From<Bucket> for WireBucket {
    fn from(b: Bucket) -> Self {
        WireBucket { start: b.start.unix(), max_bps: b.max_bps, samples: b.samples }
    }
}

/// What a received bucket is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The collector's clock.
    pub now: DateTime<Utc>,
    /// How old a bucket may be (the agent's retention and a margin): an older one comes from a
    /// wrong clock.
    pub max_age: TimeDelta,
    /// The sanity bound on a bucket's value.
    pub max_bps: u64,
}

/// A received bucket, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    Valid(Bucket),
    /// Its values are sound but its time is not ([`Refusal::is_a_clock_fault`]): kept in
    /// quarantine, not billed.
    WrongTime(Bucket, Refusal),
    Invalid(Refusal),
}

impl WireBucket {
    /// Checks a received bucket: its start, its values, then its time against the collector's
    /// clock (so a bucket refused for its time alone is otherwise sound).
    pub fn check(&self, bounds: &Bounds) -> Checked {
        let start = match BucketStart::from_unix(self.start) {
            Ok(start) => start,
            Err(TimeError::NotOnBucketBoundary(_)) => return Checked::Invalid(Refusal::NotOnBoundary),
            Err(_) => return Checked::Invalid(Refusal::OutOfRange),
        };
        if self.max_bps > bounds.max_bps {
            return Checked::Invalid(Refusal::AboveSanityBound);
        }
        if self.samples == 0 || self.samples > SAMPLES_PER_BUCKET {
            return Checked::Invalid(Refusal::BadSampleCount);
        }
        let bucket = Bucket { start, max_bps: self.max_bps, samples: self.samples };
        if start.time() > bounds.now + MAX_BUCKET_AHEAD {
            Checked::WrongTime(bucket, Refusal::InTheFuture)
        } else if start.time() < bounds.now - bounds.max_age {
            Checked::WrongTime(bucket, Refusal::TooOld)
        } else {
            Checked::Valid(bucket)
        }
    }

    /// [`WireBucket::check`], for who only wants the valid ones.
    pub fn validate(&self, bounds: &Bounds) -> Result<Bucket, Refusal> {
        match self.check(bounds) {
            Checked::Valid(bucket) => Ok(bucket),
            Checked::WrongTime(_, refusal) | Checked::Invalid(refusal) => Err(refusal),
        }
    }
}

/// The collector committed a batch (version 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub seq: u64,
    /// Buckets of the batch that were refused (and counted) rather than stored; the rest are
    /// stored. Either way the agent may delete the whole batch.
    pub refused: Vec<RefusedBucket>,
}

/// The collector committed a batch (version 2): the rest of the batch is stored as measured.
/// Either way the agent may delete the whole batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckV2 {
    pub seq: u64,
    /// Refused and counted, not kept: the bucket itself was wrong.
    pub refused: Vec<RefusedBucket>,
    /// Refused for its time ([`Refusal::is_a_clock_fault`]) and kept in the collector's
    /// quarantine, where the operator accepts or discards it.
    pub quarantined: Vec<RefusedBucket>,
}

impl From<Ack> for AckV2 {
    fn from(ack: Ack) -> AckV2 {
        AckV2 { seq: ack.seq, refused: ack.refused, quarantined: Vec::new() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedBucket {
    pub start: i64,
    pub reason: Refusal,
}

/// Why the collector refused one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Refusal {
    NotOnBoundary,
    OutOfRange,
    InTheFuture,
    AboveSanityBound,
    BadSampleCount,
    /// Version 2 and later: older than the collector's `max_bucket_age_days`.
    TooOld,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::NotOnBoundary,
        Refusal::OutOfRange,
        Refusal::InTheFuture,
        Refusal::AboveSanityBound,
        Refusal::BadSampleCount,
        Refusal::TooOld,
    ];

    /// The bucket's values may be right and only its time wrong (the socket's clock): the
    /// collector keeps it in quarantine rather than forgetting it.
    pub fn is_a_clock_fault(self) -> bool {
        matches!(self, Refusal::InTheFuture | Refusal::TooOld)
    }

    /// The refusal as an agent of `version` can decode it.
    pub fn for_version(self, version: u16) -> Refusal {
        match self {
            Refusal::TooOld if version < 2 => Refusal::OutOfRange,
            other => other,
        }
    }

    /// Its name in the store, the API and the command line.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::NotOnBoundary => "not_on_boundary",
            Refusal::OutOfRange => "out_of_range",
            Refusal::InTheFuture => "in_the_future",
            Refusal::AboveSanityBound => "above_sanity_bound",
            Refusal::BadSampleCount => "bad_sample_count",
            Refusal::TooOld => "too_old",
        }
    }

    pub fn from_name(name: &str) -> Option<Refusal> {
        Refusal::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NotOnBoundary => "its start is not on a 5-minute boundary",
            Refusal::OutOfRange => "its start is not a representable time",
            Refusal::InTheFuture => {
                "it starts more than 10 minutes ahead of the collector's clock (check the socket's time)"
            }
            Refusal::AboveSanityBound => "its value is above the collector's sanity bound",
            Refusal::BadSampleCount => "its sample count is not between 1 and 60",
            Refusal::TooOld => "it is older than the collector keeps buckets for (check the socket's time)",
        })
    }
}

/// The site's bandwidth cap (R17), versioned so reports can be matched to pushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub version: u64,
    /// `None`: no cap, remove any shaping.
    pub cap_bps: Option<u64>,
}

/// The agent's report on applying a [`Policy`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyApplied {
    pub version: u64,
    pub ok: bool,
    /// What was done, or why it failed.
    pub detail: String,
}

/// The collector's last word before it closes the connection with the same code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    pub code: ErrorCode,
    pub message: String,
}

/// Error codes, also used as QUIC application close codes. Unknown codes from a newer peer are
/// kept as [`ErrorCode::Other`] so they still decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u32", into = "u32")]
pub enum ErrorCode {
    /// Orderly close.
    Normal,
    /// A frame that does not decode, or a message out of order.
    ProtocolViolation,
    /// A frame over the size limit.
    FrameTooLarge,
    UnsupportedVersion,
    /// The client certificate is not one the collector issued, or its site is unknown.
    UnknownCertificate,
    RevokedCertificate,
    /// The collector is at its connection limit; retry later.
    Overloaded,
    ShuttingDown,
    Internal,
    /// The enrollment token was unknown, used or expired, or the request was malformed.
    EnrollmentRefused,
    /// The collector cannot store now (its disk is full, say): retry later. An agent that does
    /// not know the code (version 1) decodes it as `Other(10)` and retries all the same.
    StoreUnavailable,
    Other(u32),
}

impl ErrorCode {
    /// What a field engineer should read in the agent's log.
    pub fn explanation(self) -> &'static str {
        match self {
            ErrorCode::Normal => "closed normally",
            ErrorCode::ProtocolViolation => "the collector could not understand a message from this agent",
            ErrorCode::FrameTooLarge => "a message from this agent was larger than the collector accepts",
            ErrorCode::UnsupportedVersion => {
                "this agent's protocol version is not supported by the collector: upgrade the agent"
            }
            ErrorCode::UnknownCertificate => {
                "the collector does not know this socket's certificate: enroll it again with a new token"
            }
            ErrorCode::RevokedCertificate => {
                "this socket's certificate was revoked by the operator: enroll it again with a new token"
            }
            ErrorCode::Overloaded => "the collector is at its connection limit and will accept the agent later",
            ErrorCode::ShuttingDown => "the collector is shutting down",
            ErrorCode::Internal => "the collector had an internal error",
            ErrorCode::EnrollmentRefused => "the collector refused the enrollment: ask the operator for a new token",
            ErrorCode::StoreUnavailable => {
                "the collector cannot store buckets right now (its disk?); this agent keeps them and retries"
            }
            ErrorCode::Other(_) => "the collector closed the connection with a code this agent does not know",
        }
    }
}

impl From<u32> for ErrorCode {
    fn from(code: u32) -> Self {
        match code {
            0 => ErrorCode::Normal,
            1 => ErrorCode::ProtocolViolation,
            2 => ErrorCode::FrameTooLarge,
            3 => ErrorCode::UnsupportedVersion,
            4 => ErrorCode::UnknownCertificate,
            5 => ErrorCode::RevokedCertificate,
            6 => ErrorCode::Overloaded,
            7 => ErrorCode::ShuttingDown,
            8 => ErrorCode::Internal,
            9 => ErrorCode::EnrollmentRefused,
            10 => ErrorCode::StoreUnavailable,
            other => ErrorCode::Other(other),
        }
    }
}

impl From<ErrorCode> for u32 {
    fn from(code: ErrorCode) -> u32 {
        match code {
            ErrorCode::Normal => 0,
            ErrorCode::ProtocolViolation => 1,
            ErrorCode::FrameTooLarge => 2,
            ErrorCode::UnsupportedVersion => 3,
            ErrorCode::UnknownCertificate => 4,
            ErrorCode::RevokedCertificate => 5,
            ErrorCode::Overloaded => 6,
            ErrorCode::ShuttingDown => 7,
            ErrorCode::Internal => 8,
            ErrorCode::EnrollmentRefused => 9,
            ErrorCode::StoreUnavailable => 10,
            ErrorCode::Other(other) => other,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.explanation(), u32::from(*self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_through_their_numbers() {
        for n in 0..14u32 {
            assert_eq!(u32::from(ErrorCode::from(n)), n);
        }
        assert_eq!(ErrorCode::from(4), ErrorCode::UnknownCertificate);
    }

    /// A version-1 agent never receives a refusal it cannot decode.
    #[test]
    fn refusals_are_told_in_the_agents_version() {
        let v1 = [0u8, 1, 2, 3, 4]; // postcard's variant indexes of version 1
        for refusal in Refusal::ALL {
            let bytes = postcard::to_stdvec(&refusal.for_version(1)).unwrap();
            assert!(v1.contains(&bytes[0]), "{refusal:?}");
            assert_eq!(refusal.for_version(2), refusal);
            assert_eq!(Refusal::from_name(refusal.name()), Some(refusal));
        }
        assert_eq!(Refusal::TooOld.for_version(1), Refusal::OutOfRange);
    }

    #[test]
    fn buckets_are_validated_one_by_one() {
        let now: DateTime<Utc> = "2026-10-01T12:00:00Z".parse().unwrap();
        let bounds = Bounds { now, max_age: TimeDelta::days(40), max_bps: 100 };
        let ok = WireBucket { start: now.timestamp() + 600, max_bps: 10, samples: 60 };
        assert_eq!(ok.validate(&bounds).unwrap().max_bps, 10);
        let oldest = WireBucket { start: now.timestamp() - 40 * 86_400, ..ok };
        assert_eq!(oldest.validate(&bounds).unwrap().max_bps, 10);
        let cases = [
            (WireBucket { start: ok.start + 1, ..ok }, Refusal::NotOnBoundary),
            (WireBucket { start: ok.start + 300, ..ok }, Refusal::InTheFuture),
            (WireBucket { max_bps: 101, ..ok }, Refusal::AboveSanityBound),
            (WireBucket { samples: 0, ..ok }, Refusal::BadSampleCount),
            (WireBucket { samples: 61, ..ok }, Refusal::BadSampleCount),
            (WireBucket { start: i64::MIN, ..ok }, Refusal::NotOnBoundary),
            (WireBucket { start: i64::MIN + 8, ..ok }, Refusal::OutOfRange),
            (WireBucket { start: oldest.start - 300, ..ok }, Refusal::TooOld),
            (WireBucket { start: 0, ..ok }, Refusal::TooOld),
            (WireBucket { start: -300, ..ok }, Refusal::TooOld),
            (WireBucket { start: -62_135_596_800, ..ok }, Refusal::TooOld), // 0001-01-01
            (WireBucket { start: 947_894_400, ..ok }, Refusal::TooOld),     // 2000-01-15
            // The values are checked before the time: a quarantined bucket is otherwise sound.
            (WireBucket { start: ok.start + 300, samples: 0, ..ok }, Refusal::BadSampleCount),
        ];
        for (bucket, refusal) in cases {
            assert_eq!(bucket.validate(&bounds), Err(refusal), "{bucket:?}");
        }
        let future = WireBucket { start: ok.start + 300, ..ok };
        let Checked::WrongTime(kept, Refusal::InTheFuture) = future.check(&bounds) else { panic!("{future:?}") };
        assert_eq!((kept.start.unix(), kept.max_bps, kept.samples), (future.start, 10, 60));
    }
}
