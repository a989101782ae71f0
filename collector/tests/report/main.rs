//! The usage report through the store path, with the real binary: the golden month of
//! `common/golden/month.json` goes in with `site add`, `license add` and `import-buckets`, and
//! `report --format json` must give the golden figures under both `month_window` settings (R5–R8).

#[path = "../support/mod.rs"]
mod support;

mod closing;
mod history;
mod late;

use std::fmt::Write as _;

use chrono::NaiveDate;
use serde_json::Value;
use support::Collector;
use tally_collector::store::UsageStore;
use tally_collector::store::postgres::PgStore;
use tally_collector::store::sqlite::SqliteStore;

fn golden() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../common/golden/month.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The golden sites' buckets as an `import-buckets` CSV: runs merged with max (R10), as the
/// golden file says.
fn buckets_csv(golden: &Value) -> String {
    let mut slots: std::collections::BTreeMap<(String, NaiveDate, i64), u64> = Default::default();
    for site in golden["sites"].as_array().unwrap() {
        let id = site["site"].as_str().unwrap();
        for span in site["buckets"].as_array().unwrap() {
            let from: NaiveDate = span["from"].as_str().unwrap().parse().unwrap();
            let to: NaiveDate = span["to"].as_str().unwrap().parse().unwrap();
            for day in from.iter_days().take_while(|d| *d <= to) {
                for run in span["runs"].as_array().unwrap() {
                    let (first, count, bps) =
                        (run[0].as_i64().unwrap(), run[1].as_i64().unwrap(), run[2].as_u64().unwrap());
                    for slot in first..first + count {
                        let value = slots.entry((id.to_owned(), day, slot)).or_default();
                        *value = (*value).max(bps);
                    }
                }
            }
        }
    }
    let mut csv = String::from("site,bucket_start,max_bps\n");
    for ((site, day, slot), bps) in slots {
        let start = day.and_hms_opt(0, 0, 0).unwrap().and_utc() + chrono::TimeDelta::seconds(300 * slot);
        let _ = writeln!(csv, "{site},{},{bps}", start.format("%Y-%m-%dT%H:%M:%SZ"));
    }
    csv
}

/// Every site of these tests has a cap (R17 requires one in the stand-alone groups), and the caps
/// of a stand-alone group must fit the pool in force on the day they are set: a pool from
/// November 2026 on makes room for them without changing any October figure.
fn room_for_caps(c: &Collector, groups: &[&str]) {
    for group in groups {
        c.ok(&support::args(&format!(
            "license add --account acme --kind bandwidth_pool --region {group} --quantity 10000 --from 2026-11-01 --to 2099-12-31"
        )));
    }
}

/// A collector with `config` holding the golden month.
fn load_golden_month(config: &str) -> Collector {
    let golden = golden();
    let c = Collector::with_config(config).at(support::MID_NOVEMBER_2026);
    c.ok(&["account", "add", "--id", "acme", "--name", "Acme"]);
    room_for_caps(&c, &["china"]);
    for site in golden["sites"].as_array().unwrap() {
        let (id, country) = (site["site"].as_str().unwrap(), site["country"].as_str().unwrap());
        let site_add = ["site", "add", "--account", "acme", "--id", id, "--name", id, "--country", country];
        c.ok(&[&site_add[..], &["--type", "socket", "--cap-mbps", "1000"]].concat());
    }
    for l in golden["licenses"].as_array().unwrap() {
        let mbps = (l["quantity"].as_u64().unwrap() / 1_000_000).to_string();
        c.ok(&[
            "license",
            "add",
            "--account",
            "acme",
            "--kind",
            "bandwidth_pool",
            "--region",
            l["region_group"].as_str().unwrap(),
            "--quantity",
            &mbps,
            "--from",
            l["effective_from"].as_str().unwrap(),
            "--to",
            l["effective_to"].as_str().unwrap(),
        ]);
    }
    let csv = c.file("buckets.csv", &buckets_csv(&golden));
    c.ok(&["import-buckets", "--csv", &csv]);
    c
}

