//! The SQLite store on a real database file: accounts, sites, licenses, and buckets merged with
//! max (R10) in all-or-nothing transactions that survive a reopen.

use chrono::NaiveDate;
use tally_collector::store::sqlite::SqliteStore;
use tally_collector::store::{Account, MergeStats, NewLicense, Site, Store, StoreError};
use tally_common::bucket::Bucket;
use tally_common::kinds::{LicenseKind, SiteType};
use tally_common::region::RegionGroup;
use tally_common::time::BucketStart;

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 10, 7).unwrap()
}

fn bucket(slot: i64, max_bps: u64, samples: u8) -> Bucket {
    let start = BucketStart::from_unix(BucketStart::first_of_day(day()).unix() + 300 * slot).unwrap();
    Bucket { start, max_bps, samples }
}

async fn seeded(path: &std::path::Path) -> SqliteStore {
    let store = SqliteStore::open(path).await.unwrap();
    let account = Account {
        id: "acme".into(),
        name: "Acme".into(),
        partner: None,
        eop_contact_name: None,
        eop_contact_email: None,
    };
    store.add_account(&account).await.unwrap();
    for (id, country, group) in [("hq", "US", RegionGroup::Group1), ("sh", "CN", RegionGroup::China)] {
        let site = Site {
            id: id.into(),
            account: "acme".into(),
            name: id.to_uppercase(),
            country: country.parse().unwrap(),
            region_group: group,
            site_type: SiteType::Socket,
            cap_bps: None,
        };
        store.add_site(&site).await.unwrap();
    }
    store
}

#[tokio::test]
async fn buckets_merge_with_max_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tally.db");
    let store = seeded(&path).await;
    let first = store
        .merge_buckets(&[
            ("hq".into(), bucket(0, 100, 60)),
            ("hq".into(), bucket(1, 50, 30)),
            ("sh".into(), bucket(0, 7, 60)),
        ])
        .await
        .unwrap();
    assert_eq!(first, MergeStats { inserted: 3, merged: 0 });
    let again =
        store.merge_buckets(&[("hq".into(), bucket(0, 90, 60)), ("hq".into(), bucket(1, 80, 20))]).await.unwrap();
    assert_eq!(again, MergeStats { inserted: 0, merged: 2 });
    drop(store);

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.buckets_of_day("hq", day()).await.unwrap(), [bucket(0, 100, 60), bucket(1, 80, 30)]);
    assert_eq!(store.buckets_of_day("sh", day()).await.unwrap(), [bucket(0, 7, 60)]);
    assert!(store.buckets_of_day("hq", day().succ_opt().unwrap()).await.unwrap().is_empty());
}

/// Merges larger than one statement (the backend chunks them), with repeats inside one call and
/// across calls, against a map that keeps the max (R10).
#[tokio::test]
async fn large_merges_with_repeats_match_a_max_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(&dir.path().join("tally.db")).await;
    let mut oracle = std::collections::BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..3u64 {
        // 2,600 rows over two sites and 9 days: every (site, slot) several times, values varying.
        let rows: Vec<(String, Bucket)> = (0..2_600u64)
            .map(|i| {
                let site = if i % 2 == 0 { "hq" } else { "sh" };
                let slot = ((i * 7 + round * 13) % 2_592) as i64;
                (site.to_owned(), bucket(slot, (i * 31 + round * 1_000) % 5_000, 60))
            })
            .collect();
        let mut expected = MergeStats::default();
        for (site, b) in &rows {
            let value = oracle.entry((site.clone(), b.start.unix())).or_insert(0);
            *value = (*value).max(b.max_bps);
            if seen.insert((site.clone(), b.start.unix())) {
                expected.inserted += 1;
            } else {
                expected.merged += 1;
            }
        }
        assert_eq!(store.merge_buckets(&rows).await.unwrap(), expected, "round {round}");
    }
    for d in 0..9 {
        let date = day() + chrono::Days::new(d);
        for site in ["hq", "sh"] {
            let stored: Vec<(i64, u64)> =
                store.buckets_of_day(site, date).await.unwrap().iter().map(|b| (b.start.unix(), b.max_bps)).collect();
            let want: Vec<(i64, u64)> = oracle
                .iter()
                .filter(|((s, start), _)| s == site && BucketStart::from_unix(*start).unwrap().day() == date)
                .map(|((_, start), v)| (*start, *v))
                .collect();
            assert_eq!(stored, want, "{site} {date}");
        }
    }
}

#[tokio::test]
async fn a_batch_with_one_bad_row_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(&dir.path().join("tally.db")).await;
    let result = store.merge_buckets(&[("hq".into(), bucket(0, 100, 60)), ("ghost".into(), bucket(0, 1, 1))]).await;
    assert!(result.is_err());
    assert!(store.buckets_of_day("hq", day()).await.unwrap().is_empty(), "the transaction rolled back");
}

#[tokio::test]
async fn duplicates_and_dangling_references_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(&dir.path().join("tally.db")).await;
    let site = store.site("hq").await.unwrap().unwrap();
    assert_eq!(site.region_group, RegionGroup::Group1);
    assert!(matches!(store.add_site(&site).await, Err(StoreError::Duplicate { what: "site", .. })));
    let license = NewLicense {
        account: "nobody".into(),
        kind: LicenseKind::BandwidthPool,
        region: Some("group1".into()),
        quantity: 100_000_000,
        block_size: None,
        per_unit: None,
        effective_from: day(),
        effective_to: day(),
    };
    assert!(matches!(store.add_license(&license).await, Err(StoreError::NotFound { .. })));
    let id = store.add_license(&NewLicense { account: "acme".into(), ..license }).await.unwrap();
    assert!(id > 0);
}

