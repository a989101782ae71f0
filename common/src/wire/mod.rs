//! The agent ↔ collector protocol: the messages, and their frames ([`frame`]).
//!
//! One long-lived bidirectional QUIC stream per connection, ALPN [`ALPN`]. The agent's first
//! frame is [`AgentMessage::Hello`] with its [`PROTOCOL_VERSION`]; the collector answers
//! [`CollectorMessage::Welcome`] or an [`CollectorMessage::Error`] and closes. The site is
//! identified by the client certificate, never by a message.
//!
//! Buckets travel as [`WireBucket`], unvalidated: the collector checks each one
//! ([`WireBucket::validate`]) and refuses the bad ones in its [`Ack`] instead of failing the whole
//! batch, so one bad bucket can never wedge an agent's backlog. The agent deletes a batch from its
//! store only once it has the batch's ack, which the collector sends only after committing.

pub mod frame;

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::bucket::Bucket;
use crate::sampler::DiscardCounters;
use crate::time::{BucketStart, SAMPLES_PER_BUCKET, TimeError};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
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
}

/// Messages from the collector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CollectorMessage {
    Welcome(Welcome),
    Ack(Ack),
    Policy(Policy),
    Error(ErrorMessage),
    Enrolled(Enrolled),
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

/// Closed buckets, oldest first, with the agent's discard totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketBatch {
    /// Chosen by the agent, echoed in the [`Ack`].
    pub seq: u64,
    pub buckets: Vec<WireBucket>,
    /// Discarded intervals since the agent's store was created (totals, not increments).
    pub discarded: DiscardCounters,
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

impl WireBucket {
    /// Checks a received bucket against the collector's clock and sanity bound.
    pub fn validate(&self, now: DateTime<Utc>, max_bps: u64) -> Result<Bucket, Refusal> {
        let start = BucketStart::from_unix(self.start).map_err(|e| match e {
            TimeError::NotOnBucketBoundary(_) => Refusal::NotOnBoundary,
            _ => Refusal::OutOfRange,
        })?;
        if start.time() > now + MAX_BUCKET_AHEAD {
            return Err(Refusal::InTheFuture);
        }
        if self.max_bps > max_bps {
            return Err(Refusal::AboveSanityBound);
        }
        if self.samples == 0 || self.samples > SAMPLES_PER_BUCKET {
            return Err(Refusal::BadSampleCount);
        }
        Ok(Bucket { start, max_bps: self.max_bps, samples: self.samples })
    }
}

/// The collector committed a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub seq: u64,
    /// Buckets of the batch that were refused (and counted) rather than stored; the rest are
    /// stored. Either way the agent may delete the whole batch.
    pub refused: Vec<RefusedBucket>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedBucket {
    pub start: i64,
    pub reason: Refusal,
}

/// Why the collector refused one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    NotOnBoundary,
    OutOfRange,
    InTheFuture,
    AboveSanityBound,
    BadSampleCount,
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

    #[test]
    fn buckets_are_validated_one_by_one() {
        let now: DateTime<Utc> = "2026-10-01T12:00:00Z".parse().unwrap();
        let ok = WireBucket { start: now.timestamp() + 600, max_bps: 10, samples: 60 };
        assert_eq!(ok.validate(now, 100).unwrap().max_bps, 10);
        let cases = [
            (WireBucket { start: ok.start + 1, ..ok }, Refusal::NotOnBoundary),
            (WireBucket { start: ok.start + 300, ..ok }, Refusal::InTheFuture),
            (WireBucket { max_bps: 101, ..ok }, Refusal::AboveSanityBound),
            (WireBucket { samples: 0, ..ok }, Refusal::BadSampleCount),
            (WireBucket { samples: 61, ..ok }, Refusal::BadSampleCount),
            (WireBucket { start: i64::MIN, ..ok }, Refusal::NotOnBoundary),
            (WireBucket { start: i64::MIN + 8, ..ok }, Refusal::OutOfRange),
        ];
        for (bucket, refusal) in cases {
            assert_eq!(bucket.validate(now, 100), Err(refusal), "{bucket:?}");
        }
    }
}
