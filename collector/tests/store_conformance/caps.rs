//! Caps (R17, R26): a bucket judged against the cap it was measured under, the policy in force.

use super::*;

/// A bucket above its site's cap × 1.05 is recorded with the merge that brings it (R17).
pub(crate) async fn a_bucket_above_its_cap_is_recorded_with_it<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    store.add_license(&pool("acme", RegionGroup::China, 100)).await.unwrap();
    let mut sh = store.site("sh").await.unwrap().unwrap();
    sh.cap_bps = Some(10_000_000);
    // In force before the buckets were measured (R26).
    assert_eq!(store.apply_checked(&CapChange::UpdateSite(sh), at(0) - TimeDelta::hours(1)).await.unwrap(), []);
    store
        .merge_buckets(&[
            ("sh", bucket(0, 10_500_000, 60)),
            ("sh", bucket(1, 10_500_001, 60)),
            ("hq", bucket(1, 900_000_000, 60)),
        ])
        .await
        .unwrap();
    let from = BucketStart::first_of_day(day());
    let to = BucketStart::first_of_day(day().succ_opt().unwrap());
    let violations = store.enforcement_violations("acme", None, from, to).await.unwrap();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!((violations[0].site.as_str(), violations[0].bucket_start), ("sh", bucket(1, 0, 0).start));
    assert_eq!((violations[0].max_bps, violations[0].cap_bps), (10_500_001, 10_000_000));
    assert!(store.enforcement_violations("acme", Some("hq"), from, to).await.unwrap().is_empty());
}

/// R26: a late bucket is judged against the cap its socket was enforcing when it measured it,
/// not against the cap in force when it arrived.
pub(crate) async fn a_bucket_is_judged_against_the_cap_it_was_measured_under<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    // R17 first: sh, in China, needs a cap within a pool before anything else may change.
    store.add_license(&pool("acme", RegionGroup::China, 100)).await.unwrap();
    let mut sh = store.site("sh").await.unwrap().unwrap();
    sh.cap_bps = Some(10_000_000);
    assert_eq!(store.apply_checked(&CapChange::UpdateSite(sh), at(0)).await.unwrap(), []);
    let mut hq = store.site("hq").await.unwrap().unwrap();
    let set_cap = async |hq: &mut Site, mbps: u64, hour: u32| {
        hq.cap_bps = Some(mbps * 1_000_000);
        assert_eq!(store.apply_checked(&CapChange::UpdateSite(hq.clone()), at(hour)).await.unwrap(), []);
        let version = store.policy("hq").await.unwrap().unwrap().version;
        let report = PolicyReport { version, ok: true, detail: "shaped".into(), at: at(hour) + TimeDelta::minutes(1) };
        (version, report)
    };
    let slot = |hour: i64| hour * 12;
    let violations = async || {
        let from = BucketStart::first_of_day(day());
        let to = BucketStart::first_of_day(day().succ_opt().unwrap());
        let found = store.enforcement_violations("acme", Some("hq"), from, to).await.unwrap();
        found.iter().map(|v| (v.bucket_start, v.cap_bps)).collect::<Vec<_>>()
    };
    let (_, applied) = set_cap(&mut hq, 50, 1).await;
    store.record_policy_report("hq", &applied).await.unwrap();

    // Measured under 50 at 05:00, delivered after the cap went down to 20 at 10:00: no violation.
    let (_, lowered) = set_cap(&mut hq, 20, 10).await;
    store.merge_buckets(&[("hq", bucket(slot(5), 40_000_000, 60))]).await.unwrap();
    assert_eq!(violations().await, []);
    // Measured at 11:00 by a socket that had not applied 20 yet (offline): it shaped at 50.
    store.merge_buckets(&[("hq", bucket(slot(11), 40_000_000, 60))]).await.unwrap();
    assert_eq!(violations().await, []);
    // Once it applied 20, 40 Mbit/s is a violation of 20.
    store.record_policy_report("hq", &PolicyReport { at: at(12), ..lowered }).await.unwrap();
    store.merge_buckets(&[("hq", bucket(slot(13), 40_000_000, 60))]).await.unwrap();
    assert_eq!(violations().await, [(bucket(slot(13), 0, 0).start, 20_000_000)]);

    // The reverse: measured under 20 at 15:00, the cap raised to 50 at 16:00 (and applied), the
    // bucket delivered afterwards: still a violation of 20, not forgiven.
    let (_, raised) = set_cap(&mut hq, 50, 16).await;
    store.record_policy_report("hq", &raised).await.unwrap();
    store.merge_buckets(&[("hq", bucket(slot(15), 40_000_000, 60))]).await.unwrap();
    let found = violations().await;
    assert_eq!(found, [(bucket(slot(13), 0, 0).start, 20_000_000), (bucket(slot(15), 0, 0).start, 20_000_000)]);
}

