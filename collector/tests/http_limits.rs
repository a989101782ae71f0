//! The HTTP server against clients that hold it (issue 15, item 8; issue 30): idle connections
//! and headers sent too slowly are closed after the header deadline, a large body without a token
//! is refused before it is read, holders of every connection or of every file descriptor are
//! closed oldest first to make room, and the service keeps answering everyone else meanwhile.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_collector::net::http::HEADER_DEADLINE;
use tally_collector::store::sqlite::SqliteStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn server(dir: &tempfile::TempDir) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = SqliteStore::open(&dir.path().join("tally.db")).await.unwrap();
    let api = tally_collector::http_router(Arc::new(store), &Default::default());
    tokio::spawn(tally_collector::serve(listener, api, std::future::pending()));
    addr
}

/// Reads until the server closes the connection; what it sent.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn healthz(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.unwrap();
    until_closed(&mut stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_are_closed_and_tokenless_bodies_are_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let addr = server(&dir).await;

    // 200 connections that never send anything, and 50 that send half a request line.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /heal").await.unwrap();
        slow.push(stream);
    }
    assert!(healthz(addr).await.starts_with("HTTP/1.1 200 OK"), "others are still served");

    // A large body announced without a token: refused from its headers alone.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let headers = "POST /v1/usage/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1900000\r\n\r\n";
    stream.write_all(headers.as_bytes()).await.unwrap();
    let mut answer = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer)).await.unwrap().unwrap();
    assert_eq!(&answer, b"HTTP/1.1 401", "no token, no body read");

    // The idle and the slow are closed once the header deadline passes.
    let started = Instant::now();
    for mut stream in idle.into_iter().chain(slow) {
        let closed = tokio::time::timeout(HEADER_DEADLINE + Duration::from_secs(5), until_closed(&mut stream)).await;
        assert!(closed.is_ok(), "a connection still open {:?} after the start", started.elapsed());
    }
    assert!(started.elapsed() <= HEADER_DEADLINE + Duration::from_secs(5));
    assert!(healthz(addr).await.starts_with("HTTP/1.1 200 OK"));
}

/// Raises this process's soft limit of open files to its hard limit (the test holds thousands).
fn many_files() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    setrlimit(Resource::Nofile, rustix::process::Rlimit { current: limit.maximum, ..limit }).unwrap();
}

/// 2,000 connections that never speak, past the 1,024 a server holds: the oldest idle ones are
/// closed for the newcomers, and `/healthz` answers at once, again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_of_every_connection_do_not_lock_out_healthz() {
    many_files();
    let dir = tempfile::tempdir().unwrap();
    let addr = server(&dir).await;
    let mut idle = Vec::new();
    for _ in 0..2_000 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    for _ in 0..5 {
        let answer = tokio::time::timeout(Duration::from_secs(2), healthz(addr)).await;
        assert!(answer.is_ok_and(|a| a.starts_with("HTTP/1.1 200 OK")), "/healthz within 2 s");
    }
    // The first of them were closed to make room, long before the header deadline.
    let closed = tokio::time::timeout(Duration::from_secs(2), until_closed(&mut idle[0])).await;
    assert!(closed.is_ok(), "the oldest idle connection is closed at once");
}

/// The collector at its file descriptor limit (256), 400 connections held: `/healthz` still
/// answers, and the failures to accept are logged once, with a count, not once each.
#[test]
fn at_the_file_limit_healthz_answers_and_the_log_stays_short() {
    let c = tally_testkit::collector::Collector::new();
    let serving = c.serve_under(&["prlimit", "--nofile=256:256"]);
    let addr = c.http_address();
    let mut held = Vec::new();
    for _ in 0..400 {
        held.push(std::net::TcpStream::connect(addr).unwrap());
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for _ in 0..3 {
        let answer = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(3), healthz(addr)).await });
        assert!(answer.is_ok_and(|a| a.starts_with("HTTP/1.1 200 OK")), "/healthz within 3 s");
    }
    drop(held);
    let log = serving.stop();
    let warnings = log.lines().filter(|l| l.contains("WARN")).count();
    assert!(warnings <= 4, "{warnings} WARN lines:\n{log}");
    assert!(log.contains("accepting connections failed") && log.contains("idle HTTP connections closed"), "{log}");
}

/// What hyper refuses before the router sees it answers problem+json like every other error: a
/// 100 kB path (414), 500 kB of headers (431), a request line that is not HTTP (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_refuses_answer_problems() {
    let dir = tempfile::tempdir().unwrap();
    let addr = server(&dir).await;
    let long_path = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(100_000));
    let long_headers = format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: {}\r\n\r\n", "b".repeat(500_000));
    for (request, status, says) in [
        (long_path, 414, "longer than the 65,534 bytes"),
        (long_headers, 431, "headers are larger"),
        ("BREW\x01 / HTTP/1.1\r\n\r\n".to_owned(), 400, "could not be read as HTTP/1.1"),
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(request.as_bytes()).await;
        let answer = until_closed(&mut stream).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{answer}"));
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
        assert!(head.contains("content-type: application/problem+json"), "{answer}");
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], status);
        assert!(problem["detail"].as_str().unwrap().contains(says), "{problem}");
    }
    assert!(healthz(addr).await.starts_with("HTTP/1.1 200 OK"));
}
