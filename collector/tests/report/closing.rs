//! When a month closes and who finalizes it (R9, R28, R34, R35): never before the account, a read
//! never writes, grace 0, a failing account holds back nobody.

use super::*;

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
