//! Month-end notifications (R15) with a real SMTP server (aiosmtpd) and a real webhook receiver on
//! loopback: the collector is SIGKILLed after the outbox is committed and before anything could
//! be delivered; after a restart every recipient (the account's and its managing partner's) gets
//! exactly one notification, the webhook's signature verifies, an account without over-usage gets
//! nothing, and a later finalization pass sends nothing more.
//!
//! Needs Debian's python3 with aiosmtpd (`.ci/run` installs python3-aiosmtpd); without it the test
//! says so and is skipped.

mod support;

use serde_json::Value;
use support::sinks::{SECRET, SMTP_SINK, WEBHOOK_SINK, free_port, has_aiosmtpd, lines, sink};
use support::{Collector, args, licensed_100_mbps_running_at};
use tally_collector::agents::ca::Ca;

/// The sinks listen on loopback, where webhooks go only when the operator allows it.
const LOOPBACK_HOOKS: &str = "webhook_allowed_networks = [\"127.0.0.0/8\"]";

#[test]
fn every_recipient_is_notified_exactly_once_across_a_crash_before_delivery() {
    if !has_aiosmtpd() {
        return;
    }
    let (smtp_port, hook_port) = (free_port(), free_port());
    let c = Collector::with_config(&format!(
        "smtp = \"127.0.0.1:{smtp_port}\"\n\
         smtp_tls = \"none\"\nsmtp_from = \"tally@provider.example\"\nwebhook_secret = \"{SECRET}\"\n{LOOPBACK_HOOKS}\n\
         log = \"info,tally_collector::usage=debug\""
    ))
    .at(support::MID_NOVEMBER_2026);
    support::account_added_in_september(&c, "account add --id partner --name Partner");
    support::account_added_in_september(&c, "account add --id acme --name Acme --partner partner");
    support::account_added_in_september(&c, "account add --id quiet --name Quiet");
    c.ok(&args("account notify --account partner --email desk@partner.example"));
    c.ok(&args("account notify --account acme --email ops@acme.example"));
    c.ok(&["account", "notify", "--account", "acme", "--webhook", &format!("http://127.0.0.1:{hook_port}/tally")]);
    c.ok(&args("account notify --account quiet --email ops@quiet.example"));
    // acme runs at 150 Mbps on Oct 7 (50 over), quiet at 50 Mbps (within).
    licensed_100_mbps_running_at(&c, "acme", "hq", 150_000_000);
    licensed_100_mbps_running_at(&c, "quiet", "q1", 50_000_000);

    // Nothing listens yet: the month is finalized and its outbox committed, delivery fails, and
    // the collector is killed before any retry.
    let mut server = c.serve();
    server.until_n("notification delivery failed", 3);
    drop(server);

    let (mail, hooks) = (c.dir.path().join("mail.jsonl"), c.dir.path().join("hooks.jsonl"));
    let _smtp = sink(SMTP_SINK, &[&smtp_port.to_string(), mail.to_str().unwrap()]);
    let _hook = sink(WEBHOOK_SINK, &[&hook_port.to_string(), SECRET, hooks.to_str().unwrap()]);
    let mut server = c.serve();
    server.until_n("notification delivered", 3);
    drop(server);

    // A later pass finds the months finalized and sends nothing more.
    let mut server = c.serve();
    server.until("months due for finalization checked");
    server.until("outbox checked");
    drop(server);

    let mail = lines(&mail);
    let mut to: Vec<String> = mail.iter().map(|m| m["to"][0].as_str().unwrap().to_owned()).collect();
    to.sort();
    assert_eq!(to, ["desk@partner.example", "ops@acme.example"], "the account and its partner, once each: {mail:?}");
    for m in &mail {
        assert_eq!(m["subject"], "Tally: over-usage in 2026-10 for account acme");
        assert!(m["body"].as_str().unwrap().contains("excess 50.0 Mbps"), "{m}");
    }
    let hooks = lines(&hooks);
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["valid"], true, "the HMAC-SHA256 signature verifies");
    assert_eq!(hooks[0]["body"]["account"], "acme");
    assert_eq!(hooks[0]["body"]["overusage"][0]["excess"], 50_000_000);

    let outbox: Value = serde_json::from_str(&c.ok(&args("notifications --format json"))).unwrap();
    let outbox = outbox.as_array().unwrap();
    assert_eq!(outbox.len(), 3, "{outbox:?}");
    assert!(outbox.iter().all(|o| o["account"] == "acme" && o["delivered_at"].is_string()), "{outbox:?}");
}

