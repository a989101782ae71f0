//! The group commit: batches of all connections committed together, each connection told its
//! outcome once the commit is on disk (an acknowledgement always means stored).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::REFUSAL_LOG_INTERVAL;
use crate::metrics;
use crate::store::{Ingested, Intake, Store, StoreError};
use crate::throttle::Throttle;

static COMMIT_FAILURES: Throttle = Throttle::new(REFUSAL_LOG_INTERVAL);

/// One batch waiting for the group commit.
pub(super) struct Pending {
    pub(super) intake: Intake,
    pub(super) done: oneshot::Sender<Result<Ingested, StoreError>>,
}

/// Commits queued batches together: whatever is waiting when a commit starts goes into it.
pub(super) async fn group_commit<S: Store>(store: Arc<S>, mut queue: mpsc::Receiver<Pending>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < 256 {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let intakes: Vec<Intake> = group.iter_mut().map(|p| std::mem::take(&mut p.intake)).collect();
        let started = Instant::now();
        let result = store.ingest(&intakes).await.map(|(_, outcomes)| outcomes);
        let metrics = metrics::get();
        metrics.group_commit_seconds.observe(started.elapsed().as_secs_f64());
        if result.is_ok() {
            let stored: usize = intakes.iter().map(|i| i.buckets.len()).sum();
            metrics.buckets_stored.inc_by(stored as u64);
        }
        if let Err(e) = &result
            && let Some(failed) = COMMIT_FAILURES.hit()
        {
            tracing::error!(
                error = %e,
                failed,
                "group commits failed: those batches are not acknowledged, the agents keep them and retry \
                 (logged at most once a minute)"
            );
        }
        for (k, pending) in group.into_iter().enumerate() {
            let _ = pending.done.send(result.as_ref().map(|outcomes| outcomes[k]).map_err(Clone::clone));
        }
    }
}
