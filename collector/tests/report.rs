//! The usage report through the store path, with the real binary: the golden month of
//! `common/golden/month.json` goes in with `site add`, `license add` and `import-buckets`, and
//! `report --format json` must give the golden figures under both `month_window` settings (R5–R8).

mod support;

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
fn late_buckets_change_a_provisional_month_through_the_incremental_path() {
    let c = load_golden_month("grace_hours = 744");
    c.ok(&["engine", "--once"]);
    let before = october(&c);
    assert_eq!(before["status"], "provisional", "October has ended, its 31 days of grace have not");
    assert_eq!(group2(&before)["monthly_p95_bps"], 10_000_000);
    late_tokyo_buckets(&c);
    let pool = group2(&october(&c));
    assert_eq!(pool["monthly_p95_bps"], 90_000_000);
    assert_eq!(pool["peak_day"], "2026-10-12");
    assert_eq!(pool["excess_bps"], 85_000_000);
}

#[test]
fn late_buckets_for_a_finalized_month_are_counted_and_change_nothing() {
    let c = load_golden_month("");
    c.ok(&["engine", "--once"]);
    let before = october(&c);
    assert_eq!(before["status"], "finalized");
    assert_eq!(before["late_buckets"], 0);
    assert!(before["finalized_at"].is_string());
    late_tokyo_buckets(&c);
    let after = october(&c);
    assert_eq!(after["late_buckets"], 15, "R9: stored and counted");
    assert_eq!(after["bandwidth_pool"], before["bandwidth_pool"], "R9: a finalized month does not change");
    assert_eq!(after["sites"], before["sites"]);
    assert_eq!(after["finalized_at"], before["finalized_at"]);
}

/// A finalized month is served as saved, the late data beside it (R9): the API's answer equals
/// the report the command computes and carries an ETag that `If-None-Match` turns into a 304
/// without a body; a late bucket changes the tag and the count. A document saved before the
/// overlays were kept apart is served alike.
#[test]
fn a_finalized_month_is_served_as_saved_with_an_etag_until_late_data_arrives() {
    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    let c = load_golden_month(&format!("operator_token = \"{TOKEN}\""));
    c.ok(&["engine", "--once"]);
    let _serving = c.serve();
    let http = c.http_address().to_string();
    let get = |etag: Option<&str>| {
        let headers = format!(
            "Authorization: Bearer {TOKEN}\r\n{}",
            etag.map_or(String::new(), |e| format!("If-None-Match: {e}\r\n"))
        );
        let path = "/v1/accounts/acme/usage?month=2026-10";
        let (status, head, body) = tally_testkit::http::exchange(&http, "GET", path, &headers, "");
        let etag = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("etag: ").map(str::to_owned));
        (status, etag, body)
    };
    let (status, etag, body) = get(None);
    assert_eq!(status, 200, "{body}");
    let etag = etag.expect("a finalized month has an ETag");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), october(&c), "as the command computes it");
    let (status, again, body) = get(Some(&etag));
    assert_eq!((status, again.as_deref(), body.as_str()), (304, Some(etag.as_str()), ""));

    late_tokyo_buckets(&c);
    let (status, later, body) = get(Some(&etag));
    assert_eq!(status, 200, "{body}");
    assert_ne!(later.as_deref(), Some(etag.as_str()), "a late bucket is news");
    let served: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(served["late_buckets"], 15);
    for field in ["\"late_buckets\":", "\"finalized_at\":", "\"overusage\":"] {
        assert_eq!(body.matches(field).count(), 1, "each field once: {body}");
    }
    assert_eq!(served, october(&c));

    // The document as the engine saved it before: the overlays' fields in it, at their first values.
    let mut old = october(&c);
    let fields = old.as_object_mut().unwrap();
    fields.remove("finalized_at");
    fields.insert("late_buckets".into(), 0.into());
    let old = old.to_string();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let update = "UPDATE finalized_months SET report = $1 WHERE account_id = 'acme' AND month = '2026-10'";
        match &c.database_url {
            Some(url) => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                sqlx::query(update).bind(&old).execute(&pool).await.unwrap();
            }
            None => {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", c.data_file("tally.db").display()))
                    .await
                    .unwrap();
                sqlx::query(update).bind(&old).execute(&pool).await.unwrap();
            }
        }
    });
    let (status, _, body) = get(None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), october(&c), "an older document, parsed");
    assert_eq!(body.matches("\"late_buckets\":").count(), 1, "each field once: {body}");
}

