//! The web console: server-rendered pages on the API's HTTP listener, for customers, partners
//! and operators (DESIGN: Console).
//!
//! - [`session`]: sign-in with an API token, sessions kept by the store, the form token (CSRF).
//! - [`pages`]: the accounts, an account's usage with charts, a site's day ("why this number").
//! - [`orders`]: the orders, the order form, an order and its steps (R20–R24).
//! - [`settings`]: who the account's notifications go to (R15).
//! - [`export`]: the pages' tables as CSV.
//! - [`chart`]: SVG charts drawn on the server; no script.
//! - [`words`]: values as a customer reads them (dates in UTC, people, statuses, order items).
//!
//! The pages call the same functions as the API (`usage::report::build`, the store's reads) and
//! apply the same tenancy (`api::auth`): another account's page is a 404 like a missing one.
//! Every figure carries `data-field` (the API's field name) and `data-value` (its raw value).

pub mod chart;
mod export;
mod orders;
mod pages;
mod session;
mod settings;
mod site_day;
mod words;

use std::sync::{Arc, LazyLock};

use askama::Template;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tally_common::time::MonthWindowSetting;

use crate::api::problem::Problem;
use crate::config::Config;
use crate::store::Store;

pub use session::Signed;

/// What the pages share.
#[derive(Debug)]
pub struct Console<S> {
    store: Arc<S>,
    operator_token: Option<String>,
    month_window: MonthWindowSetting,
    /// Addresses that keep signing in with wrong tokens are slowed down.
    pub(crate) wrong_tokens: Arc<crate::throttle::WrongTokens>,
    /// Where webhooks may be delivered (recipients are checked when added).
    pub(crate) webhook_targets: crate::net::webhook_target::WebhookTargets,
    /// Where a sign-in may come from, and when its cookie is `Secure`.
    exposure: crate::net::https::Exposure,
    /// Finalized months' documents parsed lately (each page renders one).
    parsed: Arc<crate::usage::finalized::Parsed>,
}

impl<S> Clone for Console<S> {
    fn clone(&self) -> Self {
        Console {
            store: self.store.clone(),
            operator_token: self.operator_token.clone(),
            month_window: self.month_window,
            wrong_tokens: self.wrong_tokens.clone(),
            webhook_targets: self.webhook_targets.clone(),
            exposure: self.exposure.clone(),
            parsed: self.parsed.clone(),
        }
    }
}

const STYLESHEET: &str = include_str!("../../static/console.css");

/// The stylesheet's address, named by its content: it is cached for a year and a new build
/// changes the name.
static STYLESHEET_PATH: LazyLock<String> =
    LazyLock::new(|| format!("/static/console-{}.css", &crate::digest::sha256_hex(STYLESHEET.as_bytes())[..12]));

impl<S: Store + 'static> Console<S> {
    pub fn new(store: Arc<S>, config: &Config) -> Console<S> {
        Console {
            store,
            operator_token: config.operator_token.clone(),
            month_window: config.month_window,
            wrong_tokens: Arc::new(crate::throttle::WrongTokens::new(config.wrong_tokens_per_minute)),
            webhook_targets: crate::net::webhook_target::WebhookTargets::new(config.webhook_allowed_networks.clone()),
            exposure: config.exposure.clone(),
            parsed: Default::default(),
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/login", get(session::login_form).post(session::login::<S>))
            .route("/logout", post(session::logout::<S>))
            .route("/", get(pages::home::<S>))
            .route("/accounts/{account}/usage", get(pages::usage::<S>))
            .route("/accounts/{account}/sites/{site}/days/{day}", get(site_day::site_day::<S>))
            .route("/accounts/{account}/overusage/{id}/resolution", post(pages::resolve::<S>))
            .route("/accounts/{account}/orders", get(orders::list::<S>))
            .route("/accounts/{account}/orders/new", get(orders::new_form::<S>).post(orders::new_post::<S>))
            .route("/accounts/{account}/orders/{id}", get(orders::one::<S>))
            .route("/accounts/{account}/orders/{id}/transitions", post(orders::step::<S>))
            .route("/accounts/{account}/settings", get(settings::show::<S>).post(settings::change_recipient::<S>))
            .route("/accounts/{account}/usage.csv", get(export::usage_csv::<S>))
            .route("/accounts/{account}/sites.csv", get(export::sites_csv::<S>))
            .route("/accounts/{account}/orders.csv", get(export::orders_csv::<S>))
            .route(STYLESHEET_PATH.as_str(), get(stylesheet))
            .layer(axum::middleware::from_fn(crate::api::within_deadline))
            .layer(axum::middleware::from_fn(security_headers))
            .with_state(self)
    }
}

/// What every console response tells the browser: no script, no frame, no plugin, forms only to
/// the console itself (the pages have no script at all); no type sniffing; no referrer; and a
/// page with an account's figures is never stored (the stylesheet says its own caching).
async fn security_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    headers.entry(header::CACHE_CONTROL).or_insert(header::HeaderValue::from_static("no-store"));
    response
}

async fn stylesheet() -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/css; charset=utf-8"),
        (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
    ];
    (headers, STYLESHEET).into_response()
}

/// What every page's frame shows: the stylesheet, the account in view, who is signed in and the
/// form token of the sign-out form.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    pub css: String,
    pub account: Option<String>,
    pub who: String,
    pub csrf: Option<String>,
}

impl Chrome {
    fn signed_out() -> Chrome {
        Chrome { css: STYLESHEET_PATH.clone(), ..Chrome::default() }
    }

    fn of(signed: &Signed, account: Option<&str>) -> Chrome {
        Chrome {
            css: STYLESHEET_PATH.clone(),
            account: account.map(str::to_owned),
            who: words::actor(&signed.who()),
            csrf: Some(signed.csrf.clone()),
        }
    }
}

/// A page that could not be shown: the API's problem, as HTML with the same status.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    detail: String,
}

impl PageError {
    fn new(status: StatusCode, detail: impl Into<String>) -> PageError {
        PageError { status, detail: detail.into() }
    }

    fn not_found(detail: impl Into<String>) -> PageError {
        PageError::new(StatusCode::NOT_FOUND, detail)
    }
}

impl From<Problem> for PageError {
    fn from(p: Problem) -> PageError {
        PageError {
            status: StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            detail: p.detail,
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    chrome: Chrome,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            chrome: Chrome::signed_out(),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        (self.status, render(&page)).into_response()
    }
}

/// A template as a response; a template that fails to render is a 500 with its error logged.
fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render; the collector's log says why")
                .into_response()
        }
    }
}
