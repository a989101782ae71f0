//! The order pages (R20–R24): the list, the order form, an order with its items' history and
//! the steps the signed-in user may take. Submitting and moving items go through the API's own
//! functions (`api::orders::submit`, `api::orders::move_items`), so every rule is applied once.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Map, Value};
use tally_common::kinds::{Accessory, ItemStatus, ItemType, SdpRegion, SocketModel, TrafficScope};

use super::words;
use super::{Chrome, Console, PageError, Signed, render};
use crate::api::auth::{internal, visible_account};
use crate::api::orders::{OrderList, TransitionBody, actor_for, move_items, submit};
use crate::api::problem::Problem;
use crate::orders::rules::{check_transition, fields_of};
use crate::orders::{Order, Quote};
use crate::store::{Site, Store};

const PAGE: u32 = 50;

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    status: Option<String>,
    after: Option<i64>,
}

#[derive(Template)]
#[template(path = "orders.html")]
struct OrdersPage {
    chrome: Chrome,
    account: String,
    account_name: String,
    status: String,
    /// Each status: the API's name and its words.
    statuses: Vec<(&'static str, &'static str)>,
    orders: Vec<OrderView>,
    next_after: Option<i64>,
}

/// `/accounts/{a}/orders[?status=S&after=ID]`: the account's orders, oldest first.
pub(super) async fn list<S: Store + 'static>(
    State(console): State<Console<S>>,
    signed: Signed,
    Path(account): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    let found = visible_account(&*console.store, &signed.caller, &account).await?;
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse::<ItemStatus>().map_err(|e| PageError::new(StatusCode::BAD_REQUEST, e.to_string()))?),
    };
    let page = console.store.orders(&account, status, query.after.unwrap_or(0).max(0), PAGE).await.map_err(internal)?;
    let list: OrderList = serde_json::from_str(&format!("{{\"orders\":{},\"next_after\":null}}", page.json))
        .map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let sites = sites_by_id(&console, &account).await?;
    let page = OrdersPage {
        chrome: Chrome::of(&signed, Some(&account)),
        account,
        account_name: found.name,
        status: status.map_or(String::new(), |s| s.as_str().to_owned()),
        statuses: ItemStatus::ALL.iter().map(|s| (s.as_str(), words::status(*s))).collect(),
        orders: list.orders.iter().map(|o| OrderView::of(o, &sites)).collect(),
        next_after: page.next_after,
    };
    Ok(render(&page))
}

/// One item of the form as typed: its type and its fields' values.
#[derive(Debug, Clone)]
struct FormItem {
    item_type: ItemType,
    values: BTreeMap<String, String>,
}

/// One input of the form.
struct Field {
    /// The item's field, as the API names it.
    name: &'static str,
    label: &'static str,
    value: String,
    /// `date`, `number`, or `select` with its options.
    kind: &'static str,
    options: Vec<(String, String)>,
    error: Option<String>,
}

struct ItemView {
    index: usize,
    item_type: &'static str,
    title: &'static str,
    fields: Vec<Field>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "order_new.html")]
struct NewOrderPage {
    chrome: Chrome,
    account: String,
    /// Why the account may not order (R21), instead of the form.
    not_enrolled: Option<String>,
    key: String,
    items: Vec<ItemView>,
    types: Vec<(&'static str, &'static str)>,
    errors: Vec<String>,
}

fn label(field: &str) -> &'static str {
    match field {
        "start_date" => "Start date",
        "site" => "Site",
        "bandwidth_mbps" => "Bandwidth (Mbps)",
        "traffic_scope" => "Traffic scope (sites in China, Morocco or Vietnam)",
        "activation_date" => "New activation date",
        "model" => "Model",
        "quantity" => "Quantity",
        "region" => "Region",
        "accessory" => "Accessory",
        _ => "Value",
    }
}

