//! `tally-agent enroll`: the agent generates its key pair here (it never leaves the socket),
//! connects without a certificate, trusts the collector only if its chain carries a CA with the
//! token's fingerprint, and sends a certificate request with the token's secret.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tally_common::token::EnrollToken;
use tally_common::wire::{AgentMessage, CollectorMessage, EnrollRequest, PROTOCOL_VERSION};

use super::connection::{endpoint, open, receive, send};
use super::tls::{PinnedCa, provider, sha256_hex};
use super::{Identity, UplinkError};

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
