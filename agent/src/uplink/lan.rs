//! A LAN day's devices shipped to the collector (R29, wire protocol 4): the oldest day it lacks,
//! in batches, acknowledged as of the version its first batch was.

use chrono::NaiveDate;
use tally_common::wire::AgentMessage;
use tally_common::wire::lan::{LanAck, LanDevice, LanSightings, MAX_DEVICES_PER_BATCH, MAX_OWN_ADDRESSES};

use super::connection::send;
use super::{InFlight, Link, UplinkError};

/// A LAN day being sent in several batches: its day and the version its first batch was of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LanProgress {
    day: NaiveDate,
    version: u64,
    offset: usize,
}

/// Sends the next batch of the oldest LAN day the collector lacks (R29), if there is one.
pub(super) async fn send_lan_day(
    tx: &mut quinn::SendStream,
    link: &Link,
    seq: &mut u64,
    progress: &mut Option<LanProgress>,
) -> Result<Option<InFlight>, UplinkError> {
    let local = |e: crate::store::StoreError| UplinkError::Local(e.to_string());
    let Some(kept) = link.store.borrow().unshipped_lan_day().map_err(local)? else { return Ok(None) };
    let day = kept.devices.day;
    let started = progress.filter(|p| p.day == day).unwrap_or(LanProgress { day, version: kept.version, offset: 0 });
    *progress = Some(started);
    let devices: Vec<LanDevice> = kept
        .devices
        .devices
        .iter()
        .skip(started.offset)
        .take(MAX_DEVICES_PER_BATCH)
        .map(|(mac, seen)| LanDevice { mac: *mac, first: seen.first, last: seen.last, via: seen.via })
        .collect();
    let sent = devices.len();
    *seq += 1;
    let own = link.own.iter().copied().take(MAX_OWN_ADDRESSES).collect();
    let batch = LanSightings { seq: *seq, day: day.to_epoch_days(), devices, own, over_limit: kept.devices.over_limit };
    send(tx, &AgentMessage::LanSightings(batch)).await?;
    let last = started.offset + sent >= kept.devices.devices.len();
    Ok(Some(InFlight::Lan { day, offset: started.offset, sent, last }))
}

/// The collector has a LAN day's devices up to `through`: when they were the day's `last`, the
/// day is acknowledged as of the version its first batch was.
pub(super) fn lan_acknowledged(
    link: &Link,
    ack: LanAck,
    day: NaiveDate,
    through: usize,
    last: bool,
    progress: &mut Option<LanProgress>,
    today: NaiveDate,
) -> Result<(), crate::store::StoreError> {
    if ack.refused > 0 {
        tracing::warn!(%day, refused = ack.refused, "the collector refused LAN devices (this socket's clock?)");
    }
    let Some(started) = progress.take().filter(|p| p.day == day) else { return Ok(()) };
    if last {
        tracing::debug!(%day, devices = through, "LAN devices acknowledged");
        link.store.borrow().lan_day_shipped(day, started.version, today)
    } else {
        *progress = Some(LanProgress { offset: through, ..started });
        Ok(())
    }
}
