//! The SQLite store under faults it must survive without a restart (issue 15, item 1): a full
//! disk. A write that returned `Ok` is on disk; a failed commit leaves no connection inside a
//! transaction, so once space returns the same store writes again, and readers never block;
//! `/healthz` says `failing` (503) while writes fail (and `tally-collector healthcheck` exits 1), and an agent's batch is refused over QUIC
//! with `StoreUnavailable` (it keeps the batch and retries) until it is acknowledged once stored.
//! A PostgreSQL behind a network that stops passing bytes: `/healthz` asks the database each
//! time, so it says `failing` and why within its 2 s bound, and `ok` again once it answers.

mod support;

use tally_testkit::tmpfs;

use chrono::{NaiveDate, TimeDelta};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use support::quic::{self, Identity};
use tally_collector::agents::ca::Ca;
use tally_collector::agents::{self, Limits};
use tally_collector::store::postgres::PgStore;
use tally_collector::store::sqlite::SqliteStore;
use tally_testkit::skip;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use tally_collector::store::{Account, AccountStore, BucketStore, ContractTerm, Site, StoreError, StoreHealth};
use tally_common::bucket::Bucket;
use tally_common::kinds::SiteType;
use tally_common::region::RegionGroup;
use tally_common::sampler::DiscardCounters;
use tally_common::time::BucketStart;
use tally_common::wire::{AgentMessage, BucketBatch, CollectorMessage, ErrorCode, WireBucket};
use tmpfs::Tmpfs;

fn day(n: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + TimeDelta::days(n)
}

/// The day shipped over QUIC: in 2025, before the days the disk is filled with, and in the past
/// (a bucket in the future would be quarantined).
const QUIC_DAY: i64 = -100;

/// Day `n`'s 288 buckets of site `hq`, each with its own value.
fn day_of_buckets(n: i64) -> Vec<(&'static str, Bucket)> {
    let first = BucketStart::first_of_day(day(n)).unix();
    (0..288)
        .map(|slot| {
            let start = BucketStart::from_unix(first + 300 * slot).unwrap();
            ("hq", Bucket { start, max_bps: (1_000_000 + n * 1_000 + slot) as u64, samples: 60 })
        })
        .collect()
}

async fn seeded(store: &SqliteStore) {
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
    let site = Site {
        id: "hq".into(),
        account: "acme".into(),
        name: "HQ".into(),
        country: "US".parse().unwrap(),
        region_group: RegionGroup::Group1,
        site_type: SiteType::Socket,
        cap_bps: None,
    };
    store.add_site(&site).await.unwrap();
}

