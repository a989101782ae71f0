//! The collector's command line: the tree of subcommands (this file) and what each one does
//! ([`commands`]). `main` parses it, reads the configuration, and calls [`commands::execute`].
//! Every flag has a one-line help; flags with a fixed set of values list them.

pub mod commands;
mod serve;

use std::path::PathBuf;

use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tally_common::time::Month;

use crate::store::Role;

#[derive(Debug, Parser)]
#[command(name = "tally-collector", version, about = "Tally's collector: ingest, usage engine and order API")]
pub struct Cli {
    /// The configuration file (without one: /etc/tally/collector.toml if it exists, else the
    /// defaults); TALLY_<KEY> variables apply over it.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The configuration file read: `--config`, or the system's if it exists.
    pub fn config_file(&self) -> Option<PathBuf> {
        let system = std::path::Path::new(crate::config::SYSTEM_CONFIG);
        self.config.clone().or_else(|| system.exists().then(|| system.to_owned()))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector until SIGTERM or Ctrl-C.
    Serve,
    /// Run the usage engine, which `serve` runs every few seconds, once: recompute the days that
    /// changed, finalize every month past its closing time, deliver the notifications due. Reports
    /// never finalize a month; this (or `serve`) does.
    Engine {
        /// One pass, then exit (exit code 1 if any account's month could not be finalized).
        #[arg(long, required = true)]
        once: bool,
    },
    /// Check the configuration and report every error at once (exit code 64 on any).
    Validate,
    /// Ask the running `serve` whether it is healthy (its store can write): exit code 0, or 1
    /// with the reason. A container or Kubernetes probe.
    Healthcheck {
        /// The URL probed; by default /healthz on http_listen (through loopback when it listens
        /// on every address).
        #[arg(long)]
        url: Option<String>,
    },
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
    /// Per-site caps (R17) across accounts.
    #[command(subcommand)]
    Enforcement(EnforcementCommand),
    /// Import buckets from CSV: site,bucket_start,max_bps[,samples]; all rows or none.
    ImportBuckets {
        /// The CSV file, one bucket a line.
        #[arg(long)]
        csv: PathBuf,
        /// Accept buckets starting after the collector's clock (and 10 minutes): a deliberate
        /// import of the future.
        #[arg(long)]
        allow_future: bool,
    },
    /// Write a backup of the embedded store (a consistent copy, while serve runs) and the CA to
    /// one file. On PostgreSQL: pg_dump, and the CA directory.
    Backup {
        /// The backup file (replaced whole).
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup into this configuration's data_dir, which must hold no store nor CA.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
    },
    /// Copy an SQLite store into a new PostgreSQL database, every table in one transaction,
    /// checked by row counts and a checksum of the buckets. The source is left as it is.
    MigrateStore {
        /// The SQLite store: sqlite://PATH (data_dir/tally.db).
        #[arg(long)]
        from: String,
        /// The PostgreSQL database, empty: postgres://user@host:port/db.
        #[arg(long)]
        to: String,
    },
    /// Over-usage found when months were finalized (R14), with what covers it (R32).
    #[command(subcommand)]
    Overusage(OverusageCommand),
    /// The notification outbox: what was sent to whom, and what is still being retried.
    Notifications {
        /// Only this account's.
        #[arg(long)]
        account: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table, help = FORMAT_HELP)]
        format: Format,
    },
    /// An account's usage of one month: bandwidth pool per region group, sites, other licenses.
    Report {
        /// The account's id.
        #[arg(long)]
        account: String,
        /// The month, YYYY-MM.
        #[arg(long)]
        month: Month,
        #[arg(long, value_enum, default_value_t = Format::Table, help = FORMAT_HELP)]
        format: Format,
    },
}

impl Command {
    /// Commands that only read: they never create a store where there is none.
    pub fn reads_only(&self) -> bool {
        matches!(
            self,
            Command::Report { .. }
                | Command::Notifications { .. }
                | Command::Overusage(OverusageCommand::List { .. })
                | Command::Enforcement(EnforcementCommand::Check { .. })
                | Command::Account(AccountCommand::List { .. })
                | Command::Site(
                    SiteCommand::Buckets { .. }
                        | SiteCommand::Enforcement { .. }
                        | SiteCommand::Intake { .. }
                        | SiteCommand::List { .. }
                )
                | Command::Token(TokenCommand::List { .. })
        )
    }
}

