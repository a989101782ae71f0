//! Shared by the collector's tests: the test kit's collector (`tally_testkit`), and this crate's
//! fixtures.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod in_process;
pub mod quic;
pub mod sinks;

pub use tally_testkit::collector::Collector;
pub use tally_testkit::{Logged, http, postgres as pg_cluster};

/// The clock of tests whose data is October 2026 (the golden month): October's window and its
/// grace have passed (R9), November is open, and pools of 2026 are in force for R17.
pub const MID_NOVEMBER_2026: &str = "2026-11-16T12:00:00Z";

/// Adds an account (`line`: `account add …`) as of 1 September 2026: October 2026 is part of its
/// life in Tally, not imported history, so its over-usage is notified (R34).
pub fn account_added_in_september(c: &Collector, line: &str) {
    c.ok_at("2026-09-01T00:00:00Z".parse().expect("an instant"), &args(line));
}

/// A collector on free ports with account `acme`, enrolled in the EoP (contact Ann), and its
/// site `hq` in the US.
pub fn acme_with_hq() -> Collector {
    let c = Collector::new();
    c.ok(&args("account add --id acme --name Acme --eop-contact-name Ann --eop-contact-email ann@acme.example"));
    c.ok(&args("site add --account acme --id hq --name HQ --country US --type socket"));
    c
}

/// A command line of words without spaces.
pub fn args(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// `account` gets a site and a 100 Mbps Group 1 pool for 2026, and the site runs at `bps` all of
/// Oct 7.
pub fn licensed_100_mbps_running_at(c: &Collector, account: &str, site: &str, bps: u64) {
    c.ok(&args(&format!("site add --account {account} --id {site} --name {site} --country US --type socket")));
    c.ok(&args(&format!(
        "license add --account {account} --kind bandwidth_pool --region group1 --quantity 100 --from 2026-01-01 --to 2026-12-31"
    )));
    let mut csv = String::from("site,bucket_start,max_bps\n");
    for slot in 0..288 {
        csv += &format!("{site},2026-10-07T{:02}:{:02}:00Z,{bps}\n", slot / 12, slot % 12 * 5);
    }
    let file = c.file(&format!("{site}.csv"), &csv);
    c.ok(&["import-buckets", "--csv", &file]);
}
