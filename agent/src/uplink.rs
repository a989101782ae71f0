//! The link to the collector: enrollment, then the uplink that ships closed buckets.
//!
//! Enrollment: the token names the collector CA's SHA-256 fingerprint; the agent generates its
//! key pair here (it never leaves the socket), connects without a certificate, trusts the
//! collector only if its chain carries a CA with that fingerprint, and sends a certificate
//! request with the token's secret. The answer's certificate, the key (mode 0600), the CA and the
//! collector's address are kept in `STATE_DIR/identity/`.
//!
//! Uplink: pending buckets leave the store only after the collector's ack (which it sends only
//! once they are committed), oldest first, in batches. Reconnects back off exponentially with
//! jitter from 1 s to about 5 min (each attempt bounded to 10 s); each failed attempt is logged
//! with its real delay, at WARN the first of an outage and at INFO after, so a field engineer
//! sees a line at least every 5 minutes while the collector is unreachable. The collector's policies
//! (R17) go to the enforcer, and its reports come back, on the same stream.
//!
//! Clocks (wire protocol 2): at each welcome the agent compares its wall clock with the
//! collector's and logs an ERROR when they differ by more than a minute; buckets the collector
//! refused for their time are kept in its quarantine, and the agent counts them (`status`) and
//! says so at ERROR once per run.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tally_common::bucket::Bucket;
use tally_common::enforcement::stamp;
use tally_common::lan::Mac;
use tally_common::time::rfc3339;
use tally_common::token::EnrollToken;
use tally_common::wire::frame::{DecodeError, decode, encode};
use tally_common::wire::lan::{LanAck, LanDevice, LanSightings, MAX_DEVICES_PER_BATCH, MAX_OWN_ADDRESSES};
use tally_common::wire::{
    ALPN, AckV2, AgentMessage, BucketBatch, CollectorList, CollectorMessage, EnrollRequest, ErrorCode, Hello,
    MAX_CLOCK_OFFSET, PROTOCOL_VERSION, Policy, PolicyApplied, StampedBatch, StampedBucket, WireBucket,
};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::route::Route;
use crate::status::{self, SharedStatus, UplinkStatus};
use crate::store::Store;

/// Buckets per batch: a day of one site.
pub const MAX_BATCH: usize = 288;
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The backoff doubles up to this; with the jitter and a connection attempt the agent logs a
/// line at least every 5 minutes while the collector stays unreachable.
const LAST_RETRY: Duration = Duration::from_secs(240);
/// An idle connection's keep-alive: often enough for NAT bindings (UDP mappings last 30 s and
/// more; RFC 4787 asks for 2 minutes), seldom enough that an idle socket wakes for it three
/// times a minute, not twelve. A collector that restarted is noticed at the next keep-alive or
/// batch (its stateless reset answers either).
const KEEP_ALIVE: Duration = Duration::from_secs(20);
/// No packet from the collector for this long and it is taken for gone: three keep-alives
/// lost in a row. The collector's own is the same.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one connection attempt may take (QUIC would otherwise wait out its idle timeout, and
/// a "retrying in 1 s" would really mean 30 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("collector {0} unreachable: {1}")]
    Unreachable(String, String),
    #[error("the collector refused: {explanation} ({message})")]
    Refused { code: ErrorCode, explanation: &'static str, message: String },
    #[error("the collector closed the connection: {0}")]
    Closed(String),
    #[error("the collector sent something this agent cannot read")]
    Garbled,
    #[error("{0}")]
    Local(String),
}

/// What enrollment leaves in the state directory.
#[derive(Clone)]
pub struct Identity {
    pub site: String,
    /// The collectors this socket may use, `HOST:PORT` each (R30): the one it enrolled with,
    /// until a collector tells it the fleet's. Kept in the `collector` file, one a line.
    pub collectors: Vec<String>,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
    pub ca_der: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("site", &self.site)
            .field("collectors", &self.collectors)
            .finish_non_exhaustive()
    }
}

impl Identity {
    fn dir(state_dir: &Path) -> PathBuf {
        state_dir.join("identity")
    }

