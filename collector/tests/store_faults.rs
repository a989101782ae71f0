//! The SQLite store under faults it must survive without a restart (issue 15, item 1): a full
//! disk. A write that returned `Ok` is on disk; a failed commit leaves no connection inside a
//! transaction, so once space returns the same store writes again, and readers never block;
//! `/healthz` says `failing` (503) while writes fail.

mod support;

#[path = "../../testing/tmpfs.rs"]
mod tmpfs;

use chrono::{Days, NaiveDate};
use std::sync::Arc;
use support::skip::skip;
use tally_collector::store::sqlite::SqliteStore;

use tally_collector::store::{Account, AccountStore, BucketStore, Site, StoreError, StoreHealth};
use tally_common::bucket::Bucket;
use tally_common::kinds::SiteType;
use tally_common::region::RegionGroup;
use tally_common::time::BucketStart;
use tmpfs::Tmpfs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn day(n: u64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + Days::new(n)
}

/// Day `n`'s 288 buckets of site `hq`, each with its own value.
fn day_of_buckets(n: u64) -> Vec<(String, Bucket)> {
    let first = BucketStart::first_of_day(day(n)).unix();
    (0..288)
        .map(|slot| {
            let start = BucketStart::from_unix(first + 300 * slot).unwrap();
            ("hq".to_owned(), Bucket { start, max_bps: 1_000_000 + n * 1_000 + slot as u64, samples: 60 })
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
    store.add_account(&account).await.unwrap();
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
        Err(why) => return skip(&why),
    };
    let path = disk.path().join("tally.db");
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    seeded(&store).await;
    let http = serve_health(store.clone()).await;
    assert_eq!(health(http).await, (200, r#"{"status":"ok"}"#.to_owned()));
    disk.fill(1_536);

    // Whole days until the disk is full, and a few more tries after it is.
    let (mut stored, mut refused) = (Vec::new(), 0);
    for n in 0..2_000 {
        match store.merge_buckets(&day_of_buckets(n)).await {
            Ok(_) => stored.push(n),
            Err(StoreError::Database(e)) => {
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
    let (status, body) = health(http).await;
    assert!(status == 503 && body.contains(r#""status":"failing""#) && body.contains("full"), "{status} {body}");

    // Space returns: the same store, not reopened, writes again.
    disk.free();
    let next = 5_000;
    store.merge_buckets(&day_of_buckets(next)).await.expect("a write once space is back");
    stored.push(next);
    assert_eq!(store.write_failure(), None);
    assert_eq!(health(http).await.0, 200);
    drop(store);

    // Every day that was acknowledged is on disk, whole.
    let store = SqliteStore::open(&path).await.unwrap();
    for n in &stored {
        let buckets = store.buckets_of_day("hq", day(*n)).await.unwrap();
        assert_eq!(buckets, day_of_buckets(*n).into_iter().map(|(_, b)| b).collect::<Vec<_>>(), "day {n}");
    }
}

/// `/healthz` of an API on `store`, served on a free port.
async fn serve_health(store: Arc<SqliteStore>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let api = tally_collector::api::Api::new(store, &Default::default());
    tokio::spawn(tally_collector::serve(listener, api, std::future::pending()));
    addr
}

/// `GET /healthz`: status and body.
async fn health(addr: std::net::SocketAddr) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: tally\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    (status, response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}
