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
