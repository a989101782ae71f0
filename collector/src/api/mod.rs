//! The HTTP API under `/v1` (Contract), and `/healthz`. Every `/v1` route needs a bearer token
//! and sees only the caller's accounts ([`auth`]); changes of sites, events and over-usage
//! resolutions are the operator's.

pub mod auth;
mod body;
mod openapi;
pub mod orders;
pub mod problem;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tally_common::kinds::SiteType;
use tally_common::region::{CountryCode, RegionGroup, RegionTable};
use tally_common::time::{Month, MonthWindowSetting};

use crate::admin::{self, AdminError, SiteChanges};
use crate::config::Config;
use crate::enforcement::{self, SiteEnforcement};
use crate::intake::{self, IntakeReport, SiteActivityView};
use crate::pool_risk::{self, PoolAtRisk};
use crate::store::Store;
use crate::usage::document::{MonthStatus, OverusageReport, UsageReport};
use crate::usage::events;
use crate::usage::overusage::{self, ResolveError, ResolveRequest};
use crate::usage::report::{self, ReportError};
use auth::{Caller, internal, visible_account};
use problem::{FieldError, Problem};

/// What the handlers share.
#[derive(Debug)]
pub struct Api<S> {
    store: Arc<S>,
    month_window: MonthWindowSetting,
    grace: TimeDelta,
    operator_token: Option<String>,
    regions: Arc<RegionTable>,
}

impl<S> Clone for Api<S> {
    fn clone(&self) -> Self {
        Api {
            store: self.store.clone(),
            month_window: self.month_window,
            grace: self.grace,
            operator_token: self.operator_token.clone(),
            regions: self.regions.clone(),
        }
    }
}

impl<S: Store + 'static> Api<S> {
    pub fn new(store: Arc<S>, config: &Config) -> Api<S> {
        Api {
            store,
            month_window: config.month_window,
            grace: config.grace,
            operator_token: config.operator_token.clone(),
            regions: Arc::new(RegionTable::builtin()),
        }
    }

    /// The caller of a request (401 without a valid token).
    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, Problem> {
        auth::caller(&*self.store, self.operator_token.as_deref(), headers).await
    }

    pub fn router(self) -> Router {
        let v1 = Router::new()
            .route("/v1/accounts/{account}/usage", get(usage::<S>))
            .route("/v1/usage/events", post(usage_events::<S>))
            .route("/v1/accounts/{account}/overusage", get(overusage_of_month::<S>))
            .route("/v1/accounts/{account}/overusage/{id}/resolution", post(resolve_overusage::<S>))
            .route("/v1/accounts/{account}/sites/{site}", patch(change_site::<S>))
            .route("/v1/accounts/{account}/orders", get(orders::list::<S>).post(orders::create::<S>))
            .route("/v1/accounts/{account}/orders/{order}", get(orders::one::<S>))
            .route("/v1/accounts/{account}/orders/{order}/transitions", post(orders::transition::<S>))
            .route("/v1/accounts/{account}/sites/{site}/enforcement", get(site_enforcement::<S>))
            .route("/v1/accounts/{account}/sites/{site}/intake", get(site_intake::<S>))
            .route("/v1/sites", get(all_sites_activity::<S>))
            .route("/v1/enforcement/at-risk", get(pools_at_risk::<S>))
            .route("/v1/accounts/{account}/sites", get(account_sites_activity::<S>))
            // Before the body is read: a request without a valid token costs nothing more.
            .route_layer(middleware::from_fn_with_state(self.clone(), authenticated::<S>));
        Router::new()
            .route("/healthz", get(healthz::<S>))
            .route("/openapi.json", get(|| async { Json(openapi::document()) }))
            .merge(v1)
            .fallback(no_route)
            .method_not_allowed_fallback(no_method)
            .layer(middleware::from_fn(within_deadline))
            .with_state(self)
    }
}

/// Refuses a `/v1` request without a valid bearer token before its body is read; hands the
/// handler its [`Caller`].
async fn authenticated<S: Store + 'static>(
    State(api): State<Api<S>>,
    mut request: Request,
    next: Next,
) -> Result<Response, Problem> {
    let caller = api.caller(request.headers()).await?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// 408 for a request not answered within [`crate::http::REQUEST_DEADLINE`] (a body sent too
/// slowly, say).
async fn within_deadline(request: Request, next: Next) -> Result<Response, Problem> {
    let deadline = crate::http::REQUEST_DEADLINE;
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

/// The service is up and its store writes: 200 `ok`; 503 `failing` with the reason while store
/// writes fail (a full disk), until one commits again.
#[utoipa::path(get, path = "/healthz", tag = "service", responses(
    (status = 200, body = Health), (status = 503, body = Health, description = "Store writes are failing")))]
