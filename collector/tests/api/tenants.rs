//! Tenancy over HTTP: what each token may see, and who may change the recipients.

use super::*;

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
