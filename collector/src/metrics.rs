//! What the collector counts for its operator's monitoring, served as OpenMetrics text at
//! `GET /metrics` ([`encode`]). One set per process ([`get`]), updated where each thing happens;
//! the backlogs (dirty site-days, the outbox) are read from the store at each scrape, so every
//! collector sharing a database reports the same figures for them. A leaf: it knows nothing of
//! the store, which counts its own errors here.
//!
//! Cardinality is bounded: labels are results, codes, reasons, channels and route templates,
//! never a site or an account.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The collector's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Agents with an open connection after `Welcome`.
    pub agents_connected: Gauge,
    /// QUIC handshakes, by `result` ([`Handshake`]).
    pub handshakes: Family<Labels, Counter>,
    /// Connections closed with an error code, by `code`.
    pub connections_refused: Family<Labels, Counter>,
    /// Buckets in the batches received.
    pub buckets_received: Counter,
    /// Buckets committed to the store (acknowledged).
    pub buckets_stored: Counter,
    /// Buckets refused, by `reason`.
    pub buckets_refused: Family<Labels, Counter>,
    /// Buckets quarantined for their time.
    pub buckets_quarantined: Counter,
    /// How long one group commit took.
    pub group_commit_seconds: Histogram,
    /// Site-days recomputed (R5).
    pub site_days_recomputed: Counter,
    /// How long one recomputation of the dirty days took.
    pub recompute_seconds: Histogram,
    /// Months finalized by this collector (R9): counted by the one whose transaction saved it.
    pub months_finalized: Counter,
    /// Attempts to finalize an account's month that failed (each is retried, R34).
    pub finalization_failures: Counter,
    /// Notifications delivered, by `channel`.
    pub notifications_delivered: Family<Labels, Counter>,
    /// Notification attempts that failed (each is retried), by `channel`.
    pub notification_failures: Family<Labels, Counter>,
    /// HTTP requests answered, by `route` (its template), `method` and `status`.
    pub http_requests: Family<Labels, Counter>,
    /// How long HTTP requests took, by `route`.
    pub http_request_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Store errors, by `kind` (`unavailable`: cannot write now; `database`; `corrupt`).
    pub store_errors: Family<Labels, Counter>,
    /// Dirty site-days waiting for their recomputation (read at each scrape).
    pub dirty_site_days: Gauge,
    /// Notifications not delivered yet (read at each scrape).
    pub outbox_pending: Gauge,
}

/// One metric's labels, each from a bounded set of values.
pub type Labels = Vec<(&'static str, String)>;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// How a QUIC handshake ended.
#[derive(Debug, Clone, Copy)]
pub enum Handshake {
    Completed,
    Failed,
    TimedOut,
    /// Refused before it started: too many connections were waiting for theirs.
    Refused,
}

impl Handshake {
    fn as_str(self) -> &'static str {
        match self {
            Handshake::Completed => "completed",
            Handshake::Failed => "failed",
            Handshake::TimedOut => "timed_out",
            Handshake::Refused => "refused",
        }
    }
}