#[test]
fn the_golden_month_comes_out_of_the_store_under_both_windows() {
    let golden = golden();
    for setting in ["article", "calendar"] {
        let c = load_golden_month(&format!("month_window = {setting:?}"));
        c.ok(&["engine", "--once"]);
        let json = c.ok(&["report", "--account", "acme", "--month", "2026-10", "--format", "json"]);
        let report: Value = serde_json::from_str(&json).unwrap();
        let expected = &golden["expected"][setting];
        assert_eq!(report["status"], "finalized", "October 2026 ended more than 72 h ago, and the engine ran");
        assert_eq!(report["window"]["start"], expected["window"]["start"], "{setting}");
        assert_eq!(report["window"]["end"], expected["window"]["end"], "{setting}");
        let pools = report["bandwidth_pool"].as_array().unwrap();
        for want in expected["bandwidth_pool"].as_array().unwrap() {
            let got = pools.iter().find(|p| p["region_group"] == want["region_group"]).unwrap_or_else(|| {
                panic!("{setting}: no pool for {}", want["region_group"]);
            });
            for key in ["monthly_p95_bps", "peak_day", "licensed_bps", "excess_bps"] {
                assert_eq!(got[key], want[key], "{setting} {} {key}", want["region_group"]);
            }
            assert!(got.get("forecast").is_none(), "no forecast for a finalized month");
        }
        assert_eq!(pools.len(), expected["bandwidth_pool"].as_array().unwrap().len(), "{setting}");
        let group1 = pools.iter().find(|p| p["region_group"] == "group1").unwrap();
        for (date, aggregate) in expected["group1_days"].as_object().unwrap() {
            let day = group1["days"].as_array().unwrap().iter().find(|d| d["date"] == *date);
            assert_eq!(day.map(|d| &d["aggregate_bps"]), Some(aggregate), "{setting} group1 {date}");
        }

        // Per site: every day of the calendar month, with buckets present of 288; under the
        // article's window Oct 31 is listed but outside it (R7), and the report says so.
        let window_days = if setting == "article" { 30 } else { 31 };
        let sites = report["sites"].as_array().unwrap();
        assert_eq!(sites.len(), 4);
        for site in sites {
            let days = site["days"].as_array().unwrap();
            assert_eq!(days.len(), 31, "{}", site["site"]);
            assert_eq!(days.iter().filter(|d| d["in_window"] == true).count(), window_days, "{}", site["site"]);
            assert_eq!(days[30]["in_window"], setting == "calendar", "{}", site["site"]);
        }
        let group1_days = group1["days"].as_array().unwrap();
        assert_eq!(group1_days.len(), 31);
        assert_eq!(group1_days[30]["in_window"], setting == "calendar");
        let said = report["window"]["description"].as_str().unwrap();
        assert!(said.contains("month_window = \"calendar\""), "{said}");
        let shanghai = sites.iter().find(|s| s["site"] == "shanghai").unwrap();
        let oct10 = shanghai["days"].as_array().unwrap().iter().find(|d| d["date"] == "2026-10-10").unwrap();
        assert_eq!(oct10["p95_bps"], 8_000_000);
        assert_eq!(oct10["buckets_present"], 200);
        assert_eq!(oct10["buckets_expected"], 288);

        let table = c.ok(&["report", "--account", "acme", "--month", "2026-10"]);
        let excess = if setting == "article" { "20.0 Mbps" } else { "150.0 Mbps" };
        let line = table.lines().find(|l| l.starts_with("group1")).unwrap_or_else(|| panic!("{table}"));
        assert!(line.contains(excess), "{table}");
        assert!(table.contains("(finalized)"), "{table}");
        let outside = table.contains("outside the window (listed, not billed): 2026-10-31");
        assert_eq!(outside, setting == "article", "{table}");
    }
}

/// 15 buckets of 90 Mbps on Oct 12 for tokyo (group2): its P95 that day becomes 90 Mbps (R5).
fn late_tokyo_buckets(c: &Collector) {
    let mut csv = String::from("site,bucket_start,max_bps\n");
    for slot in 0..15 {
        let _ = writeln!(csv, "tokyo,2026-10-12T{:02}:{:02}:00Z,90000000", slot * 5 / 60, slot * 5 % 60);
    }
    let file = c.file("late.csv", &csv);
    c.ok(&["import-buckets", "--csv", &file]);
}

fn october(c: &Collector) -> Value {
    serde_json::from_str(&c.ok(&["report", "--account", "acme", "--month", "2026-10", "--format", "json"])).unwrap()
}

fn group2(report: &Value) -> Value {
    report["bandwidth_pool"].as_array().unwrap().iter().find(|p| p["region_group"] == "group2").unwrap().clone()
}

