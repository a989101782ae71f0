//! What both backends store alike: the conversions between stored values and the domain's
//! types, and the rows several queries read. Both schemas keep the same columns with the same
//! meanings (times as RFC 3339 UTC text with milliseconds, dates `YYYY-MM-DD`, integers), so a
//! row reads the same from either, and `migrate-store` copies tables as they are.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tally_common::bucket::Bucket;
use tally_common::enforcement::{CapSetting, judging_cap};
use tally_common::sampler::DiscardCounters;
use tally_common::time::BucketStart;
use tally_common::wire::Refusal;

use crate::throttle::Throttle;

use super::{
    Account, AgentDiscards, ApiToken, License, Measured, NewLicense, NewOverusage, OutboxItem, Overusage, Person,
    QuarantinedBucket, RefusalCount, Resolution, ResolutionKind, Site, SiteGroupSpan, SiteIntake, SitePolicy,
    StoreError,
};

/// Reads both backends run with the same text (`$N` parameters, which SQLite reads too).
pub(super) mod counts {
    /// Site-days dirty, claimed or not.
    pub(in crate::store) const DIRTY_DAYS: &str = "SELECT count(*) FROM dirty_days";
    /// An account's (`$1`) dirty days in `[$2, $3)`, claimed or not: (site, day, generation).
    pub(in crate::store) const ACCOUNT_DIRTY_DAYS: &str =
        "SELECT d.site_id, d.day, d.generation FROM dirty_days d JOIN sites s ON s.id = d.site_id
         WHERE s.account_id = $1 AND d.day >= $2 AND d.day < $3 ORDER BY d.site_id, d.day";
    /// The months (`YYYY-MM`) of an account (`$1`) finalized.
    pub(in crate::store) const FINALIZED_MONTHS: &str = "SELECT month FROM finalized_months WHERE account_id = $1";
    /// Fills an over-usage stored before R32 (`$1` id): its required purchase (`$2`) and what to
    /// review (`$3`); nothing if another collector did.
    pub(in crate::store) const UPGRADE_OVERUSAGE: &str =
        "UPDATE overusages SET required_purchase = $2, review = $3 WHERE id = $1 AND required_purchase IS NULL";
    /// Its resolution's quantity (`$2`) in the license's unit.
    pub(in crate::store) const UPGRADE_RESOLUTION: &str =
        "UPDATE resolutions SET quantity = $2 WHERE overusage_id = $1";
    /// An account's (`$1`) events of a month (`$2`) first received after `$3`, by meter.
    pub(in crate::store) const EVENTS_RECEIVED_AFTER: &str = "SELECT meter, count(*) FROM usage_events
         WHERE account_id = $1 AND month = $2 AND received_at > $3 GROUP BY meter ORDER BY meter";
    /// A site's (`$1`) history from a day (`$2`) on is replaced (R31).
    pub(in crate::store) const SITE_GROUPS_FROM: &str =
        "DELETE FROM site_groups WHERE site_id = $1 AND effective_from >= $2";
    /// A site's (`$1`) country (`$3`) and group (`$4`) from a day (`$2`).
    pub(in crate::store) const SITE_GROUP: &str =
        "INSERT INTO site_groups (site_id, effective_from, country, region_group) VALUES ($1, $2, $3, $4)";
    /// An account's (`$1`) sites' history, by site and day.
    pub(in crate::store) const SITE_GROUPS_OF_ACCOUNT: &str =
        "SELECT g.site_id, g.effective_from, g.country, g.region_group FROM site_groups g JOIN sites s ON s.id = g.site_id
         WHERE s.account_id = $1 ORDER BY g.site_id, g.effective_from";
    /// The first day of a site's first country.
    pub(in crate::store) const SINCE_EVER: &str = "0001-01-01";
    /// An account's (`$1`) LAN sightings of a month (`$2`) first received after `$3`.
    pub(in crate::store) const LAN_SIGHTINGS_RECEIVED_AFTER: &str = "SELECT count(*) FROM lan_sightings l
         JOIN sites s ON s.id = l.site_id WHERE s.account_id = $1 AND l.month = $2 AND l.received_at > $3";
    /// The last migration applied.
    pub(in crate::store) const SCHEMA_VERSION: &str =
        "SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success";
    /// Notifications not delivered yet.
    pub(in crate::store) const PENDING_NOTIFICATIONS: &str = "SELECT count(*) FROM outbox WHERE delivered_at IS NULL";
}

