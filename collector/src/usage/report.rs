//! The usage report of one account and month (Contract): built from the store and the rules of
//! `tally_common` ([`super::document`] is its shape); [`super::finalize`] saves it once (R9),
//! [`super::table`] prints it, [`super::forecast`] projects an open month.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use tally_common::kinds::{LicenseKind, ZtnaRegion};
use tally_common::license::LicenseTerm;
use tally_common::meters::{self, MeterMonth};
use tally_common::p95::daily_aggregates;
use tally_common::pool::pool_months;
use tally_common::region::{self, RegionGroup};
use tally_common::time::{DAY_SLOTS, Month, MonthWindow, MonthWindowSetting, rfc3339};

use super::document::{
    DayAggregate, LateEvents, MeterReport, MonthStatus, OverusageReport, PoolReport, RegionUsage, SiteDayReport,
    SiteReport, UsageReport, WindowJson, describe_window,
};
use super::forecast::forecast;
use crate::accounts::terms::term_report;
use crate::enforcement::{ViolationReport, month_caps, month_violations};
use crate::store::{License, MeterCounts, Store, StoreError, group_history, pool_licenses};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("account {0:?} does not exist")]
    UnknownAccount(String),
    /// R28: the month ends before the account's life began.
    #[error(
        "account {account} did not exist in {month} (its life begins {since}: its creation, first license or first bucket)"
    )]
    BeforeAccountLife { account: String, month: Month, since: NaiveDate },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `month` overlaps the account's life (R28): only such months are reported, finalized
/// and notified.
pub async fn check_account_life<S: Store>(store: &S, account: &str, month: Month) -> Result<(), ReportError> {
    match store.account_life(account).await? {
        None => Err(ReportError::UnknownAccount(account.to_owned())),
        Some(life) if month.last_day() < life.since => {
            Err(ReportError::BeforeAccountLife { account: account.to_owned(), month, since: life.since })
        }
        Some(_) => Ok(()),
    }
}

/// The report of `account` for `month` as of `now`. A month the engine finalized (R9) is read
/// back as saved, with the count of buckets that arrived late; any other is computed from one
/// snapshot of the store, without writing anything (R35).
pub async fn build<S: Store>(
    store: &S,
    account: &str,
    month: Month,
    setting: MonthWindowSetting,
    now: DateTime<Utc>,
) -> Result<UsageReport, ReportError> {
    build_keeping(store, None, account, month, setting, now).await
}

/// [`build`], a finalized month's document parsed once while `parsed` keeps it.
pub async fn build_keeping<S: Store>(
    store: &S,
    parsed: Option<&super::finalized::Parsed>,
    account: &str,
    month: Month,
    setting: MonthWindowSetting,
    now: DateTime<Utc>,
) -> Result<UsageReport, ReportError> {
    check_account_life(store, account, month).await?;
    let key = month.to_string();
    let Some(finalized_at) = store.finalized_at(account, &key).await? else {
        return compute(store, account, month, setting, MonthStatus::unsaved(month, now), now).await;
    };
    let kept = parsed.and_then(|p| p.get(account, month, finalized_at));
    let mut report = match kept {
        Some(document) => UsageReport::clone(&document),
        None => {
            let Some((finalized_at, saved)) = store.finalized_report(account, &key).await? else {
                return compute(store, account, month, setting, MonthStatus::unsaved(month, now), now).await;
            };
            let document: UsageReport = serde_json::from_str(&saved)
                .map_err(|e| StoreError::Corrupt(format!("the finalized report of {account} {key}: {e}")))?;
            if let Some(parsed) = parsed {
                parsed.keep(account, month, finalized_at, std::sync::Arc::new(document.clone()));
            }
            document
        }
    };
    let window = report_window(&report).unwrap_or(month.window(setting));
    report.late_buckets = store.late_buckets(account, &key, window.start_time(), window.end_time()).await?;
    report.late_events = late_events(store, &report, finalized_at).await?;
    report.finalized_at = Some(rfc3339(finalized_at));
    report.overusage = store.overusages(account, &key).await?.iter().map(OverusageReport::from).collect();
    Ok(report)
}