/// A server certificate for 127.0.0.1 from `ca`, written as PEM files; returns their paths.
fn server_pem(c: &Collector, ca: &Ca, name: &str) -> (String, String) {
    let (cert, key) = ca.server_certificate(&["127.0.0.1".to_owned()]).unwrap();
    let cert = c.file(&format!("{name}.crt"), &pem::encode(&pem::Pem::new("CERTIFICATE", cert)));
    let key = c.file(&format!("{name}.key"), &pem::encode(&pem::Pem::new("PRIVATE KEY", key)));
    (cert, key)
}

/// E-mail through a relay that requires STARTTLS and a login, webhooks over https: delivered when
/// the server's certificate comes from an authority of `notify_ca_file`, refused (and retried)
/// when it does not.
#[test]
fn tls_relays_and_https_webhooks_are_verified() {
    if !has_aiosmtpd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (trusted, _) = Ca::load_or_create(&dir.path().join("trusted")).unwrap();
    let (stranger, _) = Ca::load_or_create(&dir.path().join("stranger")).unwrap();
    let (smtp_port, hook_port, bad_hook_port) = (free_port(), free_port(), free_port());
    let ca_file = dir.path().join("notify-ca.pem");
    std::fs::write(&ca_file, trusted.cert_pem()).unwrap();
    let c = Collector::with_config(&format!(
        "smtp = \"127.0.0.1:{smtp_port}\"\n\
         smtp_tls = \"starttls\"\nsmtp_username = \"tally\"\nsmtp_password = \"relay-password\"\n\
         smtp_from = \"tally@provider.example\"\nwebhook_secret = \"{SECRET}\"\n{LOOPBACK_HOOKS}\nnotify_ca_file = \"{}\"\n\
         log = \"info,tally_collector::usage=debug\"",
        ca_file.display()
    ))
    .at(support::MID_NOVEMBER_2026);
    let (relay_cert, relay_key) = server_pem(&c, &trusted, "relay");
    let (hook_cert, hook_key) = server_pem(&c, &trusted, "hook");
    let (bad_cert, bad_key) = server_pem(&c, &stranger, "bad-hook");
    let (mail, hooks, bad_hooks) =
        (c.dir.path().join("mail.jsonl"), c.dir.path().join("hooks.jsonl"), c.dir.path().join("bad.jsonl"));
    let _smtp = sink(
        SMTP_SINK,
        &[&smtp_port.to_string(), mail.to_str().unwrap(), &relay_cert, &relay_key, "tally", "relay-password"],
    );
    let _hook = sink(WEBHOOK_SINK, &[&hook_port.to_string(), SECRET, hooks.to_str().unwrap(), &hook_cert, &hook_key]);
    let _bad =
        sink(WEBHOOK_SINK, &[&bad_hook_port.to_string(), SECRET, bad_hooks.to_str().unwrap(), &bad_cert, &bad_key]);

    support::account_added_in_september(&c, "account add --id acme --name Acme");
    c.ok(&args("account notify --account acme --email ops@acme.example"));
    c.ok(&["account", "notify", "--account", "acme", "--webhook", &format!("https://127.0.0.1:{hook_port}/tally")]);
    c.ok(&["account", "notify", "--account", "acme", "--webhook", &format!("https://127.0.0.1:{bad_hook_port}/t")]);
    licensed_100_mbps_running_at(&c, "acme", "hq", 150_000_000);
    let mut server = c.serve();
    server.until_n("notification delivered", 2);
    server.until("notification delivery failed");
    drop(server);

    let mail = lines(&mail);
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(mail[0]["to"][0], "ops@acme.example");
    assert_eq!(mail[0]["tls"], true, "sent after STARTTLS");
    assert_eq!(mail[0]["user"], "tally", "logged in");
    let hooks = lines(&hooks);
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["valid"], true);
    assert!(lines(&bad_hooks).is_empty(), "nothing sent to a server of an untrusted authority");
    let outbox: Value = serde_json::from_str(&c.ok(&args("notifications --format json"))).unwrap();
    let refused: Vec<&Value> = outbox.as_array().unwrap().iter().filter(|o| o["delivered_at"].is_null()).collect();
    assert_eq!(refused.len(), 1, "{outbox}");
    let error = refused[0]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("TLS: invalid peer certificate"), "{error}");
}

