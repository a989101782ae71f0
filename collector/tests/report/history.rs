//! Region and license history (R31): a site moved mid-month, a license changed from a day.

use super::*;

/// R31: a site moved from Germany to China from November 11th bills its first ten days in Group
/// 1's pool and the rest in China's; the report lists it under both groups with its days there.
/// A move back-dated into a finalized month is refused by name, and one into the future too.
#[test]
fn a_site_moved_on_the_11th_bills_each_group_its_own_days() {
    let c = Collector::new().at("2026-11-20T12:00:00Z");
    c.ok(&support::args("account add --id acme --name Acme"));
    c.ok(&support::args("site add --account acme --id hq --name HQ --country DE --type socket"));
    for group in ["group1", "china"] {
        c.ok(&support::args(&format!(
            "license add --account acme --kind bandwidth_pool --region {group} --quantity 100 --from 2026-10-01 --to 2026-12-31"
        )));
    }
    // Nov 1-10 at 80 Mbps, Nov 11-19 at 30 Mbps.
    let csv = november_days("hq", 1..=10, 80) + november_days("hq", 11..=19, 30).split_once('\n').unwrap().1;
    c.ok(&["import-buckets", "--csv", &c.file("nov.csv", &csv)]);
    // R17 from today: in China the site needs a cap, and the caps fit China's pool.
    let refused = c.fails(&support::args("site set --site hq --country CN --from 2026-11-11"));
    assert!(refused.contains("must have a cap"), "{refused}");
    c.ok(&support::args("site set --site hq --country CN --from 2026-11-11 --cap-mbps 60"));

    let report: Value =
        serde_json::from_str(&c.ok(&support::args("report --account acme --month 2026-11 --format json"))).unwrap();
    let pool = |group: &str| {
        report["bandwidth_pool"].as_array().unwrap().iter().find(|p| p["region_group"] == group).unwrap().clone()
    };
    let (group1, china) = (pool("group1"), pool("china"));
    assert_eq!(
        (group1["monthly_p95_bps"].as_u64(), china["monthly_p95_bps"].as_u64()),
        (Some(80_000_000), Some(30_000_000))
    );
    let aggregate = |pool: &Value, day: &str| {
        pool["days"].as_array().unwrap().iter().find(|d| d["date"] == day).unwrap()["aggregate_bps"].as_u64().unwrap()
    };
    assert_eq!((aggregate(&group1, "2026-11-10"), aggregate(&china, "2026-11-10")), (80_000_000, 0));
    assert_eq!(
        (aggregate(&group1, "2026-11-11"), aggregate(&china, "2026-11-11")),
        (0, 30_000_000),
        "from its 00:00 UTC"
    );
    let under: Vec<(String, usize, String)> = report["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let days = s["days"].as_array().unwrap();
            (s["region_group"].as_str().unwrap().to_owned(), days.len(), days[0]["date"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(under, [("group1".into(), 10, "2026-11-01".into()), ("china".into(), 10, "2026-11-11".into())]);
    // The cap of 60 Mbps is from today: the 80 Mbps days before it are no violation (R26).
    assert!(report["sites"].as_array().unwrap().iter().all(|s| s["violations"] == serde_json::json!([])), "{report}");

    // October, finalized, cannot be corrected; nor can a move be dated in the future.
    c.ok(&["engine", "--once"]);
    let refused = c.fails(&support::args("site set --site hq --country DE --from 2026-10-20"));
    assert!(refused.contains("2026-10-20 falls in 2026-10, which is finalized"), "{refused}");
    let refused = c.fails(&support::args("site set --site hq --country DE --from 2026-11-21"));
    assert!(refused.contains("from today (2026-11-20) or an earlier day"), "{refused}");
    // A correction within November: the move was on the 5th.
    c.ok(&support::args("site set --site hq --country CN --from 2026-11-05"));
    let report: Value =
        serde_json::from_str(&c.ok(&support::args("report --account acme --month 2026-11 --format json"))).unwrap();
    let china = report["bandwidth_pool"].as_array().unwrap().iter().find(|p| p["region_group"] == "china").unwrap();
    assert_eq!(china["peak_day"].as_str().map(|d| ("2026-11-05"..="2026-11-10").contains(&d)), Some(true), "{china}");
    assert_eq!(china["monthly_p95_bps"], 80_000_000);
}

/// R31: a license's quantity changes from a day. A Group 1 pool of 100 Mbps cut to 50 from
/// November 11th: November is licensed 100 Mbps (R8: the largest total on any day), December 50;
/// October, finalized, keeps its 100 and cannot be changed.
#[test]
fn a_license_changed_mid_month_changes_from_that_day_never_in_a_finalized_month() {
    let c = Collector::new().at("2026-11-20T12:00:00Z");
    c.ok(&support::args("account add --id acme --name Acme"));
    c.ok(&support::args("site add --account acme --id hq --name HQ --country DE --type socket"));
    let id = c.ok(&support::args(
        "license add --account acme --kind bandwidth_pool --region group1 --quantity 100 --from 2026-10-01 --to 2026-12-31",
    ));
    let id = id.split_whitespace().find_map(|w| w.parse::<i64>().ok()).unwrap_or(1).to_string();
    c.ok(&[
        "import-buckets",
        "--csv",
        &c.file("oct.csv", "site,bucket_start,max_bps\nhq,2026-10-07T10:00:00Z,5000000\n"),
    ]);
    c.ok(&["engine", "--once"]);
    let refused =
        c.fails(&["license", "change", "--account", "acme", "--id", &id, "--quantity", "50", "--from", "2026-10-20"]);
    assert!(refused.contains("falls in 2026-10, which is finalized"), "{refused}");
    c.ok(&["license", "change", "--account", "acme", "--id", &id, "--quantity", "50", "--from", "2026-11-11"]);
    let licensed = |month: &str| -> u64 {
        let report: Value =
            serde_json::from_str(&c.ok(&["report", "--account", "acme", "--month", month, "--format", "json"]))
                .unwrap();
        let group1 =
            report["bandwidth_pool"].as_array().unwrap().iter().find(|p| p["region_group"] == "group1").unwrap();
        group1["licensed_bps"].as_u64().unwrap()
    };
    assert_eq!([licensed("2026-10"), licensed("2026-11"), licensed("2026-12")], [100_000_000, 100_000_000, 50_000_000]);
}
