//! The HTTP API under `/v1` (Contract), and `/healthz`. Every `/v1` route needs a bearer token
//! and sees only the caller's accounts ([`auth`]); changes of sites, events and over-usage
//! resolutions are the operator's.

pub mod auth;
pub mod body;
pub mod json;
mod openapi;
pub mod orders;
pub mod problem;
pub mod recipients;
mod sites;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use chrono::NaiveDate;
use json::Json;
use serde::Serialize;
use tally_common::region::RegionTable;
use tally_common::time::{Month, MonthWindowSetting};

use crate::accounts::terms::{self, AccountView};
use crate::config::Config;
use crate::store::Store;
use crate::usage::document::{MonthStatus, OverusageReport, UsageReport};
use crate::usage::overusage::{self, ResolveError, ResolveRequest};
use crate::usage::report::{self, ReportError};
use crate::usage::{events, finalized};
use auth::{Caller, internal, visible_account};
use problem::{FieldError, Problem};

/// What the handlers share.
#[derive(Debug)]
pub struct Api<S> {
    store: Arc<S>,
    month_window: MonthWindowSetting,
    /// Addresses that keep presenting wrong tokens are slowed down.
    wrong_tokens: Arc<crate::throttle::WrongTokens>,
    /// Where webhooks may be delivered (recipients are checked when added).
    pub(crate) webhook_targets: crate::net::webhook_target::WebhookTargets,
    max_event_age: chrono::TimeDelta,
    operator_token: Option<String>,
    exposure: crate::net::https::Exposure,
    regions: Arc<RegionTable>,
}

impl<S> Clone for Api<S> {
    fn clone(&self) -> Self {
        Api {
            store: self.store.clone(),
            month_window: self.month_window,
            wrong_tokens: self.wrong_tokens.clone(),
            webhook_targets: self.webhook_targets.clone(),
            max_event_age: self.max_event_age,
            operator_token: self.operator_token.clone(),
            exposure: self.exposure.clone(),
            regions: self.regions.clone(),
        }
    }
}

impl<S: Store + 'static> Api<S> {
    pub fn new(store: Arc<S>, config: &Config) -> Api<S> {
        Api {
            store,
            month_window: config.month_window,
            wrong_tokens: Arc::new(crate::throttle::WrongTokens::new(config.wrong_tokens_per_minute)),
            webhook_targets: crate::net::webhook_target::WebhookTargets::new(config.webhook_allowed_networks.clone()),
            max_event_age: config.max_event_age,
            operator_token: config.operator_token.clone(),
            exposure: config.exposure.clone(),
            regions: Arc::new(RegionTable::builtin()),
        }
    }

    /// The caller of a request: 403 where a token would travel in clear over a network, 401
    /// without a valid token.
    async fn caller(&self, headers: &HeaderMap, extensions: &Extensions) -> Result<Caller, Problem> {
        self.exposure.token_allowed(headers, extensions).map_err(Problem::forbidden)?;
        let client = self.exposure.client(headers, extensions);
        if let Some(ip) = client {
            self.wrong_tokens.check(ip).map_err(Problem::too_many_wrong_tokens)?;
        }
        let caller = auth::caller(&*self.store, self.operator_token.as_deref(), headers).await;
        // A token presented and refused counts; a request without one is only unauthenticated.
        let presented = headers.contains_key(axum::http::header::AUTHORIZATION);
        if let (Err(problem), Some(ip), true) = (&caller, client, presented)
            && problem.status == StatusCode::UNAUTHORIZED.as_u16()
        {
            self.wrong_tokens.failed(ip);
        }
        caller
    }

    pub fn router(self) -> Router {
        let v1 = Router::new()
            .route("/v1/accounts/{account}", get(account::<S>))
            .route(
                "/v1/accounts/{account}/recipients",
                get(recipients::list::<S>).post(recipients::add::<S>).delete(recipients::remove::<S>),
            )
            .route("/v1/accounts/{account}/usage", get(usage::<S>))
            .route("/v1/usage/events", post(usage_events::<S>))
            .route("/v1/accounts/{account}/overusage", get(overusage_of_month::<S>))
            .route("/v1/accounts/{account}/overusage/{id}/resolution", post(resolve_overusage::<S>))
            .route("/v1/accounts/{account}/sites/{site}", patch(sites::change_site::<S>))
            .route("/v1/accounts/{account}/orders", get(orders::list::<S>).post(orders::create::<S>))
            .route("/v1/accounts/{account}/orders/{order}", get(orders::one::<S>))
            .route("/v1/accounts/{account}/orders/{order}/transitions", post(orders::transition::<S>))
            .route("/v1/accounts/{account}/sites/{site}/enforcement", get(sites::site_enforcement::<S>))
            .route("/v1/accounts/{account}/sites/{site}/intake", get(sites::site_intake::<S>))
            .route("/v1/sites", get(sites::all_sites_activity::<S>))
            .route("/v1/enforcement/at-risk", get(sites::pools_at_risk::<S>))
            .route("/v1/accounts/{account}/sites", get(sites::account_sites_activity::<S>))
            .route("/metrics", get(operator_metrics::<S>))
            // Before the body is read: a request without a valid token costs nothing more.
            .route_layer(middleware::from_fn_with_state(self.clone(), authenticated::<S>));
        Router::new()
            .route("/healthz", get(healthz::<S>))
            .route("/openapi.json", get(|| async { Json(openapi::document()) }))
            .merge(v1)
            .fallback(no_route)
            .method_not_allowed_fallback(no_method)
            .layer(middleware::from_fn(within_deadline))
            .layer(middleware::from_fn(problem::problems_only))
            .with_state(self)
    }
}

