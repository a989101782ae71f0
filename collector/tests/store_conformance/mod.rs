//! The store's conformance suite: what every backend of [`Store`] must do, written against the
//! trait only. A backend's test file implements [`Backend`] and expands [`conformance_tests!`],
//! which makes one `#[tokio::test]` of each function here; `store.rs` runs it on SQLite.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use chrono::{DateTime, Days, NaiveDate, TimeDelta, TimeZone, Utc};
use tally_collector::orders::rules::{Actor, Item};
use tally_collector::orders::{Created, NewOrder, Quote, Transition, TransitionRefused, mail};
use tally_collector::store::{
    AccessStore, Account, AccountStore, BucketStore, CapChange, Channel, ConsoleSession, ContractTerm, DeviceStore,
    EventsAdded, Ingested, Intake, IntakeStore, MAX_QUARANTINED_PER_SITE, Measured, MergeStats, MeterEvent, NewLicense,
    NewOverusage, Notification, OrderStore, OutboxStore, Person, PolicyReport, PolicyStore, Recipient, RecipientChange,
    Resolution, ResolutionKind, Role, Site, Store, StoreError, TokenRefusal, UsageStore,
};
use tally_common::bucket::Bucket;
use tally_common::enforcement::CapViolation;
use tally_common::kinds::{ItemStatus, LicenseKind, SdpRegion, SiteType, ZtnaRegion};
use tally_common::lan::{Mac, Protocol as Via};
use tally_common::region::RegionGroup;
use tally_common::sampler::DiscardCounters;
use tally_common::time::BucketStart;
use tally_common::wire::Refusal;
use tally_common::wire::lan::LanDevice;

/// A database a test may fill: `open` returns a store on it, every call the same database, so a
/// second `open` is a restart. Each test makes its own backend, empty.
/// (Its store's methods come from the concern traits imported above: bounds on an associated
/// type do not bring a supertrait's methods into scope the way bounds on a type parameter do.)
pub(crate) trait Backend {
    type Store: Store;
    fn open(&self) -> impl Future<Output = Self::Store>;
}

/// One `#[tokio::test]` per conformance test, each on a fresh backend made by `$backend` (an
/// expression evaluated in the test's async body, so it may `.await`).
macro_rules! conformance_tests {
    ($backend:expr) => {
        conformance_tests!(@each $backend;
            buckets_merge_with_max_and_survive_a_reopen,
            large_merges_with_repeats_match_a_max_oracle,
            a_batch_with_one_bad_row_writes_nothing,
            duplicates_and_dangling_references_are_refused_by_name,
            accounts_are_listed_and_updated_but_keep_their_partner,
            a_checked_change_that_breaks_r17_writes_nothing,
            a_bucket_above_its_cap_is_recorded_with_it,
            a_bucket_is_judged_against_the_cap_it_was_measured_under,
            a_stamped_bucket_is_judged_against_the_cap_its_socket_enforced,
            an_enrollment_token_is_accepted_once_and_only_before_it_expires,
            revoking_a_site_revokes_its_certificates_only,
            api_tokens_are_found_by_hash_and_revoked,
            a_day_merged_into_during_its_recomputation_stays_dirty,
            a_dirty_day_is_claimed_by_one_collector_until_its_lease_ends,
            a_report_computes_dirty_days_in_memory_and_writes_nothing,
            every_dirty_day_is_recomputed_once_across_batches,
            a_snapshot_holds_more_dirty_days_than_one_query_can_name,
            usage_events_are_stored_once_and_counted_by_meter,
            lan_devices_count_once_across_sources_without_sockets_and_are_forgotten,
            a_month_is_finalized_once_with_its_overusage_and_notifications,
            the_late_buckets_of_a_finalized_month_are_noted_once_each,
            an_overusage_is_resolved_once,
            the_outbox_hands_out_what_is_due_and_keeps_attempts,
            an_order_is_stored_once_per_idempotency_key_with_its_confirmation,
            an_order_transition_is_all_or_nothing,
            contract_terms_are_renewed_and_end_the_licenses_orders_make,
            console_sessions_expire_and_end,
            recipient_changes_are_kept_with_who_and_when,
            a_policy_is_in_force_once_its_agent_applied_its_version,
            an_intake_is_stored_whole_or_not_at_all,
            the_quarantine_of_a_site_is_bounded_and_released_at_once,
        );
    };
    (@each $backend:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                store_conformance::$name($backend).await;
            }
        )+
    };
}
pub(crate) use conformance_tests;

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 10, 7).unwrap()
}

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 7, hour, 0, 0).unwrap()
}

