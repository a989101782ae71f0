//! Version 4: the devices a socket saw on its LAN (R29), shipped like buckets: in batches the
//! collector acknowledges only after committing, replayed after an outage, merged so that a
//! batch sent twice counts once.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::lan::{Mac, Protocol};

/// At most this many devices in one [`LanSightings`]; a fuller day goes in several.
pub const MAX_DEVICES_PER_BATCH: usize = 1_024;
/// At most this many of the socket's own addresses.
pub const MAX_OWN_ADDRESSES: usize = 64;

/// One UTC day's devices of one socket, with the socket's own hardware addresses (the collector
/// excludes every socket's of the account, an HA peer's among them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanSightings {
    /// Chosen by the agent, echoed in the [`LanAck`].
    pub seq: u64,
    /// Days since 1970-01-01 (UTC).
    pub day: i32,
    pub devices: Vec<LanDevice>,
    pub own: Vec<Mac>,
    /// Sightings of devices the agent did not keep because the day was full.
    pub over_limit: u64,
}

/// A device's sightings on the batch's day, seconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanDevice {
    pub mac: Mac,
    pub first: i64,
    pub last: i64,
    pub via: Protocol,
}

/// The collector committed a [`LanSightings`]; the agent may forget it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanAck {
    pub seq: u64,
    /// Devices refused (not a device's address, or sightings outside the day).
    pub refused: u32,
}

/// Why a whole batch is refused: the connection ends with a protocol violation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LanBatchError {
    #[error("{0} devices in one batch (at most {MAX_DEVICES_PER_BATCH})")]
    TooManyDevices(usize),
    #[error("{0} own addresses (at most {MAX_OWN_ADDRESSES})")]
    TooManyOwnAddresses(usize),
    #[error("day {0} is not a date")]
    NotADate(i32),
    #[error("{0} is later than the collector's today, or older than it keeps")]
    OutOfRange(NaiveDate),
}

impl LanSightings {
    /// The batch's day, and its devices that are sound: a device's address, not the socket's own,
    /// seen within the day, first no later than last. The rest are counted as refused.
    pub fn check(
        &self,
        now: DateTime<Utc>,
        max_age: TimeDelta,
    ) -> Result<(NaiveDate, Vec<LanDevice>, u32), LanBatchError> {
        if self.devices.len() > MAX_DEVICES_PER_BATCH {
            return Err(LanBatchError::TooManyDevices(self.devices.len()));
        }
        if self.own.len() > MAX_OWN_ADDRESSES {
            return Err(LanBatchError::TooManyOwnAddresses(self.own.len()));
        }
        let day = NaiveDate::from_epoch_days(self.day).ok_or(LanBatchError::NotADate(self.day))?;
        // A socket's clock a few minutes ahead may see tomorrow first.
        if day > (now + TimeDelta::minutes(10)).date_naive() || day < (now - max_age).date_naive() {
            return Err(LanBatchError::OutOfRange(day));
        }
        let start = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp()).unwrap_or(i64::MAX);
        let within = |t: i64| t >= start && t < start.saturating_add(86_400);
        let (sound, refused): (Vec<LanDevice>, Vec<LanDevice>) = self.devices.iter().partition(|d| {
            d.mac.is_device() && !self.own.contains(&d.mac) && d.first <= d.last && within(d.first) && within(d.last)
        });
        Ok((day, sound, refused.len() as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn a_batch_keeps_its_sound_devices_and_counts_the_rest() {
        let now = at("2026-11-30T23:59:59Z");
        let day = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let start = day.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp();
        let device = |n: u8, first: i64, last: i64| LanDevice {
            mac: Mac([0, 0x1b, 0x21, 0, 0, n]),
            first,
            last,
            via: Protocol::Arp,
        };
        let own = Mac([0, 0x1b, 0x21, 0, 0, 9]);
        let batch = LanSightings {
            seq: 1,
            day: day.to_epoch_days(),
            devices: vec![
                device(1, start, start + 10),
                device(2, start + 86_399, start + 86_399),
                device(3, start - 1, start + 5),   // before the day
                device(4, start + 20, start + 10), // last before first
                device(9, start, start),           // the socket's own
                LanDevice { mac: Mac([0xff; 6]), first: start, last: start, via: Protocol::Dhcp },
            ],
            own: vec![own],
            over_limit: 0,
        };
        let (checked_day, sound, refused) = batch.check(now, TimeDelta::days(40)).unwrap();
        assert_eq!((checked_day, sound.len(), refused), (day, 2, 4));
        assert!(sound.iter().all(|d| d.mac.0[5] <= 2));
        // Tomorrow's batch from a clock a little ahead; the day after from a wrong clock.
        let tomorrow = LanSightings { day: day.to_epoch_days() + 1, devices: vec![], ..batch.clone() };
        assert!(tomorrow.check(now, TimeDelta::days(40)).is_ok());
        let later = LanSightings { day: day.to_epoch_days() + 2, ..tomorrow.clone() };
        assert!(matches!(later.check(now, TimeDelta::days(40)), Err(LanBatchError::OutOfRange(_))));
        let old = LanSightings { day: day.to_epoch_days() - 41, ..tomorrow.clone() };
        assert!(matches!(old.check(now, TimeDelta::days(40)), Err(LanBatchError::OutOfRange(_))));
        let huge = LanSightings { devices: vec![device(1, start, start); MAX_DEVICES_PER_BATCH + 1], ..tomorrow };
        assert_eq!(huge.check(now, TimeDelta::days(40)), Err(LanBatchError::TooManyDevices(1_025)));
    }
}
