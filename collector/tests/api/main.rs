//! The HTTP API of the real `serve` process: the usage report behind the operator's bearer
//! token, and problem+json for every refusal.

#[path = "../support/mod.rs"]
mod support;

mod events;
mod overusage;
mod sites;
mod tenants;

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
