//! The byte counters of one interface between two readings (R3): deltas, 32-bit wraps, resets
//! and the plausibility cap.
//!
//! Invariant: a rate that leaves this module is never above the interface's cap. Anything the
//! counters cannot explain (a decrease that is not a plausible 32-bit wrap, a jump above the cap)
//! is an anomaly, never a rate: one phantom sample would become the bucket's max and then the bill.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bandwidth::{BPS_PER_MBPS, Bandwidth};

/// One reading of an interface's `rx_bytes` and `tx_bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// How wide the kernel keeps an interface's counters: the platform's word size, or the
/// interface's configuration (R3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterWidth {
    /// 64-bit counters: a decrease is always a reset.
    #[default]
    Bits64,
    /// 32-bit counters: a decrease may be a wrap while every value read fits in 32 bits.
    Bits32,
}

/// A counter's direction: `rx` is downstream, `tx` upstream (R1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Rx,
    Tx,
}

impl Direction {
    pub fn counter_name(self) -> &'static str {
        match self {
            Direction::Rx => "rx_bytes",
            Direction::Tx => "tx_bytes",
        }
    }
}

/// The plausibility cap of an interface (R3): its link speed × 1.05 when the kernel knows it
/// (a speed of 0 means unknown), otherwise the configured `max_link_mbps`.
pub fn plausibility_cap(link_speed_mbps: Option<u64>, max_link_mbps: u64) -> Bandwidth {
    match link_speed_mbps.filter(|&mbps| mbps > 0) {
        Some(mbps) => Bandwidth(mbps.saturating_mul(BPS_PER_MBPS / 100 * 105)),
        None => Bandwidth(max_link_mbps.saturating_mul(BPS_PER_MBPS)),
    }
}

/// Rates over one interval, in bits per second, each at most the cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rates {
    pub rx_bps: u64,
    pub tx_bps: u64,
}

/// Why one interface's interval could not be turned into rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterAnomaly {
    /// The counter went backwards and is not a plausible 32-bit wrap: the interface was
    /// reset, its driver reloaded, or its counters cleared.
    Reset { direction: Direction, old: u64, new: u64 },
    /// The counter moved faster than the interface can carry.
    AboveCap { direction: Direction, old: u64, new: u64, rate_bps: u64, cap_bps: u64 },
}

impl fmt::Display for CounterAnomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CounterAnomaly::Reset { direction, old, new } => write!(
                f,
                "{} went backwards from {old} to {new}: counter reset, re-baselined",
                direction.counter_name()
            ),
            CounterAnomaly::AboveCap { direction, old, new, rate_bps, cap_bps } => write!(
                f,
                "{} went from {old} to {new}: {} is above the plausibility cap of {}",
                direction.counter_name(),
                Bandwidth(rate_bps),
                Bandwidth(cap_bps)
            ),
        }
    }
}

/// The counters of one interface since it was (re-)baselined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceCounters {
    last: Counters,
    /// Whether every value ever read from rx / tx fitted in 32 bits (R3).
    rx_fits_32: bool,
    tx_fits_32: bool,
}

impl InterfaceCounters {
    /// Starts tracking from a first reading; the interface contributes from its next one (R3).
    pub fn baseline(first: Counters) -> Self {
        InterfaceCounters { last: first, rx_fits_32: fits_32(first.rx_bytes), tx_fits_32: fits_32(first.tx_bytes) }
    }

    /// Takes `now` as the new baseline without computing a rate (an interval that gives no sample).
    pub fn rebaseline(&mut self, now: Counters) {
        self.rx_fits_32 &= fits_32(now.rx_bytes);
        self.tx_fits_32 &= fits_32(now.tx_bytes);
        self.last = now;
    }

    pub fn last(&self) -> Counters {
        self.last
    }

    /// The rates from the last reading to `now`, `elapsed` apart on the monotonic clock, or why
    /// there are none. Either way `now` becomes the baseline.
    pub fn advance(
        &mut self,
        now: Counters,
        elapsed: Duration,
        width: CounterWidth,
        cap: Bandwidth,
    ) -> Result<Rates, CounterAnomaly> {
        let before = self.last;
        self.rebaseline(now);
        let elapsed_ns = elapsed.as_nanos().max(1);
        let rx = self.direction_rate(Direction::Rx, before.rx_bytes, now.rx_bytes, elapsed_ns, width, cap);
        let tx = self.direction_rate(Direction::Tx, before.tx_bytes, now.tx_bytes, elapsed_ns, width, cap);
        Ok(Rates { rx_bps: rx?, tx_bps: tx? })
    }