/// The events (and LAN sightings) of a finalized `report`'s month received after `finalized_at`, by meter, each with
/// the figure the month would have had with them (R33): its meters computed again with every
/// event stored.
async fn late_events<S: Store>(
    store: &S,
    report: &UsageReport,
    finalized_at: DateTime<Utc>,
) -> Result<Vec<LateEvents>, StoreError> {
    let key = report.month.to_string();
    let (mut late, lan) = tokio::try_join!(
        store.events_received_after(&report.account, &key, finalized_at),
        store.lan_sightings_received_after(&report.account, &key, finalized_at),
    )?;
    // LAN sightings count as the device meter's late events (R29, R33).
    if lan > 0 {
        match late.iter_mut().find(|(license, _)| *license == LicenseKind::Devices) {
            Some((_, events)) => *events += lan,
            None => late.push((LicenseKind::Devices, lan)),
        }
    }
    if late.is_empty() {
        return Ok(Vec::new());
    }
    let (counts, licenses) =
        tokio::try_join!(store.meter_counts(&report.account, &key), store.licenses_of_account(&report.account))?;
    let with_late = meter_reports(&counts, &licenses, report.month);
    let measured = |meters: &[MeterReport], license| {
        meters.iter().find(|m| m.meter.license == license).map_or(0, |m| m.meter.measured)
    };
    Ok(late
        .into_iter()
        .map(|(license, events)| LateEvents {
            license,
            events,
            measured: measured(&report.meters, license),
            measured_with_late: measured(&with_late, license),
        })
        .collect())
}

/// The window a saved report was computed over (the setting may have changed since).
fn report_window(report: &UsageReport) -> Option<MonthWindow> {
    let day = |t: &str| t.parse::<DateTime<Utc>>().ok().map(|t| t.date_naive());
    Some(MonthWindow { start: day(&report.window.start)?, end: day(&report.window.end)? })
}