/// The form's items as the API takes them: numbers where a number was typed, empty fields left
/// out (the API's validation names what is missing).
fn body_of(items: &[FormItem]) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut object = Map::new();
            object.insert("type".into(), Value::from(item.item_type.as_str()));
            for (name, value) in item.values.iter().filter(|(_, v)| !v.trim().is_empty()) {
                let value = value.trim();
                let json = match (name.as_str(), value.parse::<u64>()) {
                    ("bandwidth_mbps" | "quantity", Ok(n)) => Value::from(n),
                    _ => Value::from(value),
                };
                object.insert(name.clone(), json);
            }
            Value::Object(object)
        })
        .collect();
    serde_json::json!({ "items": items })
}

/// The form's fields: `key`, `csrf`, `action` and `item{i}.{field}`.
fn parse_form(pairs: &[(String, String)]) -> (BTreeMap<&str, &str>, Vec<FormItem>) {
    let mut plain = BTreeMap::new();
    let mut items: BTreeMap<usize, FormItem> = BTreeMap::new();
    for (name, value) in pairs {
        let Some((index, field)) = name.strip_prefix("item").and_then(|rest| rest.split_once('.')) else {
            plain.insert(name.as_str(), value.as_str());
            continue;
        };
        let Ok(index) = index.parse::<usize>() else { continue };
        if field == "type" {
            if let Ok(item_type) = value.parse::<ItemType>() {
                items.entry(index).or_insert(FormItem { item_type, values: BTreeMap::new() }).item_type = item_type;
            }
        } else if let Some(item) = items.get_mut(&index) {
            item.values.insert(field.to_owned(), value.clone());
        }
    }
    // Fields come after their item's type in the form; a field before it is kept too.
    for (name, value) in pairs {
        if let Some((index, field)) = name.strip_prefix("item").and_then(|rest| rest.split_once('.'))
            && field != "type"
            && let Some(item) = index.parse::<usize>().ok().and_then(|i| items.get_mut(&i))
        {
            item.values.entry(field.to_owned()).or_insert_with(|| value.clone());
        }
    }
    (plain, items.into_values().collect())
}

async fn new_order_page<S: Store>(
    console: &Console<S>,
    signed: &Signed,
    account: &str,
    key: String,
    items: &[FormItem],
    problem: Option<Problem>,
) -> Result<NewOrderPage, PageError> {
    let found = visible_account(&*console.store, &signed.caller, account).await?;
    let not_enrolled = (found.eop_contact_name.is_none() || found.eop_contact_email.is_none()).then(|| {
        format!(
            "{} is not enrolled in the Electronic Order Program with a contact person, so it cannot order here \
             yet. Customer Success enrolls it with the contact person named in the signed enrollment letter; then \
             the contact person, or a colleague, can order here.",
            found.name
        )
    });
    let sites = console.store.site_facts(account).await.map_err(internal)?;
    let scoped = sites.values().any(|facts| facts.region_group.is_stand_alone());
    let named = sites_by_id(console, account).await?;
    let site_options: Vec<(String, String)> = sites.keys().map(|id| (id.clone(), words::site(id, &named))).collect();
    let options =
        |all: Vec<(&str, &str)>| all.into_iter().map(|(o, said)| (o.to_owned(), said.to_owned())).collect::<Vec<_>>();
    let mut by_field: BTreeMap<String, String> = BTreeMap::new();
    let mut errors = Vec::new();
    if let Some(problem) = problem {
        if problem.errors.is_empty() {
            errors.push(problem.detail);
        }
        for e in problem.errors {
            match e.field.strip_prefix("items[") {
                Some(rest) if rest.contains("].") => {
                    by_field.insert(e.field.clone(), e.message);
                }
                _ => errors.push(format!("{}: {}", e.field, e.message)),
            }
        }
    }
    let items = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            // A traffic scope is asked only of an account with sites in China, Morocco or Vietnam.
            let names = std::iter::once("start_date")
                .chain(fields_of(item.item_type).iter().copied())
                .filter(|name| *name != "traffic_scope" || scoped);
            let fields = names
                .map(|name| {
                    let (kind, options) = match name {
                        "start_date" | "activation_date" => ("date", Vec::new()),
                        "bandwidth_mbps" | "quantity" => ("number", Vec::new()),
                        "site" => ("select", site_options.clone()),
                        "traffic_scope" => {
                            let mut scopes =
                                vec![(String::new(), "(a site outside China, Morocco and Vietnam)".to_owned())];
                            scopes.extend(options(
                                TrafficScope::ALL.iter().map(|s| (s.as_str(), words::traffic_scope(*s))).collect(),
                            ));
                            ("select", scopes)
                        }
                        "model" => {
                            ("select", options(SocketModel::ALL.iter().map(|s| (s.as_str(), s.as_str())).collect()))
                        }
                        "region" => (
                            "select",
                            options(SdpRegion::ALL.iter().map(|s| (s.as_str(), words::sdp_region(*s))).collect()),
                        ),
                        "accessory" => (
                            "select",
                            options(Accessory::ALL.iter().map(|s| (s.as_str(), words::accessory(*s))).collect()),
                        ),
                        _ => ("text", Vec::new()),
                    };
                    Field {
                        name,
                        label: label(name),
                        value: item.values.get(name).cloned().unwrap_or_default(),
                        kind,
                        options,
                        error: by_field.remove(&format!("items[{index}].{name}")),
                    }
                })
                .collect();
            ItemView {
                index,
                item_type: item.item_type.as_str(),
                title: words::item_type(item.item_type),
                fields,
                error: by_field.remove(&format!("items[{index}]")),
            }
        })
        .collect();
    // Errors of fields the form does not show.
    errors.extend(by_field.into_iter().map(|(field, message)| format!("{field}: {message}")));
    Ok(NewOrderPage {
        chrome: Chrome::of(signed, Some(account)),
        account: account.to_owned(),
        not_enrolled,
        key,
        items,
        types: ItemType::ALL.iter().map(|t| (t.as_str(), words::item_type(*t))).collect(),
        errors,
    })
}

