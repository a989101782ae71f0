//! From one tick's counter readings of every WAN interface to a 5-second sample (R1, R3).
//!
//! The agent's sampler loop and `tally-agent replay` both feed readings through [`Sampler::tick`]:
//! the rules live here once. The caller passes the wall-clock tick time (aligned, R2), the
//! monotonic time of the reading and the machine's boot id; nothing here reads a clock.
//!
//! Fixed capacity: at most [`MAX_INTERFACES`] interfaces are tracked, with `heapless` storage, so
//! the per-tick path does not allocate. The whole state is serde-serializable so the agent can keep
//! it across restarts.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bandwidth::Bandwidth;
use crate::counters::{CounterAnomaly, CounterWidth, Counters, InterfaceCounters};

/// The most WAN interfaces one sampler tracks.
pub const MAX_INTERFACES: usize = 8;
/// Intervals shorter than this give no sample (R3).
pub const MIN_ELAPSED: Duration = Duration::from_secs(1);
/// Intervals longer than this give no sample (R3).
pub const MAX_ELAPSED: Duration = Duration::from_secs(60);

/// A Linux interface name: at most 15 bytes (IFNAMSIZ less its NUL).
pub type InterfaceName = heapless::String<15>;

/// One interface's reading at a tick, with what the caller knows of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceReading {
    pub name: InterfaceName,
    /// A new ifindex under the same name means a new interface (R3).
    pub ifindex: u32,
    pub counters: Counters,
    /// The plausibility cap (see [`crate::counters::plausibility_cap`]).
    pub cap: Bandwidth,
    pub width: CounterWidth,
}

/// Everything read at one tick.
#[derive(Clone, Copy, Debug)]
pub struct TickReading<'a> {
    /// The tick's wall-clock time, a multiple of 5 s (R2).
    pub wall: DateTime<Utc>,
    /// The monotonic clock at the reading: elapsed times come from here, never from `wall` (R1).
    pub monotonic: Duration,
    /// The machine's boot id: a new one re-baselines every interface (R3).
    pub boot_id: u128,
    pub interfaces: &'a [InterfaceReading],
}

/// Why an interval gave no sample; the agent counts each (R3) and reports the totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscardReason {
    CounterReset,
    AboveCap,
    ElapsedTooShort,
    ElapsedTooLong,
}

impl DiscardReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscardReason::CounterReset => "counter_reset",
            DiscardReason::AboveCap => "above_cap",
            DiscardReason::ElapsedTooShort => "elapsed_too_short",
            DiscardReason::ElapsedTooLong => "elapsed_too_long",
        }
    }
}

impl fmt::Display for DiscardReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Discarded intervals by reason, counted since the agent's store was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscardCounters {
    pub counter_reset: u64,
    pub above_cap: u64,
    pub elapsed_too_short: u64,
    pub elapsed_too_long: u64,
}

impl DiscardCounters {
    pub fn count(&mut self, reason: DiscardReason) {
        let slot = match reason {
            DiscardReason::CounterReset => &mut self.counter_reset,
            DiscardReason::AboveCap => &mut self.above_cap,
            DiscardReason::ElapsedTooShort => &mut self.elapsed_too_short,
            DiscardReason::ElapsedTooLong => &mut self.elapsed_too_long,
        };
        *slot = slot.saturating_add(1);
    }

    pub fn total(&self) -> u64 {
        [self.counter_reset, self.above_cap, self.elapsed_too_short, self.elapsed_too_long]
            .iter()
            .fold(0u64, |sum, n| sum.saturating_add(*n))
    }
}

/// Something the sampler noticed that a field engineer should see in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// One interface's counters could not be explained: the interval gives no sample.
    Counter { interface: InterfaceName, anomaly: CounterAnomaly },
    /// The time between two readings was out of `[1 s, 60 s]`: the interval gives no sample.
    Elapsed { elapsed: Duration, reason: DiscardReason },
    /// The interface has a new ifindex: it is re-baselined and contributes from its next reading.
    IfindexChanged { interface: InterfaceName, old: u32, new: u32 },
    /// The machine rebooted since the last reading: every interface is re-baselined.
    BootIdChanged,
    /// More WAN interfaces than the sampler tracks: this one is not measured.
    TooManyInterfaces { interface: InterfaceName },
}

