//! The LAN's devices of one UTC day (R29): what the capture threads record, what the store keeps
//! until the collector has it ([`LanDay`]), and the days that ended since the last save.

use std::sync::{Arc, Mutex};

use tally_common::lan::Mac;

use super::Via;

/// Today's devices as the capture threads keep them, and the days that ended since the store
/// last saved them ([`Devices::take_changed`]).
#[derive(Debug)]
pub struct Devices {
    pub today: DeviceDay,
    ended: Vec<DeviceDay>,
    /// A device was added (or refused) today since the last save.
    changed: bool,
}

/// Shared by the capture threads and the meter, which saves what changed once a minute.
pub type SharedDevices = Arc<Mutex<Devices>>;

impl Devices {
    /// Resumes `today` as the store kept it (a restart within the day loses none of its devices).
    pub fn new(today: DeviceDay) -> SharedDevices {
        Arc::new(Mutex::new(Devices { today, ended: Vec::new(), changed: false }))
    }

    /// Records a sighting at `now`; the day that ends with it is kept for the store.
    pub fn record(&mut self, mac: Mac, via: Via, now: chrono::DateTime<chrono::Utc>, limit: usize) -> Recorded {
        if self.today.day != now.date_naive() {
            let ended = std::mem::replace(&mut self.today, DeviceDay::new(now.date_naive()));
            if !ended.devices.is_empty() || ended.over_limit > 0 {
                self.ended.push(ended);
            }
        }
        let recorded = self.today.record(mac, via, now.timestamp(), limit);
        self.changed |= recorded != Recorded::Again;
        recorded
    }

    /// The days to save: those that ended, and today if a device was added. A day's last
    /// sightings move without a save; they are saved with its next device or when it ends.
    pub fn take_changed(&mut self) -> Vec<DeviceDay> {
        let mut days = std::mem::take(&mut self.ended);
        if std::mem::take(&mut self.changed) {
            days.push(self.today.clone());
        }
        days
    }

    /// Whether a save has something to write.
    pub fn has_changes(&self) -> bool {
        self.changed || !self.ended.is_empty()
    }

    /// Takes back days that could not be saved (a full disk): saved with the next save.
    pub fn put_back(&mut self, days: Vec<DeviceDay>) {
        for day in days {
            if day.day == self.today.day {
                self.changed = true;
            } else {
                self.ended.push(day);
            }
        }
    }
}

/// A device's sightings on one UTC day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    pub first: i64,
    pub last: i64,
    pub via: Via,
}

/// What [`DeviceDay::record`] did with a sighting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// A device not seen before today.
    New,
    /// Seen before today: its last sighting moved.
    Again,
    /// Today's set is full: not kept, counted; `first` says whether this is the first one
    /// refused today (logged once).
    OverLimit { first: bool },
}

/// The distinct devices of one UTC day, at most `limit` of them (`max_lan_devices_per_day`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceDay {
    pub day: chrono::NaiveDate,
    pub devices: std::collections::BTreeMap<Mac, Seen>,
    /// Sightings of devices not kept because the day was full.
    pub over_limit: u64,
}

impl DeviceDay {
    pub fn new(day: chrono::NaiveDate) -> DeviceDay {
        DeviceDay { day, devices: Default::default(), over_limit: 0 }
    }

    /// Records `mac` seen through `via` at `at` (UNIX seconds, on this day).
    pub fn record(&mut self, mac: Mac, via: Via, at: i64, limit: usize) -> Recorded {
        if let Some(seen) = self.devices.get_mut(&mac) {
            seen.first = seen.first.min(at);
            seen.last = seen.last.max(at);
            return Recorded::Again;
        }
        if self.devices.len() >= limit {
            self.over_limit += 1;
            return Recorded::OverLimit { first: self.over_limit == 1 };
        }
        self.devices.insert(mac, Seen { first: at, last: at, via });
        Recorded::New
    }

    /// How many of today's devices use a locally administered (randomized) address.
    pub fn locally_administered(&self) -> usize {
        self.devices.keys().filter(|mac| mac.is_locally_administered()).count()
    }
}

/// One UTC day's devices on the LAN as the store keeps them until the collector has them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LanDay {
    pub devices: DeviceDay,
    /// Incremented at each save.
    pub version: u64,
    /// The version the collector acknowledged last (0: none).
    pub shipped: u64,
}
