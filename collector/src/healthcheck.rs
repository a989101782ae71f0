//! `tally-collector healthcheck`: asks a running `serve` for `/healthz`, for a container's or
//! Kubernetes' probe, which has no curl in the image. Healthy is an answer of 200 (the store can
//! write); anything else is a reason. Over HTTPS the collector must present the very certificate
//! its `http_tls_cert` names (after the files change, until a SIGHUP reloads them, it does not).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};

/// How long the probe waits for the whole answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The URL probed when none is given: `/healthz` on `http_listen` (https:// with `tls`), through
/// loopback when it listens on every address.
pub fn default_url(http_listen: SocketAddr, tls: bool) -> String {
    let ip = match http_listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}/healthz", SocketAddr::new(ip, http_listen.port()))
}

/// The collector's own word on its health when it is healthy; otherwise why not. A base URL
/// (`http://host:8080`) is probed at its `/healthz`. An https:// URL needs `pinned`: the
/// certificate the collector must present.
pub async fn probe(url: &str, pinned: Option<CertificateDer<'static>>) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let (url, uri) = match uri.path() {
        "" | "/" if uri.query().is_none() => {
            let url = format!("{}/healthz", url.trim_end_matches('/'));
            let uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
            (url, uri)
        }
        _ => (url.to_owned(), uri),
    };
    let url = url.as_str();
    let tls = match (uri.scheme_str(), pinned) {
        (Some("http"), _) => None,
        (Some("https"), Some(certificate)) => Some(certificate),
        (Some("https"), None) => return Err(format!("{url}: https:// is probed only with http_tls_cert configured")),
        _ => return Err(format!("{url}: only http:// and https:// URLs are probed")),
    };
    let authority = uri.authority().ok_or_else(|| format!("{url}: no host"))?.clone();
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = authority.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
    let address = format!("{}:{port}", authority.host());
    let request = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(&address).await.map_err(|e| format!("{address}: {e}"))?;
        let response = match tls {
            None => send(stream, request).await,
            Some(certificate) => {
                let name = ServerName::try_from(host).map_err(|e| format!("{url}: {e}"))?;
                let stream = tls_connector(certificate)
                    .map_err(|e| e.to_string())?
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("{address}: {e}"))?;
                send(stream, request).await
            }
        }
        .map_err(|e| format!("{address}: {e}"))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| format!("{address}: {e}"))?.to_bytes();
        let body = String::from_utf8_lossy(&body).trim().to_owned();
        match status {
            hyper::StatusCode::OK => Ok(body),
            hyper::StatusCode::NOT_FOUND if uri.path() != "/healthz" => {
                Err(format!("{url} answered {status}: the collector's health is at /healthz (or give its base URL)"))
            }
            _ => Err(format!("{url} answered {status}: {body}")),
        }
    };
    tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| format!("{url}: no answer in {} s", TIMEOUT.as_secs()))?
}

/// Sends `request` over `io` (HTTP/1.1) and returns the answer's head and body stream.
async fn send<I>(io: I, request: hyper::Request<Empty<Bytes>>) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    sender.send_request(request).await.map_err(|e| e.to_string())
}

fn tls_connector(certificate: CertificateDer<'static>) -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Pinned { certificate, provider: provider.clone() });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(tls)))
}

/// Trusts exactly one certificate: the collector's own, as its configuration names it. The name
/// it covers does not matter (the probe reaches it through loopback); its key's signatures do.
#[derive(Debug)]
struct Pinned {
    certificate: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.certificate.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the collector presents another certificate than http_tls_cert's (changed files not reloaded: send \
                 SIGHUP)"
                    .into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
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