    fn direction_rate(
        &self,
        direction: Direction,
        old: u64,
        new: u64,
        elapsed_ns: u128,
        width: CounterWidth,
        cap: Bandwidth,
    ) -> Result<u64, CounterAnomaly> {
        let delta = if new >= old {
            new - old
        } else {
            let fits = match direction {
                Direction::Rx => self.rx_fits_32,
                Direction::Tx => self.tx_fits_32,
            };
            let unwrapped = (1u64 << 32).wrapping_sub(old).wrapping_add(new);
            let is_wrap =
                width == CounterWidth::Bits32 && fits && rate_bps(unwrapped, elapsed_ns) <= u128::from(cap.bps());
            if !is_wrap {
                return Err(CounterAnomaly::Reset { direction, old, new });
            }
            unwrapped
        };
        let rate = rate_bps(delta, elapsed_ns);
        match u64::try_from(rate) {
            Ok(rate) if rate <= cap.bps() => Ok(rate),
            _ => Err(CounterAnomaly::AboveCap {
                direction,
                old,
                new,
                rate_bps: u64::try_from(rate).unwrap_or(u64::MAX),
                cap_bps: cap.bps(),
            }),
        }
    }
}

fn fits_32(value: u64) -> bool {
    value <= u64::from(u32::MAX)
}

/// `delta × 8 / elapsed`, rounded down (R1). Exact: at most 2^64 × 8 × 10^9 < 2^98.
fn rate_bps(delta_bytes: u64, elapsed_ns: u128) -> u128 {
    u128::from(delta_bytes) * 8 * 1_000_000_000 / elapsed_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_S: Duration = Duration::from_secs(5);
    const GIG: Bandwidth = Bandwidth(1_050_000_000);

    fn c(rx: u64, tx: u64) -> Counters {
        Counters { rx_bytes: rx, tx_bytes: tx }
    }

    #[test]
    fn rates_are_bits_per_second_on_the_monotonic_elapsed_time() {
        let mut ifc = InterfaceCounters::baseline(c(1_000, 0));
        let rates = ifc.advance(c(1_000 + 625_000, 62_500), FIVE_S, CounterWidth::Bits64, GIG).unwrap();
        assert_eq!(rates, Rates { rx_bps: 1_000_000, tx_bps: 100_000 });
        let rates = ifc.advance(c(626_001, 62_500), Duration::from_millis(4_999), CounterWidth::Bits64, GIG);
        assert_eq!(rates.unwrap().rx_bps, 1, "8 bits over 4.999 s, rounded down");
    }

    #[test]
    fn a_decrease_on_64_bit_counters_is_a_reset() {
        let mut ifc = InterfaceCounters::baseline(c(5_000_000, 10));
        let err = ifc.advance(c(100, 20), FIVE_S, CounterWidth::Bits64, GIG).unwrap_err();
        assert_eq!(err, CounterAnomaly::Reset { direction: Direction::Rx, old: 5_000_000, new: 100 });
        assert_eq!(ifc.last(), c(100, 20), "re-baselined on the new reading");
        assert_eq!(ifc.advance(c(725, 20), FIVE_S, CounterWidth::Bits64, GIG).unwrap().rx_bps, 1_000);
    }

    #[test]
    fn a_plausible_decrease_on_32_bit_counters_is_a_wrap() {
        let mut ifc = InterfaceCounters::baseline(c(u64::from(u32::MAX) - 99, 0));
        let rates = ifc.advance(c(525, 0), FIVE_S, CounterWidth::Bits32, GIG).unwrap();
        assert_eq!(rates.rx_bps, 625 * 8 / 5);
    }

    #[test]
    fn an_implausible_wrap_is_a_reset() {
        // Unwrapping 10 -> 5 would mean 2^32 - 5 bytes in 5 s: 6.9 Gbit/s on a 1 Gbit/s link.
        let mut ifc = InterfaceCounters::baseline(c(10, 0));
        let err = ifc.advance(c(5, 0), FIVE_S, CounterWidth::Bits32, GIG).unwrap_err();
        assert!(matches!(err, CounterAnomaly::Reset { .. }));
    }

    #[test]
    fn a_counter_that_once_exceeded_32_bits_never_wraps_again() {
        let mut ifc = InterfaceCounters::baseline(c(1 << 33, 0));
        ifc.rebaseline(c(u64::from(u32::MAX) - 10, 0));
        let err = ifc.advance(c(5, 0), FIVE_S, CounterWidth::Bits32, GIG).unwrap_err();
        assert!(matches!(err, CounterAnomaly::Reset { .. }));
    }

    #[test]
    fn a_jump_above_the_cap_is_refused_and_says_why() {
        let mut ifc = InterfaceCounters::baseline(c(0, 0));
        let err = ifc.advance(c(0, 4 << 30), FIVE_S, CounterWidth::Bits64, GIG).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tx_bytes went from 0 to 4294967296: 6871.9 Mbps is above the plausibility cap of 1050.0 Mbps"
        );
    }

    #[test]
    fn the_cap_is_link_speed_plus_five_percent_or_the_configured_maximum() {
        assert_eq!(plausibility_cap(Some(1_000), 10_000), Bandwidth(1_050_000_000));
        assert_eq!(plausibility_cap(Some(0), 10_000), Bandwidth(10_000_000_000));
        assert_eq!(plausibility_cap(None, 2_500), Bandwidth(2_500_000_000));
    }
}
