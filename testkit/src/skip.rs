//! Tests that cannot run on this machine say so where `make test` shows it, and fail in CI.

use std::io::Write;

/// The file `make test` lists the skipped tests from (one line each).
pub const SKIP_LOG_VAR: &str = "TALLY_SKIP_LOG";

/// Marks the calling test as skipped because of `why` (say what to install or how to run it):
/// `return skip!("...")`. The reason goes to stderr outside libtest's capture and to
/// `TALLY_SKIP_LOG`, named by the calling crate. In CI (`CI` set) a skip is a failure: CI installs
/// everything the suite needs.
#[macro_export]
macro_rules! skip {
    ($why:expr) => {
        $crate::skip::record(env!("CARGO_PKG_NAME"), env!("CARGO_CRATE_NAME"), $why)
    };
}

/// What [`skip!`] does, for the test binary `crate_name` of `package`.
pub fn record(package: &str, crate_name: &str, why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    assert!(std::env::var_os("CI").is_none(), "{test} cannot be skipped in CI: {why}");
    // Written to the handle, not with eprintln!, which the test harness captures.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    if let Some(path) = std::env::var_os(SKIP_LOG_VAR) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(path);
        let _ = log.and_then(|mut f| writeln!(f, "{package} {crate_name}: {test}: {why}"));
    }
}
