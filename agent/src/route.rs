//! The collectors this agent may use (R30), and the one it uses: in an order of the agent's own
//! (the same at every start, different from other agents', so a fleet spreads over its
//! collectors), sticking to the one that works and moving to the next when it fails. A name
//! resolving to several addresses is one entry: each attempt on it takes the next address.

/// The agent's collectors and where it stands among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    site: String,
    /// `HOST:PORT`, in this agent's order; never empty.
    addresses: Vec<String>,
    current: usize,
    /// Attempts that failed, to spread retries over a name's addresses.
    failures: usize,
}

impl Route {
    /// The route of `site`'s agent over `addresses` (at least one).
    pub fn new(site: &str, addresses: Vec<String>) -> Route {
        let mut route = Route { site: site.to_owned(), addresses: Vec::new(), current: 0, failures: 0 };
        route.addresses = route.ordered(addresses);
        route
    }

    /// The collector to connect to now.
    pub fn current(&self) -> &str {
        &self.addresses[self.current]
    }

    /// Which of the current name's resolved addresses to try.
    pub fn attempt(&self) -> usize {
        self.failures
    }

    /// Every collector, in this agent's order.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The current collector failed: the next one is tried.
    pub fn failed(&mut self) {
        self.failures = self.failures.wrapping_add(1);
        self.current = (self.current + 1) % self.addresses.len();
    }

    /// A new list from a collector: stays on the current collector if it is listed. Returns
    /// whether the list changed (an empty list changes nothing).
    pub fn update(&mut self, addresses: Vec<String>) -> bool {
        let ordered = self.ordered(addresses);
        if ordered.is_empty() || ordered == self.addresses {
            return false;
        }
        let current = self.current().to_owned();
        self.current = ordered.iter().position(|a| *a == current).unwrap_or(0);
        self.addresses = ordered;
        true
    }

    /// `addresses` without repeats, ordered by a hash of this site and each address.
    fn ordered(&self, mut addresses: Vec<String>) -> Vec<String> {
        let rank = |address: &String| {
            ring::digest::digest(&ring::digest::SHA256, format!("{}\n{address}", self.site).as_bytes())
        };
        addresses.sort_by_cached_key(|a| rank(a).as_ref().to_vec());
        addresses.dedup();
        addresses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn each_agent_has_its_own_order_and_fails_over_along_it() {
        let collectors = list(&["c1:4433", "c2:4433", "c3:4433"]);
        let firsts: std::collections::BTreeSet<String> =
            (0..40).map(|n| Route::new(&format!("site-{n}"), collectors.clone()).current().to_owned()).collect();
        assert_eq!(firsts.len(), 3, "forty agents start on every collector");
        let mut route = Route::new("hq", collectors.clone());
        assert_eq!(route, Route::new("hq", collectors.iter().rev().cloned().collect()), "the same at every start");
        let order = route.addresses().to_vec();
        let mut tried = Vec::new();
        for _ in 0..4 {
            tried.push(route.current().to_owned());
            route.failed();
        }
        assert_eq!(tried, [&order[..], &order[..1]].concat(), "each in turn, then round again");
    }

    #[test]
    fn a_new_list_keeps_the_collector_in_use() {
        let mut route = Route::new("hq", list(&["c1:4433"]));
        assert!(!route.update(list(&["c1:4433", "c1:4433"])), "the same list");
        assert!(!route.update(Vec::new()), "an empty list changes nothing");
        assert!(route.update(list(&["c2:4433", "c1:4433", "c3:4433"])));
        assert_eq!(route.current(), "c1:4433", "still on the collector that works");
        assert_eq!(route.addresses().len(), 3);
        assert!(route.update(list(&["c2:4433"])));
        assert_eq!(route.current(), "c2:4433", "the one in use left the fleet");
    }
}
