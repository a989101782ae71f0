//! The HTTP server under the API: hyper's HTTP/1.1 with the bounds a service facing the
//! internet needs, so idle, slow or half-sent requests cannot exhaust it.
//!
//! - At most [`HTTP_CONNECTIONS`] connections. When all are taken, the oldest idle one (between
//!   requests, or not yet done with its headers or TLS handshake) is closed for the newcomer, so
//!   clients that only hold connections cannot lock out `/healthz`; a newcomer is refused only
//!   when every connection is in a request. Out of file descriptors, the oldest idle connection
//!   is closed too, to accept the next. Each of these is logged once a minute, with a count.
//! - A connection must send a request's headers within [`HEADER_DEADLINE`], which also closes
//!   a keep-alive connection idle that long, and slowloris senders.
//! - A request must be answered within [`REQUEST_DEADLINE`], its body included (408 otherwise).
//! - With TLS ([`crate::net::https::Certificate`]), its handshake is bound by [`HEADER_DEADLINE`] too.
//! - What hyper refuses itself before the router sees a request (a path over 64 KiB: 414,
//!   headers over its buffer: 431, a malformed request: 400) answers problem+json like every
//!   other error ([`ProblemHeads`]).
//! - `/v1` requests are authenticated before their body is read ([`crate::api`]); each request
//!   carries its connection's [`Peer`], which decides where its token may come from
//!   ([`crate::net::https::Exposure`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::net::https::Peer;
use crate::throttle::Throttle;

/// hyper's read buffer per connection. A request head must fit in it: hyper checks its size only
/// when a read leaves the head incomplete, so a head up to twice this may pass when one read
/// brings it all, and anything larger is refused (431) however it arrives. A 100 kB path still
/// fits, to be refused as too long (414).
const READ_BUFFER: usize = 128 * 1024;

/// Connections at once.
pub const HTTP_CONNECTIONS: usize = 1_024;
/// How long a client may take to send a request's headers (or stay idle between requests).
pub const HEADER_DEADLINE: Duration = Duration::from_secs(10);
/// How long a request may take, from its headers to the end of the answer.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(60);
/// How long shutting down waits for requests in progress.
const DRAIN: Duration = Duration::from_secs(10);

