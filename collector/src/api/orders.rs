//! The order routes (Contract): `GET|POST /v1/accounts/{account}/orders`,
//! `GET /v1/accounts/{account}/orders/{order}`, `POST …/orders/{order}/transitions`.

use std::collections::HashMap;

use super::json::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tally_common::kinds::ItemStatus;

use super::Api;
use super::auth::{Caller, internal, visible_account};
use super::problem::{FieldError, Problem};
use crate::digest::sha256_hex;
use crate::orders::mail;
use crate::orders::rules::{Actor, Item, TransitionError, validate_item};
use crate::orders::{Created, NewOrder, Order, Quote, Transition, TransitionRefused};
use crate::store::{Account, Role, Store};

/// The most items one order may carry.
pub const MAX_ITEMS: usize = 100;
/// The default and the largest page of a list.
const PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

/// R22's view of the caller for `account`: the contact person is a contact token of the account
/// itself or, for a sub-account, of its managing partner (R21: the partner acts for it).
pub fn actor_for(caller: &Caller, account: &Account) -> Actor {
    let own = caller.account.as_deref();
    match caller.role {
        Role::Operator => Actor::Operator,
        _ if caller.contact && (own == Some(account.id.as_str()) || own == account.partner.as_deref()) => {
            Actor::ContactPerson
        }
        _ => Actor::Other,
    }
}

/// `POST /v1/accounts/{account}/orders` with `{"items": [...]}` and an optional
/// `Idempotency-Key`: 201 with the order.
#[utoipa::path(post, path = "/v1/accounts/{account}/orders", tag = "orders",
    params(("account" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,200}$",
            description = "The same key and body give the same order: 1 to 200 visible ASCII characters")),
    request_body = NewOrderBody,
    responses(
        (status = 201, body = Order),
        (status = 400, description = "Invalid request, by field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the caller's to do", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account or order (or not the caller's)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by a rule, by field", body = Problem, content_type = "application/problem+json")))]
pub async fn create<S: Store + 'static>(
    State(api): State<Api<S>>,
    headers: HeaderMap,
    Extension(caller): Extension<Caller>,
    Path(account): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    // Another account is a 404 before the request is looked at.
    visible_account(&*api.store, &caller, &account).await?;
    let key = match headers.get("idempotency-key").map(HeaderValue::to_str) {
        None => None,
        Some(Ok(key)) if (1..=200).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Some(key.to_owned())
        }
        Some(_) => {
            let error = FieldError::new("Idempotency-Key", "must be 1 to 200 visible ASCII characters");
            return Err(Problem::bad_request(vec![error]));
        }
    };
    let body_json = super::body::object(&body)?;
    let key = key.map(|k| (k, sha256_hex(&body)));
    let (order, replayed) = submit(&*api.store, &caller, &account, &body_json, key).await?;
    let mut response = (StatusCode::CREATED, Json(order)).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Submits the order `body` (`{"items": [...]}`) for `account` by `caller`, as the API and the
/// console both do: the account must be visible to the caller and enrolled in the EoP (R21),
/// every item valid (R20, each error by its field), and an idempotency `key` (with the body's
/// hash) gives one order: the order, and whether it was made before. A key used before with
/// another body is a 422.
pub async fn submit<S: Store>(
    store: &S,
    caller: &Caller,
    account: &str,
    body_json: &Value,
    key: Option<(String, String)>,
) -> Result<(Order, bool), Problem> {
    let found = visible_account(store, caller, account).await?;
    if found.eop_contact_name.is_none() || found.eop_contact_email.is_none() {
        return Err(Problem::forbidden(format!(
            "account {account:?} is not enrolled in the Electronic Order Program with a contact person (R21); \
             ask Customer Success to record the signed enrollment letter's contact"
        )));
    }
    let Some(raw_items) = body_json.get("items").and_then(Value::as_array) else {
        return Err(Problem::bad_request(vec![FieldError::new("items", "required: a list of items")]));
    };
    if raw_items.is_empty() || raw_items.len() > MAX_ITEMS {
        return Err(Problem::bad_request(vec![FieldError::new("items", format!("1 to {MAX_ITEMS} items"))]));
    }
    let mut errors: Vec<FieldError> = body_json
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .filter(|k| *k != "items")
        .map(|k| FieldError::new(k.clone(), "is not a field of an order (items)"))
        .collect();
    let sites = store.site_facts(account).await.map_err(internal)?;
    let today = crate::clock::today();
    let mut items = Vec::with_capacity(raw_items.len());
    for (i, raw) in raw_items.iter().enumerate() {
        match validate_item(raw, i, &sites, today) {
            Ok(item) => items.push(item),
            Err(more) => errors.extend(more),
        }
    }
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    let order = NewOrder {
        account: account.to_owned(),
        actor: caller.name(),
        items,
        idempotency: key,
        at: crate::clock::now(),
        confirmation: mail::confirmation,
    };
    match store.create_order(&order).await.map_err(internal)? {
        Created::New(order) => {
            tracing::info!(account = %order.account, order = order.id, items = order.items.len(), "order submitted");
            Ok((order, false))
        }
        Created::Replayed(order) => Ok((order, true)),
        Created::KeyReused => Err(Problem::unprocessable(vec![FieldError::new(
            "Idempotency-Key",
            "was used before with another request body; use a new key for a new order",
        )])),
    }
}

/// `GET /v1/accounts/{account}/orders[?status=S&after=ID&limit=N]`: oldest first;
/// `next_after` continues the list.
#[utoipa::path(get, path = "/v1/accounts/{account}/orders", tag = "orders",
    params(("account" = String, Path),
        ("status" = Option<ItemStatus>, Query, description = "Only orders whose summary is this"),
        ("after" = Option<i64>, Query, minimum = 0, description = "Orders with ids above this"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "1 to 200; 50 when absent")),
    responses(
        (status = 200, body = OrderList),
        (status = 400, description = "Invalid request, by field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account or order (or not the caller's)", body = Problem, content_type = "application/problem+json")))]
