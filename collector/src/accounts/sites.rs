//! Sites: added and changed (country, type, cap), each change checked against R17 with the
//! licenses in force today.

use chrono::NaiveDate;
use tally_common::bandwidth::Bandwidth;
use tally_common::kinds::SiteType;
use tally_common::region::{CountryCode, RegionTable};

use super::{ChangeError, apply, check_id, invalid, open_month_from};
use crate::store::{CapChange, Site, Store};

/// Adds a site; its region group follows its country (R11), restricted countries are refused.
pub async fn add_site(store: &impl Store, regions: &RegionTable, site: NewSite) -> Result<Site, ChangeError> {
    check_id("site", &site.id)?;
    let country: CountryCode = site.country.parse().map_err(|e| invalid(format!("--country: {e}")))?;
    let region_group = regions.group_of(country).map_err(|e| invalid(e.to_string()))?;
    let site_type: SiteType = site.site_type.parse().map_err(|e| invalid(format!("--type: {e}")))?;
    let cap_bps = site.cap_mbps.map(cap_bps).transpose()?;
    if store.account(&site.account).await?.is_none() {
        return Err(invalid(format!("account {:?} does not exist", site.account)));
    }
    let site = Site { id: site.id, account: site.account, name: site.name, country, region_group, site_type, cap_bps };
    apply(store, CapChange::AddSite(site.clone())).await?;
    Ok(site)
}

/// `--cap-mbps` in bit/s.
pub fn cap_bps(mbps: u64) -> Result<u64, ChangeError> {
    match mbps {
        0 => Err(invalid("--cap-mbps must be a positive number of Mbps")),
        mbps => Ok(Bandwidth::from_mbps(mbps).ok_or_else(|| invalid("--cap-mbps is too large"))?.bps()),
    }
}

/// `site set` and `PATCH …/sites/{site}`: a site's country, type or cap; what is not given
/// keeps its value.
#[derive(Debug, Clone, Default)]
pub struct SiteChanges {
    pub site: String,
    pub country: Option<CountryCode>,
    pub site_type: Option<SiteType>,
    /// `Some(None)` lifts the cap.
    pub cap_bps: Option<Option<u64>>,
    /// The day the new country takes effect (R31): today by default; an earlier day corrects
    /// the site's history, and may only fall in a month not yet finalized.
    pub country_from: Option<NaiveDate>,
}

/// Applies `changes` if the account still complies with R17 afterwards; the site's region
/// group follows its country (R11), restricted countries are refused.
pub async fn set_site(store: &impl Store, regions: &RegionTable, changes: SiteChanges) -> Result<Site, ChangeError> {
    let mut site =
        store.site(&changes.site).await?.ok_or_else(|| invalid(format!("site {:?} does not exist", changes.site)))?;
    let today = crate::clock::now().date_naive();
    let moved_from = match (changes.country, changes.country_from) {
        (None, Some(_)) => return Err(invalid("--from dates a new country: give --country with it")),
        (None, None) => None,
        (Some(_), Some(from)) if from > today => {
            return Err(invalid(format!(
                "a site's country changes from today ({today}) or an earlier day, not {from}"
            )));
        }
        (Some(_), from) => Some(open_month_from(store, &site.account, "the new country", from.unwrap_or(today)).await?),
    };
    if let Some(country) = changes.country {
        site.country = country;
        site.region_group = regions.group_of(country).map_err(|e| invalid(e.to_string()))?;
    }
    if let Some(site_type) = changes.site_type {
        site.site_type = site_type;
    }
    match changes.cap_bps {
        Some(Some(0)) => return Err(invalid("a cap must be a positive bandwidth")),
        Some(cap) => site.cap_bps = cap,
        None => {}
    }
    // R17 from max(the day, today): the site as it is now is checked, never its past (R26).
    let change = match moved_from {
        Some(from) => CapChange::MoveSite { site: site.clone(), from },
        None => CapChange::UpdateSite(site.clone()),
    };
    apply(store, change).await?;
    Ok(site)
}

/// `site add` as typed on the command line.
#[derive(Debug, Clone)]
pub struct NewSite {
    pub account: String,
    pub id: String,
    pub name: String,
    pub country: String,
    pub site_type: String,
    pub cap_mbps: Option<u64>,
}
