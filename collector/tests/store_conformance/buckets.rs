//! Buckets: the max merge (R10), a batch whole or not at all, the dirty days and their claims
//! (R30), the late buckets of a finalized month.

use super::*;

pub(crate) async fn buckets_merge_with_max_and_survive_a_reopen<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let first = store
        .merge_buckets(&[("hq", bucket(0, 100, 60)), ("hq", bucket(1, 50, 30)), ("sh", bucket(0, 7, 60))])
        .await
        .unwrap();
    assert_eq!(first, MergeStats { inserted: 3, merged: 0 });
    let again = store.merge_buckets(&[("hq", bucket(0, 90, 60)), ("hq", bucket(1, 80, 20))]).await.unwrap();
    assert_eq!(again, MergeStats { inserted: 0, merged: 2 });
    drop(store);

    let store = backend.open().await;
    assert_eq!(store.buckets_of_day("hq", day()).await.unwrap(), [bucket(0, 100, 60), bucket(1, 80, 30)]);
    assert_eq!(store.buckets_of_day("sh", day()).await.unwrap(), [bucket(0, 7, 60)]);
    assert!(store.buckets_of_day("hq", day().succ_opt().unwrap()).await.unwrap().is_empty());
}

/// Merges larger than one statement (a backend may chunk them), with repeats inside one call and
/// across calls, against a map that keeps the max (R10).
pub(crate) async fn large_merges_with_repeats_match_a_max_oracle<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let mut oracle = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for round in 0..3u64 {
        // 2,600 rows over two sites and 9 days: every (site, slot) several times, values varying.
        let rows: Vec<(&str, Bucket)> = (0..2_600u64)
            .map(|i| {
                let site = if i % 2 == 0 { "hq" } else { "sh" };
                let slot = ((i * 7 + round * 13) % 2_592) as i64;
                (site, bucket(slot, (i * 31 + round * 1_000) % 5_000, 60))
            })
            .collect();
        let mut expected = MergeStats::default();
        for (site, b) in &rows {
            let value = oracle.entry((*site, b.start.unix())).or_insert(0);
            *value = (*value).max(b.max_bps);
            if seen.insert((*site, b.start.unix())) {
                expected.inserted += 1;
            } else {
                expected.merged += 1;
            }
        }
        assert_eq!(store.merge_buckets(&rows).await.unwrap(), expected, "round {round}");
    }
    for d in 0..9 {
        let date = day() + Days::new(d);
        for site in ["hq", "sh"] {
            let stored: Vec<(i64, u64)> =
                store.buckets_of_day(site, date).await.unwrap().iter().map(|b| (b.start.unix(), b.max_bps)).collect();
            let want: Vec<(i64, u64)> = oracle
                .iter()
                .filter(|((s, start), _)| *s == site && BucketStart::from_unix(*start).unwrap().day() == date)
                .map(|((_, start), v)| (*start, *v))
                .collect();
            assert_eq!(stored, want, "{site} {date}");
        }
    }
}

pub(crate) async fn a_batch_with_one_bad_row_writes_nothing<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let result = store.merge_buckets(&[("hq", bucket(0, 100, 60)), ("ghost", bucket(0, 1, 1))]).await;
    assert!(result.is_err());
    assert!(store.buckets_of_day("hq", day()).await.unwrap().is_empty(), "the transaction rolled back");
    assert!(claim_dirty(&store, at(0)).await.is_empty(), "no dirty mark either");
}

pub(crate) async fn duplicates_and_dangling_references_are_refused_by_name<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let site = store.site("hq").await.unwrap().unwrap();
    assert_eq!(site.region_group, RegionGroup::Group1);
    assert!(matches!(store.add_site(&site).await, Err(StoreError::Duplicate { what: "site", .. })));
    assert!(matches!(store.add_account(&account("acme", None), term()).await, Err(StoreError::Duplicate { .. })));
    let license = pool("nobody", RegionGroup::Group1, 100);
    assert!(matches!(store.add_license(&license).await, Err(StoreError::NotFound { .. })));
    let id = store.add_license(&NewLicense { account: "acme".into(), ..license.clone() }).await.unwrap();
    assert!(id > 0);
    let stored = store.licenses_of_account("acme").await.unwrap();
    assert_eq!((stored.len(), stored[0].id, &stored[0].terms.account), (1, id, &"acme".to_owned()));
}