/// Seconds from 1 ms to about 16 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    fn new() -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("tally"),
            agents_connected: Gauge::default(),
            handshakes: Family::default(),
            connections_refused: Family::default(),
            buckets_received: Counter::default(),
            buckets_stored: Counter::default(),
            buckets_refused: Family::default(),
            buckets_quarantined: Counter::default(),
            group_commit_seconds: latency(),
            site_days_recomputed: Counter::default(),
            recompute_seconds: latency(),
            months_finalized: Counter::default(),
            finalization_failures: Counter::default(),
            notifications_delivered: Family::default(),
            notification_failures: Family::default(),
            http_requests: Family::default(),
            http_request_seconds: Family::new_with_constructor(latency),
            store_errors: Family::default(),
            dirty_site_days: Gauge::default(),
            outbox_pending: Gauge::default(),
        };
        let r = &mut metrics.registry;
        r.register("agents_connected", "Agents connected", metrics.agents_connected.clone());
        r.register("handshakes", "QUIC handshakes by result", metrics.handshakes.clone());
        r.register("connections_refused", "Connections closed with an error code", metrics.connections_refused.clone());
        r.register("buckets_received", "Buckets received from agents", metrics.buckets_received.clone());
        r.register("buckets_stored", "Buckets committed and acknowledged", metrics.buckets_stored.clone());
        r.register("buckets_refused", "Buckets refused, by reason", metrics.buckets_refused.clone());
        r.register("buckets_quarantined", "Buckets quarantined for their time", metrics.buckets_quarantined.clone());
        let seconds = Unit::Seconds;
        r.register_with_unit(
            "group_commit",
            "Group commit latency",
            seconds.clone(),
            metrics.group_commit_seconds.clone(),
        );
        r.register("site_days_recomputed", "Site-days whose P95 was recomputed", metrics.site_days_recomputed.clone());
        r.register_with_unit(
            "recompute",
            "Recomputation of dirty site-days",
            seconds.clone(),
            metrics.recompute_seconds.clone(),
        );
        r.register("months_finalized", "Months finalized", metrics.months_finalized.clone());
        r.register(
            "finalization_failures",
            "Attempts to finalize an account's month that failed",
            metrics.finalization_failures.clone(),
        );
        r.register("notifications_delivered", "Notifications delivered", metrics.notifications_delivered.clone());
        r.register("notification_failures", "Notification attempts failed", metrics.notification_failures.clone());
        r.register("http_requests", "HTTP requests by route, method and status", metrics.http_requests.clone());
        r.register_with_unit("http_request", "HTTP request latency", seconds, metrics.http_request_seconds.clone());
        r.register("store_errors", "Store errors by kind", metrics.store_errors.clone());
        r.register("dirty_site_days", "Dirty site-days waiting", metrics.dirty_site_days.clone());
        r.register("outbox_pending", "Notifications not delivered yet", metrics.outbox_pending.clone());
        // Every value of the small label sets from zero, so a rate has a start and a dashboard
        // shows 0 rather than nothing.
        for result in [Handshake::Completed, Handshake::Failed, Handshake::TimedOut, Handshake::Refused] {
            let _ = metrics.handshakes.get_or_create(&labels(&[("result", result.as_str())]));
        }
        for reason in tally_common::wire::Refusal::ALL {
            let _ = metrics.buckets_refused.get_or_create(&labels(&[("reason", &format!("{reason:?}"))]));
        }
        // The store's channels (`Channel::as_str`) and error kinds (`StoreError::kind`).
        for channel in ["email", "webhook"] {
            let _ = metrics.notifications_delivered.get_or_create(&labels(&[("channel", channel)]));
            let _ = metrics.notification_failures.get_or_create(&labels(&[("channel", channel)]));
        }
        for kind in ["unavailable", "database", "corrupt"] {
            let _ = metrics.store_errors.get_or_create(&labels(&[("kind", kind)]));
        }
        metrics
    }

    pub fn handshake(&self, result: Handshake) {
        self.handshakes.get_or_create(&labels(&[("result", result.as_str())])).inc();
    }

    pub fn refused(&self, code: tally_common::wire::ErrorCode) {
        self.connections_refused.get_or_create(&labels(&[("code", &format!("{code:?}"))])).inc();
    }

    pub fn bucket_refused(&self, reason: tally_common::wire::Refusal) {
        self.buckets_refused.get_or_create(&labels(&[("reason", &format!("{reason:?}"))])).inc();
    }

    /// Counts a store error of `kind`; every backend's database errors pass through here once.
    pub fn store_error(&self, kind: &str) {
        self.store_errors.get_or_create(&labels(&[("kind", kind)])).inc();
    }

    pub fn notification(&self, channel: &str, delivered: bool) {
        let family = if delivered { &self.notifications_delivered } else { &self.notification_failures };
        family.get_or_create(&labels(&[("channel", channel)])).inc();
    }

    /// Counts an HTTP request answered, with the time since `started`.
    pub fn http_request(&self, route: &str, method: &str, status: u16, started: Instant) {
        let status = status.to_string();
        self.http_requests.get_or_create(&labels(&[("route", route), ("method", method), ("status", &status)])).inc();
        self.http_request_seconds.get_or_create(&labels(&[("route", route)])).observe(started.elapsed().as_secs_f64());
    }
}

/// Counts each HTTP request by its route's template (`/v1/accounts/{account}/usage`; a path
/// that is no route is `unmatched`), so no account or site becomes a label.
pub async fn track(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let started = Instant::now();
    let route = request.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = route.as_deref().unwrap_or("unmatched");
    get().http_request(route, method_label(&method), response.status().as_u16(), started);
    response
}

/// A request's method as a label: the standard ones by name, any other `other` (the client
/// chooses the method, and each new label value would be a new series).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// This process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// The OpenMetrics text of every metric, with the backlogs as the store has them now: dirty
/// site-days and notifications not delivered.
pub fn encode(dirty_site_days: u64, outbox_pending: u64) -> String {
    let metrics = get();
    metrics.dirty_site_days.set(i64::try_from(dirty_site_days).unwrap_or(i64::MAX));
    metrics.outbox_pending.set(i64::try_from(outbox_pending).unwrap_or(i64::MAX));
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &metrics.registry) {
        tracing::error!(error = %e, "the metrics could not be encoded");
    }
    text
}
