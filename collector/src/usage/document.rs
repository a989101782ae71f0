//! The usage report as a document (Contract): the JSON of `tally-collector report` and
//! `GET /v1/accounts/{account}/usage`, saved as it is when a month is finalized (R9). Types only:
//! [`super::report`] builds it, [`super::overusage`] and [`super::notify`] read it.

use std::collections::{BTreeMap, BTreeSet};

use crate::accounts::terms::TermReport;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tally_common::kinds::{LicenseKind, ZtnaRegion};
use tally_common::meters::MeterMonth;
use tally_common::region::RegionGroup;
use tally_common::time::{Month, MonthWindowSetting};

use crate::enforcement::{CapHistoryView, ViolationReport};
use crate::store::Overusage;

/// Where a month stands (R9, R34).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MonthStatus {
    /// The calendar month still runs.
    Open,
    /// The calendar month ended; late buckets may still change the month until the engine
    /// finalizes it ([`closes_at`]).
    Provisional,
    /// The engine saved it: over-usage is evaluated, and it never changes again.
    Finalized,
}

impl MonthStatus {
    /// Where `month` stands at `now` while the engine has not saved it (R34): open until its
    /// calendar month ends, provisional after. Only a saved month is `Finalized`.
    pub fn unsaved(month: Month, now: DateTime<Utc>) -> MonthStatus {
        match now < month.window(MonthWindowSetting::Calendar).end_time() {
            true => MonthStatus::Open,
            false => MonthStatus::Provisional,
        }
    }
}

