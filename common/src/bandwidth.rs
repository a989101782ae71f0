//! Bandwidth as an integer number of bits per second; Mbps (10^6 bit/s) only for display and for
//! command-line input (Contract).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Bits per second in one Mbps (Contract: 1 Mbps = 10^6 bit/s).
pub const BPS_PER_MBPS: u64 = 1_000_000;

/// A rate in bits per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bandwidth(pub u64);

impl Bandwidth {
    pub const ZERO: Bandwidth = Bandwidth(0);

    pub fn bps(self) -> u64 {
        self.0
    }

    /// `None` when the value does not fit in `u64` bits per second.
    pub fn from_mbps(mbps: u64) -> Option<Self> {
        mbps.checked_mul(BPS_PER_MBPS).map(Bandwidth)
    }
}

/// `123.4 Mbps`: truncated to a tenth, computed on integers so the display never rounds up.
impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / BPS_PER_MBPS;
        let tenths = (self.0 % BPS_PER_MBPS) / (BPS_PER_MBPS / 10);
        write!(f, "{whole}.{tenths} Mbps")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_mbps_truncated_to_a_tenth() {
        assert_eq!(Bandwidth(0).to_string(), "0.0 Mbps");
        assert_eq!(Bandwidth(87_399_999).to_string(), "87.3 Mbps");
        assert_eq!(Bandwidth(u64::MAX).to_string(), "18446744073709.5 Mbps");
    }

    #[test]
    fn mbps_conversion_is_checked() {
        assert_eq!(Bandwidth::from_mbps(20), Some(Bandwidth(20_000_000)));
        assert_eq!(Bandwidth::from_mbps(u64::MAX / 1000), None);
    }
}
