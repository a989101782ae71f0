//! An account's notification recipients (R15): `GET|POST|DELETE /v1/accounts/{account}/recipients`.
//! Anyone who sees the account reads them; its contact person, its partner and operators change
//! them; every change is kept with who made it and when.

use crate::net::webhook_target::{SystemResolver, WebhookTargets};
use std::collections::HashMap;

use super::json::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::Api;
use super::auth::{Caller, internal, visible_account};
use super::problem::{FieldError, Problem};
use crate::accounts::recipients;
use crate::store::{Recipient, RecipientChange, Store};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientView {
    #[schema(value_type = String, pattern = "^(email|webhook)$")]
    pub channel: String,
    /// An e-mail address, or the http(s) URL of a webhook.
    #[schema(min_length = 1, max_length = 2000)]
    pub address: String,
}

// The body is read as a `RecipientView`; `recipients::parse` decides what an address is. This
// describes it exactly for the document.
/// A recipient to add: an e-mail address, or the http(s) URL of a webhook.
#[derive(Debug, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // a schema only
pub enum NewRecipient {
    Email(EmailRecipient),
    Webhook(WebhookRecipient),
}

#[derive(Debug, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // a schema only
pub struct EmailRecipient {
    #[schema(pattern = "^email$")]
    channel: String,
    /// An e-mail address.
    #[schema(format = Email, min_length = 3, max_length = 254)]
    address: String,
}

#[derive(Debug, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // a schema only
pub struct WebhookRecipient {
    #[schema(pattern = "^webhook$")]
    channel: String,
    /// The http(s) URL the notifications are posted to.
    #[schema(pattern = "^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$", max_length = 2000)]
    address: String,
}

impl From<&Recipient> for RecipientView {
    fn from(r: &Recipient) -> RecipientView {
        RecipientView { channel: r.channel.as_str().to_owned(), address: r.address.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecipientChangeView {
    pub channel: String,
    pub address: String,
    /// `added` or `removed`.
    pub change: String,
    /// Who: the person of the token when it names one, and the role.
    pub actor: String,
    pub at: String,
}

impl From<&RecipientChange> for RecipientChangeView {
    fn from(c: &RecipientChange) -> RecipientChangeView {
        RecipientChangeView {
            channel: c.recipient.channel.as_str().to_owned(),
            address: c.recipient.address.clone(),
            change: if c.added { "added" } else { "removed" }.to_owned(),
            actor: c.actor.clone(),
            at: tally_common::time::rfc3339(c.at),
        }
    }
}

/// An account's recipients and their history.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Recipients {
    pub recipients: Vec<RecipientView>,
    /// Oldest first.
    pub changes: Vec<RecipientChangeView>,
}

/// The account's recipients and their changes, for whoever sees the account.
pub async fn recipients_of<S: Store>(store: &S, caller: &Caller, account: &str) -> Result<Recipients, Problem> {
    visible_account(store, caller, account).await?;
    let (recipients, changes) =
        tokio::try_join!(store.recipients(account), store.recipient_changes(account)).map_err(internal)?;
    Ok(Recipients {
        recipients: recipients.iter().map(RecipientView::from).collect(),
        changes: changes.iter().map(RecipientChangeView::from).collect(),
    })
}

/// Adds or removes a recipient as `caller`, as the API and the console both do: 403 unless the
/// caller may change them, 400 naming the field for a bad recipient. The recipient as stored,
/// and whether anything changed.
pub async fn change<S: Store>(
    store: &S,
    caller: &Caller,
    account: &str,
    recipient: &RecipientView,
    added: bool,
    targets: &WebhookTargets,
) -> Result<(RecipientView, bool), Problem> {
    let found = visible_account(store, caller, account).await?;
    if !recipients::may_change(caller.role, caller.account.as_deref(), caller.contact, &found) {
        return Err(Problem::forbidden(format!(
            "only account {account}'s contact person, its partner or an operator change its recipients"
        )));
    }
    let parsed = recipients::parse(&recipient.channel, &recipient.address).map_err(|e| Problem::invalid(vec![e]))?;
    if added {
        recipients::check_target(&parsed, targets, &SystemResolver).await.map_err(|e| Problem::invalid(vec![e]))?;
    }
    let view = RecipientView::from(&parsed);
    let changed = recipients::change(store, account, parsed, added, &caller.name(), crate::clock::now())
        .await
        .map_err(internal)?;
    Ok((view, changed))
}

/// `GET /v1/accounts/{account}/recipients`.
#[utoipa::path(get, path = "/v1/accounts/{account}/recipients", tag = "accounts",
    params(("account" = String, Path)),
    responses(
        (status = 200, body = Recipients),
        (status = 404, description = "No such account (or not the caller's)", body = Problem, content_type = "application/problem+json")))]
pub async fn list<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path(account): Path<String>,
) -> Result<Json<Recipients>, Problem> {
    recipients_of(&*api.store, &caller, &account).await.map(Json)
}

/// `POST /v1/accounts/{account}/recipients` with `{"channel": "email"|"webhook", "address"}`:
/// 201 when added, 200 when it was there already.
#[utoipa::path(post, path = "/v1/accounts/{account}/recipients", tag = "accounts",
    params(("account" = String, Path)),
    request_body = NewRecipient,
    responses(
        (status = 201, description = "Added", body = RecipientView),
        (status = 200, description = "Already a recipient", body = RecipientView),
        (status = 400, description = "Invalid request, by field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the caller's to do", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the caller's)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by a rule (not an address), by field", body = Problem, content_type = "application/problem+json")))]
pub async fn add<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path(account): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<RecipientView>), Problem> {
    visible_account(&*api.store, &caller, &account).await?;
    let recipient: RecipientView = super::body::typed(&body, r#"{"channel": "email" or "webhook", "address": "..."}"#)?;
    let (stored, added) = change(&*api.store, &caller, &account, &recipient, true, &api.webhook_targets).await?;
    Ok((if added { StatusCode::CREATED } else { StatusCode::OK }, Json(stored)))
}

/// `DELETE /v1/accounts/{account}/recipients?channel=email&address=...`: 204, or 404 when it is
/// not a recipient.
#[utoipa::path(delete, path = "/v1/accounts/{account}/recipients", tag = "accounts",
    params(("account" = String, Path),
        ("channel" = String, Query, pattern = "^(email|webhook)$", description = "email or webhook"),
        ("address" = String, Query, description = "The recipient's address")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Invalid request, by field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the caller's to do", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account or recipient (or not the caller's)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by a rule (not an address), by field", body = Problem, content_type = "application/problem+json")))]
pub async fn remove<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path(account): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<StatusCode, Problem> {
    visible_account(&*api.store, &caller, &account).await?;
    let field = |name: &str| query.get(name).cloned().ok_or_else(|| FieldError::new(name, "required"));
    let recipient = match (field("channel"), field("address")) {
        (Ok(channel), Ok(address)) => RecipientView { channel, address },
        (channel, address) => {
            return Err(Problem::bad_request([channel.err(), address.err()].into_iter().flatten().collect()));
        }
    };
    if change(&*api.store, &caller, &account, &recipient, false, &api.webhook_targets).await?.1 {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!(
            "{} {} is not a recipient of account {account}",
            recipient.channel, recipient.address
        )))
    }
}