/// `GET /accounts/{a}/orders/new`: an empty form with a new idempotency key.
pub(super) async fn new_form<S: Store + 'static>(
    State(console): State<Console<S>>,
    signed: Signed,
    Path(account): Path<String>,
) -> Result<Response, PageError> {
    let key =
        crate::digest::random_hex(16).map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(render(&new_order_page(&console, &signed, &account, key, &[], None).await?))
}

/// `POST /accounts/{a}/orders/new`: add or remove an item, or submit the order (a second
/// submission of the same form answers the same order: its key).
pub(super) async fn new_post<S: Store + 'static>(
    State(console): State<Console<S>>,
    signed: Signed,
    Path(account): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let (plain, mut items) = parse_form(&pairs);
    signed.check_form(plain.get("csrf").copied())?;
    let key = plain.get("key").copied().unwrap_or_default().to_owned();
    let action = plain.get("action").copied().unwrap_or_default();
    if let Some(item_type) = action.strip_prefix("add:").and_then(|t| t.parse::<ItemType>().ok()) {
        items.push(FormItem { item_type, values: BTreeMap::new() });
    } else if let Some(index) = action.strip_prefix("remove:").and_then(|i| i.parse::<usize>().ok()) {
        if index < items.len() {
            items.remove(index);
        }
    } else if action == "submit" {
        let body = body_of(&items);
        let hash = crate::digest::sha256_hex(body.to_string().as_bytes());
        let idempotency = (!key.is_empty()).then(|| (key.clone(), hash));
        match submit(&*console.store, &signed.caller, &account, &body, idempotency).await {
            Ok((order, _)) => {
                return Ok(Redirect::to(&format!("/accounts/{account}/orders/{}", order.id)).into_response());
            }
            Err(problem) if problem.status == 404 => return Err(problem.into()),
            Err(problem) => {
                let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
                let page = new_order_page(&console, &signed, &account, key, &items, Some(problem)).await?;
                return Ok((status, render(&page)).into_response());
            }
        }
    }
    Ok(render(&new_order_page(&console, &signed, &account, key, &items, None).await?))
}

