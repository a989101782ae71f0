//! QUIC ingest on 127.0.0.1 with real TLS 1.3 certificates from the collector's CA, driven by a
//! raw quinn client: enrollment with a one-time token, buckets acknowledged only once stored,
//! per-bucket refusals, revocation, garbage that closes only the connection that sent it, the
//! policy push (R17) with its report and the buckets over the cap, and the wire protocol's
//! versions: buckets with a wrong time quarantined (version 2) and a version-1 agent served in
//! the messages it knows.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{NaiveDate, TimeDelta};
use std::time::Duration;

use serde::Deserialize;
use support::quic::{Identity, hello, hello_in, receive, receive_as, send};

use tally_collector::agents::ca::Ca;
use tally_collector::agents::unbilled::{self, Release};
use tally_collector::agents::{self, Limits};
use tally_collector::store::sqlite::SqliteStore;
use tally_collector::store::{
    AccessStore, Account, AccountStore, BucketStore, CapChange, ContractTerm, IntakeStore, PolicyStore, Site,
};
use tally_common::kinds::SiteType;
use tally_common::region::RegionGroup;
use tally_common::sampler::DiscardCounters;
use tally_common::time::BucketStart;
use tally_common::wire::{
    AckV2, AgentMessage, BucketBatch, CollectorMessage, EnrollRequest, ErrorCode, PROTOCOL_VERSION, PolicyApplied,
    Refusal, RefusedBucket, WireBucket,
};

struct Collector {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    ca: Arc<Ca>,
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn collector() -> Collector {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("tally.db")).await.unwrap());
    let account = Account {
        id: "acme".into(),
        name: "Acme".into(),
        partner: None,
        eop_contact_name: None,
        eop_contact_email: None,
    };
    store
        .add_account(&account, ContractTerm::months_from(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), 24))
        .await
        .unwrap();
    for id in ["hq", "branch"] {
        let site = Site {
            id: id.into(),
            account: "acme".into(),
            name: id.into(),
            country: "US".parse().unwrap(),
            region_group: RegionGroup::Group1,
            site_type: SiteType::Socket,
            cap_bps: None,
        };
        store.add_site(&site).await.unwrap();
    }
    let (ca, _) = Ca::load_or_create(&dir.path().join("ca")).unwrap();
    let ca = Arc::new(ca);
    let endpoint =
        tally_collector::agents::quic_endpoint(&ca, "127.0.0.1:0".parse().unwrap(), &["localhost".into()]).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // Buckets of these tests are of 2026-10-07 whatever today is: a bound of 10 years keeps them
    // young enough; `buckets_with_a_wrong_time_are_quarantined_...` tests the bound itself.
    let limits = Limits { max_connections: 100, max_bucket_age: TimeDelta::days(3_650), ..defaults() };
    tokio::spawn(agents::run(endpoint, store.clone(), ca.clone(), limits, async {
        let _ = stopped.await;
    }));
    Collector { _dir: dir, store, ca, addr, _stop: stop }
}

/// The limits of the default configuration.
fn defaults() -> Limits {
    Limits::from(&tally_collector::config::parse("").unwrap())
}

async fn connect(
    c: &Collector,
    identity: Option<&Identity>,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    support::quic::connect(c.addr, c.ca.cert_der(), identity).await.unwrap()
}

/// Enrolls with `token_secret`: the collector's answer, and the key it was for.
async fn enroll(c: &Collector, token_secret: &str) -> (Option<CollectorMessage>, Vec<u8>) {
    support::quic::enroll(c.addr, c.ca.cert_der(), token_secret).await
}

async fn enrolled_identity(c: &Collector, site: &str) -> Identity {
    let token = tally_collector::agents::enrollment::enroll_token(
        &*c.store,
        &c.ca,
        site,
        TimeDelta::hours(24),
        tally_collector::clock::now(),
    )
    .await
    .unwrap();
    match enroll(c, &token.secret).await {
        (Some(CollectorMessage::Enrolled(e)), key) => {
            assert_eq!(e.site, site);
            assert_eq!(e.ca_der, c.ca.cert_der());
            (e.cert_der, key)
        }
        other => panic!("enrollment failed: {other:?}"),
    }
}

