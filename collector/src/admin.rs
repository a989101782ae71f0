//! The operator's commands (Contract): accounts, sites, licenses, bucket import and listing.
//! Each validates everything it is given before it writes, and says what was wrong and where.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use tally_common::bandwidth::Bandwidth;
use tally_common::bucket::Bucket;
use tally_common::enforcement::CapViolation;
use tally_common::kinds::{LicenseKind, SiteType, ZtnaRegion};
use tally_common::region::{CountryCode, RegionGroup, RegionTable};
use tally_common::time::{BucketStart, Month, SAMPLES_PER_BUCKET};
use tally_common::token::EnrollToken;
use tally_common::wire::MAX_BUCKET_AHEAD;

use crate::ca::{Ca, CaError, random_hex};
use crate::digest::sha256_hex;
use crate::store::{
    Account, CapChange, ContractTerm, License, MergeStats, NewLicense, Person, Role, Site, Store, StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{file}: {total} error(s), nothing was imported\n  - {}{}",
        .errors.join("\n  - "),
        if *total > errors.len() { format!("\n  … and {} more", total - errors.len()) } else { String::new() }
    )]
    BadRows { file: String, errors: Vec<String>, total: usize },
    #[error("refused, nothing was changed:\n  - {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  - "))]
    Refused(Vec<CapViolation>),
    /// A change back-dated into a month whose bill is final (R9, R31).
    #[error(
        "{what} from {from} falls in {month}, which is finalized: its bill never changes; a correction may only \
         fall in a month not yet finalized"
    )]
    Finalized { what: &'static str, from: NaiveDate, month: Month },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ca(#[from] CaError),
}

fn invalid(message: impl Into<String>) -> AdminError {
    AdminError::Invalid(message.into())
}

/// An identifier of an account or site: 1 to 64 of `a-z 0-9 - _ .`.
pub fn check_id(what: &str, id: &str) -> Result<(), AdminError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(()) } else { Err(invalid(format!("{what} id {id:?} must be 1 to 64 of a-z, 0-9, '-', '_', '.'"))) }
}

/// Adds an account with its first contract term (R27): `term`, or `default_months` from `today`.
pub async fn add_account(
    store: &impl Store,
    account: Account,
    term: Option<ContractTerm>,
    default_months: u32,
    today: NaiveDate,
) -> Result<ContractTerm, AdminError> {
    check_id("account", &account.id)?;
    if account.name.trim().is_empty() {
        return Err(invalid("--name must not be empty"));
    }
    if let Some(partner) = &account.partner
        && store.account(partner).await?.is_none()
    {
        return Err(invalid(format!("partner account {partner:?} does not exist")));
    }
    match (&account.eop_contact_name, &account.eop_contact_email) {
        (None, None) => {}
        (Some(_), Some(email)) if email.contains('@') && !email.starts_with('@') && !email.ends_with('@') => {}
        (Some(_), Some(email)) => {
            return Err(invalid(format!("--eop-contact-email {email:?} is not an e-mail address")));
        }
        _ => return Err(invalid("--eop-contact-name and --eop-contact-email go together")),
    }
    let term = term.unwrap_or_else(|| ContractTerm::months_from(today, default_months));
    check_term(term)?;
    store.add_account(&account, term).await?;
    Ok(term)
}

fn check_term(term: ContractTerm) -> Result<(), AdminError> {
    if term.end < term.start {
        return Err(invalid(format!("--term-end {} is before --term-start {}", term.end, term.start)));
    }
    Ok(())
}

/// Sets a contract term of `account` (R27): it replaces the term it overlaps, or is added (a
/// renewal); returns the replaced term. Licenses already made keep their days.
pub async fn set_contract_term(
    store: &impl Store,
    account: &str,
    term: ContractTerm,
) -> Result<Option<ContractTerm>, AdminError> {
    check_term(term)?;
    if store.account(account).await?.is_none() {
        return Err(invalid(format!("account {account:?} does not exist")));
    }
    store.set_contract_term(account, term).await?.map_err(|overlapped| {
        let terms: Vec<String> = overlapped.iter().map(|t| format!("{} to {}", t.start, t.end)).collect();
        invalid(format!(
            "the term {} to {} overlaps {} terms of account {account} ({}): it may replace one term, not several",
            term.start,
            term.end,
            overlapped.len(),
            terms.join(", ")
        ))
    })
}

