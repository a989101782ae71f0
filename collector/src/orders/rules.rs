//! The rules of online orders, without storage: what a valid item is (R20) and who may move an
//! item from one status to another (R22).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tally_common::kinds::{Accessory, ItemStatus, ItemType, SdpRegion, SocketModel, TrafficScope};
use tally_common::region::RegionGroup;

use crate::validation::FieldError;

/// The largest quantity or bandwidth (Mbps) one item may ask for.
pub const MAX_QUANTITY: u64 = 1_000_000;

/// What validation needs to know of one of the ordering account's sites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteFacts {
    /// The region group in force today.
    pub region_group: RegionGroup,
    /// Its history (R31): each change's first day and group, in day order.
    pub group_history: Vec<(NaiveDate, RegionGroup)>,
    /// The start of the site's license: an early activation must be before it.
    pub activation_date: NaiveDate,
}

/// A valid order item. Its JSON is the Contract's: `{"type": T, "start_date": DATE, ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    SiteBandwidth {
        start_date: NaiveDate,
        site: String,
        #[schema(minimum = 1, maximum = 1_000_000)]
        bandwidth_mbps: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traffic_scope: Option<TrafficScope>,
    },
    SiteEarlyActivation {
        start_date: NaiveDate,
        site: String,
        activation_date: NaiveDate,
    },
    Sockets {
        start_date: NaiveDate,
        site: String,
        model: SocketModel,
        #[schema(minimum = 1, maximum = 1_000_000)]
        quantity: u64,
    },
    IpAddresses {
        start_date: NaiveDate,
        #[schema(minimum = 1, maximum = 1_000_000)]
        quantity: u64,
    },
    SdpUsers {
        start_date: NaiveDate,
        region: SdpRegion,
        #[schema(minimum = 1, maximum = 1_000_000)]
        quantity: u64,
    },
    Accessories {
        start_date: NaiveDate,
        site: String,
        accessory: Accessory,
        #[schema(minimum = 1, maximum = 1_000_000)]
        quantity: u64,
    },
}

impl Item {
    pub fn item_type(&self) -> ItemType {
        match self {
            Item::SiteBandwidth { .. } => ItemType::SiteBandwidth,
            Item::SiteEarlyActivation { .. } => ItemType::SiteEarlyActivation,
            Item::Sockets { .. } => ItemType::Sockets,
            Item::IpAddresses { .. } => ItemType::IpAddresses,
            Item::SdpUsers { .. } => ItemType::SdpUsers,
            Item::Accessories { .. } => ItemType::Accessories,
        }
    }

    pub fn start_date(&self) -> NaiveDate {
        match self {
            Item::SiteBandwidth { start_date, .. }
            | Item::SiteEarlyActivation { start_date, .. }
            | Item::Sockets { start_date, .. }
            | Item::IpAddresses { start_date, .. }
            | Item::SdpUsers { start_date, .. }
            | Item::Accessories { start_date, .. } => *start_date,
        }
    }
}

/// The fields each type takes besides `type` and `start_date`.
pub fn fields_of(item_type: ItemType) -> &'static [&'static str] {
    match item_type {
        ItemType::SiteBandwidth => &["site", "bandwidth_mbps", "traffic_scope"],
        ItemType::SiteEarlyActivation => &["site", "activation_date"],
        ItemType::Sockets => &["site", "model", "quantity"],
        ItemType::IpAddresses => &["quantity"],
        ItemType::SdpUsers => &["region", "quantity"],
        ItemType::Accessories => &["site", "accessory", "quantity"],
    }
}

/// Reads the fields of one item, collecting every error with its path (`items[2].quantity`).
struct Reader<'a> {
    object: &'a Map<String, Value>,
    path: String,
    errors: Vec<FieldError>,
}

