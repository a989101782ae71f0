//! The console's pages: the accounts, an account's usage, an over-usage's resolution (a site's
//! day is [`super::site_day`]'s).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use tally_common::bandwidth::Bandwidth;
use tally_common::time::Month;

use super::chart::{Bar, Chart, Line};
use super::{Chrome, Console, PageError, Signed, render, words};
use crate::accounts::tenancy::may_see;
use crate::accounts::terms::{AccountView, account_view};
use crate::api::auth::{internal, visible_account};
use crate::store::{Role, Store};
use crate::usage::document::{MonthStatus, UsageReport, WindowJson};
use crate::usage::overusage::ResolveRequest;
use crate::usage::report;
use tally_common::kinds::LicenseKind;
use tally_common::time::MonthWindowSetting;

/// A value's name as the API writes it (`"open"`, `"group1"`).
fn api_name(value: &impl Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// A bit rate, however many references the templates wrap it in.
pub(super) trait BitRate {
    fn bits_per_second(&self) -> u64;
}

impl BitRate for u64 {
    fn bits_per_second(&self) -> u64 {
        *self
    }
}

impl<T: BitRate + ?Sized> BitRate for &T {
    fn bits_per_second(&self) -> u64 {
        (**self).bits_per_second()
    }
}

/// A bit rate in words, for the templates (`150.0 Mbps`).
pub(super) fn bps(value: impl BitRate) -> String {
    Bandwidth(value.bits_per_second()).to_string()
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    chrome: Chrome,
    operator: bool,
    query: String,
    accounts: Vec<AccountView>,
}

#[derive(Debug, Deserialize)]
pub(super) struct HomeQuery {
    q: Option<String>,
}

/// `/`: the signed-in user's accounts; a customer goes straight to its own.
pub(super) async fn home<S: Store + 'static>(
    State(console): State<Console<S>>,
    signed: Signed,
    Query(query): Query<HomeQuery>,
) -> Result<Response, PageError> {
    let caller = &signed.caller;
    if let (Role::Customer, Some(account)) = (caller.role, &caller.account) {
        return Ok(Redirect::to(&format!("/accounts/{account}/usage")).into_response());
    }
    let wanted = query.q.unwrap_or_default();
    let today = crate::clock::now().date_naive();
    let mut accounts = Vec::new();
    for account in console.store.accounts().await.map_err(internal)? {
        let visible = may_see(caller.role, caller.account.as_deref(), &account);
        let matches = wanted.is_empty()
            || account.id.contains(wanted.as_str())
            || account.name.to_lowercase().contains(&wanted.to_lowercase());
        if visible && matches {
            accounts.extend(account_view(&*console.store, &account.id, today).await.map_err(internal)?);
        }
    }
    let page = HomePage {
        chrome: Chrome::of(&signed, None),
        operator: caller.role == Role::Operator,
        query: wanted,
        accounts,
    };
    Ok(render(&page))
}

#[derive(Debug, Deserialize)]
pub(super) struct MonthQuery {
    month: Option<String>,
}

/// The usage page's query: the month, and the page of sites after a site id.
#[derive(Debug, Deserialize)]
pub(super) struct UsageQuery {
    #[serde(flatten)]
    month: MonthQuery,
    sites_after: Option<String>,
}

/// Sites a usage page lists at a time: the account's totals and pools are always whole.
const SITES_PER_PAGE: usize = 100;

/// Which of the account's sites a usage page lists, when it does not list them all.
struct SitesPager {
    /// "Sites 101 to 200 of 1,000", in words.
    said: String,
    /// The page lists not the first sites: a link back to them.
    later: bool,
    /// The next page's `sites_after`.
    next_after: Option<String>,
}

impl MonthQuery {
    /// The month asked for (400 naming the parameter when it is not `YYYY-MM`), or this one.
    pub(super) fn month(&self) -> Result<Month, PageError> {
        match &self.month {
            None => Ok(Month::containing(crate::clock::now().date_naive())),
            Some(m) => {
                m.parse().map_err(|e| PageError::new(axum::http::StatusCode::BAD_REQUEST, format!("month: {e}")))
            }
        }
    }
}

/// An account's usage report for a month, as the API builds it.
pub(super) async fn report_of<S: Store>(
    console: &Console<S>,
    signed: &Signed,
    account: &str,
    month: Month,
) -> Result<UsageReport, PageError> {
    visible_account(&*console.store, &signed.caller, account).await?;
    let now = crate::clock::now();
    let built =
        report::build_keeping(&*console.store, Some(&console.parsed), account, month, console.month_window, now).await;
    Ok(built.map_err(crate::api::report_problem)?)
}

