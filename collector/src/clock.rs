//! The collector's wall clock: the one place that reads the time of day. Business dates (today's
//! pool for R17, a month's status and finalization for R9, an order's "start date in the past",
//! a site's activation date, expiries, stored stamps) all come from [`now`].
//!
//! The clock is the system's, shifted by an offset that `main` sets once at start from
//! [`OFFSET_VAR`] (zero when unset). The offset moves the whole process to another instant while
//! time keeps running there, so timers, retries and grace periods behave as they do in
//! production: this is how the test suite runs the collector on the last day of a month or at
//! 23:59:59 UTC without touching the machine's clock (libfaketime would not reach a static
//! binary, and a frozen clock would stop retries). Timers and elapsed times use tokio's
//! monotonic clock and are not shifted.
//!
//! A test that serves the collector inside its own process, on a thread of its own with a
//! current-thread runtime, gives that thread an offset of its own ([`set_thread_offset`]): many
//! such collectors, each at its own instant, then share one test process.

use std::cell::Cell;
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

/// Milliseconds added to the system clock, for tests: `TALLY_CLOCK_OFFSET_MS=-86400000` runs the
/// collector a day in the past.
pub const OFFSET_VAR: &str = "TALLY_CLOCK_OFFSET_MS";

static OFFSET: OnceLock<TimeDelta> = OnceLock::new();

thread_local! {
    /// The offset of the collector served on this thread, when a test set one.
    static THREAD_OFFSET: Cell<Option<TimeDelta>> = const { Cell::new(None) };
}

/// Sets the process's offset; only the first call counts (it is set once, before anything reads
/// the clock). Returns whether this call set it.
pub fn set_offset(offset: TimeDelta) -> bool {
    OFFSET.set(offset).is_ok()
}

/// Sets the offset of this thread, before the process's: for a test that serves a collector on
/// a thread of its own (on a current-thread runtime, every task of that collector runs there).
pub fn set_thread_offset(offset: TimeDelta) {
    THREAD_OFFSET.set(Some(offset));
}

/// The offset that [`OFFSET_VAR`]'s `value` names.
pub fn parse_offset(value: &str) -> Result<TimeDelta, String> {
    value
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(TimeDelta::try_milliseconds)
        .ok_or_else(|| format!("{OFFSET_VAR}={value:?} is not a whole number of milliseconds"))
}

/// The time now, UTC, on the collector's clock.
pub fn now() -> DateTime<Utc> {
    Utc::now() + THREAD_OFFSET.get().or_else(|| OFFSET.get().copied()).unwrap_or_default()
}

/// Today's date, UTC, on the collector's clock.
pub fn today() -> NaiveDate {
    now().date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_offset_moves_that_thread_alone() {
        let elsewhere = std::thread::spawn(|| {
            set_thread_offset(TimeDelta::days(-400));
            today()
        });
        let shifted = elsewhere.join().unwrap();
        let real = Utc::now().date_naive();
        assert!((real - shifted).num_days() >= 399, "{shifted} against {real}");
        assert!((today() - real).num_days().abs() <= 1, "this thread keeps the process's clock");
    }

    #[test]
    fn offsets_are_whole_milliseconds() {
        assert_eq!(parse_offset("-86400000"), Ok(TimeDelta::days(-1)));
        assert_eq!(parse_offset(" 1500 "), Ok(TimeDelta::milliseconds(1500)));
        for bad in ["", "1.5", "tomorrow", "99999999999999999999"] {
            let e = parse_offset(bad).unwrap_err();
            assert!(e.contains(OFFSET_VAR), "{e}");
        }
    }
}