pub(super) async fn compute<S: Store>(
    store: &S,
    account: &str,
    month: Month,
    setting: MonthWindowSetting,
    status: MonthStatus,
    now: DateTime<Utc>,
) -> Result<UsageReport, ReportError> {
    let window = month.window(setting);
    let today = now.date_naive();
    // Days reported: every day of the calendar month, each saying whether it is in the R7
    // window, up to today (a day of the future has no P95 yet).
    let calendar = month.window(MonthWindowSetting::Calendar);
    let last_reported = month.last_day().min(today);
    let key = month.to_string();
    let (sites, snapshot, licenses, counts, over_cap, caps, terms, spans) = tokio::try_join!(
        store.sites_of_account(account),
        store.site_days(account, calendar.start, calendar.end),
        store.licenses_of_account(account),
        store.meter_counts(account, &key),
        month_violations(store, account, None, month, setting),
        month_caps(store, account, None, month, setting),
        store.contract_terms(account),
        store.site_groups(account),
    )?;
    let (stored, in_memory) = super::daily::current(snapshot);
    let mut by_site: BTreeMap<&str, BTreeMap<NaiveDate, &crate::store::SiteDay>> = BTreeMap::new();
    for day in &stored {
        by_site.entry(day.site.as_str()).or_default().insert(day.day, day);
    }
    // R31: each day in the group the site belonged to at its 00:00 UTC.
    let histories: BTreeMap<&str, Vec<(NaiveDate, RegionGroup)>> =
        sites.iter().map(|s| (s.id.as_str(), group_history(&spans, &s.id))).collect();
    let group_on = |site: &crate::store::Site, day: NaiveDate| {
        histories.get(site.id.as_str()).and_then(|h| region::group_on(h, day)).unwrap_or(site.region_group)
    };
    let mut site_reports: Vec<SiteReport> = Vec::new();
    for site in &sites {
        // One entry per group the site belonged to this month, with its days there.
        let mut segments: Vec<(RegionGroup, Vec<SiteDayReport>)> = Vec::new();
        for date in calendar.days().take_while(|d| *d <= last_reported) {
            let day = by_site.get(site.id.as_str()).and_then(|days| days.get(&date));
            let shown = SiteDayReport {
                date,
                p95_bps: day.map_or(0, |d| d.p95.p95_bps),
                buckets_present: day.map_or(0, |d| d.p95.buckets_present),
                buckets_expected: DAY_SLOTS as u16,
                in_window: window.contains(date),
                provisional: date == today,
            };
            let group = group_on(site, date);
            match segments.iter_mut().find(|(g, _)| *g == group) {
                Some((_, days)) => days.push(shown),
                None => segments.push((group, vec![shown])),
            }
        }
        if segments.is_empty() {
            segments.push((group_on(site, calendar.start), Vec::new()));
        }
        for (region_group, days) in segments {
            let dates: BTreeSet<String> = days.iter().map(|d| d.date.to_string()).collect();
            let on_its_days = |start: &str| start.get(..10).is_some_and(|day| dates.contains(day));
            site_reports.push(SiteReport {
                site: site.id.clone(),
                region_group,
                days,
                cap_bps: site.cap_bps,
                cap_history: caps.iter().filter(|(s, _)| *s == site.id).map(|(_, c)| c.clone()).collect(),
                violations: over_cap
                    .iter()
                    .filter(|v| v.site == site.id && on_its_days(&v.bucket_start.to_string()))
                    .map(ViolationReport::from)
                    .collect(),
            });
        }
    }

    let site_of: BTreeMap<&str, &crate::store::Site> = sites.iter().map(|s| (s.id.as_str(), s)).collect();
    let site_days: Vec<(RegionGroup, NaiveDate, u64)> = stored
        .iter()
        .filter_map(|d| site_of.get(d.site.as_str()).map(|s| (group_on(s, d.day), d.day, d.p95.p95_bps)))
        .collect();
    let in_window = site_days.iter().copied().filter(|(_, day, _)| window.contains(*day));
    let pools = pool_months(window, in_window, &pool_licenses(&licenses)?);
    let aggregates = daily_aggregates(site_days.iter().copied());
    let bandwidth_pool = pools
        .iter()
        .map(|pool| {
            let forecast = (status == MonthStatus::Open).then(|| forecast(pool, window, today));
            PoolReport {
                region_group: pool.region_group,
                monthly_p95_bps: pool.monthly.monthly_p95_bps,
                peak_day: pool.monthly.peak_day,
                licensed_bps: pool.licensed_bps,
                excess_bps: pool.excess_bps,
                required_purchase_mbps: tally_common::pool::required_purchase_mbps(pool.excess_bps),
                days: calendar
                    .days()
                    .take_while(|d| *d <= last_reported)
                    .map(|date| DayAggregate {
                        date,
                        aggregate_bps: aggregates
                            .get(&pool.region_group)
                            .and_then(|days| days.get(&date))
                            .copied()
                            .unwrap_or(0),
                        in_window: window.contains(date),
                    })
                    .collect(),
                forecast,
            }
        })
        .collect();
    Ok(UsageReport {
        account: account.to_owned(),
        month,
        status,
        window: WindowJson {
            start: rfc3339(window.start_time()),
            end: rfc3339(window.end_time()),
            setting,
            description: describe_window(setting).to_owned(),
        },
        bandwidth_pool,
        sites: site_reports,
        meters: meter_reports(&counts, &licenses, month),
        generated_at: rfc3339(now),
        finalized_at: None,
        late_buckets: 0,
        late_events: Vec::new(),
        days_computed_in_memory: in_memory as u64,
        overusage: Vec::new(),
        open_from: calendar.contains(today).then_some(today),
        contract_term: term_report(&terms, &licenses, if calendar.contains(today) { today } else { month.last_day() }),
        sites_page: None,
    })
}

fn of_kind(licenses: &[License], kind: LicenseKind) -> impl Iterator<Item = &License> {
    licenses.iter().filter(move |l| l.terms.kind == kind)
}

