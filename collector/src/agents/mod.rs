//! The sockets' agents: their QUIC listener (here), each measuring agent's session
//! (`connection`), the group commit, [`enrollment`] and the collector's [`ca`], what agents
//! sent that was not billed ([`unbilled`]), and which are connected or silent ([`presence`]).
//!
//! The listener: ALPN `tally/1`, TLS 1.3 with the collector's CA.
//!
//! A connection with a client certificate is a measuring agent: the site comes from the
//! certificate (its serial, looked up in the store; unknown or revoked is refused and logged),
//! never from a message. Its first frame is a `Hello`, answered in the protocol version it
//! states (1 or 2, see `tally_common::wire`); then batches of buckets, each checked bucket by
//! bucket, committed together with other connections' batches (group commit), and acknowledged
//! only after the commit. What a batch brings is stored whole ([`Intake`]): its sound buckets
//! billed, those refused for their time alone (the socket's clock) quarantined, its refusals
//! counted per site and reason, the agent's discard totals kept. A connection without a
//! certificate may only enroll.
//!
//! From version 4 the agent also sends the devices it saw on its LAN (R29), a day at a time,
//! each batch kept and then acknowledged ([`tally_common::wire::lan`]).
//!
//! The collector also sends the site's policy (R17): right after `Welcome`, and again whenever
//! it changes ([`crate::enforcement::push`]); the agent's `PolicyApplied` reports are stored per site.
//!
//! Bounds: `max_connections` agents with a certificate (over it: refused, they retry), their
//! own smaller pool for connections without one ([`ENROLLING_CONNECTIONS`]: enrollment is rare,
//! and such a connection never takes an agent's slot), a deadline for the handshake and another
//! for the first message ([`FIRST_MESSAGE_DEADLINE`]), so a client that connects and never
//! speaks holds nothing for long. One batch in flight per connection (the protocol is request /
//! ack), frames of at most 1 MiB, a bounded queue to the committer. What a peer sends can close
//! its own connection, never the collector.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tally_common::wire::{
    ALPN, AgentMessage, CollectorMessage, ErrorCode, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION, Welcome, WelcomeV2,
};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;

use crate::enforcement::push::{self, Board};
use crate::metrics::{self, Handshake};
use crate::store::Store;
use crate::throttle::Throttle;

pub mod ca;
mod connection;
pub mod enrollment;
mod frames;
mod group_commit;
pub mod presence;
pub mod unbilled;

use self::ca::Ca;
use self::connection::Agent;
use self::enrollment::enroll;
use self::frames::{Frames, refuse, send, tell_collectors};
use self::group_commit::{Pending, group_commit};
use self::presence::Presence;

/// The longest detail of an agent's policy report that is kept.
pub const MAX_REPORT_DETAIL: usize = 2_000;
/// How long an enrolled socket's certificate is valid.
pub const CERTIFICATE_YEARS: i64 = 10;

/// TLS handshakes run at once; more wait their turn, in arrival order (a waiting connection
/// costs about its first packet, a handshake far more).
pub const HANDSHAKES_AT_ONCE: usize = 8;
/// Connections waiting for their handshake: every agent and enrolling socket may wait at once
/// (a fleet reconnecting after an outage), and at least this many; more are refused (they retry).
pub const HANDSHAKE_QUEUE_MIN: usize = 4_096;
/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a connection may take to send its first message (`Hello` or `Enroll`).
pub const FIRST_MESSAGE_DEADLINE: Duration = Duration::from_secs(5);
/// Connections without a client certificate (sockets enrolling) at once.
pub const ENROLLING_CONNECTIONS: usize = 16;
/// Refusals at a limit, and failed commits, are logged at most this often, with their count.
pub(super) const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Ingest settings from the configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_bucket_bps: u64,
    /// Older buckets are refused as `TooOld` and quarantined (`max_bucket_age_days`).
    pub max_bucket_age: TimeDelta,
    /// A site without a bucket for this long is silent, counted in the log hourly
    /// (`silent_site_hours`).
    pub silent_after: TimeDelta,
    /// The collectors agents may use (R30), told to agents of version 3 and later.
    pub public_addresses: Vec<String>,
}

impl From<&crate::config::Config> for Limits {
    fn from(config: &crate::config::Config) -> Limits {
        Limits {
            max_connections: config.max_connections,
            max_bucket_bps: config.max_bucket_bps,
            max_bucket_age: config.max_bucket_age,
            silent_after: config.silent_after,
            public_addresses: config.public_addresses.clone(),
        }
    }
}

/// The QUIC socket's receive buffer. Agents reconnecting together after an outage send thousands
/// of handshake packets at once; the kernel's usual default (208 KiB) drops most of them, and
/// each drop costs an agent a retransmission timeout (1 s, then 2 s, 4 s...).
pub const UDP_RECEIVE_BUFFER: usize = 8 << 20;