fn bucket(slot: i64, max_bps: u64, samples: u8) -> Bucket {
    let start = BucketStart::from_unix(BucketStart::first_of_day(day()).unix() + 300 * slot).unwrap();
    Bucket { start, max_bps, samples }
}

/// Every account's first contract term here: the calendar year 2026.
fn term() -> ContractTerm {
    ContractTerm::months_from(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), 12)
}

fn account(id: &str, partner: Option<&str>) -> Account {
    Account {
        id: id.into(),
        name: id.to_uppercase(),
        partner: partner.map(Into::into),
        eop_contact_name: None,
        eop_contact_email: None,
    }
}

fn pool(account: &str, group: RegionGroup, mbps: u64) -> NewLicense {
    NewLicense {
        account: account.into(),
        kind: LicenseKind::BandwidthPool,
        region: Some(group.as_str().into()),
        quantity: mbps * 1_000_000,
        block_size: None,
        per_unit: None,
        effective_from: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        effective_to: NaiveDate::from_ymd_opt(2026, 12, 31).unwrap(),
    }
}

/// Account `acme` with site `hq` (US, Group 1) and `sh` (China, no cap yet).
async fn seeded<B: Backend>(backend: &B) -> B::Store {
    let store = backend.open().await;
    store.add_account(&account("acme", None), term()).await.unwrap();
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

pub(crate) async fn accounts_are_listed_and_updated_but_keep_their_partner<B: Backend>(backend: B) {
    let store = backend.open().await;
    store.add_account(&account("partner", None), term()).await.unwrap();
    store.add_account(&account("acme", Some("partner")), term()).await.unwrap();
    assert_eq!(store.account_ids().await.unwrap(), ["acme", "partner"]);
    let renamed = Account {
        name: "Acme Corp".into(),
        partner: None,
        eop_contact_email: Some("eop@acme.example".into()),
        ..account("acme", None)
    };
    assert!(store.update_account(&renamed).await.unwrap());
    let stored = store.account("acme").await.unwrap().unwrap();
    assert_eq!(stored, Account { partner: Some("partner".into()), ..renamed });
    assert!(!store.update_account(&account("ghost", None)).await.unwrap());
    assert_eq!(store.accounts().await.unwrap().len(), 2);
    assert_eq!(store.account("ghost").await.unwrap(), None);
}

/// R17 inside the store's transaction: a change that breaks it is not written; one that keeps
/// it is, and a new cap is a new policy version.
pub(crate) async fn a_checked_change_that_breaks_r17_writes_nothing<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    store.add_license(&pool("acme", RegionGroup::China, 100)).await.unwrap();
    let before = store.policy("sh").await.unwrap().unwrap();
    let mut sh = store.site("sh").await.unwrap().unwrap();

    sh.cap_bps = Some(200_000_000);
    let refused = store.apply_checked(&CapChange::UpdateSite(sh.clone()), at(12)).await.unwrap();
    assert!(matches!(refused.as_slice(), [CapViolation::OverPool { sum_bps: 200_000_000, .. }]), "{refused:?}");
    assert_eq!(store.site("sh").await.unwrap().unwrap().cap_bps, None, "nothing written");
    assert_eq!(store.policy("sh").await.unwrap().unwrap(), before);

    sh.cap_bps = Some(50_000_000);
    assert_eq!(store.apply_checked(&CapChange::UpdateSite(sh.clone()), at(12)).await.unwrap(), []);
    assert_eq!(store.site("sh").await.unwrap().unwrap(), sh);
    let after = store.policy("sh").await.unwrap().unwrap();
    assert!(after.version > before.version && after.cap_bps == Some(50_000_000), "{after:?}");
    let changed = store.policies_since(before.version).await.unwrap();
    assert_eq!(changed.iter().map(|p| p.site.as_str()).collect::<Vec<_>>(), ["sh"]);

    let report = PolicyReport { version: after.version, ok: true, detail: "shaped on wan0".into(), at: at(1) };
    store.record_policy_report("sh", &report).await.unwrap();
    assert_eq!(store.policy_report("sh").await.unwrap(), Some(report));
}

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

