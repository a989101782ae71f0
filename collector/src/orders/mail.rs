//! The e-mails of an order (R23), as subject and plain text: the organization's confirmation on
//! submit, and the quote to the contact person. They travel through the outbox, like R15's.

use std::fmt::Write;

use tally_common::kinds::ItemType;

use super::rules::Item;
use super::{Order, OrderItem, OrderMail, Quote};

fn describe(item: &Item) -> String {
    let what = match item {
        Item::SiteBandwidth { site, bandwidth_mbps, traffic_scope, .. } => {
            let scope = traffic_scope.map_or(String::new(), |s| format!(", {s} traffic"));
            format!("{bandwidth_mbps} Mbps for site {site}{scope}")
        }
        Item::SiteEarlyActivation { site, activation_date, .. } => format!("site {site} active from {activation_date}"),
        Item::Sockets { site, model, quantity, .. } => format!("{quantity} × {model} for site {site}"),
        Item::IpAddresses { quantity, .. } => format!("{quantity} public IPv4 address(es)"),
        Item::SdpUsers { region, quantity, .. } => format!("{quantity} SDP user(s), {region}"),
        Item::Accessories { site, accessory, quantity, .. } => format!("{quantity} × {accessory} for site {site}"),
    };
    format!("{}: {what}, from {}", label(item.item_type()), item.start_date())
}

fn label(item_type: ItemType) -> &'static str {
    match item_type {
        ItemType::SiteBandwidth => "Site bandwidth",
        ItemType::SiteEarlyActivation => "Site early activation",
        ItemType::Sockets => "Sockets",
        ItemType::IpAddresses => "IP addresses",
        ItemType::SdpUsers => "SDP users",
        ItemType::Accessories => "Accessories",
    }
}

/// The confirmation sent to the organization (its contact person and its e-mail recipients)
/// when an order is submitted; topic `order N`.
pub fn confirmation(order: &Order) -> OrderMail {
    let subject = format!("Tally: order {} received for account {}", order.id, order.account);
    let mut text = format!(
        "Order {} for account {} was submitted on {} and sent to Customer Success.\n\nItems:\n",
        order.id, order.account, order.created_at
    );
    for item in &order.items {
        let _ = writeln!(text, "  - item {}: {}", item.id, describe(&item.item));
    }
    text += "\nEach item's status is shown with the order; the contact person receives the quote.\n";
    OrderMail { topic: format!("order {}", order.id), subject, text, to_organization: true }
}

/// The quote sent to the contact person, who approves it or cancels; topic `order N quote I,J`.
pub fn quote(order: &Order, items: &[&OrderItem], quote: &Quote) -> OrderMail {
    let subject = format!("Tally: quote for order {} of account {}", order.id, order.account);
    let mut text = format!("Customer Success quotes {} {} for:\n", quote.amount, quote.currency);
    for item in items {
        let _ = writeln!(text, "  - item {}: {}", item.id, describe(&item.item));
    }
    let _ = write!(
        text,
        "\nApprove it with POST /v1/accounts/{}/orders/{}/transitions {{\"to\": \"completed\"}}, or cancel with \
         {{\"to\": \"canceled\"}}.\n",
        order.account, order.id
    );
    let ids: Vec<String> = items.iter().map(|i| i.id.to_string()).collect();
    OrderMail { topic: format!("order {} quote {}", order.id, ids.join(",")), subject, text, to_organization: false }
}
