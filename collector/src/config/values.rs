//! How the values of keys that are more than a string or a number are read and checked: networks,
//! the HTTP listener's certificate, the database URL, addresses, secrets, the SMTP relay.

use std::net::SocketAddr;
use std::path::PathBuf;

use tally_common::config_file::Fields;

/// The SMTP relay that month-end e-mail goes through.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpRelay {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// User name and password.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for SmtpRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self.credentials.as_ref().map(|(user, _)| user);
        write!(f, "{}:{} ({:?}, user {user:?})", self.host, self.port, self.tls)
    }
}

/// How the connection to the SMTP relay is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP upgraded with STARTTLS; a relay that does not offer it is an error.
    StartTls,
    /// TLS from the first byte ("SMTPS").
    Tls,
    /// Plain SMTP.
    None,
}

/// `http_tls_cert` and `http_tls_key`: both or neither, and a pair that loads.
/// A list of addresses or networks (`10.0.0.0/8`) under `key`; empty when absent.
pub(super) fn networks(fields: &mut Fields, key: &str) -> Vec<ipnetwork::IpNetwork> {
    match fields.get(key) {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => {
            let parsed: Result<Vec<ipnetwork::IpNetwork>, String> = items
                .iter()
                .map(|i| {
                    let text = i.as_str().ok_or_else(|| i.to_string())?;
                    text.parse().map_err(|e| format!("{text:?} ({e})"))
                })
                .collect();
            parsed.unwrap_or_else(|bad| {
                fields.error(format!("{key}: expected addresses or networks (10.0.0.0/8), found {bad}"));
                Vec::new()
            })
        }
        Some(other) => {
            let found = other.to_string();
            fields.error(format!("{key}: expected a list of addresses or networks, found {found}"));
            Vec::new()
        }
    }
}

pub(super) fn http_tls(fields: &mut Fields) -> Option<(PathBuf, PathBuf)> {
    let named = |fields: &mut Fields, key: &str| fields.get(key).is_some().then(|| fields.path(key, ""));
    match (named(fields, "http_tls_cert"), named(fields, "http_tls_key")) {
        (None, None) => None,
        (Some(cert), Some(key)) => match crate::net::https::Certificate::load(&cert, &key) {
            Ok(_) => Some((cert, key)),
            Err(e) => {
                fields.error(format!("http_tls_cert, http_tls_key: {e}"));
                None
            }
        },
        (Some(_), None) => {
            fields.error("http_tls_key: required with http_tls_cert".to_owned());
            None
        }
        (None, Some(_)) => {
            fields.error("http_tls_cert: required with http_tls_key".to_owned());
            None
        }
    }
}

/// A PostgreSQL URL (`postgres://user@host:port/db`), as the store will connect to it.
pub(super) fn database_url(url: &str) -> Result<String, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!("{} is not a postgres:// URL", crate::store::postgres::redacted(url)));
    }
    url.parse::<sqlx::postgres::PgConnectOptions>()
        .map(|_| url.to_owned())
        .map_err(|e| format!("{}: {e}", crate::store::postgres::redacted(url)))
}

pub(super) fn address(fields: &mut Fields, key: &str, default: SocketAddr) -> SocketAddr {
    let value = fields.string(key, &default.to_string());
    value.parse().unwrap_or_else(|_| {
        fields.error(format!("{key}: {value:?} is not an address such as 127.0.0.1:8080"));
        default
    })
}

/// A token or key: at least 32 printable characters without spaces.
pub(super) fn secret(fields: &mut Fields, key: &str) -> Option<String> {
    match fields.get(key) {
        None => None,
        Some(toml::Value::String(t)) if t.len() >= 32 && t.bytes().all(|b| b.is_ascii_graphic()) => Some(t.clone()),
        Some(_) => {
            fields.error(format!("{key}: expected at least 32 printable characters without spaces"));
            None
        }
    }
}

/// `smtp`, `smtp_tls` and the credentials.
pub(super) fn smtp_relay(fields: &mut Fields) -> Option<SmtpRelay> {
    let mut text = |key: &str| match fields.get(key) {
        None => None,
        Some(toml::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(other) => {
            let found = other.to_string();
            fields.error(format!("{key}: expected a non-empty string, found {found}"));
            None
        }
    };
    let (relay, tls, username, password) =
        (text("smtp"), text("smtp_tls"), text("smtp_username"), text("smtp_password"));
    let tls = match tls.as_deref() {
        None | Some("starttls") => SmtpTls::StartTls,
        Some("tls") => SmtpTls::Tls,
        Some("none") => SmtpTls::None,
        Some(other) => {
            fields.error(format!("smtp_tls: expected \"starttls\", \"tls\" or \"none\", found {other:?}"));
            SmtpTls::StartTls
        }
    };
    let credentials = match (username, password) {
        (Some(user), Some(_)) if tls == SmtpTls::None => {
            fields.error(format!(
                "smtp_password: the password of {user:?} would cross the network in clear text with smtp_tls = \"none\""
            ));
            None
        }
        (Some(user), Some(password)) => Some((user, password)),
        (None, None) => None,
        _ => {
            fields.error("smtp_username, smtp_password: set both or neither".into());
            None
        }
    };
    let relay = relay?;
    match relay.rsplit_once(':').and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?))) {
        Some((host, port)) if !host.is_empty() => Some(SmtpRelay { host: host.to_owned(), port, tls, credentials }),
        _ => {
            fields.error(format!("smtp: expected HOST:PORT of an SMTP relay, found {relay:?}"));
            None
        }
    }
}
