//! Values as a customer reads them: dates and times (in UTC, said), months, people, region
//! groups, licenses, statuses and order items. The API's names stay in `data-value`; the page's
//! text is these words.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, Utc};
use tally_common::kinds::{
    Accessory, ItemStatus, ItemType, LicenseKind, SdpRegion, SiteType, TrafficScope, ZtnaRegion,
};
use tally_common::region::{RegionGroup, RegionTable};
use tally_common::time::Month;

use crate::orders::rules::Item;
use crate::store::Site;

static REGIONS: LazyLock<RegionTable> = LazyLock::new(RegionTable::builtin);

/// `1 January 2027`.
pub(super) fn date(day: impl std::borrow::Borrow<NaiveDate>) -> String {
    day.borrow().format("%-d %B %Y").to_string()
}

/// `Sat 3 Oct`: a day of a month already named.
pub(super) fn short_date(day: impl std::borrow::Borrow<NaiveDate>) -> String {
    day.borrow().format("%a %-d %b").to_string()
}

/// `October 2026`.
pub(super) fn month(month: Month) -> String {
    month.first_day().format("%B %Y").to_string()
}

/// `7 December 2026, 03:11 UTC`.
pub(super) fn time(at: DateTime<Utc>) -> String {
    at.format("%-d %B %Y, %H:%M UTC").to_string()
}

/// A stored RFC 3339 time in words; kept as written if it is not one.
pub(super) fn time_text(rfc3339: &str) -> String {
    DateTime::parse_from_rfc3339(rfc3339).map_or_else(|_| rfc3339.to_owned(), |t| time(t.with_timezone(&Utc)))
}

/// An order item's status (the templates pass it by reference).
pub(super) fn status(status: impl std::borrow::Borrow<ItemStatus>) -> &'static str {
    match status.borrow() {
        ItemStatus::Submitted => "Submitted",
        ItemStatus::InProcess => "In process",
        ItemStatus::PendingConfirmation => "Pending confirmation",
        ItemStatus::Completed => "Completed",
        ItemStatus::Canceled => "Canceled",
    }
}

pub(super) fn item_type(item_type: ItemType) -> &'static str {
    match item_type {
        ItemType::SiteBandwidth => "Site bandwidth",
        ItemType::SiteEarlyActivation => "Early activation of a site",
        ItemType::Sockets => "Sockets",
        ItemType::IpAddresses => "Public IPv4 addresses",
        ItemType::SdpUsers => "SDP users",
        ItemType::Accessories => "Accessories",
    }
}

/// The region groups as the licensing article names them.
pub(super) fn group(group: RegionGroup) -> &'static str {
    match group {
        RegionGroup::Group1 => "Group 1 — North America, Europe and parts of Asia and Oceania",
        RegionGroup::Group2 => "Group 2 — Asia Pacific, Latin America, the Middle East and Africa",
        RegionGroup::China => "China",
        RegionGroup::Vietnam => "Vietnam",
        RegionGroup::Morocco => "Morocco",
    }
}

/// A region group or ZTNA region as the API writes it (`group1`, `general`), in words.
pub(super) fn region_text(region: &str) -> String {
    if let Ok(g) = region.parse::<RegionGroup>() {
        return group(g).to_owned();
    }
    match region.parse::<ZtnaRegion>() {
        Ok(ZtnaRegion::General) => "the general region (Groups 1 and 2)".to_owned(),
        Ok(ZtnaRegion::China) => "China".to_owned(),
        Ok(ZtnaRegion::Vietnam) => "Vietnam".to_owned(),
        Ok(ZtnaRegion::Morocco) => "Morocco".to_owned(),
        Err(_) => region.to_owned(),
    }
}

pub(super) fn license(kind: LicenseKind) -> &'static str {
    match kind {
        LicenseKind::BandwidthPool => "Bandwidth pool",
        LicenseKind::ZtnaUsers => "ZTNA users",
        LicenseKind::AiSecurityUsers => "AI Security users",
        LicenseKind::Devices => "Devices",
        LicenseKind::DemUsers => "DEM users",
        LicenseKind::DataLake => "Data Lake",
        LicenseKind::PremiumSecurity => "Premium Security",
        LicenseKind::Insights => "Insights",
    }
}

