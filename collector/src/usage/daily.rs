//! Each site's daily P95 (R5) kept current: a merge marks the (site, day) it touched dirty in
//! the same transaction as the buckets; [`refresh`] recomputes only those site-days with
//! `tally_common::p95` and clears each mark unless the day changed again meanwhile. Each batch is
//! claimed first, so collectors sharing a store recompute different days (R30). A reader never
//! waits for it: [`current`] computes the dirty days of its snapshot in memory (R35).

use std::collections::HashSet;

use chrono::{NaiveDate, TimeDelta};
use tally_common::p95::{DailyP95, daily_site_p95};

use crate::store::{DirtyDay, KeyRange, SiteDay, SiteDays, Store, StoreError};

/// Site-days recomputed per store transaction.
const REFRESH_BATCH: usize = 5_000;
/// How long a claimed batch is this collector's alone (R30): it computes and saves a batch in
/// well under a second; another collector takes it after this only if this one died.
const CLAIM_LEASE: TimeDelta = TimeDelta::minutes(5);

/// Recomputes every dirty site-day; returns how many were computed. The dirty days are split in
/// two halves recomputed side by side (both cores), until none is left: a day dirtied again
/// meanwhile is computed once more.
pub async fn refresh<S: Store>(store: &S) -> Result<usize, StoreError> {
    let (mut total, started) = (0, std::time::Instant::now());
    while let Some(middle) = store.dirty_days_midpoint(crate::clock::now()).await? {
        let first = KeyRange { after: None, through: Some(middle.clone()) };
        let second = KeyRange { after: Some(middle), through: None };
        let (a, b) = tokio::try_join!(refresh_range(store, first), refresh_range(store, second))?;
        total += a + b;
    }
    if total > 0 {
        let metrics = crate::metrics::get();
        metrics.site_days_recomputed.inc_by(total as u64);
        metrics.recompute_seconds.observe(started.elapsed().as_secs_f64());
    }
    Ok(total)
}

/// An account's days as they stand in `snapshot` (R35): the computed ones, each dirty one
/// computed in memory from its buckets by the same rule as [`refresh`]; and how many were.
pub fn current(snapshot: SiteDays) -> (Vec<SiteDay>, usize) {
    let fresh: Vec<SiteDay> = snapshot
        .dirty
        .into_iter()
        .map(|(dirty, buckets)| SiteDay { p95: daily_site_p95(dirty.day, buckets), site: dirty.site, day: dirty.day })
        .collect();
    let recomputed: HashSet<(&str, NaiveDate)> = fresh.iter().map(|d| (d.site.as_str(), d.day)).collect();
    let mut days: Vec<SiteDay> =
        snapshot.computed.into_iter().filter(|d| !recomputed.contains(&(d.site.as_str(), d.day))).collect();
    let in_memory = fresh.len();
    days.extend(fresh);
    days.sort_by(|a, b| (&a.site, a.day).cmp(&(&b.site, b.day)));
    (days, in_memory)
}

/// One pass over the dirty days of `range` in key order, reading each batch while the previous
/// one is saved.
async fn refresh_range<S: Store>(store: &S, mut range: KeyRange) -> Result<usize, StoreError> {
    let mut total = 0;
    let mut computed: Vec<(DirtyDay, DailyP95)> = Vec::new();
    loop {
        let save = async {
            match computed.is_empty() {
                true => Ok(()),
                false => store.save_site_days(&computed).await,
            }
        };
        let claim = store.claim_dirty_days(&range, REFRESH_BATCH, crate::clock::now(), CLAIM_LEASE);
        let (dirty, ()) = tokio::try_join!(claim, save)?;
        let Some((last, _)) = dirty.last() else { return Ok(total) };
        range.after = Some((last.site.clone(), last.day));
        computed = dirty
            .into_iter()
            .map(|(dirty, buckets)| {
                let p95 = daily_site_p95(dirty.day, buckets);
                (dirty, p95)
            })
            .collect();
        total += computed.len();
    }
}
