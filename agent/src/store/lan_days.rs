//! The LAN's days as the store keeps them until the collector has them (R29): one record per
//! UTC day under `lan/` + the day, with the version saved last and the version acknowledged.

use chrono::NaiveDate;

use super::{Sled, Store, StoreError, encode};
use crate::lan::LanDay;

const LAN_DAY_PREFIX: &[u8] = b"lan/";

impl Store {
    /// The LAN's day `day` as saved ([`Store::save_state`]).
    pub fn lan_day(&self, day: NaiveDate) -> Option<LanDay> {
        self.sled.as_ref().and_then(|sled| lan_record(sled, &lan_day_key(day)))
    }

    /// The oldest LAN day the collector has not acknowledged in its latest version.
    pub fn unshipped_lan_day(&self) -> Result<Option<LanDay>, StoreError> {
        let Some(sled) = &self.sled else { return Ok(None) };
        for entry in sled.db.scan_prefix(LAN_DAY_PREFIX) {
            let (key, value) = entry?;
            match postcard::from_bytes::<LanDay>(&value) {
                Ok(day) if day.shipped < day.version => return Ok(Some(day)),
                Ok(_) => {}
                // Damaged: dropped, so that it neither stops the uplink nor comes back.
                Err(_) => {
                    sled.db.remove(&key)?;
                }
            }
        }
        Ok(None)
    }

    /// The collector acknowledged `day` as of `version`: a day before `today` acknowledged in
    /// its latest version is deleted. Only flushed: a lost acknowledgement sends the day again,
    /// which the collector merges (R29).
    pub fn lan_day_shipped(&self, day: NaiveDate, version: u64, today: NaiveDate) -> Result<(), StoreError> {
        let Some(sled) = &self.sled else { return Ok(()) };
        let key = lan_day_key(day);
        let Some(mut kept) = lan_record(sled, &key) else { return Ok(()) };
        kept.shipped = kept.shipped.max(version);
        if day < today && kept.shipped >= kept.version {
            sled.db.remove(&key)?;
        } else {
            sled.db.insert(&key, encode(&kept))?;
        }
        sled.db.flush()?;
        Ok(())
    }

    /// Drops the LAN days before `oldest` (a collector unreachable for longer than the
    /// retention); returns how many.
    pub fn drop_lan_days_before(&self, oldest: NaiveDate) -> Result<usize, StoreError> {
        let Some(sled) = &self.sled else { return Ok(0) };
        let old: Vec<sled::IVec> =
            sled.db.range(lan_day_key(NaiveDate::MIN)..lan_day_key(oldest)).keys().collect::<Result<_, _>>()?;
        for key in &old {
            sled.db.remove(key)?;
        }
        Ok(old.len())
    }
}

/// A LAN day as kept; `None` when there is none, or when it is damaged (it is then written anew:
/// a day's devices are counted again from its next sightings, and no bucket depends on them).
pub(super) fn lan_record(sled: &Sled, key: &[u8]) -> Option<LanDay> {
    sled.get(key).ok().flatten()
}

pub(super) fn lan_day_key(day: NaiveDate) -> Vec<u8> {
    let mut key = LAN_DAY_PREFIX.to_vec();
    key.extend_from_slice(&((day.to_epoch_days() as u32) ^ (1 << 31)).to_be_bytes());
    key
}
