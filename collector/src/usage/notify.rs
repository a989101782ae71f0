//! Month-end notifications (R15) through the durable outbox.
//!
//! Finalizing a month with over-usage writes one outbox row per recipient in the same
//! transaction (so a crash can neither lose a notification nor create it twice); [`deliver_due`]
//! sends the rows that are due, marks each delivered once its transport accepted it, and
//! otherwise retries with exponential backoff (1 s, 2 s, 4 s ... at most an hour). Each copy
//! carries a stable id (`Message-ID <tally-outbox-N@...>`, header `Tally-Notification-Id: N`) so
//! that a receiver can recognise the one redelivery a crash between sending and marking can cause.
//!
//! E-mail goes to the configured SMTP relay (plain SMTP, as to a local relay); webhooks are
//! HTTP POSTs of the JSON document, signed `Tally-Signature: sha256=<hex HMAC-SHA256 of the body>`.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;
use tally_common::bandwidth::Bandwidth;
use tally_common::kinds::LicenseKind;

use super::report::UsageReport;
use crate::store::{Channel, NewOverusage, Notification, OutboxItem, Store, StoreError};

/// Where notifications go out, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Transports {
    /// `HOST:PORT` of the SMTP relay.
    pub smtp: Option<String>,
    pub smtp_from: String,
    /// The key of the webhooks' HMAC-SHA256 signature.
    pub webhook_secret: Option<String>,
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
                   "excess": o.excess, "requires_same_increase": o.flags})
        })
        .collect();
    let json = json!({"event": "overusage", "account": report.account, "month": report.month, "overusage": items});
    Some(Notification { subject, text, json: json.to_string() })
}

/// Sends every due outbox row; returns how many were delivered.
pub async fn deliver_due<S: Store>(
    store: &S,
    transports: &Transports,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut delivered = 0;
    let due = store.due_notifications(now, 100).await?;
    tracing::debug!(due = due.len(), "outbox checked");
    for item in due {
        match deliver(transports, &item).await {
            Ok(()) => {
                store.mark_delivered(item.id, Utc::now()).await?;
                delivered += 1;
                tracing::info!(id = item.id, account = %item.account, month = %item.month, channel = item.channel.as_str(),
                    recipient = %item.recipient, "notification delivered");
            }
            Err(e) => {
                let wait = TimeDelta::seconds(1i64 << item.attempts.min(12)).min(TimeDelta::hours(1));
                store.mark_failed(item.id, &e, Utc::now() + wait).await?;
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
    let relay = transports.smtp.as_deref().ok_or("no SMTP relay is configured (smtp)")?;
    let (host, port) = relay.rsplit_once(':').ok_or_else(|| format!("smtp {relay:?} is not HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| format!("smtp {relay:?} is not HOST:PORT"))?;
    let message = Message::builder()
        .from(transports.smtp_from.parse().map_err(|e| format!("smtp_from: {e}"))?)
        .to(item.recipient.parse().map_err(|e| format!("recipient {:?}: {e}", item.recipient))?)
        .subject(&item.subject)
        .message_id(Some(format!("<tally-outbox-{}@{host}>", item.id)))
        .body(item.body.clone())
        .map_err(|e| e.to_string())?;
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(Duration::from_secs(30)))
        .build();
    mailer.send(message).await.map(|_| ()).map_err(|e| format!("SMTP {relay}: {e}"))
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", crate::ca::hex(ring::hmac::sign(&key, body).as_ref()))
}

async fn post_webhook(transports: &Transports, item: &OutboxItem) -> Result<(), String> {
    let secret = transports.webhook_secret.as_deref().ok_or("no webhook secret is configured (webhook_secret)")?;
    let uri: hyper::Uri = item.recipient.parse().map_err(|e| format!("webhook {:?}: {e}", item.recipient))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("webhook {:?}: only http:// URLs are supported so far", item.recipient));
    }
    let host = uri.host().ok_or("webhook URL without a host")?.to_owned();
    let addr = format!("{host}:{}", uri.port_u16().unwrap_or(80));
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(&addr).await.map_err(|e| format!("{addr}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = hyper::Request::post(uri.clone())
            .header(hyper::header::HOST, host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("Tally-Signature", signature(secret, item.body.as_bytes()))
            .header("Tally-Notification-Id", item.id.to_string())
            .body(Full::new(Bytes::from(item.body.clone())))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        if status.is_success() { Ok(()) } else { Err(format!("webhook answered {status}")) }
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "webhook: no answer in 30 s".to_owned())?
}
