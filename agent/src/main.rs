//! `tally-agent`: parses the command line, sets up logging and a single-threaded runtime (a
//! socket appliance is small; the work is a few file reads every 5 s), and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tally_agent::clock::{Clock, ScaledClock, SystemClock, TEST_CLOCK_VAR};
use tally_agent::config::{Config, DEFAULT_CONFIG, SYSTEM_CONFIG};
use tally_agent::measure::Notify;
use tally_agent::{replay, status, store};
use tally_common::service::{init_logging, shutdown_signal};
use tally_common::{out, outln};

/// Exit code for a bad configuration or command line (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit code for a state directory the agent cannot write (EX_CANTCREAT): the systemd unit does
/// not restart it, as waiting does not help.
const EXIT_STATE_DIR: u8 = 73;

#[derive(Parser)]
#[command(name = "tally-agent", version, about = "Tally's socket agent: measures the WAN into 5-minute buckets")]
struct Cli {
    /// The configuration file. Without one: /etc/tally-agent/agent.toml if it exists (the
    /// systemd unit's), else the defaults (state_dir /var/lib/tally-agent; `default-config`
    /// prints them).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The configuration file read: `--config`, or the system's if it exists.
    fn config_file(&self) -> Option<PathBuf> {
        let system = std::path::Path::new(SYSTEM_CONFIG);
        self.config.clone().or_else(|| system.exists().then(|| system.to_owned()))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Obtain this socket's certificate from the collector with a one-time token.
    Enroll {
        /// The collector's QUIC address, HOST:PORT.
        #[arg(long)]
        collector: String,
        /// As printed by `tally-collector site enroll-token`; `-` reads it from standard input.
        /// A token on the command line can be read by other users in the process list: prefer
        /// `--token-file` or `-`.
        #[arg(long, required_unless_present = "token_file", conflicts_with = "token_file")]
        token: Option<String>,
        /// A file holding the token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Where to keep the identity (default: the configuration's state_dir).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Measure until SIGTERM or Ctrl-C.
    Run,
    /// Check the configuration and report every error at once (exit code 64 on any).
    Validate,
    /// Print a commented example configuration with every default.
    DefaultConfig,
    /// Show interfaces, the last sample, the open bucket, pending buckets and discards.
    Status {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The installer's pre-flight check: WAN interfaces and their speeds, counters, shaping for
    /// caps, LAN capture, the collector and its certificate, the clock, free disk. Each line OK or
    /// what to do; exit code 0 only when every check passes.
    Doctor,
    /// Feed a recorded counter trace through the exact sampling code.
    Replay {
        #[arg(long)]
        trace: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Table,
}

fn main() -> ExitCode {
    let cli: Cli = tally_common::service::parse_command_line(&["enroll"]);
    let config = cli.config_file();
    match cli.command {
        Command::DefaultConfig => {
            out!("{DEFAULT_CONFIG}");
            ExitCode::SUCCESS
        }
        Command::Validate => match Config::load(config.as_deref()) {
            Ok(_) => {
                match &config {
                    Some(file) => outln!("{} is valid", file.display()),
                    None => outln!("no configuration file (no --config, no {SYSTEM_CONFIG}): the defaults are valid"),
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run => {
            if cli.config.is_none()
                && let Some(refusal) = tally_agent::others::refuse_a_second_agent()
            {
                eprintln!("tally-agent: {refusal}");
                return ExitCode::from(EXIT_CONFIG);
            }
            match Config::load(config.as_deref()) {
                Ok(config) => run(config),
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Enroll { collector, token, token_file, state_dir } => with_config(config, |c| {
            let state_dir = state_dir.unwrap_or(c.state_dir);
            enroll(&state_dir, &collector, &read_token(token, token_file)?)
        }),
        Command::Status { format } => with_config(config, |c| show_status(&c, format)),
        Command::Doctor => match Config::load(config.as_deref()) {
            Ok(c) => doctor(&c, config.as_deref()),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Replay { trace, format } => with_config(config, |c| show_replay(&trace, &c, format)),
    }
}

fn with_config(path: Option<PathBuf>, f: impl FnOnce(Config) -> anyhow::Result<()>) -> ExitCode {
    match Config::load(path.as_deref()) {
        Ok(config) => match f(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tally-agent: {e:#}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Measures until stopped; a fatal error is the log's last line, at ERROR.
fn run(config: Config) -> ExitCode {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.clone());
    if let Err(e) = init_logging(&filter) {
        eprintln!("tally-agent: {e:#}");
        return ExitCode::FAILURE;
    }
    match measure(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("stopped: {e:#}");
            if e.downcast_ref::<store::StoreError>().is_some_and(store::StoreError::is_state_dir) {
                ExitCode::from(EXIT_STATE_DIR)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn measure(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        tracing::info!(version = tally_agent::AGENT_VERSION, "starting");
        match std::env::var(TEST_CLOCK_VAR) {
            Ok(spec) => {
                let clock = ScaledClock::parse(&spec).map_err(anyhow::Error::msg)?;
                tracing::warn!("{TEST_CLOCK_VAR} is set: running on an accelerated test clock");
                tally_agent::run(config, &clock, stopping(), &Systemd::from_environment()).await
            }
            Err(_) => tally_agent::run(config, &SystemClock, stopping(), &Systemd::from_environment()).await,
        }
    })
}

/// `doctor`: every check, printed; 0 only when all pass.
fn doctor(config: &Config, file: Option<&std::path::Path>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tally-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let checks = runtime.block_on(async {
        match std::env::var(TEST_CLOCK_VAR).ok().map(|spec| ScaledClock::parse(&spec)) {
            Some(Ok(clock)) => tally_agent::doctor::run(config, file, &clock).await,
            _ => tally_agent::doctor::run(config, file, &SystemClock).await,
        }
    });
    out!("{}", tally_agent::doctor::table(&checks));
    if checks.iter().all(|c| c.ok) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// SIGTERM or Ctrl-C, logged; watched from this call on.
fn stopping() -> impl std::future::Future<Output = ()> {
    let signal = shutdown_signal();
    async {
        signal.await;
        tracing::info!("shutdown requested");
    }
}

/// READY and WATCHDOG notifications; no-ops when not started by systemd.
struct Systemd {
    /// `WatchdogSec=` of the unit, when it has one.
    watchdog: Option<std::time::Duration>,
    last_ping: std::cell::Cell<Option<std::time::Instant>>,
}

impl Systemd {
    fn from_environment() -> Systemd {
        Systemd { watchdog: sd_notify::watchdog_enabled(), last_ping: Default::default() }
    }
}

impl Notify for Systemd {
    fn ready(&self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }

    /// Pings the watchdog three times within its period, not at every tick: a datagram to
    /// systemd (and a wake-up of it) every 10 s rather than every 5 s with `WatchdogSec=30s`.
    fn alive(&self) {
        let Some(watchdog) = self.watchdog else { return };
        if self.last_ping.get().is_none_or(|last| last.elapsed() >= watchdog / 3) {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            self.last_ping.set(Some(std::time::Instant::now()));
        }
    }
}

/// The enrollment token: given, from standard input (`-`), or from a file.
fn read_token(token: Option<String>, file: Option<PathBuf>) -> anyhow::Result<String> {
    use anyhow::Context;
    let text = match (token, file) {
        (Some(token), _) if token == "-" => {
            std::io::read_to_string(std::io::stdin()).context("reading the token from standard input")?
        }
        (Some(token), _) => token,
        (None, Some(file)) => {
            std::fs::read_to_string(&file).with_context(|| format!("reading the token from {}", file.display()))?
        }
        (None, None) => anyhow::bail!("give --token or --token-file"),
    };
    Ok(text.trim().to_owned())
}

fn enroll(state_dir: &std::path::Path, collector: &str, token: &str) -> anyhow::Result<()> {
    let token: tally_common::token::EnrollToken = token.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let identity = runtime.block_on(tally_agent::uplink::enroll(state_dir, collector, &token))?;
    outln!(
        "enrolled as site {} with collector {}; identity saved in {}",
        identity.site,
        identity.collectors.join(", "),
        state_dir.join("identity").display()
    );
    Ok(())
}

fn show_status(config: &Config, format: Format) -> anyhow::Result<()> {
    // A read-only command: it never creates a store where there was none.
    if !config.store_dir().exists() {
        anyhow::bail!(
            "no store at {} (is --config missing? an agent that never ran has no status)",
            config.store_dir().display()
        );
    }
    let status = match status::query(&config.status_socket()) {
        Some(status) => status,
        None if store::is_locked(&config.state_dir) => {
            // An agent that is starting opens its store before its status socket: wait for it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                if let Some(status) = status::query(&config.status_socket()) {
                    break status;
                }
                if std::time::Instant::now() >= deadline {
                    anyhow::bail!(
                        "an agent is running on {} but its status socket does not answer",
                        config.state_dir.display()
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        None => {
            let opened = store::Store::open(&config.state_dir, config.max_pending_buckets())?;
            let identity = tally_agent::uplink::Identity::load(&config.state_dir).ok().flatten();
            let collector = identity.as_ref().and_then(|i| i.collectors.first().map(String::as_str));
            opened.store.stopped_status(&config.store_dir(), collector)?
        }
    };
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&status)?),
        Format::Table => out!("{}", status::table(&status, SystemClock.wall())),
    }
    Ok(())
}

fn show_replay(trace: &std::path::Path, config: &Config, format: Format) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(trace).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", trace.display()))?;
    let result = replay::replay(&text, config).map_err(|errors| {
        anyhow::anyhow!("{}: {} error(s)\n  - {}", trace.display(), errors.len(), errors.join("\n  - "))
    })?;
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&result)?),
        Format::Table => out!("{}", replay::table(&result)),
    }
    Ok(())
}
