//! The policy push (R17): each connected agent hears of its site's cap at connect and within
//! seconds of a change.
//!
//! Caps change in the store, from `serve`'s HTTP API or from an admin command in another
//! process or another collector (R30), and every change takes a new policy version from one
//! sequence over all sites. So [`watch`] polls the store each [`POLL`] for versions above those
//! it has surely seen (an index lookup), and [`Board::publish`]es them; each connection
//! [`Board::subscribe`]s to its site's policy.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::{SitePolicy, Store};

/// How often the store is asked for changed policies: well within the 5 s the push may take.
pub const POLL: Duration = Duration::from_secs(1);

/// The policies of the sites that have a connected agent.
#[derive(Debug, Default)]
pub struct Board {
    sites: Mutex<HashMap<String, watch::Sender<Option<SitePolicy>>>>,
}

/// A connection's view of its site's policy; leaves the board when the last one is dropped.
#[derive(Debug)]
pub struct Subscription {
    board: Arc<Board>,
    site: String,
    pub changes: watch::Receiver<Option<SitePolicy>>,
}

impl Board {
    fn sites(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Option<SitePolicy>>>> {
        // A panic while holding the lock cannot leave the map inconsistent: recover it.
        self.sites.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes to `site`'s policy from now on.
    pub fn subscribe(self: &Arc<Self>, site: &str) -> Subscription {
        let changes = self.sites().entry(site.to_owned()).or_insert_with(|| watch::channel(None).0).subscribe();
        Subscription { board: self.clone(), site: site.to_owned(), changes }
    }

    /// Tells the site's connections, if any, unless they already know this version or a later one.
    pub fn publish(&self, policy: SitePolicy) {
        if let Some(sender) = self.sites().get(&policy.site) {
            sender.send_if_modified(|known| {
                let newer = known.as_ref().is_none_or(|k| k.version < policy.version);
                if newer {
                    *known = Some(policy);
                }
                newer
            });
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut sites = self.board.sites();
        // Our receiver is still alive here: it is the last one when the count is 1.
        if sites.get(&self.site).is_some_and(|s| s.receiver_count() <= 1) {
            sites.remove(&self.site);
        }
    }
}

/// How far back each look reads again. Versions come from one sequence, but transactions on
/// several collectors (R30) may commit them out of order: a version committed just after a
/// higher one was seen is still found. A change commits within milliseconds of taking its
/// version, so everything taken this long before a look has committed.
const LOOKBACK: Duration = Duration::from_secs(10);

/// The highest version seen at each look, oldest first.
#[derive(Debug, Default)]
struct Looks(VecDeque<(Instant, u64)>);

impl Looks {
    /// The highest version seen at least [`LOOKBACK`] before `now`: every version up to it has
    /// committed (0 until a look is that old).
    fn settled(&mut self, now: Instant) -> u64 {
        let old = |look: &(Instant, u64)| now.duration_since(look.0) >= LOOKBACK;
        while self.0.get(1).is_some_and(old) {
            self.0.pop_front();
        }
        self.0.front().filter(|look| old(look)).map_or(0, |(_, version)| *version)
    }

    fn record(&mut self, now: Instant, seen: u64) {
        self.0.push_back((now, seen));
    }
}

/// Publishes every policy change until `shutdown`.
pub async fn watch<S: Store>(store: Arc<S>, board: Arc<Board>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let (mut seen, mut first) = (0, true);
    let mut looks = Looks::default();
    let mut failing = false;
    loop {
        match store.policies_since(looks.settled(Instant::now())).await {
            Ok(changed) => {
                failing = false;
                let before = seen;
                seen = changed.iter().map(|p| p.version).max().unwrap_or(seen).max(seen);
                // The first look publishes every policy too (quietly): a connection that read
                // its own just before a change still hears of it. Versions it has are not news.
                for policy in changed {
                    if !first && policy.version > before {
                        tracing::info!(site = %policy.site, version = policy.version, cap_bps = policy.cap_bps, "policy changed");
                    }
                    board.publish(policy);
                }
                looks.record(Instant::now(), seen);
                first = false;
            }
            Err(e) if !failing => {
                failing = true;
                tracing::error!(error = %e, "cannot read policy changes: pushes wait until the store answers");
            }
            Err(_) => {}
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R30: each look reads from the version seen LOOKBACK ago, so a version taken before a
    /// higher one but committed after it is still read.
    #[test]
    fn looks_read_again_what_may_have_committed_late() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut looks = Looks::default();
        assert_eq!(looks.settled(at(0)), 0);
        looks.record(at(0), 10);
        looks.record(at(1), 12);
        assert_eq!(looks.settled(at(9)), 0, "nothing is settled yet: read everything");
        assert_eq!(looks.settled(at(10)), 10);
        looks.record(at(10), 15);
        assert_eq!(looks.settled(at(11)), 12);
        assert_eq!(looks.settled(at(25)), 15);
        assert_eq!(looks.0.len(), 1, "older looks are forgotten");
    }

    fn policy(site: &str, version: u64, cap_bps: Option<u64>) -> SitePolicy {
        SitePolicy { site: site.into(), version, cap_bps }
    }

    #[test]
    fn a_subscriber_sees_newer_versions_only() {
        let board = Arc::new(Board::default());
        let mut hq = board.subscribe("hq");
        board.publish(policy("hq", 3, Some(20_000_000)));
        assert!(hq.changes.has_changed().unwrap());
        assert_eq!(hq.changes.borrow_and_update().clone(), Some(policy("hq", 3, Some(20_000_000))));
        board.publish(policy("hq", 2, None));
        board.publish(policy("branch", 4, None));
        assert!(!hq.changes.has_changed().unwrap(), "an older version and another site's change are not news");
    }

    #[test]
    fn a_site_leaves_the_board_with_its_last_connection() {
        let board = Arc::new(Board::default());
        let first = board.subscribe("hq");
        let second = board.subscribe("hq");
        drop(first);
        assert!(board.sites().contains_key("hq"));
        drop(second);
        assert!(board.sites().is_empty());
    }
}
