//! Sites over HTTP: changes checked against R17, silent sites, a country from a day on.

use super::*;

#[test]
fn site_changes_keep_r17_over_http_and_each_site_shows_its_enforcement() {
    let c = Collector::with_config(&format!("operator_token = \"{TOKEN}\""))
        // Before the buckets below: R26 judges a bucket against the cap in force when it was measured.
        .at("2026-10-07T09:00:00Z");
    c.ok(&["account", "add", "--id", "acme", "--name", "Acme"]);
    c.ok(&["account", "add", "--id", "other", "--name", "Other"]);
    c.ok(&support::args(
        "license add --account acme --kind bandwidth_pool --region china --quantity 100 --from 2020-01-01 --to 2099-12-31",
    ));
    c.ok(&support::args("site add --account acme --id sh --name SH --country CN --type socket --cap-mbps 60"));
    c.ok(&support::args("site add --account acme --id hq --name HQ --country US --type socket"));
    c.ok(&support::args("site add --account other --id elsewhere --name E --country US --type socket"));
    let (_serving, http) = serve(&c);
    let http = http.as_str();
    let patch = |site: &str, body: &str| {
        let (status, content_type, body) =
            request(http, "PATCH", &format!("/v1/accounts/acme/sites/{site}"), Some(TOKEN), body);
        (status, content_type, serde_json::from_str::<Value>(&body).unwrap())
    };

    // Refused by R17 (409), naming sites, caps, sum and pool; nothing changes.
    for (site, body, words) in [
        ("sh", r#"{"cap_bps": 120000000}"#, &["sh 120.0 Mbps", "sum to 120.0 Mbps", "china pool of 100.0 Mbps"][..]),
        ("sh", r#"{"cap_bps": null}"#, &["site sh (socket in china) must have a cap (R17)"]),
        ("hq", r#"{"country": "CN"}"#, &["site hq (socket in china) must have a cap (R17)"]),
    ] {
        let (status, content_type, problem) = patch(site, body);
        assert_eq!((status, content_type.as_str()), (409, "application/problem+json"), "{body}: {problem}");
        for w in words {
            assert!(problem["detail"].as_str().unwrap().contains(w), "{body}: {problem} should say {w:?}");
        }
        assert!(!problem["violations"].as_array().unwrap().is_empty(), "{problem}");
    }
    // Bad input (400, naming the field) and other accounts' sites (404).
    for (site, body, status, field) in [
        ("hq", r#"{"cap_bps": 0}"#, 400, "cap_bps"),
        ("hq", r#"{"country": "XX"}"#, 400, "country"),
        ("hq", r#"{"type": "satellite"}"#, 400, "type"),
        ("hq", r#"{"colour": "red"}"#, 400, "body"),
        ("elsewhere", r#"{"cap_bps": 1000000}"#, 404, ""),
        ("nowhere", r#"{"cap_bps": 1000000}"#, 404, ""),
    ] {
        let (got, _, problem) = patch(site, body);
        assert_eq!(got, status, "{site} {body}: {problem}");
        if !field.is_empty() {
            assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        }
    }
    let (status, _, site) = patch("sh", r#"{"cap_bps": 80000000}"#);
    assert_eq!(status, 200, "{site}");
    assert_eq!((site["cap_bps"].as_u64(), site["region_group"].as_str()), (Some(80_000_000), Some("china")));

    // At the cap × 1.05 is tolerated; one bit/s more is a violation (R17).
    let csv = c.file(
        "over.csv",
        "site,bucket_start,max_bps\nsh,2026-10-07T10:00:00Z,84000000\nsh,2026-10-07T10:05:00Z,84000001\n",
    );
    // An hour ahead of the collector's clock, deliberately.
    c.ok(&["import-buckets", "--csv", &csv, "--allow-future"]);
    let (status, _, body) = get(http, "/v1/accounts/acme/sites/sh/enforcement?month=2026-10", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let shown: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown["cap_bps"], 80_000_000);
    assert_eq!(shown["cap_required"], true);
    assert_eq!(shown["agent_report"], Value::Null, "no agent has reported");
    assert_eq!(
        shown["violations"],
        json!([{"bucket_start": "2026-10-07T10:05:00Z", "max_bps": 84_000_001u64, "cap_bps": 80_000_000u64}])
    );
    let (_, _, body) = get(http, "/v1/accounts/acme/usage?month=2026-10", Some(TOKEN));
    let report: Value = serde_json::from_str(&body).unwrap();
    let sh = report["sites"].as_array().unwrap().iter().find(|s| s["site"] == "sh").unwrap();
    assert_eq!(sh["violations"], shown["violations"], "the usage report lists them too");
    // Beside them, the caps of the month, each with the time it took effect (R26).
    let caps: Vec<Option<u64>> =
        shown["cap_history"].as_array().unwrap().iter().map(|c| c["cap_bps"].as_u64()).collect();
    assert_eq!(caps, [Some(60_000_000), Some(80_000_000)], "{shown}");
    assert_eq!(sh["cap_history"], shown["cap_history"]);
    let (status, _, _) = get(http, "/v1/accounts/other/sites/sh/enforcement", Some(TOKEN));
    assert_eq!(status, 404);
    let table = c.ok(&support::args("site enforcement --site sh --month 2026-10"));
    assert!(table.contains("violations in 2026-10: 1") && table.contains("84.0 Mbps above cap 80.0 Mbps"), "{table}");
}

/// Silent sites (a missing bucket counts as 0, R5): those without a bucket for the asked time,
/// never-reporting ones included once they were added that long ago (a site added a minute ago is
/// not silent yet), with their last bucket and their agent's last connection, the same through
/// `site list --silent`, `GET /v1/sites` (operator) and the account's route.
#[test]
fn silent_sites_are_listed_with_their_last_bucket_and_connection() {
    let c = Collector::with_config(&format!("operator_token = \"{TOKEN}\""));
    c.ok_at(c.now() - chrono::TimeDelta::hours(6), &["account", "add", "--id", "acme", "--name", "Acme"]);
    for (site, added_hours_ago) in [("branch", 0), ("fresh", 0), ("hq", 0), ("idle", 5)] {
        let line = format!("site add --account acme --id {site} --name {site} --country US --type socket");
        c.ok_at(c.now() - chrono::TimeDelta::hours(added_hours_ago), &support::args(&line));
    }
    let slot = |ago_minutes: i64| {
        let t = c.now().timestamp() - ago_minutes * 60;
        chrono::DateTime::from_timestamp(t - t.rem_euclid(300), 0).unwrap()
    };
    let (hq_last, branch_last) = (slot(180), slot(30));
    let csv = c.file(
        "b.csv",
        &format!(
            "site,bucket_start,max_bps\nhq,{},1\nhq,{},1\nbranch,{},1\n",
            tally_common::time::rfc3339(slot(600)),
            tally_common::time::rfc3339(hq_last),
            tally_common::time::rfc3339(branch_last)
        ),
    );
    c.ok(&["import-buckets", "--csv", &csv]);
    let token: tally_common::token::EnrollToken =
        c.ok(&["site", "enroll-token", "--site", "hq"]).trim().parse().unwrap();
    let customer = c.ok(&["token", "create", "--role", "customer", "--account", "acme"]).trim().to_owned();

    // hq's agent connects, then the collector stops: the connection time is written on the way.
    let mut serving = c.serve();
    let quic: std::net::SocketAddr = c.quic;
    let ca = std::fs::read_to_string(c.ca_file("ca.pem")).unwrap();
    let ca = pem::parse(ca).unwrap().into_contents();
    let connected_at = c.now();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let identity = match support::quic::enroll(quic, &ca, &token.secret).await {
            (Some(tally_common::wire::CollectorMessage::Enrolled(e)), key) => (e.cert_der, key),
            (other, _) => panic!("{other:?}"),
        };
        let (_conn, mut tx, mut rx) = support::quic::connect(quic, &ca, Some(&identity)).await.unwrap();
        support::quic::send(&mut tx, &support::quic::hello()).await;
        let welcome = support::quic::receive(&mut rx, &mut Vec::new()).await;
        assert!(matches!(welcome, Some(tally_common::wire::CollectorMessage::WelcomeV2(_))), "{welcome:?}");
        serving.drain_log();
        serving.stop();
    });

    let listed: Value = serde_json::from_str(&c.ok(&["site", "list", "--silent", "2h", "--format", "json"])).unwrap();
    let sites: Vec<&str> = listed.as_array().unwrap().iter().map(|s| s["site"].as_str().unwrap()).collect();
    assert_eq!(sites, ["hq", "idle"], "branch sent a bucket 30 minutes ago; fresh was added just now");
    assert_eq!(listed[0]["last_bucket"], tally_common::time::rfc3339(hq_last));
    let last_connected: chrono::DateTime<chrono::Utc> = listed[0]["last_connected"].as_str().unwrap().parse().unwrap();
    assert!((last_connected - connected_at).num_seconds().abs() < 60, "{listed}");
    assert_eq!((&listed[1]["last_bucket"], &listed[1]["last_connected"]), (&Value::Null, &Value::Null));
    let all: Value = serde_json::from_str(&c.ok(&["site", "list", "--silent", "4h", "--format", "json"])).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1, "only idle has nothing within 4 h: {all}");
    assert!(c.fails(&["site", "list", "--silent", "2 hours"]).contains("not a duration"));

    let (_serving, http) = serve(&c);
    let (status, _, body) = get(&http, "/v1/sites?silent=2h", Some(TOKEN));
    assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap()), (200, listed.clone()));
    let (status, _, body) = get(&http, "/v1/accounts/acme/sites?silent=2h", Some(&customer));
    assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap()), (200, listed));
    let (status, _, body) = get(&http, "/v1/sites?silent=2h", Some(&customer));
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = get(&http, "/v1/sites?silent=soon", Some(TOKEN));
    assert!(status == 400 && body.contains("silent"), "{status} {body}");
    let (status, _, body) = get(&http, "/v1/accounts/acme/sites", Some(TOKEN));
    assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap().as_array().unwrap().len()), (200, 4));
}

/// R31 over HTTP: `country_from` dates a site's new country; without a country it is refused by
/// field, and in a finalized month with a 409 naming the month.
#[test]
fn a_sites_country_changes_from_a_day_over_http() {
    let c = Collector::with_config(&format!("operator_token = \"{TOKEN}\"")).at(support::MID_NOVEMBER_2026);
    c.ok(&support::args("account add --id acme --name Acme"));
    support::licensed_100_mbps_running_at(&c, "acme", "hq", 50_000_000);
    c.ok(&support::args(
        "license add --account acme --kind bandwidth_pool --region china --quantity 100 --from 2026-10-01 --to 2026-12-31",
    ));
    c.ok(&["engine", "--once"]);
    let (_serving, http) = serve(&c);
    let patch = |body: Value| {
        let (status, _, body) = request(&http, "PATCH", "/v1/accounts/acme/sites/hq", Some(TOKEN), &body.to_string());
        (status, serde_json::from_str::<Value>(&body).unwrap())
    };
    let (status, problem) = patch(json!({"country_from": "2026-11-01"}));
    assert_eq!((status, problem["errors"][0]["field"].clone()), (422, json!("country_from")), "{problem}");
    let (status, problem) = patch(json!({"country": "CN", "country_from": "2026-10-20", "cap_bps": 50_000_000}));
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("2026-10, which is finalized"), "{problem}");
    let (status, site) = patch(json!({"country": "CN", "country_from": "2026-11-02", "cap_bps": 50_000_000}));
    assert_eq!((status, site["region_group"].clone()), (200, json!("china")), "{site}");
    let (_, _, body) = get(&http, "/v1/accounts/acme/usage?month=2026-11", Some(TOKEN));
    let report: Value = serde_json::from_str(&body).unwrap();
    let groups: Vec<(&str, usize)> = report["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["region_group"].as_str().unwrap(), s["days"].as_array().unwrap().len()))
        .collect();
    assert_eq!(groups, [("group1", 1), ("china", 15)], "Nov 1 in Group 1, Nov 2-16 in China");
}