async fn healthz<S: Store + 'static>(State(api): State<Api<S>>) -> (StatusCode, Json<Health>) {
    match api.store.write_failure() {
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

/// `GET /v1/accounts/{account}/usage?month=YYYY-MM`: the usage report (Contract).
#[utoipa::path(get, path = "/v1/accounts/{account}/usage", tag = "usage",
    params(("account" = String, Path), ("month" = Month, Query, description = "YYYY-MM")),
    responses(
        (status = 200, body = UsageReport),
        (status = 400, description = "Invalid request, by field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the caller's)", body = Problem, content_type = "application/problem+json")))]
async fn usage<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path(account): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<UsageReport>, Problem> {
    let month = month_of(&query)?;
    visible_account(&*api.store, &caller, &account).await?;
    report::build(&*api.store, &account, month, api.month_window, api.grace, crate::clock::now())
        .await
        .map(Json)
        .map_err(report_problem)
}

/// An unknown account, or a month before its life (R28), is a 404.
fn report_problem(e: ReportError) -> Problem {
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
        (status = 422, description = "Refused by a rule, by field", body = Problem, content_type = "application/problem+json")))]
async fn usage_events<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<EventsSummary>, Problem> {
    caller.operator_only("record metered events")?;
    let body = body::object(&body)?;
    let events::Batch { good: parsed, mut errors } =
        events::parse_batch(&body, &api.regions, crate::clock::now()).map_err(|e| Problem::bad_request(vec![e]))?;
    let mut known: HashMap<String, bool> = HashMap::new();
    let mut good = Vec::with_capacity(parsed.len());
    for (i, event) in parsed {
        let exists = match known.get(&event.account) {
            Some(exists) => *exists,
            None => {
                let exists = api.store.account(&event.account).await.map_err(internal)?.is_some();
                known.insert(event.account.clone(), exists);
                exists
            }
        };
        if exists {
            good.push(event);
        } else {
            errors.push(FieldError::new(
                format!("events[{i}].account"),
                format!("account {:?} does not exist", event.account),
            ));
        }
    }
    let added = api.store.add_usage_events(&good).await.map_err(internal)?;
    let summary = EventsSummary { accepted: good.len() as u64, new: added, duplicates: good.len() as u64 - added };
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
    /// Each event with a unique `id`, its `type`, `account` and `time` (RFC 3339), and its
    /// type's fields (see `usage::events`); a bad event is refused by field and the others kept.
    #[schema(max_items = 10_000, value_type = Vec<Object>)]
    events: Vec<serde_json::Value>,
}

/// What a batch of metered events did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EventsSummary {
    /// Events of known accounts, new or repeated.
    accepted: u64,
    new: u64,
    /// Ids seen before: changed nothing.
    duplicates: u64,
}

/// `GET /v1/accounts/{account}/overusage?month=YYYY-MM`: the month's over-usage (R14); the month
/// is finalized first if its grace period has ended.
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
    let report = report::build(&*api.store, &account, month, api.month_window, api.grace, crate::clock::now())
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
/// `{"type": "true_forward", "quantity": N}` (R16).
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
    let request: ResolveRequest =
        body::typed(&body, r#"{"type": "true_up"} or {"type": "true_forward", "quantity": N}"#)?;
    match overusage::resolve(&*api.store, &account, id, request, crate::clock::now()).await {
        Ok(resolved) => Ok((axum::http::StatusCode::CREATED, Json(OverusageReport::from(&resolved)))),
        Err(e @ ResolveError::NotFound(_)) => Err(Problem::not_found(e.to_string())),
        Err(e @ (ResolveError::AlreadyResolved(_) | ResolveError::NoTerm { .. })) => {
            Err(Problem::conflict(e.to_string()))
        }
        Err(e @ ResolveError::BelowExcess { .. }) => {
            Err(Problem::unprocessable(vec![FieldError::new("quantity", e.to_string())]))
        }
        Err(ResolveError::Store(e)) => Err(internal(e)),
    }
}

/// The site `site` of `account`; another account's site is as unknown as a missing one.
async fn site_of<S: Store>(api: &Api<S>, account: &str, site: &str) -> Result<crate::store::Site, Problem> {
    match api.store.site(site).await.map_err(internal)? {
        Some(found) if found.account == account => Ok(found),
        _ => Err(Problem::not_found(format!("account {account:?} has no site {site:?}"))),
    }
}