impl Reader<'_> {
    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(format!("{}.{field}", self.path), message));
    }

    /// The field has its schema's form, but the account's sites or today's date refuse it.
    fn refused(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::by_rule(format!("{}.{field}", self.path), message));
    }

    fn text(&mut self, field: &str) -> Option<&str> {
        match self.object.get(field) {
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                self.error(field, "must be a string");
                None
            }
            None => {
                self.error(field, "is required");
                None
            }
        }
    }

    fn parsed<T: std::str::FromStr>(&mut self, field: &str) -> Option<T>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.text(field)?.to_owned();
        text.parse().map_err(|e: T::Err| self.error(field, e.to_string())).ok()
    }

    fn date(&mut self, field: &str) -> Option<NaiveDate> {
        let text = self.text(field)?.to_owned();
        NaiveDate::parse_from_str(&text, "%Y-%m-%d").map_err(|_| self.error(field, "must be a date, YYYY-MM-DD")).ok()
    }

    /// A positive integer, at most [`MAX_QUANTITY`].
    fn positive(&mut self, field: &str) -> Option<u64> {
        match self.object.get(field) {
            Some(v) => match v.as_u64() {
                Some(n) if (1..=MAX_QUANTITY).contains(&n) => Some(n),
                _ => {
                    self.error(field, format!("must be a positive integer up to {MAX_QUANTITY}"));
                    None
                }
            },
            None => {
                self.error(field, "is required");
                None
            }
        }
    }

    /// One of the account's sites.
    fn site<'s>(&mut self, sites: &'s BTreeMap<String, SiteFacts>) -> Option<(String, &'s SiteFacts)> {
        let id = self.text("site")?.to_owned();
        match sites.get(&id) {
            Some(facts) => Some((id, facts)),
            None => {
                self.refused("site", format!("the account has no site {id:?}"));
                None
            }
        }
    }
}

/// Validates item `index` of an order from an account with `sites`, on `today`: every error,
/// each naming its field.
pub fn validate_item(
    value: &Value,
    index: usize,
    sites: &BTreeMap<String, SiteFacts>,
    today: NaiveDate,
) -> Result<Item, Vec<FieldError>> {
    let path = format!("items[{index}]");
    let Some(object) = value.as_object() else {
        return Err(vec![FieldError::new(path, "must be an object")]);
    };
    let mut r = Reader { object, path, errors: Vec::new() };
    let item_type: Option<ItemType> = r.parsed("type");
    let start_date = r.date("start_date");
    if let Some(start) = start_date
        && start < today
    {
        r.refused("start_date", format!("{start} is in the past (today is {today})"));
    }
    let Some(item_type) = item_type else { return Err(r.errors) };
    for key in object.keys() {
        if key != "type" && key != "start_date" && !fields_of(item_type).contains(&key.as_str()) {
            let message = format!("is not a field of a {item_type} item ({})", fields_of(item_type).join(", "));
            r.error(key, message);
        }
    }
    let item = match item_type {
        ItemType::SiteBandwidth => {
            let site = r.site(sites);
            let bandwidth_mbps = r.positive("bandwidth_mbps");
            let stand_alone = site.as_ref().map(|(_, facts)| facts.region_group.is_stand_alone());
            let traffic_scope = match (stand_alone, object.contains_key("traffic_scope")) {
                (Some(true), false) => {
                    r.refused(
                        "traffic_scope",
                        "is required for a site in China, Morocco or Vietnam (global or regional)",
                    );
                    None
                }
                (Some(true), true) => r.parsed::<TrafficScope>("traffic_scope"),
                (Some(false), true) => {
                    r.refused("traffic_scope", "applies only to sites in China, Morocco or Vietnam");
                    None
                }
                _ => None,
            };
            match (site, bandwidth_mbps) {
                (Some((site, _)), Some(bandwidth_mbps)) => {
                    Some(Item::SiteBandwidth { start_date: today, site, bandwidth_mbps, traffic_scope })
                }
                _ => None,
            }
        }
        ItemType::SiteEarlyActivation => {
            let site = r.site(sites);
            let activation_date = r.date("activation_date");
            if let (Some((_, facts)), Some(date)) = (&site, activation_date)
                && date >= facts.activation_date
            {
                let message =
                    format!("{date} must be earlier than the site's activation date {}", facts.activation_date);
                r.refused("activation_date", message);
            }
            match (site, activation_date) {
                (Some((site, _)), Some(activation_date)) => {
                    Some(Item::SiteEarlyActivation { start_date: today, site, activation_date })
                }
                _ => None,
            }
        }
        ItemType::Sockets => match (r.site(sites), r.parsed("model"), r.positive("quantity")) {
            (Some((site, _)), Some(model), Some(quantity)) => {
                Some(Item::Sockets { start_date: today, site, model, quantity })
            }
            _ => None,
        },
        ItemType::IpAddresses => {
            r.positive("quantity").map(|quantity| Item::IpAddresses { start_date: today, quantity })
        }
        ItemType::SdpUsers => match (r.parsed("region"), r.positive("quantity")) {
            (Some(region), Some(quantity)) => Some(Item::SdpUsers { start_date: today, region, quantity }),
            _ => None,
        },
        ItemType::Accessories => match (r.site(sites), r.parsed("accessory"), r.positive("quantity")) {
            (Some((site, _)), Some(accessory), Some(quantity)) => {
                Some(Item::Accessories { start_date: today, site, accessory, quantity })
            }
            _ => None,
        },
    };
    match (item, start_date) {
        (Some(item), Some(start_date)) if r.errors.is_empty() => Ok(with_start(item, start_date)),
        _ => Err(r.errors),
    }
}

