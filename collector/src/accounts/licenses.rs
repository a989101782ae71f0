//! Licenses: added and changed (quantity, last day), from a day never in a finalized month (R9,
//! R31), one unit per account for the counted kinds (R32).

use chrono::NaiveDate;
use tally_common::bandwidth::Bandwidth;
use tally_common::kinds::{LicenseKind, ZtnaRegion};
use tally_common::region::RegionGroup;

use super::{ChangeError, apply, invalid, open_month_from};
use crate::store::{CapChange, License, NewLicense, Store};

/// `license change`: a license's quantity (in its unit, Mbps for the pool) or last day.
pub async fn change_license(
    store: &impl Store,
    account: &str,
    id: i64,
    quantity: Option<u64>,
    to: Option<NaiveDate>,
    from: Option<NaiveDate>,
) -> Result<(), ChangeError> {
    let license = store
        .licenses_of_account(account)
        .await?
        .into_iter()
        .find(|l| l.id == id)
        .ok_or_else(|| invalid(format!("account {account:?} has no license {id}")))?;
    let effective_to = to.unwrap_or(license.terms.effective_to);
    if effective_to < license.terms.effective_from {
        return Err(invalid(format!(
            "--to {effective_to} is before the license's start {}",
            license.terms.effective_from
        )));
    }
    let Some(quantity) = quantity else {
        return apply(store, CapChange::UpdateLicense { id, quantity: license.terms.quantity, effective_to }).await;
    };
    let quantity = match quantity {
        0 => return Err(invalid("--quantity must be positive")),
        mbps if license.terms.kind == LicenseKind::BandwidthPool => {
            Bandwidth::from_mbps(mbps).ok_or_else(|| invalid("--quantity is too large"))?.bps()
        }
        n => n,
    };
    // R31: from a day (today by default), never in a finalized month; a license not started yet
    // changes whole.
    let from = from.unwrap_or_else(|| crate::clock::now().date_naive()).max(license.terms.effective_from);
    if from > effective_to {
        return Err(invalid(format!("--from {from} is after the license's last day {effective_to}")));
    }
    let from = open_month_from(store, account, "the new quantity", from).await?;
    match from == license.terms.effective_from {
        true => apply(store, CapChange::UpdateLicense { id, quantity, effective_to }).await,
        false => apply(store, CapChange::ChangeLicenseFrom { id, from, quantity, effective_to }).await,
    }
}

/// `license add` as typed on the command line.
#[derive(Debug, Clone)]
pub struct LicenseArgs {
    pub account: String,
    pub kind: String,
    pub region: Option<String>,
    pub quantity: u64,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub block_size: Option<u64>,
    pub per_unit: Option<u64>,
}

pub async fn add_license(store: &impl Store, args: LicenseArgs) -> Result<i64, ChangeError> {
    let kind: LicenseKind = args.kind.parse().map_err(|e| invalid(format!("--kind: {e}")))?;
    if args.quantity == 0 {
        return Err(invalid("--quantity must be positive"));
    }
    if args.from > args.to {
        return Err(invalid(format!("--from {} is after --to {}", args.from, args.to)));
    }
    match (kind, &args.region) {
        (LicenseKind::BandwidthPool, Some(r)) => {
            r.parse::<RegionGroup>().map_err(|e| invalid(format!("--region: {e}")))?;
        }
        (LicenseKind::ZtnaUsers, Some(r)) => {
            r.parse::<ZtnaRegion>().map_err(|e| invalid(format!("--region: {e}")))?;
        }
        (LicenseKind::BandwidthPool | LicenseKind::ZtnaUsers, None) => {
            return Err(invalid(format!("--region is required for {kind} licenses")));
        }
        (_, Some(_)) => return Err(invalid(format!("{kind} licenses apply to the whole account: no --region"))),
        (_, None) => {}
    }
    if (kind == LicenseKind::Devices) != args.block_size.is_some() {
        return Err(invalid("--block-size is required for devices licenses, and only for them"));
    }
    if (kind == LicenseKind::DataLake) != args.per_unit.is_some() {
        return Err(invalid(
            "--per-unit (events per hour per data unit) is required for data_lake licenses, and only for them",
        ));
    }
    if args.block_size == Some(0) || args.per_unit == Some(0) {
        return Err(invalid("--block-size and --per-unit must be positive"));
    }
    let quantity = if kind == LicenseKind::BandwidthPool {
        Bandwidth::from_mbps(args.quantity).ok_or_else(|| invalid("--quantity is too large"))?.bps()
    } else {
        args.quantity
    };
    if store.account(&args.account).await?.is_none() {
        return Err(invalid(format!("account {:?} does not exist", args.account)));
    }
    same_unit_as_held(&store.licenses_of_account(&args.account).await?, kind, args.block_size, args.per_unit)?;
    let license = NewLicense {
        account: args.account,
        kind,
        region: args.region,
        quantity,
        block_size: args.block_size,
        per_unit: args.per_unit,
        effective_from: args.from,
        effective_to: args.to,
    };
    // More capacity never breaks R17: no check.
    Ok(store.add_license(&license).await?)
}

/// One devices block size and one Data Lake data unit per account (R32): the required purchase
/// is counted in them, and a second size would leave it ambiguous.
fn same_unit_as_held(
    held: &[License],
    kind: LicenseKind,
    block_size: Option<u64>,
    per_unit: Option<u64>,
) -> Result<(), ChangeError> {
    let (flag, wanted, held_size) = match kind {
        LicenseKind::Devices => ("--block-size", block_size, held.iter().find_map(|l| l.terms.block_size)),
        LicenseKind::DataLake => ("--per-unit", per_unit, held.iter().find_map(|l| l.terms.per_unit)),
        _ => return Ok(()),
    };
    match (wanted, held_size) {
        (Some(wanted), Some(held_size)) if wanted != held_size => Err(invalid(format!(
            "the account's {kind} licenses use {flag} {held_size}: every one of them must (one unit per account, so \
             the purchase that covers an over-usage is counted in it); add this one with {flag} {held_size}"
        ))),
        _ => Ok(()),
    }
}