/// Adds a site; its region group follows its country (R11), restricted countries are refused.
pub async fn add_site(store: &impl Store, regions: &RegionTable, site: NewSite) -> Result<Site, AdminError> {
    check_id("site", &site.id)?;
    let country: CountryCode = site.country.parse().map_err(|e| invalid(format!("--country: {e}")))?;
    let region_group = regions.group_of(country).map_err(|e| invalid(e.to_string()))?;
    let site_type: SiteType = site.site_type.parse().map_err(|e| invalid(format!("--type: {e}")))?;
    let cap_bps = site.cap_mbps.map(cap_bps).transpose()?;
    if store.account(&site.account).await?.is_none() {
        return Err(invalid(format!("account {:?} does not exist", site.account)));
    }
    let site = Site { id: site.id, account: site.account, name: site.name, country, region_group, site_type, cap_bps };
    apply(store, CapChange::AddSite(site.clone())).await?;
    Ok(site)
}

/// `--cap-mbps` in bit/s.
pub fn cap_bps(mbps: u64) -> Result<u64, AdminError> {
    match mbps {
        0 => Err(invalid("--cap-mbps must be a positive number of Mbps")),
        mbps => Ok(Bandwidth::from_mbps(mbps).ok_or_else(|| invalid("--cap-mbps is too large"))?.bps()),
    }
}

/// Applies a change R17 constrains, checked against the licenses in force today.
async fn apply(store: &impl Store, change: CapChange) -> Result<(), AdminError> {
    let violations = store.apply_checked(&change, crate::clock::now()).await?;
    if violations.is_empty() { Ok(()) } else { Err(AdminError::Refused(violations)) }
}

/// `site set` and `PATCH …/sites/{site}`: a site's country, type or cap; what is not given
/// keeps its value.
#[derive(Debug, Clone, Default)]
pub struct SiteChanges {
    pub site: String,
    pub country: Option<CountryCode>,
    pub site_type: Option<SiteType>,
    /// `Some(None)` lifts the cap.
    pub cap_bps: Option<Option<u64>>,
    /// The day the new country takes effect (R31): today by default; an earlier day corrects
    /// the site's history, and may only fall in a month not yet finalized.
    pub country_from: Option<NaiveDate>,
}

/// Applies `changes` if the account still complies with R17 afterwards; the site's region
/// group follows its country (R11), restricted countries are refused.
pub async fn set_site(store: &impl Store, regions: &RegionTable, changes: SiteChanges) -> Result<Site, AdminError> {
    let mut site =
        store.site(&changes.site).await?.ok_or_else(|| invalid(format!("site {:?} does not exist", changes.site)))?;
    let today = crate::clock::now().date_naive();
    let moved_from = match (changes.country, changes.country_from) {
        (None, Some(_)) => return Err(invalid("--from dates a new country: give --country with it")),
        (None, None) => None,
        (Some(_), Some(from)) if from > today => {
            return Err(invalid(format!(
                "a site's country changes from today ({today}) or an earlier day, not {from}"
            )));
        }
        (Some(_), from) => Some(open_month_from(store, &site.account, "the new country", from.unwrap_or(today)).await?),
    };
    if let Some(country) = changes.country {
        site.country = country;
        site.region_group = regions.group_of(country).map_err(|e| invalid(e.to_string()))?;
    }
    if let Some(site_type) = changes.site_type {
        site.site_type = site_type;
    }
    match changes.cap_bps {
        Some(Some(0)) => return Err(invalid("a cap must be a positive bandwidth")),
        Some(cap) => site.cap_bps = cap,
        None => {}
    }
    // R17 from max(the day, today): the site as it is now is checked, never its past (R26).
    let change = match moved_from {
        Some(from) => CapChange::MoveSite { site: site.clone(), from },
        None => CapChange::UpdateSite(site.clone()),
    };
    apply(store, change).await?;
    Ok(site)
}

/// `from`, if its month is not finalized for `account` (R9): a change of a finalized month's
/// terms would change a bill that never changes.
async fn open_month_from(
    store: &impl Store,
    account: &str,
    what: &'static str,
    from: NaiveDate,
) -> Result<NaiveDate, AdminError> {
    let month = Month::containing(from);
    let finalized = store.finalized_months(account).await?;
    match finalized.iter().any(|m| *m == month.to_string()) {
        true => Err(AdminError::Finalized { what, from, month }),
        false => Ok(from),
    }
}

