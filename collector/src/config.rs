//! The collector's configuration file: parsed and validated before any port is bound, every
//! error reported at once (`tally-collector validate` exits 64 on any).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use tally_common::config_errors::ConfigErrors;
use tally_common::time::MonthWindowSetting;

/// The commented example printed by `tally-collector default-config`; every value is the default.
pub const DEFAULT_CONFIG: &str = r#"# tally-collector configuration (TOML). Every key is optional; the values shown are the defaults.

# Where the embedded store (SQLite, tally.db) and the collector's CA live.
data_dir = "./tally-data"

# QUIC ingest from the agents (UDP), and the HTTP API with /healthz.
quic_listen = "0.0.0.0:4433"
http_listen = "127.0.0.1:8080"

# Names and addresses the agents use to reach the QUIC endpoint: its certificate covers them.
server_names = ["localhost", "127.0.0.1", "::1"]

# At most this many agent connections at once; more are refused and retry later.
max_connections = 10000

# Sanity bound on a bucket's value, in bits per second: a bucket above it is refused and counted.
max_bucket_bps = 1000000000000

# The monthly P95 window (R7): "article" ends at 00:00 UTC on the month's last day, as the
# usage-measurement article says; "calendar" includes the last day.
month_window = "article"

# A month is finalized this long after its window closes (R9): until then late buckets still
# change it; then over-usage is evaluated and notified.
grace_hours = 72

# The bearer token of the HTTP API's operator (at least 32 characters). Without it, every /v1
# route answers 401.
# operator_token = "..."

# Month-end notifications (R15): the SMTP relay (HOST:PORT, plain SMTP) and the sender, and the
# key that signs webhooks (HMAC-SHA256, at least 32 characters). Recipients are per account:
# `tally-collector account notify`.
# smtp = "127.0.0.1:25"
smtp_from = "tally@localhost"
# webhook_secret = "..."

# Log filter, in RUST_LOG syntax.
log = "info"
"#;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub quic_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub server_names: Vec<String>,
    pub max_connections: usize,
    pub max_bucket_bps: u64,
    pub month_window: MonthWindowSetting,
    pub grace: chrono::TimeDelta,
    pub operator_token: Option<String>,
    pub smtp: Option<String>,
    pub smtp_from: String,
    pub webhook_secret: Option<String>,
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        match parse(DEFAULT_CONFIG) {
            Ok(config) => config,
            Err(errors) => unreachable!("the default configuration is invalid: {errors}"),
        }
    }
}

impl Config {
    /// Reads and validates `path`; without a path, the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let Some(path) = path else { return Ok(Config::default()) };
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors { source: source.clone(), errors: vec![format!("cannot read the file: {e}")] })?;
        parse(&text).map_err(|e| ConfigErrors { source, errors: e.errors })
    }

    /// The collector's certificate authority.
    pub fn ca_dir(&self) -> PathBuf {
        self.data_dir.join("ca")
    }

    /// The embedded store's database file.
    pub fn database(&self) -> PathBuf {
        self.data_dir.join("tally.db")
    }
}

const KNOWN: [&str; 13] = [
    "data_dir",
    "quic_listen",
    "http_listen",
    "server_names",
    "max_connections",
    "max_bucket_bps",
    "month_window",
    "grace_hours",
    "operator_token",
    "smtp",
    "smtp_from",
    "webhook_secret",
    "log",
];