/// Expects a welcome in this build's version, with the collector's clock; returns the site it
/// names. (No list of collectors follows: these collectors have no `public_addresses`.)
async fn welcome(rx: &mut quinn::RecvStream, buf: &mut Vec<u8>) -> String {
    match receive(rx, buf).await {
        Some(CollectorMessage::WelcomeV2(w)) => {
            assert_eq!(w.protocol_version, PROTOCOL_VERSION);
            let now = tally_collector::clock::now().timestamp_millis();
            assert!((now - 5_000..=now).contains(&w.collector_time_ms), "the collector's clock: {w:?}");
            w.site
        }
        other => panic!("expected WelcomeV2, got {other:?}"),
    }
}

/// Expects the ack of `seq`.
async fn ack(rx: &mut quinn::RecvStream, buf: &mut Vec<u8>, seq: u64) -> AckV2 {
    match receive(rx, buf).await {
        Some(CollectorMessage::AckV2(ack)) if ack.seq == seq => ack,
        other => panic!("expected the ack of {seq}, got {other:?}"),
    }
}

fn batch(seq: u64, buckets: Vec<WireBucket>) -> AgentMessage {
    AgentMessage::Buckets(BucketBatch { seq, buckets, discarded: DiscardCounters::default() })
}

fn bucket(slot: i64, max_bps: u64) -> WireBucket {
    WireBucket { start: 1_791_331_200 + 300 * slot, max_bps, samples: 60 } // 2026-10-07
}

fn day() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 10, 7).unwrap()
}

#[tokio::test]
async fn an_enrolled_socket_ingests_buckets_acknowledged_after_they_are_stored() {
    let c = collector().await;
    let identity = enrolled_identity(&c, "hq").await;
    let (_conn, mut tx, mut rx) = connect(&c, Some(&identity)).await;
    let mut buf = Vec::new();
    send(&mut tx, &hello()).await;
    assert_eq!(welcome(&mut rx, &mut buf).await, "hq", "the site comes from the certificate");
    assert!(matches!(receive(&mut rx, &mut buf).await, Some(CollectorMessage::Policy(p)) if p.cap_bps.is_none()));
    let misaligned = WireBucket { start: bucket(2, 0).start + 1, ..bucket(2, 5) };
    send(&mut tx, &batch(7, vec![bucket(0, 100), bucket(1, 200), misaligned])).await;
    let refused = ack(&mut rx, &mut buf, 7).await.refused;
    assert_eq!(refused, [RefusedBucket { start: misaligned.start, reason: Refusal::NotOnBoundary }]);
    let stored = c.store.buckets_of_day("hq", day()).await.unwrap();
    assert_eq!(stored.iter().map(|b| b.max_bps).collect::<Vec<_>>(), [100, 200], "stored before the ack");

    // The same batch again changes nothing (R10).
    send(&mut tx, &batch(8, vec![bucket(0, 50), bucket(1, 200)])).await;
    ack(&mut rx, &mut buf, 8).await;
    assert_eq!(c.store.buckets_of_day("hq", day()).await.unwrap(), stored);
    assert!(c.store.buckets_of_day("branch", day()).await.unwrap().is_empty());
}

