//! Early warnings: while a month is open, the bandwidth pool's forecast says where its P95 is
//! heading. The first time a region group's forecast exceeds its license in a month, the
//! account's recipients are told, once per month and group, through the outbox (R15's, as
//! month-end notifications), with the figures and a link to the usage page. The usage page shows
//! the same forecast.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::json;
use tally_common::bandwidth::Bandwidth;
use tally_common::region::RegionGroup;
use tally_common::time::{Month, MonthWindowSetting};

use super::report::{self, ReportError};
use crate::store::{Notification, Store, StoreError};

/// A pool whose forecast exceeds its license this month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub account: String,
    pub month: Month,
    pub region_group: RegionGroup,
    pub so_far_bps: u64,
    pub projected_bps: u64,
    pub licensed_bps: u64,
    /// Recipients newly told (0 when they were told before).
    pub notified: u64,
}

/// The outbox topic: one warning per account, month and group, however often it is checked.
fn topic(month: Month, group: RegionGroup) -> String {
    format!("forecast {month} bandwidth_pool {group}")
}

/// The warning's e-mail and webhook document.
fn notification(w: &Warning, usage_url: &str) -> Notification {
    let subject =
        format!("Tally: {}'s bandwidth pool in {} is heading above its license this month", w.account, w.region_group);
    let mut text = format!(
        "The bandwidth pool of account {} in region group {} is forecast to end {} at a monthly P95 of {}, above \
         the {} licensed.\n\n",
        w.account,
        w.region_group,
        w.month,
        Bandwidth(w.projected_bps),
        Bandwidth(w.licensed_bps)
    );
    let _ = writeln!(text, "- monthly P95 over the complete days so far: {}", Bandwidth(w.so_far_bps));
    let _ = writeln!(text, "- forecast for the month: {}", Bandwidth(w.projected_bps));
    let _ = writeln!(text, "- licensed: {}", Bandwidth(w.licensed_bps));
    let _ = writeln!(
        text,
        "\nNothing is billed yet: the month is measured until it ends. To stay within the license, order more \
         bandwidth or reduce traffic. The usage page: {usage_url}"
    );
    let json = json!({"event": "forecast_exceeds_license", "account": w.account, "month": w.month,
        "license": "bandwidth_pool", "region_group": w.region_group, "monthly_p95_so_far_bps": w.so_far_bps,
        "projected_monthly_p95_bps": w.projected_bps, "licensed_bps": w.licensed_bps, "usage_url": usage_url});
    Notification { subject, text, json: json.to_string() }
}

/// Looks at every account's current month and tells each pool's first forecast above its license
/// (once per month and group); `console_url` makes the link absolute. Returns every pool whose
/// forecast exceeds its license now.
pub async fn check_and_notify<S: Store>(
    store: &S,
    setting: MonthWindowSetting,
    console_url: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<Warning>, StoreError> {
    let month = Month::containing(now.date_naive());
    let mut found = Vec::new();
    for account in store.account_ids().await? {
        let report = match report::build(store, &account, month, setting, now).await {
            Ok(report) => report,
            // An account whose life begins later, or that is gone since it was listed.
            Err(ReportError::BeforeAccountLife { .. } | ReportError::UnknownAccount(_)) => continue,
            Err(ReportError::Store(e)) => return Err(e),
        };
        for pool in &report.bandwidth_pool {
            let Some(forecast) = pool.forecast.as_ref().filter(|f| f.exceeds_license) else { continue };
            let mut warning = Warning {
                account: account.clone(),
                month,
                region_group: pool.region_group,
                so_far_bps: forecast.monthly_p95_so_far_bps,
                projected_bps: forecast.projected_monthly_p95_bps,
                licensed_bps: pool.licensed_bps,
                notified: 0,
            };
            let usage_url =
                format!("{}/accounts/{account}/usage?month={month}", console_url.unwrap_or("").trim_end_matches('/'));
            let said = notification(&warning, &usage_url);
            warning.notified = store.notify_once(&account, &topic(month, pool.region_group), &said, now).await?;
            if warning.notified > 0 {
                tracing::info!(
                    account = %account, %month, group = %pool.region_group, projected = %Bandwidth(warning.projected_bps),
                    licensed = %Bandwidth(warning.licensed_bps), recipients = warning.notified,
                    "the bandwidth pool's forecast exceeds its license: the account is told"
                );
            }
            found.push(warning);
        }
    }
    Ok(found)
}