pub(crate) async fn an_enrollment_token_is_accepted_once_and_only_before_it_expires<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let now = at(12);
    store.add_enroll_token("fresh", "hq", now + TimeDelta::hours(24)).await.unwrap();
    store.add_enroll_token("stale", "hq", now - TimeDelta::seconds(1)).await.unwrap();
    assert_eq!(store.redeem_enroll_token("fresh", now).await.unwrap(), Ok("hq".to_owned()));
    assert_eq!(store.redeem_enroll_token("fresh", now).await.unwrap(), Err(TokenRefusal::Used));
    assert_eq!(store.redeem_enroll_token("stale", now).await.unwrap(), Err(TokenRefusal::Expired));
    assert_eq!(store.redeem_enroll_token("forged", now).await.unwrap(), Err(TokenRefusal::Unknown));
}

pub(crate) async fn revoking_a_site_revokes_its_certificates_only<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let later = at(0) + TimeDelta::days(365);
    store.add_certificate("01ab", "hq", later).await.unwrap();
    store.add_certificate("02cd", "sh", later).await.unwrap();
    assert_eq!(store.revoke_site("hq", at(1)).await.unwrap(), 1);
    assert_eq!(store.revoke_site("hq", at(2)).await.unwrap(), 0, "already revoked");
    assert!(store.certificate("01ab").await.unwrap().unwrap().revoked);
    assert!(!store.certificate("02cd").await.unwrap().unwrap().revoked);
    assert_eq!(store.certificate("ffff").await.unwrap(), None);
}

fn ann() -> Person {
    Person { name: "Ann Lee".into(), email: "ann@acme.example".into() }
}

pub(crate) async fn api_tokens_are_found_by_hash_and_revoked<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let operator = store.add_api_token("hash-op", Role::Operator, None, false, None).await.unwrap();
    let contact = store.add_api_token("hash-acme", Role::Customer, Some("acme"), true, Some(&ann())).await.unwrap();
    let found = store.api_token("hash-acme").await.unwrap().unwrap();
    assert_eq!(
        (found.id, found.role, found.account.as_deref(), found.contact, found.person),
        (contact, Role::Customer, Some("acme"), true, Some(ann()))
    );
    assert_eq!(store.api_token("hash-op").await.unwrap().unwrap().person, None);
    assert_eq!(store.api_token("unknown").await.unwrap(), None);
    assert!(store.revoke_api_token(operator).await.unwrap());
    assert!(store.api_token("hash-op").await.unwrap().unwrap().revoked());
    assert!(!store.revoke_api_token(9_999).await.unwrap());
    let listed = store.api_tokens().await.unwrap();
    assert_eq!(
        listed.iter().map(|t| (t.id, t.revoked_at.is_some())).collect::<Vec<_>>(),
        [(operator, true), (contact, false)]
    );
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

fn event(id: &str, meter: LicenseKind, subject: &str, hour: u32, region: Option<ZtnaRegion>) -> MeterEvent {
    MeterEvent {
        id: id.into(),
        account: "acme".into(),
        meter,
        occurred_at: at(hour),
        subject: subject.into(),
        region,
        quantity: 1,
        counted: true,
        source: None,
    }
}

