//! Licensed capacity of a month (R8).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::time::MonthWindow;

/// A license's term and quantity, in the unit of its kind (bits per second for the bandwidth
/// pool, users, devices, data units).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseTerm {
    /// First day in force.
    pub effective_from: NaiveDate,
    /// Last day in force (inclusive).
    pub effective_to: NaiveDate,
    pub quantity: u64,
}

impl LicenseTerm {
    /// In force on `day` if `day` lies in `[effective_from, effective_to]` (R8).
    pub fn in_force_on(&self, day: NaiveDate) -> bool {
        self.effective_from <= day && day <= self.effective_to
    }
}

/// The capacity of a month: the largest total quantity in force on any day of the window, in
/// the customer's favour (R8). The caller passes the licenses of one kind and region group only:
/// capacity never moves between groups or licenses.
pub fn licensed_capacity<'a>(window: MonthWindow, licenses: impl IntoIterator<Item = &'a LicenseTerm>) -> u64 {
    let licenses: Vec<&LicenseTerm> = licenses.into_iter().collect();
    window.days().map(|day| capacity_on(day, licenses.iter().copied())).max().unwrap_or(0)
}

/// The total quantity in force on `day` (R8), of licenses of one kind and region group.
pub fn capacity_on<'a>(day: NaiveDate, licenses: impl IntoIterator<Item = &'a LicenseTerm>) -> u64 {
    licenses.into_iter().filter(|l| l.in_force_on(day)).fold(0u64, |sum, l| sum.saturating_add(l.quantity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{Month, MonthWindowSetting};

    fn d(m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, day).unwrap()
    }

    fn term(from: NaiveDate, to: NaiveDate, quantity: u64) -> LicenseTerm {
        LicenseTerm { effective_from: from, effective_to: to, quantity }
    }

    #[test]
    fn the_largest_daily_total_in_the_window_counts() {
        let october: Month = "2026-10".parse().unwrap();
        let window = october.window(MonthWindowSetting::Article);
        let base = term(d(1, 1), d(12, 31), 100);
        let upgrade = term(d(10, 20), d(12, 31), 50);
        let ended = term(d(1, 1), d(10, 5), 30);
        assert_eq!(licensed_capacity(window, [&base, &ended]), 130);
        assert_eq!(licensed_capacity(window, [&base, &upgrade, &ended]), 150);
    }

    #[test]
    fn a_license_starting_on_the_last_day_counts_only_in_a_calendar_window() {
        let october: Month = "2026-10".parse().unwrap();
        let late = term(d(10, 31), d(12, 31), 70);
        assert_eq!(licensed_capacity(october.window(MonthWindowSetting::Article), [&late]), 0);
        assert_eq!(licensed_capacity(october.window(MonthWindowSetting::Calendar), [&late]), 70);
    }
}
