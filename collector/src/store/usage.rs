//! Usage and over-usage: metered events (R12, R13), finalized months (R9), over-usage (R14, R16).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use chrono::{DateTime, Utc};
use tally_common::kinds::{LicenseKind, ZtnaRegion};

use super::{DeviceCount, NewLicense, Notification, StoreError};

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
    /// Devices: where the device was seen (`inline`, `lan_discovery`, `integration`).
    pub source: Option<String>,
}

/// What storing a batch of events did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventsAdded {
    /// Events whose id was new.
    pub new: u64,
    /// New events of a month already finalized: stored and counted, never billed (R33).
    pub late: u64,
}

/// An account's meters over one calendar month (UTC).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterCounts {
    /// Distinct ZTNA users by the region of their latest counted session, by region name.
    pub ztna_by_region: Vec<(ZtnaRegion, u64)>,
    pub ai_security_users: u64,
    pub dem_users: u64,
    /// Distinct devices across every source, sockets excluded (R13, R29).
    pub devices: DeviceCount,
    /// The highest event count of any UTC hour.
    pub data_lake_peak_hour: u64,
}

/// A counted event of a calendar meter, as a month's meters are computed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthEvent {
    pub meter: LicenseKind,
    pub subject: String,
    pub region: Option<ZtnaRegion>,
    pub quantity: u64,
    /// As stored: RFC 3339 UTC text, which sorts as time does.
    pub occurred_at: String,
    pub id: String,
}

/// An account's counted events of one month (ZTNA, AI Security, DEM, Data Lake).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonthEvents(pub Vec<MonthEvent>);