#[tokio::test]
async fn a_full_disk_loses_no_acknowledged_day_and_writes_again_when_space_returns() {
    let disk = match Tmpfs::mount(8 * 1024) {
        Ok(disk) => disk,
        Err(why) => return skip!(&why),
    };
    let path = disk.path().join("tally.db");
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    seeded(&store).await;
    let http = serve_health(store.clone()).await;
    assert_eq!(health(http).await, Ok(r#"healthy: {"status":"ok"}"#.to_owned()));
    let agent = Agent::enrolled(store.clone()).await;
    disk.fill(1_536);

    // Whole days until the disk is full, and a few more tries after it is.
    let (mut stored, mut refused) = (Vec::new(), 0);
    for n in 0..2_000 {
        match store.merge_buckets(&day_of_buckets(n)).await {
            Ok(_) => stored.push(n),
            Err(StoreError::Unavailable(e)) => {
                refused += 1;
                if refused == 20 {
                    break;
                }
                assert!(e.contains("full") || e.contains("disk"), "day {n}: {e}");
            }
            Err(e) => panic!("day {n}: {e}"),
        }
    }
    assert!(refused == 20, "the disk never filled: {} days stored", stored.len());
    assert!(!stored.is_empty(), "nothing stored before the disk filled");
    // Readers are not locked out by the failed writers; the health check tells.
    assert_eq!(store.buckets_of_day("hq", day(stored[0])).await.unwrap().len(), 288);
    assert!(store.write_failure().is_some_and(|why| why.contains("full")), "{:?}", store.write_failure());
    let why = health(http).await.unwrap_err();
    assert!(why.contains(r#"answered 503 Service Unavailable: {"status":"failing""#) && why.contains("full"), "{why}");
    match agent.ship(QUIC_DAY).await {
        Some(CollectorMessage::Error(e)) => {
            assert_eq!(e.code, ErrorCode::StoreUnavailable, "{}", e.message);
            assert!(e.message.contains("retry later"), "{}", e.message);
        }
        other => panic!("a batch on a full disk must be refused, not acknowledged: {other:?}"),
    }
    assert!(store.buckets_of_day("hq", day(QUIC_DAY)).await.unwrap().is_empty());

    // Space returns: the same store, not reopened, writes again.
    disk.free();
    match agent.ship(QUIC_DAY).await {
        Some(CollectorMessage::AckV2(ack)) => assert!(ack.refused.is_empty() && ack.quarantined.is_empty()),
        other => panic!("the batch is acknowledged once space is back: {other:?}"),
    }
    stored.push(QUIC_DAY);
    let next = 5_000;
    store.merge_buckets(&day_of_buckets(next)).await.expect("a write once space is back");
    stored.push(next);
    assert_eq!(store.write_failure(), None);
    assert!(health(http).await.is_ok());
    drop(store);

    // Every day that was acknowledged is on disk, whole.
    let store = SqliteStore::open(&path).await.unwrap();
    for n in &stored {
        let buckets = store.buckets_of_day("hq", day(*n)).await.unwrap();
        assert_eq!(buckets, day_of_buckets(*n).into_iter().map(|(_, b)| b).collect::<Vec<_>>(), "day {n}");
    }
}

/// A socket of site `hq` enrolled with the collector's QUIC ingest on `store`.
struct Agent {
    addr: std::net::SocketAddr,
    ca: Arc<Ca>,
    identity: Identity,
    _ca_dir: tempfile::TempDir,
}

impl Agent {
    async fn enrolled(store: Arc<SqliteStore>) -> Agent {
        let ca_dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(Ca::load_or_create(&ca_dir.path().join("ca")).unwrap().0);
        let endpoint =
            tally_collector::agents::quic_endpoint(&ca, "127.0.0.1:0".parse().unwrap(), &["localhost".into()]).unwrap();
        let addr = endpoint.local_addr().unwrap();
        // Old buckets whatever today is (the days of this test are of 2026 and 2036).
        let defaults = Limits::from(&tally_collector::config::parse("").unwrap());
        let limits = Limits { max_bucket_age: TimeDelta::days(36_500), ..defaults };
        tokio::spawn(agents::run(endpoint, store.clone(), ca.clone(), limits, std::future::pending()));
        let now = tally_collector::clock::now();
        let token = agents::enrollment::enroll_token(&*store, &ca, "hq", TimeDelta::hours(1), now).await.unwrap();
        let identity = match quic::enroll(addr, ca.cert_der(), &token.secret).await {
            (Some(CollectorMessage::Enrolled(e)), key) => (e.cert_der, key),
            other => panic!("enrollment failed: {other:?}"),
        };
        Agent { addr, ca, identity, _ca_dir: ca_dir }
    }

    /// Connects, says hello, sends day `n`'s buckets, and returns the collector's answer.
    async fn ship(&self, n: i64) -> Option<CollectorMessage> {
        let (_conn, mut tx, mut rx) = quic::connect(self.addr, self.ca.cert_der(), Some(&self.identity)).await.unwrap();
        let mut buf = Vec::new();
        quic::send(&mut tx, &quic::hello()).await;
        assert!(matches!(quic::receive(&mut rx, &mut buf).await, Some(CollectorMessage::WelcomeV2(_))));
        assert!(matches!(quic::receive(&mut rx, &mut buf).await, Some(CollectorMessage::Policy(_))));
        let buckets = day_of_buckets(n).into_iter().map(|(_, b)| WireBucket::from(b)).collect();
        let batch = BucketBatch { seq: 1, buckets, discarded: DiscardCounters::default() };
        quic::send(&mut tx, &AgentMessage::Buckets(batch)).await;
        quic::receive(&mut rx, &mut buf).await
    }
}

/// `/healthz` of an API on `store`, served on a free port.
async fn serve_health<S: tally_collector::store::Store + 'static>(store: Arc<S>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let api = tally_collector::http_router(store, &Default::default());
    tokio::spawn(tally_collector::serve(listener, api, std::future::pending()));
    addr
}

/// `tally-collector healthcheck` against `/healthz` at `addr`: what it printed, on standard
/// output when it exits 0, on standard error when it exits 1.
async fn health(addr: std::net::SocketAddr) -> Result<String, String> {
    let url = format!("http://{addr}/healthz");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tally-collector"))
            .args(["healthcheck", "--url", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap().trim().to_owned();
    match out.status.code() {
        Some(0) => Ok(text(out.stdout)),
        Some(1) => Err(text(out.stderr)),
        other => panic!("healthcheck exited {other:?}"),
    }
}

/// A TCP proxy to `target` that stops passing bytes while `cut` is set: it then holds every
/// connection, old and new, as a partitioned network does.
async fn proxy(target: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let held = cut.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(target).await else { return };
            let (from_client, to_client) = client.into_split();
            let (from_server, to_server) = server.into_split();
            tokio::spawn(pass(from_client, to_server, held.clone()));
            tokio::spawn(pass(from_server, to_client, held.clone()));
        }
    });
    (addr, cut)
}

/// Copies `from` to `to`, holding each chunk while `held` is set.
async fn pass(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, held: Arc<AtomicBool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buffer).await {
        while held.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if n == 0 || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_asks_postgresql_each_time_and_names_why_it_fails() {
    let cluster = match support::pg_cluster::cluster() {
        Ok(cluster) => cluster,
        Err(why) => return skip!(&why),
    };
    let url = cluster.database();
    let target: std::net::SocketAddr = url.split('@').nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
    let (through, cut) = proxy(target).await;
    let store = PgStore::open(&url.replace(&target.to_string(), &through.to_string())).await.unwrap();
    let addr = serve_health(Arc::new(store)).await;
    assert_eq!(health(addr).await, Ok(r#"healthy: {"status":"ok"}"#.to_owned()));

    cut.store(true, Ordering::SeqCst);
    let asked = std::time::Instant::now();
    let failing = health(addr).await.unwrap_err();
    let took = asked.elapsed();
    assert!(
        failing.contains(r#""status":"failing""#) && failing.contains("the database does not answer within 2 s"),
        "{failing}"
    );
    assert!(took < std::time::Duration::from_secs(4), "answered after {took:?}: the probe is bounded");

    cut.store(false, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while health(addr).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "still failing 30 s after the database answers again");
    }
}
