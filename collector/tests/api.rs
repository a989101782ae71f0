//! The HTTP API of the real `serve` process: the usage report behind the operator's bearer
//! token, and problem+json for every refusal.

mod support;

use serde_json::{Value, json};
use support::Collector;
use support::http::{get, request};
use support::in_process::serve;

const TOKEN: &str = "op-0123456789abcdef0123456789abcdef";

fn post(http: &str, path: &str, body: &Value) -> (u16, String, Value) {
    let (status, content_type, body) = request(http, "POST", path, Some(TOKEN), &body.to_string());
    (status, content_type, serde_json::from_str(&body).unwrap())
}

#[test]
fn the_usage_report_is_served_to_the_operator_and_refusals_are_problems() {
    let c = Collector::with_config(&format!("operator_token = \"{TOKEN}\"")).at(support::MID_NOVEMBER_2026);
    c.ok(&["account", "add", "--id", "acme", "--name", "Acme"]);
    c.ok(&["site", "add", "--account", "acme", "--id", "hq", "--name", "HQ", "--country", "US", "--type", "socket"]);
    let csv = c.file("b.csv", "site,bucket_start,max_bps\nhq,2026-10-07T10:00:00Z,5000000\n");
    c.ok(&["import-buckets", "--csv", &csv]);
    let (_serving, http) = serve(&c);
    let http = http.as_str();

    let (status, _, body) = get(http, "/v1/accounts/acme/usage?month=2026-10", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["account"], "acme");
    assert_eq!(report["month"], "2026-10");
    let hq = &report["sites"][0];
    assert_eq!(hq["site"], "hq");
    let oct7 = hq["days"].as_array().unwrap().iter().find(|d| d["date"] == "2026-10-07").unwrap();
    assert_eq!(oct7["buckets_present"], 1);
    assert_eq!(oct7["p95_bps"], 0, "one bucket of 288 is far inside the discarded top 14 (R5)");

    for (path, token, want, field) in [
        ("/v1/accounts/%ff/usage?month=2026-10", Some(TOKEN), 400, None),
        ("/v1/accounts/acme/sites/%ff%fe/enforcement", Some(TOKEN), 400, None),
        ("/v1/accounts/acme/usage?month=2026-10", None, 401, None),
        ("/v1/accounts/acme/usage?month=2026-10", Some("op-wrong-wrong-wrong-wrong-wrong-wrong"), 401, None),
        ("/v1/accounts/acme/usage", Some(TOKEN), 400, Some("month")),
        ("/v1/accounts/acme/usage?month=2026-13", Some(TOKEN), 400, Some("month")),
        ("/v1/accounts/nobody/usage?month=2026-10", Some(TOKEN), 404, None),
        ("/v1/account/acme/usage?month=2026-10", Some(TOKEN), 404, None),
        ("/v1/usage/events", Some(TOKEN), 405, None),
    ] {
        let (status, content_type, body) = get(http, path, token);
        assert_eq!(status, want, "{path}: {body}");
        assert_eq!(content_type, "application/problem+json", "{path}");
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["status"], want);
        assert!(!problem["detail"].as_str().unwrap().is_empty());
        if let Some(field) = field {
            assert_eq!(problem["errors"][0]["field"], field, "{body}");
        }
    }
}

