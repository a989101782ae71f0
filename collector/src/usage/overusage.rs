//! Over-usage (R14), found when a month is finalized, and its resolution (R16).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tally_common::kinds::LicenseKind;
use tally_common::time::Month;

use super::document::UsageReport;
use crate::store::{
    ContractTerm, License, NewLicense, NewOverusage, Overusage, Resolution, ResolutionKind, Store, StoreError, term_on,
};

/// Every region group and meter of a finalized month above its license. A base product's
/// over-usage flags the account's Premium Security and Insights licenses in force in that month
/// (R14).
pub fn evaluate(report: &UsageReport, licenses: &[License]) -> Vec<NewOverusage> {
    let (first, last) = (report.month.first_day(), report.month.last_day());
    let held = |kind: LicenseKind| {
        licenses.iter().any(|l| l.terms.kind == kind && l.terms.effective_from <= last && first <= l.terms.effective_to)
    };
    let flags = |kind: LicenseKind| -> Vec<LicenseKind> {
        if !kind.is_base_product() {
            return Vec::new();
        }
        [LicenseKind::PremiumSecurity, LicenseKind::Insights].into_iter().filter(|k| held(*k)).collect()
    };
    let pools = report.bandwidth_pool.iter().filter(|p| p.excess_bps > 0).map(|p| NewOverusage {
        license: LicenseKind::BandwidthPool,
        region: Some(p.region_group.to_string()),
        measured: p.monthly_p95_bps,
        licensed: p.licensed_bps,
        excess: p.excess_bps,
        flags: flags(LicenseKind::BandwidthPool),
    });
    let meters = report.meters.iter().map(|m| &m.meter).filter(|m| m.excess > 0).map(|m| NewOverusage {
        license: m.license,
        region: None,
        measured: m.measured,
        licensed: m.licensed,
        excess: m.excess,
        flags: flags(m.license),
    });
    pools.chain(meters).collect()
}

/// A resolution asked for (R16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResolveRequest {
    /// A one-time charge for the month's excess.
    TrueUp,
    /// A license increase of `quantity` (the license's unit: bit/s for the bandwidth pool) from
    /// the first day of the next month to the end of the contract term.
    TrueForward { quantity: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("over-usage {0} does not exist for this account")]
    NotFound(i64),
    #[error("over-usage {0} is already resolved")]
    AlreadyResolved(i64),
    #[error("a True-Forward of {quantity} is below the excess of {excess}: it must cover it (R16)")]
    BelowExcess { quantity: u64, excess: u64 },
    #[error("no {license} license is in force on {day}: there is no license to increase")]
    NoLicense { license: LicenseKind, day: chrono::NaiveDate },
    #[error(
        "no contract term of the account is in force on {day}, and a True-Forward runs to the end of the term in \
         force (R16, R27): the operator sets one first (account set --term-start --term-end)"
    )]
    NoTerm { day: chrono::NaiveDate },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Resolves over-usage `id` of `account`: records a True-Up charge, or creates the True-Forward
/// license increase, in one transaction with the resolution.
pub async fn resolve<S: Store>(
    store: &S,
    account: &str,
    id: i64,
    request: ResolveRequest,
    now: DateTime<Utc>,
) -> Result<Overusage, ResolveError> {
    let overusage = store.overusage(id).await?.filter(|o| o.account == account).ok_or(ResolveError::NotFound(id))?;
    if overusage.resolution.is_some() {
        return Err(ResolveError::AlreadyResolved(id));
    }
    let found = &overusage.found;
    let (resolution, license) = match request {
        ResolveRequest::TrueUp => {
            (Resolution { kind: ResolutionKind::TrueUp, quantity: found.excess, license_id: None, at: now }, None)
        }
        ResolveRequest::TrueForward { quantity } => {
            if quantity < found.excess {
                return Err(ResolveError::BelowExcess { quantity, excess: found.excess });
            }
            let month: Month =
                overusage.month.parse().map_err(|e| StoreError::Corrupt(format!("over-usage {id}: month: {e}")))?;
            let (licenses, terms) =
                tokio::try_join!(store.licenses_of_account(account), store.contract_terms(account))?;
            let license = carried_forward(&licenses, &terms, found, month, quantity)?;
            (Resolution { kind: ResolutionKind::TrueForward, quantity, license_id: None, at: now }, Some(license))
        }
    };
    if !store.resolve_overusage(id, &resolution, license.as_ref()).await? {
        return Err(ResolveError::AlreadyResolved(id));
    }
    tracing::info!(account, id, kind = resolution.kind.as_str(), quantity = resolution.quantity, "over-usage resolved");
    store.overusage(id).await?.ok_or(ResolveError::NotFound(id))
}

/// The True-Forward license (R16, R27): the over-used license's kind and region (of the one in
/// force on the month's last day), `quantity`, from the first day of the next month to the last
/// day of the contract term in force on that day.
fn carried_forward(
    licenses: &[License],
    terms: &[ContractTerm],
    found: &NewOverusage,
    month: Month,
    quantity: u64,
) -> Result<NewLicense, ResolveError> {
    let last_day = month.last_day();
    let next = month.next().first_day();
    let over_used = licenses
        .iter()
        .filter(|l| l.terms.kind == found.license && (found.region.is_none() || l.terms.region == found.region))
        .filter(|l| l.terms.effective_from <= last_day && last_day <= l.terms.effective_to)
        .max_by_key(|l| l.terms.effective_to)
        .ok_or(ResolveError::NoLicense { license: found.license, day: last_day })?;
    let term = term_on(terms, next).ok_or(ResolveError::NoTerm { day: next })?;
    Ok(NewLicense { quantity, effective_from: next, effective_to: term.end, ..over_used.terms.clone() })
}
