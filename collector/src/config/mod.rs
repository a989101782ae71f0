//! The collector's configuration file: parsed and validated before any port is bound, every
//! error reported at once (`tally-collector validate` exits 64 on any).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use tally_common::config_file::ConfigErrors;
use tally_common::config_file::{Fields, ValueKind, defaults, load};
use tally_common::time::MonthWindowSetting;

/// The commented example printed by `tally-collector default-config`; every value is the default.
pub const DEFAULT_CONFIG: &str = r#"# tally-collector configuration (TOML). Every key is optional; the values shown are the defaults.
# Every key can also be set by the environment, over this file: TALLY_ and the key in capitals
# (TALLY_HTTP_LISTEN=0.0.0.0:8080). A list is written with commas (TALLY_SERVER_NAMES=a,b).
# Without --config, /etc/tally/collector.toml is read if it exists.

# Where the embedded store (SQLite, tally.db) and the collector's CA live.
data_dir = "./tally-data"

# The store: PostgreSQL at this URL instead of the embedded SQLite file, for several collectors
# sharing one database. Move an existing store with
# `tally-collector migrate-store`.
# database_url = "postgres://tally@db.example:5432/tally"

# The collector's certificate authority (ca.pem, ca.key), by default data_dir/ca. Collectors
# sharing one database must share one CA, or agents enrolled on one are refused by the others:
# with database_url, set ca_dir to a directory every collector mounts (a secret), made once with
# `tally-collector ca init`.
# ca_dir = "/run/secrets/tally-ca"

# QUIC ingest from the agents (UDP), and the HTTP API with /healthz and the web console.
quic_listen = "0.0.0.0:4433"
http_listen = "127.0.0.1:8080"

# HTTPS on http_listen: a PEM certificate chain and its key, read again on SIGHUP (a pair that
# does not load leaves the previous one in service).
# http_tls_cert = "/etc/tally/tls/tls.crt"
# http_tls_key = "/etc/tally/tls/tls.key"
# Or behind a reverse proxy that terminates TLS: its addresses (or networks, 10.0.0.0/8), whose
# X-Forwarded-Proto is believed. The console's cookie is `Secure` when a request came over HTTPS.
# trusted_proxies = ["127.0.0.1"]
# Bearer tokens (the API's, and the console's sign-in) are refused when they travelled in clear
# over a network: over plain HTTP from anywhere but loopback. Only an operator who knows that
# network is private may allow it.
allow_plaintext_tokens = false
# Wrong tokens (the console's sign-in, the API's bearer tokens) one client address may present a
# minute; beyond, it is answered 429 until it may try again. Other addresses are not held back.
wrong_tokens_per_minute = 10

# Prometheus metrics (OpenMetrics text) at GET /metrics: on http_listen for an operator's token,
# and on this address without one (an address only the monitoring reaches).
# metrics_listen = "127.0.0.1:9464"

# Names and addresses the agents use to reach the QUIC endpoint: its certificate covers them.
server_names = ["localhost", "127.0.0.1", "::1"]

# The collectors agents may use, HOST:PORT each (or one name resolving to several): every
# collector sharing a database lists the same ones. Agents learn the list when they enroll and at
# every connection, and fail over along it. Their host names are covered by the certificate too.
# public_addresses = ["c1.example:4433", "c2.example:4433"]

# At most this many agent connections at once; more are refused and retry later.
max_connections = 10000

# The collector warns at start (ERROR) when its data_dir has less free space than this, in MiB:
# on a full disk no batch is acknowledged (the agents keep their buckets and retry).
min_free_mb = 256

# Sanity bound on a bucket's value, in bits per second: a bucket above it is refused and counted.
max_bucket_bps = 1000000000000

# A bucket older than this many days comes from a socket whose clock is wrong (an agent keeps
# its buckets 35 days): it is refused, counted and quarantined, not billed (`site intake`).
# import-buckets, the operator's deliberate act, is not bound by it.
max_bucket_age_days = 40

# Metered events (POST /v1/usage/events) are accepted back to the account's life start, at most
# this many days old (R33): an event of a finalized month is stored and counted as late, never
# billed; an older one is refused.
max_event_age_days = 62

# A site without a bucket for this many hours is silent: its traffic is not billed (a missing
# bucket counts as 0, R5). `serve` counts the silent sites at WARN once an hour.
silent_site_hours = 2

# An account's contract term when `account add` gives none: this many months from its creation
# (R27). Licenses made by orders and True-Forward increases end with the term in force.
default_contract_months = 12

