//! A raw QUIC client of the ingest protocol, with or without a client certificate.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tally_common::wire::frame::{decode, encode};
use tally_common::wire::{ALPN, AgentMessage, CollectorMessage, EnrollRequest, Hello, PROTOCOL_VERSION};

/// A client identity: certificate and PKCS#8 key, both DER.
pub type Identity = (Vec<u8>, Vec<u8>);

/// A connection to the collector at `addr` (whose CA is `ca_der`) and its one stream.
pub async fn connect(
    addr: SocketAddr,
    ca_der: &[u8],
    identity: Option<&Identity>,
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec())).map_err(|e| e.to_string())?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut tls = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(cert.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.clone())),
            )
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint.connect(addr, "localhost").map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
    let (tx, rx) = conn.open_bi().await.map_err(|e| e.to_string())?;
    Ok((conn, tx, rx))
}

pub async fn send(tx: &mut quinn::SendStream, message: &AgentMessage) {
    tx.write_all(&encode(message).unwrap()).await.unwrap();
}

/// The next message, or `None` when the collector closed the stream or the connection.
pub async fn receive(rx: &mut quinn::RecvStream, buf: &mut Vec<u8>) -> Option<CollectorMessage> {
    receive_as(rx, buf).await
}

/// The next message decoded as `T` (an older version's messages, say).
pub async fn receive_as<T: serde::de::DeserializeOwned>(rx: &mut quinn::RecvStream, buf: &mut Vec<u8>) -> Option<T> {
    loop {
        if let Ok((message, used)) = decode::<T>(buf) {
            buf.drain(..used);
            return Some(message);
        }
        let mut chunk = [0u8; 4096];
        match rx.read(&mut chunk).await {
            Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// Enrolls with `token_secret` and a new key: the collector's answer, and the key (PKCS#8 DER).
pub async fn enroll(addr: SocketAddr, ca_der: &[u8], token_secret: &str) -> (Option<CollectorMessage>, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&key).unwrap();
    let (_conn, mut tx, mut rx) = connect(addr, ca_der, None).await.unwrap();
    let request = EnrollRequest {
        protocol_version: PROTOCOL_VERSION,
        token_secret: token_secret.into(),
        csr_der: csr.der().to_vec(),
    };
    send(&mut tx, &AgentMessage::Enroll(request)).await;
    (receive(&mut rx, &mut Vec::new()).await, key.serialize_der())
}

pub fn hello() -> AgentMessage {
    hello_in(PROTOCOL_VERSION)
}

pub fn hello_in(protocol_version: u16) -> AgentMessage {
    AgentMessage::Hello(Hello { protocol_version, agent_version: "test".into() })
}
