//! The console's tables as CSV, written with the `csv` crate: numbers in bit/s, dates ISO, the
//! same values as the API's JSON.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::pages::{MonthQuery, report_of};
use super::{Console, PageError, Signed};
use crate::store::Store;

fn csv_response(name: String, rows: Vec<Vec<String>>) -> Result<Response, PageError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer.write_record(&row).map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    }
    let body = writer.into_inner().map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let headers = [
        (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
        (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
    ];
    Ok((headers, body).into_response())
}

/// `/accounts/{a}/usage.csv?month=`: each region group's daily aggregate (R6).
pub(super) async fn usage_csv<S: Store + 'static>(
    State(console): State<Console<S>>,
    signed: Signed,
    Path(account): Path<String>,
    Query(query): Query<MonthQuery>,
) -> Result<Response, PageError> {
    let month = query.month()?;
    let report = report_of(&console, &signed, &account, month).await?;
    let mut rows = vec![["region_group", "date", "aggregate_bps", "in_window"].map(String::from).to_vec()];
    for pool in &report.bandwidth_pool {
        for day in &pool.days {
            rows.push(vec![
                pool.region_group.to_string(),
                day.date.to_string(),
                day.aggregate_bps.to_string(),
                day.in_window.to_string(),
            ]);
        }
    }
    csv_response(format!("{account}-usage-{month}.csv"), rows)
}

/// `/accounts/{a}/sites.csv?month=`: each site's daily P95 (R5).
pub(super) async fn sites_csv<S: Store + 'static>(
    State(console): State<Console<S>>,
    signed: Signed,
    Path(account): Path<String>,
    Query(query): Query<MonthQuery>,
) -> Result<Response, PageError> {
    let month = query.month()?;
    let report = report_of(&console, &signed, &account, month).await?;
    let header = ["site", "region_group", "date", "p95_bps", "buckets_present", "buckets_expected", "in_window"];
    let mut rows = vec![header.map(String::from).to_vec()];
    for site in &report.sites {
        for day in &site.days {
            rows.push(vec![
                site.site.clone(),
                site.region_group.to_string(),
                day.date.to_string(),
                day.p95_bps.to_string(),
                day.buckets_present.to_string(),
                day.buckets_expected.to_string(),
                day.in_window.to_string(),
            ]);
        }
    }
    csv_response(format!("{account}-sites-{month}.csv"), rows)
}

/// `/accounts/{a}/orders.csv`: every item of every order, oldest first, with the order's fields.
pub(super) async fn orders_csv<S: Store + 'static>(
    State(console): State<Console<S>>,
    signed: Signed,
    Path(account): Path<String>,
) -> Result<Response, PageError> {
    crate::api::auth::visible_account(&*console.store, &signed.caller, &account).await?;
    const FIELDS: [&str; 11] = [
        "site",
        "bandwidth_mbps",
        "traffic_scope",
        "activation_date",
        "model",
        "region",
        "accessory",
        "quantity",
        "status",
        "quote_amount",
        "quote_currency",
    ];
    let mut header = vec!["order", "created_at", "order_status", "item", "type", "start_date"];
    header.extend(FIELDS);
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    let mut after = 0;
    loop {
        let page = console.store.orders(&account, None, after, 200).await.map_err(crate::api::auth::internal)?;
        let orders: Vec<crate::orders::Order> = serde_json::from_str(&page.json)
            .map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        for order in &orders {
            for item in &order.items {
                let json = serde_json::to_value(item).unwrap_or_default();
                let text = |v: &serde_json::Value| match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                let mut row = vec![
                    order.id.to_string(),
                    order.created_at.clone(),
                    order.status.to_string(),
                    item.id.to_string(),
                    text(&json["type"]),
                    text(&json["start_date"]),
                ];
                for field in FIELDS {
                    let value = match field {
                        "quote_amount" => json["quote"]["amount"].clone(),
                        "quote_currency" => json["quote"]["currency"].clone(),
                        _ => json[field].clone(),
                    };
                    row.push(text(&value));
                }
                rows.push(row);
            }
        }
        match page.next_after {
            Some(next) => after = next,
            None => break,
        }
    }
    csv_response(format!("{account}-orders.csv"), rows)
}