/// A report's sites come a page at a time (`sites_limit`, `sites_after`), by site id, and
/// together they are the whole report's; the pools and meters are always the whole account's.
#[test]
fn a_reports_sites_come_in_pages_and_its_totals_whole() {
    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    let c = load_golden_month(&format!("operator_token = \"{TOKEN}\""));
    c.ok(&["engine", "--once"]);
    let _serving = c.serve();
    let http = c.http_address().to_string();
    let whole = october(&c);
    let mut sites = Vec::new();
    let mut after: Option<String> = None;
    let pages = loop {
        let path = match &after {
            None => "/v1/accounts/acme/usage?month=2026-10&sites_limit=1".to_owned(),
            Some(a) => format!("/v1/accounts/acme/usage?month=2026-10&sites_limit=1&sites_after={a}"),
        };
        let (status, _, body) = tally_testkit::http::get(&http, &path, Some(TOKEN));
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((&page["bandwidth_pool"], &page["meters"]), (&whole["bandwidth_pool"], &whole["meters"]));
        assert_eq!(page["sites_page"]["before"], sites.len() as u64);
        sites.extend(page["sites"].as_array().unwrap().iter().cloned());
        match page["sites_page"]["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break page["sites_page"]["total"].as_u64().unwrap(),
        }
    };
    assert_eq!(Value::from(sites), whole["sites"], "the pages together");
    assert!(pages > 1, "{pages} sites");
    let (status, _, body) =
        tally_testkit::http::get(&http, "/v1/accounts/acme/usage?month=2026-10&sites_limit=0", Some(TOKEN));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("sites_limit") && body.contains("from 1 to 1000"), "{body}");
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

