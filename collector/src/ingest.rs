//! QUIC ingest: the agents' connections, ALPN `tally/1`, TLS 1.3 with the collector's CA.
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
//! it changes ([`crate::policy`]); the agent's `PolicyApplied` reports are stored per site.
//!
//! Bounds: `max_connections` agents with a certificate (over it: refused, they retry), their
//! own smaller pool for connections without one ([`ENROLLING_CONNECTIONS`]: enrollment is rare,
//! and such a connection never takes an agent's slot), a deadline for the handshake and another
//! for the first message ([`FIRST_MESSAGE_DEADLINE`]), so a client that connects and never
//! speaks holds nothing for long. One batch in flight per connection (the protocol is request /
//! ack), frames of at most 1 MiB, a bounded queue to the committer. What a peer sends can close
//! its own connection, never the collector.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tally_common::lan::Mac;
use tally_common::wire::frame::{self, DecodeError};
use tally_common::wire::lan::{LanAck, LanBatchError, LanSightings};
use tally_common::wire::{
    ALPN, Ack, AckV2, AgentMessage, Bounds, Checked, CollectorList, CollectorMessage, EnrollRequest, Enrolled,
    ErrorCode, ErrorMessage, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION, Policy, PolicyApplied, RefusedBucket,
    StampedBatch, StampedBucket, Welcome, WelcomeV2,
};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::ca::{Ca, CertificateRequest};
use crate::digest::sha256_hex;
use crate::metrics::{self, Handshake};
use crate::policy::{self, Board};
use crate::presence::{self, Presence};
use crate::store::{Ingested, Intake, Measured, PolicyReport, SitePolicy, Store, StoreError};
use crate::throttle::Throttle;
use tracing::Instrument;

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
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
static COMMIT_FAILURES: Throttle = Throttle::new(REFUSAL_LOG_INTERVAL);

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

