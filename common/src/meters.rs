//! The meters other than the bandwidth pool (R12, R13): what was measured in a calendar month
//! against what is licensed, the excess, and the purchase that would cover it.

use serde::{Deserialize, Serialize};

use crate::kinds::{LicenseKind, ZtnaRegion};

/// One meter's month.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MeterMonth {
    pub license: LicenseKind,
    /// Distinct users or devices, or the peak hourly event count (Data Lake).
    pub measured: u64,
    /// Capacity in the same unit (R8: the largest total in force on any day of the month).
    pub licensed: u64,
    /// `max(0, measured − licensed)`.
    pub excess: u64,
    /// What to buy to cover the excess, in the license's own quantity (users, devices in whole
    /// blocks, data units); 0 without excess.
    pub required_purchase: u64,
}

impl MeterMonth {
    /// A meter counted in the license's own unit (AI Security users, DEM users).
    pub fn simple(license: LicenseKind, measured: u64, licensed: u64) -> MeterMonth {
        let excess = measured.saturating_sub(licensed);
        MeterMonth { license, measured, licensed, excess, required_purchase: excess }
    }
}

/// ZTNA users (R12): bought per region, but the excess is taken over the whole account:
/// `max(0, Σ distinct users − Σ licensed users)`. With 80 + 20 licensed and 90 + 10 measured
/// the account is within its 100.
pub fn ztna_users(measured: &[(ZtnaRegion, u64)], licensed: &[(ZtnaRegion, u64)]) -> MeterMonth {
    let total = |by: &[(ZtnaRegion, u64)]| by.iter().fold(0u64, |sum, (_, n)| sum.saturating_add(*n));
    MeterMonth::simple(LicenseKind::ZtnaUsers, total(measured), total(licensed))
}

/// Devices (R13, R32): licensed in blocks of `block_size`; over capacity, the purchase is what
/// the smallest whole number of blocks covering the measured devices adds to the licensed ones:
/// `ceil(measured / block) × block − licensed`.
pub fn devices(measured: u64, licensed: u64, block_size: u64) -> MeterMonth {
    let excess = measured.saturating_sub(licensed);
    let block = block_size.max(1);
    let required_purchase = match excess {
        0 => 0,
        _ => measured.div_ceil(block).saturating_mul(block).saturating_sub(licensed),
    };
    MeterMonth { license: LicenseKind::Devices, measured, licensed, excess, required_purchase }
}

/// Data Lake (R13): the measured rate is the highest event count of any UTC hour; capacity is
/// `units × per_unit` events per hour; the purchase is the data units beyond the licensed ones
/// that `ceil(rate / per_unit)` requires. Here `licensed` and `excess` are in events per hour.
pub fn data_lake(peak_hour_events: u64, licensed_units: u64, per_unit: u64) -> MeterMonth {
    let per_unit = per_unit.max(1);
    let capacity = licensed_units.saturating_mul(per_unit);
    let required_units = peak_hour_events.div_ceil(per_unit);
    MeterMonth {
        license: LicenseKind::DataLake,
        measured: peak_hour_events,
        licensed: capacity,
        excess: peak_hour_events.saturating_sub(capacity),
        required_purchase: required_units.saturating_sub(licensed_units),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_articles_ztna_example_is_within_capacity() {
        let licensed = [(ZtnaRegion::General, 80), (ZtnaRegion::China, 20)];
        let measured = [(ZtnaRegion::General, 90), (ZtnaRegion::China, 10)];
        let m = ztna_users(&measured, &licensed);
        assert_eq!((m.measured, m.licensed, m.excess, m.required_purchase), (100, 100, 0, 0));
        let m = ztna_users(&[(ZtnaRegion::General, 95), (ZtnaRegion::China, 10)], &licensed);
        assert_eq!((m.excess, m.required_purchase), (5, 5));
    }

    #[test]
    fn devices_round_up_to_whole_blocks() {
        assert_eq!(devices(100, 100, 50).required_purchase, 0);
        assert_eq!(devices(101, 100, 50).required_purchase, 50);
        assert_eq!(devices(150, 100, 50).required_purchase, 50);
        assert_eq!(devices(151, 100, 50).required_purchase, 100);
        assert_eq!(devices(151, 100, 50).excess, 51);
        // R32: blocks cover the measured devices, not the excess alone: 120 licensed (not whole
        // blocks), 121 measured: 3 blocks of 50 = 150 cover them, 30 more than licensed.
        assert_eq!(devices(121, 120, 50).required_purchase, 30);
        assert_eq!(devices(120, 120, 50).required_purchase, 0);
    }

    #[test]
    fn data_lake_units_round_up() {
        // 2 units of 1,000 events/hour; a peak hour of 2,001 needs 3 units: buy 1.
        let m = data_lake(2_001, 2, 1_000);
        assert_eq!((m.licensed, m.excess, m.required_purchase), (2_000, 1, 1));
        assert_eq!(data_lake(2_000, 2, 1_000).required_purchase, 0);
        assert_eq!(data_lake(4_500, 2, 1_000).required_purchase, 3);
        // The figures: 2 units × 1,000/h and a peak hour of 4,500: 2,500 events/hour
        // over, and 3 data units to buy (R32), never 2,500.
        let m = data_lake(4_500, 2, 1_000);
        assert_eq!((m.excess, m.required_purchase), (2_500, 3));
    }
}
