//! What is wrong with one field of a request, as the domain finds it (order items, metered
//! events, site changes): the field's path and a message. The HTTP layer maps a list of them to
//! one problem+json answer (`api::problem`); the domain never knows about HTTP.

use serde::Serialize;

/// What is wrong with one field of the request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    /// The field has the form its schema describes but a rule about the stored state or today's
    /// date refuses it (a site of another account, a start date in the past): 422, not 400.
    #[serde(skip)]
    pub by_rule: bool,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), message: message.into(), by_rule: false }
    }

    /// A field refused by a rule (see [`FieldError::by_rule`]).
    pub fn by_rule(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { by_rule: true, ..FieldError::new(field, message) }
    }
}
