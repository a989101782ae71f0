//! Accounts, sites and licenses: who the customer is, where its sockets stand, what it bought.

use std::future::Future;

use chrono::{DateTime, Months, NaiveDate, Utc};
use tally_common::enforcement::{CapViolation, CappedSite, check};
use tally_common::kinds::{LicenseKind, SiteType};
use tally_common::license::LicenseTerm;
use tally_common::region::{CountryCode, RegionGroup};

use super::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub name: String,
    /// The managing partner of a sub-account.
    pub partner: Option<String>,
    pub eop_contact_name: Option<String>,
    pub eop_contact_email: Option<String>,
}

/// A site's country and region group from a day on, until its next change (R31).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteGroupSpan {
    pub site: String,
    /// The first day (`NaiveDate::MIN`-like `0001-01-01` for the site's first country).
    pub from: NaiveDate,
    pub country: CountryCode,
    pub region_group: RegionGroup,
}

impl CapChange {
    /// `licenses` as they would be after this change, if it is one of a license: `false` when
    /// the license is not among them.
    pub fn apply_to_licenses(&self, licenses: &mut Vec<License>) -> bool {
        match self {
            CapChange::UpdateLicense { id, quantity, effective_to } => {
                let Some(license) = licenses.iter_mut().find(|l| l.id == *id) else { return false };
                (license.terms.quantity, license.terms.effective_to) = (*quantity, *effective_to);
            }
            CapChange::ChangeLicenseFrom { id, from, .. } => {
                let Some(i) = licenses.iter().position(|l| l.id == *id) else { return false };
                let later = self.later_license(&licenses[i]);
                licenses[i].terms.effective_to = from.pred_opt().unwrap_or(*from);
                licenses.extend(later.map(|terms| License { id: 0, terms }));
            }
            CapChange::AddSite(_) | CapChange::UpdateSite(_) | CapChange::MoveSite { .. } => {}
        }
        true
    }

    /// The license a [`CapChange::ChangeLicenseFrom`] adds, given the one it changes.
    pub fn later_license(&self, changed: &License) -> Option<NewLicense> {
        match self {
            CapChange::ChangeLicenseFrom { from, quantity, effective_to, .. } => Some(NewLicense {
                quantity: *quantity,
                effective_from: *from,
                effective_to: *effective_to,
                ..changed.terms.clone()
            }),
            _ => None,
        }
    }
}

/// `site`'s history as `tally_common::region::group_on` reads it.
pub fn group_history(spans: &[SiteGroupSpan], site: &str) -> Vec<(NaiveDate, RegionGroup)> {
    spans.iter().filter(|s| s.site == site).map(|s| (s.from, s.region_group)).collect()
}

/// When an account's life began (R28), and when it came to Tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountLife {
    /// The earliest of its creation, its first license's first day and its first bucket's day.
    pub since: NaiveDate,
    /// The day it was created in Tally: months before it are imported history (R34).
    pub created: NaiveDate,
}

/// An account's contract term (R27): from `start` through `end`, both days included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContractTerm {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

impl ContractTerm {
    /// The default term (R27): `months` from `start`, through the day before the same date
    /// `months` later.
    pub fn months_from(start: NaiveDate, months: u32) -> ContractTerm {
        let end = start.checked_add_months(Months::new(months)).and_then(|d| d.pred_opt()).unwrap_or(NaiveDate::MAX);
        ContractTerm { start, end }
    }

    pub fn contains(&self, day: NaiveDate) -> bool {
        self.start <= day && day <= self.end
    }

