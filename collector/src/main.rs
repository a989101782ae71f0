//! `tally-collector`: parses the command line, sets up logging and the runtime, and calls the
//! library: [`tally_collector::serve`] or one of the operator's commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tally_collector::admin::{self, LicenseArgs, NewSite};
use tally_collector::ca::Ca;
use tally_collector::clock;
use tally_collector::config::{Config, DEFAULT_CONFIG};
use tally_collector::enforcement;
use tally_collector::ingest::{self, Limits};
use tally_collector::store::sqlite::SqliteStore;
use tally_collector::store::{Account, Channel, Role, Store};
use tally_collector::usage;
use tally_common::bandwidth::Bandwidth;
use tally_common::region::RegionTable;
use tally_common::time::Month;
use tokio::net::TcpListener;

/// Exit code for a bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(name = "tally-collector", version, about = "Tally's collector: ingest, usage engine and order API")]
struct Cli {
    /// The configuration file (defaults apply without one).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector until SIGTERM or Ctrl-C.
    Serve,
    /// Check the configuration and report every error at once (exit code 64 on any).
    Validate,
    /// Print a commented example configuration with every default.
    DefaultConfig,
    /// Customer accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Sites (one per socket or tunnel).
    #[command(subcommand)]
    Site(SiteCommand),
    /// Licenses of an account.
    #[command(subcommand)]
    License(LicenseCommand),
    /// Bearer tokens of the HTTP API.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The collector's certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Import buckets from CSV: site,bucket_start,max_bps[,samples]; all rows or none.
    ImportBuckets {
        #[arg(long)]
        csv: PathBuf,
    },
    /// The notification outbox: what was sent to whom, and what is still being retried.
    Notifications {
        #[arg(long)]
        account: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// An account's usage of one month: bandwidth pool per region group, sites, other licenses.
    Report {
        #[arg(long)]
        account: String,
        /// YYYY-MM
        #[arg(long)]
        month: Month,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

impl Command {
    /// Commands that only read: they never create a store where there is none.
    fn reads_only(&self) -> bool {
        matches!(
            self,
            Command::Report { .. }
                | Command::Notifications { .. }
                | Command::Site(SiteCommand::Buckets { .. } | SiteCommand::Enforcement { .. })
        )
    }
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the CA if it does not exist, and print its fingerprint.
    Init,
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Add a recipient of the account's month-end notifications (R15).
    Notify {
        #[arg(long)]
        account: String,
        #[arg(long, required_unless_present = "webhook", conflicts_with = "webhook")]
        email: Option<String>,
        /// An http:// URL that receives the signed JSON document.
        #[arg(long)]
        webhook: Option<String>,
    },
    Add {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        /// The managing partner's account, for a sub-account.
        #[arg(long)]
        partner: Option<String>,
        /// The contact person of the Electronic Order Program enrollment.
        #[arg(long)]
        eop_contact_name: Option<String>,
        #[arg(long)]
        eop_contact_email: Option<String>,
    },
}

#[derive(Subcommand)]
enum SiteCommand {
    Add {
        #[arg(long)]
        account: String,
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        /// ISO 3166-1 alpha-2 country code.
        #[arg(long)]
        country: String,
        /// socket, ipsec or cloud_interconnect.
        #[arg(long = "type")]
        site_type: String,
        #[arg(long)]
        cap_mbps: Option<u64>,
    },
    /// Change a site's country, type or cap; refused if it breaks R17 (nothing is changed).
    Set {
        #[arg(long)]
        site: String,
        #[arg(long)]
        country: Option<String>,
        #[arg(long = "type")]
        site_type: Option<String>,
        #[arg(long, conflicts_with = "no_cap")]
        cap_mbps: Option<u64>,
        /// Lift the cap (only where R17 does not require one).
        #[arg(long)]
        no_cap: bool,
    },
    /// Print a one-time enrollment token for the site's agent.
    EnrollToken {
        #[arg(long)]
        site: String,
        #[arg(long, default_value_t = 24)]
        valid_hours: u32,
    },
    /// Revoke the site's certificates: its agent is refused until enrolled again.
    Revoke {
        #[arg(long)]
        site: String,
    },
    /// A site's cap, its agent's report on applying it, and the month's buckets above the
    /// cap × 1.05 (R17).
    Enforcement {
        #[arg(long)]
        site: String,
        /// YYYY-MM; the current month when not given.
        #[arg(long)]
        month: Option<Month>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// A site's buckets of one UTC day.
    Buckets {
        #[arg(long)]
        site: String,
        #[arg(long)]
        date: NaiveDate,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new bearer token (once: only its hash is kept); its id goes to stderr.
    Create {
        #[arg(long)]
        role: Role,
        /// The account of a partner or customer token.
        #[arg(long)]
        account: Option<String>,
        /// The token of the account's contact person (who approves quotes, R22).
        #[arg(long)]
        contact: bool,
    },
    /// Revoke a token: refused from its next request on.
    Revoke {
        #[arg(long)]
        id: i64,
    },
}

#[derive(Subcommand)]
enum LicenseCommand {
    Add(LicenseAdd),
    /// Change a license's quantity or last day; refused if the caps of its group no longer fit
    /// (R17).
    Change {
        #[arg(long)]
        account: String,
        #[arg(long)]
        id: i64,
        /// Mbps for bandwidth_pool; users, devices or data units otherwise.
        #[arg(long)]
        quantity: Option<u64>,
        #[arg(long)]
        to: Option<NaiveDate>,
    },
}

#[derive(Args)]
struct LicenseAdd {
    #[arg(long)]
    account: String,
    #[arg(long)]
    kind: String,
    /// Region group (bandwidth_pool) or ZTNA region (ztna_users).
    #[arg(long)]
    region: Option<String>,
    /// Mbps for bandwidth_pool; users, devices or data units otherwise.
    #[arg(long)]
    quantity: u64,
    #[arg(long)]
    from: NaiveDate,
    #[arg(long)]
    to: NaiveDate,
    /// Devices per block, for devices licenses.
    #[arg(long)]
    block_size: Option<u64>,
    /// Events per hour per data unit, for data_lake licenses.
    #[arg(long)]
    per_unit: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Table,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.command {
        Command::DefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            return ExitCode::SUCCESS;
        }
        _ => match Config::load(cli.config.as_deref()) {
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
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(execute(cli.command, config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tally-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command, config: Config) -> anyhow::Result<()> {
    if command.reads_only() && !config.database().exists() {
        anyhow::bail!("no store at {} (is --config missing?)", config.database().display());
    }
    let store = SqliteStore::open(&config.database()).await.context("opening the store")?;
    let regions = RegionTable::builtin();
    match command {
        Command::Serve => {
            let (ca, created) = Ca::load_or_create(&config.ca_dir())?;
            tracing::info!(created, fingerprint = %ca.fingerprint(), dir = %config.ca_dir().display(), "certificate authority ready");
            tracing::info!(store = %config.database().display(), "store ready");
            let listener = TcpListener::bind(config.http_listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.http_listen))?;
            let endpoint = tally_collector::quic_endpoint(&ca, config.quic_listen, &config.server_names)
                .with_context(|| format!("cannot listen on UDP {}", config.quic_listen))?;
            tracing::info!(quic = %config.quic_listen, "ingest listening (ALPN tally/1)");
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            let limits = Limits { max_connections: config.max_connections, max_bucket_bps: config.max_bucket_bps };
            let store = std::sync::Arc::new(store);
            let ingest = tokio::spawn(ingest::run(
                endpoint,
                store.clone(),
                std::sync::Arc::new(ca),
                limits,
                until_stopped(stopped.clone()),
            ));
            let transports = usage::notify::Transports::new(&config).map_err(anyhow::Error::msg)?;
            let engine = tokio::spawn(usage::run_engine(
                store.clone(),
                config.month_window,
                config.grace,
                transports,
                until_stopped(stopped.clone()),
            ));
            let api = tally_collector::api::Api::new(store, &config);
            let http = tokio::spawn(tally_collector::serve(listener, api, until_stopped(stopped)));
            shutdown_signal().await;
            tracing::info!("shutting down: no new connections, draining, committing");
            let _ = stop.send(true);
            let _ = ingest.await;
            let _ = engine.await;
            http.await??;
            tracing::info!("collector stopped");
        }
        Command::Validate | Command::DefaultConfig => {}
        Command::Ca(CaCommand::Init) => {
            let (ca, created) = Ca::load_or_create(&config.ca_dir())?;
            let state = if created { "created" } else { "exists" };
            println!("CA {state}: {}\nfingerprint (SHA-256): {}", config.ca_dir().display(), ca.fingerprint());
        }
        Command::Site(SiteCommand::EnrollToken { site, valid_hours }) => {
            let (ca, _) = Ca::load_or_create(&config.ca_dir())?;
            let valid = chrono::TimeDelta::hours(i64::from(valid_hours));
            let token = admin::enroll_token(&store, &ca, &site, valid, clock::now()).await?;
            println!("{token}");
        }
        Command::Site(SiteCommand::Revoke { site }) => {
            let revoked = admin::revoke_site(&store, &site, clock::now()).await?;
            println!("site {site}: {revoked} certificate(s) revoked");
        }
        Command::Account(AccountCommand::Add { id, name, partner, eop_contact_name, eop_contact_email }) => {
            let account = Account { id, name, partner, eop_contact_name, eop_contact_email };
            admin::add_account(&store, account.clone()).await?;
            println!("account {} added", account.id);
        }
        Command::Site(SiteCommand::Add { account, id, name, country, site_type, cap_mbps }) => {
            let site =
                admin::add_site(&store, &regions, NewSite { account, id, name, country, site_type, cap_mbps }).await?;
            println!("site {} added in {} ({})", site.id, site.region_group, site.country);
        }
        Command::Site(SiteCommand::Set { site, country, site_type, cap_mbps, no_cap }) => {
            let cap_bps = match (no_cap, cap_mbps) {
                (true, _) => Some(None),
                (false, Some(mbps)) => Some(Some(admin::cap_bps(mbps)?)),
                (false, None) => None,
            };
            let country = country.map(|c| c.parse()).transpose().map_err(|e| anyhow::anyhow!("--country: {e}"))?;
            let site_type = site_type.map(|t| t.parse()).transpose().map_err(|e| anyhow::anyhow!("--type: {e}"))?;
            let changes = admin::SiteChanges { site, country, site_type, cap_bps };
            let site = admin::set_site(&store, &regions, changes).await?;
            let cap = site.cap_bps.map_or("no cap".to_owned(), |c| format!("cap {}", Bandwidth(c)));
            println!("site {}: {} in {} ({}), {cap}", site.id, site.site_type, site.region_group, site.country);
        }
        Command::License(LicenseCommand::Change { account, id, quantity, to }) => {
            admin::change_license(&store, &account, id, quantity, to).await?;
            println!("license {id} changed");
        }
        Command::Site(SiteCommand::Enforcement { site, month, format }) => {
            let site = store.site(&site).await?.ok_or_else(|| anyhow::anyhow!("site {site:?} does not exist"))?;
            let month = month.unwrap_or_else(|| Month::containing(clock::today()));
            let enforcement = enforcement::site_enforcement(&store, &site, month, config.month_window).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&enforcement)?),
                Format::Table => print!("{}", enforcement::table(&enforcement)),
            }
        }
        Command::Site(SiteCommand::Buckets { site, date, format }) => {
            if store.site(&site).await?.is_none() {
                anyhow::bail!("site {site:?} does not exist");
            }
            let buckets = store.buckets_of_day(&site, date).await?;
            match format {
                Format::Json => {
                    let rows: Vec<_> = buckets
                        .iter()
                        .map(|b| serde_json::json!({"start": b.start.to_string(), "max_bps": b.max_bps, "samples": b.samples}))
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                }
                Format::Table => {
                    println!("{site} {date}: {} of 288 buckets", buckets.len());
                    for b in &buckets {
                        println!(
                            "{}  {:>14} bit/s  {:>12}  {:>2} samples",
                            b.start,
                            b.max_bps,
                            Bandwidth(b.max_bps).to_string(),
                            b.samples
                        );
                    }
                }
            }
        }
        Command::Token(TokenCommand::Create { role, account, contact }) => {
            let (id, secret) = admin::create_api_token(&store, role, account.as_deref(), contact).await?;
            let whose = account.map_or(String::new(), |a| format!(" of account {a}"));
            let contact = if contact { ", contact person" } else { "" };
            eprintln!("token {id}: {}{whose}{contact}; shown once, keep it now", role.as_str());
            println!("{secret}");
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            if !store.revoke_api_token(id).await? {
                anyhow::bail!("there is no token {id}");
            }
            println!("token {id} revoked");
        }
        Command::License(LicenseCommand::Add(a)) => {
            let args = LicenseArgs {
                account: a.account,
                kind: a.kind,
                region: a.region,
                quantity: a.quantity,
                from: a.from,
                to: a.to,
                block_size: a.block_size,
                per_unit: a.per_unit,
            };
            let id = admin::add_license(&store, args).await?;
            println!("license {id} added");
        }
        Command::ImportBuckets { csv } => {
            let text = std::fs::read_to_string(&csv).with_context(|| format!("cannot read {}", csv.display()))?;
            let stats = admin::import_buckets(&store, &csv.display().to_string(), &text, config.max_bucket_bps).await?;
            println!("imported {} new bucket(s), merged {} with stored ones (R10)", stats.inserted, stats.merged);
        }
        Command::Account(AccountCommand::Notify { account, email, webhook }) => {
            let (channel, address) = match (email, webhook) {
                (Some(email), _) => {
                    email.parse::<lettre::Address>().map_err(|e| anyhow::anyhow!("--email {email:?}: {e}"))?;
                    (Channel::Email, email)
                }
                (None, Some(url)) => {
                    let uri = url.parse::<axum::http::Uri>();
                    if !uri.is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()) {
                        anyhow::bail!("--webhook {url:?}: expected an http:// or https:// URL");
                    }
                    (Channel::Webhook, url)
                }
                (None, None) => anyhow::bail!("--email or --webhook is required"),
            };
            if store.account(&account).await?.is_none() {
                anyhow::bail!("account {account:?} does not exist");
            }
            store.add_recipient(&account, channel, &address).await?;
            println!("account {account}: {} {address} will be notified", channel.as_str());
        }
        Command::Notifications { account, format } => {
            let items = store.notifications(account.as_deref()).await?;
            let state = |i: &tally_collector::store::OutboxItem| match (&i.delivered_at, &i.last_error) {
                (Some(at), _) => format!("delivered {}", tally_common::time::rfc3339(*at)),
                (None, Some(e)) => format!("retrying after {} attempt(s): {e}", i.attempts),
                (None, None) => "pending".to_owned(),
            };
            match format {
                Format::Json => {
                    let rows: Vec<_> = items
                        .iter()
                        .map(|i| serde_json::json!({"id": i.id, "account": i.account, "topic": i.topic,
                            "channel": i.channel.as_str(), "recipient": i.recipient, "attempts": i.attempts,
                            "delivered_at": i.delivered_at.map(tally_common::time::rfc3339), "last_error": i.last_error}))
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                }
                Format::Table => {
                    for i in &items {
                        println!(
                            "{:>5}  {}  {}  {:<7}  {}  {}",
                            i.id,
                            i.account,
                            i.topic,
                            i.channel.as_str(),
                            i.recipient,
                            state(i)
                        );
                    }
                }
            }
        }
        Command::Report { account, month, format } => {
            let report =
                usage::report::build(&store, &account, month, config.month_window, config.grace, clock::now()).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Format::Table => print!("{}", usage::report::table(&report)),
            }
        }
    }
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
