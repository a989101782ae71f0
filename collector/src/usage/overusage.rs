//! Over-usage (R14), found when a month is finalized, and its resolution (R16).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tally_common::bandwidth::Bandwidth;
use tally_common::kinds::{LicenseKind, ZtnaRegion};
use tally_common::meters;
use tally_common::pool::required_purchase_mbps;
use tally_common::time::Month;

use super::document::UsageReport;
use crate::store::{
    ContractTerm, License, NewLicense, NewOverusage, Overusage, Resolution, ResolutionKind, Store, StoreError,
    UnitsUpgrade, term_on,
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
        required_purchase: required_purchase_mbps(p.excess_bps),
        flags: flags(LicenseKind::BandwidthPool),
    });
    let meters = report.meters.iter().map(|m| &m.meter).filter(|m| m.excess > 0).map(|m| NewOverusage {
        license: m.license,
        region: None,
        measured: m.measured,
        licensed: m.licensed,
        excess: m.excess,
        required_purchase: m.required_purchase,
        flags: flags(m.license),
    });
    pools.chain(meters).collect()
}

/// A resolution asked for (R16). Quantities are in the license's unit (R32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResolveRequest {
    /// A one-time charge for the month's excess: its required purchase.
    TrueUp,
    /// A license increase from the first day of the next month to the end of the contract
    /// term, at least the required purchase.
    TrueForward {
        /// The increase in users, devices (whole blocks) or data units; not for the bandwidth pool.
        #[serde(default)]
        quantity: Option<u64>,
        /// The bandwidth pool's increase, in Mbps.
        #[serde(default)]
        quantity_mbps: Option<u64>,
        /// ZTNA users: the region whose license grows; required when the account holds ZTNA
        /// licenses in several.
        #[serde(default)]
        region: Option<ZtnaRegion>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("over-usage {0} does not exist for this account")]
    NotFound(i64),
    #[error("over-usage {0} is already resolved")]
    AlreadyResolved(i64),
    /// A quantity in the wrong field: names the field to use.
    #[error("{why}")]
    Field { field: &'static str, why: String },
    #[error(
        "a True-Forward of {quantity} {unit} is below the required purchase of {required} {unit}: it must cover the \
         excess (R16, R32)"
    )]
    BelowRequired { field: &'static str, quantity: u64, required: u64, unit: &'static str },
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

impl ResolveError {
    fn field(field: &'static str, why: impl Into<String>) -> ResolveError {
        ResolveError::Field { field, why: why.into() }
    }
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
            let quantity = found.required_purchase;
            (Resolution { kind: ResolutionKind::TrueUp, quantity, license_id: None, at: now }, None)
        }
        ResolveRequest::TrueForward { quantity, quantity_mbps, region } => {
            let (field, quantity) = purchase(found.license, quantity, quantity_mbps)?;
            if quantity < found.required_purchase {
                let (required, unit) = (found.required_purchase, found.license.purchase_unit());
                return Err(ResolveError::BelowRequired { field, quantity, required, unit });
            }
            let month: Month =
                overusage.month.parse().map_err(|e| StoreError::Corrupt(format!("over-usage {id}: month: {e}")))?;
            let (licenses, terms) =
                tokio::try_join!(store.licenses_of_account(account), store.contract_terms(account))?;
            let license = carried_forward(&licenses, &terms, found, month, (field, quantity), region)?;
            (Resolution { kind: ResolutionKind::TrueForward, quantity, license_id: None, at: now }, Some(license))
        }
    };
    if !store.resolve_overusage(id, &resolution, license.as_ref()).await? {
        return Err(ResolveError::AlreadyResolved(id));
    }
    tracing::info!(account, id, kind = resolution.kind.as_str(), quantity = resolution.quantity, "over-usage resolved");
    store.overusage(id).await?.ok_or(ResolveError::NotFound(id))
}

