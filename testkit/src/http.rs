//! Plain HTTP/1.1 requests to a `serve` process, over a TCP stream.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::collector::Collector;
use crate::process::Logged;

/// `serve`, its log drained, and the address its HTTP API listens on.
pub fn serve(c: &Collector) -> (Logged, String) {
    let mut serving = c.serve();
    serving.drain_log();
    (serving, c.http_address().to_string())
}

/// A GET on its own connection, if anything answers at `address`: the status and the body. For
/// readiness probes: a refused or broken connection is `None`, never a panic.
pub fn try_get(address: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").ok()?;
    // Read up to the end of the body its Content-Length gives (a server may keep the connection).
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        response.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
            });
            if n == 0 || length.is_some_and(|length| body.len() >= length) {
                let status = head.split_whitespace().nth(1)?.parse().ok()?;
                return Some((status, body.to_owned()));
            }
        } else if n == 0 {
            return None;
        }
    }
}

/// A GET: status, content type, body.
pub fn get(http: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
    request(http, "GET", path, token, "")
}

/// A request with a JSON body and extra header lines (`Name: value\r\n` each).
pub fn request_with(
    http: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let headers = format!("{auth}{headers}Content-Type: application/json\r\n");
    let (status, head, body) = exchange(http, method, path, &headers, body);
    let header = |name: &str| {
        head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix(&format!("{name}: ")).map(str::to_owned))
    };
    let content_type = header("content-type").unwrap_or_default();
    let body = if header("transfer-encoding").as_deref() == Some("chunked") { unchunk(&body) } else { body };
    (status, content_type, body)
}

/// One request on its own connection, with header lines (`Name: value\r\n` each) and a body:
/// the status, the head as received, and the body.
pub fn exchange(http: &str, method: &str, path: &str, headers: &str, body: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(http).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: tally\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), head.to_owned(), body.to_owned())
}

pub fn request(http: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String, String) {
    request_with(http, method, path, token, "", body)
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out += &rest[..size];
        body = &rest[size + 2..];
    }
    out
}