#[test]
fn an_unknown_account_or_a_bad_month_is_a_clear_error() {
    let c = Collector::new();
    c.ok(&support::args("account add --id acme --name Acme"));
    let err = c.fails(&["report", "--account", "nobody", "--month", "2026-10"]);
    assert!(err.contains("account \"nobody\" does not exist"), "{err}");
    let err = c.fails(&["report", "--account", "nobody", "--month", "2026-13"]);
    assert!(err.contains("--month"), "{err}");
}

#[test]
fn a_month_with_every_region_group_and_every_license_kind() {
    let c = Collector::new().at(support::MID_NOVEMBER_2026);
    c.ok(&support::args("account add --id acme --name Acme"));
    // One site per region group; each runs flat all of Oct 7 at its own rate (Mbps).
    let sites = [
        ("us", "US", "group1", 120),
        ("jp", "JP", "group2", 30),
        ("cn", "CN", "china", 8),
        ("vn", "VN", "vietnam", 6),
        ("ma", "MA", "morocco", 4),
    ];
    room_for_caps(&c, &["china", "vietnam", "morocco"]);
    let mut csv = String::from("site,bucket_start,max_bps\n");
    for (site, country, group, mbps) in sites {
        c.ok(&support::args(&format!(
            "site add --account acme --id {site} --name {site} --country {country} --type socket --cap-mbps 200"
        )));
        c.ok(&support::args(&format!(
            "license add --account acme --kind bandwidth_pool --region {group} --quantity 100 --from 2026-01-01 --to 2026-12-31"
        )));
        for slot in 0..288 {
            let _ = writeln!(csv, "{site},2026-10-07T{:02}:{:02}:00Z,{}", slot / 12, slot % 12 * 5, mbps * 1_000_000);
        }
    }
    for license in [
        "--kind ztna_users --region general --quantity 80",
        "--kind ztna_users --region china --quantity 20",
        "--kind ai_security_users --quantity 10",
        "--kind devices --quantity 100 --block-size 50",
        "--kind dem_users --quantity 5",
        "--kind data_lake --quantity 2 --per-unit 1000",
        "--kind premium_security --quantity 1",
        "--kind insights --quantity 1",
    ] {
        c.ok(&support::args(&format!("license add --account acme {license} --from 2026-01-01 --to 2026-12-31")));
    }
    let file = c.file("b.csv", &csv);
    c.ok(&["import-buckets", "--csv", &file]);
    c.ok(&support::args("account notify --account acme --email ops@acme.example"));
    c.ok(&["engine", "--once"]);
    let report: Value =
        serde_json::from_str(&c.ok(&["report", "--account", "acme", "--month", "2026-10", "--format", "json"]))
            .unwrap();
    // The account came to Tally in November: October is imported history, finalized with its
    // over-usage but notified to nobody (R34).
    assert_eq!(report["status"], "finalized");
    let sent: Value =
        serde_json::from_str(&c.ok(&support::args("notifications --account acme --format json"))).unwrap();
    assert_eq!(sent, serde_json::json!([]), "imported history is not notified");

    let pools = report["bandwidth_pool"].as_array().unwrap();
    let groups: Vec<&str> = pools.iter().map(|p| p["region_group"].as_str().unwrap()).collect();
    assert_eq!(groups, ["group1", "group2", "china", "vietnam", "morocco"]);
    for (_, _, group, mbps) in sites {
        let pool = pools.iter().find(|p| p["region_group"] == group).unwrap();
        assert_eq!(pool["monthly_p95_bps"], mbps * 1_000_000, "{group}");
        assert_eq!(pool["peak_day"], "2026-10-07");
        assert_eq!(pool["licensed_bps"], 100_000_000);
        assert_eq!(pool["excess_bps"], (mbps.max(100) - 100) * 1_000_000, "{group}");
    }
    let meters: Vec<&str> =
        report["meters"].as_array().unwrap().iter().map(|m| m["license"].as_str().unwrap()).collect();
    assert_eq!(meters, ["ztna_users", "ai_security_users", "dem_users", "devices", "data_lake"]);
    assert!(report["meters"].as_array().unwrap().iter().all(|m| m["excess"] == 0 && m["measured"] == 0));
    // Only group1 is over: a base product, so Premium Security and Insights are flagged (R14).
    let overusage = report["overusage"].as_array().unwrap();
    assert_eq!(overusage.len(), 1, "{overusage:?}");
    assert_eq!(overusage[0]["region_group"], "group1");
    assert_eq!(overusage[0]["excess"], 20_000_000);
    assert_eq!(overusage[0]["requires_same_increase"], serde_json::json!(["premium_security", "insights"]));
}

