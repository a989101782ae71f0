//! The usage engine: keeps each site's daily P95 (R5) current as buckets arrive, finalizes the
//! months that closed (R9, R34), and builds the usage report. The rules themselves live in
//! `tally_common` (p95, license, pool); this module stores, schedules and reports.
//!
//! Incremental: a merge marks the days it touched dirty in the same transaction as the buckets
//! (`dirty_days`); [`refresh`] recomputes only those site-days and clears each mark unless the
//! day changed again meanwhile. The [`Engine`] is the only writer of derived data (R35): `serve`
//! runs a pass every [`REFRESH_PERIOD`], so a burst of batches into one day costs one
//! recomputation (debounce), and `tally-collector engine --once` runs one. A report never
//! waits for it nor writes: it computes the dirty days of its snapshot in memory
//! ([`daily::current`]).

pub mod daily;
pub mod document;
pub mod early_warning;
pub mod events;
pub mod finalize;
pub mod finalized;
mod forecast;
pub mod import;
pub mod notify;
pub mod overusage;
pub mod report;
pub mod table;

pub use daily::refresh;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tally_common::time::{Month, MonthWindowSetting};

use crate::store::{Store, StoreError};
use document::closes_at;

/// How often the running collector recomputes the days that changed.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(2);

/// How often the running collector looks for months to finalize.
pub const FINALIZE_PERIOD: Duration = Duration::from_secs(60);

/// How often the running collector looks at the open months' forecasts (early warnings).
const WARNING_PERIOD: TimeDelta = TimeDelta::hours(1);

/// The longest wait before an account whose month failed to finalize is tried again.
const MAX_RETRY_DELAY: TimeDelta = TimeDelta::hours(1);

/// What one pass of the engine did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub days_recomputed: usize,
    pub months_finalized: usize,
    /// Accounts whose month could not be finalized in this pass (each is logged, counted and
    /// retried).
    pub finalization_failures: usize,
    pub notifications_delivered: usize,
    /// Pools whose forecast exceeds their license this month (when the pass looked).
    pub forecasts_over_license: usize,
    /// Steps that failed in the store (each is logged and tried again next pass).
    pub store_failures: usize,
}

/// The engine: recomputes changed days, finalizes the months that closed (R34), forgets old LAN
/// addresses (R29), warns of forecasts above a license and delivers the notifications due (R15).
#[derive(Debug)]
pub struct Engine<S> {
    store: Arc<S>,
    setting: MonthWindowSetting,
    grace: TimeDelta,
    lan_retention_months: u32,
    /// Where customers reach the console, for the links of notifications.
    console_url: Option<String>,
    transports: notify::Transports,
    retries: Retries,
    /// When the forecasts were last looked at.
    forecasts_checked: Option<DateTime<Utc>>,
}

impl<S: Store> Engine<S> {
    pub fn new(store: Arc<S>, config: &crate::config::Config, transports: notify::Transports) -> Self {
        Engine {
            store,
            setting: config.month_window,
            grace: config.grace,
            lan_retention_months: config.lan_device_retention_months,
            console_url: config.console_url.clone(),
            transports,
            retries: Retries::default(),
            forecasts_checked: None,
        }
    }

