//! The wire protocol: every message round-trips; truncated, garbage and oversized input is told
//! apart and never panics.

use proptest::prelude::*;
use tally_common::sampler::DiscardCounters;
use tally_common::wire::frame::{DecodeError, HEADER_LEN, MAX_FRAME_LEN, decode, encode};
use tally_common::wire::{
    Ack, AgentMessage, BucketBatch, CollectorMessage, EnrollRequest, Enrolled, ErrorCode, ErrorMessage, Hello, Policy,
    PolicyApplied, Refusal, RefusedBucket, Welcome, WireBucket,
};

fn agent_messages() -> Vec<AgentMessage> {
    vec![
        AgentMessage::Hello(Hello { protocol_version: 1, agent_version: "tally-agent 0.1.0".into() }),
        AgentMessage::Buckets(BucketBatch {
            seq: u64::MAX,
            buckets: (0..500)
                .map(|i| WireBucket {
                    start: 1_790_000_100 + 300 * i,
                    max_bps: u64::MAX - i as u64,
                    samples: (i % 61) as u8,
                })
                .collect(),
            discarded: DiscardCounters {
                counter_reset: 1,
                above_cap: 2,
                elapsed_too_short: 3,
                elapsed_too_long: u64::MAX,
            },
        }),
        AgentMessage::Buckets(BucketBatch { seq: 0, buckets: vec![], discarded: DiscardCounters::default() }),
        AgentMessage::Enroll(EnrollRequest {
            protocol_version: 1,
            token_secret: "ab".repeat(32),
            csr_der: vec![0x30, 0x82, 1, 2, 3],
        }),
        AgentMessage::PolicyApplied(PolicyApplied {
            version: 7,
            ok: false,
            detail: "no CAP_NET_ADMIN: cannot change traffic control on eth1".into(),
        }),
    ]
}

fn collector_messages() -> Vec<CollectorMessage> {
    vec![
        CollectorMessage::Welcome(Welcome { protocol_version: 1, site: "hq".into() }),
        CollectorMessage::Ack(Ack {
            seq: 42,
            refused: vec![
                RefusedBucket { start: 301, reason: Refusal::NotOnBoundary },
                RefusedBucket { start: i64::MIN, reason: Refusal::InTheFuture },
            ],
        }),
        CollectorMessage::Policy(Policy { version: 3, cap_bps: Some(20_000_000) }),
        CollectorMessage::Policy(Policy { version: 4, cap_bps: None }),
        CollectorMessage::Error(ErrorMessage {
            code: ErrorCode::UnsupportedVersion,
            message: "protocol version 9 is not supported; this collector speaks 1".into(),
        }),
        CollectorMessage::Enrolled(Enrolled { site: "hq".into(), cert_der: vec![1; 700], ca_der: vec![2; 500] }),
        CollectorMessage::Error(ErrorMessage { code: ErrorCode::Other(4_000), message: String::new() }),
    ]
}

#[test]
fn every_message_round_trips() {
    for message in agent_messages() {
        let frame = encode(&message).unwrap();
        assert_eq!(decode::<AgentMessage>(&frame), Ok((message, frame.len())));
    }
    for message in collector_messages() {
        let frame = encode(&message).unwrap();
        assert_eq!(decode::<CollectorMessage>(&frame), Ok((message, frame.len())));
    }
}

#[test]
fn frames_decode_one_after_another_from_one_buffer() {
    let mut stream = Vec::new();
    for message in agent_messages() {
        stream.extend(encode(&message).unwrap());
    }
    let mut decoded = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let (message, used) = decode::<AgentMessage>(&stream[at..]).unwrap();
        decoded.push(message);
        at += used;
    }
    assert_eq!(decoded, agent_messages());
}

#[test]
fn every_truncation_is_incomplete_and_names_what_it_needs() {
    for message in agent_messages() {
        let frame = encode(&message).unwrap();
        for cut in 0..frame.len() {
            let expected = if cut < HEADER_LEN { HEADER_LEN } else { frame.len() };
            assert_eq!(
                decode::<AgentMessage>(&frame[..cut]),
                Err(DecodeError::Incomplete { needed: expected }),
                "cut at {cut}"
            );
        }
    }
}

#[test]
fn oversized_frames_are_refused_from_their_header() {
    let header = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
    assert!(matches!(decode::<AgentMessage>(&header), Err(DecodeError::TooLarge { .. })));
    assert!(matches!(
        decode::<AgentMessage>(&u32::MAX.to_be_bytes()),
        Err(DecodeError::TooLarge { len }) if len == u64::from(u32::MAX)
    ));
    let huge = AgentMessage::PolicyApplied(PolicyApplied { version: 1, ok: true, detail: "x".repeat(MAX_FRAME_LEN) });
    assert!(encode(&huge).is_err(), "the encoder refuses what the decoder would");
}

#[test]
fn invalid_payloads_say_so() {
    // Variant 9 does not exist.
    assert!(matches!(decode::<AgentMessage>(&[0, 0, 0, 1, 9]), Err(DecodeError::Invalid(_))));
    // An empty frame.
    assert!(matches!(decode::<AgentMessage>(&[0, 0, 0, 0]), Err(DecodeError::Invalid(_))));
    // A Hello whose string claims more bytes than the frame holds.
    assert!(matches!(decode::<AgentMessage>(&[0, 0, 0, 4, 0, 1, 100, b'x']), Err(DecodeError::Invalid(_))));
    // A valid message with bytes left over inside its frame.
    let mut frame = encode(&CollectorMessage::Policy(Policy { version: 1, cap_bps: None })).unwrap();
    frame.push(0);
    let len = (frame.len() - HEADER_LEN) as u32;
    frame[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        decode::<CollectorMessage>(&frame),
        Err(DecodeError::Invalid("1 bytes left over after the message".into()))
    );
}

/// `cases` per property; a failing case is saved beside this file (`*.proptest-regressions`)
/// and tried first on the next run.
fn config(cases: u32) -> ProptestConfig {
    let persistence = proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions");
    ProptestConfig { failure_persistence: Some(Box::new(persistence)), ..ProptestConfig::with_cases(cases) }
}

proptest! {
    #![proptest_config(config(5_000))]

    #[test]
    fn garbage_never_panics_and_incomplete_means_a_longer_buffer(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for result in [
            decode::<AgentMessage>(&bytes).map(|(_, n)| n),
            decode::<CollectorMessage>(&bytes).map(|(_, n)| n),
        ] {
            match result {
                Ok(used) => prop_assert!(used <= bytes.len()),
                Err(DecodeError::Incomplete { needed }) => prop_assert!(needed > bytes.len()),
                Err(DecodeError::TooLarge { len }) => prop_assert!(len > MAX_FRAME_LEN as u64),
                Err(DecodeError::Invalid(_)) => {}
            }
        }
    }

    #[test]
    fn garbage_behind_a_plausible_header_never_panics(payload in prop::collection::vec(any::<u8>(), 1..2048)) {
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend(&payload);
        let _ = decode::<AgentMessage>(&frame);
        let _ = decode::<CollectorMessage>(&frame);
    }
}
