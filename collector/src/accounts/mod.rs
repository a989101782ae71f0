//! Accounts and what they hold, as the operator's commands and the API change them (Contract):
//! each change validates everything it is given before it writes, and says what was wrong and
//! where ([`ChangeError`]).
//!
//! - here: accounts, their contract terms' changes, API tokens;
//! - [`sites`], [`licenses`]: sites and licenses, each change checked against R17;
//! - [`terms`]: what an account shows of its contract terms (R27);
//! - [`recipients`]: where an account's notifications go (R15);
//! - [`tenancy`]: who sees which account.

pub mod licenses;
pub mod recipients;
pub mod sites;
pub mod tenancy;
pub mod terms;

pub use licenses::LicenseArgs;
pub use sites::{NewSite, SiteChanges};

use chrono::NaiveDate;
use tally_common::enforcement::CapViolation;
use tally_common::time::Month;

use crate::digest::{NoRandomness, random_hex, sha256_hex};
use crate::store::{Account, CapChange, ContractTerm, Person, Role, Store, StoreError};

/// A change refused (what was wrong and where) or failed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{file}: {total} error(s), nothing was imported\n  - {}{}",
        .errors.join("\n  - "),
        if *total > errors.len() { format!("\n  … and {} more", total - errors.len()) } else { String::new() }
    )]
    BadRows { file: String, errors: Vec<String>, total: usize },
    #[error("refused, nothing was changed:\n  - {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  - "))]
    Refused(Vec<CapViolation>),
    /// A change back-dated into a month whose bill is final (R9, R31).
    #[error(
        "{what} from {from} falls in {month}, which is finalized: its bill never changes; a correction may only \
         fall in a month not yet finalized"
    )]
    Finalized { what: &'static str, from: NaiveDate, month: Month },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] NoRandomness),
}

pub(crate) fn invalid(message: impl Into<String>) -> ChangeError {
    ChangeError::Invalid(message.into())
}

/// An identifier of an account or site: 1 to 64 of `a-z 0-9 - _ .`.
pub fn check_id(what: &str, id: &str) -> Result<(), ChangeError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(()) } else { Err(invalid(format!("{what} id {id:?} must be 1 to 64 of a-z, 0-9, '-', '_', '.'"))) }
}

/// Adds an account with its first contract term (R27): `term`, or `default_months` from `today`.
pub async fn add_account(
    store: &impl Store,
    account: Account,
    term: Option<ContractTerm>,
    default_months: u32,
    today: NaiveDate,
) -> Result<ContractTerm, ChangeError> {
    check_id("account", &account.id)?;
    if account.name.trim().is_empty() {
        return Err(invalid("--name must not be empty"));
    }
    if let Some(partner) = &account.partner
        && store.account(partner).await?.is_none()
    {
        return Err(invalid(format!("partner account {partner:?} does not exist")));
    }
    match (&account.eop_contact_name, &account.eop_contact_email) {
        (None, None) => {}
        (Some(_), Some(email)) if email.contains('@') && !email.starts_with('@') && !email.ends_with('@') => {}
        (Some(_), Some(email)) => {
            return Err(invalid(format!("--eop-contact-email {email:?} is not an e-mail address")));
        }
        _ => return Err(invalid("--eop-contact-name and --eop-contact-email go together")),
    }
    let term = term.unwrap_or_else(|| ContractTerm::months_from(today, default_months));
    check_term(term)?;
    store.add_account(&account, term).await?;
    Ok(term)
}

fn check_term(term: ContractTerm) -> Result<(), ChangeError> {
    if term.end < term.start {
        return Err(invalid(format!("--term-end {} is before --term-start {}", term.end, term.start)));
    }
    Ok(())
}

/// Sets a contract term of `account` (R27): it replaces the term it overlaps, or is added (a
/// renewal); returns the replaced term. Licenses already made keep their days.
pub async fn set_contract_term(
    store: &impl Store,
    account: &str,
    term: ContractTerm,
) -> Result<Option<ContractTerm>, ChangeError> {
    check_term(term)?;
    if store.account(account).await?.is_none() {
        return Err(invalid(format!("account {account:?} does not exist")));
    }
    store.set_contract_term(account, term).await?.map_err(|overlapped| {
        let terms: Vec<String> = overlapped.iter().map(|t| format!("{} to {}", t.start, t.end)).collect();
        invalid(format!(
            "the term {} to {} overlaps {} terms of account {account} ({}): it may replace one term, not several",
            term.start,
            term.end,
            overlapped.len(),
            terms.join(", ")
        ))
    })
}

/// The prefix of API bearer tokens, so a leaked one is recognisable.
pub const API_TOKEN_PREFIX: &str = "tally_";

/// `token create`: a bearer token for the HTTP API, returned once with its id; only its hash is
/// stored. Operators see every account; partner and customer tokens belong to `account`.
pub async fn create_api_token(
    store: &impl Store,
    role: Role,
    account: Option<&str>,
    contact: bool,
    person: Option<&Person>,
) -> Result<(i64, String), ChangeError> {
    if let Some(person) = person {
        if person.name.trim().is_empty() {
            return Err(invalid("--name must not be empty"));
        }
        person
            .email
            .parse::<lettre::Address>()
            .map_err(|e| invalid(format!("--email {:?} is not an e-mail address: {e}", person.email)))?;
    }
    match (role, account) {
        (Role::Operator, Some(_)) => return Err(invalid("an operator token sees every account: no --account")),
        (Role::Operator, None) if contact => return Err(invalid("--contact is for an account's token")),
        (Role::Operator, None) => {}
        (_, None) => return Err(invalid(format!("a {} token needs --account", role.as_str()))),
        (_, Some(account)) => {
            if store.account(account).await?.is_none() {
                return Err(invalid(format!("account {account:?} does not exist")));
            }
        }
    }
    let secret = format!("{API_TOKEN_PREFIX}{}", random_hex(32)?);
    let id = store.add_api_token(&sha256_hex(secret.as_bytes()), role, account, contact, person).await?;
    Ok((id, secret))
}

/// Applies a change R17 constrains, checked against the licenses in force today.
pub(crate) async fn apply(store: &impl Store, change: CapChange) -> Result<(), ChangeError> {
    let violations = store.apply_checked(&change, crate::clock::now()).await?;
    if violations.is_empty() { Ok(()) } else { Err(ChangeError::Refused(violations)) }
}

/// `from`, if its month is not finalized for `account` (R9): a change of a finalized month's
/// terms would change a bill that never changes.
pub(crate) async fn open_month_from(
    store: &impl Store,
    account: &str,
    what: &'static str,
    from: NaiveDate,
) -> Result<NaiveDate, ChangeError> {
    let month = Month::containing(from);
    let finalized = store.finalized_months(account).await?;
    match finalized.iter().any(|m| *m == month.to_string()) {
        true => Err(ChangeError::Finalized { what, from, month }),
        false => Ok(from),
    }
}