#[test]
fn a_json_body_with_a_key_twice_is_refused() {
    let c = Collector::with_config(&format!("operator_token = \"{TOKEN}\""));
    let (_serving, http) = serve(&c);
    let body = r#"{"events": [], "events": [{"id": "x"}]}"#;
    let (status, content_type, answer) = request(&http, "POST", "/v1/usage/events", Some(TOKEN), body);
    assert_eq!((status, content_type.as_str()), (400, "application/problem+json"), "{answer}");
    let problem: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(problem["errors"][0]["field"], "body");
    assert!(
        problem["errors"][0]["message"].as_str().unwrap().contains(r#"the key "events" is given twice"#),
        "{answer}"
    );
}

fn event(id: String, kind: &str, fields: Value) -> Value {
    let mut event = json!({"id": id, "type": kind, "account": "acme", "time": "2026-10-05T10:20:00Z"});
    event.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    event
}

fn ztna(id: String, user: String, country: &str, counts: bool) -> Value {
    let f = json!({"user": user, "authenticated": true, "generated_traffic": counts, "remote": true, "work_country": country});
    event(id, "ztna_session", f)
}

/// A month of every meter: the article's 80 + 20 licensed / 90 + 10 measured ZTNA users (within
/// capacity), AI Security and DEM users, devices in blocks of 50, Data Lake units of 1,000
/// events per hour.
fn events_of_october() -> Vec<Value> {
    let mut events = Vec::new();
    for u in 0..90 {
        events.push(ztna(format!("z{u}"), format!("user{u}"), "US", true));
        // A second session of the same user counts once.
        events.push(ztna(format!("z{u}b"), format!("user{u}"), "DE", true));
    }
    for u in 90..100 {
        events.push(ztna(format!("z{u}"), format!("user{u}"), "CN", true));
    }
    // Without traffic: not a ZTNA user (R12).
    events.push(ztna("z-idle".into(), "idle".into(), "US", false));
    for u in 0..12 {
        events.push(event(
            format!("a{u}"),
            "ai_security_activity",
            json!({"user": format!("user{u}"), "enabled": true}),
        ));
    }
    events.push(event("a-off".into(), "ai_security_activity", json!({"user": "off", "enabled": false})));
    for u in 0..5 {
        events.push(event(format!("d{u}"), "dem_user", json!({"user": format!("user{u}")})));
    }
    for d in 0..101 {
        let f = json!({"device": format!("dev{d}"), "source": "lan_discovery", "is_socket": false});
        events.push(event(format!("v{d}"), "device_sighting", f));
    }
    events.push(event(
        "v-socket".into(),
        "device_sighting",
        json!({"device": "socket1", "source": "inline", "is_socket": true}),
    ));
    events.push(event("l1".into(), "data_lake_hour", json!({"count": 1500})));
    events.push(event("l2".into(), "data_lake_hour", json!({"count": 501})));
    let mut other_hour = event("l3".into(), "data_lake_hour", json!({"count": 100}));
    other_hour["time"] = json!("2026-10-05T11:00:00Z");
    events.push(other_hour);
    events
}

#[test]
fn usage_events_are_counted_once_across_restarts_and_bad_ones_are_refused_by_field() {
    let c = Collector::with_config(&format!("operator_token = \"{TOKEN}\"")).at(support::MID_NOVEMBER_2026);
    c.ok(&["account", "add", "--id", "acme", "--name", "Acme"]);
    for license in [
        "--kind ztna_users --region general --quantity 80",
        "--kind ztna_users --region china --quantity 20",
        "--kind ai_security_users --quantity 10",
        "--kind dem_users --quantity 5",
        "--kind devices --quantity 100 --block-size 50",
        "--kind data_lake --quantity 2 --per-unit 1000",
    ] {
        let line = format!("license add --account acme {license} --from 2026-01-01 --to 2026-12-31");
        c.ok(&support::args(&line));
    }
    let events = events_of_october();
    let (first, rest) = events.split_at(100);

    let (serving, http) = serve(&c);
    // A batch with bad events: the good ones are kept, each bad one is named.
    let mut batch: Vec<Value> = first.to_vec();
    batch.push(json!({"id": "bad1", "type": "dem_user", "account": "acme", "time": "2026-10-05T10:00:00Z"}));
    batch.push(json!({"id": "bad2", "type": "teleport", "account": "acme", "time": "2026-10-05T10:00:00Z"}));
    batch.push(
        json!({"id": "bad3", "type": "dem_user", "account": "nobody", "time": "2026-10-05T10:00:00Z", "user": "x"}),
    );
    batch.push(json!({"id": "bad4", "type": "dem_user", "account": "acme", "time": "yesterday", "user": "x"}));
    for (n, time) in ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z"].iter().enumerate() {
        batch.push(
            json!({"id": format!("bad{}", 5 + n), "type": "dem_user", "account": "acme", "time": time, "user": "x"}),
        );
    }
    let (status, content_type, problem) = post(&http, "/v1/usage/events", &json!({ "events": batch }));
    assert_eq!(status, 422, "{problem}");
    assert_eq!(content_type, "application/problem+json");
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(
        fields,
        [
            "events[100].user",
            "events[101].type",
            "events[103].time",
            "events[104].time",
            "events[105].time",
            "events[106].time",
            "events[102].account"
        ],
        "{problem}"
    );
    assert_eq!(problem["accepted"], 100);
    assert_eq!(problem["new"], 100);
    drop(serving);

    // After a restart: the same events again change nothing; the rest are new.
    let (_serving, http) = serve(&c);
    let (status, _, answer) = post(&http, "/v1/usage/events", &json!({ "events": events }));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicates"], 100);
    assert_eq!(answer["new"], rest.len());
    let (status, _, answer) = post(&http, "/v1/usage/events", &json!({ "events": events }));
    assert_eq!((status, answer["new"].clone(), answer["duplicates"].clone()), (200, json!(0), json!(events.len())));

    let (status, _, body) = get(&http, "/v1/accounts/acme/usage?month=2026-10", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    let meter =
        |kind: &str| report["meters"].as_array().unwrap().iter().find(|m| m["license"] == kind).unwrap().clone();
    let figures =
        |m: Value| (m["measured"].clone(), m["licensed"].clone(), m["excess"].clone(), m["required_purchase"].clone());
    assert_eq!(figures(meter("ztna_users")), (json!(100), json!(100), json!(0), json!(0)), "80 + 20 / 90 + 10 (R12)");
    let regions = meter("ztna_users")["by_region"].clone();
    assert_eq!(
        regions,
        json!([
            {"region": "general", "measured": 90, "licensed": 80},
            {"region": "china", "measured": 10, "licensed": 20}
        ])
    );
    assert_eq!(figures(meter("ai_security_users")), (json!(12), json!(10), json!(2), json!(2)));
    assert_eq!(figures(meter("dem_users")), (json!(5), json!(5), json!(0), json!(0)));
    assert_eq!(figures(meter("devices")), (json!(101), json!(100), json!(1), json!(50)), "one block of 50 covers 1");
    assert_eq!(figures(meter("data_lake")), (json!(2001), json!(2000), json!(1), json!(1)), "3 units needed, 2 held");
}

#[test]
fn overusage_of_a_finalized_month_is_resolved_by_true_up_or_true_forward() {
    let c = Collector::with_config(&format!("operator_token = \"{TOKEN}\"")).at(support::MID_NOVEMBER_2026);
    // The contract term of the calendar year (R27): a True-Forward runs to its end.
    c.ok(&support::args("account add --id acme --name Acme --term-start 2026-01-01 --term-end 2026-12-31"));
    c.ok(&["site", "add", "--account", "acme", "--id", "hq", "--name", "HQ", "--country", "US", "--type", "socket"]);
    for license in [
        "--kind bandwidth_pool --region group1 --quantity 100",
        "--kind premium_security --quantity 1",
        "--kind ai_security_users --quantity 10",
    ] {
        c.ok(&support::args(&format!("license add --account acme {license} --from 2026-01-01 --to 2026-12-31")));
    }
    // Oct 7 at 150 Mbps all day: the monthly P95 is 150 Mbps, 50 over the license.
    let mut csv = String::from("site,bucket_start,max_bps\n");
    for slot in 0..288 {
        csv += &format!("hq,2026-10-07T{:02}:{:02}:00Z,150000000\n", slot / 12, slot % 12 * 5);
    }
    let file = c.file("b.csv", &csv);
    c.ok(&["import-buckets", "--csv", &file]);
    let (_serving, http) = serve(&c);
    let http = http.as_str();
    let ai: Vec<Value> = (0..12)
        .map(|u| event(format!("a{u}"), "ai_security_activity", json!({"user": format!("u{u}"), "enabled": true})))
        .collect();
    assert_eq!(post(http, "/v1/usage/events", &json!({ "events": ai })).0, 200);
    let (status, _, body) = get(http, "/v1/accounts/acme/overusage?month=2026-10", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let unfinalized: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(unfinalized["status"], "provisional", "a read never finalizes (R35)");
    assert_eq!(unfinalized["overusage"], json!([]), "over-usage is found when the engine finalizes");
    c.ok(&["engine", "--once"]);

    let (status, _, body) = get(http, "/v1/accounts/acme/overusage?month=2026-10", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let found: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(found["status"], "finalized");
    let items = found["overusage"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{found}");
    let pool = items.iter().find(|o| o["license"] == "bandwidth_pool").unwrap();
    assert_eq!(pool["region_group"], "group1");
    assert_eq!(pool["excess"], 50_000_000);
    assert_eq!(
        pool["requires_same_increase"],
        json!(["premium_security"]),
        "R14: a base product flags Premium Security"
    );
    let ai = items.iter().find(|o| o["license"] == "ai_security_users").unwrap();
    assert_eq!((ai["excess"].clone(), ai.get("requires_same_increase")), (json!(2), None));
    let (pool_id, ai_id) = (pool["id"].as_i64().unwrap(), ai["id"].as_i64().unwrap());

    assert_eq!((pool["required_purchase"].clone(), pool["unit"].clone()), (json!(50), json!("Mbps")), "R32");
    let resolve = |id: i64, body: Value| post(http, &format!("/v1/accounts/acme/overusage/{id}/resolution"), &body);
    let (status, _, problem) = resolve(pool_id, json!({"type": "true_forward", "quantity_mbps": 49}));
    assert_eq!(status, 422, "a True-Forward below the required purchase is refused (R16, R32): {problem}");
    assert_eq!(problem["errors"][0]["field"], "quantity_mbps");
    let said = problem["errors"][0]["message"].as_str().unwrap();
    assert!(said.contains("49 Mbps") && said.contains("50 Mbps"), "both figures, with their unit: {said}");
    // An older client's bit/s in `quantity` would buy 10^6 times too much: refused, naming the field to use.
    let (status, _, problem) = resolve(pool_id, json!({"type": "true_forward", "quantity": 50_000_000}));
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "quantity");
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("quantity_mbps"), "{problem}");
    let (status, _, problem) = resolve(pool_id, json!({"type": "true_sideways"}));
    assert_eq!(status, 400, "{problem}");
    let (status, _, resolved) = resolve(pool_id, json!({"type": "true_forward", "quantity_mbps": 50}));
    assert_eq!(status, 201, "{resolved}");
    assert_eq!(resolved["resolution"]["type"], "true_forward");
    assert_eq!(
        (resolved["resolution"]["quantity"].clone(), resolved["resolution"]["unit"].clone()),
        (json!(50), json!("Mbps"))
    );
    let (status, _, problem) = resolve(pool_id, json!({"type": "true_up"}));
    assert_eq!(status, 409, "resolved once: {problem}");
    let (status, _, resolved) = resolve(ai_id, json!({"type": "true_up"}));
    assert_eq!((status, resolved["resolution"]["quantity"].clone()), (201, json!(2)), "a True-Up charges the excess");
    assert_eq!(resolved["resolution"]["unit"], "users");
    assert_eq!(resolve(9_999, json!({"type": "true_up"})).0, 404);

    // The increase is in force from November to the end of the term; October is not re-billed.
    let (_, _, body) = get(http, "/v1/accounts/acme/usage?month=2026-11", Some(TOKEN));
    let november: Value = serde_json::from_str(&body).unwrap();
    let group1 = november["bandwidth_pool"].as_array().unwrap().iter().find(|p| p["region_group"] == "group1").unwrap();
    assert_eq!(group1["licensed_bps"], 150_000_000, "{november}");
    let (_, _, body) = get(http, "/v1/accounts/acme/usage?month=2026-10", Some(TOKEN));
    let october: Value = serde_json::from_str(&body).unwrap();
    let group1 = october["bandwidth_pool"].as_array().unwrap().iter().find(|p| p["region_group"] == "group1").unwrap();
    assert_eq!(group1["licensed_bps"], 100_000_000);
    let kinds: Vec<&str> =
        october["overusage"].as_array().unwrap().iter().map(|o| o["resolution"]["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["true_forward", "true_up"], "resolved over-usage shows its resolution in the report");

    // The increase ends with the term (R16, R27), as the account and November's report say.
    let (status, _, body) = get(http, "/v1/accounts/acme", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let account: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(account["contract_terms"], json!([{"start": "2026-01-01", "end": "2026-12-31"}]));
    let ending = |term: &Value| -> Vec<(String, u64, String, String)> {
        term["licenses_ending"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["kind"] == "bandwidth_pool")
            .map(|l| {
                let text = |k: &str| l[k].as_str().unwrap().to_owned();
                (text("region"), l["quantity"].as_u64().unwrap(), text("effective_from"), text("effective_to"))
            })
            .collect()
    };
    let expected = [
        ("group1".to_owned(), 100_000_000, "2026-01-01".to_owned(), "2026-12-31".to_owned()),
        ("group1".to_owned(), 50_000_000, "2026-11-01".to_owned(), "2026-12-31".to_owned()),
    ];
    assert_eq!(ending(&account["contract_term"]), expected, "{account}");
    assert_eq!(ending(&november["contract_term"]), expected, "{november}");
}

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

#[test]
fn tokens_see_only_their_tenants_and_other_accounts_do_not_exist_for_them() {
    let c = Collector::with_config("").at(support::MID_NOVEMBER_2026);
    for line in [
        "account add --id acme --name Acme",
        "account add --id reseller --name Reseller",
        "account add --id sub --name Sub --partner reseller",
        "account add --id other --name Other",
    ] {
        c.ok(&support::args(line));
    }
    let token = |line: &str| c.ok(&support::args(line)).trim().to_owned();
    let operator = token("token create --role operator");
    let customer = token("token create --role customer --account acme --contact");
    let partner = token("token create --role partner --account reseller");
    assert!(customer.starts_with("tally_") && customer.len() > 60, "{customer}");
    for bad in [
        "token create --role operator --account acme",
        "token create --role customer",
        "token create --role customer --account ghost",
    ] {
        c.fails(&support::args(bad));
    }
    // A process of its own: /metrics counts that process's requests, and this test asserts them.
    let (_serving, http) = support::http::serve(&c);
    let http = http.as_str();
    let usage =
        |account: &str, token: &str| get(http, &format!("/v1/accounts/{account}/usage?month=2026-11"), Some(token));

    for (who, token, account, want) in [
        ("operator", &operator, "other", 200),
        ("customer", &customer, "acme", 200),
        ("customer", &customer, "other", 404),
        ("customer", &customer, "sub", 404),
        ("partner", &partner, "reseller", 200),
        ("partner", &partner, "sub", 200),
        ("partner", &partner, "other", 404),
        ("partner", &partner, "acme", 404),
        ("partner", &partner, "ghost", 404),
    ] {
        let (status, content_type, body) = usage(account, token);
        assert_eq!(status, want, "{who} reading {account}: {body}");
        if want == 404 {
            assert_eq!(content_type, "application/problem+json");
            assert!(body.contains(&format!("account \\\"{account}\\\" does not exist")), "{body}");
        }
    }
    // Operators' business: 403 for a customer of the account, 404 for anyone else's.
    let (status, _, body) = request(http, "PATCH", "/v1/accounts/acme/sites/x", Some(&customer), "{}");
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = request(http, "POST", "/v1/usage/events", Some(&partner), r#"{"events": []}"#);
    assert_eq!(status, 403, "{body}");

    // Only the hash is stored; a revoked token is refused from its next request on.
    let stored = c.store_bytes();
    assert!(
        !stored.is_empty() && !stored.windows(customer.len()).any(|w| w == customer.as_bytes()),
        "the secret is stored"
    );
    let revoked = {
        let out = c.run(&support::args("token create --role customer --account acme"));
        let note = String::from_utf8(out.stderr).unwrap();
        let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        assert_eq!(usage("acme", &secret).0, 200);
        c.ok(&["token", "revoke", "--id", note.split_whitespace().nth(1).unwrap().trim_end_matches(':')]);
        secret
    };
    let (status, _, body) = usage("acme", &revoked);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("revoked"), "{body}");

    // /metrics on the HTTP listener is the operator's; its labels are route templates, never
    // an account (bounded cardinality).
    assert_eq!(get(http, "/metrics", None).0, 401);
    assert_eq!(get(http, "/metrics", Some(&customer)).0, 403);
    let (status, content_type, metrics) = get(http, "/metrics", Some(&operator));
    assert_eq!((status, content_type.as_str()), (200, "application/openmetrics-text; version=1.0.0; charset=utf-8"));
    let usage_route = r#"route="/v1/accounts/{account}/usage""#;
    let answered = |status: u16| {
        metrics.lines().find(|l| {
            l.starts_with("tally_http_requests_total{")
                && l.contains(usage_route)
                && l.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(answered(200).is_some_and(|l| l.ends_with(" 5")), "5 answered 200: {metrics}");
    assert!(answered(404).is_some_and(|l| l.ends_with(" 5")), "5 answered 404: {metrics}");
    for account in ["acme", "other", "sub", "reseller", "ghost"] {
        assert!(!metrics.contains(&format!("/{account}/")), "{account} in {metrics}");
    }
    // The client chooses the method: 200 invented ones are one label, `other`, not 200 series.
    let series = |metrics: &str| metrics.lines().filter(|l| l.starts_with("tally_http_requests_total{")).count();
    let before = series(&get(http, "/metrics", Some(&operator)).2);
    for n in 0..200 {
        support::http::exchange(http, &format!("BREW{n:03}"), "/v1/sites", "", "");
    }
    let (_, _, metrics) = get(http, "/metrics", Some(&operator));
    assert!(!metrics.contains("BREW"), "{metrics}");
    assert!(metrics.lines().any(|l| l.contains(r#"method="other""#) && l.ends_with(" 200")), "{metrics}");
    assert!(series(&metrics) <= before + 2, "at most the other label's series and /metrics' own: {metrics}");
}

#[test]
fn the_openapi_document_describes_every_route_of_the_contract() {
    let c = Collector::with_config("");
    let (_serving, http) = serve(&c);
    let (status, content_type, body) = get(&http, "/openapi.json", None);
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    for (path, method) in [
        ("/healthz", "get"),
        ("/v1/accounts/{account}/usage", "get"),
        ("/v1/usage/events", "post"),
        ("/v1/accounts/{account}/overusage", "get"),
        ("/v1/accounts/{account}/overusage/{id}/resolution", "post"),
        ("/v1/accounts/{account}/sites/{site}", "patch"),
        ("/v1/accounts/{account}/sites/{site}/enforcement", "get"),
        ("/v1/accounts/{account}/orders", "get"),
        ("/v1/accounts/{account}/orders", "post"),
        ("/v1/accounts/{account}/orders/{order}", "get"),
        ("/v1/accounts/{account}/orders/{order}/transitions", "post"),
    ] {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not described");
        if path.starts_with("/v1/") {
            assert_eq!(operation["security"], json!([{"bearer": []}]), "{method} {path}");
            let problem = &operation["responses"]["401"]["content"]["application/problem+json"];
            assert!(problem.is_object(), "{method} {path}: 401 as problem+json");
        }
    }
    let statuses = &doc["components"]["schemas"]["ItemStatus"]["enum"];
    assert_eq!(statuses, &json!(["submitted", "in_process", "pending_confirmation", "completed", "canceled"]));

    // Exactly what is accepted (issue 30): a `{}` event, an empty or overlong address, or a field
    // the body does not take, are outside the schema.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["EventsBody"]["properties"]["events"]["items"]["$ref"], "#/components/schemas/MeteredEvent");
    let events = schemas["MeteredEvent"]["oneOf"].as_array().unwrap();
    assert_eq!(events.len(), 5, "one schema per event type");
    for event in events {
        let name = event["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
        let event = &schemas[name]["allOf"];
        assert_eq!(event[0]["$ref"], "#/components/schemas/EventCommon", "{name}");
        assert!(event[1]["required"].as_array().unwrap().contains(&json!("type")), "{name}");
    }
    assert_eq!(schemas["EventCommon"]["required"], json!(["id", "account", "time"]));
    let body = &doc["paths"]["/v1/accounts/{account}/recipients"]["post"]["requestBody"]["content"]["application/json"];
    assert_eq!(body["schema"]["$ref"], "#/components/schemas/NewRecipient");
    let email = &schemas["EmailRecipient"];
    assert_eq!(
        (&email["additionalProperties"], &email["properties"]["address"]["maxLength"]),
        (&json!(false), &json!(254))
    );
    assert_eq!(schemas["WebhookRecipient"]["additionalProperties"], json!(false));
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

/// An account's recipients over HTTP: read by whoever sees the account, changed by its contact
/// person, its partner or an operator, every change kept with the person and the time.
#[test]
fn recipients_are_changed_by_the_contact_partner_or_operator_and_every_change_is_kept() {
    let c = Collector::with_config(&format!("operator_token = \"{TOKEN}\""));
    c.ok(&support::args("account add --id reseller --name Reseller"));
    c.ok(&support::args("account add --id sub --name Sub --partner reseller"));
    c.ok(&support::args("account add --id other --name Other"));
    let token = |line: &str, person: &[&str]| c.ok(&[&support::args(line)[..], person].concat()).trim().to_owned();
    let ann = ["--name", "Ann Lee", "--email", "ann@sub.example"];
    let contact = token("token create --role customer --account sub --contact", &ann);
    let colleague = token("token create --role customer --account sub", &[]);
    let partner = token(
        "token create --role partner --account reseller",
        &["--name", "Rita", "--email", "rita@reseller.example"],
    );
    let stranger = token("token create --role customer --account other --contact", &[]);
    let (_serving, http) = serve(&c);
    let http = http.as_str();
    let path = "/v1/accounts/sub/recipients";
    let post = |who: &str, body: Value| {
        let (status, _, text) = request(http, "POST", path, Some(who), &body.to_string());
        (status, serde_json::from_str::<Value>(&text).unwrap_or(Value::Null))
    };
    let billing = json!({"channel": "email", "address": "billing@sub.example"});
    assert_eq!(post(&contact, billing.clone()).0, 201);
    assert_eq!(post(&contact, billing.clone()).0, 200, "already a recipient");
    let (status, problem) = post(&colleague, json!({"channel": "email", "address": "x@sub.example"}));
    assert_eq!(status, 403, "{problem}");
    assert_eq!(post(&stranger, billing.clone()).0, 404, "another account's");
    let (status, problem) = post(&contact, json!({"channel": "email", "address": "not-an-address"}));
    assert_eq!((status, problem["errors"][0]["field"].as_str()), (422, Some("address")), "{problem}");
    let (status, problem) = post(&contact, json!({"channel": "email", "address": "a@b.example", "cc": 1}));
    assert_eq!(status, 400, "unknown fields are refused: {problem}");
    let hook = json!({"channel": "webhook", "address": "https://hooks.reseller.example/tally"});
    assert_eq!(post(&partner, hook).0, 201, "the managing partner");
    let (status, _, _) =
        request(http, "DELETE", &format!("{path}?channel=email&address=billing@sub.example"), Some(TOKEN), "");
    assert_eq!(status, 204);
    let (status, _, _) =
        request(http, "DELETE", &format!("{path}?channel=email&address=billing@sub.example"), Some(TOKEN), "");
    assert_eq!(status, 404, "not a recipient any more");
    c.ok(&support::args("account notify --account sub --email ops@sub.example"));

    let (status, _, body) = get(http, path, Some(&colleague));
    assert_eq!(status, 200, "read by whoever sees the account");
    let listed: Value = serde_json::from_str(&body).unwrap();
    let now: Vec<(&str, &str)> = listed["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["channel"].as_str().unwrap(), r["address"].as_str().unwrap()))
        .collect();
    assert_eq!(now, [("email", "ops@sub.example"), ("webhook", "https://hooks.reseller.example/tally")]);
    let changes: Vec<(&str, &str, &str)> = listed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["change"].as_str().unwrap(), c["address"].as_str().unwrap(), c["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        changes,
        [
            ("added", "billing@sub.example", "Ann Lee <ann@sub.example>, customer:sub (contact)"),
            ("added", "https://hooks.reseller.example/tally", "Rita <rita@reseller.example>, partner:reseller"),
            ("removed", "billing@sub.example", "operator"),
            ("added", "ops@sub.example", "operator (command line)"),
        ]
    );
    assert!(listed["changes"].as_array().unwrap().iter().all(|c| c["at"].as_str().is_some_and(|t| t.ends_with('Z'))));
}

/// R32 with the issue's figures: True-Forwards in the license's unit. Data Lake: 2 units of
/// 1,000 events/hour and a peak hour of 4,500 (2,500 over): 3 units are required, and 3 buy
/// a 3-unit license. Devices: 100 in blocks of 50 and 101 seen: one block, never a part of one.
/// ZTNA with licenses in two regions: the True-Forward names its region.
#[test]
fn true_forwards_are_bought_in_the_licenses_unit() {
    let c = Collector::with_config(&format!("operator_token = \"{TOKEN}\"")).at(support::MID_NOVEMBER_2026);
    c.ok(&support::args("account add --id acme --name Acme --term-start 2026-01-01 --term-end 2026-12-31"));
    for license in [
        "--kind data_lake --quantity 2 --per-unit 1000",
        "--kind devices --quantity 100 --block-size 50",
        "--kind ztna_users --region general --quantity 80",
        "--kind ztna_users --region china --quantity 20",
    ] {
        c.ok(&support::args(&format!("license add --account acme {license} --from 2026-01-01 --to 2026-12-31")));
    }
    // One block size and one data unit per account (R32).
    let refused = c.fails(&support::args(
        "license add --account acme --kind devices --quantity 25 --block-size 25 --from 2027-01-01 --to 2027-12-31",
    ));
    assert!(refused.contains("--block-size 50"), "{refused}");
    let refused = c.fails(&support::args(
        "license add --account acme --kind data_lake --quantity 1 --per-unit 500 --from 2027-01-01 --to 2027-12-31",
    ));
    assert!(refused.contains("--per-unit 1000"), "{refused}");

    let (_serving, http) = serve(&c);
    let http = http.as_str();
    let mut events = vec![event("l1".into(), "data_lake_hour", json!({"count": 4_500}))];
    for d in 0..101 {
        let f = json!({"device": format!("dev{d}"), "source": "lan_discovery", "is_socket": false});
        events.push(event(format!("v{d}"), "device_sighting", f));
    }
    for u in 0..105 {
        events.push(ztna(format!("z{u}"), format!("user{u}"), if u < 90 { "US" } else { "CN" }, true));
    }
    assert_eq!(post(http, "/v1/usage/events", &json!({ "events": events })).0, 200);
    c.ok(&["engine", "--once"]);
    let (_, _, body) = get(http, "/v1/accounts/acme/overusage?month=2026-10", Some(TOKEN));
    let found: Value = serde_json::from_str(&body).unwrap();
    let of = |license: &str| {
        found["overusage"].as_array().unwrap().iter().find(|o| o["license"] == license).unwrap().clone()
    };
    let figures =
        |o: &Value| (o["excess"].as_u64().unwrap(), o["required_purchase"].as_u64().unwrap(), o["unit"].clone());
    let (lake, devices, ztna_users) = (of("data_lake"), of("devices"), of("ztna_users"));
    assert_eq!(figures(&lake), (2_500, 3, json!("data units")), "{lake}");
    assert_eq!(figures(&devices), (1, 50, json!("devices")), "{devices}");
    assert_eq!(figures(&ztna_users), (5, 5, json!("users")), "{ztna_users}");

    let resolve =
        |o: &Value, body: Value| post(http, &format!("/v1/accounts/acme/overusage/{}/resolution", o["id"]), &body);
    let (status, _, problem) = resolve(&lake, json!({"type": "true_forward", "quantity": 2}));
    assert_eq!(status, 422, "{problem}");
    let said = problem["errors"][0]["message"].as_str().unwrap();
    assert!(said.contains("2 data units") && said.contains("required purchase of 3 data units"), "{said}");
    let (status, _, problem) = resolve(&lake, json!({"type": "true_forward", "quantity_mbps": 3}));
    assert_eq!((status, problem["errors"][0]["field"].clone()), (422, json!("quantity_mbps")), "{problem}");
    let (status, _, resolved) = resolve(&lake, json!({"type": "true_forward", "quantity": 3}));
    assert_eq!(status, 201, "exactly what covers it: {resolved}");

    let (status, _, problem) = resolve(&devices, json!({"type": "true_forward", "quantity": 60}));
    assert_eq!(status, 422, "{problem}");
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("whole blocks of 50"), "{problem}");
    let (status, _, resolved) = resolve(&devices, json!({"type": "true_forward", "quantity": 50}));
    assert_eq!(status, 201, "{resolved}");

    let (status, _, problem) = resolve(&ztna_users, json!({"type": "true_forward", "quantity": 5}));
    assert_eq!((status, problem["errors"][0]["field"].clone()), (422, json!("region")), "{problem}");
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("china, general"), "{problem}");
    let (status, _, resolved) = resolve(&ztna_users, json!({"type": "true_forward", "quantity": 5, "region": "china"}));
    assert_eq!(status, 201, "{resolved}");

    // The licenses made: 3 data units, 50 devices, 5 China users, from November to the term's end.
    let (_, _, body) = get(http, "/v1/accounts/acme", Some(TOKEN));
    let account: Value = serde_json::from_str(&body).unwrap();
    let mut made: Vec<(String, Option<String>, u64)> = account["contract_term"]["licenses_ending"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["effective_from"] == "2026-11-01")
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_owned(),
                l["region"].as_str().map(str::to_owned),
                l["quantity"].as_u64().unwrap(),
            )
        })
        .collect();
    made.sort();
    assert_eq!(
        made,
        [
            ("data_lake".to_owned(), None, 3),
            ("devices".to_owned(), None, 50),
            ("ztna_users".to_owned(), Some("china".to_owned()), 5)
        ],
        "{account}"
    );
}

/// Runs `statements` on the collector's store as they are, outside Tally: what an older
/// collector left there.
fn raw_sql(c: &Collector, statements: &[String]) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        match &c.database_url {
            Some(url) => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                for s in statements {
                    sqlx::query(sqlx::AssertSqlSafe(s.clone())).execute(&pool).await.unwrap();
                }
            }
            None => {
                let url = format!("sqlite://{}", c.data_file("tally.db").display());
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                for s in statements {
                    sqlx::query(sqlx::AssertSqlSafe(s.clone())).execute(&pool).await.unwrap();
                }
            }
        }
    });
}

/// R32's migration: over-usage resolved before purchases were in the license's unit (a pool
/// True-Forward in bit/s, a Data Lake True-Forward whose license got the excess in events per
/// hour as data units) is upgraded when the collector starts: the pool's resolution becomes
/// Mbps, the Data Lake one is listed for the operator to review, and no license changes.
#[test]
fn over_usage_resolved_before_purchase_units_is_upgraded_and_the_doubtful_listed() {
    let c = Collector::with_config(&format!("operator_token = \"{TOKEN}\"")).at(support::MID_NOVEMBER_2026);
    c.ok(&support::args("account add --id acme --name Acme --term-start 2026-01-01 --term-end 2026-12-31"));
    c.ok(&support::args(
        "license add --account acme --kind data_lake --quantity 2 --per-unit 1000 --from 2026-01-01 --to 2026-12-31",
    ));
    support::licensed_100_mbps_running_at(&c, "acme", "hq", 150_000_000);
    let (_serving, http) = serve(&c);
    let http = http.as_str();
    let lake_hour = vec![event("l1".into(), "data_lake_hour", json!({"count": 4_500}))];
    assert_eq!(post(http, "/v1/usage/events", &json!({ "events": lake_hour })).0, 200);
    c.ok(&["engine", "--once"]);
    let overusage = || -> Vec<Value> {
        let (_, _, body) = get(http, "/v1/accounts/acme/overusage?month=2026-10", Some(TOKEN));
        serde_json::from_str::<Value>(&body).unwrap()["overusage"].as_array().unwrap().clone()
    };
    let ids: Vec<i64> = overusage().iter().map(|o| o["id"].as_i64().unwrap()).collect();
    let resolve = |id: i64, body: Value| post(http, &format!("/v1/accounts/acme/overusage/{id}/resolution"), &body).0;
    assert_eq!(resolve(ids[0], json!({"type": "true_forward", "quantity_mbps": 50})), 201);
    assert_eq!(resolve(ids[1], json!({"type": "true_forward", "quantity": 3})), 201);
    let licenses = || {
        let (_, _, body) = get(http, "/v1/accounts/acme", Some(TOKEN));
        serde_json::from_str::<Value>(&body).unwrap()["contract_term"]["licenses_ending"].clone()
    };
    let licenses_before = licenses();
    assert_eq!(
        licenses_before.as_array().unwrap().len(),
        4,
        "two licenses and the two True-Forwards: {licenses_before}"
    );

    // As an older collector stored them: no required purchase, the pool's True-Forward in bit/s,
    // the Data Lake's in events per hour.
    raw_sql(
        &c,
        &[
            "UPDATE overusages SET required_purchase = NULL".to_owned(),
            format!("UPDATE resolutions SET quantity = 50000000 WHERE overusage_id = {}", ids[0]),
            format!("UPDATE resolutions SET quantity = 2500 WHERE overusage_id = {}", ids[1]),
        ],
    );
    let upgrade = c.command().arg("--config").arg(c.config()).args(["engine", "--once"]).output().unwrap();
    let log = String::from_utf8_lossy(&upgrade.stderr);
    assert!(upgrade.status.success(), "{log}");
    assert!(log.contains("upgraded=2") && log.contains("to_review=1"), "{log}");
    assert!(log.contains("WARN") && log.contains("Review that license"), "{log}");
    let after = overusage();
    let pool = after.iter().find(|o| o["license"] == "bandwidth_pool").unwrap();
    assert_eq!((pool["required_purchase"].clone(), pool["resolution"]["quantity"].clone()), (json!(50), json!(50)));
    assert_eq!(pool["resolution"]["unit"], "Mbps");
    let lake = after.iter().find(|o| o["license"] == "data_lake").unwrap();
    assert_eq!(lake["required_purchase"], 3);
    let suspect: Value = serde_json::from_str(&c.ok(&support::args("overusage list --suspect --format json"))).unwrap();
    let suspect = suspect.as_array().unwrap();
    assert_eq!(suspect.len(), 1, "{suspect:?}");
    assert_eq!(suspect[0]["license"], "data_lake");
    let review = suspect[0]["review"].as_str().unwrap();
    assert!(review.contains("with 2500 data units") && review.contains("3 data unit(s) cover it"), "{review}");
    assert_eq!(licenses(), licenses_before, "no license changed silently");
    assert!(c.ok(&["engine", "--once"]).contains("engine pass"), "a second start upgrades nothing more");
}

/// R33: an event dated in a finalized month is stored, counted as late and never bills: the
/// answer says how many of the batch were late, and October's report shows them with the figure
/// the month would have had. Events are accepted back to the account's life start, at most
/// `max_event_age_days` old (its default, 62, is `usage::events`' unit test); a count beyond
/// 2^53 - 1 is refused by name.
#[test]
fn an_event_for_a_finalized_month_is_counted_late_and_never_swallowed() {
    let config = format!("operator_token = \"{TOKEN}\"\nmax_event_age_days = 90");
    let c = Collector::with_config(&config).at(support::MID_NOVEMBER_2026);
    support::account_added_in_september(&c, "account add --id acme --name Acme");
    for license in ["--kind data_lake --quantity 2 --per-unit 1000", "--kind dem_users --quantity 5"] {
        c.ok(&support::args(&format!("license add --account acme {license} --from 2026-09-01 --to 2026-12-31")));
    }
    let (_serving, http) = serve(&c);
    let http = http.as_str();
    let october = vec![
        event("l1".into(), "data_lake_hour", json!({"count": 1_500})),
        event("d1".into(), "dem_user", json!({"user": "ann"})),
    ];
    assert_eq!(post(http, "/v1/usage/events", &json!({ "events": october })).2["late"], 0);
    c.ok(&["engine", "--once"]);

    // Three events of October arrive after it was finalized (one repeated), one of November.
    let mut late_hour = event("l2".into(), "data_lake_hour", json!({"count": 3_000}));
    late_hour["time"] = json!("2026-10-05T10:40:00Z"); // the same hour as l1: 4,500 with it
    let mut november = event("d9".into(), "dem_user", json!({"user": "ann"}));
    november["time"] = json!("2026-11-10T09:00:00Z");
    let batch = vec![
        late_hour,
        event("d2".into(), "dem_user", json!({"user": "bob"})),
        event("d1".into(), "dem_user", json!({"user": "ann"})),
        november,
    ];
    let (status, _, answer) = post(http, "/v1/usage/events", &json!({ "events": batch }));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].clone(), answer["new"].clone(), answer["duplicates"].clone(), answer["late"].clone()),
        (json!(4), json!(3), json!(1), json!(2)),
        "{answer}"
    );

    let (_, _, body) = get(http, "/v1/accounts/acme/usage?month=2026-10", Some(TOKEN));
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["status"], "finalized");
    let lake = report["meters"].as_array().unwrap().iter().find(|m| m["license"] == "data_lake").unwrap();
    assert_eq!((lake["measured"].clone(), lake["excess"].clone()), (json!(1_500), json!(0)), "never billed");
    assert_eq!(
        report["late_events"],
        json!([
            {"license": "data_lake", "events": 1, "measured": 1_500, "measured_with_late": 4_500},
            {"license": "dem_users", "events": 1, "measured": 1, "measured_with_late": 2}
        ]),
        "{report}"
    );
    assert_eq!(report["overusage"], json!([]), "October was within its licenses and stays so");
    let table = c.ok(&support::args("report --account acme --month 2026-10"));
    assert!(table.contains("1 data_lake event(s) arrived after the month was finalized"), "{table}");
    assert!(table.contains("would have measured 4500, not 1500"), "{table}");

    // Older than max_event_age_days (90 here), before the account's life (September 1st), a count
    // beyond 2^53 - 1: each refused by name.
    let mut old = event("o1".into(), "dem_user", json!({"user": "x"}));
    old["time"] = json!("2026-08-18T11:59:59Z");
    let mut before_life = event("o2".into(), "dem_user", json!({"user": "x"}));
    before_life["time"] = json!("2026-08-31T23:00:00Z");
    let huge = event("o3".into(), "data_lake_hour", json!({"count": 9_007_199_254_740_992u64}));
    let (status, _, problem) = post(http, "/v1/usage/events", &json!({ "events": [old, before_life, huge] }));
    assert_eq!(status, 422, "{problem}");
    let mut errors: Vec<(String, String)> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap().to_owned(), e["message"].as_str().unwrap().to_owned()))
        .collect();
    errors.sort();
    assert_eq!(
        errors.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
        ["events[0].time", "events[1].time", "events[2].count"]
    );
    assert!(errors[0].1.contains("max_event_age_days"), "{errors:?}");
    assert!(errors[1].1.contains("before account acme's life, which begins 2026-09-01"), "{errors:?}");
    assert!(errors[2].1.contains("9007199254740991"), "{errors:?}");
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
