//! The collector's own certificate authority: it signs the certificate of every enrolled socket
//! (client authentication) and the collector's QUIC server certificate. Agents pin it by the
//! SHA-256 fingerprint of its certificate, which every enrollment token carries.
//!
//! Files, in `ca_dir` (`DATA_DIR/ca/` by default): `ca.pem` (the certificate) and `ca.key` (its
//! private key, mode 0600). Created on first start or by `tally-collector ca init`; never
//! overwritten. Collectors sharing one PostgreSQL store share one CA (R30): made once by `ca
//! init`, given to each as a mounted secret (`ca_dir`), never created by `serve`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber, date_time_ymd,
};

use crate::digest::{NoRandomness, hex, random_bytes, sha256, sha256_hex};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error(transparent)]
    Random(#[from] NoRandomness),
}

/// The CA: its certificate and the issuer that signs with its key.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    endpoint_secret: [u8; 32],
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of every log.
        f.debug_struct("Ca").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA from `dir`, creating it first if it does not exist. Returns whether it was created.
    pub fn load_or_create(dir: &Path) -> Result<(Ca, bool), CaError> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if cert_path.exists() || key_path.exists() {
            return Ok((Ca::load(&cert_path, &key_path)?, false));
        }
        Ca::create(dir).map(|ca| (ca, true))
    }

    /// Loads the CA from `dir`, which must hold one: a CA shared by several collectors (R30) is
    /// made once, by `tally-collector ca init`, never by whichever collector starts first.
    pub fn load_existing(dir: &Path) -> Result<Ca, CaError> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if !cert_path.exists() && !key_path.exists() {
            let message = "no CA here: collectors sharing one database share one CA, made once with \
                           `tally-collector ca init` and mounted on every collector"
                .to_owned();
            return Err(CaError::Invalid { path: dir.to_owned(), message });
        }
        Ca::load(&cert_path, &key_path)
    }

    fn create(dir: &Path) -> Result<Ca, CaError> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CaError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "Tally collector CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key)?;
        write_new(&key_path, key.serialize_pem().as_bytes(), 0o600).map_err(io(&key_path))?;
        write_new(&cert_path, cert.pem().as_bytes(), 0o644).map_err(io(&cert_path))?;
        Ca::load(&cert_path, &key_path)
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Ca, CaError> {
        let read =
            |path: &Path| std::fs::read_to_string(path).map_err(|source| CaError::Io { path: path.to_owned(), source });
        let (cert_pem, key_pem) = (read(cert_path)?, read(key_path)?);
        let invalid =
            |path: &Path, e: &dyn std::fmt::Display| CaError::Invalid { path: path.to_owned(), message: e.to_string() };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(key_path, &e))?;
        let endpoint_secret = sha256(&[b"tally QUIC endpoint".as_slice(), &key.serialize_der()].concat());
        let cert_der = pem_der(&cert_pem).ok_or_else(|| invalid(cert_path, &"not a PEM certificate"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).map_err(|e| invalid(cert_path, &e))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            let message =
                format!("not the key of {} (the certificate and the key are of two CAs)", cert_path.display());
            return Err(CaError::Invalid { path: key_path.to_owned(), message });
        }
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| invalid(cert_path, &e))?;
        Ok(Ca { cert_pem, cert_der, issuer, endpoint_secret })
    }

    /// The SHA-256 of the CA certificate (DER), in lowercase hex: what enrollment tokens carry.
    pub fn fingerprint(&self) -> String {
        sha256_hex(&self.cert_der)
    }

    /// The QUIC endpoint's settings that must survive a restart, keyed by a secret derived from
    /// the CA key: connection ids it can recognise and the key of its stateless resets. A
    /// collector that restarted (even after a crash) then resets its predecessor's connections
    /// at once, instead of leaving every agent to its idle timeout.
    pub fn endpoint_config(&self) -> quinn::EndpointConfig {
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.endpoint_secret);
        let mut config = quinn::EndpointConfig::new(std::sync::Arc::new(reset_key));
        let cid_key = u64::from_le_bytes(sha256(&self.endpoint_secret)[..8].try_into().unwrap_or_default());
        config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
        config
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// A fresh certificate for the collector's QUIC endpoint, valid for `names` (DNS names or IP
    /// addresses), with its PKCS#8 key.
    pub fn server_certificate(&self, names: &[String]) -> Result<(Vec<u8>, Vec<u8>), CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, "Tally collector");
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.der().to_vec(), key.serialize_der()))
    }

    /// Signs a socket's certificate request for `site`: the subject is the site, whatever the
    /// request asked for; the serial is random. Returns the certificate (DER) and its serial (hex).
    pub fn sign_request(
        &self,
        request: CertificateRequest,
        site: &str,
        valid_until: NaiveDate,
    ) -> Result<(Vec<u8>, String), CaError> {
        let mut csr = request.0;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, site);
        params.serial_number = Some(SerialNumber::from_slice(&random_bytes(16)?));
        params.not_after = date_time_ymd(valid_until.year(), valid_until.month() as u8, valid_until.day() as u8);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        csr.params = params;
        let cert = csr.signed_by(&self.issuer)?;
        let der = cert.der().to_vec();
        Ok((der.clone(), serial_of(&der).ok_or(rcgen::Error::CouldNotParseCertificate)?))
    }
}

/// A socket's certificate request, parsed and its signature checked: read before an enrollment
/// token is spent, so a malformed request does not burn the token.
#[derive(Debug)]
pub struct CertificateRequest(CertificateSigningRequestParams);

impl CertificateRequest {
    pub fn from_der(csr_der: &[u8]) -> Result<CertificateRequest, CaError> {
        let der = rustls::pki_types::CertificateSigningRequestDer::from(csr_der);
        Ok(CertificateRequest(CertificateSigningRequestParams::from_der(&der)?))
    }
}

/// The serial number of a DER certificate, in lowercase hex; `None` if it does not parse.
pub fn serial_of(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(hex(cert.raw_serial()))
}

/// The DER inside a one-certificate PEM text.
fn pem_der(text: &str) -> Option<Vec<u8>> {
    pem::parse(text).ok().filter(|p| p.tag() == "CERTIFICATE").map(|p| p.into_contents())
}

/// Creates `path` with `mode`; fails if it exists.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_ca_is_created_once_with_a_private_key_and_a_stable_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, created) = Ca::load_or_create(dir.path()).unwrap();
        assert!(created);
        let mode = std::fs::metadata(dir.path().join("ca.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(ca.fingerprint().len(), 64);
        let (again, created) = Ca::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(again.fingerprint(), ca.fingerprint());
        assert!(!format!("{ca:?}").contains("PRIVATE"), "the key never reaches Debug");
    }

    #[test]
    fn a_damaged_ca_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        Ca::load_or_create(dir.path()).unwrap();
        std::fs::write(dir.path().join("ca.key"), "garbage").unwrap();
        let err = Ca::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ca.key"), "{err}");
    }
}