/// `GET /metrics` on the HTTP listener, for an operator's token; `metrics_listen` serves it
/// without one ([`metrics_router`]).
async fn operator_metrics<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Problem> {
    caller.operator_only("read the metrics")?;
    metrics(&*api.store).await
}

/// Every metric, as OpenMetrics text ([`crate::metrics`]).
async fn metrics<S: Store>(store: &S) -> Result<Response, Problem> {
    let backlogs = tokio::try_join!(store.dirty_days_waiting(), store.notifications_pending());
    let (dirty, pending) = backlogs.map_err(internal)?;
    let text = crate::metrics::encode(dirty, pending);
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], text).into_response())
}

/// `GET /metrics` alone, without a token: for `metrics_listen`, an address only the monitoring
/// reaches.
pub fn metrics_router<S: Store + 'static>(store: Arc<S>) -> Router {
    Router::new()
        .route("/metrics", get(|State(store): State<Arc<S>>| async move { metrics(&*store).await }))
        .fallback(no_route)
        .layer(middleware::from_fn(within_deadline))
        .with_state(store)
}

/// Refuses a `/v1` request without a valid bearer token before its body is read; hands the
/// handler its [`Caller`].
async fn authenticated<S: Store + 'static>(
    State(api): State<Api<S>>,
    mut request: Request,
    next: Next,
) -> Result<Response, Problem> {
    let caller = api.caller(request.headers(), request.extensions()).await?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// 408 for a request not answered within [`crate::net::http::REQUEST_DEADLINE`] (a body sent too
/// slowly, say).
pub async fn within_deadline(request: Request, next: Next) -> Result<Response, Problem> {
    let deadline = crate::net::http::REQUEST_DEADLINE;
    tokio::time::timeout(deadline, next.run(request))
        .await
        .map_err(|_| Problem::request_timeout(format!("the request was not complete within {} s", deadline.as_secs())))
}

/// Any path that is not a route: a problem, like every other error.
async fn no_route(uri: axum::http::Uri) -> Problem {
    Problem::not_found(format!("there is no route {} (the routes are listed in /openapi.json)", uri.path()))
}

/// A route asked with a method it does not answer.
async fn no_method(method: axum::http::Method, uri: axum::http::Uri) -> Problem {
    Problem::method_not_allowed(format!("{} does not answer {method} (see /openapi.json)", uri.path()))
}

/// How long `/healthz` waits for the database's answer.
pub const HEALTH_PROBE: std::time::Duration = std::time::Duration::from_secs(2);

/// The service is up, its database answers (asked each time, for at most [`HEALTH_PROBE`]) and
/// its store writes: 200 `ok`; else 503 `failing` with the cause, until it passes.
#[utoipa::path(get, path = "/healthz", tag = "service", responses(
    (status = 200, body = Health),
    (status = 503, body = Health, description = "The database does not answer, or store writes are failing")))]
