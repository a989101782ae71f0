//! `/accounts/{a}/settings`: where the account's notifications go (R15), changed by its contact
//! person, its partner or an operator through the API's own functions, every change kept with
//! who made it.

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Chrome, Console, PageError, Signed, render, words};
use crate::accounts::recipients::may_change;
use crate::api::auth::visible_account;
use crate::api::recipients::{RecipientView, change, recipients_of};
use crate::store::Store;

/// One change of the recipients, in words.
struct ChangeLine {
    at: String,
    change: &'static str,
    channel: &'static str,
    address: String,
    /// As the API keeps it, and in words.
    actor: String,
    actor_words: String,
}

/// The add form as typed, and what was wrong with it, by field.
#[derive(Default)]
struct Typed {
    channel: String,
    address: String,
    channel_error: Option<String>,
    address_error: Option<String>,
    /// An error of no field of the form.
    other_error: Option<String>,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    chrome: Chrome,
    account: String,
    account_name: String,
    /// The contact person (R21): name and address; order e-mails go to them.
    contact: Option<(String, String)>,
    /// Each recipient: the API's channel name, its words, the address.
    recipients: Vec<(String, &'static str, String)>,
    changes: Vec<ChangeLine>,
    may_change: bool,
    typed: Typed,
}

fn channel_words(channel: &str) -> &'static str {
    if channel == "webhook" { "Webhook" } else { "E-mail" }
}

async fn settings_page<S: Store>(
    console: &Console<S>,
    signed: &Signed,
    account: &str,
    typed: Typed,
) -> Result<SettingsPage, PageError> {
    let found = visible_account(&*console.store, &signed.caller, account).await?;
    let caller = &signed.caller;
    let listed = recipients_of(&*console.store, caller, account).await?;
    Ok(SettingsPage {
        chrome: Chrome::of(signed, Some(account)),
        account: account.to_owned(),
        contact: found.eop_contact_name.clone().zip(found.eop_contact_email.clone()),
        recipients: listed
            .recipients
            .into_iter()
            .map(|r| {
                let said = channel_words(&r.channel);
                (r.channel, said, r.address)
            })
            .collect(),
        changes: listed
            .changes
            .into_iter()
            .map(|c| ChangeLine {
                at: words::time_text(&c.at),
                change: if c.change == "added" { "Added" } else { "Removed" },
                channel: channel_words(&c.channel),
                address: c.address,
                actor_words: words::actor(&c.actor),
                actor: c.actor,
            })
            .collect(),
        may_change: may_change(caller.role, caller.account.as_deref(), caller.contact, &found),
        account_name: found.name,
        typed,
    })
}

pub(super) async fn show<S: Store + 'static>(
    State(console): State<Console<S>>,
    signed: Signed,
    Path(account): Path<String>,
) -> Result<Response, PageError> {
    Ok(render(&settings_page(&console, &signed, &account, Typed::default()).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct RecipientForm {
    csrf: Option<String>,
    action: String,
    channel: String,
    address: String,
}

/// `POST /accounts/{a}/settings`: add or remove a recipient; a refused one is shown again on the
/// same page, its error beside its field and what was typed kept.
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
            let mut typed = Typed { channel: recipient.channel, address: recipient.address, ..Typed::default() };
            for e in &problem.errors {
                match e.field.as_str() {
                    "channel" => typed.channel_error = Some(e.message.clone()),
                    "address" => typed.address_error = Some(e.message.clone()),
                    _ => typed.other_error = Some(format!("{}: {}", e.field, e.message)),
                }
            }
            if problem.errors.is_empty() {
                typed.other_error = Some(problem.detail.clone());
            }
            let page = settings_page(&console, &signed, &account, typed).await?;
            Ok((StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST), render(&page)).into_response())
        }
    }
}