/// R23: an order's confirmation reaches the organization (its contact person and its e-mail
/// recipients), and a quote its contact person, through the outbox and a real SMTP server.
#[test]
fn order_confirmations_and_quotes_are_mailed() {
    if !has_aiosmtpd() {
        return;
    }
    let smtp_port = free_port();
    let c = Collector::with_config(&format!(
        "smtp = \"127.0.0.1:{smtp_port}\"\n\
         smtp_tls = \"none\"\nsmtp_from = \"tally@provider.example\"\nlog = \"info\""
    ));
    c.ok(&args("account add --id acme --name Acme --eop-contact-name Ann --eop-contact-email ann@acme.example"));
    c.ok(&args("account notify --account acme --email ops@acme.example"));
    c.ok(&args("site add --account acme --id hq --name HQ --country US --type socket"));
    let contact = c.ok(&args("token create --role customer --account acme --contact")).trim().to_owned();
    let operator = c.ok(&args("token create --role operator")).trim().to_owned();
    let mail = c.dir.path().join("mail.jsonl");
    let _smtp = sink(SMTP_SINK, &[&smtp_port.to_string(), mail.to_str().unwrap()]);
    let mut server = c.serve();
    let http = c.http_address().to_string();

    let tomorrow = c.today() + chrono::TimeDelta::days(1);
    let order = serde_json::json!({"items": [
        {"type": "sockets", "start_date": tomorrow.to_string(), "site": "hq", "model": "X1700", "quantity": 2},
    ]});
    let (status, _, body) =
        support::http::request(&http, "POST", "/v1/accounts/acme/orders", Some(&contact), &order.to_string());
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"].as_i64().unwrap();
    server.until_n("notification delivered", 2);
    let moves = format!("/v1/accounts/acme/orders/{id}/transitions");
    for step in [
        serde_json::json!({"to": "in_process"}),
        serde_json::json!({"to": "pending_confirmation", "quote": {"amount": "1200.00", "currency": "USD"}}),
    ] {
        let (status, _, body) = support::http::request(&http, "POST", &moves, Some(&operator), &step.to_string());
        assert_eq!(status, 200, "{body}");
    }
    server.until("notification delivered");
    drop(server);

    let mail = lines(&mail);
    let mut got: Vec<(String, String)> = mail
        .iter()
        .map(|m| (m["to"][0].as_str().unwrap().to_owned(), m["subject"].as_str().unwrap().to_owned()))
        .collect();
    got.sort();
    let received = format!("Tally: order {id} received for account acme");
    let quoted = format!("Tally: quote for order {id} of account acme");
    assert_eq!(
        got,
        [
            ("ann@acme.example".to_owned(), received.clone()),
            ("ann@acme.example".to_owned(), quoted.clone()),
            ("ops@acme.example".to_owned(), received)
        ]
    );
    let quote = mail.iter().find(|m| m["subject"] == quoted).unwrap();
    assert!(quote["body"].as_str().unwrap().contains("1200.00 USD"), "{quote}");
    let confirmation = mail.iter().find(|m| m["to"][0] == "ops@acme.example").unwrap();
    assert!(confirmation["body"].as_str().unwrap().contains("2 × X1700 for site hq"), "{confirmation}");
}

