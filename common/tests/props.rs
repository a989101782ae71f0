//! Property tests of the billing math against plain oracles: the daily P95 (R5) against
//! sort-and-index, and the counter rules (R1, R3) against the plausibility cap.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use proptest::prelude::*;
use tally_common::bandwidth::Bandwidth;
use tally_common::bucket::Bucketizer;
use tally_common::counters::{CounterAnomaly, CounterWidth, Counters, InterfaceCounters};
use tally_common::p95::{daily_site_p95, discarded_slots};
use tally_common::sampler::{InterfaceName, InterfaceReading, Sampler, TickReading};
use tally_common::time::BucketStart;

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 10, 7).unwrap()
}

/// The oracle: 288 slots, missing ones 0, repeated ones merged with max; sorted; the 15th highest.
fn oracle_p95(buckets: &[(usize, u64)]) -> (u64, u16) {
    let mut slots = vec![None::<u64>; 288];
    for &(slot, value) in buckets {
        slots[slot] = Some(slots[slot].map_or(value, |v| v.max(value)));
    }
    let present = slots.iter().filter(|s| s.is_some()).count() as u16;
    let mut values: Vec<u64> = slots.into_iter().map(|s| s.unwrap_or(0)).collect();
    values.sort();
    (values[288 - 15], present)
}

/// Bucket values that make the interesting cases likely: zeros, ties, and values near u64::MAX.
fn bucket_value() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 0u64..4, 0u64..10_000_000_000, (u64::MAX - 3)..=u64::MAX, any::<u64>(),]
}

fn day_of_buckets() -> impl Strategy<Value = Vec<(usize, u64)>> {
    prop_oneof![
        prop::collection::vec((0usize..288, bucket_value()), 0..15),
        prop::collection::vec((0usize..288, bucket_value()), 0..400),
        prop::collection::vec(bucket_value(), 288).prop_map(|v| v.into_iter().enumerate().collect()),
    ]
}

fn bucket_at(slot: usize) -> BucketStart {
    BucketStart::from_unix(BucketStart::first_of_day(day()).unix() + 300 * slot as i64).unwrap()
}

/// `cases` per property; a failing case is saved beside this file (`*.proptest-regressions`)
/// and tried first on the next run.
fn config(cases: u32) -> ProptestConfig {
    let persistence = proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions");
    ProptestConfig { failure_persistence: Some(Box::new(persistence)), ..ProptestConfig::with_cases(cases) }
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn daily_p95_equals_the_sort_and_index_oracle(buckets in day_of_buckets()) {
        let got = daily_site_p95(day(), buckets.iter().map(|&(s, v)| (bucket_at(s), v)));
        let (p95, present) = oracle_p95(&buckets);
        prop_assert_eq!(got.p95_bps, p95);
        prop_assert_eq!(got.buckets_present, present);
        prop_assert_eq!(got.buckets_expected, 288);
    }

    /// What the console marks as discarded: 14 slots, none below the P95, none of the others
    /// above it (R5).
    #[test]
    fn the_discarded_slots_are_the_fourteen_above_the_p95(buckets in day_of_buckets()) {
        let day_buckets = || buckets.iter().map(|&(s, v)| (bucket_at(s), v));
        let p95 = daily_site_p95(day(), day_buckets()).p95_bps;
        let discarded = discarded_slots(day(), day_buckets());
        let mut value = [0u64; 288];
        for &(s, v) in &buckets {
            value[s] = value[s].max(v);
        }
        prop_assert_eq!(discarded.len(), 14);
        prop_assert!(discarded.iter().all(|&s| value[s] >= p95));
        prop_assert!((0..288).filter(|s| !discarded.contains(s)).all(|s| value[s] <= p95));
    }

    #[test]
    fn raising_a_bucket_never_lowers_the_p95(buckets in day_of_buckets(), slot in 0usize..288, raise in any::<u64>()) {
        let before = daily_site_p95(day(), buckets.iter().map(|&(s, v)| (bucket_at(s), v)));
        let mut raised = buckets.clone();
        raised.push((slot, raise));
        let after = daily_site_p95(day(), raised.iter().map(|&(s, v)| (bucket_at(s), v)));
        prop_assert!(after.p95_bps >= before.p95_bps);
    }
}

