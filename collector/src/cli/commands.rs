//! What each command of the [command line](super) does: `serve` is [`super::serve`]'s; the
//! operator's commands call [`crate::accounts`] and the store, and print for a person
//! (tables) or a program (`--format json`).

use anyhow::Context;
use tally_common::bandwidth::Bandwidth;
use tally_common::region::RegionTable;
use tally_common::time::Month;
use tally_common::{out, outln};

use super::{
    AccountCommand, CaCommand, Command, EnforcementCommand, Format, LicenseCommand, OverusageCommand, SiteCommand,
    TokenCommand,
};
use crate::accounts::recipients;
use crate::accounts::terms;
use crate::accounts::{self, LicenseArgs, NewSite};
use crate::agents::{self, presence, unbilled};
use crate::clock;
use crate::config::Config;
use crate::enforcement;
use crate::enforcement::pool_risk;
use crate::store::postgres::{PgStore, redacted};
use crate::store::sqlite::SqliteStore;
use crate::store::{Account, ContractTerm, Person, Store};
use crate::usage;

/// Runs `command` on the collector configured by `config`, on its store: PostgreSQL when
/// `database_url` is set, else the embedded SQLite file.
pub async fn execute(command: Command, config: Config) -> anyhow::Result<()> {
    match &command {
        Command::MigrateStore { from, to } => return migrate_store(from, to).await,
        Command::Backup { to } => {
            outln!("{}", crate::backup::backup(&config, to).await?);
            return Ok(());
        }
        Command::Restore { from } => {
            outln!("{}", crate::backup::restore(&config, from).await?);
            return Ok(());
        }
        Command::Healthcheck { url } => {
            let url = url
                .clone()
                .unwrap_or_else(|| crate::healthcheck::default_url(config.http_listen, config.http_tls.is_some()));
            let pinned = match &config.http_tls {
                Some((cert, _)) => Some(crate::net::https::end_entity(cert).map_err(anyhow::Error::msg)?),
                None => None,
            };
            let health = crate::healthcheck::probe(&url, pinned).await.map_err(anyhow::Error::msg)?;
            outln!("healthy: {health}");
            return Ok(());
        }
        _ => {}
    }
    // A command that only reads opens the store read-only: it never writes (R35).
    let reads_only = command.reads_only();
    match &config.database_url {
        Some(url) => {
            let store = match reads_only {
                true => PgStore::open_read_only(url).await,
                false => PgStore::open(url).await,
            };
            let store = store.with_context(|| format!("opening the store at {}", redacted(url)))?;
            run(command, config, store).await
        }
        None => {
            if reads_only && !config.database().exists() {
                anyhow::bail!("no store at {} (is --config missing?)", config.database().display());
            }
            let store = match reads_only {
                true => SqliteStore::open_read_only(&config.database()).await,
                false => SqliteStore::open(&config.database()).await,
            };
            run(command, config, store.context("opening the store")?).await
        }
    }
}