/// Events are kept once by id; users are counted once, ZTNA users in the region of their latest
/// counted session (R12); the Data Lake's peak is its busiest hour (R13).
pub(crate) async fn usage_events_are_stored_once_and_counted_by_meter<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let ztna = LicenseKind::ZtnaUsers;
    let events = [
        event("e1", ztna, "ann", 1, Some(ZtnaRegion::General)),
        event("e2", ztna, "ann", 3, Some(ZtnaRegion::China)),
        event("e3", ztna, "bob", 2, Some(ZtnaRegion::General)),
        MeterEvent { counted: false, ..event("e4", ztna, "cid", 2, Some(ZtnaRegion::General)) },
        event("e5", LicenseKind::Devices, "laptop-1", 1, None),
        event("e6", LicenseKind::Devices, "laptop-1", 2, None),
        MeterEvent { quantity: 40, ..event("e7", LicenseKind::DataLake, "2026-10-07T01", 1, None) },
        MeterEvent { quantity: 90, ..event("e8", LicenseKind::DataLake, "2026-10-07T02", 2, None) },
    ];
    assert_eq!(store.add_usage_events(&events).await.unwrap(), EventsAdded { new: 8, late: 0 });
    let again = store.add_usage_events(&events[..2]).await.unwrap();
    assert_eq!(again, EventsAdded { new: 0, late: 0 }, "ids already stored");
    let counts = store.meter_counts("acme", "2026-10").await.unwrap();
    assert_eq!(counts.ztna_by_region, [(ZtnaRegion::China, 1), (ZtnaRegion::General, 1)], "by region name");
    assert_eq!((counts.devices.total, counts.data_lake_peak_hour, counts.dem_users), (1, 90, 0));
    assert_eq!(store.meter_counts("acme", "2026-11").await.unwrap(), Default::default());

    // R33: once October is finalized, a new event of October is late; a repeated one is not new.
    // (Stored times have milliseconds: what follows arrives in a later one.)
    let finalized_at = Utc::now();
    while Utc::now().timestamp_millis() == finalized_at.timestamp_millis() {
        std::hint::spin_loop();
    }
    assert!(store.finalize_month("acme", "2026-10", finalized_at, "{}", &[], None).await.unwrap());
    let late = [MeterEvent { quantity: 60, ..event("e9", LicenseKind::DataLake, "2026-10-07T01", 1, None) }];
    assert_eq!(store.add_usage_events(&late).await.unwrap(), EventsAdded { new: 1, late: 1 });
    assert_eq!(store.add_usage_events(&events[..1]).await.unwrap(), EventsAdded { new: 0, late: 0 });
    let received_late = store.events_received_after("acme", "2026-10", finalized_at).await.unwrap();
    assert_eq!(received_late, [(LicenseKind::DataLake, 1)]);
    assert_eq!(store.meter_counts("acme", "2026-10").await.unwrap().data_lake_peak_hour, 100, "stored and counted");
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

/// LAN sightings (R29) are merged per site, day and address; the device meter counts each
/// address once across the LAN and the API's events, never a socket's own (an HA peer seen on
/// the LAN); the addresses are forgotten after their retention, whole days at a time.
pub(crate) async fn lan_devices_count_once_across_sources_without_sockets_and_are_forgotten<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let start = at(0).timestamp();
    let device = |last: u8, first: i64, seen: i64| LanDevice {
        mac: Mac([if last == 2 { 0x02 } else { 0x00 }, 0x1b, 0x21, 0, 0, last]),
        first: start + first,
        last: start + seen,
        via: Via::Arp,
    };
    let peer = Mac([0, 0x1b, 0x21, 0, 0, 0x99]);
    let sightings = [device(1, 10, 20), device(2, 30, 30), LanDevice { mac: peer, ..device(3, 40, 40) }];
    store.add_lan_sightings("hq", day(), &sightings, &[Mac([0, 0x1b, 0x21, 0, 0, 0x98])]).await.unwrap();
    // Sent again, and widened: merged, not added.
    store.add_lan_sightings("hq", day(), &[device(1, 5, 50)], &[]).await.unwrap();
    store.add_lan_sightings("sh", day(), &[], &[peer]).await.unwrap();
    assert!(store.add_lan_sightings("nowhere", day(), &sightings, &[]).await.is_err());
    let api = |id: &str, subject: &str, source: &str| MeterEvent {
        source: Some(source.into()),
        ..event(id, LicenseKind::Devices, subject, 3, None)
    };
    let events = [api("d1", "00-1B-21-00-00-01", "inline"), api("d2", "laptop-1", "inline")];
    store.add_usage_events(&events).await.unwrap();
    let devices = store.meter_counts("acme", "2026-10").await.unwrap().devices;
    let by_source: Vec<(&str, u64)> = devices.by_source.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    assert_eq!((devices.total, devices.locally_administered), (3, 1), "{devices:?}");
    assert_eq!(by_source, [("inline", 2), ("lan_discovery", 2)]);
    assert_eq!(store.meter_counts("acme", "2026-11").await.unwrap().devices.total, 0);
    // R33: what first arrives after a time is told apart; a merge keeps the first arrival.
    // (Stored times have milliseconds: what follows arrives in a later one.)
    let finalized_at = Utc::now();
    while Utc::now().timestamp_millis() == finalized_at.timestamp_millis() {
        std::hint::spin_loop();
    }
    assert_eq!(store.lan_sightings_received_after("acme", "2026-10", finalized_at).await.unwrap(), 0);
    store.add_lan_sightings("hq", day(), &[device(1, 5, 60), device(7, 5, 60)], &[]).await.unwrap();
    assert_eq!(
        store.lan_sightings_received_after("acme", "2026-10", finalized_at).await.unwrap(),
        1,
        "only the new one"
    );
    assert_eq!(store.lan_sightings_received_after("acme", "2026-11", finalized_at).await.unwrap(), 0);
    // Retention: the LAN's addresses of October go; the API's events are usage, and stay.
    assert_eq!(store.forget_lan_sightings_before(day()).await.unwrap(), 0);
    assert_eq!(store.forget_lan_sightings_before(NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()).await.unwrap(), 4);
    let devices = store.meter_counts("acme", "2026-10").await.unwrap().devices;
    assert_eq!((devices.total, devices.by_source.get("lan_discovery")), (2, None));
    assert!(store.month_devices("acme", "2026-10").await.unwrap().sockets.is_empty());
}