/// A day that changes while its P95 is being computed stays dirty, and is computed again.
pub(crate) async fn a_day_merged_into_during_its_recomputation_stays_dirty<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    store.merge_buckets(&[("hq", bucket(0, 100, 60))]).await.unwrap();
    let read = claim_dirty(&store, at(1)).await;
    assert_eq!(read.len(), 1);
    // A merge lands between reading the dirty day and saving its P95.
    store.merge_buckets(&[("hq", bucket(1, 200, 60))]).await.unwrap();
    let stale = tally_common::p95::daily_site_p95(day(), [(bucket(0, 100, 60).start, 100)]);
    store.save_site_days(&[(read[0].0.clone(), stale)]).await.unwrap();
    assert_eq!(claim_dirty(&store, at(1)).await.len(), 1, "the newer merge keeps the day dirty, free to claim");
    // (`refresh` claims on the real clock, long after these claims' leases.)
    assert_eq!(tally_collector::usage::refresh(&store).await.unwrap(), 1);
    assert!(claim_dirty(&store, at(23)).await.is_empty());
    let days = store.site_days("acme", day(), day().succ_opt().unwrap()).await.unwrap();
    assert_eq!(days.computed[0].p95.buckets_present, 2, "computed again with both buckets");
    assert!(days.dirty.is_empty());
}

/// Claims the dirty days unclaimed at `now` for 5 minutes.
async fn claim_dirty<S: Store>(store: &S, now: DateTime<Utc>) -> Vec<tally_collector::store::DirtyDayBuckets> {
    store.claim_dirty_days(&Default::default(), 10, now, TimeDelta::minutes(5)).await.unwrap()
}

/// R30: a dirty day is recomputed by the one collector that claimed it; if that one dies, the
/// day is claimed again once its lease ends, and is never lost.
pub(crate) async fn a_dirty_day_is_claimed_by_one_collector_until_its_lease_ends<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    store.merge_buckets(&[("hq", bucket(0, 100, 60)), ("sh", bucket(0, 50, 60))]).await.unwrap();
    let lease = TimeDelta::minutes(5);
    let first = store.claim_dirty_days(&Default::default(), 1, at(1), lease).await.unwrap();
    assert_eq!(first.len(), 1, "as many as asked for");
    let second = claim_dirty(&store, at(1)).await;
    assert_eq!(second.len(), 1, "another collector gets the other day");
    assert_ne!(first[0].0.site, second[0].0.site);
    assert!(claim_dirty(&store, at(1)).await.is_empty(), "both are claimed");
    assert_eq!(store.dirty_days_midpoint(at(1)).await.unwrap(), None, "nothing left to split");
    // The first claimant dies without saving: its day is free once its lease ends, not before.
    store.save_site_days(&[(second[0].0.clone(), daily(&second[0]))]).await.unwrap();
    assert!(claim_dirty(&store, at(1) + lease - TimeDelta::seconds(1)).await.is_empty());
    let again = claim_dirty(&store, at(1) + lease).await;
    assert_eq!(again.iter().map(|(d, _)| &d.site).collect::<Vec<_>>(), [&first[0].0.site]);
    store.save_site_days(&[(again[0].0.clone(), daily(&again[0]))]).await.unwrap();
    assert!(claim_dirty(&store, at(3)).await.is_empty());
    let days = store.site_days("acme", day(), day().succ_opt().unwrap()).await.unwrap();
    assert_eq!(
        days.computed.iter().map(|d| (d.site.as_str(), d.p95.buckets_present)).collect::<Vec<_>>(),
        [("hq", 1), ("sh", 1)]
    );
}

