//! Sessions: signing in with an API token, the session cookie, the form token (CSRF).
//!
//! A session is found by the hash of its cookie's secret and names the hash of the token that
//! signed in; the caller is resolved from that token at every request, by the API's own rule
//! (`api::auth::caller_of_token`), so revoking the token ends its sessions. The session layer
//! knows nothing else of how the user proved who they are: another way to sign in (single
//! sign-on) only has to find a token's hash. Cookies are `HttpOnly`, `SameSite=Strict`, and
//! `Secure` when the request came over HTTPS; a sign-in whose token travelled in clear over a
//! network is refused (`https::Exposure`). Sessions last 12 hours, and `/logout` ends them in
//! the store.

use askama::Template;
use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::TimeDelta;
use serde::Deserialize;

use super::{Chrome, Console, PageError, render};
use crate::api::auth::{Caller, caller_of_token};
use crate::digest::random_hex;
use crate::digest::sha256_hex;
use crate::store::{ConsoleSession, Store};

const COOKIE: &str = "tally_session";
/// How long a session lasts.
pub(super) const SESSION_LIFETIME: TimeDelta = TimeDelta::hours(12);

/// The signed-in caller of a console request. Without a live session: a redirect to `/login`.
#[derive(Debug, Clone)]
pub struct Signed {
    pub caller: Caller,
    /// The session's form token: every state-changing form carries it.
    pub csrf: String,
    id_hash: String,
}

impl Signed {
    /// Who is signed in, as the page's frame says it.
    pub fn who(&self) -> String {
        self.caller.name()
    }

    /// 403 unless `given` is this session's form token.
    pub fn check_form(&self, given: Option<&str>) -> Result<(), PageError> {
        let matches = given.is_some_and(|g| crate::api::auth::constant_time_eq(g.as_bytes(), self.csrf.as_bytes()));
        if matches {
            Ok(())
        } else {
            Err(PageError::new(
                StatusCode::FORBIDDEN,
                "the form's token is missing or stale: reload the page and try again",
            ))
        }
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

impl<S: Store + 'static> FromRequestParts<Console<S>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console<S>) -> Result<Signed, Response> {
        let to_login = || Redirect::to("/login").into_response();
        let secret = session_cookie(&parts.headers).ok_or_else(to_login)?;
        let id_hash = sha256_hex(secret.as_bytes());
        let session = console
            .store
            .session(&id_hash, crate::clock::now())
            .await
            .map_err(|e| PageError::from(crate::api::auth::internal(e)).into_response())?
            .ok_or_else(to_login)?;
        let caller = caller_of_token(&*console.store, console.operator_token.as_deref(), &session.token_hash)
            .await
            .map_err(|_| to_login())?;
        Ok(Signed { caller, csrf: session.csrf, id_hash })
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    error: Option<String>,
}

pub(super) async fn login_form() -> Response {
    render(&LoginPage { chrome: Chrome::signed_out(), error: None })
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

/// Signs in with an API token: a new session and its cookie, then the accounts.
pub(super) async fn login<S: Store + 'static>(
    State(console): State<Console<S>>,
    request: Parts,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Err(why) = console.exposure.token_allowed(&request.headers, &request.extensions) {
        let page = LoginPage { chrome: Chrome::signed_out(), error: Some(why) };
        return (StatusCode::FORBIDDEN, render(&page)).into_response();
    }
    let client = console.exposure.client(&request.headers, &request.extensions);
    if let Some(Err(wait)) = client.map(|ip| console.wrong_tokens.check(ip)) {
        let why = format!("Too many wrong access keys from your address: try again in {} s.", wait.as_secs().max(1));
        let page = LoginPage { chrome: Chrome::signed_out(), error: Some(why) };
        let retry = [(header::RETRY_AFTER, wait.as_secs().max(1).to_string())];
        return (StatusCode::TOO_MANY_REQUESTS, retry, render(&page)).into_response();
    }
    let token_hash = sha256_hex(form.token.trim().as_bytes());
    if let Err(problem) = caller_of_token(&*console.store, console.operator_token.as_deref(), &token_hash).await {
        if let Some(ip) = client.filter(|_| problem.status == StatusCode::UNAUTHORIZED.as_u16()) {
            console.wrong_tokens.failed(ip);
        }
        let why = match (problem.status, problem.detail.as_str()) {
            (401, "this token was revoked") => "This access key was withdrawn: ask for a new one.",
            (401, _) => "This access key is not valid: check that it was copied whole, or ask for a new one.",
            _ => problem.detail.as_str(),
        };
        let page = LoginPage { chrome: Chrome::signed_out(), error: Some(why.to_owned()) };
        return (StatusCode::UNAUTHORIZED, render(&page)).into_response();
    }
    let (Ok(secret), Ok(csrf)) = (random_hex(32), random_hex(32)) else {
        return PageError::new(StatusCode::INTERNAL_SERVER_ERROR, "no randomness for a session").into_response();
    };
    let now = crate::clock::now();
    let session = ConsoleSession { token_hash, csrf, expires_at: now + SESSION_LIFETIME };
    if let Err(e) = console.store.add_session(&sha256_hex(secret.as_bytes()), &session, now).await {
        return PageError::from(crate::api::auth::internal(e)).into_response();
    }
    let secure = if console.exposure.https(&request.headers, &request.extensions) { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_LIFETIME.num_seconds()
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Debug, Deserialize)]
pub(super) struct FormToken {
    csrf: Option<String>,
}

/// Ends the session in the store and clears its cookie.
pub(super) async fn logout<S: Store + 'static>(
    State(console): State<Console<S>>,
    signed: Signed,
    Form(form): Form<FormToken>,
) -> Result<Response, PageError> {
    signed.check_form(form.csrf.as_deref())?;
    console.store.end_session(&signed.id_hash).await.map_err(crate::api::auth::internal)?;
    let mut response = Redirect::to("/login").into_response();
    let cleared = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&cleared) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}
