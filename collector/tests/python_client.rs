//! The OpenAPI document makes a working client: openapi-python-client (the most used Python
//! generator, pinned by `.ci/run`) generates a client from `/openapi.json` of a running collector
//! with no schema dropped, and that client submits, reads and lists an order with its typed
//! models.
//!
//! Needs `openapi-python-client` on the PATH, with the Python it runs with (`.ci/run` installs
//! both in a virtual environment); without it the test says so and is skipped.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::http::get;
use support::in_process::serve;
use tally_testkit::skip;

const GENERATOR: &str = "openapi-python-client";

/// Submits an order of sockets, reads it back and lists the account's orders, all through the
/// generated models; prints what it saw as JSON. Arguments: base URL, token, start date.
const USE_THE_CLIENT: &str = r#"
import datetime, json, sys
from tally_collector_client import AuthenticatedClient
from tally_collector_client.api.orders import create, list_, one
from tally_collector_client.models import (NewOrderBody, Order, OrderList, SocketModel, SocketsItem,
    SocketsItemType, SocketsOrderItem)
base, token, start = sys.argv[1], sys.argv[2], datetime.date.fromisoformat(sys.argv[3])
client = AuthenticatedClient(base_url=base, token=token, raise_on_unexpected_status=True)
item = SocketsItem(type_=SocketsItemType.SOCKETS, start_date=start, site="hq", model=SocketModel.X1700, quantity=2)
made = create.sync("acme", client=client, body=NewOrderBody(items=[item]), idempotency_key="python-1")
assert isinstance(made, Order), made
read = one.sync("acme", str(made.id), client=client)
listed = list_.sync("acme", client=client, limit=10)
assert isinstance(listed, OrderList), listed
first = read.items[0]
assert isinstance(first, SocketsOrderItem), first
print(json.dumps({"id": made.id, "read": read.id, "listed": [o.id for o in listed.orders],
    "item": {"type": first.type_.value, "model": first.model.value, "quantity": first.quantity,
             "status": first.status.value, "start_date": first.start_date.isoformat(),
             "history": [h.status.value for h in first.history]}}))
"#;

/// The generator on the PATH, and the Python of its environment.
fn generator() -> Option<(PathBuf, PathBuf)> {
    let path = std::env::var_os("PATH")?;
    let bin = std::env::split_paths(&path).find(|dir| dir.join(GENERATOR).is_file())?;
    Some((bin.join(GENERATOR), bin.join("python3")))
}

#[test]
fn a_generated_python_client_submits_reads_and_lists_an_order() {
    let Some((generate, python)) = generator() else {
        return skip!("openapi-python-client is not on the PATH; `pip install openapi-python-client==0.29.1`");
    };
    let c = support::acme_with_hq();
    let token = c.ok(&support::args("token create --role customer --account acme --contact")).trim().to_owned();
    let (_serving, http) = serve(&c);
    let (status, _, document) = get(&http, "/openapi.json", None);
    assert_eq!(status, 200);
    let path = c.file("openapi.json", &document);

    let out = Command::new(&generate)
        .args(["generate", "--path", &path, "--meta", "none", "--output-path"])
        .arg(c.dir.path().join("tally_collector_client"))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    for refusal in ["Failure to process schema", "Unable to", "removal of"] {
        assert!(!said.contains(refusal), "the generator dropped part of the document:\n{said}");
    }

    let tomorrow = (c.today() + chrono::TimeDelta::days(1)).to_string();
    let out = Command::new(&python)
        .args(["-c", USE_THE_CLIENT, &format!("http://{http}"), &token, &tomorrow])
        .current_dir(c.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "the client failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["read"], seen["id"]);
    assert_eq!(seen["listed"], serde_json::json!([seen["id"]]));
    assert_eq!(
        seen["item"],
        serde_json::json!({"type": "sockets", "model": "X1700", "quantity": 2, "status": "submitted",
            "start_date": tomorrow, "history": ["submitted"]})
    );
}
