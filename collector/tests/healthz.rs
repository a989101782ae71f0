//! The collector answers `/healthz` over real HTTP on loopback and stops when told to.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn healthz_answers_ok_and_shutdown_stops_the_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dir = tempfile::tempdir().unwrap();
    let store = tally_collector::store::sqlite::SqliteStore::open(&dir.path().join("tally.db")).await.unwrap();
    let api = tally_collector::http_router(std::sync::Arc::new(store), &Default::default());
    let server = tokio::spawn(tally_collector::serve(listener, api, async {
        let _ = stopped.await;
    }));

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: tally\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("{\"status\":\"ok\"}\n"), "a JSON answer ends with a newline: {response}");
    // So do the OpenAPI document and a problem.
    for (path, status) in [("/openapi.json", "200 OK"), ("/v1/accounts/acme/orders", "401 Unauthorized")] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: tally\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{path}: {response}");
        assert!(response.ends_with("}\n"), "{path} ends with a newline: {response}");
    }

    // `healthcheck --url` takes the collector's base URL too; a wrong path says where to look.
    let probe = |url: String| async move {
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_tally-collector"))
                .args(["healthcheck", "--url", &url])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    for base in [format!("http://{addr}"), format!("http://{addr}/")] {
        let (code, out, err) = probe(base.clone()).await;
        assert_eq!(code, Some(0), "{base}: {out}{err}");
    }
    let (code, _, err) = probe(format!("http://{addr}/health")).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("404 Not Found: the collector's health is at /healthz (or give its base URL)"), "{err}");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed after shutdown");
}

/// `tally-collector healthcheck` without a collector to answer: exit code 1 and the reason.
#[test]
fn healthcheck_fails_with_its_reason_when_nothing_answers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let probe = |url: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally-collector"))
            .args(["healthcheck", "--url", url])
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    let (code, err) = probe(&format!("http://127.0.0.1:{port}/healthz"));
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("127.0.0.1:{port}: Connection refused")), "{err}");
    let (code, err) = probe("ftp://127.0.0.1/healthz");
    assert_eq!(code, Some(1));
    assert!(err.contains("only http:// and https:// URLs are probed"), "{err}");
    // https:// needs the certificate to trust: the configuration's.
    let (code, err) = probe(&format!("https://127.0.0.1:{port}/healthz"));
    assert_eq!(code, Some(1));
    assert!(err.contains("https:// is probed only with http_tls_cert configured"), "{err}");
}
