//! A measuring agent's connection after `Welcome`: its batches checked and committed, its LAN's
//! devices kept (R29), its policy pushed when it changes and its reports stored (R17).

use tally_common::lan::Mac;
use tally_common::wire::lan::{LanAck, LanBatchError, LanSightings};
use tally_common::wire::{
    Ack, AckV2, AgentMessage, Bounds, Checked, CollectorMessage, ErrorCode, Policy, PolicyApplied, RefusedBucket,
    StampedBatch, StampedBucket,
};
use tokio::sync::{mpsc, oneshot};

use super::frames::{Frames, refuse, send};
use super::group_commit::Pending;
use super::{Limits, MAX_REPORT_DETAIL};
use crate::enforcement::push;
use crate::metrics;
use crate::store::{Intake, Measured, PolicyReport, SitePolicy, Store, StoreError};

/// A measuring agent's connection, after `Welcome`.
pub(super) struct Agent<'a, S> {
    pub(super) conn: &'a quinn::Connection,
    pub(super) tx: &'a mut quinn::SendStream,
    pub(super) frames: &'a mut Frames,
    pub(super) site: &'a str,
    /// The protocol version spoken on this connection.
    pub(super) version: u16,
    pub(super) store: &'a S,
    /// The agent's last report on its policy (version, success, detail): the same one again is
    /// kept, not logged twice.
    pub(super) last_report: Option<(u64, bool, String)>,
}

/// What the connection waits for.
enum Event {
    Frame(Result<Option<AgentMessage>, ErrorCode>),
    PolicyChanged,
}

