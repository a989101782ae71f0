//! The stand-alone pools' future (R17): R17 is checked against the pool in force on the day of a
//! change, so a China, Vietnam or Morocco bandwidth pool that ends (or shrinks) while capped
//! sites remain breaks it later, on a day nobody changed anything. This finds, for every account
//! and stand-alone group, the first day of the next N whose pool the caps exceed; `serve` logs
//! them at WARN once a day and tells each account 14 days and 1 day before (R15's outbox, once
//! each).

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tally_common::bandwidth::Bandwidth;
use tally_common::enforcement::CapViolation;
use tally_common::region::RegionGroup;

use crate::store::{Notification, Store, StoreError, cap_violations};

/// How far ahead `enforcement check` looks by default, in days.
pub const DEFAULT_DAYS: u32 = 30;
/// The longest look-ahead asked for, in days.
pub const MAX_DAYS: u32 = 3_660;
/// Before the day a pool breaks, the account is told this many days ahead (each once).
pub const NOTICE_DAYS: [i64; 2] = [14, 1];
/// How often `serve` looks.
pub const CHECK_PERIOD: Duration = Duration::from_secs(86_400);

/// A stand-alone group whose site caps will exceed its pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PoolAtRisk {
    pub account: String,
    pub region_group: RegionGroup,
    /// The first day the caps exceed the pool in force.
    pub day: NaiveDate,
    pub caps: Vec<SiteCap>,
    pub sum_bps: u64,
    /// The pool in force that day.
    pub licensed_bps: u64,
    /// The same, in words.
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SiteCap {
    pub site: String,
    pub cap_bps: u64,
}

/// Every account's stand-alone groups whose caps exceed the pool on a day of `from ..= from +
/// days`, each at its first such day; by account and group.
pub async fn pools_at_risk(store: &impl Store, from: NaiveDate, days: u32) -> Result<Vec<PoolAtRisk>, StoreError> {
    let mut found = Vec::new();
    for account in store.account_ids().await? {
        let sites = store.sites_of_account(&account).await?;
        if !sites.iter().any(|s| s.region_group.is_stand_alone() && s.cap_bps.is_some()) {
            continue;
        }
        let licenses = store.licenses_of_account(&account).await?;
        let mut groups: Vec<PoolAtRisk> = Vec::new();
        for day in from.iter_days().take(days as usize + 1) {
            for violation in cap_violations(&sites, &licenses, day)? {
                let CapViolation::OverPool { region_group, caps, sum_bps, licensed_bps, day } = &violation else {
                    continue;
                };
                if groups.iter().any(|g| g.region_group == *region_group) {
                    continue;
                }
                groups.push(PoolAtRisk {
                    account: account.clone(),
                    region_group: *region_group,
                    day: *day,
                    caps: caps.iter().map(|(site, cap)| SiteCap { site: site.clone(), cap_bps: *cap }).collect(),
                    sum_bps: *sum_bps,
                    licensed_bps: *licensed_bps,
                    message: violation.to_string(),
                });
            }
        }
        groups.sort_by_key(|g| g.region_group);
        found.extend(groups);
    }
    Ok(found)
}

/// The list for people.
pub fn table(found: &[PoolAtRisk]) -> String {
    if found.is_empty() {
        return "no stand-alone pool falls below its sites' caps\n".into();
    }
    found.iter().map(|f| format!("{} {} from {}: {}\n", f.account, f.region_group, f.day, f.message)).collect()
}

/// The day's check of `serve`: logs what is at risk at WARN, and writes each account's notices
/// due by `now` (14 days and 1 day before the day it breaks) to the outbox, once each.
pub async fn check_and_notify(store: &impl Store, now: DateTime<Utc>) -> Result<Vec<PoolAtRisk>, StoreError> {
    let today = now.date_naive();
    let found = pools_at_risk(store, today, NOTICE_DAYS[0] as u32).await?;
    for risk in &found {
        tracing::warn!(account = %risk.account, group = %risk.region_group, day = %risk.day, "{}", risk.message);
        let left = (risk.day - today).num_days();
        for notice in NOTICE_DAYS.into_iter().filter(|n| left <= *n) {
            let days = if notice == 1 { "day" } else { "days" };
            let topic = format!("pool {} {} ({notice} {days} before)", risk.region_group, risk.day);
            let text = format!(
                "From {} the {} bandwidth pool of account {} no longer covers its sites' caps: {}.\n\
                 Renew or extend the pool, or lower the caps, before that day.\n",
                risk.day, risk.region_group, risk.account, risk.message
            );
            let json = serde_json::to_string(&serde_json::json!({"type": "pool_at_risk", "pool": risk}))
                .map_err(|e| StoreError::Database(e.to_string()))?;
            let subject = format!(
                "{}: the {} pool falls below its caps on {} ({})",
                risk.account,
                risk.region_group,
                risk.day,
                Bandwidth(risk.licensed_bps)
            );
            store.notify_once(&risk.account, &topic, &Notification { subject, text, json }, now).await?;
        }
    }
    Ok(found)
}

/// `serve`'s daily check: one at start (finished even when the collector is stopped at once),
/// then once a day until `shutdown`.
pub async fn watch<S: Store>(store: std::sync::Arc<S>, shutdown: impl std::future::Future<Output = ()>) {
    let mut every_day = tokio::time::interval_at(tokio::time::Instant::now() + CHECK_PERIOD, CHECK_PERIOD);
    tokio::pin!(shutdown);
    loop {
        match check_and_notify(&*store, crate::clock::now()).await {
            Ok(found) => tracing::debug!(at_risk = found.len(), "stand-alone pools checked"),
            Err(e) => tracing::error!(error = %e, "checking the stand-alone pools failed"),
        }
        tokio::select! {
            () = &mut shutdown => return,
            _ = every_day.tick() => {}
        }
    }
}