async fn run<S: Store + 'static>(command: Command, config: Config, store: S) -> anyhow::Result<()> {
    let regions = RegionTable::builtin();
    if !command.reads_only() {
        usage::overusage::upgrade_units(&store).await.context("upgrading over-usage to purchase units")?;
    }
    match command {
        Command::Serve => super::serve::serve(&config, store).await?,
        Command::Validate
        | Command::DefaultConfig
        | Command::MigrateStore { .. }
        | Command::Healthcheck { .. }
        | Command::Backup { .. }
        | Command::Restore { .. } => {}
        Command::Ca(CaCommand::Init) => {
            let (ca, created) = crate::agents::ca::Ca::load_or_create(&config.ca_dir())?;
            let state = if created { "created" } else { "exists" };
            outln!("CA {state}: {}\nfingerprint (SHA-256): {}", config.ca_dir().display(), ca.fingerprint());
        }
        Command::Site(SiteCommand::EnrollToken { site, valid_hours }) => {
            let (ca, _) = super::serve::load_ca(&config)?;
            let valid = chrono::TimeDelta::hours(i64::from(valid_hours));
            let token = agents::enrollment::enroll_token(&store, &ca, &site, valid, clock::now()).await?;
            outln!("{token}");
        }
        Command::Site(SiteCommand::Revoke { site }) => {
            let revoked = agents::enrollment::revoke_site(&store, &site, clock::now()).await?;
            outln!("site {site}: {revoked} certificate(s) revoked");
        }
        Command::Account(AccountCommand::Add {
            id,
            name,
            partner,
            eop_contact_name,
            eop_contact_email,
            term_start,
            term_end,
        }) => {
            let account = Account { id, name, partner, eop_contact_name, eop_contact_email };
            let term = term_start.zip(term_end).map(|(start, end)| ContractTerm { start, end });
            let today = crate::clock::now().date_naive();
            let term =
                accounts::add_account(&store, account.clone(), term, config.default_contract_months, today).await?;
            outln!("account {} added (contract term {} to {})", account.id, term.start, term.end);
        }
        Command::Account(AccountCommand::Set {
            id,
            name,
            eop_contact_name,
            eop_contact_email,
            term_start,
            term_end,
        }) => {
            let mut account =
                store.account(&id).await?.ok_or_else(|| anyhow::anyhow!("account {id:?} does not exist"))?;
            if name.is_none() && eop_contact_name.is_none() && term_start.is_none() {
                anyhow::bail!(
                    "nothing to change: give --name, --eop-contact-name with --eop-contact-email, or --term-start \
                     with --term-end"
                );
            }
            if let Some((start, end)) = term_start.zip(term_end) {
                match accounts::set_contract_term(&store, &id, ContractTerm { start, end }).await? {
                    Some(old) => {
                        outln!("account {id}: contract term {start} to {end} replaces {} to {}", old.start, old.end)
                    }
                    None => outln!("account {id}: contract term {start} to {end} added"),
                }
            }
            if let Some(name) = name {
                account.name = name;
            }
            if let (Some(contact), Some(email)) = (eop_contact_name, eop_contact_email) {
                email.parse::<lettre::Address>().map_err(|e| anyhow::anyhow!("--eop-contact-email {email:?}: {e}"))?;
                (account.eop_contact_name, account.eop_contact_email) = (Some(contact), Some(email));
            }
            store.update_account(&account).await?;
            outln!("account {id} changed");
        }
        Command::Account(AccountCommand::List { format }) => {
            let today = clock::now().date_naive();
            let mut views = Vec::new();
            for account in store.accounts().await? {
                views.extend(terms::account_view(&store, &account.id, today).await?);
            }
            match format {
                Format::Json => outln!("{}", serde_json::to_string_pretty(&views)?),
                Format::Table => {
                    let mut rows = vec![["id", "name", "partner", "EoP contact", "contract term"].map(String::from)];
                    for a in &views {
                        let contact = match (&a.eop_contact_name, &a.eop_contact_email) {
                            (Some(name), Some(email)) => format!("{name} <{email}>"),
                            _ => "-".into(),
                        };
                        let term = a
                            .contract_term
                            .as_ref()
                            .map_or("none in force".into(), |t| format!("{} to {}", t.start, t.end));
                        rows.push([
                            a.id.clone(),
                            a.name.clone(),
                            a.partner.clone().unwrap_or("-".into()),
                            contact,
                            term,
                        ]);
                    }
                    out!("{}", columns(&rows));
                }
            }
        }
        Command::Site(SiteCommand::List { account, silent: Some(silent), format }) => {
            if let Some(id) = &account
                && store.account(id).await?.is_none()
            {
                anyhow::bail!("account {id:?} does not exist");
            }
            let sites = presence::silent_sites(&store, account.as_deref(), silent, clock::now()).await?;
            let views: Vec<presence::SiteActivityView> = sites.iter().map(Into::into).collect();
            match format {
                Format::Json => outln!("{}", serde_json::to_string_pretty(&views)?),
                Format::Table => {
                    let mut rows =
                        vec![["site".to_owned(), "account".into(), "last bucket".into(), "last connected".into()]];
                    for v in views {
                        let never = || "never".to_owned();
                        rows.push([
                            v.site,
                            v.account,
                            v.last_bucket.unwrap_or_else(never),
                            v.last_connected.unwrap_or_else(never),
                        ]);
                    }
                    out!("{}", columns(&rows));
                }
            }
        }
        Command::Site(SiteCommand::List { account, silent: None, format }) => {
            let accounts = match account {
                Some(id) if store.account(&id).await?.is_none() => anyhow::bail!("account {id:?} does not exist"),
                Some(id) => vec![id],
                None => store.account_ids().await?,
            };
            let mut sites = Vec::new();
            for account in &accounts {
                sites.extend(store.sites_of_account(account).await?);
            }
            match format {
                Format::Json => {
                    let rows: Vec<_> = sites
                        .iter()
                        .map(|s| {
                            serde_json::json!({"id": s.id, "account": s.account, "name": s.name,
                            "country": s.country.as_str(), "region_group": s.region_group, "type": s.site_type,
                            "cap_bps": s.cap_bps})
                        })
                        .collect();
                    outln!("{}", serde_json::to_string_pretty(&rows)?);
                }
                Format::Table => {
                    let mut rows = vec![[
                        "id".to_owned(),
                        "account".into(),
                        "name".into(),
                        "country".into(),
                        "region group".into(),
                        "type".into(),
                        "cap".into(),
                    ]];
                    for s in &sites {
                        rows.push([
                            s.id.clone(),
                            s.account.clone(),
                            s.name.clone(),
                            s.country.as_str().to_owned(),
                            s.region_group.to_string(),
                            s.site_type.to_string(),
                            s.cap_bps.map_or("-".into(), |c| Bandwidth(c).to_string()),
                        ]);
                    }
                    out!("{}", columns(&rows));
                }
            }
        }
        Command::Site(SiteCommand::Add { account, id, name, country, site_type, cap_mbps }) => {
            let site = accounts::sites::add_site(
                &store,
                &regions,
                NewSite { account, id, name, country, site_type, cap_mbps },
            )
            .await?;
            outln!("site {} added in {} ({})", site.id, site.region_group, site.country);
        }
        Command::Site(SiteCommand::Set { site, country, from, site_type, cap_mbps, no_cap }) => {
            let cap_bps = match (no_cap, cap_mbps) {
                (true, _) => Some(None),
                (false, Some(mbps)) => Some(Some(accounts::sites::cap_bps(mbps)?)),
                (false, None) => None,
            };
            let country = country.map(|c| c.parse()).transpose().map_err(|e| anyhow::anyhow!("--country: {e}"))?;
            let site_type = site_type.map(|t| t.parse()).transpose().map_err(|e| anyhow::anyhow!("--type: {e}"))?;
            let changes = accounts::SiteChanges { site, country, site_type, cap_bps, country_from: from };
            let site = accounts::sites::set_site(&store, &regions, changes).await?;
            let cap = site.cap_bps.map_or("no cap".to_owned(), |c| format!("cap {}", Bandwidth(c)));
            outln!("site {}: {} in {} ({}), {cap}", site.id, site.site_type, site.region_group, site.country);
        }
        Command::License(LicenseCommand::Change { account, id, quantity, from, to }) => {
            accounts::licenses::change_license(&store, &account, id, quantity, to, from).await?;
            outln!("license {id} changed");
        }
        Command::Site(SiteCommand::Enforcement { site, month, format }) => {
            let site = store.site(&site).await?.ok_or_else(|| anyhow::anyhow!("site {site:?} does not exist"))?;
            let month = month.unwrap_or_else(|| Month::containing(clock::today()));
            let enforcement = enforcement::site_enforcement(&store, &site, month, config.month_window).await?;
            match format {
                Format::Json => outln!("{}", serde_json::to_string_pretty(&enforcement)?),
                Format::Table => out!("{}", enforcement::table(&enforcement)),
            }
        }
        Command::Enforcement(EnforcementCommand::Check { days, format }) => {
            let found = pool_risk::pools_at_risk(&store, clock::today(), days).await?;
            match format {
                Format::Json => outln!("{}", serde_json::to_string_pretty(&found)?),
                Format::Table => out!("{}", pool_risk::table(&found)),
            }
        }
        Command::Site(SiteCommand::Intake { site, format }) => {
            if store.site(&site).await?.is_none() {
                anyhow::bail!("site {site:?} does not exist");
            }
            let report = unbilled::report(&store, &site).await?;
            match format {
                Format::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
                Format::Table => out!("{}", unbilled::table(&report)),
            }
        }
        Command::Site(SiteCommand::Quarantine { site, accept, shift_minutes, discard: _ }) => {
            if store.site(&site).await?.is_none() {
                anyhow::bail!("site {site:?} does not exist");
            }
            let shift = chrono::TimeDelta::try_minutes(shift_minutes)
                .ok_or_else(|| anyhow::anyhow!("--shift-minutes {shift_minutes} is out of range"))?;
            let release = if accept { unbilled::Release::Accept { shift } } else { unbilled::Release::Discard };
            let n = unbilled::release(&store, &site, release, clock::now()).await?;
            let done = if accept { "accepted (billed)" } else { "discarded" };
            outln!("{site}: {n} quarantined buckets {done}");
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
                    outln!("{}", serde_json::to_string_pretty(&rows)?);
                }
                Format::Table => {
                    outln!("{site} {date}: {} of 288 buckets", buckets.len());
                    for b in &buckets {
                        outln!(
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
        Command::Token(TokenCommand::Create { role, account, contact, name, email }) => {
            let person = name.zip(email).map(|(name, email)| Person { name, email });
            let (id, secret) =
                accounts::create_api_token(&store, role, account.as_deref(), contact, person.as_ref()).await?;
            let whose = account.map_or(String::new(), |a| format!(" of account {a}"));
            let contact = if contact { ", contact person" } else { "" };
            let held = person.map_or(String::new(), |p| format!(", held by {p}"));
            eprintln!("token {id}: {}{whose}{contact}{held}; shown once, keep it now", role.as_str());
            outln!("{secret}");
        }
        Command::Token(TokenCommand::List { format }) => {
            let tokens = store.api_tokens().await?;
            match format {
                Format::Json => outln!("{}", serde_json::to_string_pretty(&tokens)?),
                Format::Table => {
                    let mut rows = vec![["id", "role", "account", "person", "created", "revoked"].map(String::from)];
                    for t in &tokens {
                        let contact = if t.contact { " (contact)" } else { "" };
                        rows.push([
                            t.id.to_string(),
                            format!("{}{contact}", t.role.as_str()),
                            t.account.clone().unwrap_or("-".into()),
                            t.person.as_ref().map_or("-".into(), ToString::to_string),
                            t.created_at.clone(),
                            t.revoked_at.clone().unwrap_or("-".into()),
                        ]);
                    }
                    out!("{}", columns(&rows));
                }
            }
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            if !store.revoke_api_token(id).await? {
                anyhow::bail!("there is no token {id}");
            }
            outln!("token {id} revoked");
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
            let id = accounts::licenses::add_license(&store, args).await?;
            outln!("license {id} added");
        }
        Command::ImportBuckets { csv, allow_future } => {
            let file = std::fs::File::open(&csv).with_context(|| format!("cannot read {}", csv.display()))?;
            let input = std::io::BufReader::with_capacity(1 << 16, file);
            let not_after = (!allow_future).then(|| clock::now() + tally_common::wire::MAX_BUCKET_AHEAD);
            let stats = usage::import::import_buckets(
                &store,
                &csv.display().to_string(),
                input,
                config.max_bucket_bps,
                not_after,
            )
            .await?;
            outln!("imported {} new bucket(s), merged {} with stored ones (R10)", stats.inserted, stats.merged);
        }
        Command::Account(AccountCommand::Notify { account, email, webhook }) => {
            let (flag, channel, address) = match (email, webhook) {
                (Some(email), _) => ("--email", "email", email),
                (None, Some(url)) => ("--webhook", "webhook", url),
                (None, None) => anyhow::bail!("--email or --webhook is required"),
            };
            let recipient =
                recipients::parse(channel, &address).map_err(|e| anyhow::anyhow!("{flag} {}", e.message))?;
            let targets = crate::net::webhook_target::WebhookTargets::new(config.webhook_allowed_networks.clone());
            recipients::check_target(&recipient, &targets, &crate::net::webhook_target::SystemResolver)
                .await
                .map_err(|e| anyhow::anyhow!("{flag} {}", e.message))?;
            if store.account(&account).await?.is_none() {
                anyhow::bail!("account {account:?} does not exist");
            }
            let added =
                recipients::change(&store, &account, recipient, true, "operator (command line)", clock::now()).await?;
            let already = if added { "" } else { " (already)" };
            outln!("account {account}: {channel} {address} will be notified{already}");
        }
        Command::Overusage(OverusageCommand::List { account, month, suspect, format }) => {
            let found = match (suspect, account, month) {
                (true, ..) => store.overusages_to_review().await?,
                (false, Some(account), Some(month)) => store.overusages(&account, &month.to_string()).await?,
                _ => anyhow::bail!("overusage list needs --account and --month, or --suspect"),
            };
            let view = |o: &crate::store::Overusage| {
                let mut json = serde_json::to_value(usage::document::OverusageReport::from(o)).unwrap_or_default();
                json["account"] = o.account.clone().into();
                json["month"] = o.month.clone().into();
                if let Some(review) = &o.review {
                    json["review"] = review.clone().into();
                }
                json
            };
            match format {
                Format::Json => {
                    outln!("{}", serde_json::to_string_pretty(&found.iter().map(view).collect::<Vec<_>>())?)
                }
                Format::Table => {
                    for o in &found {
                        let f = &o.found;
                        let resolution = o.resolution.as_ref().map_or("open".to_owned(), |r| {
                            format!("{} {} {}", r.kind.as_str(), r.quantity, f.license.purchase_unit())
                        });
                        outln!(
                            "{}\t{}\t{}\t{}\texcess {}\tto purchase {} {}\t{resolution}",
                            o.id,
                            o.account,
                            o.month,
                            f.license,
                            f.excess,
                            f.required_purchase,
                            f.license.purchase_unit()
                        );
                        if let Some(review) = &o.review {
                            outln!("\treview: {review}");
                        }
                    }
                }
            }
        }
        Command::Notifications { account, format } => {
            let items = store.notifications(account.as_deref()).await?;
            let can_send = usage::notify::configured_channels(&config);
            let state = |i: &crate::store::OutboxItem| match (&i.delivered_at, &i.last_error) {
                (Some(_), _) => "delivered",
                (None, _) if !can_send.contains(&i.channel) => "not_configured",
                (None, Some(_)) => "retrying",
                (None, None) => "pending",
            };
            let detail = |i: &crate::store::OutboxItem| match (state(i), &i.delivered_at, &i.last_error) {
                ("delivered", Some(at), _) => format!("delivered {}", tally_common::time::rfc3339(*at)),
                ("not_configured", ..) => format!("waiting: {} is not configured", i.channel.as_str()),
                (_, _, Some(e)) => format!("retrying after {} attempt(s): {e}", i.attempts),
                _ => "pending".to_owned(),
            };
            match format {
                Format::Json => {
                    let rows: Vec<_> = items
                        .iter()
                        .map(|i| {
                            serde_json::json!({"id": i.id, "account": i.account, "topic": i.topic,
                            "channel": i.channel.as_str(), "recipient": i.recipient, "state": state(i),
                            "attempts": i.attempts, "delivered_at": i.delivered_at.map(tally_common::time::rfc3339),
                            "last_error": i.last_error})
                        })
                        .collect();
                    outln!("{}", serde_json::to_string_pretty(&rows)?);
                }
                Format::Table => {
                    for i in &items {
                        outln!(
                            "{:>5}  {}  {}  {:<7}  {}  {}",
                            i.id,
                            i.account,
                            i.topic,
                            i.channel.as_str(),
                            i.recipient,
                            detail(i)
                        );
                    }
                }
            }
        }
        Command::Engine { once: _ } => {
            let transports = usage::notify::Transports::new(&config).map_err(anyhow::Error::msg)?;
            let mut engine = usage::Engine::new(std::sync::Arc::new(store), &config, transports);
            let pass = engine.pass(true).await;
            outln!(
                "engine pass: {} site-day(s) recomputed, {} month(s) finalized, {} notification(s) delivered",
                pass.days_recomputed,
                pass.months_finalized,
                pass.notifications_delivered
            );
            if pass.finalization_failures > 0 || pass.store_failures > 0 {
                anyhow::bail!(
                    "{} account(s) could not be finalized and {} step(s) failed in the store: see the log above; \
                     each is tried again next pass",
                    pass.finalization_failures,
                    pass.store_failures
                );
            }
        }
        Command::Report { account, month, format } => {
            let report = usage::report::build(&store, &account, month, config.month_window, clock::now()).await?;
            match format {
                Format::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
                Format::Table => out!("{}", usage::table::report(&report)),
            }
        }
    }
    Ok(())
}

/// `rows` as left-aligned columns, the first row a header.
/// `migrate-store`: the SQLite store at `from` (sqlite://PATH) into the PostgreSQL database `to`.
async fn migrate_store(from: &str, to: &str) -> anyhow::Result<()> {
    let path = from.strip_prefix("sqlite://").map(std::path::Path::new);
    let path = path.filter(|p| p.is_file()).ok_or_else(|| {
        anyhow::anyhow!("--from {from:?}: expected sqlite://PATH naming an existing store (data_dir/tally.db)")
    })?;
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        anyhow::bail!("--to {}: expected a postgres:// URL", redacted(to));
    }
    let source = SqliteStore::open(path).await.with_context(|| format!("opening {}", path.display()))?;
    let target = PgStore::open(to).await.with_context(|| format!("opening {}", redacted(to)))?;
    let migrated = crate::store::migrate::copy(&source, &target).await?;
    let rows: u64 = migrated.rows.iter().map(|(_, n)| n).sum();
    for (table, n) in &migrated.rows {
        outln!("{table:<24} {n:>10}");
    }
    outln!(
        "copied {rows} row(s) from {} to {}; every table's count matches, buckets SHA-256 {}",
        path.display(),
        redacted(to),
        migrated.buckets_sha256
    );
    Ok(())
}

fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut out = String::new();
    usage::table::aligned(&mut out, rows, &[false; N]);
    out
}
