//! The commented example configuration (`tally-collector default-config`): every key with its
//! default, which is also where the defaults come from ([`Config::default`](super::Config)).

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
