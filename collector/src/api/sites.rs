//! The sites' routes: a site's change (R17), its enforcement and intake, the sites' activity
//! (silent sites), and the stand-alone pools at risk.

use chrono::NaiveDate;
use std::collections::HashMap;

use super::json::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tally_common::kinds::SiteType;
use tally_common::region::{CountryCode, RegionGroup};
use tally_common::time::Month;

use super::auth::{Caller, internal, visible_account};
use super::problem::{FieldError, Problem};
use super::{Api, body, month_of};
use crate::accounts::{self, ChangeError, SiteChanges};
use crate::agents::presence::{self, SiteActivityView};
use crate::agents::unbilled::{self, IntakeReport};
use crate::enforcement::pool_risk::{self, PoolAtRisk};
use crate::enforcement::{self, SiteEnforcement};
use crate::store::Store;

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
pub(super) async fn site_enforcement<S: Store + 'static>(
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
pub(super) async fn site_intake<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path((account, site)): Path<(String, String)>,
) -> Result<Json<IntakeReport>, Problem> {
    visible_account(&*api.store, &caller, &account).await?;
    let site = site_of(&api, &account, &site).await?;
    unbilled::report(&*api.store, &site.id).await.map(Json).map_err(internal)
}

/// `GET /v1/enforcement/at-risk[?days=N]` (operator): every account and stand-alone group whose
/// site caps will exceed the pool in force on a day of the next N (default 30) days (R17).
#[utoipa::path(get, path = "/v1/enforcement/at-risk", tag = "sites",
    params(("days" = Option<u32>, Query, minimum = 0, maximum = 3660, description = "How many days ahead; 30 when absent")),
    responses(
        (status = 200, body = Vec<PoolAtRisk>),
        (status = 400, description = "Invalid request, by field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn pools_at_risk<S: Store + 'static>(
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
                presence::duration(text).map_err(|e| Problem::bad_request(vec![FieldError::new("silent", e)]))?;
            presence::silent_sites(&*api.store, account, silent, crate::clock::now()).await
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
pub(super) async fn all_sites_activity<S: Store + 'static>(
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
pub(super) async fn account_sites_activity<S: Store + 'static>(
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
pub(super) struct SitePatch {
    /// ISO 3166-1 alpha-2, one of the region table's countries (R11).
    #[schema(value_type = Option<String>, pattern = "^[A-Z]{2}$")]
    country: Option<String>,
    /// The day the new country takes effect (R31), today by default; an earlier day corrects a
    /// month not yet finalized (409 otherwise).
    #[schema(value_type = Option<String>, format = Date)]
    country_from: Option<NaiveDate>,
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
pub(super) struct SiteView {
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
        (status = 409, description = "Conflicts with the current state", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by a rule, by field", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn change_site<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path((account, site)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<SiteView>, Problem> {
    visible_account(&*api.store, &caller, &account).await?;
    caller.operator_only("change a site")?;
    site_of(&api, &account, &site).await?;
    let patch: SitePatch = body::typed(&body, r#"{"country", "country_from", "type", "cap_bps"}, each optional"#)?;
    if patch.country_from.is_some() && patch.country.is_none() {
        return Err(Problem::unprocessable(vec![FieldError::new("country_from", "dates a new country: give country")]));
    }
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
    let changes = SiteChanges { site, country, site_type, cap_bps: patch.cap_bps, country_from: patch.country_from };
    match accounts::sites::set_site(&*api.store, &api.regions, changes).await {
        Ok(site) => Ok(Json(SiteView {
            site: site.id,
            account: site.account,
            name: site.name,
            country: site.country.to_string(),
            region_group: site.region_group,
            site_type: site.site_type,
            cap_bps: site.cap_bps,
        })),
        Err(ChangeError::Refused(violations)) => {
            let messages: Vec<String> = violations.iter().map(ToString::to_string).collect();
            let mut problem = Problem::conflict(format!("refused, nothing was changed: {}", messages.join("; ")));
            problem.extensions.insert("violations".into(), json!(messages));
            Err(problem)
        }
        Err(e @ ChangeError::Finalized { .. }) => Err(Problem::conflict(e.to_string())),
        Err(ChangeError::Store(e)) => Err(internal(e)),
        // The request has the schema's form; a rule about the day or the site refuses it.
        Err(e) => Err(Problem::unprocessable(vec![FieldError::new("body", e.to_string())])),
    }
}