fn overusage() -> NewOverusage {
    NewOverusage {
        license: LicenseKind::BandwidthPool,
        region: Some("group1".into()),
        measured: 150,
        licensed: 100,
        excess: 50,
        required_purchase: 1,
        flags: vec![LicenseKind::PremiumSecurity],
    }
}

fn notification() -> Notification {
    Notification {
        subject: "Over-usage in 2026-10".into(),
        text: "plain".into(),
        json: "{\"month\":\"2026-10\"}".into(),
    }
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

/// Adds a recipient as the operator would; whether it was new.
async fn add_recipient(store: &impl Store, account: &str, channel: Channel, address: &str) -> bool {
    let recipient = Recipient { channel, address: address.into() };
    let change = RecipientChange { recipient, added: true, actor: "operator".into(), at: at(0) };
    store.change_recipient(account, &change).await.unwrap()
}

/// Recipients are added and removed once each, every change kept with who and when.
pub(crate) async fn recipient_changes_are_kept_with_who_and_when<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let ann = Recipient { channel: Channel::Email, address: "ann@acme.example".into() };
    let change = |added, hour| RecipientChange { recipient: ann.clone(), added, actor: "Ann Lee".into(), at: at(hour) };
    assert!(store.change_recipient("acme", &change(true, 1)).await.unwrap());
    assert!(!store.change_recipient("acme", &change(true, 2)).await.unwrap(), "already there");
    assert_eq!(store.recipients("acme").await.unwrap(), std::slice::from_ref(&ann));
    assert!(store.change_recipient("acme", &change(false, 3)).await.unwrap());
    assert!(!store.change_recipient("acme", &change(false, 4)).await.unwrap(), "already gone");
    assert!(store.recipients("acme").await.unwrap().is_empty());
    assert_eq!(store.recipient_changes("acme").await.unwrap(), [change(true, 1), change(false, 3)]);
    assert!(store.change_recipient("nobody", &change(true, 5)).await.is_err(), "an unknown account");
}

/// R9 and R15: a month is finalized once, with its over-usage and one outbox row per recipient
/// of the account and of its managing partner, all in one transaction.
pub(crate) async fn a_month_is_finalized_once_with_its_overusage_and_notifications<B: Backend>(backend: B) {
    let store = backend.open().await;
    store.add_account(&account("partner", None), term()).await.unwrap();
    store.add_account(&account("acme", Some("partner")), term()).await.unwrap();
    add_recipient(&store, "acme", Channel::Email, "billing@acme.example").await;
    add_recipient(&store, "acme", Channel::Webhook, "https://hooks.acme.example/tally").await;
    add_recipient(&store, "partner", Channel::Email, "ops@partner.example").await;
    assert!(!add_recipient(&store, "acme", Channel::Email, "billing@acme.example").await, "already there");
    assert_eq!(store.finalized_report("acme", "2026-10").await.unwrap(), None);

    let saved = store
        .finalize_month("acme", "2026-10", at(1), "{\"v\":1}", &[overusage()], Some(&notification()))
        .await
        .unwrap();
    assert!(saved, "this call saved it");
    let (found, note) = ([overusage()], notification());
    let again = store.finalize_month("acme", "2026-10", at(2), "{\"v\":2}", &found, Some(&note)).await.unwrap();
    assert!(!again, "R30: only the first call saves it");
    let first = Some((at(1), "{\"v\":1}".to_owned()));
    assert_eq!(
        store.finalized_report("acme", "2026-10").await.unwrap(),
        first,
        "finalized once: the first report stays"
    );
    assert_eq!(store.finalized_months("acme").await.unwrap(), ["2026-10"]);
    assert!(store.overusages_before_units().await.unwrap().is_empty(), "R32: stored with its required purchase");
    assert!(store.finalized_months("partner").await.unwrap().is_empty());

    let found = store.overusages("acme", "2026-10").await.unwrap();
    assert_eq!(found.iter().map(|o| &o.found).collect::<Vec<_>>(), [&overusage()]);
    let outbox = store.notifications(Some("acme")).await.unwrap();
    let mut sent: Vec<(Channel, &str, &str)> =
        outbox.iter().map(|n| (n.channel, n.recipient.as_str(), n.body.as_str())).collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            (Channel::Email, "billing@acme.example", "plain"),
            (Channel::Email, "ops@partner.example", "plain"),
            (Channel::Webhook, "https://hooks.acme.example/tally", "{\"month\":\"2026-10\"}"),
        ]
    );
    assert!(outbox.iter().all(|n| n.topic == "2026-10" && n.subject == "Over-usage in 2026-10"));
}

