//! Over-usage over HTTP: resolved by True-Up or True-Forward, bought in the license's unit, older
//! ones upgraded.

use super::*;

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

/// R32 with the figures: True-Forwards in the license's unit. Data Lake: 2 units of
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
