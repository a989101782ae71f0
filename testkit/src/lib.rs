//! What the agent's and the collector's tests and benchmarks share (a dev-dependency of both):
//!
//! - [`collector`]: the real collector binary on a data directory of its own, its admin commands,
//!   and `serve`, ready when `/healthz` answers; its clock and store follow `TALLY_TEST_NOW` and
//!   `TALLY_TEST_STORE`.
//! - [`process`]: a child process whose log is read line by line, killed when dropped.
//! - [`http`]: raw HTTP/1.1 requests.
//! - [`modules`]: a crate's modules and what each names, for the tests of its layers.
//! - [`postgres`]: a throwaway PostgreSQL cluster, one per test binary.
//! - [`tmpfs`]: a small file system to fill, for full-disk tests.
//! - [`skip!`]: a test that cannot run here says why, and fails in CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod collector;
pub mod http;
pub mod modules;
pub mod postgres;
pub mod process;
pub mod skip;
pub mod tmpfs;

pub use collector::Collector;
pub use process::Logged;
