//! Intake: an agent's batch stored whole, the quarantine bounded and released.

use super::*;

/// A batch's buckets, quarantine, refusals and discard totals go in together; a group with one
/// batch the store cannot take (an unknown site) writes nothing of any batch.
pub(crate) async fn an_intake_is_stored_whole_or_not_at_all<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let discards = DiscardCounters { counter_reset: 2, above_cap: 0, elapsed_too_short: 1, elapsed_too_long: 0 };
    let intake = Intake {
        site: "hq".into(),
        buckets: vec![bucket(0, 100, 60).into()],
        wrong_time: vec![(bucket(288 * 400, 5, 60), Refusal::InTheFuture)],
        refused: vec![Refusal::BadSampleCount, Refusal::BadSampleCount],
        discards,
    };
    let stranger = Intake { site: "nowhere".into(), buckets: vec![bucket(1, 1, 60).into()], ..Intake::default() };
    assert!(store.ingest(&[intake.clone(), stranger]).await.is_err());
    assert_eq!(store.site_intake("hq").await.unwrap(), Default::default(), "nothing of the group");
    assert!(store.buckets_of_day("hq", day()).await.unwrap().is_empty());

    let (stats, outcomes) = store.ingest(std::slice::from_ref(&intake)).await.unwrap();
    assert_eq!((stats, outcomes), (MergeStats { inserted: 1, merged: 0 }, vec![Ingested { quarantined: 1 }]));
    // The totals are replaced, the counts add up, a quarantined start is merged with max (R10).
    let later = DiscardCounters { counter_reset: 3, ..discards };
    let again =
        Intake { discards: later, wrong_time: vec![(bucket(288 * 400, 9, 30), Refusal::InTheFuture)], ..intake };
    store.ingest(&[again]).await.unwrap();
    drop(store);

    let store = backend.open().await;
    let kept = store.site_intake("hq").await.unwrap();
    let counts: Vec<(Refusal, u64)> = kept.refusals.iter().map(|r| (r.reason, r.count)).collect();
    assert_eq!(counts, [(Refusal::BadSampleCount, 4), (Refusal::InTheFuture, 2)]);
    assert_eq!(kept.discards.map(|d| d.counters), Some(later));
    assert_eq!(kept.quarantined.len(), 1);
    assert_eq!(kept.quarantined[0].bucket, bucket(288 * 400, 9, 60));
    assert_eq!(store.buckets_of_day("hq", day()).await.unwrap(), [bucket(0, 100, 60)], "never billed");
    assert_eq!(store.site_intake("sh").await.unwrap(), Default::default(), "per site");
}

/// At most [`MAX_QUARANTINED_PER_SITE`] buckets wait per site: beyond, they are counted only.
/// Releasing takes them out and bills the accepted ones in one transaction.
pub(crate) async fn the_quarantine_of_a_site_is_bounded_and_released_at_once<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let max = MAX_QUARANTINED_PER_SITE as i64;
    let wrong = |from: i64, to: i64| -> Vec<(Bucket, Refusal)> {
        (from..to).map(|k| (bucket(-288 * 20_000 + k, 1, 60), Refusal::TooOld)).collect()
    };
    let first = Intake { site: "hq".into(), wrong_time: wrong(0, max - 1), ..Intake::default() };
    let second = Intake { site: "hq".into(), wrong_time: wrong(max - 1, max + 2), ..Intake::default() };
    let other = Intake { site: "sh".into(), wrong_time: wrong(0, 2), ..Intake::default() };
    let (_, outcomes) = store.ingest(&[first, second, other]).await.unwrap();
    assert_eq!(outcomes.iter().map(|o| o.quarantined).collect::<Vec<_>>(), [max as usize - 1, 1, 2]);
    let hq = store.site_intake("hq").await.unwrap();
    assert_eq!(hq.quarantined.len() as i64, max);
    assert_eq!(hq.refusals.iter().map(|r| r.count).sum::<u64>(), max as u64 + 2, "every refusal counted");

    let held: Vec<BucketStart> = hq.quarantined.iter().map(|q| q.bucket.start).collect();
    let accepted = [bucket(5, 1, 60)];
    assert_eq!(store.release_quarantined("hq", &held, &accepted).await.unwrap(), max as u64);
    assert!(store.site_intake("hq").await.unwrap().quarantined.is_empty());
    assert_eq!(store.buckets_of_day("hq", day()).await.unwrap(), accepted);
    assert_eq!(store.site_intake("sh").await.unwrap().quarantined.len(), 2, "another site's stays");
}