/// R26 with wire protocol 2's stamp: the policy version the socket says it enforced while
/// measuring decides, even where its report of applying it came late.
pub(crate) async fn a_stamped_bucket_is_judged_against_the_cap_its_socket_enforced<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    store.add_license(&pool("acme", RegionGroup::China, 100)).await.unwrap();
    let mut sh = store.site("sh").await.unwrap().unwrap();
    sh.cap_bps = Some(10_000_000);
    assert_eq!(store.apply_checked(&CapChange::UpdateSite(sh), at(0)).await.unwrap(), []);
    let mut hq = store.site("hq").await.unwrap().unwrap();
    let mut set_cap = async |mbps: u64, hour: u32| {
        hq.cap_bps = Some(mbps * 1_000_000);
        assert_eq!(store.apply_checked(&CapChange::UpdateSite(hq.clone()), at(hour)).await.unwrap(), []);
        store.policy("hq").await.unwrap().unwrap().version
    };
    let fifty = set_cap(50, 1).await;
    let applied = PolicyReport { version: fifty, ok: true, detail: "shaped".into(), at: at(1) + TimeDelta::minutes(1) };
    store.record_policy_report("hq", &applied).await.unwrap();
    let twenty = set_cap(20, 10).await;
    let slot = |hour: i64| hour * 12;
    let ingest = async |hour: i64, stamp: Option<u64>| {
        let bucket = Measured { bucket: bucket(slot(hour), 40_000_000, 60), policy_version: stamp };
        store.ingest(&[Intake { site: "hq".into(), buckets: vec![bucket], ..Intake::default() }]).await.unwrap();
    };
    let violations = async || {
        let (from, to) = (BucketStart::first_of_day(day()), BucketStart::first_of_day(day().succ_opt().unwrap()));
        let found = store.enforcement_violations("acme", Some("hq"), from, to).await.unwrap();
        found.iter().map(|v| (v.bucket_start, v.cap_bps)).collect::<Vec<_>>()
    };
    // 20 took effect at 10:00; the socket applied it but its report never arrived. Unstamped,
    // the bucket of 11:00 would count under 50 (the cap last reported applied); stamped 20, it
    // is a violation of 20.
    ingest(11, None).await;
    assert_eq!(violations().await, []);
    ingest(12, Some(twenty)).await;
    assert_eq!(violations().await, [(bucket(slot(12), 0, 0).start, 20_000_000)]);
    // Stamped 50 (measured before the socket applied 20): 50, no violation.
    ingest(13, Some(fifty)).await;
    assert_eq!(violations().await.len(), 1);
    // A stamp of a version this site never had, or not yet in force: judged as unstamped.
    ingest(14, Some(twenty + 1_000)).await;
    ingest(9, Some(twenty)).await;
    assert_eq!(violations().await.len(), 1, "{:?}", violations().await);
}

/// Each site's policy state: in force only once its agent reported its current version applied.
pub(crate) async fn a_policy_is_in_force_once_its_agent_applied_its_version<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    store.add_license(&pool("acme", RegionGroup::China, 100)).await.unwrap();
    let mut sh = store.site("sh").await.unwrap().unwrap();
    sh.cap_bps = Some(10_000_000);
    assert_eq!(store.apply_checked(&CapChange::UpdateSite(sh), at(0)).await.unwrap(), []);
    let version = store.policy("sh").await.unwrap().unwrap().version;
    let states = store.policy_states("acme").await.unwrap();
    assert_eq!(
        states.iter().map(|p| (p.site.as_str(), p.in_force())).collect::<Vec<_>>(),
        [("hq", false), ("sh", false)]
    );
    let report = |version, ok| PolicyReport { version, ok, detail: "shaped".into(), at: at(1) };
    store.record_policy_report("sh", &report(version, false)).await.unwrap();
    assert!(!store.policy_states("acme").await.unwrap()[1].in_force(), "a failed application");
    store.record_policy_report("sh", &report(version, true)).await.unwrap();
    let sh = &store.policy_states("acme").await.unwrap()[1];
    assert_eq!((sh.version, sh.reported, sh.in_force()), (version, Some((version, true)), true));
    assert!(store.policy_states("nobody").await.unwrap().is_empty());
}