/// The agents' QUIC endpoint on `addr`, with a server certificate from `ca` for `names`,
/// connection ids and stateless resets that survive restarts (see [`Ca::endpoint_config`]),
/// and a receive buffer of [`UDP_RECEIVE_BUFFER`] if the kernel allows it.
pub fn quic_endpoint(ca: &Ca, addr: std::net::SocketAddr, names: &[String]) -> anyhow::Result<quinn::Endpoint> {
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
    Ok(quinn::Endpoint::new(ca.endpoint_config(), Some(server_config(ca, names)?), socket, runtime)?)
}

/// The TLS configuration of the QUIC endpoint: TLS 1.3, ring, client certificates verified
/// against the CA when presented (enrolling agents have none yet).
pub fn server_config(ca: &Ca, names: &[String]) -> anyhow::Result<quinn::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.cert_der().to_vec()))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let (cert, key) = ca.server_certificate(names)?;
    let chain = vec![CertificateDer::from(cert), CertificateDer::from(ca.cert_der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(60).try_into()?));
    transport.max_concurrent_bidi_streams(1u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Accepts connections on `endpoint` until `shutdown`, then drains: stops accepting, lets the
/// committer finish what it holds, and waits for the endpoint to be idle.
pub async fn run<S: Store + 'static>(
    endpoint: quinn::Endpoint,
    store: Arc<S>,
    ca: Arc<Ca>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (commits, queue) = mpsc::channel::<Pending>(1024);
    let committer = tokio::spawn(group_commit(store.clone(), queue));
    let board = Arc::new(Board::default());
    let (stop_watching, watching_stopped) = oneshot::channel::<()>();
    let watcher = tokio::spawn(push::watch(store.clone(), board.clone(), async {
        let _ = watching_stopped.await;
    }));
    let slots = Arc::new(Slots::new(limits.max_connections));
    let presence = Arc::new(Presence::default());
    let (stop_keeping, keeping_stopped) = oneshot::channel::<()>();
    let keeper = tokio::spawn(presence::keep(store.clone(), presence.clone(), limits.silent_after, async {
        let _ = keeping_stopped.await;
    }));
    let shared = Arc::new(Shared { store, ca, board, presence, commits, limits });
    tokio::pin!(shutdown);
    loop {
        let incoming = tokio::select! {
            () = &mut shutdown => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let Ok(queued) = slots.queue.clone().try_acquire_owned() else {
            slots.refused("connections waiting for a handshake");
            metrics::get().handshake(Handshake::Refused);
            incoming.refuse();
            continue;
        };
        let (shared, slots) = (shared.clone(), slots.clone());
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let Ok(handshake) = slots.handshakes.clone().acquire_owned().await else { return };
            drop(queued);
            let conn = match tokio::time::timeout(HANDSHAKE_DEADLINE, incoming).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    metrics::get().handshake(Handshake::Failed);
                    return tracing::info!(%remote, error = %e, "handshake failed");
                }
                Err(_) => {
                    metrics::get().handshake(Handshake::TimedOut);
                    return tracing::info!(%remote, "handshake not completed in time: dropped");
                }
            };
            metrics::get().handshake(Handshake::Completed);
            drop(handshake);
            let serial = conn
                .peer_identity()
                .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
                .and_then(|chain| chain.first().and_then(|c| crate::agents::ca::serial_of(c)));
            let (pool, kind) = match serial {
                Some(_) => (&slots.agents, "agents"),
                None => (&slots.enrolling, "connections without a certificate"),
            };
            let Ok(_slot) = pool.clone().try_acquire_owned() else {
                slots.refused(kind);
                let message = format!("the collector is at its limit of {kind}: retry later");
                metrics::get().refused(ErrorCode::Overloaded);
                return conn.close(u32::from(ErrorCode::Overloaded).into(), message.as_bytes());
            };
            // Boxed: a connection waiting for its handshake holds a small task, not this one.
            Box::pin(serve_connection(conn, serial, shared)).await;
        });
    }
    endpoint.close(u32::from(ErrorCode::ShuttingDown).into(), b"collector shutting down");
    // The committer ends once every connection's copy of its queue is gone, and this one.
    drop(shared);
    let _ = stop_watching.send(());
    let _ = watcher.await;
    let _ = committer.await;
    endpoint.wait_idle().await;
    let _ = stop_keeping.send(());
    let _ = keeper.await;
}

/// The connection slots: connections waiting for a handshake, handshakes in progress, agents
/// (with a certificate), and connections without a certificate, each bounded on its own.
struct Slots {
    queue: Arc<Semaphore>,
    /// Fair: handshakes are served in arrival order.
    handshakes: Arc<Semaphore>,
    agents: Arc<Semaphore>,
    enrolling: Arc<Semaphore>,
    refusals: Throttle,
}

impl Slots {
    fn new(max_connections: usize) -> Slots {
        Slots {
            queue: Arc::new(Semaphore::new((max_connections + ENROLLING_CONNECTIONS).max(HANDSHAKE_QUEUE_MIN))),
            handshakes: Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE)),
            agents: Arc::new(Semaphore::new(max_connections)),
            enrolling: Arc::new(Semaphore::new(ENROLLING_CONNECTIONS)),
            refusals: Throttle::new(REFUSAL_LOG_INTERVAL),
        }
    }

    /// Counts a connection refused at the limit of `kind`; logs once per interval.
    fn refused(&self, kind: &str) {
        if let Some(refused) = self.refusals.hit() {
            tracing::warn!(refused, "connections refused at the limit of {kind} (logged at most once a minute)");
        }
    }
}