static REFUSED: Throttle = Throttle::new(Duration::from_secs(60));
static CLOSED_IDLE: Throttle = Throttle::new(Duration::from_secs(60));
static ACCEPT_FAILED: Throttle = Throttle::new(Duration::from_secs(60));

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown`, then lets requests in
/// progress finish; `what` names it in the log ("HTTP API serving http=ADDRESS tls=false").
pub async fn serve(
    what: &str,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(http = %listener.local_addr()?, tls = tls.is_some(), "{what} serving");
    let connections = Connections::default();
    let graceful = GracefulShutdown::new();
    // Ends TLS handshakes in progress at shutdown: a client that never finishes its handshake
    // must not hold the drain for the handshake's whole deadline.
    let (closing, closed) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: one idle connection gives its own back; the
                    // listener stays, and the next accept may work.
                    let made_room = connections.close_oldest_idle();
                    if let Some(failed) = ACCEPT_FAILED.hit() {
                        tracing::warn!(error = %e, failed, made_room, "{what}: accepting connections failed (logged at most once a minute)");
                    }
                    if !made_room {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
        };
        let Some(admitted) = connections.admit() else {
            if let Some(refused) = REFUSED.hit() {
                tracing::warn!(%remote, refused, "{what}: connections refused, all {HTTP_CONNECTIONS} in a request (logged at most once a minute)");
            }
            continue;
        };
        let (router, watcher, tls, mut closed) = (router.clone(), graceful.watcher(), tls.clone(), closed.clone());
        tokio::spawn(async move {
            let peer = Peer { address: remote.ip(), tls: tls.is_some() };
            let busy = admitted.busy.clone();
            let serving = async {
                match tls {
                    None => connection(stream, peer, router, busy, watcher).await,
                    Some(tls) => tokio::select! {
                        handshake = tokio::time::timeout(HEADER_DEADLINE, tls.accept(stream)) => match handshake {
                            Ok(Ok(stream)) => connection(stream, peer, router, busy, watcher).await,
                            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                            Err(_) => Err(format!("no TLS handshake within {} s", HEADER_DEADLINE.as_secs())),
                        },
                        _ = closed.changed() => Err("shutting down during the TLS handshake".to_owned()),
                    },
                }
            };
            let served = tokio::select! {
                served = serving => served,
                () = admitted.close.notified() => Err("closed while idle: every connection was taken".to_owned()),
            };
            if let Err(e) = served {
                tracing::debug!(%remote, error = %e, "HTTP connection ended");
            }
            drop(admitted);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP requests still in progress after {} s: closed", DRAIN.as_secs());
    }
    Ok(())
}

/// Raises the soft limit of open files to the hard one: the usual soft limit (1,024) is below
/// [`HTTP_CONNECTIONS`] and the agents' connections together; logged.
pub fn raise_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum
        && let Err(e) = setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, ..limit })
    {
        tracing::warn!(error = %e, "the limit of open files stays at {:?}", limit.current);
    }
    let open_files = getrlimit(Resource::Nofile).current.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    tracing::info!(%open_files, "limit of open files");
}

/// The connections served, by age (ids only grow), each with its requests in progress and a way
/// to close it.
#[derive(Clone, Default)]
struct Connections(Arc<Mutex<BTreeMap<u64, Open>>>, Arc<AtomicU64>);

struct Open {
    busy: Arc<AtomicUsize>,
    close: Arc<Notify>,
}

/// A connection's place among [`Connections`], given back when dropped.
struct Admitted {
    id: u64,
    busy: Arc<AtomicUsize>,
    close: Arc<Notify>,
    connections: Connections,
}

impl Connections {
    fn open(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Open>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A place for a new connection; when all are taken, the oldest idle one's. `None` when every
    /// connection is in a request.
    fn admit(&self) -> Option<Admitted> {
        let mut open = self.open();
        if open.len() >= HTTP_CONNECTIONS && !close_oldest_idle(&mut open) {
            return None;
        }
        let id = self.1.fetch_add(1, Ordering::Relaxed);
        let (busy, close) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        open.insert(id, Open { busy: busy.clone(), close: close.clone() });
        Some(Admitted { id, busy, close, connections: self.clone() })
    }

    /// Closes the oldest connection not in a request; whether there was one.
    fn close_oldest_idle(&self) -> bool {
        close_oldest_idle(&mut self.open())
    }
}

fn close_oldest_idle(open: &mut BTreeMap<u64, Open>) -> bool {
    let Some(id) = open.iter().find(|(_, o)| o.busy.load(Ordering::Acquire) == 0).map(|(id, _)| *id) else {
        return false;
    };
    if let Some(idle) = open.remove(&id) {
        idle.close.notify_one();
    }
    if let Some(closed) = CLOSED_IDLE.hit() {
        tracing::warn!(
            closed,
            "idle HTTP connections closed to make room: every connection, or every file descriptor, was taken (logged at most once a minute)"
        );
    }
    true
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.connections.open().remove(&self.id);
    }
}

/// Counts a connection's request in progress while it lives.
struct InRequest(Arc<AtomicUsize>);

impl InRequest {
    fn new(busy: Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::AcqRel);
        InRequest(busy)
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one connection's requests, each with `peer` in its extensions and counted in `busy`
/// until its answer is ready.
async fn connection<I>(
    io: I,
    peer: Peer,
    router: axum::Router,
    busy: Arc<AtomicUsize>,
    watcher: Watcher,
) -> Result<(), String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_DEADLINE).max_buf_size(READ_BUFFER);
    let service = tower::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        let in_request = InRequest::new(busy.clone());
        request.extensions_mut().insert(peer);
        let answer = router.clone().oneshot(request);
        async move {
            let answer = answer.await;
            drop(in_request);
            answer
        }
    });
    let connection = http.serve_connection(TokioIo::new(ProblemHeads::new(io)), TowerToHyperService::new(service));
    watcher.watch(connection).await.map_err(|e| e.to_string())
}

/// A connection whose error answers written by hyper itself (a request it could not parse: no
/// content type, no body) are replaced by problem+json ones with the same status. hyper writes
/// a response's head in one piece when the connection does not take vectored writes.
struct ProblemHeads<I> {
    io: I,
    /// The replacement being written, how much of it is, and the length of what it replaces.
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<I> ProblemHeads<I> {
    fn new(io: I) -> Self {
        ProblemHeads { io, replacing: None }
    }
}

/// The problem+json answer for a response head hyper wrote for a request it refused.
fn problem_for(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let status: u16 = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let detail = match status {
        400 => "the request could not be read as HTTP/1.1".to_owned(),
        414 => "the request's path and query are longer than the 65,534 bytes the server reads".to_owned(),
        431 => "the request's headers are larger than the server reads".to_owned(),
        _ => return None,
    };
    if !text.contains("\r\ncontent-length: 0\r\n") || text.contains("\r\ncontent-type:") {
        return None;
    }
    let reason = axum::http::StatusCode::from_u16(status).ok()?.canonical_reason()?;
    let body = serde_json::json!({"type": "about:blank", "title": reason, "status": status, "detail": detail})
        .to_string()
        + "\n";
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    Some([head.into_bytes(), body.into_bytes()].concat())
}

impl<I: AsyncRead + Unpin> AsyncRead for ProblemHeads<I> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ProblemHeads<I> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            this.replacing = problem_for(buf).map(|answer| (answer, 0, buf.len()));
        }
        let Some((answer, written, replaced)) = &mut this.replacing else {
            return std::pin::Pin::new(&mut this.io).poll_write(cx, buf);
        };
        while *written < answer.len() {
            match std::pin::Pin::new(&mut this.io).poll_write(cx, &answer[*written..]) {
                std::task::Poll::Ready(Ok(0)) => {
                    return std::task::Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                std::task::Poll::Ready(Ok(n)) => *written += n,
                other => return other,
            }
        }
        let replaced = *replaced;
        this.replacing = None;
        std::task::Poll::Ready(Ok(replaced))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
