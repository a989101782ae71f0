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

/// R17's future: a China pool that ends on November 25th while a capped site remains breaks
/// the rule on the 26th. `enforcement check` and `GET /v1/enforcement/at-risk` name the day, the
/// caps, their sum and the pool; `serve` tells the account 14 days and 1 day before, once each
/// across restarts.
#[test]
fn a_stand_alone_pool_that_will_end_under_capped_sites_is_reported_and_notified_once() {
    let token = "op-0123456789abcdef0123456789abcdef";
    let mut c = Collector::with_config(&format!("operator_token = \"{token}\"")).at("2026-11-16T12:00:00Z");
    c.ok(&args("account add --id acme --name Acme"));
    c.ok(&args("account notify --account acme --email ops@acme.example"));
    c.ok(&args(
        "license add --account acme --kind bandwidth_pool --region china --quantity 100 --from 2026-01-01 --to 2026-11-25",
    ));
    c.ok(&args("site add --account acme --id sh --name SH --country CN --type socket --cap-mbps 60"));
    c.ok(&args("site add --account acme --id bj --name BJ --country CN --type socket --cap-mbps 30"));

    let expected = serde_json::json!([{
        "account": "acme", "region_group": "china", "day": "2026-11-26",
        "caps": [{"site": "bj", "cap_bps": 30_000_000}, {"site": "sh", "cap_bps": 60_000_000}],
        "sum_bps": 90_000_000, "licensed_bps": 0,
        "message": "the caps of the china sites (bj 30.0 Mbps, sh 60.0 Mbps) sum to 90.0 Mbps, above the china pool of 0.0 Mbps licensed on 2026-11-26 (R17)"
    }]);
    let check = |c: &Collector, days: &str| -> Value {
        serde_json::from_str(&c.ok(&["enforcement", "check", "--days", days, "--format", "json"])).unwrap()
    };
    assert_eq!(check(&c, "30"), expected);
    assert_eq!(check(&c, "9"), serde_json::json!([]), "the 26th is 10 days away");
    assert_eq!(check(&c, "10"), expected);
    assert!(c.ok(&args("enforcement check")).contains("acme china from 2026-11-26"));

    let notices = |c: &Collector| -> Vec<String> {
        let rows: Value = serde_json::from_str(&c.ok(&args("notifications --account acme --format json"))).unwrap();
        rows.as_array().unwrap().iter().map(|r| r["topic"].as_str().unwrap().to_owned()).collect()
    };
    // 10 days before: the 14-day notice, once, however often the collector starts.
    for _ in 0..2 {
        let (serving, http) = support::http::serve(&c);
        let (status, _, body) = support::http::get(&http, "/v1/enforcement/at-risk?days=30", Some(token));
        assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap()), (200, expected.clone()));
        let (status, _, _) = support::http::get(&http, "/v1/enforcement/at-risk?days=-1", Some(token));
        assert_eq!(status, 400);
        serving.stop();
    }
    assert_eq!(notices(&c), ["pool china 2026-11-26 (14 days before)"]);
    // The day before: the last notice.
    c.offset = "2026-11-25T09:00:00Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap() - chrono::Utc::now();
    let (serving, _) = support::http::serve(&c);
    serving.stop();
    assert_eq!(notices(&c), ["pool china 2026-11-26 (14 days before)", "pool china 2026-11-26 (1 day before)"]);
    // Renewed: nothing at risk any more.
    c.ok(&args(
        "license add --account acme --kind bandwidth_pool --region china --quantity 100 --from 2026-11-26 --to 2027-11-25",
    ));
    assert_eq!(check(&c, "30"), serde_json::json!([]));
}