/// Rows of [`counts::SITE_GROUPS_OF_ACCOUNT`] (site, day, country, group) as spans (R31).
pub(super) fn site_group_spans(rows: Vec<(String, String, String, String)>) -> Result<Vec<SiteGroupSpan>, StoreError> {
    rows.into_iter()
        .map(|(site, from, country, group)| {
            Ok(SiteGroupSpan {
                from: parse(&from, "site group day")?,
                country: parse(&country, "site group country")?,
                region_group: parse(&group, "site group")?,
                site,
            })
        })
        .collect()
}

/// Whether a store opened read-only (R35) has every migration of `migrator` applied (`applied`,
/// the last): a reader cannot migrate it.
pub(super) fn schema_current(applied: i64, migrator: &sqlx::migrate::Migrator) -> Result<(), StoreError> {
    let wanted = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match applied >= wanted {
        true => Ok(()),
        false => Err(StoreError::Database(format!(
            "the store's schema is at version {applied} and this collector needs {wanted}: a command that only \
             reads does not migrate it; run `tally-collector serve` (or any command that writes) once"
        ))),
    }
}

pub(super) fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Database(format!("{what} {value} does not fit the store")))
}

pub(super) fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is negative")))
}

pub(super) fn bucket_start(unix: i64) -> Result<BucketStart, StoreError> {
    BucketStart::from_unix(unix).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn parse<T: FromStr>(value: &str, what: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| StoreError::Corrupt(format!("{what} {value:?}: {e}")))
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(e.to_string()))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn now() -> String {
    stamp(crate::clock::now())
}

/// Stored times: RFC 3339 UTC with milliseconds, one fixed format so text order is time order.
pub(super) fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(sqlx::FromRow)]
pub(super) struct AccountRow {
    id: String,
    name: String,
    partner_id: Option<String>,
    eop_contact_name: Option<String>,
    eop_contact_email: Option<String>,
}

