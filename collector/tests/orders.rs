//! Online orders over real HTTP from `serve` (R20–R24): the EoP prerequisite, items validated by
//! field, idempotent submission, the lifecycle by role with its history, tenancy, lists, and the
//! effects of completed items on licenses and activation dates.

mod support;

use serde_json::{Value, json};
use support::Collector;
use support::http::{get, request, request_with};
use support::in_process::serve;
use tally_common::time::Month;

struct Shop {
    c: Collector,
    operator: String,
    contact: String,
    colleague: String,
    partner: String,
    stranger: String,
}

fn shop() -> Shop {
    let c = Collector::with_config("");
    for line in [
        "account add --id acme --name Acme --eop-contact-name Ann --eop-contact-email ann@acme.example",
        "account add --id reseller --name Reseller --eop-contact-name Rita --eop-contact-email rita@reseller.example",
        "account add --id sub --name Sub --partner reseller --eop-contact-name Sam --eop-contact-email sam@sub.example",
        "account add --id noeop --name NoEop",
        "site add --account acme --id hq --name HQ --country US --type socket",
        "site add --account sub --id shop --name Shop --country DE --type socket",
        "site add --account noeop --id n1 --name N --country US --type socket",
    ] {
        c.ok(&support::args(line));
    }
    let token = |line: &str| c.ok(&support::args(line)).trim().to_owned();
    Shop {
        operator: token("token create --role operator"),
        contact: token("token create --role customer --account acme --contact"),
        colleague: token("token create --role customer --account acme"),
        partner: token("token create --role partner --account reseller --contact"),
        stranger: token("token create --role customer --account noeop --contact"),
        c,
    }
}

impl Shop {
    /// A start date that stays in the future for the whole test, even one begun at 23:59:59.
    fn tomorrow(&self) -> String {
        (self.c.today() + chrono::TimeDelta::days(1)).to_string()
    }
}

