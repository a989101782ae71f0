//! The collector on the network, below the API: the HTTP server and its bounds ([`http`]), HTTPS
//! and where a token may travel ([`https`]), and where a webhook may go ([`webhook_target`]).

pub mod http;
pub mod https;
pub mod webhook_target;