/// Parses and validates configuration text, collecting every error.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigErrors {
        source: "configuration".into(),
        errors: vec![e.to_string().trim_end().to_owned()],
    })?;
    let mut errors = Vec::new();
    let mut string = |key: &str, default: &str| match table.get(key) {
        None => default.to_owned(),
        Some(toml::Value::String(s)) => s.clone(),
        Some(other) => {
            errors.push(format!("{key}: expected a string, found {}", other.type_str()));
            default.to_owned()
        }
    };
    let data_dir = PathBuf::from(string("data_dir", "./tally-data"));
    let quic_listen = string("quic_listen", "0.0.0.0:4433");
    let http_listen = string("http_listen", "127.0.0.1:8080");
    let month_window = string("month_window", "article");
    let log = string("log", "info");

    let mut address = |key: &str, value: &str, default: SocketAddr| {
        value.parse().unwrap_or_else(|_| {
            errors.push(format!("{key}: {value:?} is not an address such as 127.0.0.1:8080"));
            default
        })
    };
    let quic_listen = address("quic_listen", &quic_listen, SocketAddr::from(([0, 0, 0, 0], 4433)));
    let http_listen = address("http_listen", &http_listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
    let month_window = match month_window.as_str() {
        "article" => MonthWindowSetting::Article,
        "calendar" => MonthWindowSetting::Calendar,
        other => {
            errors.push(format!("month_window: {other:?} is neither \"article\" nor \"calendar\""));
            MonthWindowSetting::Article
        }
    };
    let max_bucket_bps = match table.get("max_bucket_bps") {
        None => 1_000_000_000_000,
        Some(toml::Value::Integer(n)) if *n > 0 => *n as u64,
        Some(other) => {
            errors.push(format!("max_bucket_bps: expected a positive integer (bits per second), found {other}"));
            1_000_000_000_000
        }
    };
    let mut secret = |key: &str| match table.get(key) {
        None => None,
        Some(toml::Value::String(t)) if t.len() >= 32 && t.bytes().all(|b| b.is_ascii_graphic()) => Some(t.clone()),
        Some(_) => {
            errors.push(format!("{key}: expected at least 32 printable characters without spaces"));
            None
        }
    };
    let operator_token = secret("operator_token");
    let webhook_secret = secret("webhook_secret");
    let smtp = match table.get("smtp") {
        None => None,
        Some(toml::Value::String(s))
            if s.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
        {
            Some(s.clone())
        }
        Some(other) => {
            errors.push(format!("smtp: expected HOST:PORT of an SMTP relay, found {other}"));
            None
        }
    };
    let smtp_from = match table.get("smtp_from") {
        None => "tally@localhost".to_owned(),
        Some(toml::Value::String(s)) if s.parse::<lettre::Address>().is_ok() => s.clone(),
        Some(other) => {
            errors.push(format!("smtp_from: expected an e-mail address, found {other}"));
            "tally@localhost".to_owned()
        }
    };
    let grace_hours = match table.get("grace_hours") {
        None => 72,
        Some(toml::Value::Integer(n)) if (0..=24 * 366).contains(n) => *n,
        Some(other) => {
            errors.push(format!("grace_hours: expected hours from 0 to 8784, found {other}"));
            72
        }
    };
    let server_names = match table.get("server_names") {
        None => vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()],
        Some(toml::Value::Array(items))
            if !items.is_empty() && items.iter().all(|i| i.as_str().is_some_and(|s| !s.is_empty())) =>
        {
            items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect()
        }
        Some(other) => {
            errors.push(format!("server_names: expected a non-empty list of host names or addresses, found {other}"));
            Vec::new()
        }
    };
    let max_connections = match table.get("max_connections") {
        None => 10_000,
        Some(toml::Value::Integer(n)) if (1..=1_000_000).contains(n) => *n as usize,
        Some(other) => {
            errors.push(format!("max_connections: expected an integer from 1 to 1000000, found {other}"));
            10_000
        }
    };
    if data_dir.as_os_str().is_empty() {
        errors.push("data_dir: must not be empty".into());
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
        errors.push(format!("log: {log:?} is not a valid filter: {e}"));
    }
    for key in table.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        errors.push(format!("{key}: unknown key (known keys: {})", KNOWN.join(", ")));
    }
    if errors.is_empty() {
        Ok(Config {
            data_dir,
            quic_listen,
            http_listen,
            server_names,
            max_connections,
            max_bucket_bps,
            month_window,
            grace: chrono::TimeDelta::hours(grace_hours),
            operator_token,
            smtp,
            smtp_from,
            webhook_secret,
            log,
        })
    } else {
        Err(ConfigErrors { source: "configuration".into(), errors })
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
}
