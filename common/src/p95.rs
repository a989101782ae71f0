//! The bandwidth pool's P95 (R5–R7): daily site P95 over 288 slots, daily aggregate per region
//! group, and the monthly P95 over the month window with its peak day.
//!
//! Sums saturate at `u64::MAX` bits per second rather than wrap; the collector refuses bucket
//! values above its sanity bound long before a sum could get there.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::region::RegionGroup;
use crate::time::{BucketStart, DAY_SLOTS, MonthWindow};

/// Slots discarded from the top of a day: `floor(288 × 5 %)`, 70 minutes (R5).
pub const DISCARDED_SLOTS: usize = DAY_SLOTS * 5 / 100;

/// A site's P95 for one UTC day (R5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyP95 {
    pub p95_bps: u64,
    /// Slots of the day that hold a bucket.
    pub buckets_present: u16,
    /// Slots of the day: 288.
    pub buckets_expected: u16,
}

/// The daily site P95 of `day` (R5): a slot without a bucket counts as 0; the top 14 slots are
/// discarded and the highest remaining value, the 15th highest, is the P95. Buckets of other
/// days are ignored; two values for one slot are merged with `max` (R10).
pub fn daily_site_p95(day: NaiveDate, buckets: impl IntoIterator<Item = (BucketStart, u64)>) -> DailyP95 {
    let mut slots = [0u64; DAY_SLOTS];
    let mut present = [false; DAY_SLOTS];
    for (start, bps) in buckets {
        if start.day() == day {
            let slot = start.slot();
            slots[slot] = slots[slot].max(bps);
            present[slot] = true;
        }
    }
    slots.sort_unstable_by(|a, b| b.cmp(a));
    DailyP95 {
        p95_bps: slots[DISCARDED_SLOTS],
        buckets_present: present.iter().filter(|p| **p).count() as u16,
        buckets_expected: DAY_SLOTS as u16,
    }
}

/// The slots R5 discards from `day`: the [`DISCARDED_SLOTS`] highest (a slot without a bucket
/// counts as 0), the earlier slot first among equal values; the next one is the daily P95 of
/// [`daily_site_p95`]. For showing a day, not for computing it.
pub fn discarded_slots(day: NaiveDate, buckets: impl IntoIterator<Item = (BucketStart, u64)>) -> Vec<usize> {
    let mut slots = [0u64; DAY_SLOTS];
    for (start, bps) in buckets {
        if start.day() == day {
            slots[start.slot()] = slots[start.slot()].max(bps);
        }
    }
    let mut ranked: Vec<usize> = (0..DAY_SLOTS).collect();
    ranked.sort_by(|a, b| slots[*b].cmp(&slots[*a]).then(a.cmp(b)));
    ranked.truncate(DISCARDED_SLOTS);
    ranked
}

/// Daily aggregates (R6): for each region group and day, the sum of the daily P95 of every site
/// whose country maps to that group. Input: one `(group, day, site P95)` per site and day.
pub fn daily_aggregates(
    site_days: impl IntoIterator<Item = (RegionGroup, NaiveDate, u64)>,
) -> BTreeMap<RegionGroup, BTreeMap<NaiveDate, u64>> {
    let mut groups: BTreeMap<RegionGroup, BTreeMap<NaiveDate, u64>> = BTreeMap::new();
    for (group, day, p95) in site_days {
        let sum = groups.entry(group).or_default().entry(day).or_default();
        *sum = sum.saturating_add(p95);
    }
    groups
}

/// A region group's monthly P95 (R7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthlyP95 {
    pub window: MonthWindow,
    /// The highest daily aggregate in the window.
    pub monthly_p95_bps: u64,
    /// The first day that reached it; `None` when the window had no traffic at all.
    pub peak_day: Option<NaiveDate>,
    /// Every day of the window with its aggregate (0 where nothing was measured).
    pub days: Vec<(NaiveDate, u64)>,
}

/// The monthly P95 of one region group: the highest daily aggregate among the window's days (R7).
/// Aggregates of days outside the window are ignored.
pub fn monthly_p95(window: MonthWindow, aggregates: &BTreeMap<NaiveDate, u64>) -> MonthlyP95 {
    let days: Vec<(NaiveDate, u64)> = window.days().map(|d| (d, aggregates.get(&d).copied().unwrap_or(0))).collect();
    let (mut monthly, mut peak_day) = (0, None);
    for &(day, aggregate) in &days {
        if aggregate > monthly {
            (monthly, peak_day) = (aggregate, Some(day));
        }
    }
    MonthlyP95 { window, monthly_p95_bps: monthly, peak_day, days }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Month;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 10, 7).unwrap()
    }

    fn bucket(slot: usize) -> BucketStart {
        BucketStart::from_unix(BucketStart::first_of_day(day()).unix() + 300 * slot as i64).unwrap()
    }

    #[test]
    fn fourteen_spikes_are_discarded_the_fifteenth_counts() {
        let mut buckets: Vec<_> = (0..288).map(|s| (bucket(s), 10)).collect();
        for (s, value) in buckets.iter_mut().take(14) {
            *value = 1_000 + s.slot() as u64;
        }
        assert_eq!(daily_site_p95(day(), buckets.clone()).p95_bps, 10);
        buckets[100].1 = 500;
        let p95 = daily_site_p95(day(), buckets);
        assert_eq!(p95, DailyP95 { p95_bps: 500, buckets_present: 288, buckets_expected: 288 });
    }

    #[test]
    fn missing_slots_count_as_zero() {
        let buckets: Vec<_> = (0..14).map(|s| (bucket(s), 99)).collect();
        assert_eq!(daily_site_p95(day(), buckets).p95_bps, 0);
        let buckets: Vec<_> = (0..15).map(|s| (bucket(s * 7), 99)).collect();
        let p95 = daily_site_p95(day(), buckets);
        assert_eq!((p95.p95_bps, p95.buckets_present), (99, 15));
    }

    #[test]
    fn duplicates_merge_with_max_and_other_days_are_ignored() {
        let other_day = BucketStart::first_of_day(day().succ_opt().unwrap());
        let mut buckets: Vec<_> = (0..15).map(|s| (bucket(s), 5)).collect();
        buckets.push((bucket(3), 1));
        buckets.push((other_day, 1_000));
        assert_eq!(daily_site_p95(day(), buckets).buckets_present, 15);
    }

    #[test]
    fn the_monthly_p95_is_the_highest_aggregate_in_the_window() {
        let month: Month = "2026-10".parse().unwrap();
        let d = |n| NaiveDate::from_ymd_opt(2026, 10, n).unwrap();
        let aggregates = daily_aggregates([
            (RegionGroup::Group1, d(3), 40),
            (RegionGroup::Group1, d(3), 60),
            (RegionGroup::Group1, d(9), 100),
            (RegionGroup::Group1, d(31), 500),
            (RegionGroup::China, d(31), 7),
        ]);
        let group1 = &aggregates[&RegionGroup::Group1];
        let article = monthly_p95(month.window(crate::time::MonthWindowSetting::Article), group1);
        assert_eq!((article.monthly_p95_bps, article.peak_day), (100, Some(d(3))));
        assert_eq!(article.days.len(), 30);
        let calendar = monthly_p95(month.window(crate::time::MonthWindowSetting::Calendar), group1);
        assert_eq!((calendar.monthly_p95_bps, calendar.peak_day), (500, Some(d(31))));
    }
}
