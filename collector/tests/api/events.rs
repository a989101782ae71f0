//! Metered events over HTTP: counted once across restarts, bad ones refused by field, a late one
//! counted late.

use super::*;

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