async fn healthz<S: Store + 'static>(State(api): State<Api<S>>) -> (StatusCode, Json<Health>) {
    let failing = match tokio::time::timeout(HEALTH_PROBE, api.store.probe()).await {
        Err(_) => Some(format!("{} within {} s", crate::store::cause::NO_ANSWER, HEALTH_PROBE.as_secs())),
        Ok(Err(e)) => Some(e.cause().map_or_else(|| e.to_string(), str::to_owned)),
        Ok(Ok(())) => api.store.write_failure(),
    };
    match failing {
        None => (StatusCode::OK, Json(Health { status: "ok".into(), detail: None })),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "failing".into(), detail: Some(why) })),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Health {
    /// `ok` or `failing`.
    status: String,
    /// Why, when failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The `month` query parameter, `YYYY-MM`.
fn month_of(query: &HashMap<String, String>) -> Result<Month, Problem> {
    match query.get("month") {
        None => Err(Problem::bad_request(vec![FieldError::new("month", "required, as YYYY-MM")])),
        Some(m) => m.parse().map_err(|e| Problem::bad_request(vec![FieldError::new("month", format!("{e}"))])),
    }
}

/// `GET /v1/accounts/{account}/usage?month=YYYY-MM`: the usage report (Contract). A finalized
/// month carries an `ETag` over its saved document and what arrived since; asked again with it in
/// `If-None-Match`, the answer is 304 and no body. `sites_limit` and `sites_after` page the
/// sites (a paged report has no ETag).
#[utoipa::path(get, path = "/v1/accounts/{account}/usage", tag = "usage",
    params(("account" = String, Path), ("month" = Month, Query, description = "YYYY-MM"),
        ("sites_limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "a page of this many sites (by id); the pools and meters stay the whole account's"),
        ("sites_after" = Option<String>, Query, description = "the page's sites come after this site id (the previous page's `sites_page.next_after`)"),
        ("If-None-Match" = Option<String>, Header, description = "the ETag of a finalized month's report the client holds")),
    responses(
        (status = 200, body = UsageReport, headers(("ETag" = String, description = "a finalized month's: its report and what arrived since"))),
        (status = 304, description = "The finalized month's report is the one the client holds"),
        (status = 400, description = "Invalid request, by field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the caller's)", body = Problem, content_type = "application/problem+json")))]