/// A step the signed-in user may take on a whole order.
struct Step {
    to: &'static str,
    label: &'static str,
    needs_quote: bool,
}

/// One item of an order, in words, numbered within its order.
struct ItemLine {
    number: usize,
    /// Its id across all orders: the API's, shown to operators.
    id: i64,
    summary: String,
    /// Each field: the API's name, its value there, its label and its words.
    fields: Vec<(&'static str, String, &'static str, String)>,
    status: ItemStatus,
    quote: Option<Quote>,
}

/// What happened to an order, once for the items it happened to together.
struct Event {
    at: String,
    what: String,
    /// `items 1 and 2` when not every item of the order.
    items: String,
}

/// An order in words, for its page and the list.
struct OrderView {
    id: i64,
    submitted: String,
    status: ItemStatus,
    items: Vec<ItemLine>,
    timeline: Vec<Event>,
    /// When the first item still wanted is to start.
    starts: Option<String>,
}

impl OrderView {
    fn of(order: &Order, sites: &BTreeMap<String, Site>) -> OrderView {
        let items: Vec<ItemLine> = order
            .items
            .iter()
            .enumerate()
            .map(|(index, i)| ItemLine {
                number: index + 1,
                id: i.id,
                summary: words::item(&i.item, sites),
                fields: words::item_fields(&i.item, sites)
                    .into_iter()
                    .map(|(name, raw, said)| (name, raw, label(name), said))
                    .collect(),
                status: i.status,
                quote: i.quote.clone(),
            })
            .collect();
        OrderView {
            id: order.id,
            submitted: words::time_text(&order.created_at),
            status: order.status,
            timeline: timeline(order),
            starts: order
                .items
                .iter()
                .filter(|i| i.status != ItemStatus::Canceled)
                .map(|i| i.item.start_date())
                .min()
                .map(words::date),
            items,
        }
    }
}

/// The order's history: each status with who and when, in time order, the items it concerned
/// named when not all of them.
fn timeline(order: &Order) -> Vec<Event> {
    /// When, what, who, the quote, and the numbers of the items it happened to.
    type Happened<'a> = (&'a str, ItemStatus, &'a str, Option<&'a Quote>, Vec<usize>);
    let mut events: Vec<Happened> = Vec::new();
    for (index, item) in order.items.iter().enumerate() {
        for h in &item.history {
            match events.iter_mut().find(|e| (e.0, e.1, e.2) == (h.at.as_str(), h.status, h.actor.as_str())) {
                Some(event) => event.4.push(index + 1),
                None => events.push((&h.at, h.status, &h.actor, h.quote.as_ref(), vec![index + 1])),
            }
        }
    }
    events.sort_by(|a, b| a.0.cmp(b.0));
    events
        .into_iter()
        .map(|(at, status, actor, quote, numbers)| {
            let who = words::actor(actor);
            let what = match (status, quote) {
                (ItemStatus::Submitted, _) => format!("Submitted by {who}"),
                (ItemStatus::InProcess, _) => format!("Taken in process by {who}"),
                (ItemStatus::PendingConfirmation, Some(q)) => format!("Quoted {} {} by {who}", q.amount, q.currency),
                (ItemStatus::PendingConfirmation, None) => format!("Sent for confirmation by {who}"),
                (ItemStatus::Completed, _) => format!("Approved by {who}"),
                (ItemStatus::Canceled, _) => format!("Canceled by {who}"),
            };
            let items = if numbers.len() == order.items.len() {
                String::new()
            } else {
                let listed: Vec<String> = numbers.iter().map(usize::to_string).collect();
                format!("item{} {}", if numbers.len() > 1 { "s" } else { "" }, listed.join(", "))
            };
            Event { at: words::time_text(at), what, items }
        })
        .collect()
}