/// Without an SMTP relay, e-mail waits in the outbox untried (`not_configured`), the collector
/// says so once at start, and once a relay is configured the waiting mail is sent.
#[test]
fn mail_waits_for_a_relay_and_is_sent_once_one_is_configured() {
    if !has_aiosmtpd() {
        return;
    }
    let base = "log = \"info\"\n";
    let c = Collector::with_config(base);
    c.ok(&args("account add --id acme --name Acme --eop-contact-name Ann --eop-contact-email ann@acme.example"));
    let contact = c.ok(&args("token create --role customer --account acme --contact")).trim().to_owned();
    let mut server = c.serve();
    let line = server.until("e-mail is not configured (smtp): 0 message(s) are waiting");
    assert!(line.contains("INFO"), "{line}");
    let http = c.http_address().to_string();
    let order = serde_json::json!({"items": [
        {"type": "ip_addresses", "start_date": (c.today() + chrono::TimeDelta::days(1)).to_string(), "quantity": 2},
    ]});
    let (status, _, body) =
        support::http::request(&http, "POST", "/v1/accounts/acme/orders", Some(&contact), &order.to_string());
    assert_eq!(status, 201, "{body}");
    drop(server);
    let outbox: Value = serde_json::from_str(&c.ok(&args("notifications --format json"))).unwrap();
    assert_eq!((outbox[0]["state"].as_str(), outbox[0]["attempts"].as_u64()), (Some("not_configured"), Some(0)));
    assert!(c.ok(&args("notifications")).contains("waiting: email is not configured"));

    let mut server = c.serve();
    let line = server.until("e-mail is not configured (smtp): 1 message(s) are waiting");
    assert!(line.contains("WARN"), "{line}");
    drop(server);

    let smtp_port = free_port();
    let mail = c.dir.path().join("mail.jsonl");
    let _smtp = sink(SMTP_SINK, &[&smtp_port.to_string(), mail.to_str().unwrap()]);
    let relay =
        format!("smtp = \"127.0.0.1:{smtp_port}\"\nsmtp_tls = \"none\"\nsmtp_from = \"tally@provider.example\"\n");
    c.configure(&format!("{base}{relay}"));
    let mut server = c.serve();
    server.until("notification delivered");
    drop(server);
    let got = lines(&mail);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["to"][0], "ann@acme.example");
    let outbox: Value = serde_json::from_str(&c.ok(&args("notifications --format json"))).unwrap();
    assert_eq!((outbox[0]["state"].as_str(), outbox[0]["attempts"].as_u64()), (Some("delivered"), Some(1)));
}

/// A webhook is a request the collector makes where a customer says: never to this machine, the
/// cloud's metadata address or a private network. Such a recipient is refused when added (the
/// command line and the API name the address); one added while the operator allowed loopback is
/// refused again at delivery once that is no longer allowed, and nothing reaches the listener.
#[test]
fn webhooks_never_go_to_this_machine_its_neighbours_or_private_networks() {
    let hook_port = free_port();
    let token = "op-0123456789abcdef0123456789abcdef";
    let config = |allowed: &str| {
        format!(
            "webhook_secret = \"{SECRET}\"\noperator_token = \"{token}\"\n{allowed}\nlog = \"info,tally_collector::usage=debug\""
        )
    };
    let c = Collector::with_config(&config(LOOPBACK_HOOKS)).at(support::MID_NOVEMBER_2026);
    support::account_added_in_september(&c, "account add --id acme --name Acme");
    for address in ["http://169.254.169.254/latest/meta-data", "https://10.0.0.7/hook", "http://[fd00::1]/hook"] {
        let refused = c.fails(&["account", "notify", "--account", "acme", "--webhook", address]);
        assert!(refused.contains("webhooks are not sent there"), "{address}: {refused}");
    }
    let serving = c.serve();
    let http = c.http_address().to_string();
    let body = serde_json::json!({"channel": "webhook", "address": "http://169.254.169.254/latest"}).to_string();
    let (status, _, problem) =
        support::http::request(&http, "POST", "/v1/accounts/acme/recipients", Some(token), &body);
    assert_eq!(status, 422, "{problem}");
    assert!(problem.contains("169.254.169.254 is link-local"), "{problem}");
    drop(serving);

    // Allowed then, not any more: the delivery is refused before any connection.
    c.ok(&["account", "notify", "--account", "acme", "--webhook", &format!("http://127.0.0.1:{hook_port}/tally")]);
    c.configure(&config(""));
    licensed_100_mbps_running_at(&c, "acme", "hq", 150_000_000);
    let hooks = c.dir.path().join("hooks.jsonl");
    let _hook = sink(WEBHOOK_SINK, &[&hook_port.to_string(), SECRET, hooks.to_str().unwrap()]);
    let mut server = c.serve();
    let failed = server.until("notification delivery failed");
    assert!(failed.contains("127.0.0.1 is a loopback address"), "{failed}");
    drop(server);
    assert!(lines(&hooks).is_empty(), "nothing reached the listener");
}

