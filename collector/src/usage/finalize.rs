//! A month finalized (R9): computed once more, its over-usage evaluated (R14), and both saved with
//! the notification (R15) in one transaction; with several collectors on one store, one saves it
//! (R30).

use chrono::{DateTime, Utc};
use tally_common::time::{Month, MonthWindowSetting};

use super::document::MonthStatus;
use super::report::{ReportError, check_account_life, compute};
use super::{finalized, notify, overusage};
use crate::store::Store;

/// Finalizes `account`'s `month` (R9): computes it, evaluates its over-usage (R14), and saves
/// both with its notification (R15) unless `notify` is false (a month before the account came
/// to Tally, R34). Only the engine calls this. Returns whether this call saved the month: with
/// several collectors on one store, only one does (R30).
pub async fn month<S: Store>(
    store: &S,
    account: &str,
    month: Month,
    setting: MonthWindowSetting,
    now: DateTime<Utc>,
    notify: bool,
) -> Result<bool, ReportError> {
    check_account_life(store, account, month).await?;
    let report = compute(store, account, month, setting, MonthStatus::Finalized, now).await?;
    let json = finalized::document(&report)?;
    let found = overusage::evaluate(&report, &store.licenses_of_account(account).await?);
    let notification = notify.then(|| notify::notification(&report, &found)).flatten();
    let key = month.to_string();
    Ok(store.finalize_month(account, &key, now, &json, &found, notification.as_ref()).await?)
}