fn with_start(mut item: Item, start: NaiveDate) -> Item {
    match &mut item {
        Item::SiteBandwidth { start_date, .. }
        | Item::SiteEarlyActivation { start_date, .. }
        | Item::Sockets { start_date, .. }
        | Item::IpAddresses { start_date, .. }
        | Item::SdpUsers { start_date, .. }
        | Item::Accessories { start_date, .. } => *start_date = start,
    }
    item
}

/// Who asks for a transition, as R22 sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// Customer Success.
    Operator,
    /// The account's contact person (or the managing partner's, for a sub-account).
    ContactPerson,
    /// Anyone else who sees the account.
    Other,
}

/// Why a transition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// 409: not a step of the lifecycle from here.
    #[error("an item that is {current} cannot become {to}; from {current} it can become: {}", list(.allowed))]
    Illegal { current: ItemStatus, to: ItemStatus, allowed: Vec<ItemStatus> },
    /// 403: a step of the lifecycle, but not this caller's.
    #[error("only {who} may move an item from {current} to {to}")]
    NotYours { current: ItemStatus, to: ItemStatus, who: &'static str },
    /// 422: the step needs a quote.
    #[error("moving to pending_confirmation needs a quote {{\"amount\": \"1200.00\", \"currency\": \"USD\"}}")]
    QuoteRequired,
}

