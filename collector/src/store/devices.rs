//! The devices sockets saw on their LANs (R29), and the device meter's rule (R13): one device per
//! hardware address across every source, the account's sockets excluded.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};
use tally_common::lan::Mac;
use tally_common::wire::lan::LanDevice;

use super::StoreError;

/// The source of a sighting: what the API's `device_sighting` events say, and the agents' own.
pub const LAN_DISCOVERY: &str = "lan_discovery";

/// What a month's device meter is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonthDevices {
    /// Each device counted (by the API's events, or seen on a LAN) with its source; the same
    /// device may come from several. An event stored before sources were kept has none.
    pub seen: Vec<(String, Option<String>)>,
    /// The hardware addresses of the account's sockets, as their agents reported them.
    pub sockets: Vec<String>,
}

/// An account's distinct devices in a month (R13, R29).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceCount {
    pub total: u64,
    /// Distinct devices by source; a device seen by two sources is in both, and once in `total`.
    pub by_source: BTreeMap<String, u64>,
    /// Of `total`, those with a locally administered (randomized, private) hardware address.
    pub locally_administered: u64,
}

impl MonthDevices {
    /// The meter: a device is its hardware address when it has one (`AA-BB-…` and `aa:bb:…` are
    /// one device), its name otherwise; a socket's own address is never a device.
    pub fn count(&self) -> DeviceCount {
        let canonical = |subject: &str| match subject.parse::<Mac>() {
            Ok(mac) => (mac.to_string(), Some(mac)),
            Err(_) => (subject.to_owned(), None),
        };
        let sockets: BTreeSet<String> = self.sockets.iter().map(|s| canonical(s).0).collect();
        let mut devices: BTreeMap<String, Option<Mac>> = BTreeMap::new();
        let mut by_source: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (subject, source) in &self.seen {
            let (device, mac) = canonical(subject);
            if sockets.contains(&device) {
                continue;
            }
            if let Some(source) = source {
                by_source.entry(source.clone()).or_default().insert(device.clone());
            }
            devices.insert(device, mac);
        }
        DeviceCount {
            total: devices.len() as u64,
            by_source: by_source.into_iter().map(|(source, devices)| (source, devices.len() as u64)).collect(),
            locally_administered: devices.values().flatten().filter(|mac| mac.is_locally_administered()).count() as u64,
        }
    }
}

/// Devices seen on the sockets' LANs (R29).
pub trait DeviceStore: Send + Sync {
    /// Keeps one UTC day's devices of `site` (merged with what is kept: the earliest first and
    /// the latest last sighting) and the socket's own addresses, in one transaction.
    fn add_lan_sightings(
        &self,
        site: &str,
        day: NaiveDate,
        devices: &[LanDevice],
        own: &[Mac],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// `account`'s devices of `month` (`YYYY-MM`) from every source, and its sockets' addresses.
    fn month_devices(
        &self,
        account: &str,
        month: &str,
    ) -> impl Future<Output = Result<MonthDevices, StoreError>> + Send;
    /// How many of `account`'s LAN sightings of `month` first arrived after `since` (its
    /// finalization: late, R33).
    fn lan_sightings_received_after(
        &self,
        account: &str,
        month: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Forgets the hardware addresses seen before `day`, and the sockets' not reported since
    /// (personal data, kept only as long as billing needs it); returns the sightings forgotten.
    fn forget_lan_sightings_before(&self, day: NaiveDate) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_counts_once_across_sources_and_sockets_never() {
        let seen = |subject: &str, source: Option<&str>| (subject.to_owned(), source.map(str::to_owned));
        let month = MonthDevices {
            seen: vec![
                seen("00:1b:21:00:00:01", Some(LAN_DISCOVERY)),
                seen("00-1B-21-00-00-01", Some("inline")), // the same device, through the API
                seen("02:1b:21:00:00:02", Some(LAN_DISCOVERY)), // private address
                seen("laptop-7", Some("integration")),
                seen("laptop-8", None),
                seen("00:1b:21:00:00:99", Some(LAN_DISCOVERY)), // the HA peer: a socket
            ],
            sockets: vec!["00:1B:21:00:00:99".into()],
        };
        let count = month.count();
        assert_eq!((count.total, count.locally_administered), (4, 1));
        let by_source: Vec<(&str, u64)> = count.by_source.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        assert_eq!(by_source, [("inline", 1), ("integration", 1), (LAN_DISCOVERY, 2)]);
        assert_eq!(MonthDevices::default().count(), DeviceCount::default());
    }
}