# The hardware addresses of the devices sockets see on their LANs (R29) are personal data: they
# are kept for this many calendar months (this one included), then deleted; the finalized months'
# reports keep their counts.
lan_device_retention_months = 13

# The monthly P95 window (R7): "article" ends at 00:00 UTC on the month's last day, as the
# usage-measurement article says; "calendar" includes the last day.
month_window = "article"

# A month is finalized this long after both its window and its calendar month have ended (R9,
# R34; at most 744 = 31 days): until then late buckets still change it; then over-usage is
# evaluated and notified.
grace_hours = 72

# The bearer token of the HTTP API's operator (at least 32 characters). Without it, every /v1
# route answers 401.
# operator_token = "..."

# Month-end notifications (R15). Recipients are per account: `tally-collector account notify`.
# The SMTP relay (HOST:PORT) and how to reach it: "starttls" (upgrade, required), "tls" (TLS from
# the first byte, usually port 465) or "none" (plain SMTP, for a relay on the same host), with
# optional credentials (never sent without TLS), and the sender.
# smtp = "smtp.example.net:587"
smtp_tls = "starttls"
# smtp_username = "..."
# smtp_password = "..."
smtp_from = "tally@localhost"
# The key that signs webhooks (HMAC-SHA256, at least 32 characters). Webhooks are http:// or
# https:// URLs.
# webhook_secret = "..."
# Webhooks never go to this machine, a link-local address (the cloud's metadata service) or a
# private network (checked when added and at each delivery, after resolving the name), unless
# one of these networks holds the address.
# webhook_allowed_networks = ["10.20.0.0/16"]
# PEM certificates of authorities trusted beside the system's, for the SMTP relay and https
# webhooks (a private CA).
# notify_ca_file = "/etc/tally/notify-ca.pem"

# The console's address as customers reach it, for the links in notifications (an early
# warning links to the account's usage page). Without it, the links are paths (/accounts/...).
# console_url = "https://tally.example.net"

# Log filter, in RUST_LOG syntax.
log = "info"
"#;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub data_dir: PathBuf,
    /// PostgreSQL's URL; `None`: the embedded SQLite store in `data_dir`.
    pub database_url: Option<String>,
    /// The CA's directory, when not `data_dir/ca`.
    pub ca_dir: Option<PathBuf>,
    pub quic_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// Where `/metrics` is served without a token, beside `http_listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// HTTPS on `http_listen`: the certificate chain's file and the key's.
    pub http_tls: Option<(PathBuf, PathBuf)>,
    /// Whose word on a request's scheme is believed, and where tokens may travel in clear.
    pub exposure: crate::https::Exposure,
    pub server_names: Vec<String>,
    /// The collectors agents may use, `HOST:PORT` (R30); empty: agents keep the address they
    /// enrolled with.
    pub public_addresses: Vec<String>,
    pub max_connections: usize,
    pub max_bucket_bps: u64,
    pub max_bucket_age: chrono::TimeDelta,
    /// How old a metered event may be (R33).
    pub max_event_age: chrono::TimeDelta,
    pub silent_after: chrono::TimeDelta,
    pub default_contract_months: u32,
    /// Calendar months (this one included) the LAN devices' addresses are kept (R29).
    pub lan_device_retention_months: u32,
    pub min_free_mb: u64,
    pub month_window: MonthWindowSetting,
    pub grace: chrono::TimeDelta,
    pub operator_token: Option<String>,
    pub smtp: Option<SmtpRelay>,
    pub smtp_from: String,
    pub webhook_secret: Option<String>,
    /// Wrong tokens one client address may present a minute.
    pub wrong_tokens_per_minute: u32,
    /// Networks webhooks may reach though they are this machine's, link-local or private.
    pub webhook_allowed_networks: Vec<ipnetwork::IpNetwork>,
    pub notify_ca_file: Option<PathBuf>,
    /// Where customers reach the console (`https://host`), for links in notifications.
    pub console_url: Option<String>,
    pub log: String,
}

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

impl Default for Config {
    fn default() -> Self {
        defaults(DEFAULT_CONFIG, parse)
    }
}