async fn usage<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path(account): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let month = month_of(&query)?;
    let page = sites_page_of(&query)?;
    visible_account(&*api.store, &caller, &account).await?;
    let now = crate::clock::now();
    if let Some((after, limit)) = page {
        let mut report =
            report::build(&*api.store, &account, month, api.month_window, now).await.map_err(report_problem)?;
        report.page_sites(after.as_deref(), limit);
        return Ok(Json(report).into_response());
    }
    let if_none_match = headers.get(axum::http::header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    let served = finalized::serve(&*api.store, &account, month, if_none_match).await.map_err(internal)?;
    let built = async || report::build(&*api.store, &account, month, api.month_window, now).await;
    let Some(served) = served else {
        return Ok(Json(built().await.map_err(report_problem)?).into_response());
    };
    let etag = [(axum::http::header::ETAG, served.etag)];
    Ok(match served.body {
        finalized::Body::Unchanged => (StatusCode::NOT_MODIFIED, etag).into_response(),
        finalized::Body::Saved(body) => {
            (etag, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        finalized::Body::Parse => (etag, Json(built().await.map_err(report_problem)?)).into_response(),
    })
}

/// The most sites a page of a usage report holds.
const MAX_SITES_PAGE: usize = 1_000;

/// `sites_after` and `sites_limit`, when either is given: the page of sites asked for.
fn sites_page_of(query: &HashMap<String, String>) -> Result<Option<(Option<String>, usize)>, Problem> {
    let after = query.get("sites_after").cloned();
    let limit = match query.get("sites_limit") {
        None if after.is_none() => return Ok(None),
        None => MAX_SITES_PAGE,
        Some(limit) => match limit.parse::<usize>() {
            Ok(n) if (1..=MAX_SITES_PAGE).contains(&n) => n,
            _ => {
                let said = format!("a whole number of sites from 1 to {MAX_SITES_PAGE}, not {limit:?}");
                return Err(Problem::bad_request(vec![FieldError::new("sites_limit", said)]));
            }
        },
    };
    Ok(Some((after, limit)))
}

/// An unknown account, or a month before its life (R28), is a 404.
pub fn report_problem(e: ReportError) -> Problem {
    match e {
        ReportError::UnknownAccount(a) => Problem::not_found(format!("account {a:?} does not exist")),
        e @ ReportError::BeforeAccountLife { .. } => Problem::not_found(e.to_string()),
        ReportError::Store(e) => internal(e),
    }
}

/// `POST /v1/usage/events`: metered events, each with a unique id (R12, R13). New events are
/// stored, repeated ids change nothing; bad events are refused by field and the good ones of the
/// same batch are kept (then the answer is a 422 problem saying what was kept).
#[utoipa::path(post, path = "/v1/usage/events", tag = "usage",
    request_body = EventsBody,
    responses(
        (status = 200, body = EventsSummary),
        (status = 400, description = "Invalid request, by field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the caller's to do", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than a request may be", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by a rule, by field", body = Problem, content_type = "application/problem+json")))]
async fn usage_events<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<EventsSummary>, Problem> {
    caller.operator_only("record metered events")?;
    let body = body::object(&body)?;
    let accepted = (crate::clock::now(), api.max_event_age);
    let events::Batch { good: parsed, mut errors } =
        events::parse_batch(&body, &api.regions, accepted).map_err(|e| Problem::bad_request(vec![e]))?;
    // Each account's life (R28, R33): an event before it belongs to no month of the account.
    let mut lives: HashMap<String, Option<NaiveDate>> = HashMap::new();
    let mut good = Vec::with_capacity(parsed.len());
    for (i, event) in parsed {
        let since = match lives.get(&event.account) {
            Some(since) => *since,
            None => {
                let since = api.store.account_life(&event.account).await.map_err(internal)?.map(|l| l.since);
                lives.insert(event.account.clone(), since);
                since
            }
        };
        match since {
            None => errors.push(FieldError::new(
                format!("events[{i}].account"),
                format!("account {:?} does not exist", event.account),
            )),
            Some(since) if event.occurred_at.date_naive() < since => errors.push(FieldError::new(
                format!("events[{i}].time"),
                format!("is before account {}'s life, which begins {since}", event.account),
            )),
            Some(_) => good.push(event),
        }
    }
    let added = api.store.add_usage_events(&good).await.map_err(internal)?;
    let summary = EventsSummary {
        accepted: good.len() as u64,
        new: added.new,
        duplicates: good.len() as u64 - added.new,
        late: added.late,
    };
    if errors.is_empty() {
        Ok(Json(summary))
    } else {
        let kept = match serde_json::to_value(&summary) {
            Ok(serde_json::Value::Object(kept)) => kept,
            _ => serde_json::Map::new(),
        };
        Err(Problem::partly_refused(errors, kept))
    }
}

