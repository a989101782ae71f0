//! Golden vectors (`common/golden/*.json`): the daily site P95 (R5) and a whole month of the
//! bandwidth pool (R5–R8) under both month windows (R7). The collector's store is held to the
//! same files.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Deserialize;
use tally_common::license::LicenseTerm;
use tally_common::p95::daily_site_p95;
use tally_common::pool::pool_months;
use tally_common::region::{CountryCode, RegionGroup, RegionTable};
use tally_common::time::{BucketStart, Month, MonthWindowSetting, rfc3339};

/// `[first_slot, count, max_bps]`: `count` buckets from `first_slot`, all at `max_bps`.
type Run = (usize, usize, u64);

fn buckets_of(day: NaiveDate, runs: &[Run]) -> Vec<(BucketStart, u64)> {
    let first = BucketStart::first_of_day(day).unix();
    runs.iter()
        .flat_map(|&(slot, count, bps)| {
            (slot..slot + count).map(move |s| (BucketStart::from_unix(first + 300 * s as i64).unwrap(), bps))
        })
        .collect()
}

#[derive(Deserialize)]
struct P95File {
    day: NaiveDate,
    cases: Vec<P95Case>,
}

#[derive(Deserialize)]
struct P95Case {
    name: String,
    runs: Vec<Run>,
    p95_bps: u64,
    buckets_present: u16,
}

#[test]
fn daily_site_p95_matches_the_golden_vectors() {
    let file: P95File = serde_json::from_str(include_str!("../golden/p95.json")).unwrap();
    assert!(file.cases.len() >= 10);
    for case in file.cases {
        let p95 = daily_site_p95(file.day, buckets_of(file.day, &case.runs));
        assert_eq!(
            (p95.p95_bps, p95.buckets_present, p95.buckets_expected),
            (case.p95_bps, case.buckets_present, 288),
            "{}",
            case.name
        );
    }
}

#[derive(Deserialize)]
struct MonthFile {
    month: Month,
    sites: Vec<Site>,
    licenses: Vec<License>,
    expected: BTreeMap<String, Expected>,
}

#[derive(Deserialize)]
struct Site {
    country: CountryCode,
    buckets: Vec<DayRuns>,
}

#[derive(Deserialize)]
struct DayRuns {
    from: NaiveDate,
    to: NaiveDate,
    runs: Vec<Run>,
}

#[derive(Deserialize)]
struct License {
    region_group: RegionGroup,
    #[serde(flatten)]
    term: LicenseTerm,
}

#[derive(Deserialize)]
struct Expected {
    window: Window,
    bandwidth_pool: Vec<ExpectedPool>,
    group1_days: BTreeMap<NaiveDate, u64>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct Window {
    start: String,
    end: String,
}

#[derive(Deserialize, Debug, PartialEq)]
struct ExpectedPool {
    region_group: RegionGroup,
    monthly_p95_bps: u64,
    peak_day: Option<NaiveDate>,
    licensed_bps: u64,
    excess_bps: u64,
}

#[test]
fn a_whole_month_matches_the_golden_vectors_under_both_windows() {
    let file: MonthFile = serde_json::from_str(include_str!("../golden/month.json")).unwrap();
    let regions = RegionTable::builtin();
    let month_days: Vec<NaiveDate> = file.month.window(MonthWindowSetting::Calendar).days().collect();

    let mut site_days = Vec::new();
    for site in &file.sites {
        let group = regions.group_of(site.country).unwrap();
        for &day in &month_days {
            let runs: Vec<Run> = site
                .buckets
                .iter()
                .filter(|r| r.from <= day && day <= r.to)
                .flat_map(|r| r.runs.iter().copied())
                .collect();
            let p95 = daily_site_p95(day, buckets_of(day, &runs));
            site_days.push((group, day, p95.p95_bps));
        }
    }
    let licenses: Vec<(RegionGroup, LicenseTerm)> = file.licenses.iter().map(|l| (l.region_group, l.term)).collect();

    for (setting, name) in [(MonthWindowSetting::Article, "article"), (MonthWindowSetting::Calendar, "calendar")] {
        let expected = &file.expected[name];
        let window = file.month.window(setting);
        assert_eq!(
            Window { start: rfc3339(window.start_time()), end: rfc3339(window.end_time()) },
            expected.window,
            "{name} window"
        );
        let pools = pool_months(window, site_days.iter().copied(), &licenses);
        let got: Vec<ExpectedPool> = pools
            .iter()
            .map(|p| ExpectedPool {
                region_group: p.region_group,
                monthly_p95_bps: p.monthly.monthly_p95_bps,
                peak_day: p.monthly.peak_day,
                licensed_bps: p.licensed_bps,
                excess_bps: p.excess_bps,
            })
            .collect();
        assert_eq!(got, expected.bandwidth_pool, "{name}");
        let group1: BTreeMap<NaiveDate, u64> = pools[0].monthly.days.iter().copied().collect();
        for (day, aggregate) in &expected.group1_days {
            assert_eq!(group1.get(day), Some(aggregate), "{name} group1 aggregate on {day}");
        }
        assert_eq!(group1.len(), window.day_count(), "{name}: every day of the window is reported");
    }
}
