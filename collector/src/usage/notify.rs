//! Month-end notifications (R15) through the durable outbox.
//!
//! Finalizing a month with over-usage writes one outbox row per recipient in the same
//! transaction (so a crash can neither lose a notification nor create it twice); [`deliver_due`]
//! sends the rows that are due, marks each delivered once its transport accepted it, and
//! otherwise retries with exponential backoff (1 s, 2 s, 4 s ... at most an hour). Each copy
//! carries a stable id (`Message-ID <tally-outbox-N@...>`, header `Tally-Notification-Id: N`) so
//! that a receiver can recognise the one redelivery a crash between sending and marking can cause.
//!
//! E-mail goes to the configured SMTP relay (STARTTLS, TLS or plain, with optional credentials);
//! webhooks are HTTP POSTs (http:// or https://) of the JSON document, signed
//! `Tally-Signature: sha256=<hex HMAC-SHA256 of the body>`. TLS trusts the system's authorities
//! and those of `notify_ca_file`, through rustls with ring as everywhere else.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use crate::net::webhook_target::{SystemResolver, WebhookTargets};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tally_common::bandwidth::Bandwidth;
use tally_common::kinds::LicenseKind;

use super::document::UsageReport;
use crate::config::{Config, SmtpRelay, SmtpTls};
use crate::store::{Channel, NewOverusage, Notification, OutboxItem, Store, StoreError};

/// Where notifications go out, from the configuration.
#[derive(Clone)]
pub struct Transports {
    smtp: Option<(SmtpRelay, Option<TlsParameters>)>,
    smtp_from: String,
    /// The key of the webhooks' HMAC-SHA256 signature.
    webhook_secret: Option<String>,
    /// https webhooks.
    tls: Arc<rustls::ClientConfig>,
    /// Where webhooks may go, checked at each delivery.
    webhook_targets: WebhookTargets,
    channels: Vec<Channel>,
}

/// The channels `config` can send through: e-mail needs `smtp`, webhooks `webhook_secret`. The
/// outbox keeps the other channels' rows, untried, until they are configured.
pub fn configured_channels(config: &Config) -> Vec<Channel> {
    let mut channels = Vec::new();
    if config.smtp.is_some() {
        channels.push(Channel::Email);
    }
    if config.webhook_secret.is_some() {
        channels.push(Channel::Webhook);
    }
    channels
}

impl std::fmt::Debug for Transports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let relay = self.smtp.as_ref().map(|(relay, _)| relay);
        write!(f, "smtp {relay:?} from {}, webhooks signed: {}", self.smtp_from, self.webhook_secret.is_some())
    }
}

impl Transports {
    /// Loads the authorities TLS trusts: the system's and `notify_ca_file`'s.
    pub fn new(config: &Config) -> Result<Transports, String> {
        let mut trusted = rustls_native_certs::load_native_certs().certs;
        let system = trusted.len();
        if let Some(path) = &config.notify_ca_file {
            trusted.extend(crate::net::https::read_certificates(path).map_err(|e| format!("notify_ca_file: {e}"))?);
        }
        // A system certificate webpki cannot use is left out rather than failing every delivery.
        let mut roots = rustls::RootCertStore::empty();
        trusted.retain(|certificate| roots.add(certificate.clone()).is_ok());
        tracing::debug!(system, usable = roots.len(), "authorities trusted for notifications");
        let smtp = match &config.smtp {
            None => None,
            Some(relay) => Some((relay.clone(), smtp_tls_parameters(relay, &trusted)?)),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Transports {
            smtp,
            smtp_from: config.smtp_from.clone(),
            webhook_secret: config.webhook_secret.clone(),
            tls: Arc::new(tls),
            webhook_targets: WebhookTargets::new(config.webhook_allowed_networks.clone()),
            channels: configured_channels(config),
        })
    }
}

impl Transports {
    /// The channels that can send (see [`configured_channels`]).
    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    /// Logs once, at start, the channels that are not configured and how many messages wait for
    /// each (at WARN when some do).
    pub async fn log_unconfigured<S: Store>(&self, store: &S) -> Result<(), StoreError> {
        let waiting = store.notifications(None).await?;
        for (channel, name, setting) in
            [(Channel::Email, "e-mail", "smtp"), (Channel::Webhook, "webhook", "webhook_secret")]
        {
            if !self.channels.contains(&channel) {
                let count = waiting.iter().filter(|i| i.channel == channel && i.delivered_at.is_none()).count();
                let said = format!("{name} is not configured ({setting}): {count} message(s) are waiting");
                if count == 0 {
                    tracing::info!(waiting = count, "{said}");
                } else {
                    tracing::warn!(waiting = count, "{said} and will be sent once it is");
                }
            }
        }
        Ok(())
    }
}

