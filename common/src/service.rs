//! What the agent and the collector do alike as long-running processes (feature `service`): log
//! to standard error, and stop on SIGTERM or Ctrl-C. Nothing of the usage math depends on it.

/// Logs to standard error with `filter` (RUST_LOG syntax): colours only on a terminal, and no
/// timestamps under journald, which stamps every line itself.
pub fn init_logging(filter: &str) -> Result<(), tracing_subscriber::filter::ParseError> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter)?)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init()
    } else {
        builder.init()
    }
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C (only Ctrl-C where SIGTERM cannot be watched).
pub async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