/// `GET /v1/accounts/{account}/sites/{site}/enforcement[?month=YYYY-MM]`: the site's cap, its
/// agent's report, and the month's buckets above the cap × 1.05 (R17). Default: this month.
#[utoipa::path(get, path = "/v1/accounts/{account}/sites/{site}/enforcement", tag = "sites",
    params(("account" = String, Path), ("site" = String, Path),
        ("month" = Option<Month>, Query, description = "YYYY-MM; this month when absent")),
    responses(
        (status = 200, body = SiteEnforcement),
        (status = 400, description = "Invalid request, by field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the caller's)", body = Problem, content_type = "application/problem+json")))]
async fn site_enforcement<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path((account, site)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<SiteEnforcement>, Problem> {
    visible_account(&*api.store, &caller, &account).await?;
    let month = if query.contains_key("month") { month_of(&query)? } else { Month::containing(crate::clock::today()) };
    let site = site_of(&api, &account, &site).await?;
    Ok(Json(enforcement::site_enforcement(&*api.store, &site, month, api.month_window).await.map_err(internal)?))
}

/// `GET /v1/accounts/{account}/sites/{site}/intake`: what the site's agent sent that was not
/// billed: refusals by reason, its discard totals (R3), its quarantined buckets.
#[utoipa::path(get, path = "/v1/accounts/{account}/sites/{site}/intake", tag = "sites",
    params(("account" = String, Path), ("site" = String, Path)),
    responses(
        (status = 200, body = IntakeReport),
        (status = 404, description = "No such account or site (or not the caller's)", body = Problem, content_type = "application/problem+json")))]
async fn site_intake<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path((account, site)): Path<(String, String)>,
) -> Result<Json<IntakeReport>, Problem> {
    visible_account(&*api.store, &caller, &account).await?;
    let site = site_of(&api, &account, &site).await?;
    intake::report(&*api.store, &site.id).await.map(Json).map_err(internal)
}

/// `GET /v1/enforcement/at-risk[?days=N]` (operator): every account and stand-alone group whose
/// site caps will exceed the pool in force on a day of the next N (default 30) days (R17).
#[utoipa::path(get, path = "/v1/enforcement/at-risk", tag = "sites",
    params(("days" = Option<u32>, Query, minimum = 0, maximum = 3660, description = "How many days ahead; 30 when absent")),
    responses(
        (status = 200, body = Vec<PoolAtRisk>),
        (status = 400, description = "Invalid request, by field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json")))]
async fn pools_at_risk<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<PoolAtRisk>>, Problem> {
    caller.operator_only("see every account's pools at risk")?;
    let days = match query.get("days") {
        None => pool_risk::DEFAULT_DAYS,
        Some(text) => text.parse().ok().filter(|d| *d <= pool_risk::MAX_DAYS).ok_or_else(|| {
            let message = format!("{text:?} is not a number of days from 0 to {}", pool_risk::MAX_DAYS);
            Problem::bad_request(vec![FieldError::new("days", message)])
        })?,
    };
    pool_risk::pools_at_risk(&*api.store, crate::clock::today(), days).await.map(Json).map_err(internal)
}

/// The sites (of `account`, or of all) with their last bucket and connection; with `silent`,
/// only those without a bucket for that long.
async fn sites_activity<S: Store>(
    api: &Api<S>,
    account: Option<&str>,
    query: &HashMap<String, String>,
) -> Result<Json<Vec<SiteActivityView>>, Problem> {
    let sites = match query.get("silent") {
        None => api.store.site_activity(account).await,
        Some(text) => {
            let silent =
                intake::duration(text).map_err(|e| Problem::bad_request(vec![FieldError::new("silent", e)]))?;
            intake::silent_sites(&*api.store, account, silent, crate::clock::now()).await
        }
    };
    Ok(Json(sites.map_err(internal)?.iter().map(Into::into).collect()))
}

/// `GET /v1/sites[?silent=2h]` (operator): every site's last bucket and last connection; with
/// `silent`, the sites without a bucket for that long (their traffic is not billed, R5).
#[utoipa::path(get, path = "/v1/sites", tag = "sites",
    params(("silent" = Option<String>, Query, pattern = "^[1-9][0-9]{0,5}[smhd]$",
            description = "30m, 2h, 1d: only the sites without a bucket for that long")),
    responses(
        (status = 200, body = Vec<SiteActivityView>),
        (status = 400, description = "Invalid request, by field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json")))]
async fn all_sites_activity<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<SiteActivityView>>, Problem> {
    caller.operator_only("list the sites of every account")?;
    sites_activity(&api, None, &query).await
}

