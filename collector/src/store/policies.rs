//! Policies: a site's cap as pushed to its agent, its agent's report, and cap violations (R17).

use std::future::Future;

use chrono::{DateTime, Utc};
use tally_common::enforcement::CapSetting;
use tally_common::time::BucketStart;

use super::StoreError;

/// A site's cap as pushed to its agent (R17); the version grows with every change of any cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePolicy {
    pub site: String,
    pub version: u64,
    pub cap_bps: Option<u64>,
}

/// What a site's agent last reported about applying its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyReport {
    pub version: u64,
    pub ok: bool,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// A bucket above its site's cap × 1.05 (R17), and the cap it broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnforcementViolation {
    pub site: String,
    pub bucket_start: BucketStart,
    pub max_bps: u64,
    pub cap_bps: u64,
}

/// Caps as pushed to agents, what agents report back, and the buckets that broke a cap (R17).
/// A site's current policy version and the last version its agent reported on: `(version, ok)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyState {
    pub site: String,
    pub version: u64,
    pub reported: Option<(u64, bool)>,
}

impl PolicyState {
    /// Whether the agent applied the site's current policy (R17).
    pub fn in_force(&self) -> bool {
        policy_in_force(self.version, self.reported)
    }
}

/// Whether an agent that last reported `reported` (`(version, ok)`) enforces policy `version`.
pub fn policy_in_force(version: u64, reported: Option<(u64, bool)>) -> bool {
    reported == Some((version, true))
}

pub trait PolicyStore: Send + Sync {
    /// Each site of `account` with its policy version and its agent's last report, by site.
    fn policy_states(&self, account: &str) -> impl Future<Output = Result<Vec<PolicyState>, StoreError>> + Send;
    /// The policies changed after `version`, oldest change first.
    fn policies_since(&self, version: u64) -> impl Future<Output = Result<Vec<SitePolicy>, StoreError>> + Send;
    fn policy(&self, site: &str) -> impl Future<Output = Result<Option<SitePolicy>, StoreError>> + Send;
    /// Keeps the agent's latest report, replacing the one before.
    fn record_policy_report(
        &self,
        site: &str,
        report: &PolicyReport,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn policy_report(&self, site: &str) -> impl Future<Output = Result<Option<PolicyReport>, StoreError>> + Send;
    /// The caps in force during `[from, to)` of the account's sites (or of one) (R26): per site
    /// the one in force at `from` and every change before `to`, by site and time.
    fn cap_history(
        &self,
        account: &str,
        site: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(String, CapSetting)>, StoreError>> + Send;
    /// Violations of the account's sites (or of one of them) with buckets in `[from, to)`,
    /// by site and bucket.
    fn enforcement_violations(
        &self,
        account: &str,
        site: Option<&str>,
        from: BucketStart,
        to: BucketStart,
    ) -> impl Future<Output = Result<Vec<EnforcementViolation>, StoreError>> + Send;
}
