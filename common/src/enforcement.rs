//! Per-site bandwidth caps (R17): which sites must have one, and whether the caps of a
//! stand-alone group fit its licensed pool.
//!
//! The pool a group's caps must fit is the capacity in force on the day of the change (R8's "in
//! force on a day"): a license that starts later does not make room yet, and one shortened to
//! end before that day no longer does.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};

use crate::bandwidth::Bandwidth;
use crate::kinds::SiteType;
use crate::license::{LicenseTerm, capacity_on};
use crate::region::RegionGroup;

/// A site as R17 sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CappedSite {
    pub site: String,
    pub region_group: RegionGroup,
    pub site_type: SiteType,
    /// The cap in bits per second; `None` is unenforced.
    pub cap_bps: Option<u64>,
}

/// Whether R17 requires a cap: every site of a stand-alone group (China, Vietnam, Morocco) and
/// every Cloud Interconnect site. Elsewhere a cap is the operator's choice.
pub fn cap_required(region_group: RegionGroup, site_type: SiteType) -> bool {
    region_group.is_stand_alone() || site_type == SiteType::CloudInterconnect
}

/// How far above its cap a bucket may go before it is an enforcement violation: 5 % (R17).
pub const VIOLATION_TOLERANCE_PERCENT: u64 = 5;

/// Whether a bucket's maximum breaks a site's cap: above cap × 1.05 (R17). A shaper lets short
/// bursts through, so a bucket at the cap or a little above it is not a violation.
pub fn exceeds_cap(max_bps: u64, cap_bps: u64) -> bool {
    u128::from(max_bps) * 100 > u128::from(cap_bps) * u128::from(100 + VIOLATION_TOLERANCE_PERCENT)
}

/// What a set of sites and licenses breaks of R17.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CapViolation {
    /// A site that must have a cap has none.
    Missing { site: String, region_group: RegionGroup, site_type: SiteType },
    /// A stand-alone group's caps sum above its licensed pool.
    OverPool { region_group: RegionGroup, caps: Vec<(String, u64)>, sum_bps: u64, licensed_bps: u64, day: NaiveDate },
}

impl fmt::Display for CapViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapViolation::Missing { site, region_group, site_type } => {
                write!(f, "site {site} ({site_type} in {region_group}) must have a cap (R17)")
            }
            CapViolation::OverPool { region_group, caps, sum_bps, licensed_bps, day } => {
                let caps: Vec<String> = caps.iter().map(|(site, cap)| format!("{site} {}", Bandwidth(*cap))).collect();
                write!(
                    f,
                    "the caps of the {region_group} sites ({}) sum to {}, above the {region_group} pool of {} \
                     licensed on {day} (R17)",
                    caps.join(", "),
                    Bandwidth(*sum_bps),
                    Bandwidth(*licensed_bps)
                )
            }
        }
    }
}

/// Every violation of R17 by an account's `sites`, against its bandwidth-pool licenses (with
/// their region group) in force on `day`. Empty when the account complies.
pub fn check(sites: &[CappedSite], pools: &[(RegionGroup, LicenseTerm)], day: NaiveDate) -> Vec<CapViolation> {
    let mut violations: Vec<CapViolation> = sites
        .iter()
        .filter(|s| s.cap_bps.is_none() && cap_required(s.region_group, s.site_type))
        .map(|s| CapViolation::Missing { site: s.site.clone(), region_group: s.region_group, site_type: s.site_type })
        .collect();
    let mut caps: BTreeMap<RegionGroup, Vec<(String, u64)>> = BTreeMap::new();
    for site in sites.iter().filter(|s| s.region_group.is_stand_alone()) {
        if let Some(cap) = site.cap_bps {
            caps.entry(site.region_group).or_default().push((site.site.clone(), cap));
        }
    }
    for (region_group, caps) in caps {
        let sum_bps = caps.iter().fold(0u64, |sum, (_, cap)| sum.saturating_add(*cap));
        let licensed_bps = capacity_on(day, pools.iter().filter(|(g, _)| *g == region_group).map(|(_, term)| term));
        if sum_bps > licensed_bps {
            violations.push(CapViolation::OverPool { region_group, caps, sum_bps, licensed_bps, day });
        }
    }
    violations
}