impl Config {
    /// Reads and validates `path` (without one, the defaults), with the environment's
    /// `TALLY_<KEY>` variables over it.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let with_environment = |text: &str| parse_with(text, |name| std::env::var_os(name));
        let config = match path {
            Some(path) => load(path, with_environment)?,
            None => with_environment("")?,
        };
        let source = path.map_or_else(|| "configuration".to_owned(), |p| p.display().to_string());
        let mut errors: Vec<String> =
            config.data_dir_usable().err().map(|e| format!("data_dir: {e}")).into_iter().collect();
        if config.database_url.is_some() && config.ca_dir.is_none() {
            errors.push(
                "ca_dir: collectors sharing one database (database_url) must share one CA, or an agent enrolled \
                 on one is refused by the others: set ca_dir to a directory every collector mounts, made once \
                 with `tally-collector ca init`"
                    .to_owned(),
            );
        }
        match errors.is_empty() {
            true => Ok(config),
            false => Err(ConfigErrors { source, errors }),
        }
    }

    /// A warning when the file at `path` holds a secret (a token, a key, a password) and other
    /// users may read it, as ssh warns of a readable key.
    pub fn secrets_exposed(&self, path: &Path) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let has_secret = self.operator_token.is_some()
            || self.database_url.as_deref().is_some_and(|url| crate::store::postgres::redacted(url) != url)
            || self.webhook_secret.is_some()
            || self.smtp.as_ref().is_some_and(|relay| relay.credentials.is_some());
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (has_secret && mode & 0o077 != 0).then(|| {
            format!(
                "{} holds secrets and other users may read it (mode {:o}): chmod 600 {}",
                path.display(),
                mode & 0o777,
                path.display()
            )
        })
    }

    /// Whether `data_dir` is a directory, or can be created: a directory is made and removed in
    /// its nearest existing ancestor (root passes every permission check, and a file system may
    /// refuse what its modes allow: only trying tells).
    fn data_dir_usable(&self) -> Result<(), String> {
        let dir = &self.data_dir;
        let existing = dir.ancestors().find(|a| a.as_os_str().is_empty() || a.exists()).unwrap_or(dir);
        let existing = if existing.as_os_str().is_empty() { Path::new(".") } else { existing };
        if !existing.is_dir() {
            return Err(format!("{} cannot be created: {} is not a directory", dir.display(), existing.display()));
        }
        let trial = existing.join(format!(".tally-validate-{}", std::process::id()));
        std::fs::create_dir(&trial).and_then(|()| std::fs::remove_dir(&trial)).map_err(|e| {
            match existing == dir.as_path() {
                true => format!("{} is not writable: {e}", dir.display()),
                false => {
                    format!("{} cannot be created: nothing can be made in {}: {e}", dir.display(), existing.display())
                }
            }
        })
    }

    /// The collector's certificate authority.
    pub fn ca_dir(&self) -> PathBuf {
        self.ca_dir.clone().unwrap_or_else(|| self.data_dir.join("ca"))
    }

    /// Whether `serve` may create the CA if it is missing: not when collectors share a database
    /// (R30), where it is made once by `ca init`.
    pub fn creates_ca(&self) -> bool {
        self.database_url.is_none()
    }

    /// The store, for messages: PostgreSQL's URL (without its password) or SQLite's file.
    pub fn store_name(&self) -> String {
        match &self.database_url {
            Some(url) => crate::store::postgres::redacted(url),
            None => self.database().display().to_string(),
        }
    }

    /// The names the QUIC endpoint's certificate covers: `server_names` and the hosts of
    /// `public_addresses`, so an agent failing over to any collector never fails TLS (R30).
    pub fn certificate_names(&self) -> Vec<String> {
        let hosts = self
            .public_addresses
            .iter()
            .filter_map(|a| a.rsplit_once(':'))
            .map(|(host, _)| host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).to_owned());
        let mut names = self.server_names.clone();
        for host in hosts {
            if !names.contains(&host) {
                names.push(host);
            }
        }
        names
    }

    /// The embedded store's database file.
    pub fn database(&self) -> PathBuf {
        self.data_dir.join("tally.db")
    }
}

/// Every key can be set by the environment variable of this prefix and the key in capitals
/// (`TALLY_HTTP_LISTEN`), over the file's value.
pub const ENV_PREFIX: &str = "TALLY_";

/// The configuration file read when no `--config` names one, if it exists (a container mounts
/// it there).
pub const SYSTEM_CONFIG: &str = "/etc/tally/collector.toml";