#[tokio::test]
async fn an_enrollment_token_is_accepted_once_and_only_before_it_expires() {
    use chrono::{TimeDelta, Utc};
    use tally_collector::store::TokenRefusal;

    let dir = tempfile::tempdir().unwrap();
    let store = seeded(&dir.path().join("tally.db")).await;
    let now = Utc::now();
    store.add_enroll_token("fresh", "hq", now + TimeDelta::hours(24)).await.unwrap();
    store.add_enroll_token("stale", "hq", now - TimeDelta::seconds(1)).await.unwrap();
    assert_eq!(store.redeem_enroll_token("fresh", now).await.unwrap(), Ok("hq".to_owned()));
    assert_eq!(store.redeem_enroll_token("fresh", now).await.unwrap(), Err(TokenRefusal::Used));
    assert_eq!(store.redeem_enroll_token("stale", now).await.unwrap(), Err(TokenRefusal::Expired));
    assert_eq!(store.redeem_enroll_token("forged", now).await.unwrap(), Err(TokenRefusal::Unknown));
}

#[tokio::test]
async fn revoking_a_site_revokes_its_certificates_only() {
    use chrono::{TimeDelta, Utc};

    let dir = tempfile::tempdir().unwrap();
    let store = seeded(&dir.path().join("tally.db")).await;
    let later = Utc::now() + TimeDelta::days(365);
    store.add_certificate("01ab", "hq", later).await.unwrap();
    store.add_certificate("02cd", "sh", later).await.unwrap();
    assert_eq!(store.revoke_site("hq", Utc::now()).await.unwrap(), 1);
    assert_eq!(store.revoke_site("hq", Utc::now()).await.unwrap(), 0, "already revoked");
    assert!(store.certificate("01ab").await.unwrap().unwrap().revoked);
    assert!(!store.certificate("02cd").await.unwrap().unwrap().revoked);
    assert_eq!(store.certificate("ffff").await.unwrap(), None);
}

/// A day that changes while its P95 is being computed stays dirty, and is computed again.
#[tokio::test]
async fn a_day_merged_into_during_its_recomputation_stays_dirty() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(&dir.path().join("tally.db")).await;
    store.merge_buckets(&[("hq".into(), bucket(0, 100, 60))]).await.unwrap();
    let read = store.dirty_days(&Default::default(), 10).await.unwrap();
    assert_eq!(read.len(), 1);
    // A merge lands between reading the dirty day and saving its P95.
    store.merge_buckets(&[("hq".into(), bucket(1, 200, 60))]).await.unwrap();
    let stale = tally_common::p95::daily_site_p95(day(), [(bucket(0, 100, 60).start, 100)]);
    store.save_site_days(&[(read[0].0.clone(), stale)]).await.unwrap();
    assert_eq!(
        store.dirty_days(&Default::default(), 10).await.unwrap().len(),
        1,
        "the newer merge keeps the day dirty"
    );
    assert_eq!(tally_collector::usage::refresh(&store).await.unwrap(), 1);
    assert!(store.dirty_days(&Default::default(), 10).await.unwrap().is_empty());
    let days = store.site_days("acme", day(), day().succ_opt().unwrap()).await.unwrap();
    assert_eq!(days[0].p95.buckets_present, 2, "computed again with both buckets");
}

/// More dirty days than one recomputation batch, split between the two lanes: every site-day is
/// computed once, with the P95 of its own buckets (R5).
#[tokio::test]
async fn every_dirty_day_is_recomputed_once_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(&dir.path().join("tally.db")).await;
    // 2 sites × 3,000 days, 20 buckets a day: 6,000 site-days.
    let mut rows = Vec::new();
    for d in 0..3_000i64 {
        for (n, site) in ["hq", "sh"].into_iter().enumerate() {
            for slot in 0..20 {
                let value = ((d * 7_919 + slot * 104_729 + n as i64 * 13) % 1_000_000) as u64;
                rows.push((site.to_owned(), bucket(d * 288 + slot * 11, value, 60)));
            }
        }
    }
    store.merge_buckets(&rows).await.unwrap();
    assert_eq!(tally_collector::usage::refresh(&store).await.unwrap(), 6_000);
    assert_eq!(tally_collector::usage::refresh(&store).await.unwrap(), 0, "nothing left dirty");

    let mut by_day: std::collections::BTreeMap<_, Vec<_>> = std::collections::BTreeMap::new();
    for (site, b) in &rows {
        by_day.entry((site.clone(), b.start.day())).or_default().push((b.start, b.max_bps));
    }
    let stored = store.site_days("acme", day(), day() + chrono::Days::new(3_000)).await.unwrap();
    let computed: Vec<_> = stored.into_iter().map(|d| ((d.site, d.day), d.p95)).collect();
    let want: Vec<_> = by_day
        .into_iter()
        .map(|((site, date), buckets)| ((site, date), tally_common::p95::daily_site_p95(date, buckets)))
        .collect();
    assert_eq!(computed, want);
}
