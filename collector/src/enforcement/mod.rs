//! Per-site caps (R17) on the collector's side: checking a change of sites or licenses, and what
//! a site's enforcement looks like (its cap, what its agent reported, the buckets that broke the
//! cap). The rules themselves are `tally_common::enforcement`.

pub mod pool_risk;
pub mod push;

use serde::{Deserialize, Serialize};
use tally_common::bandwidth::Bandwidth;
use tally_common::enforcement::cap_required;
use tally_common::kinds::SiteType;
use tally_common::region::RegionGroup;
use tally_common::time::{BucketStart, Month, MonthWindowSetting, rfc3339};

use crate::store::{EnforcementViolation, Site, Store, StoreError};

/// A bucket above its site's cap × 1.05, as the usage report and the API show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ViolationReport {
    pub bucket_start: String,
    pub max_bps: u64,
    pub cap_bps: u64,
}

impl From<&EnforcementViolation> for ViolationReport {
    fn from(v: &EnforcementViolation) -> Self {
        ViolationReport { bucket_start: v.bucket_start.to_string(), max_bps: v.max_bps, cap_bps: v.cap_bps }
    }
}

/// A cap as it took effect (R26), as the report and the API show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CapHistoryView {
    pub since: String,
    /// `None`: uncapped from then on.
    pub cap_bps: Option<u64>,
    pub policy_version: u64,
}

/// The caps in force during `month`'s window of `account`'s sites (or of `site`), by site: the
/// one in force at the window's start and every change in it.
pub async fn month_caps<S: Store>(
    store: &S,
    account: &str,
    site: Option<&str>,
    month: Month,
    setting: MonthWindowSetting,
) -> Result<Vec<(String, CapHistoryView)>, StoreError> {
    let window = month.window(setting);
    let history = store.cap_history(account, site, window.start_time(), window.end_time()).await?;
    Ok(history
        .into_iter()
        .map(|(site, c)| {
            (site, CapHistoryView { since: rfc3339(c.since), cap_bps: c.cap_bps, policy_version: c.version })
        })
        .collect())
}

/// What the site's agent last said about its policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AgentReport {
    pub version: u64,
    pub ok: bool,
    pub detail: String,
    pub at: String,
}

/// `GET /v1/accounts/{account}/sites/{site}/enforcement` and `site enforcement`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SiteEnforcement {
    pub site: String,
    pub account: String,
    pub region_group: RegionGroup,
    pub site_type: SiteType,
    /// `None`: unenforced.
    pub cap_bps: Option<u64>,
    /// Whether R17 requires a cap for this site.
    pub cap_required: bool,
    pub policy_version: u64,
    /// `None` until the agent has reported.
    pub agent_report: Option<AgentReport>,
    /// The agent applied the current policy.
    pub in_force: bool,
    pub month: Month,
    /// The caps in force during the month's window, each bucket judged by the one it was
    /// measured under (R26).
    pub cap_history: Vec<CapHistoryView>,
    /// Buckets of the month (its R7 window) above the cap × 1.05.
    pub violations: Vec<ViolationReport>,
}

/// The buckets in `month`'s window of `account`'s sites (or of `site`) that broke their cap.
pub async fn month_violations<S: Store>(
    store: &S,
    account: &str,
    site: Option<&str>,
    month: Month,
    setting: MonthWindowSetting,
) -> Result<Vec<EnforcementViolation>, StoreError> {
    let window = month.window(setting);
    let bound = |t: chrono::DateTime<chrono::Utc>| {
        BucketStart::from_unix(t.timestamp()).map_err(|e| StoreError::Database(e.to_string()))
    };
    store.enforcement_violations(account, site, bound(window.start_time())?, bound(window.end_time())?).await
}

pub async fn site_enforcement<S: Store>(
    store: &S,
    site: &Site,
    month: Month,
    setting: MonthWindowSetting,
) -> Result<SiteEnforcement, StoreError> {
    let policy_version = store.policy(&site.id).await?.map_or(0, |p| p.version);
    let report = store.policy_report(&site.id).await?;
    let violations = month_violations(store, &site.account, Some(&site.id), month, setting).await?;
    let cap_history = month_caps(store, &site.account, Some(&site.id), month, setting).await?;
    Ok(SiteEnforcement {
        site: site.id.clone(),
        account: site.account.clone(),
        region_group: site.region_group,
        site_type: site.site_type,
        cap_bps: site.cap_bps,
        cap_required: cap_required(site.region_group, site.site_type),
        policy_version,
        in_force: crate::store::policy_in_force(policy_version, report.as_ref().map(|r| (r.version, r.ok))),
        agent_report: report.map(|r| AgentReport { version: r.version, ok: r.ok, detail: r.detail, at: rfc3339(r.at) }),
        month,
        cap_history: cap_history.into_iter().map(|(_, c)| c).collect(),
        violations: violations.iter().map(ViolationReport::from).collect(),
    })
}

/// The human-readable form.
pub fn table(e: &SiteEnforcement) -> String {
    let cap = e.cap_bps.map_or("no cap".to_owned(), |c| format!("cap {}", Bandwidth(c)));
    let required = if e.cap_required { "required (R17)" } else { "optional" };
    let mut out = format!(
        "site {} ({}): {} in {}; {cap}, {required}; policy version {}\n",
        e.site, e.account, e.site_type, e.region_group, e.policy_version
    );
    out += &match &e.agent_report {
        None => "agent: no report yet\n".to_owned(),
        Some(r) => {
            let state = match (r.ok, e.in_force) {
                (true, true) => "in force",
                (true, false) => "applied an older version",
                (false, _) => "NOT applied",
            };
            format!("agent: version {} {state} ({}): {}\n", r.version, r.at, r.detail)
        }
    };
    for c in &e.cap_history {
        let cap = c.cap_bps.map_or("no cap".to_owned(), |c| Bandwidth(c).to_string());
        out += &format!("cap from {}: {cap} (policy version {})\n", c.since, c.policy_version);
    }
    out += &format!("violations in {}: {}\n", e.month, e.violations.len());
    for v in &e.violations {
        out += &format!("  {}  {} above cap {}\n", v.bucket_start, Bandwidth(v.max_bps), Bandwidth(v.cap_bps));
    }
    out
}