fn call(http: &str, method: &str, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let (status, _, text) = request(http, method, path, Some(token), &body.to_string());
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn orders_are_submitted_validated_and_idempotent_and_only_by_enrolled_accounts() {
    let s = shop();
    let (_serving, http) = serve(&s.c);
    let http = http.as_str();
    let order = json!({"items": [
        {"type": "site_bandwidth", "start_date": s.tomorrow(), "site": "hq", "bandwidth_mbps": 100},
        {"type": "ip_addresses", "start_date": s.tomorrow(), "quantity": 4},
    ]});
    let (status, created) = call(http, "POST", "/v1/accounts/acme/orders", &s.colleague, &order);
    assert_eq!(status, 201, "{created}");
    assert_eq!((created["account"].as_str(), created["status"].as_str()), (Some("acme"), Some("submitted")));
    let first = &created["items"][0];
    assert_eq!((first["type"].as_str(), first["bandwidth_mbps"].as_u64()), (Some("site_bandwidth"), Some(100)));
    assert_eq!(first["history"][0]["status"], "submitted");
    assert_eq!(first["history"][0]["actor"], "customer:acme");

    // Every bad item is named by its field, and nothing is stored.
    let bad = json!({"items": [
        {"type": "site_bandwidth", "start_date": s.tomorrow(), "site": "shop", "bandwidth_mbps": 10},
        {"type": "sockets", "start_date": "2020-01-01", "site": "hq", "model": "X1700", "quantity": 0},
    ]});
    let (status, problem) = call(http, "POST", "/v1/accounts/acme/orders", &s.contact, &bad);
    assert_eq!(status, 400, "a quantity of 0 breaks the schema: {problem}");
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["items[0].site", "items[1].start_date", "items[1].quantity"], "{problem}");
    // Only rules about the account's state refuse it: 422. A body that is not an object: 400.
    let elsewhere = json!({"items": [{"type": "sockets", "start_date": s.tomorrow(), "site": "shop", "model": "X1500", "quantity": 1}]});
    let (status, problem) = call(http, "POST", "/v1/accounts/acme/orders", &s.contact, &elsewhere);
    assert_eq!((status, problem["errors"][0]["field"].as_str()), (422, Some("items[0].site")), "{problem}");
    let (status, problem) = call(http, "POST", "/v1/accounts/acme/orders", &s.contact, &json!([order]));
    assert_eq!((status, problem["errors"][0]["field"].as_str()), (400, Some("body")), "{problem}");

    // R21: no EoP contact on record, no order.
    let noeop = json!({"items": [{"type": "ip_addresses", "start_date": s.tomorrow(), "quantity": 1}]});
    let (status, problem) = call(http, "POST", "/v1/accounts/noeop/orders", &s.stranger, &noeop);
    assert_eq!(status, 403, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("Electronic Order Program"), "{problem}");

    // Idempotency-Key: the same key and body give the same order; another body is refused.
    let post = |key: &str, body: &Value| {
        let (status, _, text) = request_with(
            http,
            "POST",
            "/v1/accounts/acme/orders",
            Some(&s.contact),
            &format!("Idempotency-Key: {key}\r\n"),
            &body.to_string(),
        );
        (status, serde_json::from_str::<Value>(&text).unwrap())
    };
    let (status, once) = post("k-1", &noeop);
    let (again, twice) = post("k-1", &noeop);
    assert_eq!((status, again), (201, 201));
    assert_eq!(once, twice, "the same order, unchanged");
    let (status, problem) = post("k-1", &order);
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");

    let (_, _, body) = get(http, "/v1/accounts/acme/orders", Some(&s.contact));
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["orders"].as_array().unwrap().len(), 2, "the idempotent repeat made no order: {list}");
    let (_, _, body) = get(http, "/v1/accounts/acme/orders?limit=1", Some(&s.contact));
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["next_after"], created["id"], "{page}");
    let (_, _, body) = get(http, &format!("/v1/accounts/acme/orders?after={}", created["id"]), Some(&s.contact));
    let rest: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rest["orders"][0]["id"], once["id"]);
    let (status, _, _) = get(http, "/v1/accounts/acme/orders?status=shipped", Some(&s.contact));
    assert_eq!(status, 400);

    // Tenancy: other accounts' orders do not exist for a caller; a partner sees its sub-accounts'.
    let path = format!("/v1/accounts/acme/orders/{}", created["id"]);
    assert_eq!(get(http, &path, Some(&s.stranger)).0, 404);
    assert_eq!(get(http, &path, Some(&s.partner)).0, 404);
    let sub_order = json!({"items": [{"type": "sockets", "start_date": s.tomorrow(), "site": "shop", "model": "X1500", "quantity": 1}]});
    let (status, made) = call(http, "POST", "/v1/accounts/sub/orders", &s.partner, &sub_order);
    assert_eq!(status, 201, "a partner orders for its sub-account: {made}");
    assert_eq!(get(http, &format!("/v1/accounts/sub/orders/{}", made["id"]), Some(&s.partner)).0, 200);
    assert_eq!(get(http, &format!("/v1/accounts/sub/orders/{}", made["id"]), Some(&s.contact)).0, 404);

    // An integer written 4.0 is an integer (JSON Schema says so).
    let float = json!({"items": [{"type": "ip_addresses", "start_date": s.tomorrow(), "quantity": 4.0}]});
    let (status, made) = call(http, "POST", "/v1/accounts/acme/orders", &s.contact, &float);
    assert_eq!((status, made["items"][0]["quantity"].as_u64()), (201, Some(4)), "{made}");
}

