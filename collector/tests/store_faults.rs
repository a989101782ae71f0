//! The SQLite store under faults it must survive without a restart (issue 15, item 1): a full
//! disk. A write that returned `Ok` is on disk; a failed commit leaves no connection inside a
//! transaction, so once space returns the same store writes again, and readers never block.

mod support;

#[path = "../../testing/tmpfs.rs"]
mod tmpfs;

use chrono::{Days, NaiveDate};
use support::skip::skip;
use tally_collector::store::sqlite::SqliteStore;
use tally_collector::store::{Account, AccountStore, BucketStore, Site, StoreError};
use tally_common::bucket::Bucket;
use tally_common::kinds::SiteType;
use tally_common::region::RegionGroup;
use tally_common::time::BucketStart;
use tmpfs::Tmpfs;

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
    let store = SqliteStore::open(&path).await.unwrap();
    seeded(&store).await;
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
    // Readers are not locked out by the failed writers.
    assert_eq!(store.buckets_of_day("hq", day(stored[0])).await.unwrap().len(), 288);

    // Space returns: the same store, not reopened, writes again.
    disk.free();
    let next = 5_000;
    store.merge_buckets(&day_of_buckets(next)).await.expect("a write once space is back");
    stored.push(next);
    drop(store);

    // Every day that was acknowledged is on disk, whole.
    let store = SqliteStore::open(&path).await.unwrap();
    for n in &stored {
        let buckets = store.buckets_of_day("hq", day(*n)).await.unwrap();
        assert_eq!(buckets, day_of_buckets(*n).into_iter().map(|(_, b)| b).collect::<Vec<_>>(), "day {n}");
    }
}