pub async fn list<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path(account): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    visible_account(&*api.store, &caller, &account).await?;
    let mut errors = Vec::new();
    let status = query
        .get("status")
        .and_then(|s| s.parse::<ItemStatus>().map_err(|e| errors.push(FieldError::new("status", e.to_string()))).ok());
    let after = match query.get("after").map(|a| a.parse::<i64>()) {
        None => 0,
        Some(Ok(after)) if after >= 0 => after,
        Some(_) => {
            errors.push(FieldError::new("after", "must be an order id (a non-negative integer)"));
            0
        }
    };
    let limit = match query.get("limit").map(|l| l.parse::<u32>()) {
        None => PAGE,
        Some(Ok(limit)) if (1..=MAX_PAGE).contains(&limit) => limit,
        Some(_) => {
            errors.push(FieldError::new("limit", format!("must be 1 to {MAX_PAGE}")));
            PAGE
        }
    };
    if !errors.is_empty() {
        return Err(Problem::bad_request(errors));
    }
    let page = api.store.orders(&account, status, after, limit).await.map_err(internal)?;
    // The store's JSON goes out as it is: an [`OrderList`], without a round trip through serde.
    let next_after = page.next_after.map_or("null".to_owned(), |id| id.to_string());
    let body = format!("{{\"orders\":{},\"next_after\":{next_after}}}\n", page.json);
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

/// A page of orders (its schema; the store writes its JSON).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderList {
    pub orders: Vec<Order>,
    /// Pass as `after` for the next page; `null` on the last one.
    pub next_after: Option<i64>,
}

/// The body of a new order.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewOrderBody {
    /// 1 to 100 items.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<Item>,
}

/// `GET /v1/accounts/{account}/orders/{order}`.
#[utoipa::path(get, path = "/v1/accounts/{account}/orders/{order}", tag = "orders",
    params(("account" = String, Path), ("order" = String, Path)),
    responses(
        (status = 200, body = Order),
        (status = 404, description = "No such account or order (or not the caller's)", body = Problem, content_type = "application/problem+json")))]
pub async fn one<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path((account, order)): Path<(String, String)>,
) -> Result<Json<Order>, Problem> {
    visible_account(&*api.store, &caller, &account).await?;
    let not_found = || Problem::not_found(format!("account {account:?} has no order {order:?}"));
    let id: i64 = order.parse().map_err(|_| not_found())?;
    api.store.order(&account, id).await.map_err(internal)?.map(Json).ok_or_else(not_found)
}