/// An open month whose bandwidth pool is forecast above its license: the account's recipients
/// are told once (the figures and a link to the usage page), not again at the next look or after
/// a restart, and the usage page says so too.
#[test]
fn an_open_month_heading_above_its_license_is_warned_once() {
    if !has_aiosmtpd() {
        return;
    }
    let smtp_port = free_port();
    let c = Collector::with_config(&format!(
        "smtp = \"127.0.0.1:{smtp_port}\"\nsmtp_tls = \"none\"\nsmtp_from = \"tally@provider.example\"\n\
         console_url = \"https://tally.example.net/\"\nlog = \"info,tally_collector::usage=debug\""
    ))
    .at(support::MID_NOVEMBER_2026);
    support::account_added_in_september(&c, "account add --id acme --name Acme");
    support::account_added_in_september(&c, "account add --id calm --name Calm");
    c.ok(&args("account notify --account acme --email ops@acme.example"));
    c.ok(&args("account notify --account calm --email ops@calm.example"));
    // acme runs at 150 Mbps through November's first fifteen days, calm at 50: both licensed 100.
    let mut csv = String::from("site,bucket_start,max_bps\n");
    for (site, account, bps) in [("hq", "acme", 150_000_000u64), ("c1", "calm", 50_000_000)] {
        c.ok(&args(&format!("site add --account {account} --id {site} --name {site} --country US --type socket")));
        c.ok(&args(&format!(
            "license add --account {account} --kind bandwidth_pool --region group1 --quantity 100 --from 2026-01-01 --to 2026-12-31"
        )));
        for day in 1..=15 {
            for slot in 0..288 {
                csv += &format!("{site},2026-11-{day:02}T{:02}:{:02}:00Z,{bps}\n", slot / 12, slot % 12 * 5);
            }
        }
    }
    let file = c.file("november.csv", &csv);
    c.ok(&["import-buckets", "--csv", &file]);
    let mail = c.dir.path().join("mail.jsonl");
    let _smtp = sink(SMTP_SINK, &[&smtp_port.to_string(), mail.to_str().unwrap()]);
    let mut server = c.serve();
    server.until("the open months' forecasts checked");
    server.until("notification delivered");
    drop(server);
    // Looked at again, after a restart: nothing more is sent.
    let mut server = c.serve();
    server.until("the open months' forecasts checked");
    server.until("outbox checked");

    let mail = lines(&mail);
    assert_eq!(mail.len(), 1, "acme once, calm never: {mail:?}");
    assert_eq!(mail[0]["to"][0], "ops@acme.example");
    let subject = mail[0]["subject"].as_str().unwrap().replace("\r\n", "");
    assert_eq!(subject, "Tally: acme's bandwidth pool in group1 is heading above its license this month");
    let body = mail[0]["body"].as_str().unwrap();
    for said in [
        "forecast for the month: 150.0 Mbps",
        "licensed: 100.0 Mbps",
        "https://tally.example.net/accounts/acme/usage?month=2026-11",
    ] {
        assert!(body.contains(said), "{said:?} in {body}");
    }

    // The usage page shows the same warning.
    let token = c.ok(&args("token create --role customer --account acme")).trim().to_owned();
    let http = c.http_address().to_string();
    let headers = "Content-Type: application/x-www-form-urlencoded\r\n";
    let (status, head, _) = support::http::exchange(&http, "POST", "/login", headers, &format!("token={token}"));
    assert_eq!(status, 303, "{head}");
    let cookie = head.lines().find_map(|l| l.strip_prefix("set-cookie: ")).unwrap().split(';').next().unwrap();
    let (status, _, page) = support::http::exchange(
        &http,
        "GET",
        "/accounts/acme/usage?month=2026-11",
        &format!("Cookie: {cookie}\r\n"),
        "",
    );
    assert_eq!(status, 200);
    assert!(page.contains("data-field=\"forecast_exceeds_license\""), "{page}");
    assert!(page.contains("This month is heading above the"), "{page}");
    drop(server);
}
