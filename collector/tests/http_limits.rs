//! The HTTP server against clients that hold it (issue 15, item 8): idle connections and
//! headers sent too slowly are closed after the header deadline, a large body without a token is
//! refused before it is read, and the service keeps answering everyone else meanwhile.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_collector::http::HEADER_DEADLINE;
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