#[tokio::test]
async fn tokens_are_one_time_and_forged_or_expired_ones_are_refused() {
    let c = collector().await;
    let token = tally_collector::agents::enrollment::enroll_token(
        &*c.store,
        &c.ca,
        "hq",
        TimeDelta::hours(24),
        tally_collector::clock::now(),
    )
    .await
    .unwrap();
    // A garbled certificate request is refused before the token is spent.
    let (_conn, mut tx, mut rx) = connect(&c, None).await;
    let garbled = EnrollRequest {
        protocol_version: PROTOCOL_VERSION,
        token_secret: token.secret.clone(),
        csr_der: vec![0x30, 3, 1, 2, 3],
    };
    send(&mut tx, &AgentMessage::Enroll(garbled)).await;
    match receive(&mut rx, &mut Vec::new()).await {
        Some(CollectorMessage::Error(e)) => {
            assert_eq!(e.code, ErrorCode::EnrollmentRefused);
            assert!(e.message.contains("certificate request does not parse"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(enroll(&c, &token.secret).await.0, Some(CollectorMessage::Enrolled(_))), "the token still works");
    // Issued 25 hours ago with the default 24-hour lifetime.
    let expired = tally_collector::agents::enrollment::enroll_token(
        &*c.store,
        &c.ca,
        "branch",
        TimeDelta::hours(24),
        tally_collector::clock::now() - TimeDelta::hours(25),
    )
    .await
    .unwrap();
    for (secret, why) in
        [(token.secret.as_str(), "already used"), (&"0".repeat(64), "unknown"), (expired.secret.as_str(), "expired")]
    {
        match enroll(&c, secret).await.0 {
            Some(CollectorMessage::Error(e)) => {
                assert_eq!(e.code, ErrorCode::EnrollmentRefused, "{}", e.message);
                assert!(e.message.contains(why), "{why}: {}", e.message);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_and_no_certificate_may_only_enroll() {
    let c = collector().await;
    let identity = enrolled_identity(&c, "hq").await;
    c.store.revoke_site("hq", tally_collector::clock::now()).await.unwrap();
    let (_conn, mut tx, mut rx) = connect(&c, Some(&identity)).await;
    send(&mut tx, &hello()).await;
    match receive(&mut rx, &mut Vec::new()).await {
        Some(CollectorMessage::Error(e)) => assert_eq!(e.code, ErrorCode::RevokedCertificate),
        other => panic!("{other:?}"),
    }
    let (_conn, mut tx, mut rx) = connect(&c, None).await;
    send(&mut tx, &hello()).await;
    match receive(&mut rx, &mut Vec::new()).await {
        Some(CollectorMessage::Error(e)) => assert_eq!(e.code, ErrorCode::UnknownCertificate),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn garbage_closes_only_the_connection_that_sent_it() {
    let c = collector().await;
    let good = enrolled_identity(&c, "hq").await;
    let bad = enrolled_identity(&c, "branch").await;
    let (_good_conn, mut good_tx, mut good_rx) = connect(&c, Some(&good)).await;
    let mut buf = Vec::new();
    send(&mut good_tx, &hello()).await;
    welcome(&mut good_rx, &mut buf).await;
    assert!(matches!(receive(&mut good_rx, &mut buf).await, Some(CollectorMessage::Policy(_))));

    for (garbage, code) in [
        (vec![0, 0, 0, 3, 0xff, 0xff, 0xff], ErrorCode::ProtocolViolation),
        (vec![0x7f, 0xff, 0xff, 0xff], ErrorCode::FrameTooLarge),
    ] {
        let (conn, mut tx, mut rx) = connect(&c, Some(&bad)).await;
        send(&mut tx, &hello()).await;
        let mut buf = Vec::new();
        welcome(&mut rx, &mut buf).await;
        assert!(matches!(receive(&mut rx, &mut buf).await, Some(CollectorMessage::Policy(_))));
        tx.write_all(&garbage).await.unwrap();
        match receive(&mut rx, &mut buf).await {
            Some(CollectorMessage::Error(e)) => assert_eq!(e.code, code),
            other => panic!("{other:?}"),
        }
        let reason = conn.closed().await;
        assert!(
            matches!(reason, quinn::ConnectionError::ApplicationClosed(ref a) if a.error_code == u32::from(code).into()),
            "{reason:?}"
        );
    }

    send(&mut good_tx, &batch(1, vec![bucket(3, 42)])).await;
    assert_eq!(ack(&mut good_rx, &mut buf, 1).await, AckV2 { seq: 1, ..AckV2::default() });
    assert_eq!(c.store.buckets_of_day("hq", day()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_cap_change_is_pushed_within_seconds_its_report_stored_and_buckets_over_it_recorded() {
    let c = collector().await;
    let identity = enrolled_identity(&c, "hq").await;
    let (_conn, mut tx, mut rx) = connect(&c, Some(&identity)).await;
    let mut buf = Vec::new();
    send(&mut tx, &hello()).await;
    welcome(&mut rx, &mut buf).await;
    let first = match receive(&mut rx, &mut buf).await {
        Some(CollectorMessage::Policy(p)) => p,
        other => panic!("the policy comes right after Welcome: {other:?}"),
    };
    assert_eq!(first.cap_bps, None);

    // R17: a cap set while the agent is connected reaches it within 5 s.
    // Effective the day before the buckets below were measured: R26 judges a bucket against the
    // cap in force when it was measured.
    let mut hq = c.store.site("hq").await.unwrap().unwrap();
    hq.cap_bps = Some(20_000_000);
    let the_day_before = BucketStart::first_of_day(day()).time() - TimeDelta::days(1);
    let asked = std::time::Instant::now();
    assert_eq!(c.store.apply_checked(&CapChange::UpdateSite(hq), the_day_before).await.unwrap(), []);
    let pushed = tokio::time::timeout(Duration::from_secs(5), receive(&mut rx, &mut buf)).await;
    let pushed = match pushed {
        Ok(Some(CollectorMessage::Policy(p))) => p,
        other => panic!("no policy within 5 s: {other:?}"),
    };
    println!("pushed after {:?}", asked.elapsed());
    assert_eq!(pushed.cap_bps, Some(20_000_000));
    assert!(pushed.version > first.version);

    let report = PolicyApplied { version: pushed.version, ok: true, detail: "wan0 shaped".into() };
    send(&mut tx, &AgentMessage::PolicyApplied(report)).await;
    // At the cap × 1.05 exactly: not a violation; one bit/s above: a violation (R17).
    send(&mut tx, &batch(1, vec![bucket(0, 21_000_000), bucket(1, 21_000_001), bucket(2, 5_000_000)])).await;
    assert_eq!(ack(&mut rx, &mut buf, 1).await, AckV2 { seq: 1, ..AckV2::default() });
    // Merged with max, as buckets are (R10).
    send(&mut tx, &batch(2, vec![bucket(1, 30_000_000)])).await;
    ack(&mut rx, &mut buf, 2).await;

    let stored = c.store.policy_report("hq").await.unwrap().expect("the report is stored");
    assert_eq!((stored.version, stored.ok, stored.detail.as_str()), (pushed.version, true, "wan0 shaped"));
    let from = BucketStart::from_unix(bucket(0, 0).start).unwrap();
    let to = BucketStart::from_unix(bucket(288, 0).start).unwrap();
    let violations = c.store.enforcement_violations("acme", None, from, to).await.unwrap();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(
        (violations[0].site.as_str(), violations[0].bucket_start.unix(), violations[0].max_bps, violations[0].cap_bps),
        ("hq", bucket(1, 0).start, 30_000_000, 20_000_000)
    );
}

/// One batch of the clock cases: a sound bucket of now, one a day ahead (a socket's clock a day
/// ahead), ones of 1970-01-01, 1969-12-31, 0001-01-01 and 2000-01-15 (a clock that reset), one
/// with a bad sample count; the agent's discard totals with them.
fn clock_cases(seq: u64) -> (AgentMessage, WireBucket, Vec<WireBucket>, WireBucket) {
    let now = tally_collector::clock::now().timestamp();
    let sound = WireBucket { start: now - now.rem_euclid(300) - 300, max_bps: 1_000, samples: 60 };
    let wrong_time: Vec<WireBucket> = [sound.start + 300 + 86_400, 0, -300, -62_135_596_800, 947_894_400]
        .into_iter()
        .map(|start| WireBucket { start, ..sound })
        .collect();
    let bad = WireBucket { start: sound.start - 300, samples: 0, ..sound };
    let discarded = DiscardCounters { counter_reset: 3, above_cap: 1, elapsed_too_short: 0, elapsed_too_long: 2 };
    let buckets = [vec![sound], wrong_time.clone(), vec![bad]].concat();
    (AgentMessage::Buckets(BucketBatch { seq, buckets, discarded }), sound, wrong_time, bad)
}

/// A collector with the default age bound (40 days: the agent's retention and 5 days).
/// (Its first endpoint, with the 10-year bound, stays unused.)
async fn collector_with_default_age_bound() -> Collector {
    let c = collector().await;
    let limits = Limits { max_connections: 100, ..defaults() };
    let endpoint =
        tally_collector::agents::quic_endpoint(&c.ca, "127.0.0.1:0".parse().unwrap(), &["localhost".into()]).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(agents::run(endpoint, c.store.clone(), c.ca.clone(), limits, async {
        let _ = stopped.await;
    }));
    Collector { addr, _stop: stop, ..c }
}

#[tokio::test]
async fn buckets_with_a_wrong_time_are_quarantined_counted_and_released_by_the_operator() {
    let c = collector_with_default_age_bound().await;
    let identity = enrolled_identity(&c, "hq").await;
    let (_conn, mut tx, mut rx) = connect(&c, Some(&identity)).await;
    let mut buf = Vec::new();
    send(&mut tx, &hello()).await;
    welcome(&mut rx, &mut buf).await;
    assert!(matches!(receive(&mut rx, &mut buf).await, Some(CollectorMessage::Policy(_))));
    let (message, sound, wrong_time, bad) = clock_cases(1);
    send(&mut tx, &message).await;
    let answer = ack(&mut rx, &mut buf, 1).await;
    assert_eq!(answer.refused, [RefusedBucket { start: bad.start, reason: Refusal::BadSampleCount }]);
    let reasons = [Refusal::InTheFuture, Refusal::TooOld, Refusal::TooOld, Refusal::TooOld, Refusal::TooOld];
    let quarantined: Vec<RefusedBucket> =
        wrong_time.iter().zip(reasons).map(|(b, reason)| RefusedBucket { start: b.start, reason }).collect();
    assert_eq!(answer.quarantined, quarantined, "never silently deleted: kept, and the agent told so");

    // Only the sound bucket is billed; the rest is counted per reason and kept aside.
    let start = |w: &WireBucket| BucketStart::from_unix(w.start).unwrap();
    let billed = c.store.buckets_of_day("hq", start(&sound).day()).await.unwrap();
    assert_eq!(billed.iter().map(|b| b.start.unix()).collect::<Vec<_>>(), [sound.start]);
    let report = unbilled::report(&*c.store, "hq").await.unwrap();
    let counts: Vec<(&str, u64)> = report.refusals.iter().map(|r| (r.reason.as_str(), r.count)).collect();
    assert_eq!(counts, [("bad_sample_count", 1), ("in_the_future", 1), ("too_old", 4)]);
    let discards = report.agent_discards.as_ref().expect("the agent's discard totals are stored");
    assert_eq!((discards.counter_reset, discards.above_cap, discards.elapsed_too_long), (3, 1, 2));
    let mut held: Vec<i64> = wrong_time.iter().map(|w| w.start).collect();
    held.sort();
    let kept: Vec<i64> =
        c.store.site_intake("hq").await.unwrap().quarantined.iter().map(|q| q.bucket.start.unix()).collect();
    assert_eq!(kept, held, "oldest first");

    // Accepting as measured would bill the future: refused, nothing changed.
    let now = tally_collector::clock::now();
    let refused = unbilled::release(&*c.store, "hq", Release::Accept { shift: TimeDelta::zero() }, now).await;
    assert!(refused.unwrap_err().to_string().contains("still in the future"));
    let shift = TimeDelta::minutes(7);
    let refused = unbilled::release(&*c.store, "hq", Release::Accept { shift }, now).await.unwrap_err();
    assert!(refused.to_string().contains("5-minute boundary"), "{refused}");
    assert_eq!(c.store.site_intake("hq").await.unwrap().quarantined.len(), 5);

    // Discarded: gone, never billed.
    assert_eq!(unbilled::release(&*c.store, "hq", Release::Discard, now).await.unwrap(), 5);
    assert!(c.store.site_intake("hq").await.unwrap().quarantined.is_empty());
    assert_eq!(c.store.buckets_of_day("hq", start(&wrong_time[0]).day()).await.unwrap().len(), 0);

    // Again, then accepted a day earlier (the clock was a day ahead): billed where it belongs.
    let (message, ..) = clock_cases(2);
    send(&mut tx, &message).await;
    assert_eq!(ack(&mut rx, &mut buf, 2).await.quarantined.len(), 5);
    let accepted = unbilled::release(&*c.store, "hq", Release::Accept { shift: TimeDelta::days(-1) }, now).await;
    assert_eq!(accepted.unwrap(), 5);
    let moved = BucketStart::from_unix(wrong_time[0].start - 86_400).unwrap();
    let day = c.store.buckets_of_day("hq", moved.day()).await.unwrap();
    assert!(day.iter().any(|b| b.start == moved && b.max_bps == 1_000), "{day:?}");
    assert!(c.store.site_intake("hq").await.unwrap().quarantined.is_empty());
    let counts = unbilled::report(&*c.store, "hq").await.unwrap().refusals;
    assert_eq!(counts.iter().map(|r| r.count).sum::<u64>(), 12, "both batches counted");
}

/// Version 1's messages, as a version-1 agent decodes them: its own copies, frozen.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // every variant is there to decode; the test reads some
enum CollectorMessageV1 {
    Welcome(WelcomeV1),
    Ack(AckV1),
    Policy(tally_common::wire::Policy),
    Error(tally_common::wire::ErrorMessage),
    Enrolled(tally_common::wire::Enrolled),
}

#[derive(Debug, Deserialize)]
struct WelcomeV1 {
    protocol_version: u16,
    site: String,
}

#[derive(Debug, Deserialize)]
struct AckV1 {
    seq: u64,
    refused: Vec<(i64, RefusalV1)>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
enum RefusalV1 {
    NotOnBoundary,
    OutOfRange,
    InTheFuture,
    AboveSanityBound,
    BadSampleCount,
}

#[tokio::test]
async fn a_version_1_agent_is_answered_in_version_1() {
    let c = collector_with_default_age_bound().await;
    let identity = enrolled_identity(&c, "hq").await;
    let (_conn, mut tx, mut rx) = connect(&c, Some(&identity)).await;
    let mut buf = Vec::new();
    send(&mut tx, &hello_in(1)).await;
    match receive_as::<CollectorMessageV1>(&mut rx, &mut buf).await {
        Some(CollectorMessageV1::Welcome(w)) => assert_eq!((w.protocol_version, w.site.as_str()), (1, "hq")),
        other => panic!("expected a version-1 Welcome, got {other:?}"),
    }
    assert!(matches!(receive_as(&mut rx, &mut buf).await, Some(CollectorMessageV1::Policy(_))));
    let (message, sound, wrong_time, bad) = clock_cases(1);
    send(&mut tx, &message).await;
    let ack = match receive_as::<CollectorMessageV1>(&mut rx, &mut buf).await {
        Some(CollectorMessageV1::Ack(ack)) => ack,
        other => panic!("expected a version-1 Ack, got {other:?}"),
    };
    assert_eq!(ack.seq, 1);
    // Every refusal in version 1's words (too old reads as out of range), and the wrong-time
    // buckets are quarantined for this agent too.
    let mut expected = vec![(bad.start, RefusalV1::BadSampleCount), (wrong_time[0].start, RefusalV1::InTheFuture)];
    expected.extend(wrong_time[1..].iter().map(|w| (w.start, RefusalV1::OutOfRange)));
    assert_eq!(ack.refused, expected);
    assert_eq!(c.store.site_intake("hq").await.unwrap().quarantined.len(), 5);
    let billed = c.store.buckets_of_day("hq", BucketStart::from_unix(sound.start).unwrap().day()).await.unwrap();
    assert_eq!(billed.len(), 1);

    // A version the collector does not know any more is refused, by name.
    let (_conn, mut tx, mut rx) = connect(&c, Some(&identity)).await;
    send(&mut tx, &hello_in(0)).await;
    match receive(&mut rx, &mut Vec::new()).await {
        Some(CollectorMessage::Error(e)) => {
            assert_eq!(e.code, ErrorCode::UnsupportedVersion);
            assert!(e.message.contains(&format!("speaks 1 to {PROTOCOL_VERSION}")), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
}

/// Version 4 (R29): a day's LAN devices are kept, then acknowledged, the unsound ones counted
/// as refused; a day out of range is acknowledged as refused (it must not wedge the agent); a
/// batch over the bounds, or from an agent that did not speak version 4, ends its connection only.
#[tokio::test]
async fn lan_devices_are_kept_before_their_ack_and_only_from_version_4() {
    use tally_collector::store::DeviceStore;
    use tally_common::lan::{Mac, Protocol};
    use tally_common::wire::lan::{LanAck, LanDevice, LanSightings, MAX_DEVICES_PER_BATCH};

    let c = collector_with_default_age_bound().await;
    let identity = enrolled_identity(&c, "hq").await;
    let today = tally_collector::clock::now().date_naive();
    let start = today.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp();
    let device =
        |n: u8, first: i64| LanDevice { mac: Mac([0, 0x1b, 0x21, 0, 0, n]), first, last: first, via: Protocol::Arp };
    let sightings = |seq: u64, day: NaiveDate, devices: Vec<LanDevice>| {
        AgentMessage::LanSightings(LanSightings {
            seq,
            day: day.to_epoch_days(),
            devices,
            own: vec![Mac([0, 0x1b, 0x21, 0, 0, 0x99])],
            over_limit: 0,
        })
    };
    let (_conn, mut tx, mut rx) = connect(&c, Some(&identity)).await;
    let mut buf = Vec::new();
    send(&mut tx, &hello()).await;
    welcome(&mut rx, &mut buf).await;
    assert!(matches!(receive(&mut rx, &mut buf).await, Some(CollectorMessage::Policy(_))));
    let group = LanDevice { mac: Mac([0x01, 0, 0x5e, 0, 0, 1]), ..device(3, start) };
    send(&mut tx, &sightings(1, today, vec![device(1, start + 60), device(2, start - 60), group])).await;
    assert_eq!(receive(&mut rx, &mut buf).await, Some(CollectorMessage::LanAck(LanAck { seq: 1, refused: 2 })));
    let month = tally_common::time::Month::containing(today).to_string();
    let kept = c.store.month_devices("acme", &month).await.unwrap();
    assert_eq!(
        kept.seen,
        [("00:1b:21:00:00:01".to_owned(), Some("lan_discovery".to_owned()))],
        "stored before the ack"
    );
    assert_eq!(kept.sockets, ["00:1b:21:00:00:99"]);
    // A day from a wrong clock: acknowledged, every device refused, nothing kept.
    let long_ago = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap();
    let old = vec![device(4, long_ago.and_hms_opt(1, 0, 0).unwrap().and_utc().timestamp())];
    send(&mut tx, &sightings(2, long_ago, old)).await;
    assert_eq!(receive(&mut rx, &mut buf).await, Some(CollectorMessage::LanAck(LanAck { seq: 2, refused: 1 })));
    // Over the bounds: the connection ends with a protocol violation.
    send(&mut tx, &sightings(3, today, vec![device(5, start); MAX_DEVICES_PER_BATCH + 1])).await;
    match receive(&mut rx, &mut buf).await {
        Some(CollectorMessage::Error(e)) => assert_eq!(e.code, ErrorCode::ProtocolViolation, "{}", e.message),
        other => panic!("expected a protocol violation, got {other:?}"),
    }
    // An agent that said version 3 may not send them.
    let (_conn, mut tx, mut rx) = connect(&c, Some(&identity)).await;
    let mut buf = Vec::new();
    send(&mut tx, &hello_in(3)).await;
    assert!(
        matches!(receive(&mut rx, &mut buf).await, Some(CollectorMessage::WelcomeV2(w)) if w.protocol_version == 3)
    );
    assert!(matches!(receive(&mut rx, &mut buf).await, Some(CollectorMessage::Policy(_))));
    send(&mut tx, &sightings(1, today, vec![device(6, start)])).await;
    match receive(&mut rx, &mut buf).await {
        Some(CollectorMessage::Error(e)) => assert_eq!(e.code, ErrorCode::ProtocolViolation),
        other => panic!("expected a protocol violation, got {other:?}"),
    }
    assert_eq!(c.store.month_devices("acme", &month).await.unwrap().seen.len(), 1);
    // The collector still serves the agent.
    let (_conn, mut tx, mut rx) = connect(&c, Some(&identity)).await;
    send(&mut tx, &hello()).await;
    assert_eq!(welcome(&mut rx, &mut Vec::new()).await, "hq");
}