    /// The identity saved by `enroll`, if any, checked: every file there and readable, the
    /// certificates and the key parse, and the key is the certificate's. An error names the file
    /// and says to enroll again.
    pub fn load(state_dir: &Path) -> Result<Option<Identity>, String> {
        let dir = Identity::dir(state_dir);
        const FILES: [&str; 5] = ["collector", "site", "client.der", "client.key", "ca.der"];
        if !FILES.iter().any(|name| dir.join(name).exists()) {
            return Ok(None);
        }
        let bad = |name: &str, why: String| {
            format!("{}: {why}; enroll again with `tally-agent enroll`", dir.join(name).display())
        };
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => bad(name, "missing".into()),
                _ => bad(name, e.to_string()),
            })
        };
        let text = |name: &str| -> Result<String, String> {
            let text = String::from_utf8(read(name)?).map_err(|_| bad(name, "not text".into()))?;
            let text = text.trim().to_owned();
            if text.is_empty() { Err(bad(name, "empty".into())) } else { Ok(text) }
        };
        let collectors: Vec<String> = text("collector")?.lines().map(|l| l.trim().to_owned()).collect();
        if let Some(bad_address) = collectors.iter().find(|a| !tally_common::wire::is_host_port(a)) {
            return Err(bad("collector", format!("{bad_address:?} is not HOST:PORT")));
        }
        let identity = Identity {
            site: text("site")?,
            collectors,
            cert_der: read("client.der")?,
            key_der: read("client.key")?,
            ca_der: read("ca.der")?,
        };
        rustls::RootCertStore::empty()
            .add(CertificateDer::from(identity.ca_der.clone()))
            .map_err(|e| bad("ca.der", format!("not the collector's CA certificate ({e})")))?;
        rcgen::KeyPair::try_from(identity.key_der.as_slice())
            .map_err(|e| bad("client.key", format!("not a PKCS#8 private key ({e})")))?;
        identity.client_config().map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => bad("client.key", "not the key of client.der".into()),
            e => bad("client.der", format!("not this socket's certificate ({e})")),
        })?;
        Ok(Some(identity))
    }

    /// The TLS configuration of the uplink: the collector's CA, this socket's certificate.
    fn client_config(&self) -> Result<rustls::ClientConfig, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(self.ca_der.clone()))?;
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from(self.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
    }

    fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let dir = Identity::dir(state_dir);
        crate::store::private_dir(&dir)?;
        let write = |name: &str, bytes: &[u8], mode: u32| -> std::io::Result<()> {
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
            file.write_all(bytes)?;
            file.sync_all()
        };
        write("client.key", &self.key_der, 0o600)?;
        write("client.der", &self.cert_der, 0o644)?;
        write("ca.der", &self.ca_der, 0o644)?;
        write("site", self.site.as_bytes(), 0o644)?;
        save_collectors(state_dir, &self.collectors)
    }
}

/// Replaces the identity's list of collectors (the `collector` file) whole: written aside,
/// synced, then renamed over the old one, so a power cut leaves one list or the other.
fn save_collectors(state_dir: &Path, collectors: &[String]) -> std::io::Result<()> {
    let dir = Identity::dir(state_dir);
    let new = dir.join("collector.new");
    let _ = std::fs::remove_file(&new);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o644).open(&new)?;
    file.write_all(format!("{}\n", collectors.join("\n")).as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&new, dir.join("collector"))?;
    std::fs::File::open(&dir)?.sync_all()
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Trusts a server whose chain carries the CA with the token's fingerprint, and nothing else.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mismatch = || {
            rustls::Error::General(format!(
                "the collector's CA does not match the token's fingerprint {}: wrong collector, or a forged token",
                self.fingerprint
            ))
        };
        let ca = intermediates.iter().find(|c| sha256_hex(c) == self.fingerprint).ok_or_else(mismatch)?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|_| mismatch())?;
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A QUIC client endpoint with `tls`.
fn endpoint(mut tls: rustls::ClientConfig) -> Result<quinn::Endpoint, UplinkError> {
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| UplinkError::Local(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    transport.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().map_err(|e| UplinkError::Local(format!("{e}")))?));
    config.transport_config(Arc::new(transport));
    let bind: SocketAddr = ([0, 0, 0, 0], 0).into();
    let socket = std::net::UdpSocket::bind(bind).map_err(|e| UplinkError::Local(e.to_string()))?;
    let runtime = Arc::new(crate::timer::QuinnRuntime);
    let mut endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
        .map_err(|e| UplinkError::Local(e.to_string()))?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Connects to `collector` (`HOST:PORT`) and opens the protocol's stream; a name with several
