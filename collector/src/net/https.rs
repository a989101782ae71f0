//! HTTPS on the HTTP listener, and what a request's transport allows.
//!
//! - [`Certificate`]: the listener's certificate and key (`http_tls_cert`, `http_tls_key`, PEM),
//!   read again on SIGHUP; a file that does not load leaves the previous pair in service.
//! - [`Exposure`]: whether a request reached the collector over HTTPS (this listener's TLS, or a
//!   proxy named in `trusted_proxies` saying `X-Forwarded-Proto: https`), which makes the
//!   console's cookie `Secure`; and whether it may carry a bearer token: over HTTPS, in clear
//!   only from loopback (the same machine), or anywhere when the operator says so
//!   (`allow_plaintext_tokens`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::http::{Extensions, HeaderMap};
use ipnetwork::IpNetwork;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificate the HTTP listener presents, with the files it is read from.
#[derive(Debug)]
pub struct Certificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificate {
    /// Reads the certificate chain and its key; the error names the file and what is wrong.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Certificate, String> {
        let current = RwLock::new(Arc::new(certified_key(cert_file, key_file)?));
        Ok(Certificate { cert_file: cert_file.to_owned(), key_file: key_file.to_owned(), current })
    }

    /// Reads the files again and serves them from the next handshake on; on an error the previous
    /// pair stays. Returns the new certificate's SHA-256 fingerprint.
    pub fn reload(&self) -> Result<String, String> {
        let fresh = Arc::new(certified_key(&self.cert_file, &self.key_file)?);
        let fingerprint = crate::digest::sha256_hex(fresh.end_entity_cert().map_err(|e| e.to_string())?);
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
        Ok(fingerprint)
    }

    /// The TLS acceptor of the HTTP listener (HTTP/1.1), serving the current pair.
    pub fn acceptor(self: Arc<Self>) -> Result<tokio_rustls::TlsAcceptor, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self);
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone())
    }
}

/// The chain of `cert_file` with the key of `key_file`, checked to belong together.
fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let chain = read_certificates(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("{}: no PEM private key in it ({e})", key_file.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| format!("{} and {}: {e}", cert_file.display(), key_file.display()))
}

/// The first certificate of `cert_file`: the one the listener presents (the health check pins it).
pub fn end_entity(cert_file: &Path) -> Result<CertificateDer<'static>, String> {
    Ok(read_certificates(cert_file)?.swap_remove(0))
}

/// The certificates of a PEM file; an error names what is wrong with it.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certificates)
}

/// How a connection reached the HTTP listener: `http::serve` puts it in each of its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub address: IpAddr,
    /// Over this listener's TLS.
    pub tls: bool,
}

/// Whom the collector believes about a request's scheme, and where tokens may travel in clear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exposure {
    /// Reverse proxies whose `X-Forwarded-Proto` is believed.
    pub trusted_proxies: Vec<IpNetwork>,
    /// Bearer tokens are read from plain HTTP beyond loopback too.
    pub allow_plaintext_tokens: bool,
}

/// How a request travelled to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Travel {
    Https,
    /// In clear, within this machine.
    ClearLoopback,
    /// In clear, over a network (or from an address not known).
    Clear,
}

impl Exposure {
    /// The request came over HTTPS (the console's cookie is then `Secure`).
    pub fn https(&self, headers: &HeaderMap, extensions: &Extensions) -> bool {
        self.travel(headers, extensions) == Travel::Https
    }

    /// Whether a bearer token (or the console's sign-in) may be read from this request; if not,
    /// what to do about it.
    pub fn token_allowed(&self, headers: &HeaderMap, extensions: &Extensions) -> Result<(), String> {
        match self.travel(headers, extensions) {
            Travel::Https | Travel::ClearLoopback => Ok(()),
            Travel::Clear if self.allow_plaintext_tokens => Ok(()),
            Travel::Clear => Err(format!(
                "a token sent over plain HTTP from {} is refused: it travelled in clear over a network. Use \
                 https:// (the collector's http_tls_cert, or a TLS proxy named in trusted_proxies), or let the \
                 operator allow it (allow_plaintext_tokens)",
                peer(extensions).map_or_else(|| "an unknown address".to_owned(), |p| p.address.to_string())
            )),
        }
    }

