//! Online orders (R20–R25): customers order more capacity and hardware; Customer Success moves
//! each item through its lifecycle; completed items take effect.
//!
//! - [`rules`]: what a valid item is, who may move an item where, an order's summary.
//!
//! Storage, the HTTP routes, the e-mails (R23) and the effects (R24) build on these.

pub mod rules;
