//! Who is calling, and which accounts they see.
//!
//! A request carries `Authorization: Bearer <token>`: a token from `token create` (only its
//! SHA-256 is stored; a revoked one is refused) or the configuration's `operator_token`.
//! Tenancy ([`may_see`]): any account the caller may not see is answered 404, exactly as one that
//! does not exist, so ids do not leak.

use axum::http::HeaderMap;

use super::problem::Problem;
use crate::accounts::tenancy::may_see;
use crate::digest::sha256_hex;
use crate::store::{Account, Person, Role, Store, StoreError};

/// The holder of a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// `None` for operators.
    pub account: Option<String>,
    /// The account's contact person (R21, R22).
    pub contact: bool,
    /// Who holds the token, when `token create` named them.
    pub person: Option<Person>,
}

impl Caller {
    /// Who the caller is, as histories keep it: the role and account (`customer:acme (contact)`),
    /// after the person when the token names one.
    pub fn name(&self) -> String {
        let role = match &self.account {
            None => self.role.as_str().to_owned(),
            Some(account) => {
                format!("{}:{account}{}", self.role.as_str(), if self.contact { " (contact)" } else { "" })
            }
        };
        match &self.person {
            Some(person) => format!("{person}, {role}"),
            None => role,
        }
    }

    /// 403 unless the caller is an operator.
    pub fn operator_only(&self, what: &str) -> Result<(), Problem> {
        if self.role == Role::Operator {
            Ok(())
        } else {
            Err(Problem::forbidden(format!("only an operator may {what}")))
        }
    }
}

/// The caller of a request with `headers`.
pub async fn caller<S: Store>(store: &S, operator_token: Option<&str>, headers: &HeaderMap) -> Result<Caller, Problem> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| Problem::unauthorized("send a token as `Authorization: Bearer <token>` (`token create`)"))?;
    caller_of_token(store, operator_token, &sha256_hex(given.as_bytes())).await
}

/// The holder of the token whose secret hashes to `token_hash`: the configuration's
/// `operator_token`, or a token of `token create` that is not revoked. The console's sessions
/// keep this hash and ask again at every request.
pub async fn caller_of_token<S: Store>(
    store: &S,
    operator_token: Option<&str>,
    token_hash: &str,
) -> Result<Caller, Problem> {
    if let Some(expected) = operator_token
        && constant_time_eq(token_hash.as_bytes(), sha256_hex(expected.as_bytes()).as_bytes())
    {
        return Ok(Caller { role: Role::Operator, account: None, contact: false, person: None });
    }
    // The lookup is by hash: its timing says nothing about the secret.
    match store.api_token(token_hash).await.map_err(internal)? {
        Some(token) if !token.revoked() => {
            Ok(Caller { role: token.role, account: token.account, contact: token.contact, person: token.person })
        }
        Some(_) => Err(Problem::unauthorized("this token was revoked")),
        None => Err(Problem::unauthorized("the token is not valid")),
    }
}

/// `account`, if the caller may see it; 404 otherwise, as for an account that does not exist.
pub async fn visible_account<S: Store>(store: &S, caller: &Caller, account: &str) -> Result<Account, Problem> {
    let not_found = || Problem::not_found(format!("account {account:?} does not exist"));
    let found = store.account(account).await.map_err(internal)?.ok_or_else(not_found)?;
    if may_see(caller.role, caller.account.as_deref(), &found) { Ok(found) } else { Err(not_found()) }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A store error as the caller sees it: 503 while the store cannot write (retry later), else a
/// 500 that names no database internals (the log has them).
pub fn internal(e: StoreError) -> Problem {
    tracing::error!(error = %e, "store error");
    match e {
        StoreError::Unavailable(_) => Problem::unavailable(format!(
            "the collector cannot store anything right now ({}); retry later",
            e.cause().unwrap_or_default()
        )),
        _ => Problem::internal("the collector failed to serve this request; its log says why"),
    }
}
