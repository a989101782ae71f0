//! `/accounts/{a}/settings`: where the account's notifications go (R15), changed by its contact
//! person, its partner or an operator through the API's own functions, every change kept with
//! who made it.

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Chrome, Console, PageError, Signed, render};
use crate::api::auth::visible_account;
use crate::api::recipients::{RecipientView, Recipients, change, recipients_of};
use crate::recipients::may_change;
use crate::store::Store;

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    chrome: Chrome,
    account: String,
    recipients: Recipients,
    may_change: bool,
    error: Option<String>,
}

async fn settings_page<S: Store>(
    console: &Console<S>,
    signed: &Signed,
    account: &str,
    error: Option<String>,
) -> Result<SettingsPage, PageError> {
    let found = visible_account(&*console.store, &signed.caller, account).await?;
    let caller = &signed.caller;
    Ok(SettingsPage {
        chrome: Chrome::of(signed, Some(account)),
        account: account.to_owned(),
        recipients: recipients_of(&*console.store, caller, account).await?,
        may_change: may_change(caller.role, caller.account.as_deref(), caller.contact, &found),
        error,
    })
}

pub(super) async fn show<S: Store + 'static>(
    State(console): State<Console<S>>,
    signed: Signed,
    Path(account): Path<String>,
) -> Result<Response, PageError> {
    Ok(render(&settings_page(&console, &signed, &account, None).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct RecipientForm {
    csrf: Option<String>,
    action: String,
    channel: String,
    address: String,
}

/// `POST /accounts/{a}/settings/recipients`: add or remove one.
pub(super) async fn change_recipient<S: Store + 'static>(
    State(console): State<Console<S>>,
    signed: Signed,
    Path(account): Path<String>,
    Form(form): Form<RecipientForm>,
) -> Result<Response, PageError> {
    signed.check_form(form.csrf.as_deref())?;
    let recipient = RecipientView { channel: form.channel, address: form.address };
    match change(&*console.store, &signed.caller, &account, &recipient, form.action == "add", &console.webhook_targets)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/accounts/{account}/settings")).into_response()),
        Err(problem) if matches!(problem.status, 403 | 404) => Err(problem.into()),
        Err(problem) => {
            let said =
                problem.errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
            let page = settings_page(&console, &signed, &account, Some(said)).await?;
            Ok((StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST), render(&page)).into_response())
        }
    }
}
