//! Orders: the online order page's requests and their lifecycle (R20–R25).

use std::collections::BTreeMap;
use std::future::Future;

use tally_common::kinds::ItemStatus;

use super::StoreError;
use crate::orders::rules::SiteFacts;
use crate::orders::{Created, NewOrder, Order, OrderPage, Transition, TransitionRefused};

/// Orders and their items' lifecycle (R20–R25); the documents they cause are written with them.
pub trait OrderStore: Send + Sync {
    /// Stores a validated order with its items, each `submitted` with its first history entry;
    /// an idempotency key already used answers the order it made (same body) or `KeyReused`.
    fn create_order(&self, order: &NewOrder) -> impl Future<Output = Result<Created, StoreError>> + Send;
    fn order(&self, account: &str, id: i64) -> impl Future<Output = Result<Option<Order>, StoreError>> + Send;
    /// Up to `limit` orders of `account` with ids above `after`, oldest first, optionally only
    /// those whose summary is `status`.
    fn orders(
        &self,
        account: &str,
        status: Option<ItemStatus>,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<OrderPage, StoreError>> + Send;
    /// Moves items of an order to a new status, all or none (R22), in one transaction with the
    /// effects of completion (R24): a `site_bandwidth` or `sdp_users` item becomes a license
    /// from its start date, a `site_early_activation` moves the site's activation date.
    fn transition_items(
        &self,
        transition: &Transition,
    ) -> impl Future<Output = Result<Result<Order, TransitionRefused>, StoreError>> + Send;
    /// The account's sites as order validation sees them.
    fn site_facts(&self, account: &str)
    -> impl Future<Output = Result<BTreeMap<String, SiteFacts>, StoreError>> + Send;
}