impl<S: Store> Agent<'_, S> {
    /// Sends the site's policy, then ingests batches and pushes policy changes until the agent
    /// leaves or breaks the protocol.
    pub(super) async fn serve(
        mut self,
        mut policy: push::Subscription,
        commits: &mpsc::Sender<Pending>,
        limits: &Limits,
    ) {
        // Subscribed before reading, so no change can fall between the read and the subscription.
        let current = match self.store.policy(self.site).await {
            Ok(Some(current)) => current,
            Ok(None) => return self.refuse(ErrorCode::UnknownCertificate, "this site no longer exists".into()).await,
            Err(e) => return self.refuse(ErrorCode::Internal, e.to_string()).await,
        };
        let mut sent = current.version;
        if self.push(&current).await.is_err() {
            return;
        }
        loop {
            let event = tokio::select! {
                frame = self.frames.next() => Event::Frame(frame),
                Ok(()) = policy.changes.changed() => Event::PolicyChanged,
            };
            let batch = match event {
                Event::PolicyChanged => {
                    let changed = policy.changes.borrow_and_update().clone();
                    if let Some(changed) = changed.filter(|p| p.version > sent) {
                        sent = changed.version;
                        if self.push(&changed).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                Event::Frame(Ok(Some(AgentMessage::Buckets(batch)))) => StampedBatch::from(batch),
                Event::Frame(Ok(Some(AgentMessage::StampedBuckets(batch)))) => batch,
                Event::Frame(Ok(Some(AgentMessage::PolicyApplied(report)))) => {
                    self.record(report).await;
                    continue;
                }
                Event::Frame(Ok(Some(AgentMessage::LanSightings(sightings)))) if self.version >= 4 => {
                    if self.keep_lan_sightings(sightings, limits).await.is_err() {
                        return;
                    }
                    continue;
                }
                Event::Frame(Ok(Some(_))) => {
                    tracing::warn!("protocol violation: unexpected message after Hello");
                    return self.refuse(ErrorCode::ProtocolViolation, "unexpected message".into()).await;
                }
                Event::Frame(Ok(None)) => {
                    tracing::info!("agent disconnected");
                    return;
                }
                Event::Frame(Err(code)) => {
                    tracing::warn!(%code, "closing the connection: bad frame");
                    return self.refuse(code, "a frame from this agent could not be read".into()).await;
                }
            };
            if self.ingest(batch, commits, limits).await.is_err() {
                return;
            }
        }
    }

    async fn refuse(self, code: ErrorCode, message: String) {
        refuse(self.conn, Some(self.tx), code, message).await
    }

    async fn push(&mut self, policy: &SitePolicy) -> Result<(), ()> {
        tracing::info!(version = policy.version, cap_bps = policy.cap_bps, "policy sent");
        send(self.tx, &CollectorMessage::Policy(Policy { version: policy.version, cap_bps: policy.cap_bps })).await
    }

    /// Keeps the agent's report on its policy (its detail cut to [`MAX_REPORT_DETAIL`] characters),
    /// logged once per connection while it says the same.
    async fn record(&mut self, report: PolicyApplied) {
        let detail: String = report.detail.chars().take(MAX_REPORT_DETAIL).collect();
        let said = (report.version, report.ok, detail.clone());
        if self.last_report.as_ref() == Some(&said) {
            tracing::debug!(version = report.version, %detail, "the same policy report again");
        } else if report.ok {
            tracing::info!(version = report.version, %detail, "policy applied");
        } else {
            tracing::warn!(version = report.version, %detail, "the agent could not apply its policy");
        }
        self.last_report = Some(said);
        let report = PolicyReport { version: report.version, ok: report.ok, detail, at: crate::clock::now() };
        if let Err(e) = self.store.record_policy_report(self.site, &report).await {
            tracing::error!(error = %e, "the agent's policy report was not stored");
        }
    }

    /// Keeps one day's devices of the socket's LAN (R29) and acknowledges them. A day out of
    /// range (a wrong clock, or a backlog older than buckets are kept) is acknowledged as refused,
    /// so it never wedges the agent; a batch over the bounds ends the connection.
    async fn keep_lan_sightings(&mut self, sightings: LanSightings, limits: &Limits) -> Result<(), ()> {
        let seq = sightings.seq;
        let (day, devices, refused) = match sightings.check(crate::clock::now(), limits.max_bucket_age) {
            Ok(checked) => checked,
            Err(LanBatchError::OutOfRange(day)) => {
                tracing::warn!(%day, devices = sightings.devices.len(), "LAN devices refused: their day is out of range (the socket's clock?)");
                let refused = u32::try_from(sightings.devices.len()).unwrap_or(u32::MAX);
                return send(self.tx, &CollectorMessage::LanAck(LanAck { seq, refused })).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "protocol violation: a batch of LAN devices over the bounds");
                refuse(self.conn, Some(&mut *self.tx), ErrorCode::ProtocolViolation, e.to_string()).await;
                return Err(());
            }
        };
        let own: Vec<Mac> = sightings.own.iter().copied().filter(|mac| mac.is_device()).collect();
        match self.store.add_lan_sightings(self.site, day, &devices, &own).await {
            Ok(()) => {}
            Err(StoreError::Unavailable(why)) => {
                let message = format!("the LAN devices were not stored ({why}): retry later");
                refuse(self.conn, Some(&mut *self.tx), ErrorCode::StoreUnavailable, message).await;
                return Err(());
            }
            Err(e) => {
                tracing::error!(error = %e, "the LAN devices were not stored");
                refuse(self.conn, Some(&mut *self.tx), ErrorCode::Internal, "the store did not commit".into()).await;
                return Err(());
            }
        }
        if refused > 0 {
            tracing::warn!(%day, refused, "LAN devices refused: not a device's address, or seen outside their day");
        }
        tracing::debug!(%day, devices = devices.len(), over_limit = sightings.over_limit, "LAN devices stored");
        send(self.tx, &CollectorMessage::LanAck(LanAck { seq, refused })).await
    }

    /// Checks a batch bucket by bucket, commits what it brings, acknowledges. `Err`: the
    /// connection is over.
    async fn ingest(
        &mut self,
        batch: StampedBatch,
        commits: &mpsc::Sender<Pending>,
        limits: &Limits,
    ) -> Result<(), ()> {
        let bounds =
            Bounds { now: crate::clock::now(), max_age: limits.max_bucket_age, max_bps: limits.max_bucket_bps };
        let mut intake = Intake { site: self.site.to_owned(), discards: batch.discarded, ..Intake::default() };
        let mut refused = Vec::new();
        let metrics = metrics::get();
        metrics.buckets_received.inc_by(batch.buckets.len() as u64);
        for &StampedBucket { bucket: wire, policy_version } in &batch.buckets {
            match wire.check(&bounds) {
                Checked::Valid(bucket) => intake.buckets.push(Measured { bucket, policy_version }),
                Checked::WrongTime(bucket, reason) => intake.wrong_time.push((bucket, reason)),
                Checked::Invalid(reason) => {
                    metrics.bucket_refused(reason);
                    intake.refused.push(reason);
                    refused.push(RefusedBucket { start: wire.start, reason });
                }
            }
        }
        if let Some(first) = refused.first() {
            tracing::warn!(refused = refused.len(), first = ?first, "buckets refused");
        }
        if let Some((first, reason)) = intake.wrong_time.first() {
            let (buckets, offset_s) = (intake.wrong_time.len(), (first.start.time() - bounds.now).num_seconds());
            tracing::warn!(
                buckets, first = %first.start, %reason, offset_s,
                "buckets quarantined for their time: is the socket's clock wrong? (`site intake` shows them)"
            );
        }
        let wrong_time: Vec<RefusedBucket> = intake
            .wrong_time
            .iter()
            .map(|(b, reason)| RefusedBucket { start: b.start.unix(), reason: *reason })
            .collect();
        let (done, committed) = oneshot::channel();
        if commits.send(Pending { intake, done }).await.is_err() {
            refuse(self.conn, Some(&mut *self.tx), ErrorCode::ShuttingDown, "collector shutting down".into()).await;
            return Err(());
        }
        let ingested = match committed.await {
            Ok(Ok(ingested)) => ingested,
            Ok(Err(StoreError::Unavailable(why))) => {
                let message = format!("the batch was not stored ({why}): retry later");
                refuse(self.conn, Some(&mut *self.tx), ErrorCode::StoreUnavailable, message).await;
                return Err(());
            }
            _ => {
                refuse(self.conn, Some(&mut *self.tx), ErrorCode::Internal, "the store did not commit".into()).await;
                return Err(());
            }
        };
        let (first, last) =
            (batch.buckets.first().map(|b| b.bucket.start), batch.buckets.last().map(|b| b.bucket.start));
        tracing::debug!(seq = batch.seq, buckets = batch.buckets.len(), first, last, "batch committed");
        // A full quarantine keeps none of the rest: they are refused, and counted.
        let (quarantined, over) = wrong_time.split_at(ingested.quarantined);
        metrics.buckets_quarantined.inc_by(quarantined.len() as u64);
        over.iter().for_each(|r| metrics.bucket_refused(r.reason));
        refused.extend_from_slice(over);
        let ack = if self.version == 1 {
            let refused = refused
                .into_iter()
                .chain(quarantined.iter().copied())
                .map(|r| RefusedBucket { reason: r.reason.for_version(1), ..r })
                .collect();
            CollectorMessage::Ack(Ack { seq: batch.seq, refused })
        } else {
            CollectorMessage::AckV2(AckV2 { seq: batch.seq, refused, quarantined: quarantined.to_vec() })
        };
        send(self.tx, &ack).await
    }
}