fn smtp_tls_parameters(
    relay: &SmtpRelay,
    trusted: &[CertificateDer<'static>],
) -> Result<Option<TlsParameters>, String> {
    if relay.tls == SmtpTls::None {
        return Ok(None);
    }
    let mut builder = TlsParameters::builder(relay.host.clone()).certificate_store(CertificateStore::None);
    for certificate in trusted {
        builder = builder.add_root_certificate(Certificate::from_der(certificate.to_vec()).map_err(|e| e.to_string())?);
    }
    builder.build_rustls().map(Some).map_err(|e| format!("smtp TLS: {e}"))
}

/// The notification of a finalized month, or `None` without over-usage (R15: nothing is sent).
pub fn notification(report: &UsageReport, found: &[NewOverusage]) -> Option<Notification> {
    if found.is_empty() {
        return None;
    }
    let subject = format!("Tally: over-usage in {} for account {}", report.month, report.account);
    let mut text = format!(
        "Account {} used more than its licenses in {} (window {} to {}):\n\n",
        report.account, report.month, report.window.start, report.window.end
    );
    for o in found {
        let (measured, licensed, excess) = if o.license == LicenseKind::BandwidthPool {
            let mbps = |v| Bandwidth(v).to_string();
            (mbps(o.measured), mbps(o.licensed), mbps(o.excess))
        } else {
            (o.measured.to_string(), o.licensed.to_string(), o.excess.to_string())
        };
        let region = o.region.as_deref().map_or(String::new(), |r| format!(" ({r})"));
        let _ = writeln!(text, "- {}{region}: measured {measured}, licensed {licensed}, excess {excess}", o.license);
        let _ =
            writeln!(text, "  smallest purchase covering it: {} {}", o.required_purchase, o.license.purchase_unit());
        if !o.flags.is_empty() {
            let flags: Vec<&str> = o.flags.iter().map(|f| f.as_str()).collect();
            let _ = writeln!(text, "  requires the same increase of: {}", flags.join(", "));
        }
    }
    text += "\nResolve each one by True-Up (a one-time charge) or True-Forward (a license increase from next month).\n";
    let items: Vec<_> = found
        .iter()
        .map(|o| {
            json!({"license": o.license, "region_group": o.region, "measured": o.measured, "licensed": o.licensed,
                   "excess": o.excess, "required_purchase": o.required_purchase, "unit": o.license.purchase_unit(),
                   "requires_same_increase": o.flags})
        })
        .collect();
    let json = json!({"event": "overusage", "account": report.account, "month": report.month, "overusage": items});
    Some(Notification { subject, text, json: json.to_string() })
}

/// Rows one pass claims: each send may take its transport's timeout (30 s), and all of them
/// finish well within [`CLAIM_LEASE`].
const CLAIM_BATCH: usize = 10;
/// How long a claimed row is this collector's alone (R30): another collector sends it only if
/// this one dies first.
const CLAIM_LEASE: TimeDelta = TimeDelta::minutes(15);

/// Sends the due outbox rows it claims; returns how many were delivered.
pub async fn deliver_due<S: Store>(
    store: &S,
    transports: &Transports,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut delivered = 0;
    loop {
        let due = store.claim_due_notifications(now, CLAIM_LEASE, CLAIM_BATCH, transports.channels()).await?;
        tracing::debug!(due = due.len(), "outbox checked");
        let last = due.len() < CLAIM_BATCH;
        delivered += deliver_claimed(store, transports, due).await?;
        if last {
            return Ok(delivered);
        }
    }
}

/// Sends claimed rows, marking each delivered or failed (to be retried later, with backoff).
async fn deliver_claimed<S: Store>(
    store: &S,
    transports: &Transports,
    claimed: Vec<OutboxItem>,
) -> Result<usize, StoreError> {
    let mut delivered = 0;
    for item in claimed {
        match deliver(transports, &item).await {
            Ok(()) => {
                store.mark_delivered(item.id, crate::clock::now()).await?;
                crate::metrics::get().notification(item.channel.as_str(), true);
                delivered += 1;
                tracing::info!(id = item.id, account = %item.account, topic = %item.topic, channel = item.channel.as_str(),
                    recipient = %item.recipient, "notification delivered");
            }
            Err(e) => {
                let wait = TimeDelta::seconds(1i64 << item.attempts.min(12)).min(TimeDelta::hours(1));
                store.mark_failed(item.id, &e, crate::clock::now() + wait).await?;
                crate::metrics::get().notification(item.channel.as_str(), false);
                tracing::warn!(id = item.id, recipient = %item.recipient, error = %e, retry_in_s = wait.num_seconds(),
                    "notification delivery failed");
            }
        }
    }
    Ok(delivered)
}

async fn deliver(transports: &Transports, item: &OutboxItem) -> Result<(), String> {
    match item.channel {
        Channel::Email => send_email(transports, item).await,
        Channel::Webhook => post_webhook(transports, item).await,
    }
}

async fn send_email(transports: &Transports, item: &OutboxItem) -> Result<(), String> {
    let (relay, tls) = transports.smtp.as_ref().ok_or("e-mail is not configured (smtp)")?;
    let message = Message::builder()
        .from(transports.smtp_from.parse().map_err(|e| format!("smtp_from: {e}"))?)
        .to(item.recipient.parse().map_err(|e| format!("recipient {:?}: {e}", item.recipient))?)
        .subject(&item.subject)
        .message_id(Some(format!("<tally-outbox-{}@{}>", item.id, relay.host)))
        .body(item.body.clone())
        .map_err(|e| e.to_string())?;
    let tls = match (relay.tls, tls.clone()) {
        (SmtpTls::StartTls, Some(parameters)) => Tls::Required(parameters),
        (SmtpTls::Tls, Some(parameters)) => Tls::Wrapper(parameters),
        _ => Tls::None,
    };
    let mut mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&relay.host)
        .port(relay.port)
        .tls(tls)
        .timeout(Some(Duration::from_secs(30)));
    if let Some((user, password)) = &relay.credentials {
        mailer = mailer.credentials(Credentials::new(user.clone(), password.clone()));
    }
    let sent = mailer.build().send(message).await;
    sent.map(|_| ()).map_err(|e| format!("SMTP {}:{}: {e}", relay.host, relay.port))
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", crate::digest::hex(ring::hmac::sign(&key, body).as_ref()))
}