impl MonthEvents {
    /// The meters (R12): a user once per meter, a ZTNA user in the region of their latest
    /// session (the later event id breaks a tie of times); Data Lake's highest UTC hour, the
    /// sum of that hour's quantities. The devices are counted apart ([`MonthDevices`]).
    ///
    /// [`MonthDevices`]: super::MonthDevices
    ///
    /// An hour whose quantities sum past `u64` is an error: no figure is better than a wrong one.
    pub fn counts(&self, devices: DeviceCount) -> Result<MeterCounts, StoreError> {
        let mut latest: BTreeMap<&str, &MonthEvent> = BTreeMap::new();
        let mut users: BTreeMap<LicenseKind, BTreeSet<&str>> = BTreeMap::new();
        let mut hours: BTreeMap<&str, u64> = BTreeMap::new();
        for event in &self.0 {
            match event.meter {
                LicenseKind::ZtnaUsers => {
                    let kept = latest.entry(&event.subject).or_insert(event);
                    if (&event.occurred_at, &event.id) > (&kept.occurred_at, &kept.id) {
                        *kept = event;
                    }
                }
                LicenseKind::DataLake => {
                    let hour = hours.entry(&event.subject).or_default();
                    *hour = hour.checked_add(event.quantity).ok_or_else(|| {
                        StoreError::Database(format!(
                            "Data Lake's hour {} sums past 2^64 events: out of range",
                            event.subject
                        ))
                    })?;
                }
                meter => {
                    users.entry(meter).or_default().insert(&event.subject);
                }
            }
        }
        // By the region's name, as reports list them.
        let mut ztna_by_region: BTreeMap<&str, (ZtnaRegion, u64)> = BTreeMap::new();
        for region in latest.values().filter_map(|event| event.region) {
            ztna_by_region.entry(region.as_str()).or_insert((region, 0)).1 += 1;
        }
        let distinct = |meter| users.get(&meter).map_or(0, |u| u.len() as u64);
        Ok(MeterCounts {
            ztna_by_region: ztna_by_region.into_values().collect(),
            ai_security_users: distinct(LicenseKind::AiSecurityUsers),
            dem_users: distinct(LicenseKind::DemUsers),
            devices,
            data_lake_peak_hour: hours.into_values().max().unwrap_or(0),
        })
    }
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
    /// The smallest purchase covering the excess, in the license's unit (R32).
    pub required_purchase: u64,
    /// Licenses that require the same increase (R14).
    pub flags: Vec<LicenseKind>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overusage {
    pub id: i64,
    pub account: String,
    pub month: String,
    pub found: NewOverusage,
    /// What the operator should review (set when a row from before R32 was upgraded).
    pub review: Option<String>,
    pub resolution: Option<Resolution>,
}

/// What upgrading an over-usage stored before R32 writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitsUpgrade {
    pub required_purchase: u64,
    /// Its resolution's quantity in the license's unit, when it changes.
    pub resolved_quantity: Option<u64>,
    pub review: Option<String>,
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

/// Metered events (R12, R13), finalized months (R9) and their over-usage with its resolutions (R14, R16).
pub trait UsageStore: Send + Sync {
    /// Stores the events whose id is new, in one transaction; says how many were new, and how
    /// many of those fell in a month already finalized (R33).
    fn add_usage_events(&self, events: &[MeterEvent]) -> impl Future<Output = Result<EventsAdded, StoreError>> + Send;
    /// `account`'s events of `month` first received after `since` (its finalization: late,
    /// R33), by meter.
    fn events_received_after(
        &self,
        account: &str,
        month: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(LicenseKind, u64)>, StoreError>> + Send;
    /// `account`'s meters in `month` (`YYYY-MM`).
    fn meter_counts(&self, account: &str, month: &str) -> impl Future<Output = Result<MeterCounts, StoreError>> + Send;
    /// When `account`'s `month` (`YYYY-MM`) was finalized, if it was (without its report).
    fn finalized_at(
        &self,
        account: &str,
        month: &str,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, StoreError>> + Send;
    /// The report saved when `account`'s `month` was finalized, with the time it was.
    fn finalized_report(
        &self,
        account: &str,
        month: &str,
    ) -> impl Future<Output = Result<Option<(DateTime<Utc>, String)>, StoreError>> + Send;
    /// Saves a finalized month's report, its over-usage and the notification's outbox rows (one
    /// per recipient of the account and of its managing partner), in one transaction, unless the
    /// month is saved already; returns whether this call saved it.
    fn finalize_month(
        &self,
        account: &str,
        month: &str,
        at: DateTime<Utc>,
        report: &str,
        overusage: &[NewOverusage],
        notification: Option<&Notification>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// The months (`YYYY-MM`) of `account` finalized, in no particular order.
    fn finalized_months(&self, account: &str) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// `account`'s over-usage of `month`, with resolutions.
    fn overusages(&self, account: &str, month: &str)
    -> impl Future<Output = Result<Vec<Overusage>, StoreError>> + Send;
    fn overusage(&self, id: i64) -> impl Future<Output = Result<Option<Overusage>, StoreError>> + Send;
    /// Over-usage stored before R32, whose required purchase is not filled yet.
    fn overusages_before_units(&self) -> impl Future<Output = Result<Vec<Overusage>, StoreError>> + Send;
    /// Fills one of them, with its resolution's quantity, in one transaction; `false` if another
    /// collector did first.
    fn upgrade_overusage_units(
        &self,
        id: i64,
        upgrade: &UnitsUpgrade,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Every over-usage with something to review, oldest first.
    fn overusages_to_review(&self) -> impl Future<Output = Result<Vec<Overusage>, StoreError>> + Send;
    /// Records a resolution (and the license a True-Forward creates) in one transaction; `false`
    /// when the over-usage was resolved already.
    fn resolve_overusage(
        &self,
        id: i64,
        resolution: &Resolution,
        new_license: Option<&NewLicense>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(meter: LicenseKind, subject: &str, at: &str, id: &str) -> MonthEvent {
        MonthEvent { meter, subject: subject.into(), region: None, quantity: 1, occurred_at: at.into(), id: id.into() }
    }

    #[test]
    fn meters_count_users_once_by_latest_session_and_the_busiest_hour() {
        let ztna = |subject, region, at, id| MonthEvent {
            region: Some(region),
            ..event(LicenseKind::ZtnaUsers, subject, at, id)
        };
        let hour = |subject, quantity| MonthEvent { quantity, ..event(LicenseKind::DataLake, subject, "", "") };
        let events = MonthEvents(vec![
            ztna("ann", ZtnaRegion::China, "2026-10-03T00:00:00.000Z", "e2"),
            ztna("ann", ZtnaRegion::General, "2026-10-01T00:00:00.000Z", "e1"),
            // Two sessions at one time: the later id decides.
            ztna("bob", ZtnaRegion::Vietnam, "2026-10-02T00:00:00.000Z", "e9"),
            ztna("bob", ZtnaRegion::General, "2026-10-02T00:00:00.000Z", "e10"),
            event(LicenseKind::DemUsers, "cid", "", "e3"),
            event(LicenseKind::DemUsers, "cid", "", "e4"),
            event(LicenseKind::AiSecurityUsers, "dan", "", "e5"),
            hour("2026-10-07T01", 40),
            hour("2026-10-07T02", 70),
            hour("2026-10-07T01", 45),
        ]);
        let counts = events.counts(DeviceCount::default()).unwrap();
        assert_eq!(counts.ztna_by_region, [(ZtnaRegion::China, 1), (ZtnaRegion::Vietnam, 1)]);
        assert_eq!((counts.dem_users, counts.ai_security_users, counts.data_lake_peak_hour), (1, 1, 85));
        assert_eq!(MonthEvents::default().counts(DeviceCount::default()).unwrap(), MeterCounts::default());

        let overflowing = MonthEvents(vec![hour("2026-10-07T01", u64::MAX), hour("2026-10-07T01", 1)]);
        let error = overflowing.counts(DeviceCount::default()).unwrap_err().to_string();
        assert!(error.contains("2026-10-07T01") && error.contains("out of range"), "{error}");
    }
}
