//! What `tally-agent status` shows of the store: its pending buckets for the running agent's
//! status, and a stopped agent's whole status.

use std::path::Path;

use super::{Store, StoreError};
use crate::status::{BucketView, Pending, PolicyStatus, Status, UplinkStatus};

impl Store {
    /// The count of pending buckets, the oldest one's start and why they are in memory, read
    /// together so they always agree.
    pub fn pending_summary(&self) -> Result<Pending, StoreError> {
        Ok(Pending {
            count: self.pending_count(),
            oldest: self.oldest_pending(1)?.first().map(|b| b.start.to_string()),
            disk_full: self.full().map(str::to_owned),
        })
    }

    /// The status of a stopped agent whose store this is, in `store_dir`; `enrolled_to`: the
    /// collector its identity names.
    pub fn stopped_status(&self, store_dir: &Path, enrolled_to: Option<&str>) -> Result<Status, StoreError> {
        let mut status = Status {
            running: false,
            agent_version: crate::AGENT_VERSION.into(),
            store: store_dir.display().to_string(),
            interfaces: Vec::new(),
            last_sample: None,
            open_bucket: self.open_bucket()?.as_ref().map(BucketView::from),
            pending_buckets: 0,
            oldest_pending: None,
            discarded: self.discards()?,
            dropped_buckets: self.dropped()?,
            quarantined_buckets: self.quarantined()?,
            disk_full: None,
            uplink: enrolled_to.map(|c| UplinkStatus::enrolled(c, "not running")),
            policy: self.policy()?.map(|p| PolicyStatus {
                version: p.version,
                cap_bps: p.cap_bps,
                applied: None,
                detail: "the agent is not running; it applies this policy when it starts".into(),
                at: None,
            }),
            // Kept by the running agent only, for now.
            lan: None,
        };
        status.set_pending(self.pending_summary()?);
        Ok(status)
    }
}
