//! Errors of the HTTP API as `application/problem+json` (RFC 9457), with field-level details.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub use crate::validation::FieldError;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Members particular to the problem (RFC 9457 extensions).
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank",
            title,
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            extensions: serde_json::Map::new(),
        }
    }

    pub fn bad_request(errors: Vec<FieldError>) -> Problem {
        let detail = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
        Problem { errors, ..Problem::new(StatusCode::BAD_REQUEST, "The request is not valid", detail) }
    }

    /// Some items of a batch were refused and the others kept; `extensions` says what was kept.
    pub fn partly_refused(errors: Vec<FieldError>, extensions: serde_json::Map<String, serde_json::Value>) -> Problem {
        let detail = format!("{} item(s) refused; the others were accepted", errors.len());
        Problem {
            errors,
            extensions,
            ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Some items were refused", detail)
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "Authentication required", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "Not allowed", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "Not found", detail)
    }

    pub fn method_not_allowed(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, "Conflict with the current state", detail)
    }

    /// 400 when any field breaks its schema, otherwise 422 (every field refused by a rule); all
    /// the errors are listed either way.
    pub fn invalid(errors: Vec<FieldError>) -> Problem {
        if errors.iter().all(|e| e.by_rule) { Problem::unprocessable(errors) } else { Problem::bad_request(errors) }
    }

    /// Well-formed but refused by a rule; `errors` name the fields.
    pub fn unprocessable(errors: Vec<FieldError>) -> Problem {
        let detail = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
        Problem { errors, ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "The request breaks a rule", detail) }
    }

    pub fn request_timeout(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::REQUEST_TIMEOUT, "Request timeout", detail)
    }

    pub fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", detail)
    }

    /// 429: too many wrong tokens from the client's address; it may try again after `wait`.
    pub fn too_many_wrong_tokens(wait: std::time::Duration) -> Problem {
        let mut problem = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests",
            format!("too many wrong tokens from this address: try again in {} s", wait.as_secs().max(1)),
        );
        problem.extensions.insert("retry_after_s".into(), wait.as_secs().max(1).into());
        problem
    }

    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable", detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = serde_json::to_vec(&self).unwrap_or_default();
        body.push(b'\n');
        let mut response = (status, [(header::CONTENT_TYPE, "application/problem+json")], body).into_response();
        if let Some(wait) = self.extensions.get("retry_after_s").and_then(|w| w.as_u64()) {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Every error the API answers is a problem: a refusal an extractor or the server wrote as plain
/// text (a path whose escapes are not UTF-8, say) becomes one, its text the detail.
pub async fn problems_only(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    // Only plain text (or nothing) is rewritten: a problem stays, and so does a JSON document
    // that is the answer itself (`/healthz`'s 503 says `failing` and why).
    let plain = response.headers().get(header::CONTENT_TYPE).is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !plain || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let title = status.canonical_reason().unwrap_or("Error");
    let body = axum::body::to_bytes(response.into_body(), 4_096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    Problem::new(status, title, if text.is_empty() { title.to_owned() } else { text }).into_response()
}