/// R16: one resolution per over-usage; a True-Forward's license is written with it.
pub(crate) async fn an_overusage_is_resolved_once<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    store.finalize_month("acme", "2026-10", at(1), "{}", &[overusage()], None).await.unwrap();
    let id = store.overusages("acme", "2026-10").await.unwrap()[0].id;
    let resolution = Resolution { kind: ResolutionKind::TrueForward, quantity: 50, license_id: None, at: at(2) };
    let license = NewLicense { quantity: 150, ..pool("acme", RegionGroup::Group1, 0) };
    assert!(store.resolve_overusage(id, &resolution, Some(&license)).await.unwrap());
    let true_up = Resolution { kind: ResolutionKind::TrueUp, ..resolution.clone() };
    assert!(!store.resolve_overusage(id, &true_up, None).await.unwrap(), "resolved already");

    let resolved = store.overusage(id).await.unwrap().unwrap().resolution.unwrap();
    let licenses = store.licenses_of_account("acme").await.unwrap();
    assert_eq!(licenses.len(), 1, "only the True-Forward made a license");
    assert_eq!(resolved, Resolution { license_id: Some(licenses[0].id), ..resolution });
    assert_eq!(store.overusage(id + 1).await.unwrap(), None);
}

/// R15's delivery: due rows of the channels that can send, oldest first; a failure counts an
/// attempt and waits; a delivery is final.
pub(crate) async fn the_outbox_hands_out_what_is_due_and_keeps_attempts<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    add_recipient(&store, "acme", Channel::Email, "billing@acme.example").await;
    add_recipient(&store, "acme", Channel::Webhook, "https://hooks.acme.example/tally").await;
    store.finalize_month("acme", "2026-10", at(1), "{}", &[overusage()], Some(&notification())).await.unwrap();

    let lease = TimeDelta::minutes(15);
    let claim = |now, channels: &'static [Channel]| store.claim_due_notifications(now, lease, 10, channels);
    assert!(claim(at(0), &[Channel::Email, Channel::Webhook]).await.unwrap().is_empty());
    let due = claim(at(1), &[Channel::Email]).await.unwrap();
    assert_eq!(due.iter().map(|n| n.channel).collect::<Vec<_>>(), [Channel::Email], "only channels that can send");
    let email = due[0].id;
    // R30: a claimed row is the claimant's until its lease ends: then it is due again (its
    // claimant died), once.
    assert!(claim(at(1), &[Channel::Email]).await.unwrap().is_empty(), "claimed once");
    let after_lease = at(1) + lease;
    assert!(claim(after_lease - TimeDelta::seconds(1), &[Channel::Email]).await.unwrap().is_empty());
    assert_eq!(claim(after_lease, &[Channel::Email]).await.unwrap().iter().map(|n| n.id).collect::<Vec<_>>(), [email]);

    store.mark_failed(email, "connection refused", at(3)).await.unwrap();
    assert!(claim(at(2), &[Channel::Email]).await.unwrap().is_empty(), "waits for its retry");
    let retried = claim(at(3), &[Channel::Email]).await.unwrap();
    assert_eq!((retried[0].attempts, retried[0].last_error.as_deref()), (1, Some("connection refused")));

    store.mark_delivered(email, at(4)).await.unwrap();
    assert!(claim(at(5) + lease * 2, &[Channel::Email]).await.unwrap().is_empty(), "delivered: never again");
    let delivered = store.notifications(None).await.unwrap().into_iter().find(|n| n.id == email).unwrap();
    assert_eq!((delivered.attempts, delivered.delivered_at, delivered.last_error), (2, Some(at(4)), None));
}