/// What every connection shares.
struct Shared<S> {
    store: Arc<S>,
    ca: Arc<Ca>,
    board: Arc<Board>,
    presence: Arc<Presence>,
    commits: mpsc::Sender<Pending>,
    limits: Limits,
}

async fn serve_connection<S: Store>(conn: quinn::Connection, serial: Option<String>, shared: Arc<Shared<S>>) {
    let Shared { store, ca, board, presence, commits, limits } = &*shared;
    let remote = conn.remote_address();
    let opening = async {
        let (tx, rx) = conn.accept_bi().await.ok()?;
        let mut frames = Frames { recv: rx, buf: Vec::new() };
        let first = frames.next().await;
        Some((tx, frames, first))
    };
    let (mut tx, mut frames, first) = match tokio::time::timeout(FIRST_MESSAGE_DEADLINE, opening).await {
        Ok(Some(opened)) => opened,
        Ok(None) => return,
        Err(_) => {
            tracing::debug!(%remote, "closed: no first message in time");
            let message = format!("no Hello or Enroll within {} s", FIRST_MESSAGE_DEADLINE.as_secs());
            return conn.close(u32::from(ErrorCode::ProtocolViolation).into(), message.as_bytes());
        }
    };
    let first = match first {
        Ok(Some(message)) => message,
        Ok(None) => return,
        Err(code) => return refuse(&conn, Some(&mut tx), code, "the first frame did not decode".into()).await,
    };
    match (serial, first) {
        (None, AgentMessage::Enroll(request)) => {
            enroll(&conn, &mut tx, &**store, ca, request, &limits.public_addresses).await
        }
        (None, _) => {
            let message = "this connection has no client certificate: enroll first".to_owned();
            refuse(&conn, Some(&mut tx), ErrorCode::UnknownCertificate, message).await
        }
        (Some(serial), AgentMessage::Hello(hello)) => {
            let site = match store.certificate(&serial).await {
                Ok(Some(cert)) if !cert.revoked => cert.site,
                Ok(Some(_)) => {
                    tracing::warn!(%remote, %serial, "connection refused: certificate revoked");
                    let message = format!("certificate {serial} was revoked");
                    return refuse(&conn, Some(&mut tx), ErrorCode::RevokedCertificate, message).await;
                }
                Ok(None) => {
                    tracing::warn!(%remote, %serial, "connection refused: certificate unknown");
                    let message = format!("certificate {serial} is unknown to this collector");
                    return refuse(&conn, Some(&mut tx), ErrorCode::UnknownCertificate, message).await;
                }
                Err(e) => return refuse(&conn, Some(&mut tx), ErrorCode::Internal, e.to_string()).await,
            };
            if hello.protocol_version < OLDEST_PROTOCOL_VERSION {
                let message = format!(
                    "protocol version {} is not supported; this collector speaks {OLDEST_PROTOCOL_VERSION} to \
                     {PROTOCOL_VERSION}",
                    hello.protocol_version
                );
                return refuse(&conn, Some(&mut tx), ErrorCode::UnsupportedVersion, message).await;
            }
            // A newer agent is answered in this collector's newest version, which it also speaks.
            let version = hello.protocol_version.min(PROTOCOL_VERSION);
            let span = tracing::info_span!("agent", %site, %remote);
            let welcome = if version == 1 {
                CollectorMessage::Welcome(Welcome { protocol_version: version, site: site.clone() })
            } else {
                let collector_time_ms = crate::clock::now().timestamp_millis();
                CollectorMessage::WelcomeV2(WelcomeV2 {
                    protocol_version: version,
                    site: site.clone(),
                    collector_time_ms,
                })
            };
            span.in_scope(|| tracing::info!(agent = %hello.agent_version, protocol = version, "agent connected"));
            if send(&mut tx, &welcome).await.is_err() {
                return;
            }
            if version >= 3 && tell_collectors(&mut tx, &limits.public_addresses).await.is_err() {
                return;
            }
            let _present = presence.enter(&site);
            let _connected = Connected::new();
            let agent = Agent {
                conn: &conn,
                tx: &mut tx,
                frames: &mut frames,
                site: &site,
                version,
                store: &**store,
                last_report: None,
            };
            agent.serve(board.subscribe(&site), commits, limits).instrument(span).await;
        }
        (Some(_), _) => {
            let message = "the first message must be Hello".to_owned();
            refuse(&conn, Some(&mut tx), ErrorCode::ProtocolViolation, message).await
        }
    }
}

/// Counts an agent in `agents_connected` while it lives.
struct Connected;

impl Connected {
    fn new() -> Connected {
        metrics::get().agents_connected.inc();
        Connected
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        metrics::get().agents_connected.dec();
    }
}
