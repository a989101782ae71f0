//! The collector's store: one [`Store`] trait, one backend per database. SQLite (embedded, the
//! default) lives in [`sqlite`]; a PostgreSQL backend will implement the same trait with its own
//! migrations directory, chosen by the store URL.
//!
//! Invariants every backend keeps:
//! - one bucket row per (site, bucket start); a repeated bucket is merged with `max` of the value
//!   and of the sample count (R10), so ingest is idempotent;
//! - a call that writes several rows writes all of them or none (one transaction);
//! - an enforcement violation is recorded with the bucket that causes it, never without it;
//! - a commit is durable when the call returns (SQLite: WAL with `synchronous = FULL`).
//!
//! Storage errors are mapped to [`StoreError`] here, once; callers never see sqlx types.

pub mod sqlite;

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};
use tally_common::bucket::Bucket;
use tally_common::enforcement::{CapViolation, CappedSite, check};
use tally_common::kinds::{ItemStatus, LicenseKind, SiteType, ZtnaRegion};
use tally_common::license::LicenseTerm;

use crate::orders::rules::SiteFacts;
use crate::orders::{Created, NewOrder, Order, OrderPage, Transition, TransitionRefused};
use tally_common::p95::DailyP95;
use tally_common::region::{CountryCode, RegionGroup};
use tally_common::time::BucketStart;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {id:?} already exists")]
    Duplicate { what: &'static str, id: String },
    #[error("{what} {id:?} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("the store holds a value it cannot read: {0}")]
    Corrupt(String),
    #[error("store error: {0}")]
    Database(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub name: String,
    /// The managing partner of a sub-account.
    pub partner: Option<String>,
    pub eop_contact_name: Option<String>,
    pub eop_contact_email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub id: String,
    pub account: String,
    pub name: String,
    pub country: CountryCode,
    /// Follows the country (R11), recorded when the site is added.
    pub region_group: RegionGroup,
    pub site_type: SiteType,
    pub cap_bps: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLicense {
    pub account: String,
    pub kind: LicenseKind,
    /// A region group or ZTNA region, for the kinds scoped by region.
    pub region: Option<String>,
    /// Bits per second for the bandwidth pool; users, devices or data units otherwise.
    pub quantity: u64,
    pub block_size: Option<u64>,
    pub per_unit: Option<u64>,
    pub effective_from: NaiveDate,
    pub effective_to: NaiveDate,
}

/// Why an enrollment token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the enrollment token is unknown to this collector")]
    Unknown,
    #[error("the enrollment token was already used: create a new one with `tally-collector site enroll-token`")]
    Used,
    #[error("the enrollment token has expired: create a new one with `tally-collector site enroll-token`")]
    Expired,
}

/// A certificate the CA issued to a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    /// Hex serial number.
    pub serial: String,
    pub site: String,
    pub revoked: bool,
}

/// A license as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    pub id: i64,
    pub terms: NewLicense,
}

impl License {
    /// Its days and quantity, as `tally_common::license` counts them (R8).
    pub fn term(&self) -> LicenseTerm {
        LicenseTerm {
            effective_from: self.terms.effective_from,
            effective_to: self.terms.effective_to,
            quantity: self.terms.quantity,
        }
    }
}

/// What an account's `sites` and `licenses` break of R17 on `day` (the rule is
/// `tally_common::enforcement::check`); a backend runs it inside the transaction of a change.
pub fn cap_violations(sites: &[Site], licenses: &[License], day: NaiveDate) -> Result<Vec<CapViolation>, StoreError> {
    let sites: Vec<CappedSite> = sites
        .iter()
        .map(|s| CappedSite {
            site: s.id.clone(),
            region_group: s.region_group,
            site_type: s.site_type,
            cap_bps: s.cap_bps,
        })
        .collect();
    Ok(check(&sites, &pool_licenses(licenses)?, day))
}

/// The bandwidth-pool licenses among `licenses`, with their region group.
pub fn pool_licenses(licenses: &[License]) -> Result<Vec<(RegionGroup, LicenseTerm)>, StoreError> {
    licenses
        .iter()
        .filter(|l| l.terms.kind == LicenseKind::BandwidthPool)
        .map(|l| {
            let region = l.terms.region.as_deref().unwrap_or_default();
            let group =
                region.parse().map_err(|e| StoreError::Corrupt(format!("license {}: region {region:?}: {e}", l.id)))?;
            Ok((group, l.term()))
        })
        .collect()
}

/// A site's day whose buckets changed since its daily P95 was last computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyDay {
    pub site: String,
    pub day: NaiveDate,
    /// Bumped by every merge into the day: a recomputation clears only the generation it read.
    pub generation: i64,
}

