//! Notifications: recipients and the outbox of e-mails and webhooks (R15, R23).

use std::future::Future;

use chrono::{DateTime, TimeDelta, Utc};

use super::StoreError;

/// How a notification travels (R15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Channel {
    Email,
    /// An HTTP POST signed with HMAC-SHA256.
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }
}

impl std::str::FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "email" => Ok(Channel::Email),
            "webhook" => Ok(Channel::Webhook),
            other => Err(format!("{other:?} is neither email nor webhook")),
        }
    }
}

/// A month's over-usage notification, before it is addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub subject: String,
    /// Plain text for e-mail, and the JSON document for webhooks.
    pub text: String,
    pub json: String,
}

/// One recipient's copy of a notification, in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: i64,
    pub account: String,
    /// What it is about: a month (`2026-10`, R15), an order (`order 12`) or a quote (R23).
    pub topic: String,
    pub channel: Channel,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub attempts: u32,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// Where an account's notifications go (R15).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Recipient {
    pub channel: Channel,
    pub address: String,
}

/// A recipient added or removed, by whom and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientChange {
    pub recipient: Recipient,
    pub added: bool,
    pub actor: String,
    pub at: DateTime<Utc>,
}

/// Notification recipients and the outbox: every e-mail and webhook, written in the transaction of what causes it and delivered later (R15, R23).
pub trait OutboxStore: Send + Sync {
    /// Adds or removes one of the account's recipients and keeps the change with who made it
    /// and when, in one transaction; false (and nothing kept) when there was nothing to change.
    fn change_recipient(
        &self,
        account: &str,
        change: &RecipientChange,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// The account's recipients, by channel and address.
    fn recipients(&self, account: &str) -> impl Future<Output = Result<Vec<Recipient>, StoreError>> + Send;
    /// Every change of the account's recipients, oldest first.
    fn recipient_changes(&self, account: &str)
    -> impl Future<Output = Result<Vec<RecipientChange>, StoreError>> + Send;
    /// Claims up to `limit` undelivered outbox rows of the `channels` that can send, due at
    /// `now`, oldest first: each is due again only at `now + lease` (R30: another collector
    /// takes it then only if this one died before marking it delivered or failed; a live one
    /// marks it well within the lease).
    fn claim_due_notifications(
        &self,
        now: DateTime<Utc>,
        lease: TimeDelta,
        limit: usize,
        channels: &[Channel],
    ) -> impl Future<Output = Result<Vec<OutboxItem>, StoreError>> + Send;
    fn mark_delivered(&self, id: i64, at: DateTime<Utc>) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn mark_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Addresses `notification` about `topic` to the account's recipients and its managing
    /// partner's, once: a recipient already sent that topic is not sent it again (across
    /// restarts and collectors). Returns the rows added.
    fn notify_once(
        &self,
        account: &str,
        topic: &str,
        notification: &Notification,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// How many notifications are not delivered yet (`/metrics`).
    fn notifications_pending(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Every outbox row, of one account or all.
    fn notifications(&self, account: Option<&str>) -> impl Future<Output = Result<Vec<OutboxItem>, StoreError>> + Send;
}