/// R35: a report reads an account's days in one snapshot, the dirty ones with their buckets (even
/// those another collector is computing), computes those in memory, and writes nothing: the day
/// stays dirty and claimed, and a month long past is not finalized.
pub(crate) async fn a_report_computes_dirty_days_in_memory_and_writes_nothing<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    store.merge_buckets(&[("hq", bucket(0, 100, 60)), ("hq", bucket(1, 300, 60))]).await.unwrap();
    store.merge_buckets(&[("sh", bucket(0, 50, 60))]).await.unwrap();
    assert_eq!(tally_collector::usage::refresh(&store).await.unwrap(), 2);
    // A later bucket dirties hq's day again, and another collector claims it (and is slow).
    store.merge_buckets(&[("hq", bucket(2, 900, 60))]).await.unwrap();
    let lease = TimeDelta::minutes(5);
    let taken = store.claim_dirty_days(&Default::default(), 10, at(1), lease).await.unwrap();
    assert_eq!(taken.len(), 1);
    let next_day = day().succ_opt().unwrap();
    let snapshot = store.site_days("acme", day(), next_day).await.unwrap();
    assert_eq!(snapshot.computed.len(), 2, "both sites' computed days");
    assert_eq!(snapshot.dirty, taken, "the claimed day, with its three buckets");

    let (month, december) = ("2026-10".parse().unwrap(), Utc.with_ymd_and_hms(2026, 12, 15, 12, 0, 0).unwrap());
    let setting = tally_common::time::MonthWindowSetting::Calendar;
    let report = tally_collector::usage::report::build(&store, "acme", month, setting, december).await.unwrap();
    let shown = |site: &str| {
        let days = &report.sites.iter().find(|s| s.site == site).unwrap().days;
        let shown = days.iter().find(|d| d.date == day()).unwrap();
        (shown.p95_bps, shown.buckets_present)
    };
    assert_eq!(shown("hq"), (daily(&taken[0]).p95_bps, 3), "computed in memory from all three buckets");
    let sh = snapshot.computed.iter().find(|d| d.site == "sh").unwrap();
    assert_eq!(shown("sh"), (sh.p95.p95_bps, 1), "as computed");
    assert_eq!(report.days_computed_in_memory, 1);
    assert_eq!(report.status, tally_collector::usage::document::MonthStatus::Provisional, "never finalized by a read");
    assert!(store.finalized_months("acme").await.unwrap().is_empty());
    assert!(claim_dirty(&store, at(1) + lease - TimeDelta::seconds(1)).await.is_empty(), "still the other's");
    assert_eq!(claim_dirty(&store, at(1) + lease).await.len(), 1, "still dirty");
}

fn daily((dirty, buckets): &tally_collector::store::DirtyDayBuckets) -> tally_common::p95::DailyP95 {
    tally_common::p95::daily_site_p95(dirty.day, buckets.iter().copied())
}

/// More dirty days than one recomputation batch, split between the two lanes: every site-day is
/// computed once, with the P95 of its own buckets (R5).
pub(crate) async fn every_dirty_day_is_recomputed_once_across_batches<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    // 2 sites × 3,000 days, 20 buckets a day: 6,000 site-days.
    let mut rows = Vec::new();
    for d in 0..3_000i64 {
        for (n, site) in ["hq", "sh"].into_iter().enumerate() {
            for slot in 0..20 {
                let value = ((d * 7_919 + slot * 104_729 + n as i64 * 13) % 1_000_000) as u64;
                rows.push((site, bucket(d * 288 + slot * 11, value, 60)));
            }
        }
    }
    store.merge_buckets(&rows).await.unwrap();
    assert_eq!(tally_collector::usage::refresh(&store).await.unwrap(), 6_000);
    assert_eq!(tally_collector::usage::refresh(&store).await.unwrap(), 0, "nothing left dirty");

    let mut by_day: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for (site, b) in &rows {
        by_day.entry((site.to_string(), b.start.day())).or_default().push((b.start, b.max_bps));
    }
    let stored = store.site_days("acme", day(), day() + Days::new(3_000)).await.unwrap();
    let computed: Vec<_> = stored.computed.into_iter().map(|d| ((d.site, d.day), d.p95)).collect();
    let want: Vec<_> = by_day
        .into_iter()
        .map(|((site, date), buckets)| ((site, date), tally_common::p95::daily_site_p95(date, buckets)))
        .collect();
    assert_eq!(computed, want);
}