/// A True-Forward's quantity and the field it came in: `quantity_mbps` for the bandwidth pool,
/// `quantity` for every other license (R32). A pool's bare `quantity` is refused: an older client
/// meant bit/s by it, and would buy 10⁶ times too much.
fn purchase(
    license: LicenseKind,
    quantity: Option<u64>,
    quantity_mbps: Option<u64>,
) -> Result<(&'static str, u64), ResolveError> {
    let pool = license == LicenseKind::BandwidthPool;
    match (pool, quantity, quantity_mbps) {
        (true, None, Some(mbps)) => Ok(("quantity_mbps", mbps)),
        (true, Some(_), _) => Err(ResolveError::field(
            "quantity",
            "a bandwidth pool True-Forward is bought in Mbps: send quantity_mbps (quantity is not accepted for the pool)",
        )),
        (true, None, None) => Err(ResolveError::field("quantity_mbps", "required: the pool's increase in Mbps")),
        (false, Some(n), None) => Ok(("quantity", n)),
        (false, _, Some(_)) => Err(ResolveError::field(
            "quantity_mbps",
            format!("only the bandwidth pool is bought in Mbps: send quantity, in {}", license.purchase_unit()),
        )),
        (false, None, None) => {
            Err(ResolveError::field("quantity", format!("required: the increase in {}", license.purchase_unit())))
        }
    }
}