/// Every meter with a license or a measurement, over the calendar month (R13), capacities by R8.
fn meter_reports(counts: &MeterCounts, licenses: &[License], month: Month) -> Vec<MeterReport> {
    let calendar = month.window(MonthWindowSetting::Calendar);
    let capacity = |kind| {
        tally_common::license::licensed_capacity(
            calendar,
            of_kind(licenses, kind).map(License::term).collect::<Vec<_>>().iter(),
        )
    };
    let first = |kind, field: fn(&License) -> Option<u64>| of_kind(licenses, kind).find_map(field);
    let has = |kind| of_kind(licenses, kind).next().is_some();
    let mut reports = Vec::new();

    let ztna_licensed: Vec<(ZtnaRegion, u64)> = ZtnaRegion::ALL
        .iter()
        .map(|region| {
            let terms: Vec<LicenseTerm> = of_kind(licenses, LicenseKind::ZtnaUsers)
                .filter(|l| l.terms.region.as_deref() == Some(region.as_str()))
                .map(License::term)
                .collect();
            (*region, tally_common::license::licensed_capacity(calendar, terms.iter()))
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    if has(LicenseKind::ZtnaUsers) || !counts.ztna_by_region.is_empty() {
        let by_region = ZtnaRegion::ALL
            .iter()
            .map(|r| RegionUsage {
                region: *r,
                measured: counts.ztna_by_region.iter().find(|(x, _)| x == r).map_or(0, |(_, n)| *n),
                licensed: ztna_licensed.iter().find(|(x, _)| x == r).map_or(0, |(_, n)| *n),
            })
            .filter(|u| u.measured > 0 || u.licensed > 0)
            .collect();
        reports.push(MeterReport {
            by_region,
            ..MeterReport::plain(meters::ztna_users(&counts.ztna_by_region, &ztna_licensed))
        });
    }
    for (kind, measured) in
        [(LicenseKind::AiSecurityUsers, counts.ai_security_users), (LicenseKind::DemUsers, counts.dem_users)]
    {
        if has(kind) || measured > 0 {
            reports.push(MeterReport::plain(MeterMonth::simple(kind, measured, capacity(kind))));
        }
    }
    let devices = &counts.devices;
    if has(LicenseKind::Devices) || devices.total > 0 {
        let block = first(LicenseKind::Devices, |l| l.terms.block_size).unwrap_or(1);
        let meter = meters::devices(devices.total, capacity(LicenseKind::Devices), block);
        reports.push(MeterReport {
            by_source: devices.by_source.clone(),
            locally_administered: Some(devices.locally_administered),
            ..MeterReport::plain(meter)
        });
    }
    if has(LicenseKind::DataLake) || counts.data_lake_peak_hour > 0 {
        let meter = match first(LicenseKind::DataLake, |l| l.terms.per_unit) {
            Some(per_unit) => meters::data_lake(counts.data_lake_peak_hour, capacity(LicenseKind::DataLake), per_unit),
            // Without a license there is no unit to buy in: the excess is the whole rate.
            None => MeterMonth::simple(LicenseKind::DataLake, counts.data_lake_peak_hour, 0),
        };
        reports.push(MeterReport::plain(meter));
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::document::closes_at;

    #[test]
    fn a_month_is_open_until_its_calendar_month_ends_and_closes_after_both_it_and_its_window_plus_grace() {
        let november: Month = "2026-11".parse().unwrap();
        let december_1 = "2026-12-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        // R34: the article's window ended on the 30th at 00:00, but the calendar meters run all day.
        let window_end = november.window(MonthWindowSetting::Article).end_time();
        assert_eq!(window_end, "2026-11-30T00:00:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(MonthStatus::unsaved(november, window_end + chrono::TimeDelta::hours(9)), MonthStatus::Open);
        assert_eq!(MonthStatus::unsaved(november, december_1 - chrono::TimeDelta::seconds(1)), MonthStatus::Open);
        assert_eq!(MonthStatus::unsaved(november, december_1), MonthStatus::Provisional);
        for setting in [MonthWindowSetting::Article, MonthWindowSetting::Calendar] {
            assert_eq!(closes_at(november, setting, chrono::TimeDelta::zero()), december_1, "{setting:?}");
            let grace = chrono::TimeDelta::hours(72);
            assert_eq!(closes_at(november, setting, grace), december_1 + grace, "{setting:?}");
        }
    }
}