/// Every key, with how its environment variable is written (`TALLY_<KEY>`, [`ENV_PREFIX`]).
const KEYS: [(&str, ValueKind); 34] = [
    ("data_dir", ValueKind::Text),
    ("database_url", ValueKind::Text),
    ("ca_dir", ValueKind::Text),
    ("quic_listen", ValueKind::Text),
    ("http_listen", ValueKind::Text),
    ("metrics_listen", ValueKind::Text),
    ("http_tls_cert", ValueKind::Text),
    ("http_tls_key", ValueKind::Text),
    ("trusted_proxies", ValueKind::List),
    ("webhook_allowed_networks", ValueKind::List),
    ("allow_plaintext_tokens", ValueKind::Boolean),
    ("wrong_tokens_per_minute", ValueKind::Integer),
    ("server_names", ValueKind::List),
    ("public_addresses", ValueKind::List),
    ("max_connections", ValueKind::Integer),
    ("max_bucket_bps", ValueKind::Integer),
    ("max_bucket_age_days", ValueKind::Integer),
    ("max_event_age_days", ValueKind::Integer),
    ("silent_site_hours", ValueKind::Integer),
    ("default_contract_months", ValueKind::Integer),
    ("lan_device_retention_months", ValueKind::Integer),
    ("min_free_mb", ValueKind::Integer),
    ("month_window", ValueKind::Text),
    ("grace_hours", ValueKind::Integer),
    ("operator_token", ValueKind::Text),
    ("smtp", ValueKind::Text),
    ("smtp_tls", ValueKind::Text),
    ("smtp_username", ValueKind::Text),
    ("smtp_password", ValueKind::Text),
    ("smtp_from", ValueKind::Text),
    ("webhook_secret", ValueKind::Text),
    ("notify_ca_file", ValueKind::Text),
    ("console_url", ValueKind::Text),
    ("log", ValueKind::Text),
];

/// Parses and validates configuration text, collecting every error.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_with(text, |_| None)
}