/// The True-Forward license (R16, R27): the over-used license's kind and region (of the one in
/// force on the month's last day; ZTNA: of `region`, required when several are), `quantity` in
/// the license's unit (devices: whole blocks), from the first day of the next month to the last
/// day of the contract term in force on that day.
fn carried_forward(
    licenses: &[License],
    terms: &[ContractTerm],
    found: &NewOverusage,
    month: Month,
    (field, quantity): (&'static str, u64),
    region: Option<ZtnaRegion>,
) -> Result<NewLicense, ResolveError> {
    let last_day = month.last_day();
    let next = month.next().first_day();
    let in_force: Vec<&License> = licenses
        .iter()
        .filter(|l| l.terms.kind == found.license && (found.region.is_none() || l.terms.region == found.region))
        .filter(|l| l.terms.effective_from <= last_day && last_day <= l.terms.effective_to)
        .collect();
    let regions: BTreeSet<&str> = in_force.iter().filter_map(|l| l.terms.region.as_deref()).collect();
    let in_region = match (found.license, region) {
        (LicenseKind::ZtnaUsers, Some(region)) => {
            let held: Vec<&License> =
                in_force.iter().copied().filter(|l| l.terms.region.as_deref() == Some(region.as_str())).collect();
            if held.is_empty() && !in_force.is_empty() {
                let held = regions.iter().copied().collect::<Vec<_>>().join(", ");
                return Err(ResolveError::field(
                    "region",
                    format!("the account holds no {region} ZTNA license; it holds: {held}"),
                ));
            }
            held
        }
        (LicenseKind::ZtnaUsers, None) if regions.len() > 1 => {
            let held = regions.iter().copied().collect::<Vec<_>>().join(", ");
            return Err(ResolveError::field(
                "region",
                format!(
                    "required: the account holds ZTNA licenses in several regions ({held}); name the one to increase"
                ),
            ));
        }
        (_, Some(_)) if found.license != LicenseKind::ZtnaUsers => {
            return Err(ResolveError::field("region", "only a ZTNA True-Forward names a region"));
        }
        _ => in_force,
    };
    let over_used = in_region
        .into_iter()
        .max_by_key(|l| l.terms.effective_to)
        .ok_or(ResolveError::NoLicense { license: found.license, day: last_day })?;
    let quantity = match found.license {
        LicenseKind::BandwidthPool => {
            Bandwidth::from_mbps(quantity).ok_or_else(|| ResolveError::field(field, "too large"))?.bps()
        }
        LicenseKind::Devices => {
            let block = over_used.terms.block_size.unwrap_or(1).max(1);
            if quantity % block != 0 {
                return Err(ResolveError::field(
                    field,
                    format!("devices are bought in whole blocks of {block}: {quantity} is not a multiple of {block}"),
                ));
            }
            quantity
        }
        _ => quantity,
    };
    let term = term_on(terms, next).ok_or(ResolveError::NoTerm { day: next })?;
    Ok(NewLicense { quantity, effective_from: next, effective_to: term.end, ..over_used.terms.clone() })
}

/// Upgrades the over-usage stored before purchases were in the license's unit (R32), at start:
/// fills each one's required purchase, converts a bandwidth pool's resolution from bit/s to Mbps
/// (rounded up), and marks for review what cannot be converted without the operator: a Data
/// Lake resolution recorded in events per hour (a True-Forward's license was created with that
/// quantity as data units). Changes no license. Returns how many were upgraded.
pub async fn upgrade_units<S: Store>(store: &S) -> Result<usize, StoreError> {
    let before = store.overusages_before_units().await?;
    let mut upgraded = 0;
    for o in &before {
        let licenses = store.licenses_of_account(&o.account).await?;
        let upgrade = units_upgrade(o, &licenses);
        if let Some(review) = &upgrade.review {
            tracing::warn!(account = %o.account, month = %o.month, id = o.id, "{review}");
        }
        if store.upgrade_overusage_units(o.id, &upgrade).await? {
            upgraded += 1;
        }
    }
    if upgraded > 0 {
        let to_review = store.overusages_to_review().await?.len();
        tracing::info!(
            upgraded,
            to_review,
            "over-usage stored before purchases were counted in the license's unit upgraded (R32); \
             `tally-collector overusage list --suspect` lists what to review"
        );
    }
    Ok(upgraded)
}

/// What [`upgrade_units`] writes for `o`, with the account's `licenses` (for the devices block
/// and the Data Lake unit, one per account).
fn units_upgrade(o: &Overusage, licenses: &[License]) -> UnitsUpgrade {
    let found = &o.found;
    let held = |field: fn(&License) -> Option<u64>| {
        licenses.iter().filter(|l| l.terms.kind == found.license).find_map(field).unwrap_or(1).max(1)
    };
    let required_purchase = match found.license {
        LicenseKind::BandwidthPool => required_purchase_mbps(found.excess),
        LicenseKind::Devices => {
            meters::devices(found.measured, found.licensed, held(|l| l.terms.block_size)).required_purchase
        }
        LicenseKind::DataLake => {
            let per_unit = held(|l| l.terms.per_unit);
            meters::data_lake(found.measured, found.licensed / per_unit, per_unit).required_purchase
        }
        _ => found.excess,
    };
    let resolution = o.resolution.as_ref();
    let (resolved_quantity, review) = match (found.license, resolution) {
        (LicenseKind::BandwidthPool, Some(r)) => (Some(r.quantity.div_ceil(1_000_000)), None),
        (LicenseKind::DataLake, Some(r)) if r.kind == ResolutionKind::TrueForward => (
            None,
            Some(format!(
                "Data Lake True-Forward of over-usage {} ({} {}) created license {} with {} data units: the excess in \
                 events per hour; {required_purchase} data unit(s) cover it. Review that license",
                o.id,
                o.account,
                o.month,
                r.license_id.map_or("?".to_owned(), |id| id.to_string()),
                r.quantity
            )),
        ),
        (LicenseKind::DataLake, Some(r)) => (
            None,
            Some(format!(
                "Data Lake True-Up of over-usage {} ({} {}) was recorded as {} events per hour; {required_purchase} \
                 data unit(s) cover the excess. Review the charge",
                o.id, o.account, o.month, r.quantity
            )),
        ),
        _ => (None, None),
    };
    UnitsUpgrade { required_purchase, resolved_quantity, review }
}