const FORMAT_HELP: &str = "Output: table (for people) or json (for programs).";

#[derive(Debug, Subcommand)]
pub enum EnforcementCommand {
    /// Every account and stand-alone group whose site caps will exceed the pool in force on a day
    /// of the next N days (a pool that ends or shrinks), with that day, the caps, their sum and
    /// the pool.
    Check {
        /// How many days ahead, from today.
        #[arg(long, default_value_t = crate::enforcement::pool_risk::DEFAULT_DAYS,
            value_parser = clap::value_parser!(u32).range(0..=i64::from(crate::enforcement::pool_risk::MAX_DAYS)))]
        days: u32,
        #[arg(long, value_enum, default_value_t = Format::Table, help = FORMAT_HELP)]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum OverusageCommand {
    /// An account's over-usage of a month, or (--suspect) every one to review since purchases
    /// are counted in the license's unit: Data Lake resolutions recorded in events per hour.
    List {
        /// The account (with --month).
        #[arg(long, required_unless_present = "suspect", requires = "month")]
        account: Option<String>,
        /// The month, YYYY-MM (with --account).
        #[arg(long, requires = "account")]
        month: Option<Month>,
        /// Only the over-usage to review, of every account.
        #[arg(long, conflicts_with_all = ["account", "month"])]
        suspect: bool,
        #[arg(long, value_enum, default_value_t = Format::Table, help = FORMAT_HELP)]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the CA if it does not exist, and print its fingerprint.
    Init,
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Add an account (a customer, a partner, or a partner's sub-account).
    Add {
        /// The account's id (used in URLs and commands).
        #[arg(long)]
        id: String,
        /// Its display name.
        #[arg(long)]
        name: String,
        /// The managing partner's account, for a sub-account.
        #[arg(long)]
        partner: Option<String>,
        /// The contact person's name: enrolls the account in the Electronic Order Program (R21).
        #[arg(long, requires = "eop_contact_email")]
        eop_contact_name: Option<String>,
        /// The contact person's e-mail address.
        #[arg(long, requires = "eop_contact_name")]
        eop_contact_email: Option<String>,
        /// The first day of its contract term (R27); without it, the term is
        /// `default_contract_months` from today.
        #[arg(long, value_parser = date, requires = "term_end")]
        term_start: Option<NaiveDate>,
        /// The last day of its contract term.
        #[arg(long, value_parser = date, requires = "term_start")]
        term_end: Option<NaiveDate>,
    },
    /// Change an account's name, enroll it in the Electronic Order Program with a contact person
    /// (R21), or set a contract term (R27: the term starting that day gets the new end, or a
    /// renewal is added); what is not given keeps its value.
    Set {
        /// The account's id.
        #[arg(long)]
        id: String,
        /// A new display name.
        #[arg(long)]
        name: Option<String>,
        /// The contact person's name (enrolls the account in the EoP).
        #[arg(long, requires = "eop_contact_email")]
        eop_contact_name: Option<String>,
        /// The contact person's e-mail address.
        #[arg(long, requires = "eop_contact_name")]
        eop_contact_email: Option<String>,
        /// The first day of a contract term.
        #[arg(long, value_parser = date, requires = "term_end")]
        term_start: Option<NaiveDate>,
        /// The last day of that contract term.
        #[arg(long, value_parser = date, requires = "term_start")]
        term_end: Option<NaiveDate>,
    },
    /// List the accounts with their partner, EoP contact and contract term in force.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table, help = FORMAT_HELP)]
        format: Format,
    },
    /// Add a recipient of the account's month-end notifications (R15).
    Notify {
        /// The account's id.
        #[arg(long)]
        account: String,
        /// An e-mail address.
        #[arg(long, required_unless_present = "webhook", conflicts_with = "webhook")]
        email: Option<String>,
        /// An http:// or https:// URL that receives the signed JSON document.
        #[arg(long)]
        webhook: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Add a site to an account; refused if it breaks R17 (a cap is required in CN, VN and MA and
    /// for Cloud Interconnect sites).
    Add {
        /// The account's id.
        #[arg(long)]
        account: String,
        /// The site's id (its agent's certificate names it).
        #[arg(long)]
        id: String,
        /// Its display name.
        #[arg(long)]
        name: String,
        /// ISO 3166-1 alpha-2 country code; it decides the region group (R11).
        #[arg(long)]
        country: String,
        /// socket, ipsec or cloud_interconnect.
        #[arg(long = "type", value_name = "TYPE")]
        site_type: String,
        /// Per-site cap in Mbps, enforced by the agent (R17).
        #[arg(long)]
        cap_mbps: Option<u64>,
    },
    /// Change a site's country, type or cap; refused if it breaks R17 (nothing is changed).
    Set {
        /// The site's id.
        #[arg(long)]
        site: String,
        /// A new ISO 3166-1 alpha-2 country code (its region group follows, R11).
        #[arg(long)]
        country: Option<String>,
        /// The day the new country takes effect, YYYY-MM-DD (default today): a day belongs to
        /// the group in force at its 00:00 UTC; an earlier day corrects a month not yet finalized.
        #[arg(long, value_parser = date, requires = "country")]
        from: Option<NaiveDate>,
        /// socket, ipsec or cloud_interconnect.
        #[arg(long = "type", value_name = "TYPE")]
        site_type: Option<String>,
        /// A new cap in Mbps.
        #[arg(long, conflicts_with = "no_cap")]
        cap_mbps: Option<u64>,
        /// Lift the cap (only where R17 does not require one).
        #[arg(long)]
        no_cap: bool,
    },
    /// List the sites, of every account or of one.
    List {
        /// Only this account's sites.
        #[arg(long)]
        account: Option<String>,
        /// Only the sites without a bucket for this long (30m, 2h, 1d), with their last bucket
        /// and their agent's last connection: their traffic is not billed (R5).
        #[arg(long, value_parser = crate::agents::presence::duration)]
        silent: Option<chrono::TimeDelta>,
        #[arg(long, value_enum, default_value_t = Format::Table, help = FORMAT_HELP)]
        format: Format,
    },
    /// Print a one-time enrollment token for the site's agent.
    EnrollToken {
        /// The site's id.
        #[arg(long)]
        site: String,
        /// How long the token can be used.
        #[arg(long, default_value_t = 24)]
        valid_hours: u32,
    },
    /// Revoke the site's certificates: its agent is refused until enrolled again.
    Revoke {
        /// The site's id.
        #[arg(long)]
        site: String,
    },
    /// A site's cap, its agent's report on applying it, and the month's buckets above the
    /// cap × 1.05 (R17).
    Enforcement {
        /// The site's id.
        #[arg(long)]
        site: String,
        /// The month, YYYY-MM; the current month when not given.
        #[arg(long)]
        month: Option<Month>,
        #[arg(long, value_enum, default_value_t = Format::Table, help = FORMAT_HELP)]
        format: Format,
    },
    /// What the site's agent sent that was not billed: refusals by reason, the agent's discard
    /// totals (R3), and the quarantine of buckets refused for their time (a wrong clock).
    Intake {
        /// The site's id.
        #[arg(long)]
        site: String,
        #[arg(long, value_enum, default_value_t = Format::Table, help = FORMAT_HELP)]
        format: Format,
    },
    /// Empty the site's quarantine: bill its buckets (--accept, as measured or shifted) or
    /// drop them (--discard). All or nothing.
    Quarantine {
        /// The site's id.
        #[arg(long)]
        site: String,
        /// Bill the quarantined buckets.
        #[arg(long, conflicts_with = "discard", required_unless_present = "discard")]
        accept: bool,
        /// Move each accepted bucket's start by this many minutes (a multiple of 5; negative
        /// for a clock that was ahead).
        #[arg(long, requires = "accept", allow_negative_numbers = true, default_value_t = 0)]
        shift_minutes: i64,
        /// Drop the quarantined buckets.
        #[arg(long)]
        discard: bool,
    },
    /// A site's buckets of one UTC day.
    Buckets {
        /// The site's id.
        #[arg(long)]
        site: String,
        /// The UTC day, YYYY-MM-DD.
        #[arg(long, value_parser = date)]
        date: NaiveDate,
        #[arg(long, value_enum, default_value_t = Format::Table, help = FORMAT_HELP)]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new bearer token (once: only its hash is kept); its id goes to stderr.
    Create {
        /// operator, partner or customer.
        #[arg(long)]
        role: Role,
        /// The account of a partner or customer token.
        #[arg(long)]
        account: Option<String>,
        /// The token of the account's contact person (who approves quotes, R22).
        #[arg(long)]
        contact: bool,
        /// The person the token belongs to, shown in order histories and recipient changes.
        #[arg(long, requires = "email")]
        name: Option<String>,
        /// That person's e-mail address.
        #[arg(long, requires = "name")]
        email: Option<String>,
    },
    /// Revoke a token: refused from its next request on.
    Revoke {
        /// The token's id (`token list` shows it).
        #[arg(long)]
        id: i64,
    },
    /// List the tokens: id, role, account, created, revoked (never the secret, which is not kept).
    List {
        #[arg(long, value_enum, default_value_t = Format::Table, help = FORMAT_HELP)]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Add a license to an account.
    Add(LicenseAdd),
    /// Change a license's quantity or last day; refused if the caps of its group no longer fit
    /// (R17).
    Change {
        /// The account's id.
        #[arg(long)]
        account: String,
        /// The license's id (printed by `license add`).
        #[arg(long)]
        id: i64,
        /// Mbps for bandwidth_pool; users, devices or data units otherwise.
        #[arg(long)]
        quantity: Option<u64>,
        /// The day the new quantity takes effect, YYYY-MM-DD (default today; never in a finalized
        /// month): the license ends the day before, and one with the new quantity runs on.
        #[arg(long, value_parser = date, requires = "quantity")]
        from: Option<NaiveDate>,
        /// The new last day in force, YYYY-MM-DD.
        #[arg(long, value_parser = date)]
        to: Option<NaiveDate>,
    },
}

#[derive(Debug, Args)]
pub struct LicenseAdd {
    /// The account's id.
    #[arg(long)]
    pub account: String,
    /// bandwidth_pool, ztna_users, ai_security_users, devices, dem_users, data_lake,
    /// premium_security or insights.
    #[arg(long)]
    pub kind: String,
    /// Region group for bandwidth_pool (group1, group2, china, vietnam, morocco); ZTNA region for
    /// ztna_users (general, china, vietnam, morocco).
    #[arg(long)]
    pub region: Option<String>,
    /// Mbps for bandwidth_pool; users, devices or data units otherwise.
    #[arg(long)]
    pub quantity: u64,
    /// The first day in force, YYYY-MM-DD.
    #[arg(long, value_parser = date)]
    pub from: NaiveDate,
    /// The last day in force, YYYY-MM-DD.
    #[arg(long, value_parser = date)]
    pub to: NaiveDate,
    /// Devices per block, for devices licenses.
    #[arg(long)]
    pub block_size: Option<u64>,
    /// Events per hour per data unit, for data_lake licenses.
    #[arg(long)]
    pub per_unit: Option<u64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Table,
}

/// `--date`, `--from`, `--to`: the same message as for months.
fn date(s: &str) -> Result<NaiveDate, String> {
    tally_common::time::parse_date(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every subcommand says what it does and every flag has its one-line help.
    #[test]
    fn every_command_and_flag_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in command.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(path.clone());
                }
                for arg in sub.get_arguments().filter(|a| a.get_id() != "help") {
                    if arg.get_help().is_none() {
                        missing.push(format!("{path} --{}", arg.get_id()));
                    }
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "tally-collector", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:?}");
        Cli::command().debug_assert();
    }
}
