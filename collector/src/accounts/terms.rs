//! Contract terms (R27): what an account shows of them, and which licenses end with a term.
//!
//! Every account has a term from its creation (given at `account add`, or
//! `default_contract_months` from that day). A license made by a completed order (R24) and a
//! True-Forward increase (R16) end with the term in force; a renewal (a new term after the old
//! one) extends none of them, so an account's view and its usage report say which licenses end
//! with the term.

use chrono::NaiveDate;
use serde::Serialize;
use tally_common::kinds::LicenseKind;

use crate::store::{ContractTerm, License, Store, StoreError, term_on};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TermView {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

impl From<ContractTerm> for TermView {
    fn from(t: ContractTerm) -> TermView {
        TermView { start: t.start, end: t.end }
    }
}

/// The term in force on a day, and the licenses that end with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TermReport {
    pub start: NaiveDate,
    pub end: NaiveDate,
    /// Licenses whose last day is the term's: a renewal does not extend them.
    pub licenses_ending: Vec<EndingLicense>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct EndingLicense {
    pub id: i64,
    pub kind: LicenseKind,
    pub region: Option<String>,
    pub quantity: u64,
    pub effective_from: NaiveDate,
    pub effective_to: NaiveDate,
}

/// The term of `terms` in force on `day`, with the `licenses` that end with it.
pub fn term_report(terms: &[ContractTerm], licenses: &[License], day: NaiveDate) -> Option<TermReport> {
    let term = term_on(terms, day)?;
    let licenses_ending = licenses
        .iter()
        .filter(|l| l.terms.effective_to == term.end)
        .map(|l| EndingLicense {
            id: l.id,
            kind: l.terms.kind,
            region: l.terms.region.clone(),
            quantity: l.terms.quantity,
            effective_from: l.terms.effective_from,
            effective_to: l.terms.effective_to,
        })
        .collect();
    Some(TermReport { start: term.start, end: term.end, licenses_ending })
}

/// An account as the API and `account list` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub id: String,
    pub name: String,
    /// The managing partner of a sub-account.
    pub partner: Option<String>,
    pub eop_contact_name: Option<String>,
    pub eop_contact_email: Option<String>,
    /// The term in force today, with the licenses that end with it; `null` between terms.
    pub contract_term: Option<TermReport>,
    /// Every term, oldest first.
    pub contract_terms: Vec<TermView>,
}

/// Account `id` as of `today`; `None` when there is no such account.
pub async fn account_view(store: &impl Store, id: &str, today: NaiveDate) -> Result<Option<AccountView>, StoreError> {
    let Some(account) = store.account(id).await? else { return Ok(None) };
    let terms = store.contract_terms(id).await?;
    let licenses = store.licenses_of_account(id).await?;
    Ok(Some(AccountView {
        contract_term: term_report(&terms, &licenses, today),
        contract_terms: terms.into_iter().map(TermView::from).collect(),
        id: account.id,
        name: account.name,
        partner: account.partner,
        eop_contact_name: account.eop_contact_name,
        eop_contact_email: account.eop_contact_email,
    }))
}