    /// The client's address: the peer's, or behind a trusted proxy the nearest address in
    /// `X-Forwarded-For` that is not a trusted proxy's.
    pub fn client(&self, headers: &HeaderMap, extensions: &Extensions) -> Option<std::net::IpAddr> {
        let peer = peer(extensions)?.address;
        let trusted = |ip: std::net::IpAddr| self.trusted_proxies.iter().any(|proxy| proxy.contains(ip));
        if !trusted(peer) {
            return Some(peer);
        }
        let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        let hops: Vec<std::net::IpAddr> =
            forwarded.flat_map(|v| v.split(',')).filter_map(|hop| hop.trim().parse().ok()).collect();
        Some(hops.into_iter().rev().find(|hop| !trusted(*hop)).unwrap_or(peer))
    }

    fn travel(&self, headers: &HeaderMap, extensions: &Extensions) -> Travel {
        let Some(peer) = peer(extensions) else { return Travel::Clear };
        if peer.tls {
            return Travel::Https;
        }
        if self.trusted_proxies.iter().any(|proxy| proxy.contains(peer.address)) {
            // The proxy's client is elsewhere: what it says is all there is. The first value is
            // the scheme of the proxy nearest the client.
            let proto = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("");
            let first = proto.split(',').next().unwrap_or("").trim();
            return if first.eq_ignore_ascii_case("https") { Travel::Https } else { Travel::Clear };
        }
        if peer.address.is_loopback() { Travel::ClearLoopback } else { Travel::Clear }
    }
}

fn peer(extensions: &Extensions) -> Option<Peer> {
    let peer = extensions.get::<Peer>().copied()?;
    // A listener on [::] sees IPv4 clients as ::ffff:a.b.c.d.
    Some(Peer { address: peer.address.to_canonical(), ..peer })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(address: &str, tls: bool, proto: Option<&str>) -> (HeaderMap, Extensions) {
        let mut headers = HeaderMap::new();
        if let Some(proto) = proto {
            headers.insert("x-forwarded-proto", proto.parse().unwrap());
        }
        let mut extensions = Extensions::new();
        extensions.insert(Peer { address: address.parse().unwrap(), tls });
        (headers, extensions)
    }

    #[test]
    fn tokens_travel_over_https_or_within_the_machine() {
        let strict = Exposure::default();
        let cases = [
            // (peer, its TLS, X-Forwarded-Proto, https, token allowed)
            ("10.0.0.5", true, None, true, true),
            ("127.0.0.1", false, None, false, true),
            ("::ffff:127.0.0.1", false, None, false, true),
            ("::1", false, None, false, true),
            ("10.0.0.5", false, None, false, false),
            // An untrusted peer's header is not believed.
            ("10.0.0.5", false, Some("https"), false, false),
        ];
        for (address, tls, proto, https, allowed) in cases {
            let (headers, extensions) = request(address, tls, proto);
            assert_eq!(strict.https(&headers, &extensions), https, "{address} {tls} {proto:?}");
            assert_eq!(strict.token_allowed(&headers, &extensions).is_ok(), allowed, "{address} {tls} {proto:?}");
        }
        let refused = strict.token_allowed(&request("10.0.0.5", false, None).0, &request("10.0.0.5", false, None).1);
        assert!(refused.unwrap_err().contains("from 10.0.0.5 is refused"));
        // No peer known: in clear, over a network.
        assert!(strict.token_allowed(&HeaderMap::new(), &Extensions::new()).is_err());
    }

    #[test]
    fn a_trusted_proxy_decides_by_its_forwarded_scheme() {
        let behind = Exposure {
            trusted_proxies: vec!["10.1.0.0/16".parse().unwrap(), "::1/128".parse().unwrap()],
            ..Exposure::default()
        };
        let cases = [
            ("10.1.2.3", Some("https"), true),
            ("10.1.2.3", Some("HTTPS, http"), true),
            ("10.1.2.3", Some("http"), false),
            ("10.1.2.3", None, false),
            // A proxy on loopback forwarding plain HTTP from a client elsewhere: in clear.
            ("::1", Some("http"), false),
            ("10.2.0.1", Some("https"), false),
        ];
        for (address, proto, https) in cases {
            let (headers, extensions) = request(address, false, proto);
            assert_eq!(behind.https(&headers, &extensions), https, "{address} {proto:?}");
            assert_eq!(behind.token_allowed(&headers, &extensions).is_ok(), https, "{address} {proto:?}");
        }
        let open = Exposure { allow_plaintext_tokens: true, ..behind };
        let (headers, extensions) = request("10.2.0.1", false, None);
        assert!(open.token_allowed(&headers, &extensions).is_ok() && !open.https(&headers, &extensions));
    }
}