async fn post_webhook(transports: &Transports, item: &OutboxItem) -> Result<(), String> {
    let secret = transports.webhook_secret.as_deref().ok_or("webhook is not configured (webhook_secret)")?;
    let uri: hyper::Uri = item.recipient.parse().map_err(|e| format!("webhook {:?}: {e}", item.recipient))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("webhook {:?}: not an http:// or https:// URL", item.recipient)),
    };
    let host = uri.host().ok_or("webhook URL without a host")?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    // Resolved and checked now, and the connection goes to an address checked (never to the name
    // again, which could resolve elsewhere by then).
    let addresses = transports.webhook_targets.vet(&host, port, &SystemResolver).await.map_err(|e| e.to_string())?;
    let request = hyper::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, uri.authority().map_or(host.as_str(), |a| a.as_str()))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("Tally-Signature", signature(secret, item.body.as_bytes()))
        .header("Tally-Notification-Id", item.id.to_string())
        .body(Full::new(Bytes::from(item.body.clone())))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addresses.as_slice())
            .await
            .map_err(|e| format!("{host}:{port} ({}): {e}", addresses[0]))?;
        let addr = stream.peer_addr().map_or_else(|_| format!("{host}:{port}"), |a| a.to_string());
        if !https {
            return send(stream, request).await;
        }
        let name = ServerName::try_from(host.clone()).map_err(|e| format!("webhook host {host:?}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(transports.tls.clone())
            .connect(name, stream)
            .await
            .map_err(|e| format!("{addr}: TLS: {e}"))?;
        send(stream, request).await
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "webhook: no answer in 30 s".to_owned())?
}

/// One HTTP/1.1 request on `stream`; a 2xx answer is a delivery.
async fn send<IO>(stream: IO, request: hyper::Request<Full<Bytes>>) -> Result<(), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let _ = response.into_body().collect().await;
    if status.is_success() { Ok(()) } else { Err(format!("webhook answered {status}")) }
}