/// The body of `POST /v1/usage/events`.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // a schema only: `events::parse_batch` reads the body field by field
struct EventsBody {
    /// A bad event is refused by field and the others kept.
    #[schema(max_items = 10_000)]
    events: Vec<MeteredEvent>,
}

/// A metered event: every one has a unique `id`, its `type`, the `account` and the `time` it
/// happened (RFC 3339, within `max_event_age_days`); then its type's fields.
#[derive(Debug, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // a schema only
enum MeteredEvent {
    ZtnaSession(ZtnaSession),
    AiSecurityActivity(AiSecurityActivity),
    DemUser(DemUser),
    DeviceSighting(DeviceSighting),
    DataLakeHour(DataLakeHour),
}

/// A remote user's ZTNA session: counted when authenticated, with traffic, remote.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // a schema only
struct ZtnaSession {
    #[serde(flatten)]
    common: EventCommon,
    #[schema(pattern = "^ztna_session$")]
    r#type: String,
    #[schema(min_length = 1, max_length = 256, pattern = "\\S")]
    user: String,
    authenticated: bool,
    generated_traffic: bool,
    remote: bool,
    /// ISO 3166-1 alpha-2.
    #[schema(pattern = "^[A-Z]{2}$")]
    work_country: String,
}

/// A user's AI security activity: counted when enabled.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // a schema only
struct AiSecurityActivity {
    #[serde(flatten)]
    common: EventCommon,
    #[schema(pattern = "^ai_security_activity$")]
    r#type: String,
    #[schema(min_length = 1, max_length = 256, pattern = "\\S")]
    user: String,
    enabled: bool,
}

/// A user seen by digital experience monitoring.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // a schema only
struct DemUser {
    #[serde(flatten)]
    common: EventCommon,
    #[schema(pattern = "^dem_user$")]
    r#type: String,
    #[schema(min_length = 1, max_length = 256, pattern = "\\S")]
    user: String,
}

/// A device seen on a site: counted unless it is a socket.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // a schema only
struct DeviceSighting {
    #[serde(flatten)]
    common: EventCommon,
    #[schema(pattern = "^device_sighting$")]
    r#type: String,
    #[schema(min_length = 1, max_length = 256, pattern = "\\S")]
    device: String,
    #[schema(pattern = "^(inline|lan_discovery|integration)$")]
    source: String,
    is_socket: bool,
}

/// The Data Lake's events of the hour of `time`.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // a schema only
struct DataLakeHour {
    #[serde(flatten)]
    common: EventCommon,
    #[schema(pattern = "^data_lake_hour$")]
    r#type: String,
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_u64)]
    count: u64,
}

/// The fields every metered event has.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // a schema only
struct EventCommon {
    #[schema(min_length = 1, max_length = 256, pattern = "\\S")]
    id: String,
    #[schema(min_length = 1, max_length = 256, pattern = "\\S")]
    account: String,
    #[schema(format = DateTime)]
    time: String,
}

/// What a batch of metered events did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EventsSummary {
    /// Events of known accounts, new or repeated.
    accepted: u64,
    new: u64,
    /// Ids seen before: changed nothing.
    duplicates: u64,
    /// New events of a month already finalized: stored and counted as late, never billed (R33).
    late: u64,
}

/// `GET /v1/accounts/{account}`: the account, its contract terms (R27) and the licenses that end
/// with the term in force today.
#[utoipa::path(get, path = "/v1/accounts/{account}", tag = "accounts",
    params(("account" = String, Path)),
    responses(
        (status = 200, body = AccountView),
        (status = 404, description = "No such account (or not the caller's)", body = Problem, content_type = "application/problem+json")))]