struct PoolView {
    group: String,
    group_words: &'static str,
    peak_day_words: Option<String>,
    /// Every day's aggregate is 0: the chart says so instead.
    quiet: bool,
    monthly_p95_bps: u64,
    licensed_bps: u64,
    excess_bps: u64,
    peak_day: Option<NaiveDate>,
    projected_bps: Option<u64>,
    /// The forecast exceeds the license (the account was told, once).
    heading_over: bool,
    chart: String,
    days: Vec<DayView>,
}

struct DayView {
    date: NaiveDate,
    date_words: String,
    aggregate_bps: u64,
    in_window: bool,
}

struct SiteView {
    site: String,
    name: String,
    country: String,
    site_type: &'static str,
    /// Its agent applied its current policy (R17); `None` without a cap.
    policy_applied: Option<bool>,
    /// The start of its latest bucket, and its agent's last connection: RFC 3339, and in words.
    last_bucket: Option<(String, String)>,
    last_connected: Option<(String, String)>,
    group: String,
    group_words: &'static str,
    cap_bps: Option<u64>,
    /// The month's highest daily P95, its day, and the day in words.
    peak: Option<(NaiveDate, u64, String)>,
    violations: usize,
}

struct MeterView {
    license: String,
    license_words: String,
    /// What its quantities count (`users`), or `None` for bit rates.
    unit: Option<&'static str>,
    /// The bandwidth pool's region group, as the API names it.
    region: Option<String>,
    /// ZTNA users by region (R12): region, its words, measured, licensed.
    by_region: Vec<(String, String, u64, u64)>,
    /// Devices by where they were seen (R29), and those with private addresses.
    by_source: Vec<(String, u64)>,
    locally_administered: Option<u64>,
    measured: u64,
    licensed: u64,
    excess: u64,
    required_purchase: u64,
}