/// What a meter counts, in a customer's words.
pub(super) fn meter(kind: LicenseKind) -> &'static str {
    match kind {
        LicenseKind::BandwidthPool => "bandwidth",
        LicenseKind::ZtnaUsers => "ZTNA users",
        LicenseKind::AiSecurityUsers => "AI Security users",
        LicenseKind::Devices => "devices",
        LicenseKind::DemUsers => "DEM users",
        LicenseKind::DataLake => "Data Lake events in the busiest hour",
        LicenseKind::PremiumSecurity => "Premium Security",
        LicenseKind::Insights => "Insights",
    }
}

pub(super) fn site_type(site_type: SiteType) -> &'static str {
    match site_type {
        SiteType::Socket => "Socket",
        SiteType::Ipsec => "IPsec",
        SiteType::CloudInterconnect => "Cloud interconnect",
    }
}

/// A count with its thousands separated: `1,000`.
pub(super) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut said = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            said.push(',');
        }
        said.push(digit);
    }
    said
}

pub(super) fn country(code: tally_common::region::CountryCode) -> String {
    REGIONS.name_of(code).map_or_else(|| code.to_string(), str::to_owned)
}

pub(super) fn traffic_scope(scope: TrafficScope) -> &'static str {
    match scope {
        TrafficScope::Global => "global traffic",
        TrafficScope::Regional => "traffic within the country",
    }
}

pub(super) fn sdp_region(region: SdpRegion) -> &'static str {
    match region {
        SdpRegion::Global => "outside China, Morocco and Vietnam",
        SdpRegion::China => "in China",
        SdpRegion::Morocco => "in Morocco",
        SdpRegion::Vietnam => "in Vietnam",
    }
}

pub(super) fn accessory(accessory: Accessory) -> &'static str {
    match accessory {
        Accessory::RackMountKit => "rack mount kit",
        Accessory::X1700NicAddon => "X1700 network card add-on",
    }
}

/// Who did something, from the name histories keep (`Ann Lee <ann@…>, customer:acme (contact)`,
/// `operator`): the person's name, or their role in words.
pub(super) fn actor(stored: &str) -> String {
    let (person, role) = match stored.rsplit_once(", ") {
        Some((person, role)) => (Some(person), role),
        None => (None, stored),
    };
    let person = person.map(|p| p.split_once(" <").map_or(p, |(name, _)| name).trim());
    match (person, role) {
        (Some(name), "operator") => format!("{name} (Customer Success)"),
        (Some(name), _) => name.to_owned(),
        (None, "operator") => "Customer Success".to_owned(),
        (None, role) if role.ends_with("(contact)") => "the contact person".to_owned(),
        (None, role) if role.starts_with("partner:") => "the partner".to_owned(),
        (None, _) => "a user of the account".to_owned(),
    }
}

/// A site as `HQ (Germany)`, from the account's sites; its id when it is not among them.
pub(super) fn site(id: &str, sites: &BTreeMap<String, Site>) -> String {
    sites.get(id).map_or_else(|| id.to_owned(), |s| format!("{} ({})", s.name, country(s.country)))
}

