//! Online orders (R20–R25): customers order more capacity and hardware; Customer Success moves
//! each item through its lifecycle; completed items take effect.
//!
//! - [`rules`]: what a valid item is, who may move an item where, an order's summary.
//! - [`mail`]: the confirmation and the quote (R23).
//!
//! The store keeps orders and applies a transition with its effects (R24) and its e-mails in
//! one transaction (the e-mails composed here, by the functions an order or a transition
//! carries); `api::orders` serves them.

pub mod mail;
pub mod rules;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tally_common::kinds::ItemStatus;

use rules::{Actor, Item, TransitionError};

/// The price Customer Success quotes for an item (R22).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quote {
    /// A decimal amount, `1200.00`.
    #[schema(pattern = "^[0-9]{1,12}(\\.[0-9]{2})?$")]
    pub amount: String,
    /// ISO 4217, `USD`.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

/// One change of an item's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub status: ItemStatus,
    /// Who: `operator`, `customer:acme`, `partner:reseller`, with `token N`.
    pub actor: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,
}

/// An item as stored and shown: `{"id", "type", "status", "history", ...its fields}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderItem {
    pub id: i64,
    #[serde(flatten)]
    pub item: Item,
    pub status: ItemStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,
    pub history: Vec<HistoryEntry>,
}

/// An order (Contract): `{"id", "account", "status", "created_at", "items"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    pub id: i64,
    pub account: String,
    /// The summary of its items' statuses.
    pub status: ItemStatus,
    pub created_at: String,
    pub items: Vec<OrderItem>,
}

/// A page of orders, as the JSON array the list answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPage {
    /// `[Order, ...]`, oldest first.
    pub json: String,
    /// The last id when the page is full: the next page starts after it.
    pub next_after: Option<i64>,
}

/// An e-mail about an order (R23), composed by [`mail`]; the store writes it to the outbox in
/// the transaction of the change that causes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderMail {
    pub topic: String,
    pub subject: String,
    pub text: String,
    /// To the account's e-mail recipients as well as its contact person.
    pub to_organization: bool,
}

/// A validated order to store.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub account: String,
    pub actor: String,
    pub items: Vec<Item>,
    /// The `Idempotency-Key` header and the SHA-256 of the body it came with.
    pub idempotency: Option<(String, String)>,
    pub at: DateTime<Utc>,
    /// The confirmation of the stored order ([`mail::confirmation`]).
    pub confirmation: fn(&Order) -> OrderMail,
}

/// What storing a [`NewOrder`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New(Order),
    /// The key was used before with the same body: that order, unchanged.
    Replayed(Order),
    /// The key was used before with another body.
    KeyReused,
}

/// A change of status for some items of an order (all of them when `items` is `None`).
#[derive(Debug, Clone)]
pub struct Transition {
    pub account: String,
    pub order: i64,
    pub items: Option<Vec<i64>>,
    pub to: ItemStatus,
    pub actor: Actor,
    pub actor_name: String,
    pub quote: Option<Quote>,
    pub at: DateTime<Utc>,
    /// The e-mail of a quote for the chosen items ([`mail::quote`]).
    pub quote_mail: fn(&Order, &[&OrderItem], &Quote) -> OrderMail,
}

/// Why a transition changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionRefused {
    #[error("order {0} does not exist")]
    NoOrder(i64),
    #[error("order {order} has no item {item}")]
    NoItem { order: i64, item: i64 },
    #[error("item {item}: {error}")]
    Item { item: i64, error: TransitionError },
    /// R27: the license it would make has no contract term to end with.
    #[error(
        "item {item}: no contract term of the account is in force on its start date {day}, so its license would \
         have no end: the operator sets one first (account set --term-start --term-end)"
    )]
    NoContractTerm { item: i64, day: chrono::NaiveDate },
}