#[test]
fn items_move_through_their_lifecycle_by_role_and_completed_ones_take_effect() {
    let s = shop();
    let (_serving, http) = serve(&s.c);
    let http = http.as_str();
    // Dates that hold whenever the test runs (R7: the article's window leaves out a month's last
    // day, so the license starts on a first day; the site was added today).
    let next_month = Month::containing(s.c.today()).next();
    let earlier = (s.c.today() - chrono::TimeDelta::days(7)).to_string();
    let order = json!({"items": [
        {"type": "site_bandwidth", "start_date": next_month.first_day().to_string(), "site": "hq", "bandwidth_mbps": 100},
        {"type": "site_early_activation", "start_date": s.tomorrow(), "site": "hq", "activation_date": earlier},
    ]});
    let (_, created) = call(http, "POST", "/v1/accounts/acme/orders", &s.contact, &order);
    let moves = format!("/v1/accounts/acme/orders/{}/transitions", created["id"]);
    let step = |token: &str, body: Value| call(http, "POST", &moves, token, &body);
    let quote = json!({"amount": "1200.00", "currency": "USD"});

    let (status, problem) = step(&s.contact, json!({"to": "in_process"}));
    assert_eq!(status, 403, "only Customer Success moves items forward: {problem}");
    let (status, problem) = step(&s.contact, json!({"to": "completed"}));
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        (problem["current"].as_str(), problem["allowed"].clone()),
        (Some("submitted"), json!(["in_process", "canceled"]))
    );
    assert_eq!(step(&s.operator, json!({"to": "in_process"})).0, 200);
    let (status, problem) = step(&s.operator, json!({"to": "pending_confirmation"}));
    assert_eq!((status, problem["errors"][0]["field"].as_str()), (422, Some("quote")), "{problem}");
    let (status, problem) =
        step(&s.operator, json!({"to": "pending_confirmation", "quote": {"amount": "12,00", "currency": "usd"}}));
    assert_eq!(status, 400, "{problem}");
    let (status, quoted) = step(&s.operator, json!({"to": "pending_confirmation", "quote": quote}));
    assert_eq!((status, quoted["status"].as_str()), (200, Some("pending_confirmation")), "{quoted}");
    assert_eq!(quoted["items"][0]["quote"], quote);
    let (status, _) = step(&s.colleague, json!({"to": "completed"}));
    assert_eq!(status, 403, "a customer who is not the contact person cannot approve");
    let (status, _) = step(&s.operator, json!({"to": "completed"}));
    assert_eq!(status, 403, "nor can Customer Success");
    let (status, done) = step(&s.contact, json!({"to": "completed"}));
    assert_eq!((status, done["status"].as_str()), (200, Some("completed")), "{done}");
    let history: Vec<(&str, &str)> = done["items"][0]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["status"].as_str().unwrap(), h["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        history,
        [
            ("submitted", "customer:acme (contact)"),
            ("in_process", "operator"),
            ("pending_confirmation", "operator"),
            ("completed", "customer:acme (contact)")
        ]
    );
    let (status, problem) = step(&s.contact, json!({"to": "canceled"}));
    assert_eq!((status, problem["allowed"].clone()), (409, json!([])), "{problem}");

    // R24: the bandwidth is a license in force from its start date; the site activates earlier.
    let (_, _, body) = get(http, &format!("/v1/accounts/acme/usage?month={next_month}"), Some(&s.contact));
    let report: Value = serde_json::from_str(&body).unwrap();
    let group1 = report["bandwidth_pool"].as_array().unwrap().iter().find(|p| p["region_group"] == "group1").unwrap();
    assert_eq!(group1["licensed_bps"], 100_000_000, "{report}");
    // R27: the license ends with the account's term in force on its start date: by default 12
    // months from the account's creation.
    let (_, _, body) = get(http, "/v1/accounts/acme", Some(&s.contact));
    let account: Value = serde_json::from_str(&body).unwrap();
    let date = |v: &Value| v.as_str().unwrap().parse::<chrono::NaiveDate>().unwrap();
    let term = &account["contract_term"];
    let (start, end) = (date(&term["start"]), date(&term["end"]));
    assert!(start <= s.c.today() && start >= s.c.today() - chrono::TimeDelta::days(1), "{account}");
    assert_eq!(end, start.checked_add_months(chrono::Months::new(12)).unwrap().pred_opt().unwrap());
    let ending = &term["licenses_ending"];
    assert_eq!(ending.as_array().unwrap().len(), 1, "{account}");
    assert_eq!(
        (ending[0]["kind"].as_str(), ending[0]["quantity"].as_u64()),
        (Some("bandwidth_pool"), Some(100_000_000))
    );
    assert_eq!((date(&ending[0]["effective_from"]), date(&ending[0]["effective_to"])), (next_month.first_day(), end));

    // An item that starts after the term: its completion is refused until a term covers it, and
    // the renewal then extends nothing else.
    let after = (end + chrono::TimeDelta::days(1)).to_string();
    let late = json!({"items": [{"type": "sdp_users", "start_date": after, "region": "global", "quantity": 7}]});
    let (_, late) = call(http, "POST", "/v1/accounts/acme/orders", &s.contact, &late);
    let moves = format!("/v1/accounts/acme/orders/{}/transitions", late["id"]);
    assert_eq!(call(http, "POST", &moves, &s.operator, &json!({"to": "in_process"})).0, 200);
    let quoted = json!({"to": "pending_confirmation", "quote": quote});
    assert_eq!(call(http, "POST", &moves, &s.operator, &quoted).0, 200);
    let (status, problem) = call(http, "POST", &moves, &s.contact, &json!({"to": "completed"}));
    assert_eq!((status, problem["start_date"].as_str()), (409, Some(after.as_str())), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("no contract term"), "{problem}");
    let renewal_end = end.checked_add_months(chrono::Months::new(12)).unwrap().to_string();
    let renewed = s.c.ok(&["account", "set", "--id", "acme", "--term-start", &after, "--term-end", &renewal_end]);
    assert!(renewed.contains(&format!("contract term {after} to {renewal_end} added")), "{renewed}");
    let (status, done) = call(http, "POST", &moves, &s.contact, &json!({"to": "completed"}));
    assert_eq!(status, 200, "{done}");
    let (_, _, body) = get(http, "/v1/accounts/acme", Some(&s.contact));
    let account: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(account["contract_terms"].as_array().unwrap().len(), 2, "{account}");
    let ending = &account["contract_term"]["licenses_ending"];
    assert_eq!(ending.as_array().unwrap().len(), 1, "the first term's license is not extended: {account}");
    assert_eq!(date(&ending[0]["effective_to"]), end);
    let (_, _, body) =
        get(http, &format!("/v1/accounts/acme/usage?month={}", Month::containing(end).next()), Some(&s.contact));
    let report: Value = serde_json::from_str(&body).unwrap();
    let users = &report["contract_term"]["licenses_ending"];
    assert_eq!((users[0]["kind"].as_str(), users[0]["quantity"].as_u64()), (Some("ztna_users"), Some(7)), "{report}");
    assert_eq!(users[0]["effective_to"].as_str(), Some(renewal_end.as_str()));

    let again = json!({"items": [{"type": "site_early_activation", "start_date": s.tomorrow(), "site": "hq", "activation_date": earlier}]});
    let (status, problem) = call(http, "POST", "/v1/accounts/acme/orders", &s.contact, &again);
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("items[0].activation_date")),
        "well-formed, refused by the site's (moved) activation date: {problem}"
    );

    // The contact person cancels an order before completion; for a sub-account, its partner's.
    let ip = json!({"items": [{"type": "ip_addresses", "start_date": s.tomorrow(), "quantity": 2}]});
    let (_, second) = call(http, "POST", "/v1/accounts/acme/orders", &s.colleague, &ip);
    let moves = format!("/v1/accounts/acme/orders/{}/transitions", second["id"]);
    assert_eq!(call(http, "POST", &moves, &s.colleague, &json!({"to": "canceled"})).0, 403);
    let (status, canceled) = call(http, "POST", &moves, &s.contact, &json!({"to": "canceled"}));
    assert_eq!((status, canceled["status"].as_str()), (200, Some("canceled")));
    let sub_order = json!({"items": [{"type": "ip_addresses", "start_date": s.tomorrow(), "quantity": 1}]});
    let (_, made) = call(http, "POST", "/v1/accounts/sub/orders", &s.partner, &sub_order);
    let moves = format!("/v1/accounts/sub/orders/{}/transitions", made["id"]);
    assert_eq!(call(http, "POST", &moves, &s.partner, &json!({"to": "canceled"})).0, 200);
    let (_, _, body) = get(http, "/v1/accounts/acme/orders?status=canceled", Some(&s.contact));
    let list: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&Value> = list["orders"].as_array().unwrap().iter().map(|o| &o["id"]).collect();
    assert_eq!(ids, [&second["id"]]);
}

