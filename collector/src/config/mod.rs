//! The collector's configuration file: parsed and validated before any port is bound, every
//! error reported at once (`tally-collector validate` exits 64 on any).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use tally_common::config_file::ConfigErrors;
use tally_common::config_file::{Fields, ValueKind, defaults, load};
use tally_common::time::MonthWindowSetting;

mod example;
mod values;

pub use self::example::DEFAULT_CONFIG;
pub use self::values::{SmtpRelay, SmtpTls};
use self::values::{address, database_url, http_tls, networks, secret, smtp_relay};

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
    pub exposure: crate::net::https::Exposure,
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
        Some(Ok(path)) => match crate::net::https::read_certificates(Path::new(path)) {
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
        exposure: crate::net::https::Exposure { trusted_proxies, allow_plaintext_tokens },
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