/// addresses is connected at the one `attempt` picks.
async fn open(
    endpoint: &quinn::Endpoint,
    collector: &str,
    attempt: usize,
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), UplinkError> {
    let unreachable = |e: &dyn std::fmt::Display| UplinkError::Unreachable(collector.to_owned(), e.to_string());
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(collector).await.map_err(|e| unreachable(&e))?.collect();
    let addr = *addrs.get(attempt % addrs.len().max(1)).ok_or_else(|| unreachable(&"no address"))?;
    let host = collector.rsplit_once(':').map_or(collector, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    let connecting = endpoint.connect(addr, host).map_err(|e| unreachable(&e))?;
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| unreachable(&format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))?
        .map_err(|e| unreachable(&e))?;
    let (tx, rx) = conn.open_bi().await.map_err(|e| unreachable(&e))?;
    Ok((conn, tx, rx))
}

async fn send(tx: &mut quinn::SendStream, message: &AgentMessage) -> Result<(), UplinkError> {
    let bytes = encode(message).map_err(|e| UplinkError::Local(e.to_string()))?;
    tx.write_all(&bytes).await.map_err(|e| match e {
        quinn::WriteError::ConnectionLost(lost) => lost_connection(lost),
        other => UplinkError::Closed(other.to_string()),
    })
}

/// Why the connection ended, in a field engineer's words.
fn lost_connection(e: quinn::ConnectionError) -> UplinkError {
    UplinkError::Closed(match e {
        quinn::ConnectionError::Reset => "the collector restarted and no longer knows this connection".into(),
        quinn::ConnectionError::TimedOut => format!("no answer from the collector for {} s", IDLE_TIMEOUT.as_secs()),
        other => other.to_string(),
    })
}

/// The collector's next message; its `Error` messages become `Refused`.
async fn receive(rx: &mut quinn::RecvStream, buf: &mut Vec<u8>) -> Result<CollectorMessage, UplinkError> {
    loop {
        match decode::<CollectorMessage>(buf) {
            Ok((CollectorMessage::Error(e), _)) => {
                return Err(UplinkError::Refused {
                    code: e.code,
                    explanation: e.code.explanation(),
                    message: e.message,
                });
            }
            Ok((message, used)) => {
                buf.drain(..used);
                return Ok(message);
            }
            Err(DecodeError::Incomplete { .. }) => {}
            Err(_) => return Err(UplinkError::Garbled),
        }
        let mut chunk = [0u8; 16 * 1024];
        match rx.read(&mut chunk).await {
            Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(None) => return Err(UplinkError::Closed("end of stream".into())),
            Err(quinn::ReadError::ConnectionLost(lost)) => return Err(lost_connection(lost)),
            Err(e) => return Err(UplinkError::Closed(e.to_string())),
        }
    }
}

