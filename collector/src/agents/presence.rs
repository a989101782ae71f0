//! Which sites' agents are connected, and when each was last: kept in memory by the ingest and
//! written to the store every [`FLUSH_PERIOD`] in one transaction (a write per connection would
//! queue behind the group commit just when a fleet reconnects).
//!
//! And the sites that went silent ([`silent_sites`]): a missing bucket counts as 0 (R5), so a
//! socket that stopped reporting is traffic never billed unless someone is told. Once an hour,
//! while any site is silent (no bucket for `silent_after`), `serve` says how many at WARN.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tally_common::time::rfc3339;

use crate::store::{SiteActivity, Store, StoreError};

/// How often the connection times are written.
pub const FLUSH_PERIOD: Duration = Duration::from_secs(30);
/// How often silent sites are counted in the log.
pub const SILENCE_LOG_PERIOD: Duration = Duration::from_secs(3_600);

/// The sites with an agent connected here, or connected since the last flush.
#[derive(Debug, Default)]
pub struct Presence {
    sites: Mutex<HashMap<String, Seen>>,
}

#[derive(Debug)]
struct Seen {
    /// Connections of the site open now.
    live: usize,
    /// When the last one closed (or opened).
    at: DateTime<Utc>,
}

/// A connection of a site's agent, from its welcome to its end.
#[derive(Debug)]
pub struct Present {
    presence: Arc<Presence>,
    site: String,
}

impl Presence {
    /// Records that `site`'s agent connected; it is present until the guard drops.
    pub fn enter(self: &Arc<Self>, site: &str) -> Present {
        let mut sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = sites.entry(site.to_owned()).or_insert(Seen { live: 0, at: crate::clock::now() });
        seen.live += 1;
        Present { presence: self.clone(), site: site.to_owned() }
    }

    /// What to write at `now`: every site connected now, at `now`; every site that left since the
    /// last call, at the moment it left (and then forgotten).
    pub fn take(&self, now: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
        let mut sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = sites.iter().map(|(site, s)| (site.clone(), if s.live > 0 { now } else { s.at })).collect();
        sites.retain(|_, s| s.live > 0);
        seen
    }
}

impl Drop for Present {
    fn drop(&mut self) {
        let mut sites = self.presence.sites.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(seen) = sites.get_mut(&self.site) {
            seen.live = seen.live.saturating_sub(1);
            seen.at = crate::clock::now();
        }
    }
}

/// Writes the connection times every [`FLUSH_PERIOD`] and counts the silent sites every
/// [`SILENCE_LOG_PERIOD`], until `shutdown`; writes once more at the end.
pub async fn keep<S: Store>(
    store: Arc<S>,
    presence: Arc<Presence>,
    silent_after: TimeDelta,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut flush = tokio::time::interval(FLUSH_PERIOD);
    let mut silence = tokio::time::interval(SILENCE_LOG_PERIOD);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = flush.tick() => write(&*store, &presence).await,
            _ = silence.tick() => match silent_sites(&*store, None, silent_after, crate::clock::now()).await {
                Ok(silent) if !silent.is_empty() => tracing::warn!(
                    sites = silent.len(),
                    silent_hours = silent_after.num_hours(),
                    "sites without a bucket for that long: their traffic is not billed (`site list --silent`)"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "counting the silent sites failed"),
            },
        }
    }
    write(&*store, &presence).await;
}

async fn write<S: Store>(store: &S, presence: &Presence) {
    let seen = presence.take(crate::clock::now());
    if !seen.is_empty()
        && let Err(e) = store.record_presence(&seen).await
    {
        tracing::warn!(error = %e, sites = seen.len(), "the agents' connection times were not stored");
    }
}

/// A site whose latest bucket is older than asked (`site list --silent`, `GET /v1/sites?silent=`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SiteActivityView {
    pub site: String,
    pub account: String,
    /// The start of its latest bucket; `null` before the first.
    pub last_bucket: Option<String>,
    /// When its agent was last connected to a collector; `null` if never.
    pub last_connected: Option<String>,
}

impl From<&SiteActivity> for SiteActivityView {
    fn from(a: &SiteActivity) -> Self {
        SiteActivityView {
            site: a.site.clone(),
            account: a.account.clone(),
            last_bucket: a.last_bucket.map(|b| b.to_string()),
            last_connected: a.last_connected.map(rfc3339),
        }
    }
}

/// The sites (of `account`, or of all) without a bucket that starts within `silent_for` of `now`
/// (counting a bucket's end: the open one is not sent yet), never-reporting ones added before then
/// included.
pub async fn silent_sites(
    store: &impl Store,
    account: Option<&str>,
    silent_for: TimeDelta,
    now: DateTime<Utc>,
) -> Result<Vec<SiteActivity>, StoreError> {
    let since = now.checked_sub_signed(silent_for).unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut sites = store.site_activity(account).await?;
    // A site that never reported is silent only once it was expected to have reported.
    sites.retain(|s| s.last_bucket.map_or(s.added_at < since, |b| b.end() < since));
    Ok(sites)
}

/// `2h`, `30m`, `1d`, `90s`: a positive whole number and a unit (the API documents at most six
/// digits).
pub fn duration(text: &str) -> Result<TimeDelta, String> {
    let bad = || format!("{text:?} is not a duration such as 30m, 2h or 1d");
    let unit = text.chars().last().ok_or_else(bad)?;
    let n: i64 = text[..text.len() - unit.len_utf8()].parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
    let seconds = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3_600),
        'd' => n.checked_mul(86_400),
        _ => None,
    };
    seconds.and_then(TimeDelta::try_seconds).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_a_number_and_a_unit() {
        assert_eq!(duration("2h"), Ok(TimeDelta::hours(2)));
        assert_eq!(duration("30m"), Ok(TimeDelta::minutes(30)));
        assert_eq!(duration("1d"), Ok(TimeDelta::days(1)));
        assert_eq!(duration("90s"), Ok(TimeDelta::seconds(90)));
        for bad in ["", "h", "2", "-2h", "0h", "2w", "1.5h", "99999999999999999d", "é"] {
            assert!(duration(bad).unwrap_err().contains("not a duration"), "{bad}");
        }
    }
}
