//! Moving a store. `migrate-store` (R30): an SQLite store holding a generated month, copied into
//! PostgreSQL, answers every account's reports exactly as before; a target that is not empty is
//! refused. `backup` while `serve` runs and `restore` into a new data directory: the same
//! reports and the same CA; a data directory in use and a damaged backup are refused.

mod support;

use support::pg_cluster;
use support::{Collector, args};
use tally_testkit::skip;

/// Two accounts, one managed by a partner, sites in two region groups (one capped), October 2026
/// and half of November in buckets (a different curve per site).
fn generated_month(c: &Collector) {
    c.ok(&args("account add --id partner --name Partner"));
    c.ok(&args("account add --id acme --name Acme --eop-contact-name Ann --eop-contact-email ann@acme.test"));
    c.ok(&args("account add --id beta --name Beta --partner partner"));
    for (account, region, mbps) in [("acme", "group1", 300), ("acme", "china", 20), ("beta", "group1", 1_000)] {
        c.ok(&args(&format!(
            "license add --account {account} --kind bandwidth_pool --region {region} --quantity {mbps} --from \
             2026-01-01 --to 2026-12-31"
        )));
    }
    for (account, site, country) in [("acme", "hq", "US"), ("acme", "ber", "DE"), ("beta", "nyc", "US")] {
        c.ok(&args(&format!(
            "site add --account {account} --id {site} --name {site} --country {country} --type socket"
        )));
    }
    // A stand-alone country's site has a cap (R17): its history moves too.
    c.ok(&args("site add --account acme --id sh --name sh --country CN --type socket --cap-mbps 20"));
    let mut csv = String::from("site,bucket_start,max_bps,samples\n");
    let october = 1_790_812_800; // 2026-10-01T00:00:00Z
    for (n, site) in ["hq", "ber", "sh", "nyc"].into_iter().enumerate() {
        // One bucket an hour: enough for the reports to differ by site and day.
        for slot in (0..46 * 288).step_by(12) {
            let start = chrono::DateTime::from_timestamp(october + slot * 300, 0).unwrap();
            let start = start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let bps = (slot * 7_919 + n as i64 * 104_729) % 250_000_000;
            csv += &format!("{site},{start},{bps},60\n");
        }
    }
    let file = c.file("month.csv", &csv);
    c.ok(&["import-buckets", "--csv", &file]);
}

/// Every account's reports, without the time each was generated.
fn reports(c: &Collector) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    // The partner itself has nothing before its creation in November (R28).
    for (account, month) in
        [("acme", "2026-10"), ("acme", "2026-11"), ("beta", "2026-10"), ("beta", "2026-11"), ("partner", "2026-11")]
    {
        let out = c.ok(&args(&format!("report --account {account} --month {month} --format json")));
        let mut report: serde_json::Value = serde_json::from_str(&out).unwrap();
        report.as_object_mut().unwrap().remove("generated_at");
        all.push(report);
    }
    all
}

#[test]
fn a_store_moved_to_postgres_reports_every_account_as_before() {
    let cluster = match pg_cluster::cluster() {
        Ok(cluster) => cluster,
        Err(why) => return skip!(&why),
    };
    let c = Collector::new().at(support::MID_NOVEMBER_2026);
    assert!(c.database_url.is_none(), "the source is SQLite");
    generated_month(&c);
    // The engine finalizes October (R34): the saved report moves with the store.
    c.ok(&["engine", "--once"]);
    let before = reports(&c);
    assert_eq!(before[0]["status"], "finalized");

    let url = cluster.database();
    let from = format!("sqlite://{}", c.data_file("tally.db").display());
    let out = c.ok(&["migrate-store", "--from", &from, "--to", &url]);
    assert!(out.contains("every table's count matches, buckets SHA-256"), "{out}");
    let buckets = out.lines().find(|l| l.starts_with("buckets ")).unwrap();
    assert_eq!(buckets.split_whitespace().nth(1), Some((4 * 46 * 24).to_string().as_str()), "{out}");

    // The same collector, now on PostgreSQL with the CA it had.
    c.configure(&format!("database_url = {url:?}\nca_dir = {:?}", c.data_file("ca")));
    assert_same(&reports(&c), &before);

    // A second copy into the same database is refused, and changes nothing.
    let refused = c.fails(&["migrate-store", "--from", &from, "--to", &url]);
    assert!(refused.contains("the target store is not empty (3 account(s))"), "{refused}");
    assert_same(&reports(&c), &before);
    let missing = c.fails(&["migrate-store", "--from", "sqlite:///nowhere/tally.db", "--to", &url]);
    assert!(missing.contains("expected sqlite://PATH naming an existing store"), "{missing}");
}

#[test]
fn a_backup_taken_while_serving_restores_every_report_and_the_ca() {
    let c = Collector::on(None, "").at(support::MID_NOVEMBER_2026);
    generated_month(&c);
    let before = reports(&c);
    let fingerprint = |c: &Collector| c.ok(&["ca", "init"]).lines().last().unwrap().to_owned();
    let ca = fingerprint(&c);
    let backup = c.dir.path().join("tally.backup").display().to_string();
    {
        let _serving = c.serve();
        let out = c.ok(&["backup", "--to", &backup]);
        assert!(out.contains("the store and the CA (") && out.contains("ca.key"), "{out}");
    }

    let restored = Collector::on(None, "").at(support::MID_NOVEMBER_2026);
    let out = restored.ok(&["restore", "--from", &backup]);
    assert!(out.starts_with("restored tally.db, ca/"), "{out}");
    assert_same(&reports(&restored), &before);
    assert_eq!(fingerprint(&restored), ca, "the same CA: enrolled agents keep working");

    // A data directory in use is never overwritten; a damaged backup restores nothing.
    let refused = restored.fails(&["restore", "--from", &backup]);
    assert!(refused.contains("tally.db exists: restore into a new data_dir"), "{refused}");
    let damaged = c.file("damaged.backup", "");
    std::fs::write(&damaged, &std::fs::read(&backup).unwrap()[..2_000]).unwrap();
    let empty = Collector::on(None, "").at(support::MID_NOVEMBER_2026);
    let refused = empty.fails(&["restore", "--from", &damaged]);
    assert!(refused.contains("damaged"), "{refused}");
    assert!(!empty.data_file("tally.db").exists() && !empty.data_file("ca").exists(), "nothing restored");
    empty.ok(&["restore", "--from", &backup]);
    assert_same(&reports(&empty), &before);
}

/// The reports are the same; else the first field that differs.
fn assert_same(after: &[serde_json::Value], before: &[serde_json::Value]) {
    for (after, before) in after.iter().zip(before) {
        if after != before {
            let (a, b) = (after.as_object().unwrap(), before.as_object().unwrap());
            let key = b.keys().chain(a.keys()).find(|k| a.get(*k) != b.get(*k)).unwrap();
            panic!(
                "{} {}: {key} was {} and is {}",
                before["account"],
                before["month"],
                b.get(key).unwrap_or(&serde_json::Value::Null),
                a.get(key).unwrap_or(&serde_json::Value::Null)
            );
        }
    }
    assert_eq!(after.len(), before.len());
}