/// One step of a counter's life: everything a driver, a reboot or a clock can do to it.
#[derive(Clone, Debug)]
enum Step {
    Grow(u64),
    GrowBig(u64),
    NearWrap32,
    Wrap32(u64),
    Reset(u64),
    Jump(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u64..100_000_000).prop_map(Step::Grow),
        any::<u64>().prop_map(Step::GrowBig),
        Just(Step::NearWrap32),
        (0u64..1 << 31).prop_map(Step::Wrap32),
        (0u64..1_000).prop_map(Step::Reset),
        any::<u64>().prop_map(Step::Jump),
    ]
}

fn apply(value: u64, step: &Step) -> u64 {
    match *step {
        Step::Grow(n) | Step::GrowBig(n) => value.wrapping_add(n),
        Step::NearWrap32 => u64::from(u32::MAX) - 1_000,
        Step::Wrap32(n) => (value.wrapping_add(n)) & u64::from(u32::MAX),
        Step::Reset(n) => n,
        Step::Jump(n) => n,
    }
}

/// A reading: rx and tx steps, the time since the last reading, the width the platform claims.
fn readings() -> impl Strategy<Value = Vec<(Step, Step, u64, bool)>> {
    prop::collection::vec((step(), step(), 0u64..90_000, any::<bool>()), 1..60)
}

fn cap() -> impl Strategy<Value = Bandwidth> {
    prop_oneof![Just(1u64), 1u64..20_000_000_000, Just(u64::MAX)].prop_map(Bandwidth)
}

