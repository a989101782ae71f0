//! Per-site caps (R17) through the operator's commands on a real store: each change that would
//! break the rule is refused with the sites, caps, sum and licensed pool named, and leaves
//! everything as it was; the changes that keep it are applied.

mod support;

use serde_json::Value;
use support::{Collector, args};

/// Each site's (region group, site type, cap) as stored, from `site set` of nothing (it prints
/// the site and changes nothing).
fn described(c: &Collector, site: &str) -> String {
    c.ok(&["site", "set", "--site", site]).trim().to_owned()
}

#[test]
fn r17_cases() {
    let c = Collector::new();
    c.ok(&args("account add --id acme --name Acme"));
    c.ok(&args(
        "license add --account acme --kind bandwidth_pool --region china --quantity 100 --from 2020-01-01 --to 2099-12-31",
    ));
    c.ok(&args(
        "license add --account acme --kind bandwidth_pool --region group1 --quantity 500 --from 2020-01-01 --to 2099-12-31",
    ));
    let add = |rest: &str| format!("site add --account acme --name x {rest}");

    // (what, command, None when accepted or the words its refusal must contain)
    let cases: [(&str, String, Option<&[&str]>); 11] = [
        ("a Group 1 socket without a cap", add("--id hq --country US --type socket"), None),
        (
            "a stand-alone site without a cap",
            add("--id sh --country CN --type socket"),
            Some(&["site sh (socket in china) must have a cap (R17)"]),
        ),
        (
            "a Cloud Interconnect site in Group 1 without a cap",
            add("--id ci --country US --type cloud_interconnect"),
            Some(&["site ci (cloud_interconnect in group1) must have a cap (R17)"]),
        ),
        (
            "a Cloud Interconnect site in Group 1 with a cap",
            add("--id ci --country US --type cloud_interconnect --cap-mbps 1000"),
            None,
        ),
        ("a stand-alone site within the pool", add("--id sh --country CN --type socket --cap-mbps 60"), None),
        (
            "caps summing above the licensed pool",
            add("--id bj --country CN --type ipsec --cap-mbps 50"),
            Some(&["china sites (sh 60.0 Mbps, bj 50.0 Mbps) sum to 110.0 Mbps", "china pool of 100.0 Mbps"]),
        ),
        ("caps summing to the pool exactly", add("--id bj --country CN --type ipsec --cap-mbps 40"), None),
        (
            "a cap raised above the pool",
            "site set --site bj --cap-mbps 41".into(),
            Some(&["sum to 101.0 Mbps, above the china pool of 100.0 Mbps"]),
        ),
        (
            "moving a site from the US to China without a cap",
            "site set --site hq --country CN".into(),
            Some(&["site hq (socket in china) must have a cap (R17)"]),
        ),
        (
            "a license shortened below the sum of caps",
            "license change --account acme --id 1 --to 2020-12-31".into(),
            Some(&["sum to 100.0 Mbps, above the china pool of 0.0 Mbps"]),
        ),
        (
            "a license made smaller than the sum of caps",
            "license change --account acme --id 1 --quantity 99".into(),
            Some(&["sum to 100.0 Mbps, above the china pool of 99.0 Mbps"]),
        ),
    ];
    for (what, command, refusal) in &cases {
        match refusal {
            None => {
                c.ok(&args(command));
            }
            Some(words) => {
                let error = c.fails(&args(command));
                assert!(error.contains("refused, nothing was changed"), "{what}: {error}");
                for w in *words {
                    assert!(error.contains(w), "{what}: {error:?} should say {w:?}");
                }
            }
        }
    }

    // Nothing of a refused change was applied.
    assert_eq!(described(&c, "hq"), "site hq: socket in group1 (US), no cap");
    assert_eq!(described(&c, "bj"), "site bj: ipsec in china (CN), cap 40.0 Mbps");
    let report: Value =
        serde_json::from_str(&c.ok(&args("report --account acme --month 2026-10 --format json"))).unwrap();
    let sites: Vec<&str> = report["sites"].as_array().unwrap().iter().map(|s| s["site"].as_str().unwrap()).collect();
    assert_eq!(sites, ["bj", "ci", "hq", "sh"]);

    // What keeps R17 is applied: a larger pool makes room, a cap lifted where none is required.
    c.ok(&args("license change --account acme --id 1 --quantity 150"));
    c.ok(&args("site set --site bj --cap-mbps 90"));
    c.ok(&args("site set --site hq --cap-mbps 200"));
    c.ok(&args("site set --site hq --no-cap"));
    assert_eq!(described(&c, "hq"), "site hq: socket in group1 (US), no cap");
    let error = c.fails(&args("site set --site sh --no-cap"));
    assert!(error.contains("site sh (socket in china) must have a cap (R17)"), "{error}");
    let error = c.fails(&args("license change --account acme --id 7 --quantity 1"));
    assert!(error.contains("account \"acme\" has no license 7"), "{error}");
}
