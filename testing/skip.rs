//! Tests that cannot run on this machine say so where `make test` shows it, and fail in CI.
//! Included by each test crate's support module (`#[path]`), so every crate skips the same way.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;

/// The file `make test` lists the skipped tests from (one line each).
pub const SKIP_LOG_VAR: &str = "TALLY_SKIP_LOG";

/// Marks the calling test as skipped because of `why` (say what to install or how to run it):
/// the reason goes to stderr outside libtest's capture and to `TALLY_SKIP_LOG`. In CI (`CI` set)
/// a skip is a failure: CI installs everything the suite needs. Call as `return skip("...")`.
pub fn skip(why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    assert!(std::env::var_os("CI").is_none(), "{test} cannot be skipped in CI: {why}");
    // Written to the handle, not with eprintln!, which the test harness captures.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    if let Some(path) = std::env::var_os(SKIP_LOG_VAR) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(path);
        let _ =
            log.and_then(|mut f| writeln!(f, "{} {}: {test}: {why}", env!("CARGO_PKG_NAME"), env!("CARGO_CRATE_NAME")));
    }
}