fn order(key: &str, body_hash: &str, quantity: u64) -> NewOrder {
    NewOrder {
        account: "acme".into(),
        actor: "ann@acme.example".into(),
        items: vec![Item::IpAddresses { start_date: day(), quantity }],
        idempotency: Some((key.into(), body_hash.into())),
        at: at(1),
        confirmation: mail::confirmation,
    }
}

/// An idempotency key makes one order (R21): the same body again answers that order, another
/// body is refused; the confirmation e-mail is written with the order.
pub(crate) async fn an_order_is_stored_once_per_idempotency_key_with_its_confirmation<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let contact = Account { eop_contact_email: Some("eop@acme.example".into()), ..account("acme", None) };
    assert!(store.update_account(&contact).await.unwrap());
    let Created::New(made) = store.create_order(&order("k1", "h1", 4)).await.unwrap() else { panic!("not new") };
    assert_eq!((made.status, made.items.len()), (ItemStatus::Submitted, 1));
    assert_eq!(store.create_order(&order("k1", "h1", 4)).await.unwrap(), Created::Replayed(made.clone()));
    assert_eq!(store.create_order(&order("k1", "h2", 5)).await.unwrap(), Created::KeyReused);
    assert_eq!(store.order("acme", made.id).await.unwrap(), Some(made.clone()));
    assert_eq!(store.order("other", made.id).await.unwrap(), None, "orders are the account's own");

    let page = store.orders("acme", None, 0, 10).await.unwrap();
    let listed: serde_json::Value = serde_json::from_str(&page.json).unwrap();
    assert_eq!((listed[0]["id"].as_i64(), listed.as_array().unwrap().len()), (Some(made.id), 1));
    assert_eq!(page.next_after, None);
    let mailed: Vec<(String, String)> =
        store.notifications(Some("acme")).await.unwrap().into_iter().map(|n| (n.recipient, n.topic)).collect();
    assert_eq!(
        mailed,
        [("eop@acme.example".to_owned(), format!("order {}", made.id))],
        "one confirmation, to the contact"
    );
}

/// R27: terms are renewed without overlapping; a completed order's license (R24) ends with the
/// term in force on its start date, and a renewal extends none; without a term in force the
/// completion is refused and nothing moves.
pub(crate) async fn contract_terms_are_renewed_and_end_the_licenses_orders_make<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
    assert_eq!(store.contract_terms("acme").await.unwrap(), [term()]);
    assert_eq!(term().end, date(2026, 12, 31));
    let renewal = ContractTerm { start: date(2027, 1, 1), end: date(2027, 12, 31) };
    assert_eq!(store.set_contract_term("acme", renewal).await.unwrap(), Ok(None));
    assert_eq!(store.contract_terms("acme").await.unwrap(), [term(), renewal]);
    // Across both: refused, nothing changes.
    let across = ContractTerm { start: date(2026, 6, 1), end: date(2027, 5, 31) };
    assert_eq!(store.set_contract_term("acme", across).await.unwrap(), Err(vec![term(), renewal]));
    // Overlapping one: it replaces that one (a correction).
    let longer = ContractTerm { start: date(2026, 12, 1), end: date(2028, 6, 30) };
    assert_eq!(store.set_contract_term("acme", longer).await.unwrap(), Err(vec![term(), renewal]));
    let longer = ContractTerm { start: date(2027, 1, 1), end: date(2028, 6, 30) };
    assert_eq!(store.set_contract_term("acme", longer).await.unwrap(), Ok(Some(renewal)));
    assert_eq!(store.contract_terms("acme").await.unwrap(), [term(), longer]);

    let users = |start_date| Item::SdpUsers { start_date, region: SdpRegion::Global, quantity: 5 };
    let complete = async |item: Item, key: &str| {
        let new = NewOrder { items: vec![item], ..order(key, key, 1) };
        let Created::New(made) = store.create_order(&new).await.unwrap() else { panic!("not new") };
        let step = |to, actor, quote: Option<Quote>| Transition {
            account: "acme".into(),
            order: made.id,
            items: None,
            to,
            actor,
            actor_name: "someone".into(),
            quote,
            at: at(2),
            quote_mail: mail::quote,
        };
        store.transition_items(&step(ItemStatus::InProcess, Actor::Operator, None)).await.unwrap().unwrap();
        let quote = Quote { amount: "10.00".into(), currency: "USD".into() };
        let pending = step(ItemStatus::PendingConfirmation, Actor::Operator, Some(quote));
        store.transition_items(&pending).await.unwrap().unwrap();
        (made.id, store.transition_items(&step(ItemStatus::Completed, Actor::ContactPerson, None)).await.unwrap())
    };
    let (_, done) = complete(users(day()), "k1").await;
    assert_eq!(done.unwrap().status, ItemStatus::Completed);
    let licenses = store.licenses_of_account("acme").await.unwrap();
    let made: Vec<(LicenseKind, NaiveDate, NaiveDate)> =
        licenses.iter().map(|l| (l.terms.kind, l.terms.effective_from, l.terms.effective_to)).collect();
    assert_eq!(made, [(LicenseKind::ZtnaUsers, day(), date(2026, 12, 31))], "to the term's end, not a year on");
    let (_, done) = complete(users(date(2027, 3, 1)), "k2").await;
    assert_eq!(done.unwrap().status, ItemStatus::Completed);
    let ends: Vec<NaiveDate> =
        store.licenses_of_account("acme").await.unwrap().iter().map(|l| l.terms.effective_to).collect();
    assert_eq!(ends, [date(2026, 12, 31), date(2028, 6, 30)]);

    // After every term: refused, and the item stays where it was.
    let (id, refused) = complete(users(date(2029, 1, 1)), "k3").await;
    let item = store.order("acme", id).await.unwrap().unwrap().items[0].clone();
    assert_eq!(refused, Err(TransitionRefused::NoContractTerm { item: item.id, day: date(2029, 1, 1) }));
    assert_eq!(item.status, ItemStatus::PendingConfirmation);
    assert_eq!(store.licenses_of_account("acme").await.unwrap().len(), 2);
}