struct OverusageView {
    id: i64,
    license: &'static str,
    region_group: Option<String>,
    excess: u64,
    /// The smallest True-Forward, in `unit` (R32).
    required_purchase: u64,
    unit: String,
    /// The form field a True-Forward's quantity goes in: `quantity_mbps` for the pool.
    quantity_field: &'static str,
    /// The API's name of the resolution, and its words.
    resolution: Option<(String, &'static str)>,
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage {
    chrome: Chrome,
    account: String,
    account_name: String,
    month: Month,
    previous: Month,
    next: Month,
    status: String,
    status_words: &'static str,
    /// Which days the bandwidth pool's P95 counts, in words.
    window: String,
    /// The setting behind it, for operators.
    window_setting: String,
    pools: Vec<PoolView>,
    sites: Vec<SiteView>,
    /// Shown when the sites take more than one page.
    pager: Option<SitesPager>,
    sites_per_page: usize,
    meters: Vec<MeterView>,
    overusage: Vec<OverusageView>,
    /// What arrived after the month was finalized: stored, not billed (R9, R33).
    late: Option<LateView>,
    /// Operators resolve over-usage here (R16).
    operator: bool,
}

/// A finalized month's late arrivals, in words.
struct LateView {
    buckets: u64,
    /// Per meter: its API name, its name in words, the events, the figure billed and the one it
    /// would have had.
    events: Vec<(String, &'static str, u64, u64, u64)>,
}

/// `/accounts/{a}/usage?month=YYYY-MM`.
pub(super) async fn usage<S: Store + 'static>(
    State(console): State<Console<S>>,
    signed: Signed,
    Path(account): Path<String>,
    Query(query): Query<UsageQuery>,
) -> Result<Response, PageError> {
    let month = query.month.month()?;
    let found = visible_account(&*console.store, &signed.caller, &account).await?;
    let mut report = report_of(&console, &signed, &account, month).await?;
    report.page_sites(query.sites_after.as_deref(), SITES_PER_PAGE);
    let pager = report.sites_page.as_ref().filter(|p| p.total > SITES_PER_PAGE as u64 || p.before > 0).map(|p| {
        let shown = report.sites.iter().map(|s| &s.site).collect::<std::collections::BTreeSet<_>>().len() as u64;
        SitesPager {
            said: format!(
                "Sites {} to {} of {}",
                words::count(p.before + shown.min(1)),
                words::count(p.before + shown),
                words::count(p.total)
            ),
            later: p.before > 0,
            next_after: p.next_after.clone(),
        }
    });
    let pools = report
        .bandwidth_pool
        .iter()
        .map(|p| {
            let bars = p
                .days
                .iter()
                .map(|d| Bar {
                    label: d.date.format("%-d").to_string(),
                    value: d.aggregate_bps,
                    class: match (Some(d.date) == p.peak_day, d.in_window) {
                        (true, _) => "peak",
                        (false, true) => "in",
                        (false, false) => "out",
                    },
                })
                .collect();
            let outside = p.days.iter().position(|d| !d.in_window).map(|from| (from, p.days.len()));
            let group_words = words::group(p.region_group);
            let chart = Chart {
                title: format!("Daily aggregate of {group_words}, {}", words::month(month)),
                bars,
                lines: vec![
                    Line { value: p.licensed_bps, class: "licensed", label: "licensed".into() },
                    Line { value: p.monthly_p95_bps, class: "p95", label: "monthly P95".into() },
                ],
                shaded: outside,
                label_every: 5,
            };
            PoolView {
                monthly_p95_bps: p.monthly_p95_bps,
                licensed_bps: p.licensed_bps,
                excess_bps: p.excess_bps,
                peak_day: p.peak_day,
                peak_day_words: p.peak_day.map(words::date),
                quiet: p.days.iter().all(|d| d.aggregate_bps == 0),
                projected_bps: p.forecast.as_ref().map(|f| f.projected_monthly_p95_bps),
                heading_over: p.forecast.as_ref().is_some_and(|f| f.exceeds_license),
                chart: chart.svg(),
                days: p
                    .days
                    .iter()
                    .map(|d| DayView {
                        date: d.date,
                        date_words: words::short_date(d.date),
                        aggregate_bps: d.aggregate_bps,
                        in_window: d.in_window,
                    })
                    .collect(),
                group: api_name(&p.region_group),
                group_words,
            }
        })
        .collect();
    let (facts, activity, policies) = tokio::try_join!(
        console.store.sites_of_account(&account),
        crate::store::IntakeStore::site_activity(&*console.store, Some(&account)),
        console.store.policy_states(&account),
    )
    .map_err(internal)?;
    let sites = report
        .sites
        .iter()
        .map(|s| {
            let site = facts.iter().find(|f| f.id == s.site);
            let activity = activity.iter().find(|a| a.site == s.site);
            SiteView {
                site: s.site.clone(),
                name: site.map_or_else(|| s.site.clone(), |f| f.name.clone()),
                country: site.map_or(String::new(), |f| words::country(f.country)),
                site_type: site.map_or("", |f| words::site_type(f.site_type)),
                policy_applied: s.cap_bps.map(|_| {
                    policies.iter().find(|p| p.site == s.site).is_some_and(crate::store::PolicyState::in_force)
                }),
                last_bucket: activity.and_then(|a| a.last_bucket).map(|b| time_both(b.time())),
                last_connected: activity.and_then(|a| a.last_connected).map(time_both),
                group: api_name(&s.region_group),
                group_words: words::group(s.region_group),
                cap_bps: s.cap_bps,
                peak: s
                    .days
                    .iter()
                    .max_by_key(|d| (d.p95_bps, std::cmp::Reverse(d.date)))
                    .map(|d| (d.date, d.p95_bps, words::short_date(d.date))),
                violations: s.violations.len(),
            }
        })
        .collect();
    // The bandwidth pool first, a row per region group, then the other meters.
    let pool_rows = report.bandwidth_pool.iter().map(|p| MeterView {
        license: api_name(&LicenseKind::BandwidthPool),
        license_words: format!("Bandwidth pool, {}", words::group(p.region_group)),
        unit: None,
        region: Some(api_name(&p.region_group)),
        by_region: Vec::new(),
        by_source: Vec::new(),
        locally_administered: None,
        measured: p.monthly_p95_bps,
        licensed: p.licensed_bps,
        excess: p.excess_bps,
        required_purchase: p.required_purchase_mbps,
    });
    let meters = pool_rows
        .chain(report.meters.iter().map(|m| {
            MeterView {
                license: api_name(&m.meter.license),
                license_words: words::license(m.meter.license).to_owned(),
                unit: Some(m.meter.license.purchase_unit()),
                region: None,
                by_region: m
                    .by_region
                    .iter()
                    .map(|r| (api_name(&r.region), words::region_text(&api_name(&r.region)), r.measured, r.licensed))
                    .collect(),
                by_source: m.by_source.iter().map(|(source, n)| (source.clone(), *n)).collect(),
                locally_administered: m.locally_administered,
                measured: m.meter.measured,
                licensed: m.meter.licensed,
                excess: m.meter.excess,
                required_purchase: m.meter.required_purchase,
            }
        }))
        .collect();
    let overusage = report
        .overusage
        .iter()
        .map(|o| OverusageView {
            id: o.id,
            license: words::license(o.license),
            region_group: o.region_group.as_deref().map(words::region_text),
            excess: o.excess,
            required_purchase: o.required_purchase,
            unit: o.unit.clone(),
            quantity_field: match o.license {
                LicenseKind::BandwidthPool => "quantity_mbps",
                _ => "quantity",
            },
            resolution: o.resolution.as_ref().map(|r| {
                let said = if r.kind == "true_up" { "True-Up" } else { "True-Forward" };
                (r.kind.clone(), said)
            }),
        })
        .collect();
    let page = UsagePage {
        chrome: Chrome::of(&signed, Some(&account)),
        previous: Month::containing(month.first_day().pred_opt().unwrap_or(month.first_day())),
        next: month.next(),
        status: api_name(&report.status),
        status_words: match report.status {
            MonthStatus::Open => "Open: the month is running, and its figures grow until it ends",
            MonthStatus::Provisional => {
                "Provisional: the month has ended; measurements still arriving may change it until it is closed"
            }
            MonthStatus::Finalized => "Closed: these are the month's billed figures",
        },
        window: window_in_words(&report.window),
        window_setting: report.window.description.clone(),
        account,
        account_name: found.name,
        month,
        pools,
        sites,
        pager,
        sites_per_page: SITES_PER_PAGE,
        meters,
        overusage,
        late: (report.late_buckets > 0 || !report.late_events.is_empty()).then(|| LateView {
            buckets: report.late_buckets,
            events: report
                .late_events
                .iter()
                .map(|l| (api_name(&l.license), words::meter(l.license), l.events, l.measured, l.measured_with_late))
                .collect(),
        }),
        operator: signed.caller.role == Role::Operator,
    };
    Ok(render(&page))
}

/// A time as the API writes it, and in words.
fn time_both(at: chrono::DateTime<chrono::Utc>) -> (String, String) {
    (tally_common::time::rfc3339(at), words::time(at))
}

/// Which days the bandwidth pool's monthly P95 counts (R7), as the customer reads it.
fn window_in_words(window: &WindowJson) -> String {
    let day = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok().map(|t| t.date_naive());
    let (Some(first), Some(end)) = (day(&window.start), day(&window.end)) else { return String::new() };
    let last = end.pred_opt().unwrap_or(end);
    let excluded = match window.setting {
        MonthWindowSetting::Article => " (the month's last day is not counted)",
        MonthWindowSetting::Calendar => "",
    };
    format!(
        "The bandwidth pool's monthly P95 counts the days from {} to {}{excluded}; the other licenses count the \
         whole calendar month.",
        words::date(first),
        words::date(last)
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct ResolutionForm {
    csrf: Option<String>,
    month: String,
    #[serde(rename = "type")]
    kind: String,
    quantity: Option<String>,
    /// The bandwidth pool's True-Forward, in Mbps (R32).
    quantity_mbps: Option<String>,
}

/// `POST /accounts/{a}/overusage/{id}/resolution`: an operator's True-Up or True-Forward (R16).
pub(super) async fn resolve<S: Store + 'static>(
    State(console): State<Console<S>>,
    signed: Signed,
    Path((account, id)): Path<(String, i64)>,
    axum::extract::Form(form): axum::extract::Form<ResolutionForm>,
) -> Result<Response, PageError> {
    signed.check_form(form.csrf.as_deref())?;
    visible_account(&*console.store, &signed.caller, &account).await?;
    signed.caller.operator_only("resolve an over-usage")?;
    let number = |field: &Option<String>| {
        field.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(|q| {
            q.parse::<u64>().map_err(|_| {
                PageError::new(axum::http::StatusCode::BAD_REQUEST, format!("quantity {q:?} is not a whole number"))
            })
        })
    };
    let (quantity, quantity_mbps) = (number(&form.quantity).transpose()?, number(&form.quantity_mbps).transpose()?);
    let request = match form.kind.as_str() {
        "true_up" => ResolveRequest::TrueUp,
        "true_forward" if quantity.is_some() || quantity_mbps.is_some() => {
            ResolveRequest::TrueForward { quantity, quantity_mbps, region: None }
        }
        _ => {
            let why = "type must be true_up, or true_forward with a quantity";
            return Err(PageError::new(axum::http::StatusCode::BAD_REQUEST, why));
        }
    };
    crate::api::resolve(&*console.store, &account, id, request).await?;
    let month: Month =
        form.month.parse().map_err(|e| PageError::new(axum::http::StatusCode::BAD_REQUEST, format!("month: {e}")))?;
    Ok(Redirect::to(&format!("/accounts/{account}/usage?month={month}")).into_response())
}
