//! The live sampler over a fake sysfs tree in paused tokio time: a whole UTC day into 288
//! buckets, and every counter anomaly of R3 without a sample above the true rate.

mod support;

use std::time::Duration;

use chrono::TimeDelta;
use support::{FakeTree, Logs, TestClock, drive, field, meter};
use tally_common::bucket::Bucket;
use tally_common::time::BucketStart;

/// The true rate of interval `i` (1-based) of the day: bucket `b` runs at `b + 1` Mbps with one
/// 5-second spike of 7 Mbps more, at a different sample in each bucket.
fn day_rate(i: u64) -> u64 {
    let (b, s) = ((i - 1) / 60, (i - 1) % 60);
    (b + 1) * 1_000_000 + if s == b % 60 { 7_000_000 } else { 0 }
}

#[tokio::test(start_paused = true)]
async fn a_whole_utc_day_gives_288_buckets_with_the_right_maxima() {
    let tree = FakeTree::new();
    tree.add("eth1", 2, Some(1_000));
    let clock = TestClock::starting_at("2026-10-07T00:00:00Z");
    let mut meter = meter(tree.config(&["eth1"], ""));
    let (logs, _guard) = Logs::capture();
    let (mut rx, mut tx) = (0u64, 0u64);
    drive(&mut meter, &clock, 288 * 60, |i| {
        rx += day_rate(i) * 5 / 8; // downstream at the full rate
        tx += day_rate(i) * 5 / 16; // upstream at half of it
        tree.set("eth1", rx, tx);
    })
    .await;

    let buckets = meter.store().oldest_pending(1_000).unwrap();
    let day_start = BucketStart::from_unix(1_791_331_200).unwrap(); // 2026-10-07T00:00:00Z
    let expected: Vec<Bucket> = (0..288u64)
        .map(|b| Bucket {
            start: BucketStart::from_unix(day_start.unix() + 300 * b as i64).unwrap(),
            max_bps: (b + 1) * 1_000_000 + 7_000_000,
            samples: 60,
        })
        .collect();
    assert_eq!(buckets.len(), 288);
    assert_eq!(buckets, expected);
    assert_eq!(meter.store().discards().unwrap().total(), 0);
    let closed = logs.lines_with("bucket closed");
    assert_eq!(closed.len(), 288);
    assert_eq!(field(&closed[0], "start"), Some("2026-10-07T00:00:00Z"));
    assert_eq!(field(&closed[0], "max"), Some("8.0"), "{}", closed[0]);
    assert_eq!(field(&closed[0], "valid_samples"), Some("60"));
}

/// 8 Mbps down (5,000,000 bytes per 5 s), 4 Mbps up.
const RX_PER_TICK: u64 = 5_000_000;
const TX_PER_TICK: u64 = 2_500_000;
const TRUE_RATE: u64 = 8_000_000;

/// What a scenario left behind.
struct Outcome {
    /// Every interval's value from the debug log (`None` for a discarded one).
    samples: Vec<u64>,
    discarded: Vec<String>,
    counts: tally_common::sampler::DiscardCounters,
    buckets: Vec<Bucket>,
    logs: Logs,
}

async fn scenario(
    wan: &[&str],
    extra: &str,
    ticks: u64,
    setup: impl FnOnce(&FakeTree),
    script: impl FnMut(u64, &FakeTree, &TestClock),
) -> Outcome {
    let tree = FakeTree::new();
    setup(&tree);
    let clock = TestClock::starting_at("2026-10-07T10:00:00Z");
    let mut meter = meter(tree.config(wan, extra));
    let (logs, _guard) = Logs::capture();
    let mut script = script;
    drive(&mut meter, &clock, ticks, |i| script(i, &tree, &clock)).await;
    let samples = logs.lines_with(" sample start=").iter().map(|l| field(l, "bps").unwrap().parse().unwrap()).collect();
    Outcome {
        samples,
        discarded: logs.lines_with("interval discarded"),
        counts: meter.store().discards().unwrap(),
        buckets: meter.store().oldest_pending(1_000).unwrap(),
        logs,
    }
}

impl Outcome {
    fn assert_never_above(&self, true_rate: u64) {
        for s in &self.samples {
            assert!(*s <= true_rate, "a sample of {s} bit/s is above the true rate {true_rate}\n{}", self.logs.text());
        }
        for b in &self.buckets {
            assert!(b.max_bps <= true_rate, "bucket {b:?} is above the true rate");
        }
    }
}

/// eth1 at the true rate from `start` bytes.
fn steady(start: u64) -> impl FnMut(u64, &FakeTree, &TestClock) {
    move |i, tree, _| tree.set("eth1", start.wrapping_add(i * RX_PER_TICK), i * TX_PER_TICK)
}

