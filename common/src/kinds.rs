//! The Contract's identifiers: site types, license kinds and ZTNA regions, with their JSON and
//! command-line spellings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Defines a closed set of identifiers with one spelling shared by serde, `Display` and `FromStr`.
macro_rules! identifiers {
    ($(#[$meta:meta])* $name:ident $human:literal { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        /// In OpenAPI documents: a string, one of the spellings.
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some($name::ALL.iter().map(|v| v.as_str())))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = $crate::kinds::UnknownIdentifier;
            fn from_str(s: &str) -> Result<Self, $crate::kinds::UnknownIdentifier> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| $crate::kinds::UnknownIdentifier {
                    what: $human,
                    given: s.to_owned(),
                    expected: $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                })
            }
        }
    };
}
pub(crate) use identifiers;

/// A string that is none of a set's identifiers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not a valid {what}; expected one of: {expected}")]
pub struct UnknownIdentifier {
    pub what: &'static str,
    pub given: String,
    pub expected: String,
}

identifiers! {
    /// How a site connects (R17 decides which types must be capped).
    SiteType "site type" {
        Socket = "socket",
        Ipsec = "ipsec",
        CloudInterconnect = "cloud_interconnect",
    }
}

identifiers! {
    /// What a license is for (R8, R12, R13, R14).
    LicenseKind "license kind" {
        BandwidthPool = "bandwidth_pool",
        ZtnaUsers = "ztna_users",
        AiSecurityUsers = "ai_security_users",
        Devices = "devices",
        DemUsers = "dem_users",
        DataLake = "data_lake",
        PremiumSecurity = "premium_security",
        Insights = "insights",
    }
}

impl LicenseKind {
    /// Base products: their over-usage also flags Premium Security and Insights (R14).
    pub fn is_base_product(self) -> bool {
        matches!(self, LicenseKind::BandwidthPool | LicenseKind::ZtnaUsers)
    }

    /// The unit a purchase of this license is counted in (R32): what `license add`, order
    /// items, `required_purchase`, True-Up and True-Forward quantities mean.
    pub fn purchase_unit(self) -> &'static str {
        match self {
            LicenseKind::BandwidthPool => "Mbps",
            LicenseKind::ZtnaUsers | LicenseKind::AiSecurityUsers | LicenseKind::DemUsers => "users",
            LicenseKind::Devices => "devices",
            LicenseKind::DataLake => "data units",
            LicenseKind::PremiumSecurity | LicenseKind::Insights => "licenses",
        }
    }
}

identifiers! {
    /// Where a ZTNA user's primary work location is (R12): the general region is Group 1 and
    /// Group 2 together.
    ZtnaRegion "ZTNA region" {
        General = "general",
        China = "china",
        Vietnam = "vietnam",
        Morocco = "morocco",
    }
}

identifiers! {
    /// What an online order's item is (R20).
    ItemType "order item type" {
        SiteBandwidth = "site_bandwidth",
        SiteEarlyActivation = "site_early_activation",
        Sockets = "sockets",
        IpAddresses = "ip_addresses",
        SdpUsers = "sdp_users",
        Accessories = "accessories",
    }
}

identifiers! {
    /// Where an order item stands (R22).
    ItemStatus "order item status" {
        Submitted = "submitted",
        InProcess = "in_process",
        PendingConfirmation = "pending_confirmation",
        Completed = "completed",
        Canceled = "canceled",
    }
}

identifiers! {
    /// The socket appliances one may order (R20).
    SocketModel "socket model" {
        X1500 = "X1500",
        X1700 = "X1700",
    }
}

identifiers! {
    /// Which traffic a bandwidth license of a site in China, Morocco or Vietnam covers: to
    /// destinations outside the country (`global`) or inside it (`regional`).
    TrafficScope "traffic scope" {
        Global = "global",
        Regional = "regional",
    }
}

identifiers! {
    /// Where ordered SDP users are physically located (R20).
    SdpRegion "SDP region" {
        Global = "global",
        China = "china",
        Morocco = "morocco",
        Vietnam = "vietnam",
    }
}

identifiers! {
    /// Additional items for sockets (R20).
    Accessory "accessory" {
        RackMountKit = "rack_mount_kit",
        X1700NicAddon = "x1700_nic_addon",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_round_trip_through_text_and_json() {
        for kind in LicenseKind::ALL {
            assert_eq!(kind.as_str().parse::<LicenseKind>(), Ok(*kind));
            assert_eq!(serde_json::to_string(kind).unwrap(), format!("\"{kind}\""));
        }
        assert_eq!("cloud_interconnect".parse(), Ok(SiteType::CloudInterconnect));
    }

    #[test]
    fn unknown_identifiers_say_what_is_expected() {
        let err = "router".parse::<SiteType>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"router\" is not a valid site type; expected one of: socket, ipsec, cloud_interconnect"
        );
    }
}