/// A reader's snapshot of an account whose days are not summarized yet (right after a big import,
/// or 1,000 sites' month before the engine's first pass) holds every dirty day with its buckets:
/// 12,000 of them name 36,000 values, more than one SQLite statement may bind.
pub(crate) async fn a_snapshot_holds_more_dirty_days_than_one_query_can_name<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let mut rows = Vec::new();
    for d in 0..6_000i64 {
        for (n, site) in ["hq", "sh"].into_iter().enumerate() {
            rows.push((site, bucket(d * 288 + n as i64, (d as u64 + 1) * 1_000, 60)));
        }
    }
    store.merge_buckets(&rows).await.unwrap();
    let snapshot = store.site_days("acme", day(), day() + Days::new(6_000)).await.unwrap();
    assert!(snapshot.computed.is_empty());
    assert_eq!(snapshot.dirty.len(), 12_000);
    for (dirty, buckets) in &snapshot.dirty {
        let d = (dirty.day - day()).num_days() as u64;
        assert_eq!(buckets.iter().map(|(_, bps)| *bps).collect::<Vec<_>>(), [(d + 1) * 1_000], "{dirty:?}");
    }
}

/// R9: the buckets of a finalized month that arrive after it was finalized, new or sent again,
/// are noted late once each however often they come; those before, and those of a month not
/// finalized, are not; the count keeps to the window asked.
pub(crate) async fn the_late_buckets_of_a_finalized_month_are_noted_once_each<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let on = |date: (u32, u32), slot: i64| {
        let first = BucketStart::first_of_day(NaiveDate::from_ymd_opt(2026, date.0, date.1).unwrap()).unix();
        Bucket { start: BucketStart::from_unix(first + 300 * slot).unwrap(), max_bps: 1_000, samples: 60 }
    };
    let time = |month, day| Utc.with_ymd_and_hms(2026, month, day, 0, 0, 0).unwrap();
    let (article, calendar) = ((time(10, 1), time(10, 31)), (time(10, 1), time(11, 1)));
    store.merge_buckets(&[("hq", bucket(0, 1_000, 60)), ("hq", bucket(5, 1_000, 60))]).await.unwrap();
    assert!(store.finalize_month("acme", "2026-10", Utc::now(), "{}", &[], None).await.unwrap());
    assert_eq!(store.late_buckets("acme", "2026-10", article.0, article.1).await.unwrap(), 0);

    let late = [
        ("hq", bucket(0, 2_000, 60)), // sent again, larger
        ("hq", bucket(1, 1_000, 60)), // new
        ("sh", bucket(2, 1_000, 60)),
        ("hq", on((10, 31), 0)), // the month's last day: outside the article's window
        ("hq", on((11, 1), 0)),  // November, not finalized
    ];
    store.merge_buckets(&late).await.unwrap();
    store.merge_buckets(&late[..2]).await.unwrap();
    assert_eq!(store.late_buckets("acme", "2026-10", article.0, article.1).await.unwrap(), 3);
    assert_eq!(store.late_buckets("acme", "2026-10", calendar.0, calendar.1).await.unwrap(), 4);
    assert_eq!(store.late_buckets("acme", "2026-11", time(11, 1), time(12, 1)).await.unwrap(), 0);
    let reopened = backend.open().await;
    assert_eq!(reopened.late_buckets("acme", "2026-10", article.0, article.1).await.unwrap(), 3);
}