    /// While `serve` runs: a pass every [`REFRESH_PERIOD`], finalizing every [`FINALIZE_PERIOD`].
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut last_finalize: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(REFRESH_PERIOD) => {}
            }
            let finalize = last_finalize.is_none_or(|t| t.elapsed() >= FINALIZE_PERIOD);
            if finalize {
                last_finalize = Some(tokio::time::Instant::now());
            }
            self.pass(finalize).await;
        }
    }

    /// One pass; with `finalize`, it finalizes the months due and forgets old LAN addresses too.
    /// Every failure is logged here and tried again next pass.
    pub async fn pass(&mut self, finalize: bool) -> Pass {
        let store = &*self.store;
        let mut pass = Pass::default();
        match refresh(store).await {
            Ok(days) => pass.days_recomputed = days,
            Err(e) => {
                pass.store_failures += 1;
                tracing::error!(error = %e, "recomputing daily P95 failed; retrying");
            }
        }
        if pass.days_recomputed > 0 {
            tracing::debug!(days = pass.days_recomputed, "daily P95 recomputed");
        }
        if finalize {
            let now = crate::clock::now();
            match finalize_due(store, self.setting, self.grace, now, &mut self.retries).await {
                Ok((months, failures)) => (pass.months_finalized, pass.finalization_failures) = (months, failures),
                Err(e) => {
                    pass.store_failures += 1;
                    tracing::error!(error = %e, "listing the accounts to finalize failed; retrying");
                }
            }
            if let Err(e) = forget_lan_devices(store, self.lan_retention_months, now).await {
                pass.store_failures += 1;
                tracing::error!(error = %e, "deleting old LAN devices failed; retrying");
            }
            if self.forecasts_checked.is_none_or(|at| now - at >= WARNING_PERIOD) {
                let console_url = self.console_url.as_deref();
                match early_warning::check_and_notify(store, self.setting, console_url, now).await {
                    Ok(found) => {
                        tracing::debug!(over_license = found.len(), "the open months' forecasts checked");
                        pass.forecasts_over_license = found.len();
                        self.forecasts_checked = Some(now);
                    }
                    Err(e) => {
                        pass.store_failures += 1;
                        tracing::error!(error = %e, "checking the open months' forecasts failed; retrying");
                    }
                }
            }
        }
        match notify::deliver_due(store, &self.transports, crate::clock::now()).await {
            Ok(delivered) => pass.notifications_delivered = delivered,
            Err(e) => {
                pass.store_failures += 1;
                tracing::error!(error = %e, "reading the notification outbox failed; retrying");
            }
        }
        pass
    }
}

/// Deletes the hardware addresses of LAN devices (R29) seen before the last `months` calendar
/// months (this one included); the finalized months' reports keep their counts.
pub async fn forget_lan_devices<S: Store>(store: &S, months: u32, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let this_month = Month::containing(now.date_naive()).first_day();
    let kept_from = this_month.checked_sub_months(chrono::Months::new(months.saturating_sub(1))).unwrap_or(this_month);
    let forgotten = store.forget_lan_sightings_before(kept_from).await?;
    if forgotten > 0 {
        tracing::info!(forgotten, before = %kept_from, "LAN devices' addresses deleted (lan_device_retention_months)");
    }
    Ok(forgotten)
}

/// When each account whose finalization failed may be tried again: the delay doubles from
/// [`FINALIZE_PERIOD`] with each failure in a row, up to [`MAX_RETRY_DELAY`].
#[derive(Debug, Default)]
struct Retries(HashMap<String, (u32, DateTime<Utc>)>);

impl Retries {
    fn due(&self, account: &str, now: DateTime<Utc>) -> bool {
        self.0.get(account).is_none_or(|(_, next)| *next <= now)
    }

    /// Records a failure; returns the delay before the next try.
    fn failed(&mut self, account: &str, now: DateTime<Utc>) -> TimeDelta {
        let failures = self.0.get(account).map_or(0, |(n, _)| *n) + 1;
        let base = TimeDelta::from_std(FINALIZE_PERIOD).unwrap_or(TimeDelta::minutes(1));
        let delay = (base * 2_i32.saturating_pow(failures.min(16) - 1)).min(MAX_RETRY_DELAY);
        self.0.insert(account.to_owned(), (failures, now + delay));
        delay
    }

    fn succeeded(&mut self, account: &str) {
        self.0.remove(account);
    }
}

/// The latest month closed at `now` (R34): grace is at most 31 days, so it is at most two
/// months back.
fn last_closed_month(setting: MonthWindowSetting, grace: TimeDelta, now: DateTime<Utc>) -> Month {
    let mut month = Month::containing(now.date_naive());
    for _ in 0..3 {
        if closes_at(month, setting, grace) <= now {
            break;
        }
        month = month.previous();
    }
    month
}