/// An order is one document whichever route answers it: the POST that made it, GET of the order,
/// and the list, before and after a quote is in its history.
#[test]
fn an_order_has_one_shape_on_every_route() {
    let s = shop();
    let (_serving, http) = serve(&s.c);
    let http = http.as_str();
    let order = json!({"items": [
        {"type": "sockets", "start_date": s.tomorrow(), "site": "hq", "model": "X1500", "quantity": 1},
        {"type": "ip_addresses", "start_date": s.tomorrow(), "quantity": 4},
    ]});
    let (status, posted) = call(http, "POST", "/v1/accounts/acme/orders", &s.contact, &order);
    assert_eq!(status, 201);
    let path = format!("/v1/accounts/acme/orders/{}", posted["id"]);
    let same_everywhere = |expected: &Value| {
        let one: Value = serde_json::from_str(&get(http, &path, Some(&s.contact)).2).unwrap();
        let list: Value = serde_json::from_str(&get(http, "/v1/accounts/acme/orders", Some(&s.contact)).2).unwrap();
        assert_eq!(&one, expected, "GET one");
        assert_eq!(&list["orders"][0], expected, "the list");
    };
    same_everywhere(&posted);
    assert!(posted["items"][0]["history"][0].get("quote").is_none(), "no quote, no key: {posted}");

    let moves = format!("{path}/transitions");
    assert_eq!(call(http, "POST", &moves, &s.operator, &json!({"to": "in_process"})).0, 200);
    let quote = json!({"to": "pending_confirmation", "items": [posted["items"][0]["id"]],
        "quote": {"amount": "99.00", "currency": "EUR"}});
    let (status, quoted) = call(http, "POST", &moves, &s.operator, &quote);
    assert_eq!(status, 200, "{quoted}");
    same_everywhere(&quoted);
    assert_eq!(quoted["items"][0]["history"][2]["quote"]["amount"], "99.00");
    assert!(quoted["items"][1].get("quote").is_none(), "{quoted}");
}