    pub fn overlaps(&self, other: &ContractTerm) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

/// The term in force on `day` among an account's `terms` (R27).
pub fn term_on(terms: &[ContractTerm], day: NaiveDate) -> Option<ContractTerm> {
    terms.iter().copied().find(|t| t.contains(day))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub id: String,
    pub account: String,
    pub name: String,
    pub country: CountryCode,
    /// Follows the country (R11), recorded when the site is added.
    pub region_group: RegionGroup,
    pub site_type: SiteType,
    pub cap_bps: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLicense {
    pub account: String,
    pub kind: LicenseKind,
    /// A region group or ZTNA region, for the kinds scoped by region.
    pub region: Option<String>,
    /// Bits per second for the bandwidth pool; users, devices or data units otherwise.
    pub quantity: u64,
    pub block_size: Option<u64>,
    pub per_unit: Option<u64>,
    pub effective_from: NaiveDate,
    pub effective_to: NaiveDate,
}

/// A license as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    pub id: i64,
    pub terms: NewLicense,
}

impl License {
    /// Its days and quantity, as `tally_common::license` counts them (R8).
    pub fn term(&self) -> LicenseTerm {
        LicenseTerm {
            effective_from: self.terms.effective_from,
            effective_to: self.terms.effective_to,
            quantity: self.terms.quantity,
        }
    }
}

/// What an account's `sites` and `licenses` break of R17 on `day` (the rule is
/// `tally_common::enforcement::check`); a backend runs it inside the transaction of a change.
pub fn cap_violations(sites: &[Site], licenses: &[License], day: NaiveDate) -> Result<Vec<CapViolation>, StoreError> {
    let sites: Vec<CappedSite> = sites
        .iter()
        .map(|s| CappedSite {
            site: s.id.clone(),
            region_group: s.region_group,
            site_type: s.site_type,
            cap_bps: s.cap_bps,
        })
        .collect();
    Ok(check(&sites, &pool_licenses(licenses)?, day))
}

/// The bandwidth-pool licenses among `licenses`, with their region group.
pub fn pool_licenses(licenses: &[License]) -> Result<Vec<(RegionGroup, LicenseTerm)>, StoreError> {
    licenses
        .iter()
        .filter(|l| l.terms.kind == LicenseKind::BandwidthPool)
        .map(|l| {
            let region = l.terms.region.as_deref().unwrap_or_default();
            let group =
                region.parse().map_err(|e| StoreError::Corrupt(format!("license {}: region {region:?}: {e}", l.id)))?;
            Ok((group, l.term()))
        })
        .collect()
}

/// A change that R17 constrains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapChange {
    AddSite(Site),
    /// A site's new country (and region group), type and cap; its id and account stay.
    UpdateSite(Site),
    /// The same, its country (and region group) in force from `from` (R31): the site's history
    /// from that day on is replaced.
    MoveSite {
        site: Site,
        from: NaiveDate,
    },
    /// A license's new quantity and last day.
    UpdateLicense {
        id: i64,
        quantity: u64,
        effective_to: NaiveDate,
    },
    /// A license's quantity from a day on (R31): it ends the day before, and a license of the
    /// same terms with the new quantity runs from `from` to `effective_to`.
    ChangeLicenseFrom {
        id: i64,
        from: NaiveDate,
        quantity: u64,
        effective_to: NaiveDate,
    },
}

/// Accounts, their sites and their licenses, and the changes R17 constrains.
pub trait AccountStore: Send + Sync {
    /// Adds the account with its first contract term (R27), in one transaction.
    fn add_account(&self, account: &Account, term: ContractTerm)
    -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The account's contract terms, oldest first (R27).
    fn contract_terms(&self, account: &str) -> impl Future<Output = Result<Vec<ContractTerm>, StoreError>> + Send;
    /// Sets a contract term of `account`: it replaces the one term it overlaps (a correction,
    /// returned), or is added after the others (a renewal) or between them. Refused, with the
    /// terms it overlaps, when it overlaps more than one. Licenses already made keep their days:
    /// a longer term extends none of them.
    fn set_contract_term(
        &self,
        account: &str,
        term: ContractTerm,
    ) -> impl Future<Output = Result<Result<Option<ContractTerm>, Vec<ContractTerm>>, StoreError>> + Send;
    fn account(&self, id: &str) -> impl Future<Output = Result<Option<Account>, StoreError>> + Send;
    /// Every account's id.
    fn account_ids(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// The account's life (R28); `None` for an unknown account.
    fn account_life(&self, id: &str) -> impl Future<Output = Result<Option<AccountLife>, StoreError>> + Send;
    /// Every account, by id.
    fn accounts(&self) -> impl Future<Output = Result<Vec<Account>, StoreError>> + Send;
    /// Replaces the name and the EoP contact of account `account.id` (its partner stays); false
    /// when there is no such account.
    fn update_account(&self, account: &Account) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn add_site(&self, site: &Site) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn site(&self, id: &str) -> impl Future<Output = Result<Option<Site>, StoreError>> + Send;
    /// The region-group history of `account`'s sites (R31), by site and day.
    fn site_groups(&self, account: &str) -> impl Future<Output = Result<Vec<SiteGroupSpan>, StoreError>> + Send;
    /// Applies `change`, effective `at`, only if the account still satisfies R17 on that day
    /// afterwards, in one transaction: returns the violations (and nothing is written) or none
    /// (applied). A site's new cap enters its cap history (R26) in the same transaction.
    /// `add_site` and `add_license` do not check; every operator and API change goes through here.
    fn apply_checked(
        &self,
        change: &CapChange,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<CapViolation>, StoreError>> + Send;
    /// Returns the new license's id.
    fn add_license(&self, license: &NewLicense) -> impl Future<Output = Result<i64, StoreError>> + Send;
    fn sites_of_account(&self, account: &str) -> impl Future<Output = Result<Vec<Site>, StoreError>> + Send;
    fn licenses_of_account(&self, account: &str) -> impl Future<Output = Result<Vec<License>, StoreError>> + Send;
}
