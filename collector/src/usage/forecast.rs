//! The open month's forecast of its bandwidth pool: the monthly P95 so far and where the
//! complete days' trend (a least-squares line) takes it by the window's last day.

use chrono::NaiveDate;
use tally_common::pool::PoolMonth;
use tally_common::time::MonthWindow;

use super::document::Forecast;

/// The open month's forecast of `pool`: complete days only (today is still running).
pub(super) fn forecast(pool: &PoolMonth, window: MonthWindow, today: NaiveDate) -> Forecast {
    let complete: Vec<(f64, f64)> = pool
        .monthly
        .days
        .iter()
        .filter(|(d, _)| *d < today)
        .map(|(d, v)| ((*d - window.start).num_days() as f64, *v as f64))
        .collect();
    let so_far = complete.iter().map(|(_, v)| *v as u64).max().unwrap_or(0);
    let last_day = (window.day_count().max(1) - 1) as f64;
    let trend_at_end = linear_trend(&complete).map_or(0.0, |(a, b)| a + b * last_day);
    let projected = so_far.max(trend_at_end.max(0.0).min(u64::MAX as f64) as u64);
    Forecast {
        monthly_p95_so_far_bps: so_far,
        projected_monthly_p95_bps: projected,
        days_measured: complete.len(),
        exceeds_license: projected > pool.licensed_bps,
    }
}

/// Least-squares line `a + b·x` through the points; `None` with fewer than two distinct x.
fn linear_trend(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if points.len() < 2 || sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let b = sxy / sxx;
    Some((mean_y - b * mean_x, b))
}

#[cfg(test)]
mod tests {
    use tally_common::license::LicenseTerm;
    use tally_common::pool::pool_months;
    use tally_common::region::RegionGroup;
    use tally_common::time::{Month, MonthWindowSetting};

    use super::*;

    fn pool(window: MonthWindow, daily_mbps: &[u64], licensed_mbps: u64) -> PoolMonth {
        let site_days = window.days().zip(daily_mbps).map(|(d, v)| (RegionGroup::Group1, d, v * 1_000_000));
        let license =
            LicenseTerm { effective_from: window.start, effective_to: window.end, quantity: licensed_mbps * 1_000_000 };
        pool_months(window, site_days, &[(RegionGroup::Group1, license)]).remove(0)
    }

    fn november() -> MonthWindow {
        "2026-11".parse::<Month>().unwrap().window(MonthWindowSetting::Article)
    }

    fn nov(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, day).unwrap()
    }

    #[test]
    fn a_rising_month_is_projected_along_its_trend_to_the_last_day() {
        // Nov 1..10: 10, 20, ... 100 Mbps; the window's last day is Nov 29 (index 28): 290 Mbps.
        let rising: Vec<u64> = (1..=10).map(|i| i * 10).collect();
        let f = forecast(&pool(november(), &rising, 150), november(), nov(11));
        assert_eq!(f.monthly_p95_so_far_bps, 100_000_000);
        assert_eq!(f.days_measured, 10);
        assert!((f.projected_monthly_p95_bps as i64 - 290_000_000).abs() <= 1, "{f:?}");
        assert!(f.exceeds_license);
    }

    #[test]
    fn a_flat_or_falling_month_is_projected_at_its_peak_so_far() {
        let flat = forecast(&pool(november(), &[50; 10], 100), november(), nov(11));
        assert_eq!(flat.projected_monthly_p95_bps, 50_000_000);
        assert!(!flat.exceeds_license);
        let falling: Vec<u64> = (1..=10).rev().map(|i| i * 10).collect();
        let f = forecast(&pool(november(), &falling, 100), november(), nov(11));
        assert_eq!(f.projected_monthly_p95_bps, 100_000_000, "the peak already reached stays");
        assert!(!f.exceeds_license, "100 Mbps is within a 100 Mbps license");
    }

    #[test]
    fn today_is_not_a_complete_day_and_one_day_gives_no_trend() {
        // Today (Nov 2) is running at 900 Mbps: it does not count yet.
        let f = forecast(&pool(november(), &[40, 900], 100), november(), nov(2));
        assert_eq!(f.days_measured, 1);
        assert_eq!(f.monthly_p95_so_far_bps, 40_000_000);
        assert_eq!(f.projected_monthly_p95_bps, 40_000_000);
    }
}