/// `license change`: a license's quantity (in its unit, Mbps for the pool) or last day.
pub async fn change_license(
    store: &impl Store,
    account: &str,
    id: i64,
    quantity: Option<u64>,
    to: Option<NaiveDate>,
    from: Option<NaiveDate>,
) -> Result<(), AdminError> {
    let license = store
        .licenses_of_account(account)
        .await?
        .into_iter()
        .find(|l| l.id == id)
        .ok_or_else(|| invalid(format!("account {account:?} has no license {id}")))?;
    let effective_to = to.unwrap_or(license.terms.effective_to);
    if effective_to < license.terms.effective_from {
        return Err(invalid(format!(
            "--to {effective_to} is before the license's start {}",
            license.terms.effective_from
        )));
    }
    let Some(quantity) = quantity else {
        return apply(store, CapChange::UpdateLicense { id, quantity: license.terms.quantity, effective_to }).await;
    };
    let quantity = match quantity {
        0 => return Err(invalid("--quantity must be positive")),
        mbps if license.terms.kind == LicenseKind::BandwidthPool => {
            Bandwidth::from_mbps(mbps).ok_or_else(|| invalid("--quantity is too large"))?.bps()
        }
        n => n,
    };
    // R31: from a day (today by default), never in a finalized month; a license not started yet
    // changes whole.
    let from = from.unwrap_or_else(|| crate::clock::now().date_naive()).max(license.terms.effective_from);
    if from > effective_to {
        return Err(invalid(format!("--from {from} is after the license's last day {effective_to}")));
    }
    let from = open_month_from(store, account, "the new quantity", from).await?;
    match from == license.terms.effective_from {
        true => apply(store, CapChange::UpdateLicense { id, quantity, effective_to }).await,
        false => apply(store, CapChange::ChangeLicenseFrom { id, from, quantity, effective_to }).await,
    }
}

/// `site add` as typed on the command line.
#[derive(Debug, Clone)]
pub struct NewSite {
    pub account: String,
    pub id: String,
    pub name: String,
    pub country: String,
    pub site_type: String,
    pub cap_mbps: Option<u64>,
}

/// `license add` as typed on the command line.
#[derive(Debug, Clone)]
pub struct LicenseArgs {
    pub account: String,
    pub kind: String,
    pub region: Option<String>,
    pub quantity: u64,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub block_size: Option<u64>,
    pub per_unit: Option<u64>,
}

pub async fn add_license(store: &impl Store, args: LicenseArgs) -> Result<i64, AdminError> {
    let kind: LicenseKind = args.kind.parse().map_err(|e| invalid(format!("--kind: {e}")))?;
    if args.quantity == 0 {
        return Err(invalid("--quantity must be positive"));
    }
    if args.from > args.to {
        return Err(invalid(format!("--from {} is after --to {}", args.from, args.to)));
    }
    match (kind, &args.region) {
        (LicenseKind::BandwidthPool, Some(r)) => {
            r.parse::<RegionGroup>().map_err(|e| invalid(format!("--region: {e}")))?;
        }
        (LicenseKind::ZtnaUsers, Some(r)) => {
            r.parse::<ZtnaRegion>().map_err(|e| invalid(format!("--region: {e}")))?;
        }
        (LicenseKind::BandwidthPool | LicenseKind::ZtnaUsers, None) => {
            return Err(invalid(format!("--region is required for {kind} licenses")));
        }
        (_, Some(_)) => return Err(invalid(format!("{kind} licenses apply to the whole account: no --region"))),
        (_, None) => {}
    }
    if (kind == LicenseKind::Devices) != args.block_size.is_some() {
        return Err(invalid("--block-size is required for devices licenses, and only for them"));
    }
    if (kind == LicenseKind::DataLake) != args.per_unit.is_some() {
        return Err(invalid(
            "--per-unit (events per hour per data unit) is required for data_lake licenses, and only for them",
        ));
    }
    if args.block_size == Some(0) || args.per_unit == Some(0) {
        return Err(invalid("--block-size and --per-unit must be positive"));
    }
    let quantity = if kind == LicenseKind::BandwidthPool {
        Bandwidth::from_mbps(args.quantity).ok_or_else(|| invalid("--quantity is too large"))?.bps()
    } else {
        args.quantity
    };
    if store.account(&args.account).await?.is_none() {
        return Err(invalid(format!("account {:?} does not exist", args.account)));
    }
    same_unit_as_held(&store.licenses_of_account(&args.account).await?, kind, args.block_size, args.per_unit)?;
    let license = NewLicense {
        account: args.account,
        kind,
        region: args.region,
        quantity,
        block_size: args.block_size,
        per_unit: args.per_unit,
        effective_from: args.from,
        effective_to: args.to,
    };
    // More capacity never breaks R17: no check.
    Ok(store.add_license(&license).await?)
}