fn list(statuses: &[ItemStatus]) -> String {
    if statuses.is_empty() {
        return "nothing (it is final)".into();
    }
    statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// The steps of R22 and whose each is: Customer Success moves items forward and attaches the
/// quote; the contact person approves it or cancels before completion.
fn step(from: ItemStatus, to: ItemStatus) -> Option<Actor> {
    use ItemStatus::*;
    match (from, to) {
        (Submitted, InProcess) | (InProcess, PendingConfirmation) => Some(Actor::Operator),
        (PendingConfirmation, Completed) => Some(Actor::ContactPerson),
        (Submitted | InProcess | PendingConfirmation, Canceled) => Some(Actor::ContactPerson),
        _ => None,
    }
}

/// Whether `actor` may move an item from `current` to `to` (with or without a quote).
pub fn check_transition(
    current: ItemStatus,
    to: ItemStatus,
    actor: Actor,
    has_quote: bool,
) -> Result<(), TransitionError> {
    let Some(owner) = step(current, to) else {
        let allowed = ItemStatus::ALL.iter().copied().filter(|next| step(current, *next).is_some()).collect();
        return Err(TransitionError::Illegal { current, to, allowed });
    };
    if owner != actor {
        let who = match owner {
            Actor::Operator => "an operator (Customer Success)",
            _ => "the account's contact person",
        };
        return Err(TransitionError::NotYours { current, to, who });
    }
    if to == ItemStatus::PendingConfirmation && !has_quote {
        return Err(TransitionError::QuoteRequired);
    }
    Ok(())
}

/// An order's summary: the status of its least advanced live item, or `completed` / `canceled`
/// when every item is.
pub fn summary(statuses: &[ItemStatus]) -> ItemStatus {
    let live = statuses.iter().copied().filter(|s| *s != ItemStatus::Canceled);
    live.min().unwrap_or(ItemStatus::Canceled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ItemStatus::*;
    use serde_json::json;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn sites() -> BTreeMap<String, SiteFacts> {
        BTreeMap::from([
            (
                "hq".into(),
                SiteFacts {
                    region_group: RegionGroup::Group1,
                    group_history: Vec::new(),
                    activation_date: day("2026-12-01"),
                },
            ),
            (
                "sh".into(),
                SiteFacts {
                    region_group: RegionGroup::China,
                    group_history: Vec::new(),
                    activation_date: day("2026-12-01"),
                },
            ),
        ])
    }

    #[test]
    fn valid_items_of_every_type() {
        let today = day("2026-11-24");
        let valid = [
            json!({"type": "site_bandwidth", "start_date": "2026-12-01", "site": "hq", "bandwidth_mbps": 100}),
            json!({"type": "site_bandwidth", "start_date": "2026-11-24", "site": "sh", "bandwidth_mbps": 20, "traffic_scope": "regional"}),
            json!({"type": "site_early_activation", "start_date": "2026-11-25", "site": "hq", "activation_date": "2026-11-26"}),
            json!({"type": "sockets", "start_date": "2026-12-01", "site": "hq", "model": "X1700", "quantity": 2}),
            json!({"type": "ip_addresses", "start_date": "2026-12-01", "quantity": 4}),
            json!({"type": "sdp_users", "start_date": "2026-12-01", "region": "morocco", "quantity": 50}),
            json!({"type": "accessories", "start_date": "2026-12-01", "site": "hq", "accessory": "rack_mount_kit", "quantity": 1}),
        ];
        for (i, v) in valid.iter().enumerate() {
            let item = validate_item(v, i, &sites(), today).unwrap_or_else(|e| panic!("{v}: {e:?}"));
            assert_eq!(serde_json::to_value(&item).unwrap(), *v, "the item's JSON is what was sent");
        }
    }

    #[test]
    fn each_invalid_item_names_its_field() {
        let today = day("2026-11-24");
        let cases = [
            (
                json!({"type": "site_bandwidth", "start_date": "2026-12-01", "site": "elsewhere", "bandwidth_mbps": 100}),
                "items[0].site",
            ),
            (
                json!({"type": "site_bandwidth", "start_date": "2026-12-01", "site": "hq", "bandwidth_mbps": 0}),
                "items[0].bandwidth_mbps",
            ),
            (
                json!({"type": "site_bandwidth", "start_date": "2026-12-01", "site": "hq", "bandwidth_mbps": 2.5}),
                "items[0].bandwidth_mbps",
            ),
            (
                json!({"type": "site_bandwidth", "start_date": "2026-12-01", "site": "sh", "bandwidth_mbps": 20}),
                "items[0].traffic_scope",
            ),
            (
                json!({"type": "site_bandwidth", "start_date": "2026-12-01", "site": "sh", "bandwidth_mbps": 20, "traffic_scope": "local"}),
                "items[0].traffic_scope",
            ),
            (
                json!({"type": "site_bandwidth", "start_date": "2026-12-01", "site": "hq", "bandwidth_mbps": 20, "traffic_scope": "global"}),
                "items[0].traffic_scope",
            ),
            (
                json!({"type": "site_early_activation", "start_date": "2026-12-01", "site": "hq", "activation_date": "2026-12-01"}),
                "items[0].activation_date",
            ),
            (
                json!({"type": "sockets", "start_date": "2026-12-01", "site": "hq", "model": "X9000", "quantity": 1}),
                "items[0].model",
            ),
            (
                json!({"type": "sockets", "start_date": "2026-12-01", "site": "hq", "model": "X1500", "quantity": -1}),
                "items[0].quantity",
            ),
            (json!({"type": "ip_addresses", "start_date": "2026-11-23", "quantity": 1}), "items[0].start_date"),
            (json!({"type": "ip_addresses", "start_date": "24/11/2026", "quantity": 1}), "items[0].start_date"),
            (json!({"type": "ip_addresses", "quantity": 1}), "items[0].start_date"),
            (
                json!({"type": "sdp_users", "start_date": "2026-12-01", "region": "mars", "quantity": 5}),
                "items[0].region",
            ),
            (
                json!({"type": "accessories", "start_date": "2026-12-01", "site": "hq", "accessory": "cupholder", "quantity": 1}),
                "items[0].accessory",
            ),
            (json!({"type": "ip_addresses", "start_date": "2026-12-01", "quantity": 1, "site": "hq"}), "items[0].site"),
            (json!({"type": "upgrade", "start_date": "2026-12-01"}), "items[0].type"),
            (json!({"start_date": "2026-12-01"}), "items[0].type"),
            (json!("sockets"), "items[0]"),
        ];
        for (v, field) in cases {
            let errors = validate_item(&v, 0, &sites(), today).expect_err(&v.to_string());
            assert!(errors.iter().any(|e| e.field == field), "{v}: {errors:?} should name {field}");
        }
    }

    #[test]
    fn every_transition_by_every_actor() {
        let actors = [Actor::Operator, Actor::ContactPerson, Actor::Other];
        let legal = [
            (Submitted, InProcess, Actor::Operator),
            (InProcess, PendingConfirmation, Actor::Operator),
            (PendingConfirmation, Completed, Actor::ContactPerson),
            (Submitted, Canceled, Actor::ContactPerson),
            (InProcess, Canceled, Actor::ContactPerson),
            (PendingConfirmation, Canceled, Actor::ContactPerson),
        ];
        for &from in ItemStatus::ALL {
            for &to in ItemStatus::ALL {
                for actor in actors {
                    let result = check_transition(from, to, actor, true);
                    let owner = legal.iter().find(|(f, t, _)| (*f, *t) == (from, to)).map(|(_, _, a)| *a);
                    match (owner, result) {
                        (Some(owner), Ok(())) => assert_eq!(owner, actor),
                        (Some(owner), Err(TransitionError::NotYours { .. })) => assert_ne!(owner, actor),
                        (None, Err(TransitionError::Illegal { current, .. })) => assert_eq!(current, from),
                        (owner, result) => panic!("{from} → {to} by {actor:?}: {owner:?} but {result:?}"),
                    }
                }
            }
        }
        assert_eq!(
            check_transition(InProcess, PendingConfirmation, Actor::Operator, false),
            Err(TransitionError::QuoteRequired)
        );
        let refused = check_transition(Completed, Canceled, Actor::ContactPerson, true).unwrap_err().to_string();
        assert!(refused.contains("completed cannot become canceled") && refused.contains("nothing"), "{refused}");
        let refused = check_transition(Submitted, Completed, Actor::ContactPerson, true).unwrap_err().to_string();
        assert!(refused.contains("can become: in_process, canceled"), "{refused}");
    }

    #[test]
    fn the_summary_is_the_least_advanced_live_item() {
        assert_eq!(summary(&[Completed, InProcess, Canceled]), InProcess);
        assert_eq!(summary(&[Completed, Canceled]), Completed);
        assert_eq!(summary(&[Canceled, Canceled]), Canceled);
    }
}