/// A change that R17 constrains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapChange {
    AddSite(Site),
    /// A site's new country (and region group), type and cap; its id and account stay.
    UpdateSite(Site),
    /// A license's new quantity and last day.
    UpdateLicense {
        id: i64,
        quantity: u64,
        effective_to: NaiveDate,
    },
}

/// A site-day's key: (site, day).
pub type DayKey = (String, NaiveDate);

/// Site-day keys after `after` through `through`, in (site, day) order; `None` leaves that end
/// open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRange {
    pub after: Option<DayKey>,
    pub through: Option<DayKey>,
}

/// A dirty day with its buckets' `(start, max_bps)`.
pub type DirtyDayBuckets = (DirtyDay, Vec<(BucketStart, u64)>);

/// A site's computed day (R5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteDay {
    pub site: String,
    pub day: NaiveDate,
    pub p95: DailyP95,
}

/// A metered event reduced to its meter's terms (R12, R13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterEvent {
    /// Unique: an event stored once is never stored again.
    pub id: String,
    pub account: String,
    pub meter: LicenseKind,
    pub occurred_at: DateTime<Utc>,
    /// The user or device counted, or the UTC hour (Data Lake).
    pub subject: String,
    pub region: Option<ZtnaRegion>,
    /// Data Lake: the hour's event count; 1 otherwise.
    pub quantity: u64,
    /// Whether the event counts for its meter at all.
    pub counted: bool,
}

/// An account's meters over one calendar month (UTC).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterCounts {
    /// Distinct ZTNA users by the region of their latest counted session.
    pub ztna_by_region: Vec<(ZtnaRegion, u64)>,
    pub ai_security_users: u64,
    pub dem_users: u64,
    pub devices: u64,
    /// The highest event count of any UTC hour.
    pub data_lake_peak_hour: u64,
}

/// Over-usage of one license (and region group) in a finalized month (R14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOverusage {
    pub license: LicenseKind,
    /// The region group of a bandwidth-pool over-usage.
    pub region: Option<String>,
    pub measured: u64,
    pub licensed: u64,
    pub excess: u64,
    /// Licenses that require the same increase (R14).
    pub flags: Vec<LicenseKind>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overusage {
    pub id: i64,
    pub account: String,
    pub month: String,
    pub found: NewOverusage,
    pub resolution: Option<Resolution>,
}

/// How an over-usage was resolved (R16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub kind: ResolutionKind,
    pub quantity: u64,
    /// The license a True-Forward created.
    pub license_id: Option<i64>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolutionKind {
    /// A one-time charge for the month's excess.
    TrueUp,
    /// A license increase from the next month to the end of the term.
    TrueForward,
}

impl ResolutionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResolutionKind::TrueUp => "true_up",
            ResolutionKind::TrueForward => "true_forward",
        }
    }
}

/// How a notification travels (R15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Channel {
    Email,
    /// An HTTP POST signed with HMAC-SHA256.
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }
}

impl std::str::FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "email" => Ok(Channel::Email),
            "webhook" => Ok(Channel::Webhook),
            other => Err(format!("{other:?} is neither email nor webhook")),
        }
    }
}

/// A month's over-usage notification, before it is addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub subject: String,
    /// Plain text for e-mail, and the JSON document for webhooks.
    pub text: String,
    pub json: String,
}

/// One recipient's copy of a notification, in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: i64,
    pub account: String,
    /// What it is about: a month (`2026-10`, R15), an order (`order 12`) or a quote (R23).
    pub topic: String,
    pub channel: Channel,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub attempts: u32,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// A site's cap as pushed to its agent (R17); the version grows with every change of any cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePolicy {
    pub site: String,
    pub version: u64,
    pub cap_bps: Option<u64>,
}

/// What a site's agent last reported about applying its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyReport {
    pub version: u64,
    pub ok: bool,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// A bucket above its site's cap × 1.05 (R17), and the cap it broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnforcementViolation {
    pub site: String,
    pub bucket_start: BucketStart,
    pub max_bps: u64,
    pub cap_bps: u64,
}

/// Who an API token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The provider's staff (Customer Success): every account.
    Operator,
    /// A partner: its own account and its sub-accounts.
    Partner,
    /// A customer: its own account.
    Customer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Partner => "partner",
            Role::Customer => "customer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "operator" => Ok(Role::Operator),
            "partner" => Ok(Role::Partner),
            "customer" => Ok(Role::Customer),
            other => Err(format!("{other:?} is not a role: operator, partner or customer")),
        }
    }
}

