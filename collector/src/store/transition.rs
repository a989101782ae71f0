//! What an order's transition writes, decided before anything is written: which items change,
//! whether each may (R22), the licenses and activations completed items make (R24) with their
//! ends (R27), the quote's e-mail (R23) and the order's new summary. Every backend plans with
//! [`plan`] and writes what it returns, in one transaction: the rules apply here once.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use tally_common::kinds::{ItemStatus, LicenseKind, SdpRegion};

use super::{ContractTerm, NewLicense, StoreError, term_on};
use crate::orders::rules::{Item, SiteFacts, check_transition, summary};
use crate::orders::{Order, OrderItem, OrderMail, Transition, TransitionRefused};

/// The writes a transition makes.
#[derive(Debug)]
pub struct Plan<'o> {
    /// The items that change to the transition's status, in the order's order.
    pub chosen: Vec<&'o OrderItem>,
    /// What the completed items change (R24).
    pub effects: Vec<Effect>,
    /// The quote's e-mail to the contact person (R23).
    pub mail: Option<OrderMail>,
    /// The order's summary status afterwards.
    pub summary: ItemStatus,
}

/// A completed item's effect (R24).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    License(NewLicense),
    /// An early activation: the site's license starts on `date`.
    Activation {
        site: String,
        date: NaiveDate,
    },
}

/// Plans `t` on `order`. `terms` (the account's contract terms) and `sites` are read only for
/// a completion (`needs_account_facts`); a refusal changes nothing. An item naming a site the
/// account does not have is an error of the store (items are checked when ordered).
pub fn plan<'o>(
    order: &'o Order,
    t: &Transition,
    terms: &[ContractTerm],
    sites: &BTreeMap<String, SiteFacts>,
) -> Result<Result<Plan<'o>, TransitionRefused>, StoreError> {
    if let Some(wanted) = &t.items
        && let Some(missing) = wanted.iter().find(|id| !order.items.iter().any(|i| i.id == **id))
    {
        return Ok(Err(TransitionRefused::NoItem { order: t.order, item: *missing }));
    }
    let chosen: Vec<&OrderItem> =
        order.items.iter().filter(|i| t.items.as_ref().is_none_or(|wanted| wanted.contains(&i.id))).collect();
    for item in &chosen {
        if let Err(error) = check_transition(item.status, t.to, t.actor, t.quote.is_some()) {
            return Ok(Err(TransitionRefused::Item { item: item.id, error }));
        }
    }
    let mut effects = Vec::new();
    if t.to == ItemStatus::Completed {
        for item in &chosen {
            match effect(&order.account, &item.item, terms, sites)? {
                Ok(Some(effect)) => effects.push(effect),
                Ok(None) => {}
                Err(day) => return Ok(Err(TransitionRefused::NoContractTerm { item: item.id, day })),
            }
        }
    }
    let mail = match (t.to, &t.quote) {
        (ItemStatus::PendingConfirmation, Some(quote)) => Some((t.quote_mail)(order, &chosen, quote)),
        _ => None,
    };
    let statuses: Vec<ItemStatus> =
        order.items.iter().map(|i| if chosen.iter().any(|c| c.id == i.id) { t.to } else { i.status }).collect();
    Ok(Ok(Plan { chosen, effects, mail, summary: summary(&statuses) }))
}

/// Whether a transition to `to` needs the account's terms and sites ([`plan`]).
pub fn needs_account_facts(to: ItemStatus) -> bool {
    to == ItemStatus::Completed
}

/// R24: what completing `item` changes. A license runs from the item's start date to the last
/// day of the contract term in force on that date (R27); `Err(start date)` when there is none.
fn effect(
    account: &str,
    item: &Item,
    terms: &[ContractTerm],
    sites: &BTreeMap<String, SiteFacts>,
) -> Result<Result<Option<Effect>, NaiveDate>, StoreError> {
    let start = item.start_date();
    let license = |kind, region: &str, quantity| match term_on(terms, start) {
        Some(term) => Ok(Some(Effect::License(NewLicense {
            account: account.to_owned(),
            kind,
            region: Some(region.to_owned()),
            quantity,
            block_size: None,
            per_unit: None,
            effective_from: start,
            effective_to: term.end,
        }))),
        None => Err(start),
    };
    Ok(match item {
        Item::SiteBandwidth { site, bandwidth_mbps, .. } => {
            let facts = sites.get(site).ok_or_else(|| StoreError::NotFound { what: "site", id: site.clone() })?;
            // The pool of the site's group on the start date (R31). More capacity never breaks
            // R17's caps: no check is needed.
            let group = tally_common::region::group_on(&facts.group_history, start).unwrap_or(facts.region_group);
            license(LicenseKind::BandwidthPool, group.as_str(), bandwidth_mbps.saturating_mul(1_000_000))
        }
        Item::SdpUsers { region, quantity, .. } => {
            let region = match region {
                SdpRegion::Global => "general",
                other => other.as_str(),
            };
            license(LicenseKind::ZtnaUsers, region, *quantity)
        }
        Item::SiteEarlyActivation { site, activation_date, .. } => {
            Ok(Some(Effect::Activation { site: site.clone(), date: *activation_date }))
        }
        Item::Sockets { .. } | Item::IpAddresses { .. } | Item::Accessories { .. } => Ok(None),
    })
}
