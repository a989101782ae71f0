//! Logging what may repeat many times a second (refused connections, a failing disk) at most
//! once per interval, with how often it happened.

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
