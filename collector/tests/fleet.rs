//! Three collectors on one PostgreSQL (R30): what must happen once happens once, whichever
//! collector a request reaches, decided by the database.
//!
//! - A month finalized while all three run: one saved report, one e-mail per recipient (a real
//!   SMTP server).
//! - Two cap changes through two collectors that together exceed a stand-alone pool: one wins
//!   (R17), round after round.
//! - One enrollment token presented to two collectors at once: one certificate.
//! - One idempotency key sent to two collectors at once: one order (R21).
//!
//! The agents' side (failover, the policy push across collectors) runs with real agents in
//! `agent/tests/fleet.rs`.

mod support;

use std::sync::Barrier;

use serde_json::{Value, json};
use support::http::{request, request_with};
use support::pg_cluster;
use support::quic;
use support::sinks::{SMTP_SINK, free_port, has_aiosmtpd, lines, sink};
use support::{Collector, Logged, args, licensed_100_mbps_running_at};
use tally_common::token::EnrollToken;
use tally_common::wire::{CollectorMessage, ErrorCode};
use tally_testkit::skip;

const OPERATOR: &str = "fleet-operator-token-0123456789abcdef";

/// `serve`, and the addresses of its HTTP API and its QUIC endpoint.
fn start(c: &Collector) -> (Logged, String, String) {
    (c.serve(), c.http_address().to_string(), c.quic.to_string())
}

/// Runs `f(0)` and `f(1)` on two threads released at the same instant.
fn at_once<T: Send>(f: impl Fn(usize) -> T + Sync) -> [T; 2] {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let run = |n| {
            let (barrier, f) = (&barrier, &f);
            s.spawn(move || {
                barrier.wait();
                f(n)
            })
        };
        let (first, second) = (run(0), run(1));
        [first.join().unwrap(), second.join().unwrap()]
    })
}

