//! One account's bandwidth pool for one month: daily aggregates (R6), monthly P95 (R7),
//! licensed capacity (R8) and excess, per region group.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::license::{LicenseTerm, licensed_capacity};
use crate::p95::{MonthlyP95, daily_aggregates, monthly_p95};
use crate::region::RegionGroup;
use crate::time::MonthWindow;

/// A region group's bandwidth pool over a month window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolMonth {
    pub region_group: RegionGroup,
    pub monthly: MonthlyP95,
    pub licensed_bps: u64,
    /// `max(0, monthly P95 − licensed)`: the over-usage, if any.
    pub excess_bps: u64,
}

/// The smallest pool purchase covering `excess_bps` (R32): whole Mbps, rounded up.
pub fn required_purchase_mbps(excess_bps: u64) -> u64 {
    excess_bps.div_ceil(1_000_000)
}

/// The pool of every region group that has a site-day or a bandwidth-pool license, in group
/// order. `site_days` holds each site's daily P95 as `(group, day, p95)`; `licenses` the
/// account's bandwidth-pool licenses with their group (quantities in bits per second).
pub fn pool_months(
    window: MonthWindow,
    site_days: impl IntoIterator<Item = (RegionGroup, NaiveDate, u64)>,
    licenses: &[(RegionGroup, LicenseTerm)],
) -> Vec<PoolMonth> {
    let mut aggregates = daily_aggregates(site_days);
    for (group, _) in licenses {
        aggregates.entry(*group).or_default();
    }
    aggregates
        .into_iter()
        .map(|(group, days)| {
            let monthly = monthly_p95(window, &days);
            let licensed_bps = licensed_capacity(window, licenses.iter().filter(|(g, _)| *g == group).map(|(_, l)| l));
            PoolMonth {
                region_group: group,
                excess_bps: monthly.monthly_p95_bps.saturating_sub(licensed_bps),
                monthly,
                licensed_bps,
            }
        })
        .collect()
}