impl Anomaly {
    /// The reason the interval was discarded, if this anomaly discards it.
    pub fn discard_reason(&self) -> Option<DiscardReason> {
        match self {
            Anomaly::Counter { anomaly: CounterAnomaly::Reset { .. }, .. } => Some(DiscardReason::CounterReset),
            Anomaly::Counter { anomaly: CounterAnomaly::AboveCap { .. }, .. } => Some(DiscardReason::AboveCap),
            Anomaly::Elapsed { reason, .. } => Some(*reason),
            Anomaly::IfindexChanged { .. } | Anomaly::BootIdChanged | Anomaly::TooManyInterfaces { .. } => None,
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::Counter { interface, anomaly } => write!(f, "{interface}: {anomaly}"),
            Anomaly::Elapsed { elapsed, .. } => write!(
                f,
                "{:.3} s between two readings is outside 1 s ..= 60 s: no sample for this interval",
                elapsed.as_secs_f64()
            ),
            Anomaly::IfindexChanged { interface, old, new } => {
                write!(f, "{interface}: ifindex changed from {old} to {new} (interface re-created): re-baselined")
            }
            Anomaly::BootIdChanged => {
                f.write_str("the machine rebooted since the last reading: all interfaces re-baselined")
            }
            Anomaly::TooManyInterfaces { interface } => {
                write!(f, "{interface}: not measured, at most {MAX_INTERFACES} WAN interfaces are supported")
            }
        }
    }
}

/// One 5-second interval `[start, end)`: a sample (R1) or why it has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub outcome: Result<Sample, NoSample>,
}

/// Why an interval has no sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoSample {
    /// A counter artifact or an elapsed time out of range (R3): counted and logged.
    Discarded(DiscardReason),
    /// No WAN interface was measured over the interval (none is up, or each was only just
    /// baselined): nothing to count, and a bucket of such intervals alone is not emitted (R4).
    NothingMeasured,
}

impl fmt::Display for NoSample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoSample::Discarded(reason) => reason.fmt(f),
            NoSample::NothingMeasured => f.write_str("no_interface_measured"),
        }
    }
}

impl Interval {
    /// The sample's value, `max(up, down)`, when the interval is valid.
    pub fn bps(&self) -> Option<u64> {
        self.outcome.ok().map(|s| s.bps())
    }
}

/// Upstream (Σ tx) and downstream (Σ rx) over every WAN interface (R1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub up_bps: u64,
    pub down_bps: u64,
}

