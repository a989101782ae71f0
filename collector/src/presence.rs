//! Which sites' agents are connected, and when each was last: kept in memory by the ingest and
//! written to the store every [`FLUSH_PERIOD`] in one transaction (a write per connection would
//! queue behind the group commit just when a fleet reconnects). Once an hour, while any site is
//! silent (no bucket for `silent_after`), `serve` says how many at WARN ([`crate::intake`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::store::Store;

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
            _ = silence.tick() => match crate::intake::silent_sites(&*store, None, silent_after, crate::clock::now()).await {
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
