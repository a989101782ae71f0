//! Month-end notifications (R15) with a real SMTP server (aiosmtpd) and a real webhook receiver on
//! loopback: the collector is SIGKILLed after the outbox is committed and before anything could
//! be delivered; after a restart every recipient (the account's and its managing partner's) gets
//! exactly one notification, the webhook's signature verifies, an account without over-usage gets
//! nothing, and a later finalization pass sends nothing more.
//!
//! Needs Debian's python3 with aiosmtpd (`.ci/run` installs python3-aiosmtpd); without it the test
//! says so and is skipped.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use support::{Collector, args};

const PYTHON: &str = "/usr/bin/python3";
const SECRET: &str = "whsec-0123456789abcdef0123456789abcdef";

/// Each message received, as a JSON line: recipients, Message-ID, subject.
const SMTP_SINK: &str = r#"
import asyncio, json, sys
from email import message_from_bytes
from aiosmtpd.controller import Controller
out = open(sys.argv[2], "a")
class Sink:
    async def handle_DATA(self, server, session, envelope):
        m = message_from_bytes(envelope.content)
        out.write(json.dumps({"to": envelope.rcpt_tos, "id": m["Message-ID"], "subject": m["Subject"],
                              "body": m.get_payload(decode=True).decode()}) + "\n")
        out.flush()
        return "250 OK"
c = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
asyncio.get_event_loop().run_forever()
"#;

/// Each POST as a JSON line: whether its HMAC-SHA256 signature verifies, its id, its body.
const WEBHOOK_SINK: &str = r#"
import hmac, hashlib, json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
secret, out = sys.argv[2].encode(), open(sys.argv[3], "a")
class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        out.write(json.dumps({"valid": hmac.compare_digest(want, self.headers["Tally-Signature"] or ""),
                              "id": self.headers["Tally-Notification-Id"], "body": json.loads(body)}) + "\n")
        out.flush()
        self.send_response(204)
        self.end_headers()
    def log_message(self, *a):
        pass
server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Hook)
print("ready", flush=True)
server.serve_forever()
"#;

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Python sink, once it says it is ready.
fn sink(script: &str, args: &[&str]) -> Process {
    let mut child = Command::new(PYTHON).arg("-c").arg(script).args(args).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    Process(child)
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn every_recipient_is_notified_exactly_once_across_a_crash_before_delivery() {
    if Command::new(PYTHON).args(["-c", "import aiosmtpd"]).status().map_or(true, |s| !s.success()) {
        println!("skipped: {PYTHON} has no aiosmtpd (Debian package python3-aiosmtpd)");
        return;
    }
    let (smtp_port, hook_port) = (free_port(), free_port());
    let c = Collector::with_config(&format!(
        "http_listen = \"127.0.0.1:0\"\nquic_listen = \"127.0.0.1:0\"\nsmtp = \"127.0.0.1:{smtp_port}\"\n\
         smtp_from = \"tally@provider.example\"\nwebhook_secret = \"{SECRET}\"\n\
         log = \"info,tally_collector::usage=debug\""
    ));
    c.ok(&args("account add --id partner --name Partner"));
    c.ok(&args("account add --id acme --name Acme --partner partner"));
    c.ok(&args("account add --id quiet --name Quiet"));
    c.ok(&args("account notify --account partner --email desk@partner.example"));
    c.ok(&args("account notify --account acme --email ops@acme.example"));
    c.ok(&["account", "notify", "--account", "acme", "--webhook", &format!("http://127.0.0.1:{hook_port}/tally")]);
    c.ok(&args("account notify --account quiet --email ops@quiet.example"));
    for (account, site) in [("acme", "hq"), ("quiet", "q1")] {
        c.ok(&args(&format!("site add --account {account} --id {site} --name {site} --country US --type socket")));
        c.ok(&args(&format!(
            "license add --account {account} --kind bandwidth_pool --region group1 --quantity 100 --from 2026-01-01 --to 2026-12-31"
        )));
    }
    // acme runs at 150 Mbps on Oct 7 (50 over), quiet at 50 Mbps (within).
    let mut csv = String::from("site,bucket_start,max_bps\n");
    for slot in 0..288 {
        let at = format!("2026-10-07T{:02}:{:02}:00Z", slot / 12, slot % 12 * 5);
        csv += &format!("hq,{at},150000000\nq1,{at},50000000\n");
    }
    let file = c.file("b.csv", &csv);
    c.ok(&["import-buckets", "--csv", &file]);

    // Nothing listens yet: the month is finalized and its outbox committed, delivery fails, and
    // the collector is killed before any retry.
    let mut server = c.serve();
    server.until("notification delivery failed", 3);
    drop(server);

    let (mail, hooks) = (c.dir.path().join("mail.jsonl"), c.dir.path().join("hooks.jsonl"));
    let _smtp = sink(SMTP_SINK, &[&smtp_port.to_string(), mail.to_str().unwrap()]);
    let _hook = sink(WEBHOOK_SINK, &[&hook_port.to_string(), SECRET, hooks.to_str().unwrap()]);
    let mut server = c.serve();
    server.until("notification delivered", 3);
    drop(server);

    // A later pass finds the months finalized and sends nothing more.
    let mut server = c.serve();
    server.until("months due for finalization checked", 1);
    server.until("outbox checked", 1);
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
