//! The usage engine: keeps each site's daily P95 (R5) current as buckets arrive, and builds the
//! usage report from it. The rules themselves live in `tally_common` (p95, license, pool); this
//! module stores, schedules and reports.
//!
//! Incremental: a merge marks the days it touched dirty in the same transaction as the buckets
//! (`dirty_days`); [`refresh`] recomputes only those site-days and clears each mark unless the
//! day changed again meanwhile. [`run_engine`] calls it every [`REFRESH_PERIOD`] while `serve`
//! runs, so a burst of batches into one day costs one recomputation (debounce); a report
//! settles its account's days first ([`daily::settle`]), so it is never stale, with or without
//! `serve`, even while another refresh holds some of them. The same task finalizes months whose
//! grace period ended (R9): their report is saved and never changes again.

pub mod daily;
pub mod document;
pub mod events;
pub mod notify;
pub mod overusage;
pub mod report;

pub use daily::refresh;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tally_common::time::{Month, MonthWindowSetting};

use crate::store::{Store, StoreError};
use document::MonthStatus;

/// How often the running collector recomputes the days that changed.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(2);

/// While `serve` runs: recomputes changed days every [`REFRESH_PERIOD`], every
/// [`FINALIZE_PERIOD`] finalizes the months whose grace period has ended (R9), and sends the
/// notifications that are due (R15).
pub async fn run_engine<S: Store>(
    store: std::sync::Arc<S>,
    setting: MonthWindowSetting,
    grace: TimeDelta,
    lan_retention_months: u32,
    transports: notify::Transports,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut last_finalize: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(REFRESH_PERIOD) => {}
        }
        match refresh(&*store).await {
            Ok(0) => {}
            Ok(days) => tracing::debug!(days, "daily P95 recomputed"),
            Err(e) => tracing::error!(error = %e, "recomputing daily P95 failed; retrying"),
        }
        if last_finalize.is_none_or(|t| t.elapsed() >= FINALIZE_PERIOD) {
            last_finalize = Some(tokio::time::Instant::now());
            if let Err(e) = finalize_due(&*store, setting, grace, crate::clock::now()).await {
                tracing::error!(error = %e, "finalizing months failed; retrying");
            }
            if let Err(e) = forget_lan_devices(&*store, lan_retention_months, crate::clock::now()).await {
                tracing::error!(error = %e, "deleting old LAN devices failed; retrying");
            }
        }
        if let Err(e) = notify::deliver_due(&*store, &transports, crate::clock::now()).await {
            tracing::error!(error = %e, "reading the notification outbox failed; retrying");
        }
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

/// How often the running collector looks for months to finalize.
pub const FINALIZE_PERIOD: Duration = Duration::from_secs(60);

/// Finalizes, for every account, the last two months if their grace period has ended and they
/// are not finalized yet (a collector down for longer finalizes older months when asked for
/// their report).
pub async fn finalize_due<S: Store>(
    store: &S,
    setting: MonthWindowSetting,
    grace: TimeDelta,
    now: DateTime<Utc>,
) -> Result<(), report::ReportError> {
    let this_month = Month::containing(now.date_naive());
    let previous = Month::containing(this_month.first_day().pred_opt().unwrap_or(this_month.first_day()));
    let before = Month::containing(previous.first_day().pred_opt().unwrap_or(previous.first_day()));
    let accounts = store.account_ids().await?;
    tracing::debug!(accounts = accounts.len(), months = %format!("{before} {previous}"), "months due for finalization checked");
    for account in accounts {
        for month in [before, previous] {
            let due = MonthStatus::of(month.window(setting), grace, now) == MonthStatus::Finalized;
            if due && store.finalized_report(&account, &month.to_string()).await?.is_none() {
                match report::build(store, &account, month, setting, grace, now).await {
                    Ok(_) => {
                        crate::metrics::get().months_finalized.inc();
                    }
                    // R28: a month before the account's life is never finalized nor notified.
                    Err(report::ReportError::BeforeAccountLife { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}