/// One batch waiting for the group commit.
struct Pending {
    intake: Intake,
    done: oneshot::Sender<Result<Ingested, StoreError>>,
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
    let watcher = tokio::spawn(policy::watch(store.clone(), board.clone(), async {
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
                .and_then(|chain| chain.first().and_then(|c| crate::ca::serial_of(c)));
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

/// Commits queued batches together: whatever is waiting when a commit starts goes into it.
async fn group_commit<S: Store>(store: Arc<S>, mut queue: mpsc::Receiver<Pending>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < 256 {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let intakes: Vec<Intake> = group.iter_mut().map(|p| std::mem::take(&mut p.intake)).collect();
        let started = Instant::now();
        let result = store.ingest(&intakes).await.map(|(_, outcomes)| outcomes);
        let metrics = metrics::get();
        metrics.group_commit_seconds.observe(started.elapsed().as_secs_f64());
        if result.is_ok() {
            let stored: usize = intakes.iter().map(|i| i.buckets.len()).sum();
            metrics.buckets_stored.inc_by(stored as u64);
        }
        if let Err(e) = &result
            && let Some(failed) = COMMIT_FAILURES.hit()
        {
            tracing::error!(
                error = %e,
                failed,
                "group commits failed: those batches are not acknowledged, the agents keep them and retry \
                 (logged at most once a minute)"
            );
        }
        for (k, pending) in group.into_iter().enumerate() {
            let _ = pending.done.send(result.as_ref().map(|outcomes| outcomes[k]).map_err(Clone::clone));
        }
    }
}

/// Reads frames from a QUIC stream.
struct Frames {
    recv: quinn::RecvStream,
    buf: Vec<u8>,
}

impl Frames {
    /// The next message; `Ok(None)` at the end of the stream.
    async fn next(&mut self) -> Result<Option<AgentMessage>, ErrorCode> {
        loop {
            match frame::decode::<AgentMessage>(&self.buf) {
                Ok((message, used)) => {
                    self.buf.drain(..used);
                    return Ok(Some(message));
                }
                Err(DecodeError::Incomplete { .. }) => {}
                Err(DecodeError::TooLarge { .. }) => return Err(ErrorCode::FrameTooLarge),
                Err(DecodeError::Invalid(_)) => return Err(ErrorCode::ProtocolViolation),
            }
            match self.recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => return Err(ErrorCode::ProtocolViolation),
                Err(_) => return Ok(None),
            }
        }
    }
}

async fn send(stream: &mut quinn::SendStream, message: &CollectorMessage) -> Result<(), ()> {
    let bytes = frame::encode(message).map_err(|_| ())?;
    stream.write_all(&bytes).await.map_err(|_| ())
}

/// Tells the peer why, then closes the connection with the same code.
async fn refuse(conn: &quinn::Connection, stream: Option<&mut quinn::SendStream>, code: ErrorCode, message: String) {
    metrics::get().refused(code);
    if let Some(stream) = stream {
        let _ = send(stream, &CollectorMessage::Error(ErrorMessage { code, message: message.clone() })).await;
        let _ = stream.finish();
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.stopped()).await;
    }
    conn.close(u32::from(code).into(), message.as_bytes());
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

/// A measuring agent's connection, after `Welcome`.
struct Agent<'a, S> {
    conn: &'a quinn::Connection,
    tx: &'a mut quinn::SendStream,
    frames: &'a mut Frames,
    site: &'a str,
    /// The protocol version spoken on this connection.
    version: u16,
    store: &'a S,
    /// The agent's last report on its policy (version, success, detail): the same one again is
    /// kept, not logged twice.
    last_report: Option<(u64, bool, String)>,
}

/// What the connection waits for.
enum Event {
    Frame(Result<Option<AgentMessage>, ErrorCode>),
    PolicyChanged,
}

impl<S: Store> Agent<'_, S> {
    /// Sends the site's policy, then ingests batches and pushes policy changes until the agent
    /// leaves or breaks the protocol.
    async fn serve(mut self, mut policy: policy::Subscription, commits: &mpsc::Sender<Pending>, limits: &Limits) {
        // Subscribed before reading, so no change can fall between the read and the subscription.
        let current = match self.store.policy(self.site).await {
            Ok(Some(current)) => current,
            Ok(None) => return self.refuse(ErrorCode::UnknownCertificate, "this site no longer exists".into()).await,
            Err(e) => return self.refuse(ErrorCode::Internal, e.to_string()).await,
        };
        let mut sent = current.version;
        if self.push(&current).await.is_err() {
            return;
        }
        loop {
            let event = tokio::select! {
                frame = self.frames.next() => Event::Frame(frame),
                Ok(()) = policy.changes.changed() => Event::PolicyChanged,
            };
            let batch = match event {
                Event::PolicyChanged => {
                    let changed = policy.changes.borrow_and_update().clone();
                    if let Some(changed) = changed.filter(|p| p.version > sent) {
                        sent = changed.version;
                        if self.push(&changed).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                Event::Frame(Ok(Some(AgentMessage::Buckets(batch)))) => StampedBatch::from(batch),
                Event::Frame(Ok(Some(AgentMessage::StampedBuckets(batch)))) => batch,
                Event::Frame(Ok(Some(AgentMessage::PolicyApplied(report)))) => {
                    self.record(report).await;
                    continue;
                }
                Event::Frame(Ok(Some(AgentMessage::LanSightings(sightings)))) if self.version >= 4 => {
                    if self.keep_lan_sightings(sightings, limits).await.is_err() {
                        return;
                    }
                    continue;
                }
                Event::Frame(Ok(Some(_))) => {
                    tracing::warn!("protocol violation: unexpected message after Hello");
                    return self.refuse(ErrorCode::ProtocolViolation, "unexpected message".into()).await;
                }
                Event::Frame(Ok(None)) => {
                    tracing::info!("agent disconnected");
                    return;
                }
                Event::Frame(Err(code)) => {
                    tracing::warn!(%code, "closing the connection: bad frame");
                    return self.refuse(code, "a frame from this agent could not be read".into()).await;
                }
            };
            if self.ingest(batch, commits, limits).await.is_err() {
                return;
            }
        }
    }

    async fn refuse(self, code: ErrorCode, message: String) {
        refuse(self.conn, Some(self.tx), code, message).await
    }

    async fn push(&mut self, policy: &SitePolicy) -> Result<(), ()> {
        tracing::info!(version = policy.version, cap_bps = policy.cap_bps, "policy sent");
        send(self.tx, &CollectorMessage::Policy(Policy { version: policy.version, cap_bps: policy.cap_bps })).await
    }

    /// Keeps the agent's report on its policy (its detail cut to [`MAX_REPORT_DETAIL`] characters),
    /// logged once per connection while it says the same.
    async fn record(&mut self, report: PolicyApplied) {
        let detail: String = report.detail.chars().take(MAX_REPORT_DETAIL).collect();
        let said = (report.version, report.ok, detail.clone());
        if self.last_report.as_ref() == Some(&said) {
            tracing::debug!(version = report.version, %detail, "the same policy report again");
        } else if report.ok {
            tracing::info!(version = report.version, %detail, "policy applied");
        } else {
            tracing::warn!(version = report.version, %detail, "the agent could not apply its policy");
        }
        self.last_report = Some(said);
        let report = PolicyReport { version: report.version, ok: report.ok, detail, at: crate::clock::now() };
        if let Err(e) = self.store.record_policy_report(self.site, &report).await {
            tracing::error!(error = %e, "the agent's policy report was not stored");
        }
    }

    /// Keeps one day's devices of the socket's LAN (R29) and acknowledges them. A day out of
    /// range (a wrong clock, or a backlog older than buckets are kept) is acknowledged as refused,
    /// so it never wedges the agent; a batch over the bounds ends the connection.
    async fn keep_lan_sightings(&mut self, sightings: LanSightings, limits: &Limits) -> Result<(), ()> {
        let seq = sightings.seq;
        let (day, devices, refused) = match sightings.check(crate::clock::now(), limits.max_bucket_age) {
            Ok(checked) => checked,
            Err(LanBatchError::OutOfRange(day)) => {
                tracing::warn!(%day, devices = sightings.devices.len(), "LAN devices refused: their day is out of range (the socket's clock?)");
                let refused = u32::try_from(sightings.devices.len()).unwrap_or(u32::MAX);
                return send(self.tx, &CollectorMessage::LanAck(LanAck { seq, refused })).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "protocol violation: a batch of LAN devices over the bounds");
                refuse(self.conn, Some(&mut *self.tx), ErrorCode::ProtocolViolation, e.to_string()).await;
                return Err(());
            }
        };
        let own: Vec<Mac> = sightings.own.iter().copied().filter(|mac| mac.is_device()).collect();
        match self.store.add_lan_sightings(self.site, day, &devices, &own).await {
            Ok(()) => {}
            Err(StoreError::Unavailable(why)) => {
                let message = format!("the LAN devices were not stored ({why}): retry later");
                refuse(self.conn, Some(&mut *self.tx), ErrorCode::StoreUnavailable, message).await;
                return Err(());
            }
            Err(e) => {
                tracing::error!(error = %e, "the LAN devices were not stored");
                refuse(self.conn, Some(&mut *self.tx), ErrorCode::Internal, "the store did not commit".into()).await;
                return Err(());
            }
        }
        if refused > 0 {
            tracing::warn!(%day, refused, "LAN devices refused: not a device's address, or seen outside their day");
        }
        tracing::debug!(%day, devices = devices.len(), over_limit = sightings.over_limit, "LAN devices stored");
        send(self.tx, &CollectorMessage::LanAck(LanAck { seq, refused })).await
    }

    /// Checks a batch bucket by bucket, commits what it brings, acknowledges. `Err`: the
    /// connection is over.
    async fn ingest(
        &mut self,
        batch: StampedBatch,
        commits: &mpsc::Sender<Pending>,
        limits: &Limits,
    ) -> Result<(), ()> {
        let bounds =
            Bounds { now: crate::clock::now(), max_age: limits.max_bucket_age, max_bps: limits.max_bucket_bps };
        let mut intake = Intake { site: self.site.to_owned(), discards: batch.discarded, ..Intake::default() };
        let mut refused = Vec::new();
        let metrics = metrics::get();
        metrics.buckets_received.inc_by(batch.buckets.len() as u64);
        for &StampedBucket { bucket: wire, policy_version } in &batch.buckets {
            match wire.check(&bounds) {
                Checked::Valid(bucket) => intake.buckets.push(Measured { bucket, policy_version }),
                Checked::WrongTime(bucket, reason) => intake.wrong_time.push((bucket, reason)),
                Checked::Invalid(reason) => {
                    metrics.bucket_refused(reason);
                    intake.refused.push(reason);
                    refused.push(RefusedBucket { start: wire.start, reason });
                }
            }
        }
        if let Some(first) = refused.first() {
            tracing::warn!(refused = refused.len(), first = ?first, "buckets refused");
        }
        if let Some((first, reason)) = intake.wrong_time.first() {
            let (buckets, offset_s) = (intake.wrong_time.len(), (first.start.time() - bounds.now).num_seconds());
            tracing::warn!(
                buckets, first = %first.start, %reason, offset_s,
                "buckets quarantined for their time: is the socket's clock wrong? (`site intake` shows them)"
            );
        }
        let wrong_time: Vec<RefusedBucket> = intake
            .wrong_time
            .iter()
            .map(|(b, reason)| RefusedBucket { start: b.start.unix(), reason: *reason })
            .collect();
        let (done, committed) = oneshot::channel();
        if commits.send(Pending { intake, done }).await.is_err() {
            refuse(self.conn, Some(&mut *self.tx), ErrorCode::ShuttingDown, "collector shutting down".into()).await;
            return Err(());
        }
        let ingested = match committed.await {
            Ok(Ok(ingested)) => ingested,
            Ok(Err(StoreError::Unavailable(why))) => {
                let message = format!("the batch was not stored ({why}): retry later");
                refuse(self.conn, Some(&mut *self.tx), ErrorCode::StoreUnavailable, message).await;
                return Err(());
            }
            _ => {
                refuse(self.conn, Some(&mut *self.tx), ErrorCode::Internal, "the store did not commit".into()).await;
                return Err(());
            }
        };
        let (first, last) =
            (batch.buckets.first().map(|b| b.bucket.start), batch.buckets.last().map(|b| b.bucket.start));
        tracing::debug!(seq = batch.seq, buckets = batch.buckets.len(), first, last, "batch committed");
        // A full quarantine keeps none of the rest: they are refused, and counted.
        let (quarantined, over) = wrong_time.split_at(ingested.quarantined);
        metrics.buckets_quarantined.inc_by(quarantined.len() as u64);
        over.iter().for_each(|r| metrics.bucket_refused(r.reason));
        refused.extend_from_slice(over);
        let ack = if self.version == 1 {
            let refused = refused
                .into_iter()
                .chain(quarantined.iter().copied())
                .map(|r| RefusedBucket { reason: r.reason.for_version(1), ..r })
                .collect();
            CollectorMessage::Ack(Ack { seq: batch.seq, refused })
        } else {
            CollectorMessage::AckV2(AckV2 { seq: batch.seq, refused, quarantined: quarantined.to_vec() })
        };
        send(self.tx, &ack).await
    }
}

/// Tells a version-3 agent the collectors it may use, when they are configured (R30).
async fn tell_collectors(tx: &mut quinn::SendStream, addresses: &[String]) -> Result<(), ()> {
    if addresses.is_empty() {
        return Ok(());
    }
    send(tx, &CollectorMessage::Collectors(CollectorList { addresses: addresses.to_vec() })).await.map_err(|_| ())
}

/// Redeems the token, signs the request for the token's site, records the certificate, and
/// tells the agent the collectors it may use (`addresses`).
async fn enroll<S: Store>(
    conn: &quinn::Connection,
    tx: &mut quinn::SendStream,
    store: &S,
    ca: &Ca,
    request: EnrollRequest,
    addresses: &[String],
) {
    let remote = conn.remote_address();
    let refused = |message: String| {
        tracing::warn!(%remote, %message, "enrollment refused");
        message
    };
    let csr = match CertificateRequest::from_der(&request.csr_der) {
        Ok(csr) => csr,
        Err(e) => {
            let message = refused(format!("the certificate request does not parse: {e}"));
            return refuse(conn, Some(tx), ErrorCode::EnrollmentRefused, message).await;
        }
    };
    let hash = sha256_hex(request.token_secret.as_bytes());
    let site = match store.redeem_enroll_token(&hash, crate::clock::now()).await {
        Ok(Ok(site)) => site,
        Ok(Err(why)) => {
            let message = refused(why.to_string());
            return refuse(conn, Some(tx), ErrorCode::EnrollmentRefused, message).await;
        }
        Err(e) => return refuse(conn, Some(tx), ErrorCode::Internal, e.to_string()).await,
    };
    let valid_until = (crate::clock::now() + TimeDelta::days(365 * CERTIFICATE_YEARS)).date_naive();
    let (cert_der, serial) = match ca.sign_request(csr, &site, valid_until) {
        Ok(signed) => signed,
        Err(e) => return refuse(conn, Some(tx), ErrorCode::Internal, format!("signing the certificate: {e}")).await,
    };
    let not_after = valid_until.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or_else(crate::clock::now);
    if let Err(e) = store.add_certificate(&serial, &site, not_after).await {
        return refuse(conn, Some(tx), ErrorCode::Internal, e.to_string()).await;
    }
    tracing::info!(%remote, %site, %serial, "socket enrolled");
    let answer = CollectorMessage::Enrolled(Enrolled { site, cert_der, ca_der: ca.cert_der().to_vec() });
    if send(tx, &answer).await.is_ok() && request.protocol_version >= 3 {
        let _ = tell_collectors(tx, addresses).await;
    }
    let _ = tx.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), tx.stopped()).await;
}