#[test]
fn what_must_happen_once_happens_once_across_three_collectors() {
    let cluster = match pg_cluster::cluster() {
        Ok(cluster) => cluster,
        Err(why) => return skip!(&why),
    };
    if !has_aiosmtpd() {
        return;
    }
    let smtp_port = free_port();
    let config = format!(
        "\
         operator_token = \"{OPERATOR}\"\nsmtp = \"127.0.0.1:{smtp_port}\"\nsmtp_tls = \"none\"\n\
         smtp_from = \"tally@provider.example\"\nlog = \"info,tally_collector::usage=debug\""
    );
    let a = Collector::on(Some(cluster.database()), &config).at(support::MID_NOVEMBER_2026);
    support::account_added_in_september(&a, "account add --id partner --name Partner");
    support::account_added_in_september(
        &a,
        "account add --id acme --name Acme --partner partner --eop-contact-name Ann --eop-contact-email ann@acme.example",
    );
    a.ok(&args("account notify --account partner --email desk@partner.example"));
    a.ok(&args("account notify --account acme --email ops@acme.example"));
    // October 2026: acme ran 50 Mbps over its pool; its grace has ended (R9).
    licensed_100_mbps_running_at(&a, "acme", "hq", 150_000_000);
    a.ok(&args("license add --account acme --kind bandwidth_pool --region china --quantity 100 --from 2026-01-01 --to 2026-12-31"));
    for site in ["sh1", "sh2"] {
        a.ok(&args(&format!(
            "site add --account acme --id {site} --name {site} --country CN --type socket --cap-mbps 40"
        )));
    }
    let contact = a.ok(&args("token create --role customer --account acme --contact")).trim().to_owned();
    let mail = a.dir.path().join("mail.jsonl");
    let _smtp = sink(SMTP_SINK, &[&smtp_port.to_string(), mail.to_str().unwrap()]);

    let collectors = [a.beside(&config), a.beside(&config)];
    let collectors: Vec<&Collector> = [&a].into_iter().chain(&collectors).collect();
    let mut running: Vec<(Logged, String, String)> = collectors.iter().map(|c| start(c)).collect();

    // The month: each collector looks for months to finalize, each may find October first.
    for (serving, _, _) in &mut running {
        serving.until("months due for finalization checked");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while lines(&mail).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the notifications never came: {:?}", lines(&mail));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let reports: Vec<Value> = collectors
        .iter()
        .map(|c| serde_json::from_str(&c.ok(&args("report --account acme --month 2026-10 --format json"))).unwrap())
        .collect();
    assert!(reports.iter().all(|r| r["finalized_at"] == reports[0]["finalized_at"] && r["status"] == "finalized"));

    // Caps: sh1 and sh2 have 40 each of a 100 Mbps stand-alone pool; raising both to 60 at once,
    // through two collectors, must leave one at 40 (R17).
    let http: Vec<String> = running.iter().map(|(_, http, _)| http.clone()).collect();
    for round in 0..5 {
        let answers = at_once(|n| {
            let body = json!({"cap_bps": 60_000_000}).to_string();
            request(&http[n], "PATCH", &format!("/v1/accounts/acme/sites/sh{}", n + 1), Some(OPERATOR), &body).0
        });
        let mut sorted = answers;
        sorted.sort();
        assert_eq!(sorted, [200, 409], "round {round}: exactly one change wins");
        let winner = if answers[0] == 200 { "sh1" } else { "sh2" };
        let back = json!({"cap_bps": 40_000_000}).to_string();
        let (status, _, body) =
            request(&http[2], "PATCH", &format!("/v1/accounts/acme/sites/{winner}"), Some(OPERATOR), &back);
        assert_eq!(status, 200, "{body}");
    }

    // One enrollment token, presented to two collectors at once: one certificate.
    let token: EnrollToken = a.ok(&args("site enroll-token --site hq")).trim().parse().unwrap();
    let ca = std::fs::read(a.ca_file("ca.pem")).unwrap();
    let ca_der = pem::parse(ca).unwrap().into_contents();
    let quic: Vec<std::net::SocketAddr> = running.iter().map(|(_, _, quic)| quic.parse().unwrap()).collect();
    let answers = at_once(|n| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(quic::enroll(quic[n], &ca_der, &token.secret)).0
    });
    let enrolled = answers.iter().filter(|a| matches!(a, Some(CollectorMessage::Enrolled(_)))).count();
    let refused = answers
        .iter()
        .filter(|a| matches!(a, Some(CollectorMessage::Error(e)) if e.code == ErrorCode::EnrollmentRefused))
        .count();
    assert_eq!((enrolled, refused), (1, 1), "{answers:?}");

    // One idempotency key, sent to two collectors at once: one order.
    let order = json!({"items": [{"type": "ip_addresses", "start_date": "2026-12-01", "quantity": 4}]}).to_string();
    let answers = at_once(|n| {
        let (status, _, body) = request_with(
            &http[n + 1],
            "POST",
            "/v1/accounts/acme/orders",
            Some(&contact),
            "Idempotency-Key: fleet-1\r\n",
            &order,
        );
        (status, serde_json::from_str::<Value>(&body).unwrap())
    });
    assert_eq!((answers[0].0, answers[1].0), (201, 201), "{answers:?}");
    assert_eq!(answers[0].1, answers[1].1, "the same order");
    let (status, _, list) = request(&http[0], "GET", "/v1/accounts/acme/orders", Some(&contact), "");
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["orders"].as_array().map(Vec::len), Some(1), "{list}");

    // R34: each month finalized is logged, and counted, by the one collector that saved it.
    let logs: String = running.into_iter().map(|(serving, _, _)| serving.stop()).collect();
    let mut finalized: Vec<&str> =
        logs.lines().filter(|l| l.contains("month finalized") && l.contains("INFO")).collect();
    let october = finalized.iter().filter(|l| l.contains("acme") && l.contains("2026-10")).count();
    assert_eq!(october, 1, "{finalized:#?}");
    let all = finalized.len();
    finalized.sort_by_key(|l| l.split_once("account").map(|(_, rest)| rest.to_owned()));
    finalized.dedup_by_key(|l| l.split_once("account").map(|(_, rest)| rest.to_owned()));
    assert_eq!(finalized.len(), all, "a month logged as finalized twice: {logs}");
    // One e-mail per recipient of the over-usage, whichever collector sent it; the order's
    // confirmation once (R23).
    let mut to: Vec<(String, String)> = lines(&mail)
        .iter()
        .map(|m| (m["to"][0].as_str().unwrap().to_owned(), m["subject"].as_str().unwrap().to_owned()))
        .collect();
    to.sort();
    let overusage = "Tally: over-usage in 2026-10 for account acme".to_owned();
    assert_eq!(
        to.iter().filter(|(_, subject)| *subject == overusage).map(|(to, _)| to.as_str()).collect::<Vec<_>>(),
        ["desk@partner.example", "ops@acme.example"],
        "{to:?}"
    );
}