/// Parses configuration text with the keys `lookup` finds in the environment over it.
pub fn parse_with(text: &str, lookup: impl Fn(&str) -> Option<OsString>) -> Result<Config, ConfigErrors> {
    let mut fields = Fields::parse(text)?;
    fields.environment(ENV_PREFIX, &KEYS, lookup);
    let data_dir = fields.path("data_dir", "./tally-data");
    let database_url = match fields.get("database_url").map(|v| v.as_str().map(str::to_owned).ok_or(v.type_str())) {
        None => None,
        Some(Ok(url)) => database_url(&url).map_err(|e| fields.error(format!("database_url: {e}"))).ok(),
        Some(Err(found)) => {
            fields.error(format!("database_url: expected a postgres:// URL, found {found}"));
            None
        }
    };
    let quic_listen = address(&mut fields, "quic_listen", SocketAddr::from(([0, 0, 0, 0], 4433)));
    let http_listen = address(&mut fields, "http_listen", SocketAddr::from(([127, 0, 0, 1], 8080)));
    let metrics_listen =
        fields.get("metrics_listen").is_some().then(|| address(&mut fields, "metrics_listen", http_listen));
    let http_tls = http_tls(&mut fields);
    let trusted_proxies = networks(&mut fields, "trusted_proxies");
    let webhook_allowed_networks = networks(&mut fields, "webhook_allowed_networks");
    let allow_plaintext_tokens = fields.boolean("allow_plaintext_tokens", false);
    let wrong_tokens_per_minute = fields.integer("wrong_tokens_per_minute", 10, 1, 1_000_000) as u32;
    let log = fields.string("log", "info");
    let month_window = match fields.string("month_window", "article").as_str() {
        "article" => MonthWindowSetting::Article,
        "calendar" => MonthWindowSetting::Calendar,
        other => {
            fields.error(format!("month_window: {other:?} is neither \"article\" nor \"calendar\""));
            MonthWindowSetting::Article
        }
    };
    let max_bucket_bps = match fields.get("max_bucket_bps") {
        None => 1_000_000_000_000,
        Some(toml::Value::Integer(n)) if *n > 0 => n.unsigned_abs(),
        Some(other) => {
            let found = other.to_string();
            fields.error(format!("max_bucket_bps: expected a positive integer (bits per second), found {found}"));
            1_000_000_000_000
        }
    };
    let operator_token = secret(&mut fields, "operator_token");
    let webhook_secret = secret(&mut fields, "webhook_secret");
    let smtp = smtp_relay(&mut fields);
    let notify_ca_file = match fields.get("notify_ca_file").map(|v| v.as_str().ok_or(v.type_str())) {
        None => None,
        Some(Ok(path)) => match crate::https::read_certificates(Path::new(path)) {
            Ok(_) => Some(PathBuf::from(path)),
            Err(e) => {
                fields.error(format!("notify_ca_file: {e}"));
                None
            }
        },
        Some(Err(found)) => {
            fields.error(format!("notify_ca_file: expected a path, found {found}"));
            None
        }
    };
    let smtp_from = match fields.get("smtp_from") {
        None => "tally@localhost".to_owned(),
        Some(toml::Value::String(s)) if s.parse::<lettre::Address>().is_ok() => s.clone(),
        Some(other) => {
            let found = other.to_string();
            fields.error(format!("smtp_from: expected an e-mail address, found {found}"));
            "tally@localhost".to_owned()
        }
    };
    let grace_hours = fields.integer("grace_hours", 72, 0, 24 * 31);
    let min_free_mb = fields.integer("min_free_mb", 256, 0, 1 << 30);
    let server_names = match fields.get("server_names") {
        None => vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()],
        Some(toml::Value::Array(items))
            if !items.is_empty() && items.iter().all(|i| i.as_str().is_some_and(|s| !s.is_empty())) =>
        {
            items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect()
        }
        Some(other) => {
            let found = other.to_string();
            fields.error(format!("server_names: expected a non-empty list of host names or addresses, found {found}"));
            Vec::new()
        }
    };
    let public_addresses = match fields.get("public_addresses") {
        None => Vec::new(),
        Some(toml::Value::Array(items))
            if !items.is_empty()
                && items.len() <= tally_common::wire::MAX_COLLECTORS
                && items.iter().all(|i| i.as_str().is_some_and(tally_common::wire::is_host_port)) =>
        {
            items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect()
        }
        Some(other) => {
            let found = other.to_string();
            fields.error(format!(
                "public_addresses: expected a list of 1 to {} HOST:PORT addresses, found {found}",
                tally_common::wire::MAX_COLLECTORS
            ));
            Vec::new()
        }
    };
    let max_connections = fields.integer("max_connections", 10_000, 1, 1_000_000) as usize;
    let max_bucket_age_days = fields.integer("max_bucket_age_days", 40, 1, 3_650);
    let max_event_age_days = fields.integer("max_event_age_days", 62, 1, 3_650);
    let silent_site_hours = fields.integer("silent_site_hours", 2, 1, 8_760);
    let default_contract_months = fields.integer("default_contract_months", 12, 1, 120) as u32;
    // At least the month before this one: it is finalized only after its grace period.
    let lan_device_retention_months = fields.integer("lan_device_retention_months", 13, 2, 120) as u32;
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
        fields.error(format!("log: {log:?} is not a valid filter: {e}"));
    }
    let ca_dir = fields.get("ca_dir").is_some().then(|| fields.path("ca_dir", ""));
    let console_url = match fields.get("console_url").map(|v| v.as_str().map(str::to_owned).ok_or(v.type_str())) {
        None => None,
        Some(Ok(url))
            if url.parse::<axum::http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() && u.query().is_none()
            }) =>
        {
            Some(url.trim_end_matches('/').to_owned())
        }
        Some(Ok(url)) => {
            fields.error(format!(
                "console_url: {url:?} is not an http:// or https:// address (https://tally.example.net)"
            ));
            None
        }
        Some(Err(found)) => {
            fields.error(format!("console_url: expected an https:// address, found {found}"));
            None
        }
    };
    fields.finish(&KEYS.map(|(key, _)| key), || Config {
        data_dir,
        database_url,
        ca_dir,
        quic_listen,
        http_listen,
        metrics_listen,
        http_tls,
        exposure: crate::https::Exposure { trusted_proxies, allow_plaintext_tokens },
        server_names,
        public_addresses,
        max_connections,
        max_bucket_bps,
        max_bucket_age: chrono::TimeDelta::days(max_bucket_age_days as i64),
        max_event_age: chrono::TimeDelta::days(max_event_age_days as i64),
        silent_after: chrono::TimeDelta::hours(silent_site_hours as i64),
        default_contract_months,
        lan_device_retention_months,
        min_free_mb,
        month_window,
        grace: chrono::TimeDelta::hours(grace_hours as i64),
        operator_token,
        smtp,
        smtp_from,
        webhook_secret,
        webhook_allowed_networks,
        wrong_tokens_per_minute,
        notify_ca_file,
        console_url,
        log,
    })
}