/// A cap as it took effect: from `since`, `cap_bps` (`None`: uncapped), as policy `version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CapSetting {
    pub since: DateTime<Utc>,
    pub cap_bps: Option<u64>,
    pub version: u64,
}

/// The setting of the highest cap in force at some moment of `[start, end)`: the one in force
/// at `start` or one that took effect during it, an uncapped one above every cap (a bucket
/// straddling a change counts under the higher cap: the customer's favour, R17 and R26). `None`
/// when none was in force at `start`. `settings` oldest first.
fn highest_in_force(settings: &[CapSetting], start: DateTime<Utc>, end: DateTime<Utc>) -> Option<&CapSetting> {
    let at_start = settings.iter().rev().find(|c| c.since <= start)?;
    let during = settings.iter().filter(|c| start < c.since && c.since < end);
    std::iter::once(at_start).chain(during).max_by_key(|c| c.cap_bps.map_or(u128::MAX, u128::from))
}

/// The policy version an agent stamps on a bucket `[start, end)` it measured (R26, wire
/// protocol 2): the one of the highest cap it had applied during the bucket, from its log of
/// applied policies (`applied`, oldest first, with the agent's own times). `None` when it had
/// applied none at the bucket's start: the collector then judges the bucket as unstamped.
pub fn stamp(applied: &[CapSetting], start: DateTime<Utc>, end: DateTime<Utc>) -> Option<u64> {
    highest_in_force(applied, start, end).map(|c| c.version)
}