/// A bearer token of the HTTP API (its secret is never stored, only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: i64,
    pub role: Role,
    /// `None` for operators.
    pub account: Option<String>,
    /// The account's contact person (R21).
    pub contact: bool,
    pub revoked: bool,
}

/// An API token as `token list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenRecord {
    pub id: i64,
    pub role: Role,
    pub account: Option<String>,
    pub contact: bool,
    /// RFC 3339.
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// What a merge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Rows that did not exist.
    pub inserted: u64,
    /// Rows that existed and were merged with max (R10).
    pub merged: u64,
}

/// The collector's storage operations.
pub trait Store: Send + Sync {
    fn add_account(&self, account: &Account) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn account(&self, id: &str) -> impl Future<Output = Result<Option<Account>, StoreError>> + Send;
    /// Every account's id.
    fn account_ids(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Every account, by id.
    fn accounts(&self) -> impl Future<Output = Result<Vec<Account>, StoreError>> + Send;
    /// Replaces the name and the EoP contact of account `account.id` (its partner stays); false
    /// when there is no such account.
    fn update_account(&self, account: &Account) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn add_site(&self, site: &Site) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn site(&self, id: &str) -> impl Future<Output = Result<Option<Site>, StoreError>> + Send;
    /// Applies `change` only if the account still satisfies R17 on `day` afterwards, in one
    /// transaction: returns the violations (and nothing is written) or none (applied). `add_site`
    /// and `add_license` do not check; every operator and API change goes through here.
    fn apply_checked(
        &self,
        change: &CapChange,
        day: NaiveDate,
    ) -> impl Future<Output = Result<Vec<CapViolation>, StoreError>> + Send;
    /// Returns the new license's id.
    fn add_license(&self, license: &NewLicense) -> impl Future<Output = Result<i64, StoreError>> + Send;
    fn sites_of_account(&self, account: &str) -> impl Future<Output = Result<Vec<Site>, StoreError>> + Send;
    fn licenses_of_account(&self, account: &str) -> impl Future<Output = Result<Vec<License>, StoreError>> + Send;
    /// Merges buckets of any sites in one transaction (R10): all or nothing. The days they fall
    /// on are marked dirty, and buckets above their site's cap × 1.05 recorded as enforcement
    /// violations (R17), in the same transaction.
    fn merge_buckets(&self, rows: &[(String, Bucket)]) -> impl Future<Output = Result<MergeStats, StoreError>> + Send;
    /// The policies changed after `version`, oldest change first.
    fn policies_since(&self, version: u64) -> impl Future<Output = Result<Vec<SitePolicy>, StoreError>> + Send;
    fn policy(&self, site: &str) -> impl Future<Output = Result<Option<SitePolicy>, StoreError>> + Send;
    /// Keeps the agent's latest report, replacing the one before.
    fn record_policy_report(
        &self,
        site: &str,
        report: &PolicyReport,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn policy_report(&self, site: &str) -> impl Future<Output = Result<Option<PolicyReport>, StoreError>> + Send;
    /// Violations of the account's sites (or of one of them) with buckets in `[from, to)`,
    /// by site and bucket.
    fn enforcement_violations(
        &self,
        account: &str,
        site: Option<&str>,
        from: BucketStart,
        to: BucketStart,
    ) -> impl Future<Output = Result<Vec<EnforcementViolation>, StoreError>> + Send;
    /// Stores a validated order with its items, each `submitted` with its first history entry;
    /// an idempotency key already used answers the order it made (same body) or `KeyReused`.
    fn create_order(&self, order: &NewOrder) -> impl Future<Output = Result<Created, StoreError>> + Send;
    fn order(&self, account: &str, id: i64) -> impl Future<Output = Result<Option<Order>, StoreError>> + Send;
    /// Up to `limit` orders of `account` with ids above `after`, oldest first, optionally only
    /// those whose summary is `status`.
    fn orders(
        &self,
        account: &str,
        status: Option<ItemStatus>,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<OrderPage, StoreError>> + Send;
    /// Moves items of an order to a new status, all or none (R22), in one transaction with the
    /// effects of completion (R24): a `site_bandwidth` or `sdp_users` item becomes a license
    /// from its start date, a `site_early_activation` moves the site's activation date.
    fn transition_items(
        &self,
        transition: &Transition,
    ) -> impl Future<Output = Result<Result<Order, TransitionRefused>, StoreError>> + Send;
    /// The account's sites as order validation sees them.
    fn site_facts(&self, account: &str)
    -> impl Future<Output = Result<BTreeMap<String, SiteFacts>, StoreError>> + Send;
    /// Stores a new API token by the hash of its secret; returns its id.
    fn add_api_token(
        &self,
        hash: &str,
        role: Role,
        account: Option<&str>,
        contact: bool,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
    /// The token whose secret hashes to `hash`, revoked or not.
    fn api_token(&self, hash: &str) -> impl Future<Output = Result<Option<ApiToken>, StoreError>> + Send;
    /// Revokes token `id`; false when there is no such token.
    fn revoke_api_token(&self, id: i64) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Every API token (never its secret, which is not stored), by id.
    fn api_tokens(&self) -> impl Future<Output = Result<Vec<TokenRecord>, StoreError>> + Send;
    /// Stores the hash of a new enrollment token for `site`, valid until `expires_at`.
    fn add_enroll_token(
        &self,
        token_hash: &str,
        site: &str,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Marks the token used and returns its site, atomically: a token is accepted once.
    fn redeem_enroll_token(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Result<String, TokenRefusal>, StoreError>> + Send;
    fn add_certificate(
        &self,
        serial: &str,
        site: &str,
        not_after: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn certificate(&self, serial: &str) -> impl Future<Output = Result<Option<CertificateRecord>, StoreError>> + Send;
    /// Revokes every certificate of `site`; returns how many were not revoked yet.
    fn revoke_site(&self, site: &str, now: DateTime<Utc>) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// A site's buckets of one UTC day, in time order.
    fn buckets_of_day(
        &self,
        site: &str,
        day: NaiveDate,
    ) -> impl Future<Output = Result<Vec<Bucket>, StoreError>> + Send;
    /// The key in the middle of the dirty days, to split them in halves; `None` when none is.
    fn dirty_days_midpoint(&self) -> impl Future<Output = Result<Option<DayKey>, StoreError>> + Send;
    /// Up to `limit` dirty days of `range`, by site and day, each with its buckets' starts and
    /// maxima (in no particular order): everything a recomputation reads, in one query.
    fn dirty_days(
        &self,
        range: &KeyRange,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DirtyDayBuckets>, StoreError>> + Send;
    /// Saves computed days and clears each dirty mark whose generation is unchanged, in one
    /// transaction.
    fn save_site_days(&self, days: &[(DirtyDay, DailyP95)]) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The computed days of an account's sites in `[from, until)`.
    fn site_days(
        &self,
        account: &str,
        from: NaiveDate,
        until: NaiveDate,
    ) -> impl Future<Output = Result<Vec<SiteDay>, StoreError>> + Send;
    /// The report saved when `account`'s `month` was finalized, with the time it was.
    fn finalized_report(
        &self,
        account: &str,
        month: &str,
    ) -> impl Future<Output = Result<Option<(DateTime<Utc>, String)>, StoreError>> + Send;
    /// Saves a finalized month's report, its over-usage and the notification's outbox rows (one
    /// per recipient of the account and of its managing partner), in one transaction, unless the
    /// month is saved already; returns the saved report.
    fn finalize_month(
        &self,
        account: &str,
        month: &str,
        at: DateTime<Utc>,
        report: &str,
        overusage: &[NewOverusage],
        notification: Option<&Notification>,
    ) -> impl Future<Output = Result<(DateTime<Utc>, String), StoreError>> + Send;
    /// `account`'s over-usage of `month`, with resolutions.
    fn overusages(&self, account: &str, month: &str)
    -> impl Future<Output = Result<Vec<Overusage>, StoreError>> + Send;
    fn overusage(&self, id: i64) -> impl Future<Output = Result<Option<Overusage>, StoreError>> + Send;
    /// Records a resolution (and the license a True-Forward creates) in one transaction; `false`
    /// when the over-usage was resolved already.
    fn resolve_overusage(
        &self,
        id: i64,
        resolution: &Resolution,
        new_license: Option<&NewLicense>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Buckets of `account`'s sites starting in `[from, until)` that last arrived after `since`.
    fn buckets_received_after(
        &self,
        account: &str,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Stores the events whose id is new, in one transaction; returns how many were new.
    fn add_usage_events(&self, events: &[MeterEvent]) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// `account`'s meters in `month` (`YYYY-MM`).
    fn meter_counts(&self, account: &str, month: &str) -> impl Future<Output = Result<MeterCounts, StoreError>> + Send;
    fn add_recipient(
        &self,
        account: &str,
        channel: Channel,
        address: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Undelivered outbox rows of the `channels` that can send, due at `now`, oldest first.
    fn due_notifications(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        channels: &[Channel],
    ) -> impl Future<Output = Result<Vec<OutboxItem>, StoreError>> + Send;
    fn mark_delivered(&self, id: i64, at: DateTime<Utc>) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn mark_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every outbox row, of one account or all.
    fn notifications(&self, account: Option<&str>) -> impl Future<Output = Result<Vec<OutboxItem>, StoreError>> + Send;
}
