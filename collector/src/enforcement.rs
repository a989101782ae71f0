//! Per-site caps (R17) on the collector's side: checking a change of sites or licenses. The rule
//! itself is `tally_common::enforcement`.

use chrono::NaiveDate;
use tally_common::enforcement::{CapViolation, CappedSite, check};

use crate::store::{License, Site, StoreError};
use crate::usage::report::pool_licenses;

/// What an account's `sites` and `licenses` break of R17 on `day`.
pub fn violations(sites: &[Site], licenses: &[License], day: NaiveDate) -> Result<Vec<CapViolation>, StoreError> {
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
