//! Tokens and certificates: API tokens, one-use enrollment tokens, the certificates of sites.

use std::future::Future;

use chrono::{DateTime, Utc};

use super::StoreError;

/// Why an enrollment token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the enrollment token is unknown to this collector")]
    Unknown,
    #[error("the enrollment token was already used: create a new one with `tally-collector site enroll-token`")]
    Used,
    #[error("the enrollment token has expired: create a new one with `tally-collector site enroll-token`")]
    Expired,
}

/// A certificate the CA issued to a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    /// Hex serial number.
    pub serial: String,
    pub site: String,
    pub revoked: bool,
}

/// Who an API token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The provider's staff (Customer Success): every account.
    Operator,
    /// A partner: its own account and its sub-accounts.
    Partner,
    /// A customer: its own account.
    Customer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Partner => "partner",
            Role::Customer => "customer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "operator" => Ok(Role::Operator),
            "partner" => Ok(Role::Partner),
            "customer" => Ok(Role::Customer),
            other => Err(format!("{other:?} is not a role: operator, partner or customer")),
        }
    }
}

/// A bearer token of the HTTP API (its secret is never stored, only its hash), as `token list`
/// shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiToken {
    pub id: i64,
    pub role: Role,
    /// `None` for operators.
    pub account: Option<String>,
    /// The account's contact person (R21).
    pub contact: bool,
    /// RFC 3339.
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// The person it belongs to, when `token create` named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub person: Option<Person>,
}

/// Who holds a token: shown in order histories and recipient changes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Person {
    pub name: String,
    pub email: String,
}

impl std::fmt::Display for Person {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} <{}>", self.name, self.email)
    }
}

impl ApiToken {
    pub fn revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// A signed-in console session, found by the hash of its cookie's secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// The hash of the API token that signed in: who the session is, checked at every request.
    pub token_hash: String,
    /// The form token every state-changing form of the session carries (CSRF).
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// Who may speak: API tokens (by the hash of their secret), enrollment tokens and the
/// certificates the CA issued.
pub trait AccessStore: Send + Sync {
    /// Stores a new API token by the hash of its secret; returns its id.
    fn add_api_token(
        &self,
        hash: &str,
        role: Role,
        account: Option<&str>,
        contact: bool,
        person: Option<&Person>,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
    /// The token whose secret hashes to `hash`, revoked or not.
    fn api_token(&self, hash: &str) -> impl Future<Output = Result<Option<ApiToken>, StoreError>> + Send;
    /// Revokes token `id`; false when there is no such token.
    fn revoke_api_token(&self, id: i64) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Every API token (never its secret, which is not stored), by id.
    fn api_tokens(&self) -> impl Future<Output = Result<Vec<ApiToken>, StoreError>> + Send;
    /// Stores the hash of a new enrollment token for `site`, valid until `expires_at`.
    fn add_enroll_token(
        &self,
        token_hash: &str,
        site: &str,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Marks the token used and returns its site, atomically: a token is accepted once.
    fn redeem_enroll_token(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Result<String, TokenRefusal>, StoreError>> + Send;
    fn add_certificate(
        &self,
        serial: &str,
        site: &str,
        not_after: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn certificate(&self, serial: &str) -> impl Future<Output = Result<Option<CertificateRecord>, StoreError>> + Send;
    /// Revokes every certificate of `site`; returns how many were not revoked yet.
    fn revoke_site(&self, site: &str, now: DateTime<Utc>) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Starts a console session under the hash of its cookie's secret; forgets the expired ones.
    fn add_session(
        &self,
        id_hash: &str,
        session: &ConsoleSession,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The session under `id_hash`, unless it expired by `now`.
    fn session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<ConsoleSession>, StoreError>> + Send;
    /// Ends the session under `id_hash`; false when there was none.
    fn end_session(&self, id_hash: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