/// The body of a transition.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionBody {
    pub to: ItemStatus,
    #[serde(default)]
    pub items: Option<Vec<i64>>,
    #[serde(default)]
    pub quote: Option<Quote>,
}

fn check_quote(quote: &Quote) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let digits = |s: &str| !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit());
    let amount_ok = match quote.amount.split_once('.') {
        None => digits(&quote.amount),
        Some((units, cents)) => digits(units) && cents.len() == 2 && digits(cents),
    };
    if !amount_ok {
        errors.push(FieldError::new("quote.amount", "must be a decimal amount such as \"1200.00\""));
    }
    if quote.currency.len() != 3 || !quote.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        errors.push(FieldError::new("quote.currency", "must be an ISO 4217 code such as \"USD\""));
    }
    errors
}

/// `POST /v1/accounts/{account}/orders/{order}/transitions` with
/// `{"to": STATUS, "items": [ids] (default all), "quote": {"amount", "currency"}}` (R22).
#[utoipa::path(post, path = "/v1/accounts/{account}/orders/{order}/transitions", tag = "orders",
    params(("account" = String, Path), ("order" = String, Path)),
    request_body = TransitionBody,
    responses(
        (status = 200, body = Order),
        (status = 400, description = "Invalid request, by field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the caller's to do", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account or order (or not the caller's)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not a step of the lifecycle from the item's status", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by a rule, by field", body = Problem, content_type = "application/problem+json")))]
pub async fn transition<S: Store + 'static>(
    State(api): State<Api<S>>,
    Extension(caller): Extension<Caller>,
    Path((account, order)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Order>, Problem> {
    // Another account's order is a 404 before its body is looked at.
    visible_account(&*api.store, &caller, &account).await?;
    let not_found = || Problem::not_found(format!("account {account:?} has no order {order:?}"));
    let id: i64 = order.parse().map_err(|_| not_found())?;
    let body: TransitionBody =
        super::body::typed(&body, r#"{"to": STATUS, "items": [ids], "quote": {"amount", "currency"}}"#)?;
    move_items(&*api.store, &caller, &account, id, body).await.map(Json)
}

/// Moves items of order `id` of `account` as `caller` (R22), as the API and the console both do:
/// the quote checked, the step checked for the caller's part, every chosen item moved or none.
pub async fn move_items<S: Store>(
    store: &S,
    caller: &Caller,
    account: &str,
    id: i64,
    body: TransitionBody,
) -> Result<Order, Problem> {
    let found = visible_account(store, caller, account).await?;
    let not_found = || Problem::not_found(format!("account {account:?} has no order {id}"));
    if let Some(quote) = &body.quote {
        let errors = check_quote(quote);
        if !errors.is_empty() {
            return Err(Problem::bad_request(errors));
        }
    }
    let transition = Transition {
        account: account.to_owned(),
        order: id,
        items: body.items,
        to: body.to,
        actor: actor_for(caller, &found),
        actor_name: caller.name(),
        quote: body.quote,
        at: crate::clock::now(),
        quote_mail: mail::quote,
    };
    match store.transition_items(&transition).await.map_err(internal)? {
        Ok(order) => {
            tracing::info!(%account, order = id, to = %transition.to, actor = %transition.actor_name, "order items moved");
            Ok(order)
        }
        Err(TransitionRefused::NoOrder(_)) => Err(not_found()),
        Err(e @ TransitionRefused::NoItem { .. }) => Err(Problem::not_found(e.to_string())),
        Err(e @ TransitionRefused::NoContractTerm { item, day }) => {
            let mut problem = Problem::conflict(e.to_string());
            problem.extensions.insert("item".into(), json!(item));
            problem.extensions.insert("start_date".into(), json!(day));
            Err(problem)
        }
        Err(TransitionRefused::Item { item, error }) => {
            let detail = format!("item {item}: {error}");
            let mut problem = match &error {
                TransitionError::Illegal { current, allowed, .. } => {
                    let mut p = Problem::conflict(detail);
                    p.extensions.insert("current".into(), json!(current));
                    p.extensions.insert("allowed".into(), json!(allowed));
                    p
                }
                TransitionError::NotYours { .. } => Problem::forbidden(detail),
                TransitionError::QuoteRequired => Problem::unprocessable(vec![FieldError::new("quote", detail)]),
            };
            problem.extensions.insert("item".into(), json!(item));
            Err(problem)
        }
    }
}
