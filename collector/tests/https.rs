//! HTTPS on the HTTP listener, and where bearer tokens may come from (`https::Exposure`),
//! against the real `serve`:
//!
//! - Over its own TLS (a certificate made here): the API with a token, the health check pinned to
//!   the configured certificate; plain HTTP to the TLS port answers nothing; a client that
//!   connects and never says hello holds nobody up. New files are served after SIGHUP, not
//!   before (the health check says so); a broken pair at SIGHUP leaves the previous one.
//! - From this machine's own non-loopback address (a request that crossed a network as far as
//!   the collector can tell): a token over plain HTTP is refused (403, the API and the console's
//!   sign-in), unless `allow_plaintext_tokens`; over HTTPS it is read and the cookie is `Secure`.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;

use support::http::{exchange, request_with, serve};
use support::{Collector, args};
use tally_testkit::skip;

const OPERATOR: &str = "operator-token-0123456789abcdef0123456789";

/// A self-signed certificate for `localhost` and 127.0.0.1 in `c`'s directory, as `name`.pem and
/// `name`.key; returns its DER.
fn certificate(c: &Collector, name: &str) -> Vec<u8> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    c.file(&format!("{name}.pem"), &made.cert.pem());
    c.file(&format!("{name}.key"), &made.signing_key.serialize_pem());
    made.cert.der().to_vec()
}

/// A configuration serving HTTPS with the files `tls.pem` and `tls.key` in `c`'s directory.
fn tls_config(c: &Collector, extra: &str) -> String {
    let file = |name: &str| c.dir.path().join(name).display().to_string();
    format!(
        "operator_token = \"{OPERATOR}\"\nhttp_tls_cert = {:?}\nhttp_tls_key = {:?}\n{extra}",
        file("tls.pem"),
        file("tls.key")
    )
}

/// One HTTPS request, trusting only `root`: the status, the certificate the server presented,
/// and the head and body.
fn https(
    address: &str,
    root: &[u8],
    method: &str,
    path: &str,
    token: Option<&str>,
    form: &str,
) -> (u16, Vec<u8>, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(root.to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(tls), name).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, TcpStream::connect(address).unwrap());
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: tally\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut response = String::new();
    // The server closes without close_notify only on error; either way the answer is complete.
    let _ = stream.read_to_string(&mut response);
    let presented = stream.conn.peer_certificates().unwrap()[0].to_vec();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, presented, response)
}

fn healthcheck(c: &Collector) -> Result<String, String> {
    let out = c.run(&["healthcheck"]);
    let text = String::from_utf8_lossy(if out.status.success() { &out.stdout } else { &out.stderr }).into_owned();
    if out.status.success() { Ok(text) } else { Err(text) }
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn https_serves_the_api_and_reloads_its_certificate_on_sighup() {
    let c = Collector::with_config("");
    let first = certificate(&c, "tls");
    c.configure(&tls_config(&c, ""));
    let mut serving = c.serve();
    let line = serving.until("HTTP API serving");
    assert!(line.contains("tls=true"), "{line}");
    let http = c.http_address().to_string();

    // Someone connects and never starts the handshake: others are served meanwhile.
    let _silent = TcpStream::connect(&http).unwrap();
    let (status, presented, response) = https(&http, &first, "GET", "/v1/sites", Some(OPERATOR), "");
    assert_eq!((status, presented == first), (200, true), "{response}");
    assert!(healthcheck(&c).unwrap().contains("ok"));
    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(&http).unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: tally\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));

    // New files: not served until SIGHUP, which the health check notices.
    let second = certificate(&c, "tls");
    assert_eq!(https(&http, &first, "GET", "/healthz", None, "").1, first);
    let stale = healthcheck(&c).unwrap_err();
    assert!(stale.contains("another certificate") && stale.contains("SIGHUP"), "{stale}");
    let collector = rustix::process::Pid::from_raw(serving.pid() as i32).unwrap();
    rustix::process::kill_process(collector, rustix::process::Signal::HUP).unwrap();
    let reloaded = serving.until("HTTPS certificate reloaded");
    assert!(reloaded.contains(&sha256_hex(&second)), "{reloaded}");
    let (status, presented, _) = https(&http, &second, "GET", "/v1/sites", Some(OPERATOR), "");
    assert_eq!((status, presented == second), (200, true));
    assert!(healthcheck(&c).unwrap().contains("ok"));

    // A broken key at SIGHUP: an error, and the previous pair still served.
    c.file("tls.key", "not a key");
    rustix::process::kill_process(collector, rustix::process::Signal::HUP).unwrap();
    let refused = serving.until("was not reloaded");
    assert!(refused.contains("tls.key"), "{refused}");
    serving.drain_log();
    let (status, presented, _) = https(&http, &second, "GET", "/healthz", None, "");
    assert_eq!((status, presented == second), (200, true));
    serving.stop();
}