/// A new user's first buckets on the last day of a month: the article's window leaves the day
/// out (R7), yet the report lists it, marked outside the window and provisional, and says which
/// days are still open.
#[test]
fn todays_buckets_show_in_the_report_even_outside_the_window() {
    let c = Collector::new().at("2026-11-30T12:00:00Z");
    c.ok(&support::args("account add --id acme --name Acme"));
    c.ok(&support::args("site add --account acme --id hq --name HQ --country US --type socket"));
    let file =
        c.file("b.csv", "site,bucket_start,max_bps\nhq,2026-11-30T10:00:00Z,5000000\nhq,2026-11-29T10:00:00Z,7\n");
    c.ok(&["import-buckets", "--csv", &file]);
    let report: Value =
        serde_json::from_str(&c.ok(&["report", "--account", "acme", "--month", "2026-11", "--format", "json"]))
            .unwrap();
    assert_eq!(
        report["status"], "open",
        "the article's window closed at 00:00 today, the calendar month has not (R34)"
    );
    assert_eq!(report["open_from"], "2026-11-30", "{report}");
    let days = report["sites"][0]["days"].as_array().unwrap();
    assert_eq!(days.len(), 30, "every day of November up to today");
    let today = &days[29];
    assert_eq!(today["date"], "2026-11-30");
    assert_eq!((today["in_window"].as_bool(), today["provisional"].as_bool()), (Some(false), Some(true)));
    assert_eq!(today["buckets_present"], 1);
    assert_eq!((days[28]["in_window"].as_bool(), days[28]["buckets_present"].as_u64()), (Some(true), Some(1)));
    let table = c.ok(&["report", "--account", "acme", "--month", "2026-11"]);
    assert!(table.contains("still open: 2026-11-30 (today, provisional) to 2026-11-30"), "{table}");
    assert!(table.contains("the article's window excludes the last day of the month"), "{table}");
    assert!(table.contains("outside the window (listed, not billed): 2026-11-30"), "{table}");
    assert!(
        table.contains("2 of 576 since 2026-11-29"),
        "both days' buckets are present, the days before the first are not missing: {table}"
    );
}

fn group1_of(report: &Value) -> Value {
    report["bandwidth_pool"].as_array().unwrap().iter().find(|p| p["region_group"] == "group1").unwrap().clone()
}

/// Each day's P95 at `mbps` for `site` on November `days`, as an import CSV.
fn november_days(site: &str, days: std::ops::RangeInclusive<u32>, mbps: u64) -> String {
    let mut csv = String::from("site,bucket_start,max_bps\n");
    for day in days {
        for slot in 0..288 {
            let _ =
                writeln!(csv, "{site},2026-11-{day:02}T{:02}:{:02}:00Z,{}", slot / 12, slot % 12 * 5, mbps * 1_000_000);
        }
    }
    csv
}

/// R35: the store a reading command opens cannot write: SQLite opened read-only, PostgreSQL with
/// every transaction read-only. A write through it fails and leaves nothing.
#[test]
fn the_store_a_reader_opens_refuses_every_write() {
    use tally_collector::store::{Account, AccountStore, ContractTerm};
    let c = Collector::new();
    c.ok(&support::args("account add --id acme --name Acme"));
    let account = Account {
        id: "intruder".into(),
        name: "Intruder".into(),
        partner: None,
        eop_contact_name: None,
        eop_contact_email: None,
    };
    let term = ContractTerm::months_from(chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), 12);
    let written = tokio::runtime::Runtime::new().unwrap().block_on(async {
        match &c.database_url {
            Some(url) => PgStore::open_read_only(url).await.unwrap().add_account(&account, term).await,
            None => {
                SqliteStore::open_read_only(&c.data_file("tally.db")).await.unwrap().add_account(&account, term).await
            }
        }
    });
    assert!(written.is_err(), "a write through a reader's store succeeded");
    let listed = c.ok(&support::args("account list --format json"));
    assert!(listed.contains("acme") && !listed.contains("intruder"), "{listed}");
}
