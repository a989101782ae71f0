//! The API's JSON answers: axum's `Json`, but a document ends with a newline, as a terminal and
//! `curl` expect (problems do too, [`super::problem`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A JSON document as the answer, `application/json`, ending with a newline.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(128);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => {
                body.push(b'\n');
                ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
            }
            Err(e) => {
                tracing::error!(error = %e, "an answer could not be written as JSON");
                (StatusCode::INTERNAL_SERVER_ERROR, "the answer could not be written as JSON").into_response()
            }
        }
    }
}
