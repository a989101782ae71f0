//! What enrollment leaves in `STATE_DIR/identity/`: the socket's certificate and key (mode 0600),
//! the collector's CA, the site, and the collectors this socket may use (R30), each file checked
//! when it is loaded.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::tls::provider;

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
    pub(super) fn client_config(&self) -> Result<rustls::ClientConfig, rustls::Error> {
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

    pub(super) fn save(&self, state_dir: &Path) -> std::io::Result<()> {
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
pub(super) fn save_collectors(state_dir: &Path, collectors: &[String]) -> std::io::Result<()> {
    let dir = Identity::dir(state_dir);
    let new = dir.join("collector.new");
    let _ = std::fs::remove_file(&new);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o644).open(&new)?;
    file.write_all(format!("{}\n", collectors.join("\n")).as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&new, dir.join("collector"))?;
    std::fs::File::open(&dir)?.sync_all()
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
