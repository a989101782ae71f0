//! tally-collector as a library: `main.rs` parses the command line ([`cli`]) and runs its
//! command; `serve` calls [`serve`], which tests call on `127.0.0.1:0` with a shutdown future of
//! their own.
//!
//! - [`config`]: the configuration file, validated before anything is bound; [`clock`]: the
//!   wall clock every business date comes from.
//! - [`store`]: the storage trait and its SQLite and PostgreSQL backends.
//!
//! The domain, a folder each:
//! - [`accounts`]: accounts, sites, licenses, contract terms, recipients, and who sees which.
//! - [`agents`]: the sockets' agents: the QUIC listener, enrollment and the CA, what they sent
//!   that was not billed, and which are connected or silent.
//! - [`enforcement`]: per-site caps (R17), checked on change, pushed to the agents, and the
//!   pools that will fall below them.
//! - [`usage`]: daily P95 kept current, the usage report, the month's closing; [`orders`]:
//!   online orders.
//!
//! Around them: [`api`] and [`console`] on [`net`]'s HTTP server; [`metrics`] (what `/metrics`
//! shows); [`healthcheck`] (the probe of a running `serve`); [`backup`] (the embedded store and
//! the CA in one file, and back).
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod accounts;
pub mod agents;
pub mod api;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod digest;
pub mod enforcement;
pub mod healthcheck;
pub mod metrics;
pub mod net;
pub mod orders;
pub mod store;
pub mod throttle;
pub mod usage;
pub mod validation;

use std::future::Future;

use tokio::net::TcpListener;

/// The HTTP API and the web console, on one router.
pub fn http_router<S: store::Store + 'static>(store: std::sync::Arc<S>, config: &config::Config) -> axum::Router {
    api::Api::new(store.clone(), config)
        .router()
        .merge(console::Console::new(store, config).router())
        .layer(axum::middleware::from_fn(metrics::track))
}

/// Serves `router` ([`http_router`]) on `listener` until `shutdown` ([`net::http::serve`]).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    net::http::serve("HTTP API", listener, None, router, shutdown).await
}
