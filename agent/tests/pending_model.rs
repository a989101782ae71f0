//! The agent's pending store against a plain model (a `BTreeMap` of start → bucket merged with
//! max, R10): random closes, re-closes of a bucket already sent (the clock stepped back), batches
//! sent and acknowledged, acknowledgements arriving after a later re-close, and restarts (the
//! store dropped and opened again from its files and journal). After every step the store holds
//! exactly what the model holds: what was acknowledged to the agent itself is kept, and nothing
//! the collector never received is deleted.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tally_agent::store::Store;
use tally_common::bucket::Bucket;
use tally_common::time::BucketStart;

#[derive(Debug, Clone)]
enum Step {
    /// A bucket closes (or closes again) at slot `slot` with `bps`.
    Close { slot: i64, bps: u64, samples: u8 },
    /// The uplink takes the oldest `n` pending buckets as a batch.
    Send { n: usize },
    /// The collector acknowledges the batch sent `back` sends ago (if it is still unanswered).
    Acknowledge { back: usize },
    /// The agent stops and starts again.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0i64..12, 0u64..1_000, 1u8..=60).prop_map(|(slot, bps, samples)| Step::Close { slot, bps, samples }),
        2 => (1usize..6).prop_map(|n| Step::Send { n }),
        2 => (0usize..3).prop_map(|back| Step::Acknowledge { back }),
        1 => Just(Step::Restart),
    ]
}

fn bucket(slot: i64, max_bps: u64, samples: u8) -> Bucket {
    Bucket { start: BucketStart::from_unix(1_791_331_200 + 300 * slot).unwrap(), max_bps, samples }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_pending_store_keeps_exactly_what_the_model_keeps(steps in proptest::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10_000).unwrap().store;
        let mut model: BTreeMap<BucketStart, Bucket> = BTreeMap::new();
        let mut unanswered: Vec<Vec<Bucket>> = Vec::new();
        for step in steps {
            match step {
                Step::Close { slot, bps, samples } => {
                    let closed = bucket(slot, bps, samples);
                    store.add_closed(&[closed]).unwrap();
                    model.entry(closed.start).and_modify(|b| b.merge(&closed)).or_insert(closed);
                }
                Step::Send { n } => unanswered.push(store.oldest_pending(n).unwrap()),
                Step::Acknowledge { back } => {
                    if back < unanswered.len() {
                        let sent = unanswered.remove(unanswered.len() - 1 - back);
                        store.delete_acknowledged(&sent).unwrap();
                        for s in &sent {
                            // The collector has `s`: what the agent holds beyond it stays.
                            if model.get(&s.start).is_some_and(|held| held.max_bps <= s.max_bps && held.samples <= s.samples) {
                                model.remove(&s.start);
                            }
                        }
                    }
                }
                Step::Restart => {
                    drop(store);
                    store = Store::open(dir.path(), 10_000).unwrap().store;
                }
            }
            let held = store.oldest_pending(usize::MAX).unwrap();
            prop_assert_eq!(&held, &model.values().copied().collect::<Vec<_>>());
            prop_assert_eq!(store.pending_count(), model.len());
        }
    }
}