/// `tally-agent enroll`: obtains this socket's certificate and saves the identity.
pub async fn enroll(state_dir: &Path, collector: &str, token: &EnrollToken) -> Result<Identity, UplinkError> {
    let local = |e: &dyn std::fmt::Display| UplinkError::Local(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(|e| local(&e))?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .map_err(|e| local(&e))?;
    let provider = provider();
    let verifier = PinnedCa { fingerprint: token.ca_fingerprint.clone(), provider: provider.clone() };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| local(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let endpoint = endpoint(tls)?;
    let (_conn, mut tx, mut rx) = open(&endpoint, collector, 0).await?;
    let request = EnrollRequest {
        protocol_version: PROTOCOL_VERSION,
        token_secret: token.secret.clone(),
        csr_der: csr.der().to_vec(),
    };
    send(&mut tx, &AgentMessage::Enroll(request)).await?;
    let mut buf = Vec::new();
    let enrolled = match receive(&mut rx, &mut buf).await? {
        CollectorMessage::Enrolled(e) => e,
        _ => return Err(UplinkError::Garbled),
    };
    if sha256_hex(&enrolled.ca_der) != token.ca_fingerprint {
        return Err(UplinkError::Local("the CA the collector sent does not match the token's fingerprint".into()));
    }
    let mut collectors = vec![collector.to_owned()];
    // A version-3 collector follows with the collectors this socket may use (R30).
    if let Ok(Ok(CollectorMessage::Collectors(list))) =
        tokio::time::timeout(Duration::from_secs(2), receive(&mut rx, &mut buf)).await
        && list.is_valid()
    {
        collectors = list.addresses;
    }
    let identity = Identity {
        site: enrolled.site,
        collectors,
        cert_der: enrolled.cert_der,
        key_der: key.serialize_der(),
        ca_der: enrolled.ca_der,
    };
    identity.save(state_dir).map_err(|e| local(&e))?;
    endpoint.close(0u32.into(), b"enrolled");
    Ok(identity)
}

/// What the uplink shares with the rest of the agent, all on one thread.
#[derive(Debug)]
pub struct Link {
    /// Where the identity is kept: the list of collectors is updated there.
    pub state_dir: PathBuf,
    pub store: Rc<RefCell<Store>>,
    pub status: SharedStatus,
    /// Woken when buckets close.
    pub closed: Rc<tokio::sync::Notify>,
    /// Policies from the collector, for the enforcer.
    pub policies: watch::Sender<Option<Policy>>,
    /// The enforcer's reports, for the collector.
    pub reports: watch::Receiver<Option<PolicyApplied>>,
    /// The socket's own hardware addresses, sent with its LAN's devices (R29).
    pub own: Vec<Mac>,
}

/// What was sent and awaits its acknowledgement.
enum InFlight {
    Buckets(Vec<Bucket>),
    /// Devices of a LAN day from `offset` on; `last` when they are the day's last.
    Lan {
        day: NaiveDate,
        offset: usize,
        sent: usize,
        last: bool,
    },
}

/// A LAN day being sent in several batches: its day and the version its first batch was of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LanProgress {
    day: NaiveDate,
    version: u64,
    offset: usize,
}

/// Sends the next batch of the oldest LAN day the collector lacks (R29), if there is one.
async fn send_lan_day(
    tx: &mut quinn::SendStream,
    link: &Link,
    seq: &mut u64,
    progress: &mut Option<LanProgress>,
) -> Result<Option<InFlight>, UplinkError> {
    let local = |e: crate::store::StoreError| UplinkError::Local(e.to_string());
    let Some(kept) = link.store.borrow().unshipped_lan_day().map_err(local)? else { return Ok(None) };
    let day = kept.devices.day;
    let started = progress.filter(|p| p.day == day).unwrap_or(LanProgress { day, version: kept.version, offset: 0 });
    *progress = Some(started);
    let devices: Vec<LanDevice> = kept
        .devices
        .devices
        .iter()
        .skip(started.offset)
        .take(MAX_DEVICES_PER_BATCH)
        .map(|(mac, seen)| LanDevice { mac: *mac, first: seen.first, last: seen.last, via: seen.via })
        .collect();
    let sent = devices.len();
    *seq += 1;
    let own = link.own.iter().copied().take(MAX_OWN_ADDRESSES).collect();
    let batch = LanSightings { seq: *seq, day: day.to_epoch_days(), devices, own, over_limit: kept.devices.over_limit };
    send(tx, &AgentMessage::LanSightings(batch)).await?;
    let last = started.offset + sent >= kept.devices.devices.len();
    Ok(Some(InFlight::Lan { day, offset: started.offset, sent, last }))
}

/// Ships pending buckets until `shutdown`, reconnecting as needed; relays policies and reports.
pub async fn run(
    identity: Identity,
    mut link: Link,
    clock: &impl Clock,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), UplinkError> {
    let tls = identity.client_config().map_err(|e| UplinkError::Local(e.to_string()))?;
    let endpoint = endpoint(tls)?;
    let mut route = Route::new(&identity.site, identity.collectors.clone());
    let mut retry = FIRST_RETRY;
    let mut last_error = String::new();
    let mut seq = 0u64;
    let mut quarantine_told = false;
    // Since when the collector is unreachable (and on the wall clock), and how many attempts
    // failed since.
    let mut outage: Option<(tokio::time::Instant, String, u32)> = None;
    status::update(&link.status, |s| s.uplink = Some(UplinkStatus::enrolled(route.current(), "connecting")));
    tokio::pin!(shutdown);
    loop {
        let attempt = tokio::time::Instant::now();
        let session = session(&endpoint, &mut route, &mut link, clock, &mut seq, &mut retry, &mut quarantine_told);
        let error = tokio::select! {
            () = &mut shutdown => break,
            Err(e) = session => e,
        };
        if retry == FIRST_RETRY {
            // The session reached the collector (or this is the first attempt): a new outage.
            outage = None;
        }
        let attempted_at = rfc3339(clock.wall() - chrono::TimeDelta::from_std(attempt.elapsed()).unwrap_or_default());
        let (since, since_wall, failures) = outage.get_or_insert((attempt, attempted_at, 0));
        *failures += 1;
        let wait = jittered(retry, seq);
        let message = error.to_string();
        // Each retry with its real delay: the first of an outage (or a new reason) at WARN, the
        // others at INFO; at least one line every 5 minutes while unreachable.
        let (attempt_s, down_s, retry_in_s) = (attempt.elapsed().as_secs(), since.elapsed().as_secs(), wait.as_secs());
        let failed = route.current().to_owned();
        // The next attempt goes to the next collector (R30), after the same backoff.
        route.failed();
        let next = route.current();
        if message != last_error || *failures == 1 {
            tracing::warn!(collector = %failed, error = %message, attempt_s, retry_in_s, next = %next, "collector unreachable, retrying");
            last_error = message.clone();
        } else {
            tracing::info!(collector = %failed, error = %message, failures = *failures, down_s, attempt_s, retry_in_s, next = %next, "collector still unreachable, retrying");
        }
        let next_attempt_at = rfc3339(clock.wall() + chrono::TimeDelta::from_std(wait).unwrap_or_default());
        status::update(&link.status, |s| {
            let u = s.uplink.get_or_insert_with(|| UplinkStatus::enrolled(&failed, "unreachable"));
            u.collector = failed.clone();
            u.state = "unreachable".into();
            u.unreachable_since = Some(since_wall.clone());
            u.last_error = Some(message.clone());
            u.next_attempt_at = Some(next_attempt_at);
        });
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(wait) => {}
        }
        retry = (retry * 2).min(LAST_RETRY);
    }
    endpoint.close(0u32.into(), b"agent stopping");
    Ok(())
}