impl Sample {
    /// The sample's value: the higher of the two directions (R1).
    pub fn bps(&self) -> u64 {
        self.up_bps.max(self.down_bps)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PreviousTick {
    wall: DateTime<Utc>,
    monotonic: Duration,
    boot_id: u128,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Tracked {
    name: InterfaceName,
    ifindex: u32,
    counters: InterfaceCounters,
}

/// The counters of every WAN interface between ticks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sampler {
    previous: Option<PreviousTick>,
    interfaces: heapless::Vec<Tracked, MAX_INTERFACES>,
}

impl Sampler {
    pub fn new() -> Self {
        Sampler::default()
    }

    /// Whether `other` tracks the same interfaces at the same counters (the times of their
    /// readings aside).
    pub fn same_counters(&self, other: &Sampler) -> bool {
        self.interfaces == other.interfaces
    }

    /// Takes one tick's readings; returns the interval since the previous tick, if there is one.
    /// Every anomaly is passed to `report` once. Interfaces missing from `reading` are forgotten:
    /// when they come back they contribute from their second reading (R3).
    pub fn tick(&mut self, reading: &TickReading<'_>, mut report: impl FnMut(Anomaly)) -> Option<Interval> {
        let previous = self.previous.replace(PreviousTick {
            wall: reading.wall,
            monotonic: reading.monotonic,
            boot_id: reading.boot_id,
        });
        let mut tracked = std::mem::take(&mut self.interfaces);

        let Some(previous) = previous else {
            self.baseline_all(reading, &mut tracked, &mut report);
            return None;
        };
        if previous.boot_id != reading.boot_id {
            report(Anomaly::BootIdChanged);
            tracked.clear();
            self.baseline_all(reading, &mut tracked, &mut report);
            return None;
        }

        let start = previous.wall;
        let end = reading.wall;
        let elapsed = reading.monotonic.checked_sub(previous.monotonic).unwrap_or_default();
        let elapsed_discard = if elapsed < MIN_ELAPSED {
            Some(DiscardReason::ElapsedTooShort)
        } else if elapsed > MAX_ELAPSED {
            Some(DiscardReason::ElapsedTooLong)
        } else {
            None
        };
        if let Some(reason) = elapsed_discard {
            report(Anomaly::Elapsed { elapsed, reason });
            self.baseline_all(reading, &mut tracked, &mut report);
            return Some(Interval { start, end, outcome: Err(NoSample::Discarded(reason)) });
        }

        let mut sample = Sample::default();
        let (mut measured, mut discarded) = (false, None);
        for r in reading.interfaces {
            let Some(mut state) = take_same_interface(&mut tracked, r, &mut report) else {
                self.track(r, InterfaceCounters::baseline(r.counters), &mut report);
                continue;
            };
            measured = true;
            match state.counters.advance(r.counters, elapsed, r.width, r.cap) {
                Ok(rates) => {
                    sample.down_bps = sample.down_bps.saturating_add(rates.rx_bps);
                    sample.up_bps = sample.up_bps.saturating_add(rates.tx_bps);
                }
                Err(anomaly) => {
                    let anomaly = Anomaly::Counter { interface: r.name.clone(), anomaly };
                    discarded = discarded.or(anomaly.discard_reason());
                    report(anomaly);
                }
            }
            self.track(r, state.counters, &mut report);
        }
        let outcome = match discarded {
            Some(reason) => Err(NoSample::Discarded(reason)),
            None if !measured => Err(NoSample::NothingMeasured),
            None => Ok(sample),
        };
        Some(Interval { start, end, outcome })
    }

    /// Every interface of `reading` starts anew from this reading.
    fn baseline_all(
        &mut self,
        reading: &TickReading<'_>,
        tracked: &mut heapless::Vec<Tracked, MAX_INTERFACES>,
        report: &mut impl FnMut(Anomaly),
    ) {
        for r in reading.interfaces {
            let counters = match take_same_interface(tracked, r, report) {
                Some(mut state) => {
                    state.counters.rebaseline(r.counters);
                    state.counters
                }
                None => InterfaceCounters::baseline(r.counters),
            };
            self.track(r, counters, report);
        }
    }

    fn track(&mut self, r: &InterfaceReading, counters: InterfaceCounters, report: &mut impl FnMut(Anomaly)) {
        let entry = Tracked { name: r.name.clone(), ifindex: r.ifindex, counters };
        if self.interfaces.push(entry).is_err() {
            report(Anomaly::TooManyInterfaces { interface: r.name.clone() });
        }
    }

    /// The names of the interfaces being measured, in reading order.
    pub fn interfaces(&self) -> impl Iterator<Item = &str> {
        self.interfaces.iter().map(|t| t.name.as_str())
    }
}

/// Removes and returns the state of `r`'s interface, unless it is new or was re-created.
fn take_same_interface(
    tracked: &mut heapless::Vec<Tracked, MAX_INTERFACES>,
    r: &InterfaceReading,
    report: &mut impl FnMut(Anomaly),
) -> Option<Tracked> {
    let index = tracked.iter().position(|t| t.name == r.name)?;
    let state = tracked.swap_remove(index);
    if state.ifindex != r.ifindex {
        report(Anomaly::IfindexChanged { interface: r.name.clone(), old: state.ifindex, new: r.ifindex });
        return None;
    }
    Some(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(name: &str, ifindex: u32, rx: u64, tx: u64) -> InterfaceReading {
        InterfaceReading {
            name: InterfaceName::try_from(name).unwrap(),
            ifindex,
            counters: Counters { rx_bytes: rx, tx_bytes: tx },
            cap: Bandwidth(1_050_000_000),
            width: CounterWidth::Bits64,
        }
    }

    fn at(secs: u64) -> (DateTime<Utc>, Duration) {
        (DateTime::from_timestamp(1_790_000_000 + secs as i64, 0).unwrap(), Duration::from_secs(1_000 + secs))
    }

    fn tick(s: &mut Sampler, secs: u64, boot: u128, ifs: &[InterfaceReading]) -> (Option<Interval>, Vec<Anomaly>) {
        let (wall, monotonic) = at(secs);
        let mut seen = Vec::new();
        let out = s.tick(&TickReading { wall, monotonic, boot_id: boot, interfaces: ifs }, |a| seen.push(a));
        (out, seen)
    }

    #[test]
    fn the_sample_is_the_higher_of_summed_upstream_and_summed_downstream() {
        let mut s = Sampler::new();
        assert_eq!(tick(&mut s, 0, 1, &[reading("eth1", 2, 0, 0), reading("lte0", 3, 0, 0)]).0, None);
        // eth1: 10 Mbit/s down, 3 up; lte0: 1 down, 9 up → up 12, down 11.
        let (iv, seen) =
            tick(&mut s, 5, 1, &[reading("eth1", 2, 6_250_000, 1_875_000), reading("lte0", 3, 625_000, 5_625_000)]);
        let iv = iv.unwrap();
        assert!(seen.is_empty());
        assert_eq!((iv.start, iv.end), (at(0).0, at(5).0));
        assert_eq!(iv.outcome, Ok(Sample { up_bps: 12_000_000, down_bps: 11_000_000 }));
        assert_eq!(iv.bps(), Some(12_000_000));
    }

    #[test]
    fn a_reset_on_one_interface_invalidates_the_interval() {
        let mut s = Sampler::new();
        tick(&mut s, 0, 1, &[reading("eth1", 2, 1_000, 0), reading("eth2", 4, 0, 0)]);
        let (iv, seen) = tick(&mut s, 5, 1, &[reading("eth1", 2, 10, 0), reading("eth2", 4, 100, 0)]);
        assert_eq!(iv.unwrap().outcome, Err(NoSample::Discarded(DiscardReason::CounterReset)));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].to_string(), "eth1: rx_bytes went backwards from 1000 to 10: counter reset, re-baselined");
        let (iv, _) = tick(&mut s, 10, 1, &[reading("eth1", 2, 635, 0), reading("eth2", 4, 100, 0)]);
        assert_eq!(iv.unwrap().bps(), Some(1_000));
    }

    #[test]
    fn an_appearing_or_recreated_interface_contributes_from_its_second_reading() {
        let mut s = Sampler::new();
        tick(&mut s, 0, 1, &[reading("eth1", 2, 0, 0)]);
        let (iv, seen) = tick(&mut s, 5, 1, &[reading("eth1", 2, 625, 0), reading("lte0", 7, 9_999_999, 0)]);
        assert_eq!(iv.unwrap().bps(), Some(1_000));
        assert!(seen.is_empty());
        let (iv, seen) = tick(&mut s, 10, 1, &[reading("eth1", 9, 99_999, 0), reading("lte0", 7, 10_000_624, 0)]);
        assert_eq!(iv.unwrap().bps(), Some(1_000), "eth1 re-created: only lte0 counts");
        assert_eq!(
            seen,
            vec![Anomaly::IfindexChanged { interface: InterfaceName::try_from("eth1").unwrap(), old: 2, new: 9 }]
        );
    }

    #[test]
    fn elapsed_times_out_of_range_give_no_sample_and_re_baseline() {
        let mut s = Sampler::new();
        tick(&mut s, 0, 1, &[reading("eth1", 2, 0, 0)]);
        let (iv, seen) = tick(&mut s, 65, 1, &[reading("eth1", 2, 1_000_000, 0)]);
        assert_eq!(iv.unwrap().outcome, Err(NoSample::Discarded(DiscardReason::ElapsedTooLong)));
        assert_eq!(seen[0].discard_reason(), Some(DiscardReason::ElapsedTooLong));
        let (iv, _) = tick(&mut s, 70, 1, &[reading("eth1", 2, 1_000_625, 0)]);
        assert_eq!(iv.unwrap().bps(), Some(1_000));
    }

    /// R4: no WAN interface, or only one just baselined, measures nothing: not a sample of 0.
    #[test]
    fn an_interval_without_a_measured_interface_has_no_sample() {
        let mut s = Sampler::new();
        tick(&mut s, 0, 1, &[]);
        let (iv, seen) = tick(&mut s, 5, 1, &[]);
        assert_eq!((iv.unwrap().outcome, iv.unwrap().bps()), (Err(NoSample::NothingMeasured), None));
        assert!(seen.is_empty());
        let (iv, _) = tick(&mut s, 10, 1, &[reading("eth1", 2, 0, 0)]);
        assert_eq!(iv.unwrap().outcome, Err(NoSample::NothingMeasured), "eth1's first reading is its baseline");
        let (iv, _) = tick(&mut s, 15, 1, &[reading("eth1", 2, 0, 0)]);
        assert_eq!(iv.unwrap().outcome, Ok(Sample::default()), "an idle interface measures 0");
    }

    #[test]
    fn a_reboot_re_baselines_everything_without_an_interval() {
        let mut s = Sampler::new();
        tick(&mut s, 0, 1, &[reading("eth1", 2, 5_000, 0)]);
        let (iv, seen) = tick(&mut s, 5, 2, &[reading("eth1", 2, 10, 0)]);
        assert_eq!(iv, None);
        assert_eq!(seen, vec![Anomaly::BootIdChanged]);
    }

    #[test]
    fn interfaces_beyond_the_limit_are_reported_not_measured() {
        let mut s = Sampler::new();
        let many: Vec<_> = (0..9).map(|i| reading(&format!("eth{i}"), i, 0, 0)).collect();
        let (_, seen) = tick(&mut s, 0, 1, &many);
        assert_eq!(seen.len(), 1);
        assert_eq!(s.interfaces().count(), MAX_INTERFACES);
    }

    #[test]
    fn discard_counters_count_by_reason() {
        let mut counters = DiscardCounters::default();
        counters.count(DiscardReason::AboveCap);
        counters.count(DiscardReason::AboveCap);
        counters.count(DiscardReason::ElapsedTooLong);
        assert_eq!((counters.above_cap, counters.elapsed_too_long, counters.total()), (2, 1, 3));
    }
}
