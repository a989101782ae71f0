//! `tally-collector serve`: the collector's parts wired together — the CA, the store, ingest over
//! QUIC, the usage engine, the pools' watch, metrics, the HTTP API and console — started in order
//! and stopped in order on SIGTERM or Ctrl-C; SIGHUP reloads the HTTPS certificate.

use std::sync::Arc;

use anyhow::Context;
use tally_common::service::shutdown_signal;
use tokio::net::TcpListener;

use crate::agents::ca::Ca;
use crate::agents::{self, Limits};
use crate::config::Config;
use crate::enforcement::pool_risk;
use crate::store::Store;
use crate::usage;

/// Serves until a shutdown signal, then drains and commits.
pub(super) async fn serve<S: Store + 'static>(config: &Config, store: S) -> anyhow::Result<()> {
    // Watched from the start: a SIGTERM while starting stops in order.
    let shutdown = shutdown_signal();
    let (ca, created) = load_ca(config)?;
    tracing::info!(created, fingerprint = %ca.fingerprint(), dir = %config.ca_dir().display(), "certificate authority ready");
    tracing::info!(store = %config.store_name(), "store ready");
    warn_if_short_of_space(config);
    crate::net::http::raise_file_limit();
    let listener = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_listen))?;
    let endpoint = crate::agents::quic_endpoint(&ca, config.quic_listen, &config.certificate_names())
        .with_context(|| format!("cannot listen on UDP {}", config.quic_listen))?;
    let quic = endpoint.local_addr().context("the QUIC endpoint's address")?;
    tracing::info!(%quic, "ingest listening (ALPN tally/1)");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let limits = Limits::from(config);
    let store = std::sync::Arc::new(store);
    let ingest = tokio::spawn(agents::run(
        endpoint,
        store.clone(),
        std::sync::Arc::new(ca),
        limits,
        until_stopped(stopped.clone()),
    ));
    let transports = usage::notify::Transports::new(config).map_err(anyhow::Error::msg)?;
    transports.log_unconfigured(&*store).await?;
    let engine = usage::Engine::new(store.clone(), config, transports);
    let engine = tokio::spawn(engine.run(until_stopped(stopped.clone())));
    let pools = tokio::spawn(pool_risk::watch(store.clone(), until_stopped(stopped.clone())));
    let metrics = match config.metrics_listen {
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (metrics_listen)"))?;
            let router = crate::api::metrics_router(store.clone());
            Some(tokio::spawn(crate::net::http::serve(
                "metrics",
                listener,
                None,
                router,
                until_stopped(stopped.clone()),
            )))
        }
        None => None,
    };
    let certificate = match &config.http_tls {
        Some((cert, key)) => {
            Some(Arc::new(crate::net::https::Certificate::load(cert, key).map_err(anyhow::Error::msg)?))
        }
        None => None,
    };
    // Installed before serving: from then on a SIGHUP reloads, and never stops the collector.
    let hangups =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let reload = tokio::spawn(reload_on_hangup(hangups, certificate.clone()));
    warn_if_tokens_refused(config);
    let router = crate::http_router(store, config);
    let tls = certificate.map(crate::net::https::Certificate::acceptor).transpose().context("HTTPS")?;
    let http = tokio::spawn(crate::net::http::serve("HTTP API", listener, tls, router, until_stopped(stopped)));
    shutdown.await;
    reload.abort();
    tracing::info!("shutting down: no new connections, draining, committing");
    let _ = stop.send(true);
    let _ = ingest.await;
    let _ = engine.await;
    let _ = pools.await;
    http.await??;
    if let Some(metrics) = metrics {
        metrics.await??;
    }
    tracing::info!("collector stopped");
    Ok(())
}

/// The collector's CA, and whether it was created now: on first use, except where collectors
/// share it (R30), where only `ca init` makes it.
pub(super) fn load_ca(config: &Config) -> Result<(Ca, bool), crate::agents::ca::CaError> {
    match config.creates_ca() {
        true => Ca::load_or_create(&config.ca_dir()),
        false => Ok((Ca::load_existing(&config.ca_dir())?, false)),
    }
}

/// An ERROR at start when `data_dir` has less free space than `min_free_mb`.
fn warn_if_short_of_space(config: &Config) {
    let Ok(stat) = rustix::fs::statvfs(&config.data_dir) else { return };
    let free_mb = stat.f_bavail.saturating_mul(stat.f_frsize) >> 20;
    if free_mb < config.min_free_mb {
        tracing::error!(
            data_dir = %config.data_dir.display(),
            free_mb,
            min_free_mb = config.min_free_mb,
            "little free space for the store: once the disk is full no batch is acknowledged (the agents keep \
             their buckets and retry) and /healthz answers 503"
        );
    }
}

/// SIGHUP reads the HTTPS certificate and key again (an error leaves the previous pair); without
/// HTTPS there is nothing to read.
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    certificate: Option<Arc<crate::net::https::Certificate>>,
) {
    while hangups.recv().await.is_some() {
        match certificate.as_deref().map(crate::net::https::Certificate::reload) {
            None => tracing::info!("SIGHUP: nothing to reload (no http_tls_cert)"),
            Some(Ok(fingerprint)) => tracing::info!(%fingerprint, "SIGHUP: HTTPS certificate reloaded"),
            Some(Err(e)) => {
                tracing::error!(error = %e, "SIGHUP: the HTTPS certificate was not reloaded; the previous one is served")
            }
        }
    }
}

/// Says at start when bearer tokens from other machines will be refused: plain HTTP on an
/// address beyond loopback, with no TLS proxy named and no explicit permission.
fn warn_if_tokens_refused(config: &Config) {
    let exposure = &config.exposure;
    if config.http_tls.is_none()
        && !config.http_listen.ip().is_loopback()
        && exposure.trusted_proxies.is_empty()
        && !exposure.allow_plaintext_tokens
    {
        tracing::warn!(
            http = %config.http_listen,
            "plain HTTP beyond loopback: API tokens and console sign-ins from other machines are refused (403); \
             set http_tls_cert and http_tls_key, name a TLS proxy in trusted_proxies, or allow_plaintext_tokens"
        );
    }
}
