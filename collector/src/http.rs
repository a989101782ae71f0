//! The HTTP server under the API: hyper's HTTP/1.1 with the bounds a service facing the
//! internet needs, so idle, slow or half-sent requests cannot exhaust it.
//!
//! - At most [`HTTP_CONNECTIONS`] connections; more are closed at once (logged once a minute).
//! - A connection must send a request's headers within [`HEADER_DEADLINE`], which also closes
//!   a keep-alive connection idle that long, and slowloris senders.
//! - A request must be answered within [`REQUEST_DEADLINE`], its body included (408 otherwise).
//! - With TLS ([`crate::https::Certificate`]), its handshake is bound by [`HEADER_DEADLINE`] too.
//! - `/v1` requests are authenticated before their body is read ([`crate::api`]); each request
//!   carries its connection's [`Peer`], which decides where its token may come from
//!   ([`crate::https::Exposure`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::https::Peer;
use crate::throttle::Throttle;

/// Connections at once.
pub const HTTP_CONNECTIONS: usize = 1_024;
/// How long a client may take to send a request's headers (or stay idle between requests).
pub const HEADER_DEADLINE: Duration = Duration::from_secs(10);
/// How long a request may take, from its headers to the end of the answer.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(60);
/// How long shutting down waits for requests in progress.
const DRAIN: Duration = Duration::from_secs(10);

static REFUSED: Throttle = Throttle::new(Duration::from_secs(60));

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
    let slots = Arc::new(Semaphore::new(HTTP_CONNECTIONS));
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
                    // Out of file descriptors, say: the listener stays, the next accept may work.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(refused) = REFUSED.hit() {
                tracing::warn!(%remote, refused, "HTTP connections refused at the limit of {HTTP_CONNECTIONS} (logged at most once a minute)");
            }
            continue;
        };
        let (router, watcher, tls, mut closed) = (router.clone(), graceful.watcher(), tls.clone(), closed.clone());
        tokio::spawn(async move {
            let peer = Peer { address: remote.ip(), tls: tls.is_some() };
            let served = match tls {
                None => connection(stream, peer, router, watcher).await,
                Some(tls) => tokio::select! {
                    handshake = tokio::time::timeout(HEADER_DEADLINE, tls.accept(stream)) => match handshake {
                        Ok(Ok(stream)) => connection(stream, peer, router, watcher).await,
                        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                        Err(_) => Err(format!("no TLS handshake within {} s", HEADER_DEADLINE.as_secs())),
                    },
                    _ = closed.changed() => Err("shutting down during the TLS handshake".to_owned()),
                },
            };
            if let Err(e) = served {
                tracing::debug!(%remote, error = %e, "HTTP connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP requests still in progress after {} s: closed", DRAIN.as_secs());
    }
    Ok(())
}

/// Serves one connection's requests, each with `peer` in its extensions.
async fn connection<I>(io: I, peer: Peer, router: axum::Router, watcher: Watcher) -> Result<(), String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_DEADLINE);
    let service = router.map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(peer);
        request
    });
    let connection = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    watcher.watch(connection).await.map_err(|e| e.to_string())
}