/// Finalizes, for each account on its own, every month of its life closed at `now` and not
/// finalized yet, however old (R34). An account whose month fails is logged, counted and tried
/// again later with backoff; the others go on. Returns the months this call finalized and the
/// accounts that failed.
async fn finalize_due<S: Store>(
    store: &S,
    setting: MonthWindowSetting,
    grace: TimeDelta,
    now: DateTime<Utc>,
    retries: &mut Retries,
) -> Result<(usize, usize), StoreError> {
    let last = last_closed_month(setting, grace, now);
    let accounts = store.account_ids().await?;
    tracing::debug!(accounts = accounts.len(), through = %last, "months due for finalization checked");
    let (mut finalized, mut failures) = (0, 0);
    for account in &accounts {
        if !retries.due(account, now) {
            continue;
        }
        match finalize_account(store, account, setting, last, now).await {
            Ok(months) => {
                finalized += months;
                retries.succeeded(account);
            }
            Err((month, e)) => {
                failures += 1;
                crate::metrics::get().finalization_failures.inc();
                let retry_in = retries.failed(account, now);
                tracing::error!(
                    account, month = %month, error = %e, retry_in_s = retry_in.num_seconds(),
                    "finalizing a month failed; this account is tried again later, the others go on"
                );
            }
        }
    }
    Ok((finalized, failures))
}

/// Finalizes `account`'s months from the first of its life through `last`, oldest first; months
/// before it came to Tally (imported history) without notification. Stops at the first month
/// that fails, and says which.
async fn finalize_account<S: Store>(
    store: &S,
    account: &str,
    setting: MonthWindowSetting,
    last: Month,
    now: DateTime<Utc>,
) -> Result<usize, (Month, report::ReportError)> {
    let (life, saved) =
        tokio::try_join!(store.account_life(account), store.finalized_months(account)).map_err(|e| (last, e.into()))?;
    // An account deleted meanwhile has nothing left to finalize.
    let Some(life) = life else { return Ok(0) };
    let saved: HashSet<String> = saved.into_iter().collect();
    let mut finalized = 0;
    let mut month = Month::containing(life.since);
    while month <= last {
        if !saved.contains(&month.to_string()) {
            let notify = month.last_day() >= life.created;
            match finalize::month(store, account, month, setting, now, notify).await {
                Ok(true) => {
                    finalized += 1;
                    crate::metrics::get().months_finalized.inc();
                    tracing::info!(account, month = %month, notify, "month finalized");
                }
                Ok(false) => tracing::debug!(account, month = %month, "month finalized by another collector"),
                Err(e) => return Err((month, e)),
            }
        }
        month = month.next();
    }
    Ok(finalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn the_last_closed_month_follows_the_calendar_month_and_the_grace() {
        let article = MonthWindowSetting::Article;
        let month = |text: &str| text.parse::<Month>().unwrap();
        // R34: with no grace, October is closed at midnight on November 1st, not on the 31st.
        assert_eq!(last_closed_month(article, TimeDelta::zero(), at("2026-10-31T09:00:00Z")), month("2026-09"));
        assert_eq!(last_closed_month(article, TimeDelta::zero(), at("2026-11-01T00:00:00Z")), month("2026-10"));
        let grace = TimeDelta::hours(72);
        assert_eq!(last_closed_month(article, grace, at("2026-11-03T23:59:59Z")), month("2026-09"));
        assert_eq!(last_closed_month(article, grace, at("2026-11-04T00:00:00Z")), month("2026-10"));
        // The longest grace, 31 days: on January 1st November has just closed.
        let longest = TimeDelta::hours(744);
        assert_eq!(last_closed_month(article, longest, at("2027-01-01T00:00:00Z")), month("2026-11"));
        assert_eq!(last_closed_month(article, longest, at("2026-12-31T23:59:59Z")), month("2026-10"));
    }

    #[test]
    fn a_failing_account_waits_longer_after_each_failure_up_to_an_hour() {
        let mut retries = Retries::default();
        let now = at("2026-11-16T12:00:00Z");
        let delays: Vec<i64> = (0..8).map(|_| retries.failed("acme", now).num_seconds()).collect();
        assert_eq!(delays, [60, 120, 240, 480, 960, 1_920, 3_600, 3_600]);
        assert!(!retries.due("acme", now + TimeDelta::seconds(3_599)));
        assert!(retries.due("acme", now + TimeDelta::seconds(3_600)));
        assert!(retries.due("zeta", now), "the others are not held back");
        retries.succeeded("acme");
        assert!(retries.due("acme", now));
    }
}