impl From<AccountRow> for Account {
    fn from(r: AccountRow) -> Account {
        Account {
            id: r.id,
            name: r.name,
            partner: r.partner_id,
            eop_contact_name: r.eop_contact_name,
            eop_contact_email: r.eop_contact_email,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SiteRow {
    id: String,
    account_id: String,
    name: String,
    country: String,
    region_group: String,
    site_type: String,
    cap_bps: Option<i64>,
}

impl SiteRow {
    pub(super) fn into_site(self) -> Result<Site, StoreError> {
        Ok(Site {
            country: parse(&self.country, "country")?,
            region_group: parse(&self.region_group, "region group")?,
            site_type: parse(&self.site_type, "site type")?,
            cap_bps: self.cap_bps.map(|c| to_u64(c, "cap")).transpose()?,
            id: self.id,
            account: self.account_id,
            name: self.name,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct LicenseRow {
    id: i64,
    account_id: String,
    kind: String,
    region: Option<String>,
    quantity: i64,
    block_size: Option<i64>,
    per_unit: Option<i64>,
    effective_from: String,
    effective_to: String,
}

impl LicenseRow {
    pub(super) fn into_license(self) -> Result<License, StoreError> {
        let terms = NewLicense {
            kind: parse(&self.kind, "license kind")?,
            quantity: to_u64(self.quantity, "quantity")?,
            block_size: self.block_size.map(|b| to_u64(b, "block size")).transpose()?,
            per_unit: self.per_unit.map(|p| to_u64(p, "events per unit")).transpose()?,
            effective_from: parse(&self.effective_from, "effective_from")?,
            effective_to: parse(&self.effective_to, "effective_to")?,
            account: self.account_id,
            region: self.region,
        };
        Ok(License { id: self.id, terms })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct TokenRow {
    id: i64,
    role: String,
    account_id: Option<String>,
    contact: bool,
    created_at: String,
    revoked_at: Option<String>,
    person_name: Option<String>,
    person_email: Option<String>,
}

/// API token rows filtered and ordered by `$rest` (a literal).
macro_rules! select_token {
    ($rest:literal) => {
        concat!(
            "SELECT id, role, account_id, contact, created_at, revoked_at, person_name, person_email FROM api_tokens ",
            $rest
        )
    };
}
pub(super) use select_token;

impl TokenRow {
    pub(super) fn into_token(self) -> Result<ApiToken, StoreError> {
        Ok(ApiToken {
            id: self.id,
            role: parse(&self.role, "token role")?,
            account: self.account_id,
            contact: self.contact,
            created_at: self.created_at,
            revoked_at: self.revoked_at,
            person: self.person_name.zip(self.person_email).map(|(name, email)| Person { name, email }),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct OverusageRow {
    id: i64,
    account_id: String,
    month: String,
    license: String,
    region: String,
    measured: i64,
    licensed: i64,
    excess: i64,
    flags: String,
    required_purchase: Option<i64>,
    review: Option<String>,
    resolution: Option<String>,
    resolved_quantity: Option<i64>,
    license_id: Option<i64>,
    resolved_at: Option<String>,
}

impl OverusageRow {
    pub(super) fn into_overusage(self) -> Result<Overusage, StoreError> {
        let resolution = match (self.resolution, self.resolved_quantity, self.resolved_at) {
            (Some(kind), Some(quantity), Some(at)) => Some(Resolution {
                kind: match kind.as_str() {
                    "true_up" => ResolutionKind::TrueUp,
                    "true_forward" => ResolutionKind::TrueForward,
                    other => return Err(StoreError::Corrupt(format!("resolution kind {other:?}"))),
                },
                quantity: to_u64(quantity, "quantity")?,
                license_id: self.license_id,
                at: parse(&at, "resolved_at")?,
            }),
            _ => None,
        };
        let flags =
            self.flags.split(',').filter(|f| !f.is_empty()).map(|f| parse(f, "flag")).collect::<Result<_, _>>()?;
        Ok(Overusage {
            id: self.id,
            account: self.account_id,
            month: self.month,
            found: NewOverusage {
                license: parse(&self.license, "license")?,
                region: Some(self.region).filter(|r| !r.is_empty()),
                measured: to_u64(self.measured, "measured")?,
                licensed: to_u64(self.licensed, "licensed")?,
                excess: to_u64(self.excess, "excess")?,
                // A row from before R32 until `upgrade_units` fills it at start.
                required_purchase: self
                    .required_purchase
                    .map(|n| to_u64(n, "required purchase"))
                    .transpose()?
                    .unwrap_or(0),
                flags,
            },
            review: self.review,
            resolution,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct OutboxRow {
    id: i64,
    account_id: String,
    topic: String,
    channel: String,
    recipient: String,
    subject: String,
    body: String,
    attempts: i64,
    delivered_at: Option<String>,
    last_error: Option<String>,
}

impl OutboxRow {
    pub(super) fn into_item(self) -> Result<OutboxItem, StoreError> {
        Ok(OutboxItem {
            id: self.id,
            channel: parse(&self.channel, "channel")?,
            attempts: u32::try_from(self.attempts)
                .map_err(|_| StoreError::Corrupt(format!("attempts {}", self.attempts)))?,
            delivered_at: self.delivered_at.map(|t| parse(&t, "delivered_at")).transpose()?,
            account: self.account_id,
            topic: self.topic,
            recipient: self.recipient,
            subject: self.subject,
            body: self.body,
            last_error: self.last_error,
        })
    }
}

/// Over-usage rows with their resolution, filtered by `$filter` (a literal: the SQL stays static).
macro_rules! select_overusage {
    ($filter:literal) => {
        concat!(
            "SELECT o.id, o.account_id, o.month, o.license, o.region, o.measured, o.licensed, o.excess, o.flags,
                 o.required_purchase, o.review, r.kind AS resolution, r.quantity AS resolved_quantity, r.license_id, r.created_at AS resolved_at
             FROM overusages o LEFT JOIN resolutions r ON r.overusage_id = o.id ",
            $filter
        )
    };
}
pub(super) use select_overusage;

/// The columns of an [`OutboxRow`], for a query's SELECT or RETURNING.
macro_rules! outbox_columns {
    () => {
        "id, account_id, topic, channel, recipient, subject, body, attempts, delivered_at, last_error"
    };
}
pub(super) use outbox_columns;

/// Outbox rows filtered by `$filter` (a literal).
macro_rules! select_outbox {
    ($filter:literal) => {
        concat!("SELECT ", outbox_columns!(), " FROM outbox ", $filter)
    };
}
pub(super) use select_outbox;

/// The last write failure, and how often failures are logged: a backend records each write's
/// outcome here and answers [`StoreHealth`](super::StoreHealth) from it.
#[derive(Debug)]
pub(in crate::store) struct Health {
    failure: Mutex<Option<String>>,
    logged: Throttle,
}

impl Default for Health {
    fn default() -> Health {
        Health { failure: Mutex::new(None), logged: Throttle::new(Duration::from_secs(60)) }
    }
}

impl Health {
    pub(in crate::store) fn failed(&self, error: &StoreError) {
        let at = tally_common::time::rfc3339(crate::clock::now());
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{error} (since {at})"));
        if let Some(failures) = self.logged.hit() {
            tracing::error!(%error, failures, "store writes are failing (logged at most once a minute)");
        }
    }

    pub(in crate::store) fn committed(&self) {
        if self.failure.lock().unwrap_or_else(|p| p.into_inner()).take().is_some() {
            self.logged.reset();
            tracing::info!("store writes commit again");
        }
    }

    /// Why the last write did not commit, until one commits.
    pub(in crate::store) fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A refusal reason as stored.
pub(super) fn refusal(name: &str) -> Result<Refusal, StoreError> {
    Refusal::from_name(name).ok_or_else(|| StoreError::Corrupt(format!("refusal reason {name:?}")))
}

/// A site's refusals `(reason, count, last_at)`, its agent's discard totals
/// `(counter_reset, above_cap, elapsed_too_short, elapsed_too_long, reported_at)` and its
/// quarantine `(start, max_bps, samples, reason, quarantined_at)`, as stored.
pub(super) type IntakeRows =
    (Vec<(String, i64, String)>, Option<(i64, i64, i64, i64, String)>, Vec<(i64, i64, i64, String, String)>);

/// A site's intake from its rows.
pub(super) fn site_intake((refusals, discards, quarantined): IntakeRows) -> Result<SiteIntake, StoreError> {
    Ok(SiteIntake {
        refusals: refusals
            .into_iter()
            .map(|(reason, count, last_at)| {
                Ok(RefusalCount {
                    reason: refusal(&reason)?,
                    count: to_u64(count, "refusal count")?,
                    last_at: parse(&last_at, "refusal time")?,
                })
            })
            .collect::<Result<_, StoreError>>()?,
        discards: discards
            .map(|(counter_reset, above_cap, elapsed_too_short, elapsed_too_long, at)| {
                Ok::<_, StoreError>(AgentDiscards {
                    counters: DiscardCounters {
                        counter_reset: to_u64(counter_reset, "counter_reset")?,
                        above_cap: to_u64(above_cap, "above_cap")?,
                        elapsed_too_short: to_u64(elapsed_too_short, "elapsed_too_short")?,
                        elapsed_too_long: to_u64(elapsed_too_long, "elapsed_too_long")?,
                    },
                    reported_at: parse(&at, "discards time")?,
                })
            })
            .transpose()?,
        quarantined: quarantined
            .into_iter()
            .map(|(start, max_bps, samples, reason, at)| {
                Ok(QuarantinedBucket {
                    bucket: Bucket {
                        start: bucket_start(start)?,
                        max_bps: to_u64(max_bps, "max_bps")?,
                        samples: u8::try_from(samples)
                            .map_err(|_| StoreError::Corrupt(format!("samples {samples}")))?,
                    },
                    reason: refusal(&reason)?,
                    at: parse(&at, "quarantine time")?,
                })
            })
            .collect::<Result<_, StoreError>>()?,
    })
}

/// What judges a site's buckets (R17, R26): its cap history and the versions its agent reported
/// applied, both oldest first.
#[derive(Default)]
pub(super) struct CapRecord {
    pub(super) history: Vec<CapSetting>,
    pub(super) applied: Vec<(DateTime<Utc>, u64)>,
}

impl CapRecord {
    /// The cap `measured` is judged against; `None`: not judged.
    pub(super) fn judging(&self, measured: &Measured) -> Option<u64> {
        let start = measured.bucket.start;
        judging_cap(&self.history, &self.applied, measured.policy_version, start.time(), start.end())
    }
}

/// A site's policy `(site, version, cap_bps)` as stored.
pub(super) fn policy_from_row((site, version, cap): (String, i64, Option<i64>)) -> Result<SitePolicy, StoreError> {
    Ok(SitePolicy {
        site,
        version: to_u64(version, "policy version")?,
        cap_bps: cap.map(|c| to_u64(c, "cap")).transpose()?,
    })
}

/// `error`, counted in `/metrics` when it is a failure of the store itself.
pub(super) fn counted(error: StoreError) -> StoreError {
    if let Some(kind) = error.kind() {
        crate::metrics::get().store_error(kind);
    }
    error
}

/// A batch of rows sent with one statement, column by column; each dialect says how a batch
/// travels and reads back as a table (`dialect::source`, `dialect::add_rows`).
#[derive(Default)]
pub(super) struct Rows {
    pub(super) columns: Vec<(&'static str, Column)>,
}

pub(super) enum Column {
    Texts(Vec<String>),
    Ints(Vec<i64>),
}

impl Rows {
    /// A text column.
    pub(super) fn texts<T: ToString>(mut self, name: &'static str, values: impl IntoIterator<Item = T>) -> Self {
        self.columns.push((name, Column::Texts(values.into_iter().map(|v| v.to_string()).collect())));
        self
    }

    /// An integer column.
    pub(super) fn ints(mut self, name: &'static str, values: impl IntoIterator<Item = i64>) -> Self {
        self.columns.push((name, Column::Ints(values.into_iter().collect())));
        self
    }

    /// How many rows: the first column's length (every column has as many).
    pub(super) fn len(&self) -> usize {
        self.columns.first().map_or(0, |(_, column)| match column {
            Column::Texts(values) => values.len(),
            Column::Ints(values) => values.len(),
        })
    }
}

/// A value sqlx could not add to a statement's arguments.
pub(super) fn unbindable(e: sqlx::error::BoxDynError) -> StoreError {
    StoreError::Database(format!("a value cannot be bound: {e}"))
}

/// An insert's error: a unique-key violation is `Duplicate`, a missing reference `NotFound`,
/// anything else what the backend's `other` makes of it.
pub(super) fn refused_insert(
    what: &'static str,
    id: &str,
    other: fn(sqlx::Error) -> StoreError,
) -> impl FnOnce(sqlx::Error) -> StoreError {
    let id = id.to_owned();
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate { what, id },
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
            StoreError::NotFound { what: "referenced account", id: format!("(for {what} {id})") }
        }
        _ => other(e),
    }
}