/// One devices block size and one Data Lake data unit per account (R32): the required purchase
/// is counted in them, and a second size would leave it ambiguous.
fn same_unit_as_held(
    held: &[License],
    kind: LicenseKind,
    block_size: Option<u64>,
    per_unit: Option<u64>,
) -> Result<(), AdminError> {
    let (flag, wanted, held_size) = match kind {
        LicenseKind::Devices => ("--block-size", block_size, held.iter().find_map(|l| l.terms.block_size)),
        LicenseKind::DataLake => ("--per-unit", per_unit, held.iter().find_map(|l| l.terms.per_unit)),
        _ => return Ok(()),
    };
    match (wanted, held_size) {
        (Some(wanted), Some(held_size)) if wanted != held_size => Err(invalid(format!(
            "the account's {kind} licenses use {flag} {held_size}: every one of them must (one unit per account, so \
             the purchase that covers an over-usage is counted in it); add this one with {flag} {held_size}"
        ))),
        _ => Ok(()),
    }
}

/// How many errors of a refused file are listed; the rest are counted.
pub const ERRORS_LISTED: usize = 20;
/// How much of a bad value an error quotes.
const QUOTED_CHARS: usize = 40;

/// Imports `site,bucket_start,max_bps[,samples]` rows (a header line is optional), read as a
/// stream. Every row is validated; with any error nothing of the file is written, and the first
/// [`ERRORS_LISTED`] errors are said with their lines. A bucket may not start after `not_after`
/// (the collector's clock plus the margin QUIC allows; `None`: a deliberate import of the
/// future). The rows merge with what is stored (R10), in one transaction.
pub async fn import_buckets(
    store: &impl Store,
    file: &str,
    csv: impl std::io::BufRead,
    max_bucket_bps: u64,
    not_after: Option<DateTime<Utc>>,
) -> Result<MergeStats, AdminError> {
    // Each site once: rows hold its index.
    let mut sites: Vec<String> = Vec::new();
    let mut site_index: HashMap<String, Option<u32>> = HashMap::new();
    let mut rows: Vec<(u32, Bucket)> = Vec::new();
    let mut errors = Errors::default();
    for (i, record) in tally_common::csv_text::Records::new(csv).enumerate() {
        let (n, f) = match record {
            Ok(record) => record,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if i == 0 && f.first().map(String::as_str) == Some("site") {
            continue;
        }
        if !(3..=4).contains(&f.len()) {
            errors.push(format!("line {n}: expected site,bucket_start,max_bps[,samples], found {} fields", f.len()));
            continue;
        }
        let site = match site_index.get(&f[0]) {
            Some(known) => *known,
            None => {
                let index = match store.site(&f[0]).await? {
                    Some(_) => {
                        sites.push(f[0].clone());
                        Some(u32::try_from(sites.len() - 1).unwrap_or(u32::MAX))
                    }
                    None => None,
                };
                site_index.insert(f[0].clone(), index);
                index
            }
        };
        let site = site.ok_or_else(|| format!("line {n}: site {} does not exist", quoted(&f[0])));
        let start = DateTime::parse_from_rfc3339(&f[1])
            .map_err(|e| format!("line {n}: bucket_start {} is not RFC 3339: {e}", quoted(&f[1])))
            .and_then(|t| {
                let t = t.with_timezone(&Utc);
                BucketStart::from_unix(t.timestamp())
                    .ok()
                    .filter(|_| t.timestamp_subsec_nanos() == 0)
                    .ok_or_else(|| format!("line {n}: bucket_start {} is not on a 5-minute boundary", quoted(&f[1])))
            })
            .and_then(|start| match not_after {
                Some(latest) if start.time() > latest => Err(format!(
                    "line {n}: bucket_start {start} is in the future (after {}, the collector's clock and {} \
                     minutes); give --allow-future to import it deliberately",
                    latest.format("%Y-%m-%dT%H:%M:%SZ"),
                    MAX_BUCKET_AHEAD.num_minutes()
                )),
                _ => Ok(start),
            });
        let max_bps = f[2]
            .parse::<u64>()
            .map_err(|_| format!("line {n}: max_bps {} is not a non-negative integer", quoted(&f[2])))
            .and_then(|v| {
                if v <= max_bucket_bps {
                    Ok(v)
                } else {
                    Err(format!("line {n}: max_bps {v} is above the sanity bound of {max_bucket_bps}"))
                }
            });
        let samples = match f.get(3) {
            None => Ok(SAMPLES_PER_BUCKET),
            Some(s) => s
                .parse::<u8>()
                .ok()
                .filter(|v| (1..=SAMPLES_PER_BUCKET).contains(v))
                .ok_or_else(|| format!("line {n}: samples {} is not between 1 and 60", quoted(s))),
        };
        match (site, start, max_bps, samples) {
            (Ok(site), Ok(start), Ok(max_bps), Ok(samples)) => {
                if errors.total == 0 {
                    rows.push((site, Bucket { start, max_bps, samples }));
                }
            }
            (site, start, max_bps, samples) => {
                rows = Vec::new();
                for error in [site.err(), start.err(), max_bps.err(), samples.err()].into_iter().flatten() {
                    errors.push(error);
                }
            }
        }
    }
    if errors.total > 0 {
        return Err(AdminError::BadRows { file: file.to_owned(), errors: errors.listed, total: errors.total });
    }
    let rows: Vec<(&str, Bucket)> = rows.into_iter().map(|(site, b)| (sites[site as usize].as_str(), b)).collect();
    Ok(store.merge_buckets(&rows).await?)
}

/// The first [`ERRORS_LISTED`] errors, and how many there were.
#[derive(Default)]
struct Errors {
    listed: Vec<String>,
    total: usize,
}

impl Errors {
    fn push(&mut self, error: String) {
        if self.listed.len() < ERRORS_LISTED {
            self.listed.push(error);
        }
        self.total += 1;
    }
}

/// A value from a file, quoted, cut to its first [`QUOTED_CHARS`] characters.
fn quoted(value: &str) -> String {
    match value.char_indices().nth(QUOTED_CHARS) {
        Some((at, _)) => format!("{:?}… ({} bytes)", &value[..at], value.len()),
        None => format!("{value:?}"),
    }
}

/// A one-time enrollment token for `site`, valid for `valid_for` from `now`. Only the secret's
/// hash is stored.
pub async fn enroll_token(
    store: &impl Store,
    ca: &Ca,
    site: &str,
    valid_for: TimeDelta,
    now: DateTime<Utc>,
) -> Result<EnrollToken, AdminError> {
    if store.site(site).await?.is_none() {
        return Err(invalid(format!("site {site:?} does not exist")));
    }
    if valid_for <= TimeDelta::zero() {
        return Err(invalid("a token must be valid for at least an hour"));
    }
    let token = EnrollToken { secret: random_hex(32)?, ca_fingerprint: ca.fingerprint() };
    store.add_enroll_token(&sha256_hex(token.secret.as_bytes()), site, now + valid_for).await?;
    Ok(token)
}

/// Revokes every certificate of `site`: its agent is refused from its next connection on.
pub async fn revoke_site(store: &impl Store, site: &str, now: DateTime<Utc>) -> Result<u64, AdminError> {
    if store.site(site).await?.is_none() {
        return Err(invalid(format!("site {site:?} does not exist")));
    }
    Ok(store.revoke_site(site, now).await?)
}

/// The prefix of API bearer tokens, so a leaked one is recognisable.
pub const API_TOKEN_PREFIX: &str = "tally_";

/// `token create`: a bearer token for the HTTP API, returned once with its id; only its hash is
/// stored. Operators see every account; partner and customer tokens belong to `account`.
pub async fn create_api_token(
    store: &impl Store,
    role: Role,
    account: Option<&str>,
    contact: bool,
    person: Option<&Person>,
) -> Result<(i64, String), AdminError> {
    if let Some(person) = person {
        if person.name.trim().is_empty() {
            return Err(invalid("--name must not be empty"));
        }
        person
            .email
            .parse::<lettre::Address>()
            .map_err(|e| invalid(format!("--email {:?} is not an e-mail address: {e}", person.email)))?;
    }
    match (role, account) {
        (Role::Operator, Some(_)) => return Err(invalid("an operator token sees every account: no --account")),
        (Role::Operator, None) if contact => return Err(invalid("--contact is for an account's token")),
        (Role::Operator, None) => {}
        (_, None) => return Err(invalid(format!("a {} token needs --account", role.as_str()))),
        (_, Some(account)) => {
            if store.account(account).await?.is_none() {
                return Err(invalid(format!("account {account:?} does not exist")));
            }
        }
    }
    let secret = format!("{API_TOKEN_PREFIX}{}", random_hex(32)?);
    let id = store.add_api_token(&sha256_hex(secret.as_bytes()), role, account, contact, person).await?;
    Ok((id, secret))
}
