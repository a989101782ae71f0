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

mod access;
mod accounts;
mod buckets;
mod caps;
mod intake;
mod orders;
mod usage;

pub(crate) use self::access::*;
pub(crate) use self::accounts::*;
pub(crate) use self::buckets::*;
pub(crate) use self::caps::*;
pub(crate) use self::intake::*;
pub(crate) use self::orders::*;
pub(crate) use self::usage::*;

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

/// Adds a recipient as the operator would; whether it was new.
async fn add_recipient(store: &impl Store, account: &str, channel: Channel, address: &str) -> bool {
    let recipient = Recipient { channel, address: address.into() };
    let change = RecipientChange { recipient, added: true, actor: "operator".into(), at: at(0) };
    store.change_recipient(account, &change).await.unwrap()
}
