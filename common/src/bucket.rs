//! 5-minute buckets (R2, R4): the max of a bucket's valid samples, with their count.
//!
//! [`Bucketizer`] closes a bucket as soon as an interval reaches its end; a bucket without a
//! valid sample is never emitted. Its open bucket can be saved and restored, so a restart in the
//! middle of a bucket loses nothing.

use serde::{Deserialize, Serialize};

use crate::sampler::Interval;
use crate::time::{BucketStart, SAMPLES_PER_BUCKET};

/// A bucket's value: the max of its valid samples and how many there were (R4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub start: BucketStart,
    pub max_bps: u64,
    /// Valid samples, `0..=60`; a closed bucket always has at least one.
    pub samples: u8,
}

impl Bucket {
    /// Merges another value of the same bucket: the max, and the larger sample count (R10).
    pub fn merge(&mut self, other: &Bucket) {
        self.max_bps = self.max_bps.max(other.max_bps);
        self.samples = self.samples.max(other.samples);
    }
}

/// Groups intervals into buckets by their start (R2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucketizer {
    open: Option<Bucket>,
}

/// What one interval closed: at most the bucket it left and the bucket it completed.
pub type Closed = heapless::Vec<Bucket, 2>;

impl Bucketizer {
    /// Resumes with a saved open bucket.
    pub fn restore(open: Option<Bucket>) -> Self {
        Bucketizer { open }
    }

    /// The bucket being filled, to save or to show.
    pub fn open(&self) -> Option<&Bucket> {
        self.open.as_ref()
    }

    /// Adds an interval (valid or not) to the bucket containing its start. Returns the buckets
    /// that closed: the open one if the interval starts in another bucket (a clock step), and
    /// the interval's own bucket if the interval reaches its end. Empty buckets are dropped (R4).
    pub fn push(&mut self, interval: &Interval) -> Closed {
        let mut closed = Closed::new();
        let start = BucketStart::containing(interval.start);
        let bucket = match &mut self.open {
            Some(open) if open.start == start => open,
            other => {
                if let Some(left) = other.take().filter(|b| b.samples > 0) {
                    let _ = closed.push(left);
                }
                other.insert(Bucket { start, max_bps: 0, samples: 0 })
            }
        };
        if let Some(bps) = interval.bps() {
            bucket.max_bps = bucket.max_bps.max(bps);
            bucket.samples = bucket.samples.saturating_add(1).min(SAMPLES_PER_BUCKET);
        }
        if interval.end >= start.end()
            && let Some(done) = self.open.take().filter(|b| b.samples > 0)
        {
            let _ = closed.push(done);
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeDelta, Utc};

    use super::*;
    use crate::sampler::{DiscardReason, NoSample, Sample};

    fn interval(start: &str, bps: Option<u64>) -> Interval {
        let start: DateTime<Utc> = start.parse().unwrap();
        Interval {
            start,
            end: start + TimeDelta::seconds(5),
            outcome: bps
                .map(|b| Sample { up_bps: b, down_bps: b / 2 })
                .ok_or(NoSample::Discarded(DiscardReason::AboveCap)),
        }
    }

    #[test]
    fn a_bucket_is_the_max_of_its_valid_samples_and_closes_at_its_end() {
        let mut b = Bucketizer::default();
        let t0: DateTime<Utc> = "2026-10-01T10:00:00Z".parse().unwrap();
        for i in 0..59 {
            let start = t0 + TimeDelta::seconds(5 * i);
            let bps = if i == 7 { None } else { Some(1_000 + i as u64) };
            let mut iv = interval("2026-10-01T10:00:00Z", bps);
            iv.start = start;
            iv.end = start + TimeDelta::seconds(5);
            assert!(b.push(&iv).is_empty(), "still open at {start}");
        }
        let closed = b.push(&interval("2026-10-01T10:04:55Z", Some(5)));
        assert_eq!(closed.as_slice(), &[Bucket { start: BucketStart::containing(t0), max_bps: 1_058, samples: 59 }]);
        assert_eq!(b.open(), None);
    }

    #[test]
    fn a_bucket_without_a_valid_sample_is_not_emitted() {
        let mut b = Bucketizer::default();
        b.push(&interval("2026-10-01T10:00:00Z", None));
        assert!(b.push(&interval("2026-10-01T10:04:55Z", None)).is_empty());
    }

    #[test]
    fn a_clock_step_closes_the_open_bucket() {
        let mut b = Bucketizer::restore(Some(Bucket {
            start: BucketStart::from_unix(1_790_000_100).unwrap(),
            max_bps: 9,
            samples: 3,
        }));
        let closed = b.push(&interval("2026-10-01T10:00:00Z", Some(7)));
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].max_bps, 9);
        assert_eq!(b.open().unwrap().max_bps, 7);
    }
}