/// An order item's fields besides its type, in the API's order: its field name, its value as
/// the API writes it, and the value in words.
pub(super) fn item_fields(item: &Item, sites: &BTreeMap<String, Site>) -> Vec<(&'static str, String, String)> {
    let raw = |v: &dyn std::fmt::Display| v.to_string();
    let mut fields = Vec::new();
    match item {
        Item::SiteBandwidth { site: s, bandwidth_mbps, traffic_scope: scope, .. } => {
            fields.push(("site", s.clone(), site(s, sites)));
            fields.push(("bandwidth_mbps", raw(bandwidth_mbps), format!("{bandwidth_mbps} Mbps")));
            if let Some(scope) = scope {
                fields.push(("traffic_scope", raw(scope), traffic_scope(*scope).to_owned()));
            }
        }
        Item::SiteEarlyActivation { site: s, activation_date, .. } => {
            fields.push(("site", s.clone(), site(s, sites)));
            fields.push(("activation_date", raw(activation_date), date(activation_date)));
        }
        Item::Sockets { site: s, model, quantity, .. } => {
            fields.push(("site", s.clone(), site(s, sites)));
            fields.push(("model", raw(model), format!("model {model}")));
            fields.push(("quantity", raw(quantity), quantity.to_string()));
        }
        Item::IpAddresses { quantity, .. } => fields.push(("quantity", raw(quantity), quantity.to_string())),
        Item::SdpUsers { region, quantity, .. } => {
            fields.push(("region", raw(region), sdp_region(*region).to_owned()));
            fields.push(("quantity", raw(quantity), quantity.to_string()));
        }
        Item::Accessories { site: s, accessory: a, quantity, .. } => {
            fields.push(("site", s.clone(), site(s, sites)));
            fields.push(("accessory", raw(a), accessory(*a).to_owned()));
            fields.push(("quantity", raw(quantity), quantity.to_string()));
        }
    }
    fields.push(("start_date", item.start_date().to_string(), date(item.start_date())));
    fields
}

/// An order item in one line: `Site bandwidth — HQ (Germany), 100 Mbps, global traffic, from
/// 1 January 2027`.
pub(super) fn item(item: &Item, sites: &BTreeMap<String, Site>) -> String {
    let said: Vec<String> = item_fields(item, sites)
        .into_iter()
        .map(|(name, _, words)| match name {
            "quantity" => format!("quantity {words}"),
            "activation_date" => format!("activated on {words}"),
            "start_date" => format!("from {words}"),
            _ => words,
        })
        .collect();
    format!("{} — {}", item_type(item.item_type()), said.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites() -> BTreeMap<String, Site> {
        let hq = Site {
            id: "hq".into(),
            account: "acme".into(),
            name: "HQ".into(),
            country: "DE".parse().unwrap(),
            region_group: RegionGroup::Group1,
            site_type: SiteType::Socket,
            cap_bps: None,
        };
        BTreeMap::from([("hq".to_owned(), hq)])
    }

    #[test]
    fn an_item_reads_as_the_customer_ordered_it() {
        let day = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
        let bandwidth = Item::SiteBandwidth {
            start_date: day,
            site: "hq".into(),
            bandwidth_mbps: 100,
            traffic_scope: Some(TrafficScope::Global),
        };
        assert_eq!(
            item(&bandwidth, &sites()),
            "Site bandwidth — HQ (Germany), 100 Mbps, global traffic, from 1 January 2027"
        );
        let addresses = Item::IpAddresses { start_date: day, quantity: 2 };
        assert_eq!(item(&addresses, &sites()), "Public IPv4 addresses — quantity 2, from 1 January 2027");
        let sockets = Item::Sockets {
            start_date: day,
            site: "gone".into(),
            model: tally_common::kinds::SocketModel::X1700,
            quantity: 3,
        };
        assert_eq!(item(&sockets, &sites()), "Sockets — gone, model X1700, quantity 3, from 1 January 2027");
    }

    #[test]
    fn people_are_named_and_roles_said() {
        assert_eq!(actor("Ann Lee <ann@acme.example>, customer:acme (contact)"), "Ann Lee");
        assert_eq!(actor("Bo Chen <bo@provider.example>, operator"), "Bo Chen (Customer Success)");
        assert_eq!(actor("operator"), "Customer Success");
        assert_eq!(actor("customer:acme (contact)"), "the contact person");
        assert_eq!(actor("partner:p1"), "the partner");
        assert_eq!(actor("customer:acme"), "a user of the account");
    }

    #[test]
    fn times_are_in_utc_and_say_so() {
        assert_eq!(time_text("2026-12-07T03:11:28.151Z"), "7 December 2026, 03:11 UTC");
        assert_eq!(time_text("2026-12-07T04:11:28+01:00"), "7 December 2026, 03:11 UTC");
        assert_eq!(date(NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()), "1 January 2027");
    }
}