async fn account<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path(account): Path<String>,
) -> Result<Json<AccountView>, Problem> {
    visible_account(&*api.store, &caller, &account).await?;
    let today = crate::clock::now().date_naive();
    let view = terms::account_view(&*api.store, &account, today).await.map_err(internal)?;
    view.map(Json).ok_or_else(|| Problem::not_found(format!("account {account:?} does not exist")))
}

/// `GET /v1/accounts/{account}/overusage?month=YYYY-MM`: the month's over-usage (R14), found when
/// the engine finalized it (R34): none before.
#[utoipa::path(get, path = "/v1/accounts/{account}/overusage", tag = "usage",
    params(("account" = String, Path), ("month" = Month, Query, description = "YYYY-MM")),
    responses(
        (status = 200, body = OverusageOfMonth),
        (status = 400, description = "Invalid request, by field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the caller's)", body = Problem, content_type = "application/problem+json")))]
async fn overusage_of_month<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path(account): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<OverusageOfMonth>, Problem> {
    let month = month_of(&query)?;
    visible_account(&*api.store, &caller, &account).await?;
    let report = report::build(&*api.store, &account, month, api.month_window, crate::clock::now())
        .await
        .map_err(report_problem)?;
    Ok(Json(OverusageOfMonth { account, month, status: report.status, overusage: report.overusage }))
}

/// A month's over-usage of an account (R14).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct OverusageOfMonth {
    account: String,
    month: Month,
    status: MonthStatus,
    overusage: Vec<OverusageReport>,
}

/// `POST /v1/accounts/{account}/overusage/{id}/resolution` with `{"type": "true_up"}` or
/// `{"type": "true_forward", "quantity": N}` in the license's unit (`quantity_mbps` for the
/// bandwidth pool; `region` for ZTNA when the account holds several) (R16, R32).
#[utoipa::path(post, path = "/v1/accounts/{account}/overusage/{id}/resolution", tag = "usage",
    params(("account" = String, Path), ("id" = String, Path, description = "The over-usage's id")),
    request_body = ResolveRequest,
    responses(
        (status = 201, body = OverusageReport),
        (status = 400, description = "Invalid request, by field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the caller's to do", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the caller's)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Conflicts with the current state", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by a rule, by field", body = Problem, content_type = "application/problem+json")))]
async fn resolve_overusage<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path((account, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<(axum::http::StatusCode, Json<OverusageReport>), Problem> {
    visible_account(&*api.store, &caller, &account).await?;
    caller.operator_only("resolve an over-usage")?;
    let id: i64 = id.parse().map_err(|_| Problem::not_found(format!("over-usage {id:?} does not exist")))?;
    let request: ResolveRequest = body::typed(
        &body,
        r#"{"type": "true_up"} or {"type": "true_forward", "quantity": N} ("quantity_mbps" for the pool)"#,
    )?;
    let resolved = resolve(&*api.store, &account, id, request).await?;
    Ok((axum::http::StatusCode::CREATED, Json(resolved)))
}

/// Resolves over-usage `id` of `account` (R16), as the API and the console both do (the caller
/// checked to be an operator first).
pub async fn resolve<S: Store>(
    store: &S,
    account: &str,
    id: i64,
    request: ResolveRequest,
) -> Result<OverusageReport, Problem> {
    match overusage::resolve(store, account, id, request, crate::clock::now()).await {
        Ok(resolved) => Ok(OverusageReport::from(&resolved)),
        Err(e @ ResolveError::NotFound(_)) => Err(Problem::not_found(e.to_string())),
        Err(e @ (ResolveError::AlreadyResolved(_) | ResolveError::NoLicense { .. } | ResolveError::NoTerm { .. })) => {
            Err(Problem::conflict(e.to_string()))
        }
        Err(e @ (ResolveError::BelowRequired { field, .. } | ResolveError::Field { field, .. })) => {
            Err(Problem::unprocessable(vec![FieldError::new(field, e.to_string())]))
        }
        Err(ResolveError::Store(e)) => Err(internal(e)),
    }
}