#[tokio::test(start_paused = true)]
async fn a_32_bit_wrap_is_unwrapped_into_the_true_rate() {
    let start = u64::from(u32::MAX) - 12_500_000;
    let o = scenario(
        &["eth1"],
        "counters_32bit = [\"eth1\"]",
        10,
        |t| {
            t.add("eth1", 2, Some(1_000));
            t.set("eth1", start, 0);
        },
        move |i, tree, _| tree.set("eth1", (start + i * RX_PER_TICK) & u64::from(u32::MAX), i * TX_PER_TICK),
    )
    .await;
    assert_eq!(o.samples, vec![TRUE_RATE; 10]);
    assert_eq!(o.counts.total(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_reset_to_zero_of_a_32_bit_looking_counter_is_never_a_4_gib_phantom() {
    for extra in ["", "counters_32bit = [\"eth1\"]"] {
        let start = 3_000_000_000;
        let o = scenario(
            &["eth1"],
            extra,
            10,
            |t| {
                t.add("eth1", 2, Some(1_000));
                t.set("eth1", start, 0);
            },
            move |i, tree, _| {
                let rx = if i < 5 { start + i * RX_PER_TICK } else { (i - 5) * RX_PER_TICK };
                tree.set("eth1", rx, i * TX_PER_TICK)
            },
        )
        .await;
        o.assert_never_above(TRUE_RATE);
        assert_eq!(o.counts.counter_reset, 1, "{extra}");
        assert_eq!(o.samples.len(), 9, "one interval discarded ({extra})");
        assert_eq!(o.discarded.len(), 1);
        let line = &o.discarded[0];
        assert!(
            line.contains("WARN") && line.contains("interface=\"eth1\"") && line.contains("reason=\"counter_reset\""),
            "{line}"
        );
        assert!(line.contains("rx_bytes went backwards from 3020000000 to 0"), "{line}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_interface_that_vanishes_or_is_re_created_never_bills_its_old_counters() {
    let o = scenario(
        &["eth1", "lte0"],
        "",
        16,
        |t| {
            t.add("eth1", 2, Some(1_000));
            t.add("lte0", 3, None); // speed unknown: cap 10 Gbit/s
        },
        |i, tree, _| {
            // eth1 is gone for ticks 4..=6 and comes back with a new ifindex and fresh counters.
            match i {
                4 => tree.remove("eth1"),
                5 | 6 => {}
                7 => tree.add("eth1", 9, Some(1_000)),
                _ if i > 7 => tree.set("eth1", (i - 7) * RX_PER_TICK, 0),
                _ => tree.set("eth1", i * RX_PER_TICK, 0),
            }
            // lte0 is re-created between ticks 11 and 12 with counters 5 GB higher: under its cap,
            // so only the new ifindex tells it apart from 8 Gbit/s of traffic.
            if i == 12 {
                tree.remove("lte0");
                tree.add("lte0", 30, None);
            }
            let lte = if i >= 12 { 5_000_000_000 + i * 250_000 } else { i * 250_000 };
            tree.set("lte0", lte, 0);
        },
    )
    .await;
    let both = TRUE_RATE + 400_000;
    o.assert_never_above(both);
    assert_eq!(o.samples[4..7], [400_000, 400_000, 400_000], "only lte0 while eth1 is away and on its first reading");
    assert_eq!(o.samples[7], both);
    assert_eq!(o.samples[11], TRUE_RATE, "lte0 re-baselined at its new ifindex");
    assert_eq!(o.samples[12], both);
    assert!(o.logs.text().contains("lte0: ifindex changed from 3 to 30"));
    assert_eq!(o.counts.total(), 0, "re-baselining is not a discard");
    let measuring = o.logs.lines_with("measuring ").first().cloned().unwrap_or_default();
    assert!(measuring.contains("eth1 (ifindex 2, 1000 Mbps, cap 1050.0 Mbps"), "{measuring}");
    assert!(
        measuring.contains(
            "lte0 (ifindex 3, speed unknown, cap 10000.0 Mbps from max_link_mbps, the link speed being unknown"
        ),
        "{measuring}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_above_link_speed_is_discarded_and_counted() {
    let o = scenario(
        &["eth1"],
        "",
        10,
        |t| t.add("eth1", 2, Some(1_000)),
        |i, tree, _| {
            let burst = if i >= 5 { 10_000_000_000 } else { 0 };
            tree.set("eth1", i * RX_PER_TICK + burst, i * TX_PER_TICK)
        },
    )
    .await;
    o.assert_never_above(TRUE_RATE);
    assert_eq!(o.counts.above_cap, 1);
    assert!(o.discarded[0].contains("is above the plausibility cap of 1050.0 Mbps"), "{}", o.discarded[0]);
    assert_eq!(o.samples.len(), 9);
}

#[tokio::test(start_paused = true)]
async fn a_ten_minute_stall_gives_no_sample() {
    let o = scenario(
        &["eth1"],
        "",
        10,
        |t| t.add("eth1", 2, Some(1_000)),
        |i, tree, clock| {
            if i == 5 {
                clock.stall(Duration::from_secs(600));
            }
            // During the stall the link carried the true rate for 10 minutes.
            let extra = if i >= 5 { 120 * RX_PER_TICK } else { 0 };
            tree.set("eth1", i * RX_PER_TICK + extra, i * TX_PER_TICK)
        },
    )
    .await;
    o.assert_never_above(TRUE_RATE);
    assert_eq!(o.counts.elapsed_too_long, 1);
    assert!(o.discarded[0].contains("605.000 s between two readings"), "{}", o.discarded[0]);
}

#[tokio::test(start_paused = true)]
async fn wall_clock_steps_back_and_forward_change_no_rate() {
    let o = scenario(
        &["eth1"],
        "",
        80,
        |t| t.add("eth1", 2, Some(1_000)),
        |i, tree, clock| {
            match i {
                20 => clock.step_wall(-TimeDelta::hours(1)),
                50 => clock.step_wall(TimeDelta::hours(1)),
                _ => {}
            }
            steady(0)(i, tree, clock)
        },
    )
    .await;
    assert_eq!(o.samples, vec![TRUE_RATE; 80], "rates come from the monotonic clock");
    assert_eq!(o.counts.total(), 0);
    let starts: Vec<String> = o.buckets.iter().map(|b| b.start.to_string()).collect();
    assert!(
        starts.contains(&"2026-10-07T09:00:00Z".to_owned()),
        "samples after the step back land an hour earlier: {starts:?}"
    );
    o.assert_never_above(TRUE_RATE);
}

/// R4 in the live sampler: with its WAN interface absent for an hour the agent emits no bucket
/// (no sample is valid), then the first bucket the interface is measured in.
#[tokio::test(start_paused = true)]
async fn an_hour_without_a_wan_interface_emits_no_bucket() {
    let tree = FakeTree::new();
    let clock = TestClock::starting_at("2026-10-07T00:00:00Z");
    let mut meter = meter(tree.config(&["eth1"], ""));
    let (logs, _guard) = Logs::capture();
    drive(&mut meter, &clock, 13 * 60, |i| {
        if i == 12 * 60 {
            tree.add("eth1", 2, Some(1_000));
        }
        if i >= 12 * 60 {
            tree.set("eth1", (i - 12 * 60) * RX_PER_TICK, 0);
        }
    })
    .await;
    let buckets = meter.store().oldest_pending(1_000).unwrap();
    let one_o_clock = BucketStart::from_unix(1_791_331_200 + 3_600).unwrap();
    // Its first reading is its baseline: the bucket's first interval measured nothing either.
    assert_eq!(buckets, [Bucket { start: one_o_clock, max_bps: TRUE_RATE, samples: 59 }]);
    assert_eq!(logs.lines_with("bucket closed").len(), 1);
    assert_eq!(meter.store().discards().unwrap().total(), 0, "nothing measured is not a discard");
}

/// A restart ten minutes after a stop: the first interval spans the stop and is discarded, as
/// expected, at INFO (a field engineer reading WARN lines sees only what needs them); the same
/// gap in the middle of a run stays a WARN (`a_ten_minute_stall_gives_no_sample`).
#[tokio::test(start_paused = true)]
async fn the_first_interval_after_a_restart_is_expected_not_a_warning() {
    let tree = FakeTree::new();
    tree.add("eth1", 2, Some(1_000));
    let clock = TestClock::starting_at("2026-10-07T10:00:00Z");
    let config = tree.config(&["eth1"], "");
    let (logs, _guard) = Logs::capture();
    {
        let mut first = meter(config.clone());
        drive(&mut first, &clock, 6, |i| tree.set("eth1", i * RX_PER_TICK, i * TX_PER_TICK)).await;
    }
    clock.stall(Duration::from_secs(600));
    let mut second = meter(config);
    drive(&mut second, &clock, 6, |i| tree.set("eth1", (130 + i) * RX_PER_TICK, (130 + i) * TX_PER_TICK)).await;
    assert_eq!(second.store().discards().unwrap().elapsed_too_long, 1, "{}", logs.text());
    let expected = logs.lines_with("the first interval after the start spans the time the agent was not running");
    assert_eq!(expected.len(), 1, "{}", logs.text());
    assert!(expected[0].contains("INFO"), "{}", expected[0]);
    assert!(logs.lines_with(" WARN ").is_empty(), "{}", logs.text());
}
