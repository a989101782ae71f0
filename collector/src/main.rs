//! `tally-collector`: parses the command line, reads the configuration and the clock, sets up
//! logging and the runtime, and runs the command ([`tally_collector::cli`]).

use std::process::ExitCode;

use tally_collector::cli::{Cli, Command, commands};
use tally_collector::clock;
use tally_collector::config::{Config, DEFAULT_CONFIG};
use tally_common::{out, outln};

// musl's allocator takes one lock for every allocation: the static build's threads would queue
// on it (the storm benchmark against the image's binary shows the difference).
#[cfg(all(target_env = "musl", not(feature = "system-allocator")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// Commands that change or delete things: a typo is never answered with one of them first.
const RISKY_COMMANDS: &[&str] = &["restore", "migrate-store", "import-buckets", "revoke", "init", "quarantine"];

fn main() -> ExitCode {
    // The store, the CA's key and everything else the collector writes are its own.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli: Cli = tally_common::service::parse_command_line(RISKY_COMMANDS);
    let config_file = cli.config_file();
    let config = match cli.command {
        Command::DefaultConfig => {
            out!("{DEFAULT_CONFIG}");
            return ExitCode::SUCCESS;
        }
        _ => match Config::load(config_file.as_deref()) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    if let Some(value) = std::env::var_os(clock::OFFSET_VAR) {
        match clock::parse_offset(&value.to_string_lossy()) {
            Ok(offset) => clock::set_offset(offset),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
    }
    if let Command::Validate = cli.command {
        outln!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.clone());
    let exposed = config_file.as_deref().and_then(|path| config.secrets_exposed(path));
    if let Err(e) = tally_common::service::init_logging(&filter) {
        eprintln!("tally-collector: RUST_LOG {filter:?} is not a valid filter: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Some(warning) = exposed {
        tracing::warn!("{warning}");
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(commands::execute(cli.command, config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tally-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}