/// R28: months are reported, finalized and notified only when they overlap the account's life,
/// which begins with the earliest of its creation, its first license and its first bucket.
#[test]
fn a_month_before_the_account_is_never_reported_nor_finalized() {
    let c = Collector::with_config("log = \"debug\"").at(support::MID_NOVEMBER_2026);
    c.ok(&support::args("account add --id acme --name Acme"));
    c.ok(&support::args("site add --account acme --id hq --name HQ --country US --type socket"));
    for month in ["2026-09", "2026-10"] {
        let refused = c.fails(&["report", "--account", "acme", "--month", month]);
        assert!(refused.contains(&format!("account acme did not exist in {month}")), "{refused}");
    }
    // The engine skips them too: nothing is saved, nothing sent.
    let pass = c.ok(&["engine", "--once"]);
    assert!(pass.contains("0 month(s) finalized"), "{pass}");
    let finalized = |month: &str| {
        let saved = tokio::runtime::Runtime::new().unwrap().block_on(async {
            match &c.database_url {
                Some(url) => PgStore::open(url).await.unwrap().finalized_report("acme", month).await,
                None => {
                    SqliteStore::open(&c.data_file("tally.db")).await.unwrap().finalized_report("acme", month).await
                }
            }
        });
        saved.unwrap().is_some()
    };
    assert!(!finalized("2026-09") && !finalized("2026-10"));
    let sent: Value =
        serde_json::from_str(&c.ok(&support::args("notifications --account acme --format json"))).unwrap();
    assert_eq!(sent, serde_json::json!([]), "nothing notified");

    // A license from October 1st brings October into the account's life; a bucket imported for
    // September 10th brings September.
    c.ok(&support::args(
        "license add --account acme --kind bandwidth_pool --region group1 --quantity 100 --from 2026-10-01 --to 2026-12-31",
    ));
    c.ok(&["engine", "--once"]);
    let october = c.ok(&support::args("report --account acme --month 2026-10 --format json"));
    assert!(october.contains(r#""status": "finalized""#), "{october}");
    let refused = c.fails(&["report", "--account", "acme", "--month", "2026-09"]);
    assert!(refused.contains("account acme did not exist in 2026-09"), "{refused}");
    let csv = c.file("sept.csv", "site,bucket_start,max_bps\nhq,2026-09-10T12:00:00Z,5000000\n");
    c.ok(&["import-buckets", "--csv", &csv]);
    c.ok(&["engine", "--once"]);
    let september = c.ok(&support::args("report --account acme --month 2026-09 --format json"));
    assert!(september.contains(r#""status": "finalized""#), "{september}");
    assert!(finalized("2026-09"));
    let refused = c.fails(&["report", "--account", "acme", "--month", "2026-08"]);
    assert!(refused.contains("its life begins 2026-09-10"), "{refused}");
}

/// R35: a report computes a month from one snapshot of the store, the days not yet summarized
/// in memory, and writes nothing: not the days, not a finalization, even for a month long closed.
/// The store is opened read-only, and every byte of it is the same after the reads.
#[test]
fn a_report_reads_a_closed_month_without_writing_and_only_the_engine_finalizes_it() {
    let c = load_golden_month("month_window = \"calendar\"");
    let before = c.store_bytes();
    let json = c.ok(&["report", "--account", "acme", "--month", "2026-10", "--format", "json"]);
    let table = c.ok(&["report", "--account", "acme", "--month", "2026-10"]);
    assert!(c.store_bytes() == before, "R35: reading the report changed the store");
    let read: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(read["status"], "provisional", "closed, but only the engine finalizes (R34)");
    assert!(table.contains("(provisional)"), "{table}");
    let in_memory = read["days_computed_in_memory"].as_u64().unwrap();
    assert!(table.contains(&format!("{in_memory} site-day(s) computed from their buckets")), "{table}");

    // The engine summarizes exactly the days the report computed in memory, and finalizes
    // October with the same figures.
    let pass = c.ok(&["engine", "--once"]);
    assert!(pass.contains(&format!("{in_memory} site-day(s) recomputed")), "{pass}");
    let finalized = october(&c);
    assert_eq!(finalized["status"], "finalized");
    assert_eq!(finalized["bandwidth_pool"], read["bandwidth_pool"]);
    assert_eq!(finalized["sites"], read["sites"]);
    assert_eq!(finalized["days_computed_in_memory"], 0, "the engine read them summarized");
    let golden = golden();
    let group1 =
        finalized["bandwidth_pool"].as_array().unwrap().iter().find(|p| p["region_group"] == "group1").unwrap();
    let want = golden["expected"]["calendar"]["bandwidth_pool"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["region_group"] == "group1")
        .unwrap()
        .clone();
    assert_eq!((&group1["monthly_p95_bps"], &group1["excess_bps"]), (&want["monthly_p95_bps"], &want["excess_bps"]));
    let again = c.ok(&["engine", "--once"]);
    assert!(again.contains("0 site-day(s) recomputed, 0 month(s) finalized"), "{again}");
}

/// R34: with no grace at all, a month closes when both its window and its calendar month have
/// ended: under the article's window October's window ends on the 31st at 00:00, but its
/// calendar meters run until midnight, so at 09:00 on the 31st it is still open.
#[test]
fn with_no_grace_a_month_closes_when_its_calendar_month_ends_not_its_window() {
    let c = Collector::with_config("grace_hours = 0").at("2026-10-31T09:00:00Z");
    c.ok(&support::args("account add --id acme --name Acme"));
    c.ok(&support::args("site add --account acme --id hq --name HQ --country US --type socket"));
    c.ok(&support::args(
        "license add --account acme --kind bandwidth_pool --region group1 --quantity 100 --from 2026-10-01 --to 2026-12-31",
    ));
    let mut csv = String::from("site,bucket_start,max_bps\n");
    for slot in 0..288 {
        let _ = writeln!(csv, "hq,2026-10-07T{:02}:{:02}:00Z,150000000", slot / 12, slot % 12 * 5);
    }
    c.ok(&["import-buckets", "--csv", &c.file("b.csv", &csv)]);
    let pass = c.ok(&["engine", "--once"]);
    assert!(pass.contains("0 month(s) finalized"), "{pass}");
    let open = october(&c);
    assert_eq!(open["status"], "open", "{open}");
    assert_eq!(group1_of(&open)["excess_bps"], 50_000_000, "the figures so far");

    let midnight: chrono::DateTime<chrono::Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
    // (A minute early: the command's clock runs on while it starts.)
    let just_before = midnight - chrono::TimeDelta::minutes(1);
    assert!(c.ok_at(just_before, &["engine", "--once"]).contains("0 month(s) finalized"));
    let pass = c.ok_at(midnight, &["engine", "--once"]);
    assert!(pass.contains("1 month(s) finalized"), "{pass}");
    let closed: Value = serde_json::from_str(
        &c.ok_at(midnight, &["report", "--account", "acme", "--month", "2026-10", "--format", "json"]),
    )
    .unwrap();
    assert_eq!(closed["status"], "finalized");
    assert!(closed["finalized_at"].as_str().unwrap().starts_with("2026-11-01T00:00:"), "{closed}");
    assert_eq!(group1_of(&closed)["excess_bps"], 50_000_000);
    assert_eq!(closed["overusage"][0]["excess"], 50_000_000);
}

fn group1_of(report: &Value) -> Value {
    report["bandwidth_pool"].as_array().unwrap().iter().find(|p| p["region_group"] == "group1").unwrap().clone()
}

/// R34: each account is finalized on its own: one whose month cannot be computed (its Data Lake
/// hour sums past what the store can hold) is logged, counted and retried, and holds back
/// nobody; the healthy account's month is finalized and notified.
#[test]
fn an_account_whose_month_fails_holds_back_nobody() {
    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    // Mid-October: the events go in while the month is open.
    let c = Collector::with_config(&format!("operator_token = \"{TOKEN}\"")).at("2026-10-15T12:00:00Z");
    for account in ["acme", "zeta"] {
        c.ok(&support::args(&format!("account add --id {account} --name {account}")));
        c.ok(&support::args(&format!(
            "license add --account {account} --kind data_lake --quantity 1 --per-unit 1000 --from 2026-10-01 --to 2026-12-31"
        )));
    }
    // "acme" (first in order) sums past 2^63 - 1 in one hour of October; "zeta" is 500 over.
    let huge = (1u64 << 53) - 1;
    let event = |id: String, account: &str, count: u64| serde_json::json!({"id": id, "type": "data_lake_hour", "account": account, "time": "2026-10-07T10:00:00Z", "count": count});
    let events: Vec<Value> =
        (0..1_025).map(|n| event(format!("a{n}"), "acme", huge)).chain([event("z1".into(), "zeta", 1_500)]).collect();
    let serving = c.serve();
    let http = c.http_address().to_string();
    let body = serde_json::json!({ "events": events }).to_string();
    let (status, _, answer) = tally_testkit::http::request(&http, "POST", "/v1/usage/events", Some(TOKEN), &body);
    assert_eq!(status, 200, "{answer}");
    drop(serving);

    // Mid-November, October is due: the engine's first pass meets acme's month first.
    let c = c.at(support::MID_NOVEMBER_2026);
    let mut serving = c.serve();
    serving.until("finalizing a month failed");
    serving.until("month finalized");
    let log = serving.log_so_far();
    let failed = log.lines().find(|l| l.contains("finalizing a month failed")).unwrap();
    assert!(failed.contains("ERROR") && failed.contains("acme") && failed.contains("2026-10"), "{failed}");
    assert!(failed.contains("does not fit the store") || failed.contains("out of range"), "the reason: {failed}");
    assert!(log.lines().any(|l| l.contains("month finalized") && l.contains("zeta") && l.contains("2026-10")), "{log}");
    let (_, _, metrics) = tally_testkit::http::get(&http, "/metrics", Some(TOKEN));
    assert!(metrics.contains("tally_finalization_failures_total 1"), "{metrics}");
    assert!(metrics.contains("tally_months_finalized_total 1"), "{metrics}");
    drop(serving);
    let zeta: Value =
        serde_json::from_str(&c.ok(&support::args("report --account zeta --month 2026-10 --format json"))).unwrap();
    assert_eq!(zeta["status"], "finalized");
    assert_eq!(zeta["overusage"][0]["excess"], 500);
    let failed = c.fails(&support::args("engine --once"));
    assert!(failed.contains("1 account(s) could not be finalized"), "{failed}");
    assert!(failed.contains("acme") && failed.contains("2026-10"), "the log says which: {failed}");
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
