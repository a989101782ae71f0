//! `tally-collector`: parses the command line, sets up logging and the runtime, and runs the
//! library's [`tally_collector::serve`].

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(name = "tally-collector", version, about = "Tally's collector: ingest, usage engine and order API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector until SIGTERM or Ctrl-C.
    Serve {
        /// HTTP address (the Contract's default: 127.0.0.1:8080).
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve { http } => runtime.block_on(async {
            let listener = TcpListener::bind(http).await.with_context(|| format!("cannot listen on {http}"))?;
            tally_collector::serve(listener, shutdown_signal()).await?;
            tracing::info!("collector stopped");
            Ok(())
        }),
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