/// The cap a bucket `[start, end)` is judged against (R17, R26); `None` when it is not judged
/// (uncapped). `history` is the site's caps oldest first; `stamped` the policy version its agent
/// stamped on the bucket; `applied` the versions its agent reported applied, with when, oldest
/// first.
///
/// The cap the socket was enforcing when it measured:
/// - stamped with a version of this site's that had taken effect before the bucket's end: that
///   version's cap, exactly (the agent stamps the highest it applied during the bucket);
/// - otherwise the higher of the cap in force at the bucket's start (or the higher one if a
///   change took effect during the bucket: a bucket straddling a change is judged against the
///   higher cap, the customer's favour) and the cap of the version the agent last reported
///   applied by the bucket's end (a socket offline while its cap was lowered keeps shaping at the
///   old cap: its late buckets are no violation). An uncapped moment in either leaves the bucket
///   unjudged.
pub fn judging_cap(
    history: &[CapSetting],
    applied: &[(DateTime<Utc>, u64)],
    stamped: Option<u64>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Option<u64> {
    let version = |v: u64| history.iter().find(|c| c.version == v && c.since < end);
    if let Some(setting) = stamped.and_then(version) {
        return setting.cap_bps;
    }
    // Before the site's first cap it was uncapped.
    let in_force = highest_in_force(history, start, end)?.cap_bps?;
    let reported = applied.iter().rev().find(|(at, _)| *at <= end).and_then(|(_, v)| version(*v));
    match reported {
        Some(setting) => setting.cap_bps.map(|cap| cap.max(in_force)),
        None => Some(in_force),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_is_a_violation_only_above_the_cap_plus_five_percent() {
        assert!(!exceeds_cap(20_000_000, 20_000_000));
        assert!(!exceeds_cap(21_000_000, 20_000_000));
        assert!(exceeds_cap(21_000_001, 20_000_000));
        assert!(!exceeds_cap(u64::MAX, u64::MAX - 1), "no overflow near the top");
        assert!(exceeds_cap(u64::MAX, 1));
    }

    fn site(id: &str, region_group: RegionGroup, site_type: SiteType, cap_mbps: Option<u64>) -> CappedSite {
        CappedSite { site: id.into(), region_group, site_type, cap_bps: cap_mbps.map(|m| m * 1_000_000) }
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn pool(group: RegionGroup, mbps: u64, from: u32, to: u32) -> (RegionGroup, LicenseTerm) {
        (group, LicenseTerm { effective_from: day(from), effective_to: day(to), quantity: mbps * 1_000_000 })
    }

    #[test]
    fn caps_are_required_in_stand_alone_groups_and_for_cloud_interconnect() {
        use RegionGroup::*;
        use SiteType::*;
        for group in [China, Vietnam, Morocco] {
            for site_type in [Socket, Ipsec, CloudInterconnect] {
                assert!(cap_required(group, site_type), "{group} {site_type}");
            }
        }
        for group in [Group1, Group2] {
            assert!(cap_required(group, CloudInterconnect));
            assert!(!cap_required(group, Socket) && !cap_required(group, Ipsec), "{group}");
        }
    }

    #[test]
    fn a_stand_alone_groups_caps_must_fit_the_pool_in_force_that_day() {
        use RegionGroup::*;
        let sites = [
            site("sh", China, SiteType::Socket, Some(30)),
            site("bj", China, SiteType::Ipsec, Some(20)),
            site("hq", Group1, SiteType::Socket, Some(500)),
        ];
        // 50 Mbps of caps in China; the Group 1 cap counts against nothing.
        assert!(check(&sites, &[pool(China, 50, 1, 30)], day(15)).is_empty());
        let over = check(&sites, &[pool(China, 40, 1, 30), pool(Group1, 1_000, 1, 30)], day(15));
        assert_eq!(
            over,
            [CapViolation::OverPool {
                region_group: China,
                caps: vec![("sh".into(), 30_000_000), ("bj".into(), 20_000_000)],
                sum_bps: 50_000_000,
                licensed_bps: 40_000_000,
                day: day(15),
            }]
        );
        assert_eq!(
            over[0].to_string(),
            "the caps of the china sites (sh 30.0 Mbps, bj 20.0 Mbps) sum to 50.0 Mbps, above the china pool of \
             40.0 Mbps licensed on 2026-11-15 (R17)"
        );
        // Two licenses in force add up; one ended the day before or starting the day after does not count.
        assert!(check(&sites, &[pool(China, 25, 1, 30), pool(China, 25, 10, 20)], day(15)).is_empty());
        assert_eq!(check(&sites, &[pool(China, 50, 1, 14)], day(15)).len(), 1);
        assert_eq!(check(&sites, &[pool(China, 50, 16, 30)], day(15)).len(), 1);
    }

    #[test]
    fn every_site_without_a_required_cap_is_named() {
        use RegionGroup::*;
        let sites = [
            site("hq", Group1, SiteType::Socket, None),
            site("ci", Group1, SiteType::CloudInterconnect, None),
            site("hn", Vietnam, SiteType::Socket, None),
        ];
        let found = check(&sites, &[], day(1));
        let names: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "site ci (cloud_interconnect in group1) must have a cap (R17)",
                "site hn (socket in vietnam) must have a cap (R17)"
            ]
        );
    }
}

#[cfg(test)]
mod judging {
    use super::*;

    fn at(hour: u32) -> DateTime<Utc> {
        format!("2026-10-07T{hour:02}:00:00Z").parse().unwrap()
    }

    fn change(hour: u32, cap_mbps: Option<u64>, version: u64) -> CapSetting {
        CapSetting { since: at(hour), cap_bps: cap_mbps.map(|m| m * 1_000_000), version }
    }

    fn bucket(hour: u32) -> (DateTime<Utc>, DateTime<Utc>) {
        (at(hour), at(hour) + chrono::TimeDelta::minutes(5))
    }

    /// R26's cases, each by the rule's words.
    #[test]
    fn a_bucket_is_judged_against_the_cap_it_was_measured_under() {
        let lowered = [change(1, Some(50), 1), change(10, Some(20), 2)];
        let (start, end) = bucket(5);
        // Measured under 50, delivered after the cap went down to 20.
        assert_eq!(judging_cap(&lowered, &[(at(2), 1)], None, start, end), Some(50_000_000));
        // Measured after the change, but the agent never said it applied 20: it still shaped at 50.
        let (late, late_end) = bucket(11);
        assert_eq!(judging_cap(&lowered, &[(at(2), 1)], None, late, late_end), Some(50_000_000));
        // Once it reported 20 applied, 20.
        assert_eq!(judging_cap(&lowered, &[(at(2), 1), (at(10), 2)], None, late, late_end), Some(20_000_000));

        // The reverse: measured under 20, the cap raised to 50 afterwards.
        let raised = [change(1, Some(20), 1), change(10, Some(50), 2)];
        assert_eq!(judging_cap(&raised, &[(at(2), 1), (at(10), 2)], None, start, end), Some(20_000_000));

        // A bucket straddling a change: the higher cap.
        let straddled = [
            change(1, Some(50), 1),
            CapSetting { since: at(5) + chrono::TimeDelta::minutes(2), ..change(0, Some(20), 2) },
        ];
        assert_eq!(judging_cap(&straddled, &[], None, start, end), Some(50_000_000));
        let up = [
            change(1, Some(20), 1),
            CapSetting { since: at(5) + chrono::TimeDelta::minutes(2), ..change(0, Some(50), 2) },
        ];
        assert_eq!(judging_cap(&up, &[], None, start, end), Some(50_000_000));

        // Uncapped at any moment that counts: not judged.
        let lifted = [change(1, Some(20), 1), change(3, None, 2)];
        assert_eq!(judging_cap(&lifted, &[], None, start, end), None);
        assert_eq!(judging_cap(&[change(1, None, 1), change(10, Some(20), 2)], &[], None, start, end), None);
        assert_eq!(judging_cap(&lifted, &[(at(0), 2)], None, bucket(0).0, bucket(0).1), None, "applied: uncapped");
        // Before the site had any cap, or capped only during the bucket.
        assert_eq!(judging_cap(&[change(10, Some(20), 1)], &[], None, start, end), None);
        let first = CapSetting { since: at(5) + chrono::TimeDelta::minutes(2), ..change(0, Some(20), 1) };
        assert_eq!(judging_cap(&[first], &[], None, start, end), None);
    }

    /// Wire protocol 2: the stamp says exactly which cap the socket enforced.
    #[test]
    fn a_stamped_bucket_is_judged_against_its_versions_cap() {
        let (start, end) = bucket(5);
        // Stamped 50, delivered after the cap went down to 20: 50.
        let lowered = [change(1, Some(50), 1), change(10, Some(20), 2)];
        assert_eq!(judging_cap(&lowered, &[], Some(1), start, end), Some(50_000_000));
        // Measured under 20, the cap raised to 50 afterwards: 20, whatever the agent reported later.
        let raised = [change(1, Some(20), 1), change(3, Some(50), 2)];
        assert_eq!(judging_cap(&raised, &[(at(4), 2)], Some(1), start, end), Some(20_000_000));
        // A stamp of an uncapped version: not judged.
        assert_eq!(judging_cap(&[change(1, None, 1), change(2, Some(20), 2)], &[], Some(1), start, end), None);
        // A version this site never had, or one that took effect after the bucket: as unstamped.
        assert_eq!(judging_cap(&raised, &[], Some(7), start, end), Some(50_000_000));
        assert_eq!(judging_cap(&lowered, &[], Some(2), start, end), Some(50_000_000));
    }

    /// The agent's side: the version of the highest cap it applied during the bucket.
    #[test]
    fn an_agent_stamps_the_highest_cap_it_applied_during_the_bucket() {
        let (start, end) = bucket(5);
        let log = [change(1, Some(50), 4), change(3, Some(20), 6)];
        assert_eq!(stamp(&log, start, end), Some(6));
        assert_eq!(stamp(&log, bucket(2).0, bucket(2).1), Some(4));
        assert_eq!(stamp(&log, bucket(0).0, bucket(0).1), None, "nothing applied yet");
        let mid = at(5) + chrono::TimeDelta::minutes(2);
        let raised = [change(1, Some(20), 4), CapSetting { since: mid, ..change(0, Some(50), 6) }];
        assert_eq!(stamp(&raised, start, end), Some(6));
        let lowered = [change(1, Some(50), 4), CapSetting { since: mid, ..change(0, Some(20), 6) }];
        assert_eq!(stamp(&lowered, start, end), Some(4));
        let lifted = [change(1, Some(50), 4), CapSetting { since: mid, ..change(0, None, 6) }];
        assert_eq!(stamp(&lifted, start, end), Some(6), "uncapped is above every cap");
        assert_eq!(
            stamp(&lowered, end, end + chrono::TimeDelta::minutes(5)),
            Some(6),
            "a change at the end is the next bucket's"
        );
    }
}
