//! tally-common: what the agent and the collector must agree on.
//!
//! - [`time`]: UTC ticks, buckets, days and month windows (R2, R5, R7).
//! - [`region`], [`kinds`], [`bandwidth`]: the domain's vocabulary (R11 and the Contract's identifiers).
//! - [`counters`], [`sampler`], [`bucket`]: from interface byte counters to 5-minute buckets (R1–R4).
//! - [`p95`], [`license`], [`pool`]: daily site P95, daily aggregates, monthly P95, licensed
//!   capacity and excess (R5–R8); [`meters`]: the other licenses' excess and purchases (R12, R13).
//! - [`lan`]: the devices a socket's LAN frames identify (R29), and the kernel filter that
//!   keeps every other frame away from the agent.
//! - [`config_file`]: how a configuration file is read, its problems reported all at once;
//!   [`suggest`]: the closest name to a mistyped key or command.
//! - `service` (feature): logging, shutdown signals and the command line, as both binaries run
//!   them.
//! - [`wire`], [`token`]: the agent ↔ collector messages and their length-prefixed postcard
//!   frames; the enrollment token both sides read.
//!
//! Nothing in this crate performs I/O (but for [`config_file::load`] reading a configuration file)
//! or reads a clock: bytes and times are passed in, so every
//! rule is deterministic and tested against a plain oracle (STYLE habit 1). It must never panic on
//! what a peer sends.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod bandwidth;
pub mod bucket;
pub mod config_file;
pub mod counters;
pub mod csv_text;
pub mod enforcement;
pub mod kinds;
pub mod lan;
pub mod license;
pub mod meters;
pub mod p95;
pub mod pool;
pub mod region;
pub mod sampler;
#[cfg(feature = "service")]
pub mod service;
pub mod suggest;
pub mod time;
pub mod token;
pub mod wire;
