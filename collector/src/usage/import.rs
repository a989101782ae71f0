//! `bucket import`: buckets from a CSV file, all or nothing, merged with what is stored (R10).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tally_common::bucket::Bucket;
use tally_common::time::{BucketStart, SAMPLES_PER_BUCKET};
use tally_common::wire::MAX_BUCKET_AHEAD;

use crate::accounts::ChangeError;
use crate::store::{MergeStats, Store};

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
) -> Result<MergeStats, ChangeError> {
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
        return Err(ChangeError::BadRows { file: file.to_owned(), errors: errors.listed, total: errors.total });
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