/// When the engine finalizes `month` (R34): once its P95 window and its calendar month have both
/// ended, plus `grace`.
pub fn closes_at(month: Month, setting: MonthWindowSetting, grace: TimeDelta) -> DateTime<Utc> {
    let calendar = month.window(MonthWindowSetting::Calendar).end_time();
    month.window(setting).end_time().max(calendar) + grace
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageReport {
    pub account: String,
    pub month: Month,
    pub status: MonthStatus,
    pub window: WindowJson,
    pub bandwidth_pool: Vec<PoolReport>,
    pub sites: Vec<SiteReport>,
    pub meters: Vec<MeterReport>,
    pub generated_at: String,
    /// When the month was finalized (R9); its figures have not changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized_at: Option<String>,
    /// Buckets of the window first received after finalization: stored, counted, not billed (R9).
    #[serde(default)]
    pub late_buckets: u64,
    /// Events of a finalized month first received after it was finalized, by meter: stored and
    /// counted, never billed (R33), with the figure the month would have had with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late_events: Vec<LateEvents>,
    /// Site-days whose buckets changed since the engine last summarized them: this report
    /// computed them from the buckets, in memory, without writing (R35).
    #[serde(default)]
    pub days_computed_in_memory: u64,
    /// A finalized month's over-usage (R14), with its resolution once there is one (R16).
    #[serde(default)]
    pub overusage: Vec<OverusageReport>,
    /// The current month: the days from this one (today, provisional) to the month's last day
    /// are still open; the later ones have no figures yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_from: Option<NaiveDate>,
    /// The contract term in force (R27) today in the current month, on the last day in any
    /// other, with the licenses that end with it; absent between terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_term: Option<TermReport>,
    /// When `sites` holds one page of the account's sites (`sites_limit`, `sites_after`): which.
    /// The pools and meters are always the whole account's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites_page: Option<SitesPage>,
}

/// One page of a report's sites, by site id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SitesPage {
    /// The account's sites in the report.
    pub total: u64,
    /// The sites before this page.
    pub before: u64,
    /// The last site of this page, to ask for the next one with (`sites_after`); absent on the
    /// last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

impl UsageReport {
    /// Keeps `limit` sites after site `after` (an id; the first ones without it), and says which
    /// in [`sites_page`](Self::sites_page). A site in two region groups this month is one site
    /// with both its entries.
    pub fn page_sites(&mut self, after: Option<&str>, limit: usize) {
        let ids: Vec<&str> = self.sites.iter().map(|s| s.site.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
        let before = after.map_or(0, |after| ids.partition_point(|id| *id <= after));
        let kept: BTreeSet<String> = ids.iter().skip(before).take(limit).map(|id| (*id).to_owned()).collect();
        let next_after = (before + kept.len() < ids.len()).then(|| kept.last().cloned()).flatten();
        let total = ids.len() as u64;
        self.sites.retain(|s| kept.contains(&s.site));
        self.sites_page = Some(SitesPage { total, before: before as u64, next_after });
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WindowJson {
    pub start: String,
    pub end: String,
    /// The `month_window` setting it follows (R7).
    pub setting: MonthWindowSetting,
    /// The window in words, and how to change it.
    #[serde(default)]
    pub description: String,
}

/// What a reader of a report is told about the `month_window` setting (R7).
pub fn describe_window(setting: MonthWindowSetting) -> &'static str {
    match setting {
        MonthWindowSetting::Article => {
            "the article's window excludes the last day of the month; set month_window = \"calendar\" to include it"
        }
        MonthWindowSetting::Calendar => "the whole calendar month, its last day included (month_window = \"calendar\")",
    }
}

fn in_window_by_default() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolReport {
    pub region_group: RegionGroup,
    pub monthly_p95_bps: u64,
    pub peak_day: Option<NaiveDate>,
    pub licensed_bps: u64,
    pub excess_bps: u64,
    /// The smallest pool purchase covering the excess, in whole Mbps (R32).
    #[serde(default)]
    pub required_purchase_mbps: u64,
    pub days: Vec<DayAggregate>,
    /// While the month is open: where it is heading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DayAggregate {
    pub date: NaiveDate,
    pub aggregate_bps: u64,
    /// Whether the day counts towards the monthly P95 (R7); every day of the calendar month is
    /// listed.
    #[serde(default = "in_window_by_default")]
    pub in_window: bool,
}

/// The open month's forecast for one region group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Forecast {
    /// The monthly P95 over the complete days so far.
    pub monthly_p95_so_far_bps: u64,
    /// The larger of that and the linear trend of the complete days' aggregates, extended to
    /// the window's last day: the monthly P95 is a maximum, so a rising trend raises it.
    pub projected_monthly_p95_bps: u64,
    /// Complete days the projection rests on.
    pub days_measured: usize,
    pub exceeds_license: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteReport {
    pub site: String,
    pub region_group: RegionGroup,
    pub days: Vec<SiteDayReport>,
    /// The site's cap (R17) when the report was made; `None`: unenforced.
    #[serde(default)]
    pub cap_bps: Option<u64>,
    /// The caps in force during the window, each bucket judged by the one it was measured under
    /// (R26).
    #[serde(default)]
    pub cap_history: Vec<CapHistoryView>,
    /// The window's buckets above the cap × 1.05 (R17).
    #[serde(default)]
    pub violations: Vec<ViolationReport>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteDayReport {
    pub date: NaiveDate,
    pub p95_bps: u64,
    pub buckets_present: u16,
    pub buckets_expected: u16,
    /// Whether the day counts towards the monthly P95 (R7).
    #[serde(default = "in_window_by_default")]
    pub in_window: bool,
    /// The current UTC day: its P95 will change (R5).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub provisional: bool,
}

/// A meter other than the bandwidth pool over the calendar month (R12, R13).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MeterReport {
    #[serde(flatten)]
    pub meter: MeterMonth,
    /// ZTNA users: each region's measured users (by their latest session) and licensed users.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_region: Vec<RegionUsage>,
    /// Devices: distinct devices by where they were seen (`inline`, `lan_discovery`,
    /// `integration`); a device seen by two sources is in both and counted once (R29).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_source: BTreeMap<String, u64>,
    /// Devices: of those measured, with a locally administered (randomized, private) address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locally_administered: Option<u64>,
}

impl MeterReport {
    /// A meter without a breakdown.
    pub fn plain(meter: MeterMonth) -> MeterReport {
        MeterReport { meter, by_region: Vec::new(), by_source: BTreeMap::new(), locally_administered: None }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegionUsage {
    pub region: ZtnaRegion,
    pub measured: u64,
    pub licensed: u64,
}

/// One meter's events that arrived after its month was finalized (R33).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LateEvents {
    pub license: LicenseKind,
    /// How many events arrived late.
    pub events: u64,
    /// The meter's figure as finalized and billed.
    pub measured: u64,
    /// The figure the month would have had with them (the peak hour with the late counts; the
    /// distinct users or devices with the late ones).
    pub measured_with_late: u64,
}

/// An over-usage as the report and the API show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OverusageReport {
    pub id: i64,
    pub license: LicenseKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_group: Option<String>,
    /// Measured, licensed and excess in the meter's unit (bit/s for the pool, events per hour
    /// for Data Lake).
    pub measured: u64,
    pub licensed: u64,
    pub excess: u64,
    /// The smallest purchase covering the excess, in `unit` (R32): what a True-Forward must
    /// reach and a True-Up charges.
    #[serde(default)]
    pub required_purchase: u64,
    /// The license's purchase unit: Mbps, users, devices, data units.
    #[serde(default)]
    pub unit: String,
    /// Licenses that require the same increase (R14).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires_same_increase: Vec<LicenseKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<ResolutionReport>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResolutionReport {
    #[serde(rename = "type")]
    pub kind: String,
    /// In `unit` (R32).
    pub quantity: u64,
    #[serde(default)]
    pub unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_id: Option<i64>,
    pub at: String,
}

impl From<&Overusage> for OverusageReport {
    fn from(o: &Overusage) -> Self {
        OverusageReport {
            id: o.id,
            license: o.found.license,
            region_group: o.found.region.clone(),
            measured: o.found.measured,
            licensed: o.found.licensed,
            excess: o.found.excess,
            required_purchase: o.found.required_purchase,
            unit: o.found.license.purchase_unit().to_owned(),
            requires_same_increase: o.found.flags.clone(),
            resolution: o.resolution.as_ref().map(|r| ResolutionReport {
                kind: r.kind.as_str().to_owned(),
                quantity: r.quantity,
                unit: o.found.license.purchase_unit().to_owned(),
                license_id: r.license_id,
                at: tally_common::time::rfc3339(r.at),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(sites: &[(&str, &str)]) -> UsageReport {
        let sites: Vec<serde_json::Value> = sites
            .iter()
            .map(|(site, group)| serde_json::json!({"site": site, "region_group": group, "days": []}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "account": "acme", "month": "2026-10", "status": "finalized",
            "window": {"start": "2026-10-01T00:00:00Z", "end": "2026-10-31T00:00:00Z", "setting": "article"},
            "bandwidth_pool": [], "sites": sites, "meters": [], "generated_at": "2026-11-16T12:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn sites_are_paged_by_id_a_site_in_two_groups_once() {
        let sites = [("a", "group1"), ("b", "group1"), ("b", "china"), ("c", "group1"), ("d", "group2")];
        let page = |after: Option<&str>, limit| {
            let mut r = report(&sites);
            r.page_sites(after, limit);
            let ids: Vec<String> = r.sites.iter().map(|s| format!("{}:{}", s.site, s.region_group.as_str())).collect();
            (ids, r.sites_page.unwrap())
        };
        let (ids, p) = page(None, 2);
        assert_eq!(ids, ["a:group1", "b:group1", "b:china"]);
        assert_eq!((p.total, p.before, p.next_after.as_deref()), (4, 0, Some("b")));
        let (ids, p) = page(Some("b"), 2);
        assert_eq!(ids, ["c:group1", "d:group2"]);
        assert_eq!((p.total, p.before, p.next_after), (4, 2, None), "the last page");
        let (ids, p) = page(Some("bb"), 10);
        assert_eq!((ids.len(), p.before), (2, 2), "after an id that is no site's");
        let (ids, p) = page(Some("z"), 10);
        assert_eq!((ids.len(), p.before, p.next_after), (0, 4, None), "past the end");
    }
}