#[test]
fn a_broken_certificate_pair_is_refused_before_serving() {
    let c = Collector::with_config("");
    certificate(&c, "tls");
    certificate(&c, "other");
    let file = |name: &str| c.dir.path().join(name).display().to_string();
    // The key of another certificate.
    c.configure(&format!("http_tls_cert = {:?}\nhttp_tls_key = {:?}", file("tls.pem"), file("other.key")));
    let error = c.fails(&["validate"]);
    assert!(error.contains("http_tls_cert, http_tls_key") && error.contains("other.key"), "{error}");
    c.configure(&format!("http_tls_cert = {:?}", file("tls.pem")));
    assert!(c.fails(&["validate"]).contains("http_tls_key: required with http_tls_cert"));
    c.configure("trusted_proxies = [\"10.0.0.0/33\"]");
    assert!(c.fails(&["validate"]).contains("trusted_proxies"));
}

/// This machine's address on its default route: a connection to it from here carries it as
/// the source, not loopback. No packet is sent.
fn own_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// `serve` on every address; the port it listens on.
fn serve_everywhere(c: &Collector) -> (support::Logged, u16) {
    let (serving, http) = serve(c);
    (serving, http.parse::<SocketAddr>().unwrap().port())
}

#[test]
fn tokens_from_beyond_loopback_travel_only_over_https() {
    let Some(own) = own_address() else {
        return skip!("this machine has no address but loopback (a default route is needed)");
    };
    let c = Collector::with_config("");
    let everywhere = format!("http_listen = \"0.0.0.0:{}\"", c.http.port());
    let base = format!("operator_token = \"{OPERATOR}\"\n{everywhere}\n");
    c.configure(&base);
    c.ok(&args("account add --id acme --name Acme"));
    let customer = c.ok(&args("token create --role customer --account acme")).trim().to_owned();
    let mut serving = c.serve();
    serving.until("plain HTTP beyond loopback");
    serving.drain_log();
    let port = c.http.port();
    let outside = SocketAddr::new(own, port).to_string();
    let inside = format!("127.0.0.1:{port}");

    // In clear within the machine: read. From the machine's own network address: refused.
    assert_eq!(request_with(&inside, "GET", "/v1/sites", Some(OPERATOR), "", "").0, 200);
    let (status, _, body) = request_with(&outside, "GET", "/v1/sites", Some(OPERATOR), "", "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(&format!("from {own} is refused")) && body.contains("allow_plaintext_tokens"), "{body}");
    // The console's sign-in too, with no cookie.
    let (status, head, body) = raw(&outside, "POST", "/login", "", &format!("token={customer}"));
    assert_eq!(status, 403, "{body}");
    assert!(!head.to_ascii_lowercase().contains("set-cookie") && body.contains("is refused"), "{head}");
    // What needs no token is served to anyone.
    assert_eq!(request_with(&outside, "GET", "/healthz", None, "", "").0, 200);
    drop(serving);

    // The operator allows it explicitly.
    c.configure(&format!("{base}allow_plaintext_tokens = true"));
    let (serving, port) = serve_everywhere(&c);
    let outside = SocketAddr::new(own, port).to_string();
    assert_eq!(request_with(&outside, "GET", "/v1/sites", Some(OPERATOR), "", "").0, 200);
    drop(serving);

    // Over HTTPS: read, and the console's cookie is Secure.
    let root = certificate(&c, "tls");
    c.configure(&tls_config(&c, &everywhere));
    let (serving, port) = serve_everywhere(&c);
    let outside = SocketAddr::new(own, port).to_string();
    assert_eq!(https(&outside, &root, "GET", "/v1/sites", Some(OPERATOR), "").0, 200);
    let (status, _, response) = https(&outside, &root, "POST", "/login", None, &format!("token={customer}"));
    assert_eq!(status, 303, "{response}");
    let cookie = response.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    drop(serving);
}

/// A form over plain HTTP with extra header lines: status, head, body.
fn raw(http: &str, method: &str, path: &str, headers: &str, form: &str) -> (u16, String, String) {
    let headers = format!("{headers}Content-Type: application/x-www-form-urlencoded\r\n");
    exchange(http, method, path, &headers, form)
}

#[test]
fn behind_a_trusted_proxy_its_forwarded_scheme_decides() {
    let c = Collector::with_config("trusted_proxies = [\"127.0.0.1\"]");
    c.ok(&args("account add --id acme --name Acme"));
    let customer = c.ok(&args("token create --role customer --account acme")).trim().to_owned();
    let (_serving, http) = serve(&c);
    let form = format!("token={customer}");
    // The proxy terminated TLS: the cookie is Secure.
    let (status, head, _) = raw(&http, "POST", "/login", "X-Forwarded-Proto: https\r\n", &form);
    assert_eq!(status, 303, "{head}");
    let cookie = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    // The proxy's client spoke plain HTTP (or the proxy did not say): the token crossed a network
    // in clear, though the proxy is on loopback.
    for headers in ["X-Forwarded-Proto: http\r\n", ""] {
        let (status, head, body) = raw(&http, "POST", "/login", headers, &form);
        assert_eq!(status, 403, "{headers:?}: {body}");
        assert!(!head.to_ascii_lowercase().contains("set-cookie"), "{head}");
    }
}
