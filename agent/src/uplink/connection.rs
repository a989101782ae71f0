//! One QUIC connection to a collector: the endpoint (TLS 1.3, ALPN, keep-alive), connecting to a
//! name's addresses in turn, framed messages each way, the greeting, and `doctor`'s probe.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tally_common::wire::frame::{DecodeError, decode, encode};
use tally_common::wire::{ALPN, AgentMessage, CollectorMessage, Hello, PROTOCOL_VERSION};

use super::{Identity, UplinkError};
use crate::clock::Clock;

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

/// A QUIC client endpoint with `tls`.
pub(super) fn endpoint(mut tls: rustls::ClientConfig) -> Result<quinn::Endpoint, UplinkError> {
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
pub(super) async fn open(
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

pub(super) async fn send(tx: &mut quinn::SendStream, message: &AgentMessage) -> Result<(), UplinkError> {
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
pub(super) async fn receive(rx: &mut quinn::RecvStream, buf: &mut Vec<u8>) -> Result<CollectorMessage, UplinkError> {
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

/// What a collector answers to `Hello`.
#[derive(Debug)]
pub struct Greeted {
    pub site: String,
    /// This socket's clock minus the collector's, in seconds (wire protocol 2 and later).
    pub clock_offset_s: Option<i64>,
    pub version: u16,
}

/// Says `Hello` and reads the collector's welcome.
pub(super) async fn greet(
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
