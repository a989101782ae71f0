//! The usage report as an operator reads it in a terminal (`tally-collector report`): aligned
//! columns, bandwidth in Mbps.

use std::fmt::Write as _;

use serde::Serialize;
use tally_common::bandwidth::Bandwidth;
use tally_common::kinds::LicenseKind;

use super::document::{SiteDayReport, UsageReport, describe_window};

/// The report as an operator reads it in a terminal.
pub fn report(report: &UsageReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Account {}, {} ({}); window {} to {} ({})",
        report.account,
        report.month,
        serde_plain(&report.status),
        report.window.start,
        report.window.end,
        serde_plain(&report.window.setting)
    );
    let _ = writeln!(out, "the window: {}", describe_window(report.window.setting));
    if let Some(from) = report.open_from {
        let _ = writeln!(out, "still open: {from} (today, provisional) to {}", report.month.last_day());
    }
    if report.days_computed_in_memory > 0 {
        let _ = writeln!(
            out,
            "{} site-day(s) computed from their buckets for this report (the engine has not summarized them yet)",
            report.days_computed_in_memory
        );
    }
    if let Some(at) = &report.finalized_at {
        let _ =
            writeln!(out, "finalized at {at}; {} bucket(s) arrived later and are not billed (R9)", report.late_buckets);
    }
    for late in &report.late_events {
        let _ = writeln!(
            out,
            "{} {} event(s) arrived after the month was finalized and are not billed (R33): with them it would \
             have measured {}, not {}",
            late.events, late.license, late.measured_with_late, late.measured
        );
    }
    let _ = writeln!(out, "\nBandwidth pool");
    let mut rows = vec![[
        "region group".to_owned(),
        "monthly P95".into(),
        "peak day".into(),
        "licensed".into(),
        "excess".into(),
        "to purchase".into(),
        "forecast".into(),
    ]];
    for pool in &report.bandwidth_pool {
        let forecast = pool.forecast.as_ref().map_or(String::new(), |f| {
            let flag = if f.exceeds_license { " (over the license)" } else { "" };
            format!("{}{flag}", Bandwidth(f.projected_monthly_p95_bps))
        });
        rows.push([
            pool.region_group.to_string(),
            Bandwidth(pool.monthly_p95_bps).to_string(),
            pool.peak_day.map_or("-".into(), |d| d.to_string()),
            Bandwidth(pool.licensed_bps).to_string(),
            Bandwidth(pool.excess_bps).to_string(),
            format!("{} Mbps", pool.required_purchase_mbps),
            forecast,
        ]);
    }
    aligned(&mut out, &rows, &[false, true, false, true, true, true, true]);
    let _ = writeln!(out, "\nSites");
    let mut rows = vec![[
        "site".to_owned(),
        "region group".into(),
        "highest daily P95 (window)".into(),
        "buckets present".into(),
        "cap".into(),
        "over cap × 1.05".into(),
    ]];
    for site in &report.sites {
        let highest = site.days.iter().filter(|d| d.in_window).map(|d| d.p95_bps).max().unwrap_or(0);
        rows.push([
            site.site.clone(),
            site.region_group.to_string(),
            Bandwidth(highest).to_string(),
            coverage(&site.days),
            site.cap_bps.map_or("-".into(), |c| Bandwidth(c).to_string()),
            format!("{} bucket(s)", site.violations.len()),
        ]);
    }
    aligned(&mut out, &rows, &[false, false, true, true, true, true]);
    let outside: Vec<String> = report
        .sites
        .first()
        .map(|site| site.days.iter().filter(|d| !d.in_window).map(|d| d.date.to_string()).collect())
        .unwrap_or_default();
    if !outside.is_empty() {
        let _ = writeln!(out, "outside the window (listed, not billed): {}", outside.join(", "));
    }
    if !report.overusage.is_empty() {
        let _ = writeln!(out, "\nOver-usage");
        let mut rows =
            vec![["id".to_owned(), "license".into(), "excess".into(), "to purchase".into(), "resolution".into()]];
        for o in &report.overusage {
            let license = match &o.region_group {
                Some(group) => format!("{} {group}", o.license),
                None => o.license.to_string(),
            };
            let excess = if o.license == LicenseKind::BandwidthPool {
                Bandwidth(o.excess).to_string()
            } else {
                o.excess.to_string()
            };
            let resolution =
                o.resolution.as_ref().map_or("open".to_owned(), |r| format!("{} {} {}", r.kind, r.quantity, r.unit));
            rows.push([o.id.to_string(), license, excess, format!("{} {}", o.required_purchase, o.unit), resolution]);
        }
        aligned(&mut out, &rows, &[true, false, true, true, false]);
    }
    if !report.meters.is_empty() {
        let _ = writeln!(out, "\nOther licenses (calendar month)");
        let mut rows =
            vec![["license".to_owned(), "measured".into(), "licensed".into(), "excess".into(), "to purchase".into()]];
        for m in report.meters.iter().map(|m| &m.meter) {
            rows.push([
                m.license.to_string(),
                m.measured.to_string(),
                m.licensed.to_string(),
                m.excess.to_string(),
                m.required_purchase.to_string(),
            ]);
        }
        aligned(&mut out, &rows, &[false, true, true, true, true]);
    }
    out
}

/// Appends `rows` with columns padded to their widest cell, right-aligned where `right`.
pub(crate) fn aligned<const N: usize>(out: &mut String, rows: &[[String; N]], right: &[bool; N]) {
    let widths: Vec<usize> = (0..N).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let cells: Vec<String> = (0..N)
            .map(|c| {
                if right[c] {
                    format!("{:>w$}", row[c], w = widths[c])
                } else {
                    format!("{:<w$}", row[c], w = widths[c])
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("   ").trim_end());
    }
}

/// A unit enum's serde name.
fn serde_plain(value: &impl Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The buckets a site sent of those expected since its first this month: the days before it
/// reported at all (a site added this month) are not missing; a site that never reported says so.
fn coverage(days: &[SiteDayReport]) -> String {
    let Some(first) = days.iter().position(|d| d.buckets_present > 0) else { return "none yet".to_owned() };
    let since = &days[first..];
    let present: u64 = since.iter().map(|d| u64::from(d.buckets_present)).sum();
    let expected: u64 = since.iter().map(|d| u64::from(d.buckets_expected)).sum();
    if first == 0 {
        format!("{present} of {expected}")
    } else {
        format!("{present} of {expected} since {}", days[first].date)
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn nov(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, day).unwrap()
    }

    #[test]
    fn a_sites_days_before_its_first_bucket_are_not_missing() {
        let day = |date: u32, present: u16| SiteDayReport {
            date: nov(date),
            p95_bps: 0,
            buckets_present: present,
            buckets_expected: 288,
            in_window: true,
            provisional: false,
        };
        assert_eq!(coverage(&[day(1, 0), day(2, 0)]), "none yet");
        assert_eq!(coverage(&[day(1, 0), day(2, 0), day(3, 200), day(4, 0)]), "200 of 576 since 2026-11-03");
        assert_eq!(coverage(&[day(1, 288), day(2, 0)]), "288 of 576");
    }
}