/// `GET /v1/accounts/{account}/sites[?silent=2h]`: the account's sites, as `GET /v1/sites`.
#[utoipa::path(get, path = "/v1/accounts/{account}/sites", tag = "sites",
    params(("account" = String, Path),
        ("silent" = Option<String>, Query, pattern = "^[1-9][0-9]{0,5}[smhd]$",
            description = "30m, 2h, 1d: only the sites without a bucket for that long")),
    responses(
        (status = 200, body = Vec<SiteActivityView>),
        (status = 400, description = "Invalid request, by field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the caller's)", body = Problem, content_type = "application/problem+json")))]
async fn account_sites_activity<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path(account): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<SiteActivityView>>, Problem> {
    visible_account(&*api.store, &caller, &account).await?;
    sites_activity(&api, Some(&account), &query).await
}

/// The body of `PATCH /v1/accounts/{account}/sites/{site}`: what is absent keeps its value;
/// `"cap_bps": null` lifts the cap.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SitePatch {
    /// ISO 3166-1 alpha-2, one of the region table's countries (R11).
    #[schema(value_type = Option<String>, pattern = "^[A-Z]{2}$")]
    country: Option<String>,
    #[serde(rename = "type")]
    #[schema(value_type = Option<SiteType>)]
    site_type: Option<String>,
    /// The cap in bit/s; `null` lifts it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 10_000_000_000_000_u64)]
    cap_bps: Option<Option<u64>>,
}

/// The largest cap a site may have: 10 Tbit/s.
const MAX_CAP_BPS: u64 = 10_000_000_000_000;

/// A site as changed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SiteView {
    site: String,
    account: String,
    name: String,
    country: String,
    region_group: RegionGroup,
    #[serde(rename = "type")]
    site_type: SiteType,
    cap_bps: Option<u64>,
}

/// A field that is present, even as `null`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `PATCH /v1/accounts/{account}/sites/{site}`: a site's country, type or cap, applied only if
/// the account still complies with R17 (409 naming the sites, caps, sum and pool otherwise).
#[utoipa::path(patch, path = "/v1/accounts/{account}/sites/{site}", tag = "sites",
    params(("account" = String, Path), ("site" = String, Path)),
    request_body = SitePatch,
    responses(
        (status = 200, body = SiteView),
        (status = 400, description = "Invalid request, by field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the caller's to do", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the caller's)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Conflicts with the current state", body = Problem, content_type = "application/problem+json")))]
async fn change_site<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path((account, site)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<SiteView>, Problem> {
    visible_account(&*api.store, &caller, &account).await?;
    caller.operator_only("change a site")?;
    site_of(&api, &account, &site).await?;
    let patch: SitePatch = body::typed(&body, r#"{"country", "type", "cap_bps"}, each optional"#)?;
    let mut errors = Vec::new();
    let country = patch.country.as_deref().and_then(|c| {
        let parsed = c.parse::<CountryCode>().map_err(|e| e.to_string());
        let grouped = parsed.and_then(|code| api.regions.group_of(code).map(|_| code).map_err(|e| e.to_string()));
        grouped.map_err(|e| errors.push(FieldError::new("country", e))).ok()
    });
    let site_type = patch
        .site_type
        .as_deref()
        .and_then(|t| t.parse::<SiteType>().map_err(|e| errors.push(FieldError::new("type", e.to_string()))).ok());
    if let Some(Some(cap)) = patch.cap_bps
        && !(1..=MAX_CAP_BPS).contains(&cap)
    {
        let message = format!("a cap must be 1 to {MAX_CAP_BPS} bit/s, or null for none");
        errors.push(FieldError::new("cap_bps", message));
    }
    if !errors.is_empty() {
        return Err(Problem::bad_request(errors));
    }
    let changes = SiteChanges { site, country, site_type, cap_bps: patch.cap_bps };
    match admin::set_site(&*api.store, &api.regions, changes).await {
        Ok(site) => Ok(Json(SiteView {
            site: site.id,
            account: site.account,
            name: site.name,
            country: site.country.to_string(),
            region_group: site.region_group,
            site_type: site.site_type,
            cap_bps: site.cap_bps,
        })),
        Err(AdminError::Refused(violations)) => {
            let messages: Vec<String> = violations.iter().map(ToString::to_string).collect();
            let mut problem = Problem::conflict(format!("refused, nothing was changed: {}", messages.join("; ")));
            problem.extensions.insert("violations".into(), json!(messages));
            Err(problem)
        }
        Err(AdminError::Store(e)) => Err(internal(e)),
        Err(e) => Err(Problem::bad_request(vec![FieldError::new("body", e.to_string())])),
    }
}