/// The account's sites by id, for items in words.
async fn sites_by_id<S: Store>(console: &Console<S>, account: &str) -> Result<BTreeMap<String, Site>, PageError> {
    let sites = console.store.sites_of_account(account).await.map_err(internal)?;
    Ok(sites.into_iter().map(|s| (s.id.clone(), s)).collect())
}

#[derive(Template)]
#[template(path = "order.html")]
struct OrderPage {
    chrome: Chrome,
    account: String,
    account_name: String,
    order: OrderView,
    steps: Vec<Step>,
    /// The signed-in user may cancel the order (a confirmed, secondary step).
    may_cancel: bool,
    operator: bool,
    error: Option<String>,
}

async fn order_page<S: Store>(
    console: &Console<S>,
    signed: &Signed,
    account: &str,
    id: i64,
    error: Option<String>,
) -> Result<OrderPage, PageError> {
    let found = visible_account(&*console.store, &signed.caller, account).await?;
    let order = console.store.order(account, id).await.map_err(internal)?;
    let order = order.ok_or_else(|| PageError::not_found(format!("this account has no order {id}")))?;
    let actor = actor_for(&signed.caller, &found);
    // Offered: the steps this user may take for every item still moving (R22's own check).
    let live: Vec<ItemStatus> = order
        .items
        .iter()
        .map(|i| i.status)
        .filter(|s| !matches!(s, ItemStatus::Completed | ItemStatus::Canceled))
        .collect();
    let allowed =
        |to: ItemStatus| !live.is_empty() && live.iter().all(|s| check_transition(*s, to, actor, true).is_ok());
    let steps = [
        (ItemStatus::InProcess, "Take in process"),
        (ItemStatus::PendingConfirmation, "Send the quote"),
        (ItemStatus::Completed, "Approve the quote"),
    ]
    .into_iter()
    .filter(|(to, _)| allowed(*to))
    .map(|(to, label)| Step { to: to.as_str(), label, needs_quote: to == ItemStatus::PendingConfirmation })
    .collect();
    Ok(OrderPage {
        chrome: Chrome::of(signed, Some(account)),
        account: account.to_owned(),
        account_name: found.name,
        order: OrderView::of(&order, &sites_by_id(console, account).await?),
        steps,
        may_cancel: allowed(ItemStatus::Canceled),
        operator: signed.caller.role == crate::store::Role::Operator,
        error,
    })
}

/// `/accounts/{a}/orders/{id}`.
pub(super) async fn one<S: Store + 'static>(
    State(console): State<Console<S>>,
    signed: Signed,
    Path((account, id)): Path<(String, i64)>,
) -> Result<Response, PageError> {
    Ok(render(&order_page(&console, &signed, &account, id, None).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct StepForm {
    csrf: Option<String>,
    to: String,
    amount: Option<String>,
    currency: Option<String>,
}

/// `POST /accounts/{a}/orders/{id}/transitions`: one step for every item of the order.
pub(super) async fn step<S: Store + 'static>(
    State(console): State<Console<S>>,
    signed: Signed,
    Path((account, id)): Path<(String, i64)>,
    Form(form): Form<StepForm>,
) -> Result<Response, PageError> {
    signed.check_form(form.csrf.as_deref())?;
    let to = form.to.parse::<ItemStatus>().map_err(|e| PageError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let quote = match (form.amount, form.currency) {
        (Some(amount), Some(currency)) if !amount.is_empty() || !currency.is_empty() => {
            Some(Quote { amount, currency })
        }
        _ => None,
    };
    match move_items(&*console.store, &signed.caller, &account, id, TransitionBody { to, items: None, quote }).await {
        Ok(_) => Ok(Redirect::to(&format!("/accounts/{account}/orders/{id}")).into_response()),
        Err(problem) if problem.status == 404 => Err(problem.into()),
        Err(problem) => {
            let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
            let mut said = problem.detail.clone();
            for e in &problem.errors {
                said += &format!(" {}: {}.", e.field, e.message);
            }
            let page = order_page(&console, &signed, &account, id, Some(said)).await?;
            Ok((status, render(&page)).into_response())
        }
    }
}