/// A list of collectors from the one connected (R30): kept, and saved with the identity, when
/// valid and new.
fn learn_collectors(route: &mut Route, state_dir: &Path, list: CollectorList) {
    if !list.is_valid() {
        tracing::warn!(addresses = list.addresses.len(), "the collector sent an invalid list of collectors: ignored");
        return;
    }
    if route.update(list.addresses) {
        let collectors = route.addresses().to_vec();
        match save_collectors(state_dir, &collectors) {
            Ok(()) => tracing::info!(collectors = %collectors.join(" "), "collectors this socket may use"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot save the list of collectors: using it until the agent restarts")
            }
        }
    }
}

/// `base` ± 20 %, spread by `salt` so sockets that lost the collector together do not return together.
fn jittered(base: Duration, salt: u64) -> Duration {
    let nanos =
        rustix::time::clock_gettime(rustix::time::ClockId::Monotonic).tv_nsec as u64 ^ salt.wrapping_mul(0x9e37_79b9);
    let permille = 800 + nanos % 401;
    base * permille as u32 / 1000
}

/// What a collector answers to `Hello`.
#[derive(Debug)]
pub struct Greeted {
    pub site: String,
    /// This socket's clock minus the collector's, in seconds (wire protocol 2 and later).
    pub clock_offset_s: Option<i64>,
    pub version: u16,
}

