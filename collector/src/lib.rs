//! tally-collector as a library: `main.rs` parses the command line ([`cli`]) and runs its
//! command; `serve` calls [`serve`], which tests call on `127.0.0.1:0` with a shutdown future of
//! their own.
//!
//! - [`config`]: the configuration file, validated before anything is bound; [`clock`]: the
//!   wall clock every business date comes from.
//! - [`store`]: the storage trait and its SQLite backend.
//! - [`admin`]: the operator's commands on the store.
//!
//! - [`ca`], [`ingest`]: the collector's certificate authority and the agents' QUIC link;
//!   [`intake`]: what agents sent that was not billed (refusals, discards, quarantine) and the
//!   sites gone silent; [`presence`]: when each site's agent was last connected;
//!   [`enforcement`], [`policy`]: per-site caps (R17) checked on change and pushed to the agents;
//!   [`pool_risk`]: the stand-alone pools that will fall below their caps.
//!
//! - [`usage`]: daily P95 kept current, and the usage report; [`api`]: the HTTP API;
//!   [`orders`]: online orders.
//! - [`metrics`]: what `/metrics` shows; [`healthcheck`]: the probe of a running `serve`;
//!   [`backup`]: the embedded store and the CA in one file, and back.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod api;
pub mod backup;
pub mod ca;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod digest;
pub mod enforcement;
pub mod healthcheck;
pub mod http;
pub mod https;
pub mod ingest;
pub mod intake;
pub mod metrics;
pub mod orders;
pub mod policy;
pub mod pool_risk;
pub mod presence;
pub mod recipients;
pub mod store;
pub mod terms;
pub mod throttle;
pub mod usage;
pub mod validation;
pub mod webhook_target;

use std::future::Future;

use tokio::net::TcpListener;

/// The QUIC socket's receive buffer. Agents reconnecting together after an outage send thousands
/// of handshake packets at once; the kernel's usual default (208 KiB) drops most of them, and
/// each drop costs an agent a retransmission timeout (1 s, then 2 s, 4 s...).
pub const UDP_RECEIVE_BUFFER: usize = 8 << 20;

/// The agents' QUIC endpoint on `addr`, with a server certificate from `ca` for `names`,
/// connection ids and stateless resets that survive restarts (see [`ca::Ca::endpoint_config`]),
/// and a receive buffer of [`UDP_RECEIVE_BUFFER`] if the kernel allows it.
pub fn quic_endpoint(ca: &ca::Ca, addr: std::net::SocketAddr, names: &[String]) -> anyhow::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(addr)?;
    rustix::net::sockopt::set_socket_recv_buffer_size(&socket, UDP_RECEIVE_BUFFER)?;
    // Linux reports twice what it grants, and grants at most net.core.rmem_max.
    let granted = rustix::net::sockopt::socket_recv_buffer_size(&socket)? / 2;
    if granted < UDP_RECEIVE_BUFFER / 2 {
        tracing::warn!(
            granted_kib = granted / 1024,
            "the QUIC socket's receive buffer is small: many agents reconnecting at once will lose packets; \
             raise net.core.rmem_max to {UDP_RECEIVE_BUFFER} or more"
        );
    }
    let runtime = quinn::default_runtime().ok_or_else(|| anyhow::anyhow!("no async runtime"))?;
    Ok(quinn::Endpoint::new(ca.endpoint_config(), Some(ingest::server_config(ca, names)?), socket, runtime)?)
}

/// The HTTP API and the web console, on one router.
pub fn http_router<S: store::Store + 'static>(store: std::sync::Arc<S>, config: &config::Config) -> axum::Router {
    api::Api::new(store.clone(), config)
        .router()
        .merge(console::Console::new(store, config).router())
        .layer(axum::middleware::from_fn(metrics::track))
}

/// Serves `router` ([`http_router`]) on `listener` until `shutdown` ([`http::serve`]).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    http::serve("HTTP API", listener, None, router, shutdown).await
}