proptest! {
    #![proptest_config(config(1_000))]

    /// R3: whatever the counters do, no rate above the interface's cap ever leaves the counter
    /// logic; and a rate that does is exactly `delta × 8 / elapsed` of a counter that grew or wrapped.
    #[test]
    fn counter_rates_never_exceed_the_cap(
        start in any::<(u64, u64)>(),
        steps in readings(),
        cap in 1u64..20_000_000_000u64,
    ) {
        let cap = Bandwidth(cap);
        let mut now = Counters { rx_bytes: start.0, tx_bytes: start.1 };
        let mut counters = InterfaceCounters::baseline(now);
        for (rx, tx, elapsed_ms, narrow) in &steps {
            let before = now;
            now = Counters { rx_bytes: apply(now.rx_bytes, rx), tx_bytes: apply(now.tx_bytes, tx) };
            let elapsed = Duration::from_millis((*elapsed_ms).max(1));
            let width = if *narrow { CounterWidth::Bits32 } else { CounterWidth::Bits64 };
            match counters.advance(now, elapsed, width, cap) {
                Ok(rates) => {
                    prop_assert!(rates.rx_bps <= cap.bps() && rates.tx_bps <= cap.bps());
                    for (old, new, rate) in [(before.rx_bytes, now.rx_bytes, rates.rx_bps), (before.tx_bytes, now.tx_bytes, rates.tx_bps)] {
                        let delta = if new >= old { new - old } else {
                            prop_assert!(width == CounterWidth::Bits32, "a decrease was unwrapped on 64-bit counters");
                            (1u64 << 32) - old + new
                        };
                        prop_assert_eq!(u128::from(rate), u128::from(delta) * 8_000_000_000 / elapsed.as_nanos());
                    }
                }
                Err(CounterAnomaly::AboveCap { rate_bps, cap_bps, .. }) => prop_assert!(rate_bps > cap_bps),
                Err(CounterAnomaly::Reset { old, new, .. }) => prop_assert!(new < old),
            }
            prop_assert_eq!(counters.last(), now, "every reading becomes the baseline");
        }
    }

    /// R1 + R3 + R4 through the sampler and the bucketizer: no sample and no bucket is ever above
    /// the sum of the interfaces' caps, and a bucket never holds more than 60 samples.
    #[test]
    fn samples_and_buckets_never_exceed_the_caps(
        per_interface in (readings(), readings()),
        caps in (cap(), cap()),
        start_secs in 1_700_000_000i64..1_800_000_000,
    ) {
        let names = ["eth1", "lte0"];
        let caps = [caps.0, caps.1];
        let limit = caps[0].bps().saturating_add(caps[1].bps());
        let mut sampler = Sampler::new();
        let mut bucketizer = Bucketizer::default();
        let mut values = [(0u64, 0u64); 2];
        let mut wall = DateTime::<Utc>::from_timestamp(start_secs - start_secs % 5, 0).unwrap();
        let mut mono = Duration::from_secs(100);
        let per_interface = [per_interface.0, per_interface.1];
        let length = per_interface[0].len().min(per_interface[1].len());
        for i in 0..length {
            let mut interfaces = Vec::new();
            let mut elapsed_ms = 0;
            for (k, steps) in per_interface.iter().enumerate() {
                let (rx, tx, ms, narrow) = &steps[i];
                values[k] = (apply(values[k].0, rx), apply(values[k].1, tx));
                elapsed_ms = *ms;
                interfaces.push(InterfaceReading {
                    name: InterfaceName::try_from(names[k]).unwrap(),
                    ifindex: k as u32 + 2,
                    counters: Counters { rx_bytes: values[k].0, tx_bytes: values[k].1 },
                    cap: caps[k],
                    width: if *narrow { CounterWidth::Bits32 } else { CounterWidth::Bits64 },
                });
            }
            mono += Duration::from_millis(elapsed_ms);
            wall += TimeDelta::seconds(5);
            let reading = TickReading { wall, monotonic: mono, boot_id: 7, interfaces: &interfaces };
            if let Some(interval) = sampler.tick(&reading, |_| {}) {
                if let Ok(sample) = interval.outcome {
                    prop_assert!(sample.up_bps <= limit && sample.down_bps <= limit);
                }
                for bucket in bucketizer.push(&interval) {
                    prop_assert!(bucket.max_bps <= limit);
                    prop_assert!((1..=60).contains(&bucket.samples));
                }
            }
        }
    }
}

/// R32's oracles, by counting up: the smallest number of whole blocks (units) whose total covers
/// the measured devices (events per hour), less what is licensed.
fn oracle_devices_purchase(measured: u64, licensed: u64, block: u64) -> u64 {
    if measured <= licensed {
        return 0;
    }
    let mut blocks = 0;
    while blocks * block < measured {
        blocks += 1;
    }
    (blocks * block).saturating_sub(licensed)
}

fn oracle_units_purchase(peak_hour: u64, units: u64, per_unit: u64) -> u64 {
    let mut needed = 0;
    while needed * per_unit < peak_hour {
        needed += 1;
    }
    needed.saturating_sub(units)
}

proptest! {
    #[test]
    fn purchases_are_the_smallest_in_the_licenses_unit(
        measured in 0u64..5_000, licensed in 0u64..5_000, block in 1u64..200,
        peak in 0u64..100_000, units in 0u64..50, per_unit in 1u64..5_000,
        excess_bps in 0u64..10_000_000_000,
    ) {
        let devices = tally_common::meters::devices(measured, licensed, block);
        prop_assert_eq!(devices.required_purchase, oracle_devices_purchase(measured, licensed, block));
        let lake = tally_common::meters::data_lake(peak, units, per_unit);
        prop_assert_eq!(lake.required_purchase, oracle_units_purchase(peak, units, per_unit));
        // The pool: whole Mbps, the fewest that cover the excess.
        let mbps = tally_common::pool::required_purchase_mbps(excess_bps);
        prop_assert!(mbps * 1_000_000 >= excess_bps);
        prop_assert!(mbps == 0 || (mbps - 1) * 1_000_000 < excess_bps);
    }
}