/// Says `Hello` and reads the collector's welcome.
async fn greet(
    tx: &mut quinn::SendStream,
    rx: &mut quinn::RecvStream,
    buf: &mut Vec<u8>,
    clock: &impl Clock,
) -> Result<Greeted, UplinkError> {
    let hello = Hello { protocol_version: PROTOCOL_VERSION, agent_version: crate::AGENT_VERSION.into() };
    send(tx, &AgentMessage::Hello(hello)).await?;
    match receive(rx, buf).await? {
        CollectorMessage::Welcome(w) => Ok(Greeted { site: w.site, clock_offset_s: None, version: 1 }),
        CollectorMessage::WelcomeV2(w) => Ok(Greeted {
            site: w.site,
            clock_offset_s: Some((clock.wall().timestamp_millis() - w.collector_time_ms) / 1000),
            version: w.protocol_version,
        }),
        _ => Err(UplinkError::Garbled),
    }
}

/// Connects to the identity's collectors in turn and greets the first that answers, for
/// `doctor`: which collector it was, and what it said.
pub async fn probe(identity: &Identity, clock: &impl Clock) -> Result<(String, Greeted), UplinkError> {
    let endpoint = endpoint(identity.client_config().map_err(|e| UplinkError::Local(e.to_string()))?)?;
    let mut last = UplinkError::Local("no collector to try".into());
    for collector in &identity.collectors {
        let greeted = async {
            let (conn, mut tx, mut rx) = open(&endpoint, collector, 0).await?;
            let greeted = greet(&mut tx, &mut rx, &mut Vec::new(), clock).await;
            conn.close(0u32.into(), b"doctor done");
            greeted
        };
        match greeted.await {
            Ok(greeted) => {
                endpoint.wait_idle().await;
                return Ok((collector.clone(), greeted));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// One connection: hello, then batches (one in flight at a time), policies and reports until
/// an error.
async fn session(
    endpoint: &quinn::Endpoint,
    route: &mut Route,
    link: &mut Link,
    clock: &impl Clock,
    seq: &mut u64,
    retry: &mut Duration,
    quarantine_told: &mut bool,
) -> Result<(), UplinkError> {
    let local = |e: crate::store::StoreError| UplinkError::Local(e.to_string());
    let (_conn, mut tx, mut rx) = open(endpoint, route.current(), route.attempt()).await?;
    let collector = route.current().to_owned();
    let mut buf = Vec::new();
    // A collector gets only the messages of the version it answers in.
    let Greeted { site, clock_offset_s, version } = greet(&mut tx, &mut rx, &mut buf, clock).await?;
    let (stamps, lan) = (version >= 2, version >= 4);
    *retry = FIRST_RETRY;
    let mut backlog = link.store.borrow().pending_count();
    tracing::info!(%collector, %site, backlog, clock_offset_s, "connected to the collector");
    if let Some(offset) = clock_offset_s.filter(|o| o.abs() > MAX_CLOCK_OFFSET.num_seconds()) {
        let way = if offset > 0 { "ahead of" } else { "behind" };
        tracing::error!(
            offset_s = offset,
            "this socket's clock is {} s {way} the collector's: the buckets it measures carry wrong times, and \
             the collector quarantines those it cannot place (not billed); fix the socket's time (NTP)",
            offset.abs()
        );
    }
    let quarantined = link.store.borrow().quarantined().map_err(local)?;
    status::update(&link.status, |s| {
        s.quarantined_buckets = quarantined;
        // One connected before makes this a reconnection.
        let reconnects = s.uplink.as_ref().filter(|u| u.connected_at.is_some()).map_or(0, |u| u.reconnects + 1);
        s.uplink = Some(UplinkStatus {
            connected_at: Some(rfc3339(clock.wall())),
            clock_offset_s,
            reconnects,
            ..UplinkStatus::enrolled(&collector, "connected")
        })
    });
    let mut replayed = 0usize;
    // The batch sent and not yet acknowledged.
    let mut in_flight: Option<InFlight> = None;
    let mut lan_progress: Option<LanProgress> = None;
    loop {
        if in_flight.is_none() {
            let (batch, discarded, applied) = {
                let store = link.store.borrow();
                let applied = if stamps { store.applied_policies().map_err(local)? } else { Vec::new() };
                (store.oldest_pending(MAX_BATCH).map_err(local)?, store.discards().map_err(local)?, applied)
            };
            if batch.is_empty() {
                if backlog > 0 && replayed >= backlog {
                    tracing::info!(buckets = replayed, "backlog replayed");
                }
                replayed = 0;
                backlog = 0;
                if lan {
                    in_flight = send_lan_day(&mut tx, link, seq, &mut lan_progress).await?;
                }
            } else {
                *seq += 1;
                let wire = batch.iter().copied().map(WireBucket::from);
                let message = if stamps {
                    let buckets = wire
                        .zip(&batch)
                        .map(|(bucket, b)| StampedBucket {
                            bucket,
                            policy_version: stamp(&applied, b.start.time(), b.start.end()),
                        })
                        .collect();
                    AgentMessage::StampedBuckets(StampedBatch { seq: *seq, buckets, discarded })
                } else {
                    AgentMessage::Buckets(BucketBatch { seq: *seq, buckets: wire.collect(), discarded })
                };
                send(&mut tx, &message).await?;
                in_flight = Some(InFlight::Buckets(batch));
            }
        }
        let ack = tokio::select! {
            message = receive(&mut rx, &mut buf) => match message? {
                CollectorMessage::Ack(ack) => Some(AckV2::from(ack)),
                CollectorMessage::AckV2(ack) => Some(ack),
                CollectorMessage::LanAck(ack) => {
                    if let Some(InFlight::Lan { day, offset, sent, last }) = in_flight.take_if(|_| ack.seq == *seq) {
                        lan_acknowledged(link, ack, day, offset + sent, last, &mut lan_progress, clock.wall().date_naive()).map_err(local)?;
                    }
                    None
                }
                CollectorMessage::Policy(policy) => {
                    tracing::info!(version = policy.version, cap_bps = policy.cap_bps, "policy received");
                    link.policies.send_replace(Some(policy));
                    None
                }
                CollectorMessage::Collectors(list) => {
                    learn_collectors(route, &link.state_dir, list);
                    None
                }
                _ => return Err(UplinkError::Garbled),
            },
            () = link.closed.notified(), if in_flight.is_none() => None,
            Ok(()) = link.reports.changed() => {
                let report = link.reports.borrow_and_update().clone();
                if let Some(report) = report {
                    send(&mut tx, &AgentMessage::PolicyApplied(report)).await?;
                }
                None
            }
        };
        let Some(ack) = ack.filter(|ack| ack.seq == *seq) else { continue };
        let Some(InFlight::Buckets(batch)) = in_flight.take_if(|f| matches!(f, InFlight::Buckets(_))) else { continue };
        for refused in &ack.refused {
            tracing::warn!(start = refused.start, reason = %refused.reason, "the collector refused a bucket");
        }
        if let Some(first) = ack.quarantined.first() {
            let buckets = ack.quarantined.len();
            link.store.borrow().count_quarantined(buckets as u64).map_err(local)?;
            let first_start = rfc3339(chrono::DateTime::from_timestamp(first.start, 0).unwrap_or_default());
            if !std::mem::replace(quarantine_told, true) {
                tracing::error!(
                    buckets, first = %first_start, reason = %first.reason, clock_offset_s,
                    "the collector quarantined buckets because of their time (this socket's clock): they are not \
                     billed until the operator accepts them; fix the socket's time (said once per run, `status` \
                     counts them)"
                );
            } else {
                tracing::debug!(buckets, first = %first_start, "the collector quarantined buckets");
            }
        }
        link.store.borrow_mut().delete_acknowledged(&batch).map_err(local)?;
        replayed += batch.len();
        tracing::debug!(seq = *seq, buckets = batch.len(), "batch acknowledged");
        let pending = status::pending(&link.store.borrow()).map_err(local)?;
        let quarantined = link.store.borrow().quarantined().map_err(local)?;
        status::update(&link.status, |s| {
            s.set_pending(pending);
            s.quarantined_buckets = quarantined;
            if let Some(u) = &mut s.uplink {
                u.last_ack = Some(rfc3339(chrono::Utc::now()));
            }
        });
    }
}

/// The collector has a LAN day's devices up to `through`: when they were the day's `last`, the
/// day is acknowledged as of the version its first batch was.
fn lan_acknowledged(
    link: &Link,
    ack: LanAck,
    day: NaiveDate,
    through: usize,
    last: bool,
    progress: &mut Option<LanProgress>,
    today: NaiveDate,
) -> Result<(), crate::store::StoreError> {
    if ack.refused > 0 {
        tracing::warn!(%day, refused = ack.refused, "the collector refused LAN devices (this socket's clock?)");
    }
    let Some(started) = progress.take().filter(|p| p.day == day) else { return Ok(()) };
    if last {
        tracing::debug!(%day, devices = through, "LAN devices acknowledged");
        link.store.borrow().lan_day_shipped(day, started.version, today)
    } else {
        *progress = Some(LanProgress { offset: through, ..started });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        let ca = rcgen::generate_simple_self_signed(vec!["collector CA".into()]).unwrap();
        let client = rcgen::generate_simple_self_signed(Vec::<String>::new()).unwrap();
        Identity {
            site: "hq".into(),
            collectors: vec!["collector.example:4433".into()],
            cert_der: client.cert.der().to_vec(),
            key_der: client.signing_key.serialize_der(),
            ca_der: ca.cert.der().to_vec(),
        }
    }

    /// Each way an identity can be damaged is reported by the file at fault, with what to do.
    #[test]
    fn a_damaged_identity_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = identity();
        good.save(dir.path()).unwrap();
        assert_eq!(Identity::load(dir.path()).unwrap().map(|i| i.site), Some("hq".into()));

        let other_key = rcgen::KeyPair::generate().unwrap().serialize_der();
        for (file, bytes, says) in [
            ("client.key", b"garbage".to_vec(), "client.key: not a PKCS#8 private key"),
            ("client.key", Vec::new(), "client.key: not a PKCS#8 private key"),
            ("client.key", other_key, "client.key: not the key of client.der"),
            ("client.der", b"garbage".to_vec(), "client.der: not this socket's certificate"),
            ("ca.der", b"garbage".to_vec(), "ca.der: not the collector's CA certificate"),
            ("site", Vec::new(), "site: empty"),
            ("collector", b"collector.example".to_vec(), "collector: \"collector.example\" is not HOST:PORT"),
        ] {
            good.save(dir.path()).unwrap();
            std::fs::write(dir.path().join("identity").join(file), bytes).unwrap();
            let error = Identity::load(dir.path()).unwrap_err();
            assert!(error.contains(says) && error.ends_with("enroll again with `tally-agent enroll`"), "{error}");
        }
        // The list of collectors is replaced whole (R30).
        save_collectors(dir.path(), &["c1.example:4433".into(), "[::1]:4433".into()]).unwrap();
        let loaded = Identity::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.collectors, ["c1.example:4433", "[::1]:4433"]);
        assert!(!dir.path().join("identity/collector.new").exists());
        // A file missing, the others there: not "not enrolled", but which file is missing.
        for file in ["client.der", "client.key"] {
            good.save(dir.path()).unwrap();
            std::fs::remove_file(dir.path().join("identity").join(file)).unwrap();
            let error = Identity::load(dir.path()).unwrap_err();
            assert!(error.contains(&format!("identity/{file}: missing; enroll again")), "{error}");
        }
        std::fs::remove_dir_all(dir.path().join("identity")).unwrap();
        assert!(Identity::load(dir.path()).unwrap().is_none(), "no identity at all: not enrolled");
    }
}
