//! schemathesis (from PyPI) against `/openapi.json` of a running collector with an operator
//! token: no 5xx, every response in the document's schema and status codes, for a bounded,
//! seeded number of generated requests per operation. Path parameters point at real data (an
//! enrolled account, its site, an order) so the requests reach the handlers' logic.
//!
//! Needs `st` on the PATH (`.ci/run` installs schemathesis in a virtual environment); without
//! it the test says so and is skipped.

mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::http::request;
use support::in_process::serve;
use tally_testkit::skip;

/// Requests per operation and phase, and the seed, so a CI run is bounded and repeatable.
const EXAMPLES: &str = "50";
const SEED: &str = "1";

#[test]
fn schemathesis_finds_no_server_error_and_no_response_outside_the_schema() {
    if Command::new("st").arg("--version").output().is_err() {
        skip!("schemathesis (`st`) is not on the PATH; `pip install schemathesis` to run it");
        return;
    }
    let c = support::acme_with_hq();
    // Its authentication checks present thousands of wrong tokens from this one address.
    c.configure("wrong_tokens_per_minute = 1000000");
    let token = c.ok(&support::args("token create --role operator")).trim().to_owned();
    let (_serving, http) = serve(&c);
    let tomorrow = (c.today() + chrono::TimeDelta::days(1)).to_string();
    let order = json!({"items": [{"type": "ip_addresses", "start_date": tomorrow, "quantity": 1}]});
    let (status, _, body) = request(&http, "POST", "/v1/accounts/acme/orders", Some(&token), &order.to_string());
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"].to_string();
    let config = c.file(
        "schemathesis.toml",
        &format!(
            "[parameters]\n\"path.account\" = \"acme\"\n\"path.site\" = \"hq\"\n\"path.order\" = \"{id}\"\n\n\
             # A request of the schema's form may still be refused by a rule about stored state or\n\
             # today's date (a site of another account, a start date in the past): 422 says so.\n\
             [checks.positive_data_acceptance]\nexpected-statuses = [\"2xx\", \"401\", \"403\", \"404\", \"409\", \"422\"]\n\n\
             # A body over the size limit is refused before it is read, with 413.\n\
             [checks.negative_data_rejection]\nexpected-statuses = [\"400\", \"401\", \"403\", \"404\", \"405\", \"406\", \"409\", \"413\", \"415\", \"422\", \"428\", \"429\"]\n"
        ),
    );

    let out = Command::new("st")
        .args(["--config-file", &config, "run", &format!("http://{http}/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", EXAMPLES, "--seed", SEED])
        .args(["--checks", "all"])
        .current_dir(c.dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found problems:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary = report.lines().find(|l| l.contains(" generated, ")).unwrap_or_default();
    println!("schemathesis: {}", summary.trim());
}
