//! Real receivers of the collector's notifications, on loopback: an SMTP server (aiosmtpd) and a
//! webhook endpoint, each a Python process writing what it receives as JSON lines.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use tally_testkit::skip;

pub const PYTHON: &str = "/usr/bin/python3";
pub const SECRET: &str = "whsec-0123456789abcdef0123456789abcdef";

/// Each message received, as a JSON line: recipients, Message-ID, subject, body, and the user
/// that logged in. Arguments: port, output file, and for STARTTLS with a login: certificate, key,
/// user, password.
pub const SMTP_SINK: &str = r#"
import asyncio, json, ssl, sys
from email import message_from_bytes
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
out = open(sys.argv[2], "a")
class Sink:
    async def handle_DATA(self, server, session, envelope):
        m = message_from_bytes(envelope.content)
        out.write(json.dumps({"to": envelope.rcpt_tos, "id": m["Message-ID"], "subject": m["Subject"],
                              "body": m.get_payload(decode=True).decode(), "user": session.auth_data,
                              "tls": session.ssl is not None}) + "\n")
        out.flush()
        return "250 OK"
options = {}
if len(sys.argv) > 3:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(sys.argv[3], sys.argv[4])
    login = (sys.argv[5].encode(), sys.argv[6].encode())
    def check(server, session, envelope, mechanism, data):
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == login
        return AuthResult(success=ok, auth_data=data.login.decode() if ok else None)
    options = dict(tls_context=context, require_starttls=True, auth_required=True, authenticator=check)
c = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]), **options)
c.start()
print("ready", flush=True)
asyncio.get_event_loop().run_forever()
"#;

/// Each POST as a JSON line: whether its HMAC-SHA256 signature verifies, its id, its body.
/// Arguments: port, secret, output file, and for https: certificate, key.
pub const WEBHOOK_SINK: &str = r#"
import hmac, hashlib, json, ssl, sys
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
if len(sys.argv) > 4:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(sys.argv[4], sys.argv[5])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
"#;

pub struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Python sink, once it says it is ready.
pub fn sink(script: &str, args: &[&str]) -> Process {
    let mut child = Command::new(PYTHON).arg("-c").arg(script).args(args).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    Process(child)
}

pub fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Whether Debian's python3 has aiosmtpd; if not, the calling test is skipped, saying so.
pub fn has_aiosmtpd() -> bool {
    let found = Command::new(PYTHON).args(["-c", "import aiosmtpd"]).status().is_ok_and(|s| s.success());
    if !found {
        skip!(&format!("{PYTHON} has no aiosmtpd (Debian package python3-aiosmtpd)"));
    }
    found
}