/// A console session is found by its hash until it expires or ends; starting one forgets the
/// expired.
pub(crate) async fn console_sessions_expire_and_end<B: Backend>(backend: B) {
    let store = backend.open().await;
    let session = |hours: i64| ConsoleSession {
        token_hash: "t".repeat(64),
        csrf: "c".repeat(64),
        expires_at: at(12) + TimeDelta::hours(hours),
    };
    store.add_session("short", &session(1), at(12)).await.unwrap();
    store.add_session("long", &session(12), at(12)).await.unwrap();
    assert_eq!(store.session("short", at(12)).await.unwrap(), Some(session(1)));
    assert_eq!(store.session("short", at(13)).await.unwrap(), None, "expired");
    assert_eq!(store.session("nobody", at(12)).await.unwrap(), None);
    assert!(store.end_session("long").await.unwrap());
    assert!(!store.end_session("long").await.unwrap());
    assert_eq!(store.session("long", at(12)).await.unwrap(), None, "ended");
    store.add_session("next", &session(30), at(14)).await.unwrap();
    assert!(!store.end_session("short").await.unwrap(), "the expired one was forgotten");
}

/// R22: a transition moves every chosen item or none.
pub(crate) async fn an_order_transition_is_all_or_nothing<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let mut two = order("k1", "h1", 4);
    two.items.push(Item::IpAddresses { start_date: day(), quantity: 2 });
    let Created::New(made) = store.create_order(&two).await.unwrap() else { panic!("not new") };
    let transition = |to, actor| Transition {
        account: "acme".into(),
        order: made.id,
        items: None,
        to,
        actor,
        actor_name: "someone".into(),
        quote: None,
        at: at(2),
        quote_mail: mail::quote,
    };
    let refused = store.transition_items(&transition(ItemStatus::InProcess, Actor::ContactPerson)).await.unwrap();
    assert!(matches!(refused, Err(TransitionRefused::Item { .. })), "{refused:?}");
    assert_eq!(store.order("acme", made.id).await.unwrap(), Some(made.clone()), "nothing moved");

    let moved = store.transition_items(&transition(ItemStatus::InProcess, Actor::Operator)).await.unwrap().unwrap();
    assert!(moved.items.iter().all(|i| i.status == ItemStatus::InProcess && i.history.len() == 2));
    assert_eq!(moved.status, ItemStatus::InProcess);
    let none = Transition { order: made.id + 1, ..transition(ItemStatus::Canceled, Actor::ContactPerson) };
    assert!(store.transition_items(&none).await.unwrap().is_err());
}

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
