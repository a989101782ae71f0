//! Logging what may repeat many times a second (refused connections, a failing disk) at most
//! once per interval, with how often it happened; and slowing down clients that keep presenting
//! wrong tokens.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts events; [`Throttle::hit`] says when one should be logged.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    /// Events since the last logged one, and when that was.
    state: Mutex<(u64, Option<Instant>)>,
}

impl Throttle {
    pub const fn new(every: Duration) -> Throttle {
        Throttle { every, state: Mutex::new((0, None)) }
    }

    /// Counts an event; `Some(n)` when it is to be logged, `n` being the events since the last
    /// logged one (this one included).
    pub fn hit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.0 += 1;
        let now = Instant::now();
        if state.1.is_some_and(|at| now - at < self.every) {
            return None;
        }
        let count = state.0;
        *state = (0, Some(now));
        Some(count)
    }

    /// Forgets the events: the next one is logged at once.
    pub fn reset(&self) {
        *self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = (0, None);
    }
}

/// Wrong tokens per client address (the console's sign-in, the API's bearer tokens): an address
/// may fail `per_minute` times at once, then once per `60 s / per_minute`; beyond that its
/// attempts are answered "too many" before any token is looked at, until it may try again. Other
/// addresses, and so the right token from anywhere else, are never held back.
#[derive(Debug)]
pub struct WrongTokens {
    burst: f64,
    refill: Duration,
    /// Per address: the failures it may still make, and when that was counted.
    budgets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl WrongTokens {
    /// Addresses remembered at most; beyond, those whose budget has refilled are forgotten.
    const ADDRESSES: usize = 10_000;

    pub fn new(per_minute: u32) -> WrongTokens {
        let per_minute = per_minute.max(1);
        WrongTokens {
            burst: f64::from(per_minute),
            refill: Duration::from_secs(60) / per_minute,
            budgets: Mutex::default(),
        }
    }

    /// Whether `address` may try a token now; otherwise how long until it may.
    pub fn check(&self, address: IpAddr) -> Result<(), Duration> {
        let mut budgets = self.budgets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(budget) = budgets.get_mut(&address) else { return Ok(()) };
        match self.refilled(budget) {
            left if left < 1.0 => Err(self.refill.mul_f64(1.0 - left).max(Duration::from_secs(1))),
            _ => Ok(()),
        }
    }

    /// `address` presented a wrong token.
    pub fn failed(&self, address: IpAddr) {
        let mut budgets = self.budgets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if budgets.len() >= Self::ADDRESSES {
            budgets.retain(|_, budget| self.refilled(budget) < self.burst);
        }
        let budget = budgets.entry(address).or_insert((self.burst, Instant::now()));
        self.refilled(budget);
        budget.0 = (budget.0 - 1.0).max(0.0);
    }

    /// Adds what refilled since the budget was last counted; returns it.
    fn refilled(&self, budget: &mut (f64, Instant)) -> f64 {
        let now = Instant::now();
        let refilled = now.duration_since(budget.1).as_secs_f64() / self.refill.as_secs_f64();
        *budget = ((budget.0 + refilled).min(self.burst), now);
        budget.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_is_logged_and_then_one_per_interval_with_the_count() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.hit(), Some(1));
        assert_eq!((throttle.hit(), throttle.hit()), (None, None));
        throttle.reset();
        assert_eq!(throttle.hit(), Some(1));
        let quick = Throttle::new(Duration::ZERO);
        assert_eq!((quick.hit(), quick.hit()), (Some(1), Some(1)));
    }
}

#[cfg(test)]
mod wrong_token_tests {
    use super::*;

    #[test]
    fn an_address_that_keeps_failing_waits_and_others_do_not() {
        let tokens = WrongTokens::new(10);
        let (attacker, other): (IpAddr, IpAddr) = ("203.0.113.9".parse().unwrap(), "198.51.100.7".parse().unwrap());
        for _ in 0..10 {
            assert_eq!(tokens.check(attacker), Ok(()));
            tokens.failed(attacker);
        }
        let wait = tokens.check(attacker).unwrap_err();
        assert!(wait <= Duration::from_secs(6) && wait >= Duration::from_secs(1), "{wait:?}");
        assert_eq!(tokens.check(other), Ok(()), "another address is not held back");
    }
}