/// `http_tls_cert` and `http_tls_key`: both or neither, and a pair that loads.
/// A list of addresses or networks (`10.0.0.0/8`) under `key`; empty when absent.
fn networks(fields: &mut Fields, key: &str) -> Vec<ipnetwork::IpNetwork> {
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

fn http_tls(fields: &mut Fields) -> Option<(PathBuf, PathBuf)> {
    let named = |fields: &mut Fields, key: &str| fields.get(key).is_some().then(|| fields.path(key, ""));
    match (named(fields, "http_tls_cert"), named(fields, "http_tls_key")) {
        (None, None) => None,
        (Some(cert), Some(key)) => match crate::https::Certificate::load(&cert, &key) {
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
fn database_url(url: &str) -> Result<String, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!("{} is not a postgres:// URL", crate::store::postgres::redacted(url)));
    }
    url.parse::<sqlx::postgres::PgConnectOptions>()
        .map(|_| url.to_owned())
        .map_err(|e| format!("{}: {e}", crate::store::postgres::redacted(url)))
}

fn address(fields: &mut Fields, key: &str, default: SocketAddr) -> SocketAddr {
    let value = fields.string(key, &default.to_string());
    value.parse().unwrap_or_else(|_| {
        fields.error(format!("{key}: {value:?} is not an address such as 127.0.0.1:8080"));
        default
    })
}

/// A token or key: at least 32 printable characters without spaces.
fn secret(fields: &mut Fields, key: &str) -> Option<String> {
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
fn smtp_relay(fields: &mut Fields) -> Option<SmtpRelay> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_contracts() {
        let config = Config::default();
        assert_eq!(config.database(), Path::new("./tally-data/tally.db"));
        assert_eq!(config.quic_listen.to_string(), "0.0.0.0:4433");
        assert_eq!(config.http_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.month_window, MonthWindowSetting::Article);
        assert_eq!(parse("").unwrap(), config);
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let errors =
            parse("quic_listen = \"udp:4433\"\nmonth_window = \"fiscal\"\nmax_bucket_bps = -1\nport = 1\nlog = 3\n")
                .unwrap_err()
                .errors;
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(errors.iter().any(|e| e.starts_with("quic_listen: \"udp:4433\" is not an address")));
        assert!(errors.iter().any(|e| e.starts_with("month_window: \"fiscal\"")));
        assert!(errors.iter().any(|e| e.starts_with("max_bucket_bps: expected a positive integer")));
        assert!(errors.iter().any(|e| e.starts_with("port: unknown key")));
        assert!(errors.iter().any(|e| e == "log: expected a string, found integer"));
    }

    #[test]
    fn smtp_settings_are_checked_together() {
        let errors = parse("smtp = \"relay\"\nsmtp_tls = \"ssl\"\nsmtp_username = \"tally\"\n").unwrap_err().errors;
        assert_eq!(
            errors,
            [
                "smtp_tls: expected \"starttls\", \"tls\" or \"none\", found \"ssl\"",
                "smtp_username, smtp_password: set both or neither",
                "smtp: expected HOST:PORT of an SMTP relay, found \"relay\"",
            ]
        );
        let clear = "smtp = \"relay:25\"\nsmtp_tls = \"none\"\nsmtp_username = \"tally\"\nsmtp_password = \"pw\"\n";
        let errors = parse(clear).unwrap_err().errors;
        assert!(
            errors[0].starts_with("smtp_password: the password of \"tally\" would cross the network"),
            "{errors:?}"
        );
        let errors = parse("notify_ca_file = \"/nonexistent/ca.pem\"\n").unwrap_err().errors;
        assert!(errors[0].starts_with("notify_ca_file: /nonexistent/ca.pem: "), "{errors:?}");

        let config = parse(
            "smtp = \"smtp.example.net:465\"\nsmtp_tls = \"tls\"\nsmtp_username = \"tally\"\nsmtp_password = \"pw\"\n",
        );
        let relay = config.unwrap().smtp.unwrap();
        assert_eq!((relay.host.as_str(), relay.port, relay.tls), ("smtp.example.net", 465, SmtpTls::Tls));
        assert_eq!(relay.credentials, Some(("tally".into(), "pw".into())));
        assert!(!format!("{relay:?}").contains("pw"), "Debug never shows the password");
        assert_eq!(parse("smtp = \"relay:587\"\n").unwrap().smtp.unwrap().tls, SmtpTls::StartTls, "the default");
    }
}
