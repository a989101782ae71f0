//! The HTTP API under `/v1` (Contract), and `/healthz`. Bearer-token authentication: until the
//! tokens issue lands, one operator token from the configuration (`operator_token`); without
//! one, every `/v1` route answers 401.

pub mod problem;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{TimeDelta, Utc};
use serde_json::json;
use tally_common::time::{Month, MonthWindowSetting};

use crate::config::Config;
use crate::store::Store;
use crate::usage::report::{self, ReportError, UsageReport};
use problem::{FieldError, Problem};

/// What the handlers share.
#[derive(Debug)]
pub struct Api<S> {
    store: Arc<S>,
    month_window: MonthWindowSetting,
    grace: TimeDelta,
    operator_token: Option<String>,
}

impl<S> Clone for Api<S> {
    fn clone(&self) -> Self {
        Api {
            store: self.store.clone(),
            month_window: self.month_window,
            grace: self.grace,
            operator_token: self.operator_token.clone(),
        }
    }
}

impl<S: Store + 'static> Api<S> {
    pub fn new(store: Arc<S>, config: &Config) -> Api<S> {
        Api {
            store,
            month_window: config.month_window,
            grace: config.grace,
            operator_token: config.operator_token.clone(),
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
            .route("/v1/accounts/{account}/usage", get(usage::<S>))
            .with_state(self)
    }

    /// Checks the request's bearer token.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Problem> {
        let Some(expected) = &self.operator_token else {
            return Err(Problem::unauthorized("no operator token is configured on this collector (operator_token)"));
        };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Problem::unauthorized("send the operator token as `Authorization: Bearer <token>`"))?;
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(Problem::unauthorized("the bearer token is not valid"))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /v1/accounts/{account}/usage?month=YYYY-MM`: the usage report (Contract).
async fn usage<S: Store + 'static>(
    State(api): State<Api<S>>,
    headers: HeaderMap,
    Path(account): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<UsageReport>, Problem> {
    api.authorize(&headers)?;
    let month: Month = match query.get("month") {
        None => return Err(Problem::bad_request(vec![FieldError::new("month", "required, as YYYY-MM")])),
        Some(m) => m.parse().map_err(|e| Problem::bad_request(vec![FieldError::new("month", format!("{e}"))]))?,
    };
    match report::build(&*api.store, &account, month, api.month_window, api.grace, Utc::now()).await {
        Ok(report) => Ok(Json(report)),
        Err(ReportError::UnknownAccount(a)) => Err(Problem::not_found(format!("account {a:?} does not exist"))),
        Err(ReportError::Store(e)) => {
            tracing::error!(error = %e, "usage report failed");
            Err(Problem::internal(e.to_string()))
        }
    }
}
