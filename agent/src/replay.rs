//! `tally-agent replay --trace FILE`: a recorded counter trace through the exact sampling code
//! the agent runs (`tally-common`'s sampler and bucketizer).
//!
//! Trace CSV (Contract): `time,interface,rx_bytes,tx_bytes[,speed_mbps]`, one row per interface
//! per reading, `time` RFC 3339; a header line is optional. Each distinct reading time is a tick,
//! and a sample covers the interval from the previous reading time. The trace's times serve as
//! both the wall clock and the monotonic clock; a step back counts as no elapsed time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tally_common::bucket::Bucketizer;
use tally_common::counters::{Counters, plausibility_cap};
use tally_common::sampler::{Anomaly, InterfaceReading, Sampler, TickReading};

use crate::config::{Config, interface_name};
use crate::netif::counter_width;
use crate::status::{BucketView, SampleView};

/// The Contract's replay document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Replay {
    pub samples: Vec<SampleView>,
    pub buckets: Vec<BucketView>,
    /// Every anomaly, as the agent would log it (not part of the JSON).
    #[serde(skip)]
    pub anomalies: Vec<String>,
}

/// A reading of one interface at one time.
#[derive(Debug, Clone)]
struct Row {
    time: DateTime<Utc>,
    reading: InterfaceReading,
}

/// Parses a trace; every bad line is reported with its number.
fn parse(trace: &str, config: &Config) -> Result<Vec<Row>, Vec<String>> {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut first = true;
    for record in tally_common::csv_text::records(trace) {
        let (n, f) = match record {
            Ok(record) => record,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if std::mem::take(&mut first) && f.first().map(String::as_str) == Some("time") {
            continue;
        }
        let f: Vec<&str> = f.iter().map(String::as_str).collect();
        if !(4..=5).contains(&f.len()) {
            errors.push(format!(
                "line {n}: expected time,interface,rx_bytes,tx_bytes[,speed_mbps], found {} fields",
                f.len()
            ));
            continue;
        }
        let time = DateTime::parse_from_rfc3339(f[0]).map(|t| t.with_timezone(&Utc));
        let name = interface_name(f[1]);
        let number = |what: &str, s: &str| {
            s.parse::<u64>().map_err(|_| format!("line {n}: {what} {s:?} is not a non-negative integer"))
        };
        let rx = number("rx_bytes", f[2]);
        let tx = number("tx_bytes", f[3]);
        let speed = f.get(4).filter(|s| !s.is_empty()).map(|s| number("speed_mbps", s)).transpose();
        match (time, name, rx, tx, speed) {
            (Ok(time), Ok(name), Ok(rx_bytes), Ok(tx_bytes), Ok(speed)) => {
                // The trace's kernel is taken for a 64-bit one: `counters_32bit` names what wraps at 32.
                let width = counter_width(&name, config, 64);
                rows.push(Row {
                    time,
                    reading: InterfaceReading {
                        name,
                        ifindex: 1,
                        counters: Counters { rx_bytes, tx_bytes },
                        cap: plausibility_cap(speed, config.max_link_mbps),
                        width,
                    },
                });
            }
            (time, name, rx, tx, speed) => {
                if let Err(e) = time {
                    errors.push(format!("line {n}: time {:?} is not RFC 3339: {e}", f[0]));
                }
                if let Err(e) = name {
                    errors.push(format!("line {n}: {e}"));
                }
                errors.extend([rx.err(), tx.err(), speed.err()].into_iter().flatten());
            }
        }
    }
    if errors.is_empty() { Ok(rows) } else { Err(errors) }
}

/// Replays `trace` through the sampler and the bucketizer.
pub fn replay(trace: &str, config: &Config) -> Result<Replay, Vec<String>> {
    let rows = parse(trace, config)?;
    let mut out = Replay::default();
    let mut sampler = Sampler::new();
    let mut bucketizer = Bucketizer::default();
    let Some(mut previous) = rows.first().map(|r| r.time) else { return Ok(out) };
    let mut monotonic = Duration::ZERO;
    let mut at = 0;
    while at < rows.len() {
        let time = rows[at].time;
        let tick: Vec<InterfaceReading> =
            rows[at..].iter().take_while(|r| r.time == time).map(|r| r.reading.clone()).collect();
        at += tick.len();
        // A trace has one clock: a step back is no time at all (an interval too short).
        monotonic += (time - previous).to_std().unwrap_or(Duration::ZERO);
        previous = time;
        let reading = TickReading { wall: time, monotonic, boot_id: 0, interfaces: &tick };
        let interval = sampler.tick(&reading, |a: Anomaly| out.anomalies.push(a.to_string()));
        if let Some(interval) = interval {
            out.samples.push(SampleView::from(&interval));
            out.buckets.extend(bucketizer.push(&interval).iter().map(BucketView::from));
        }
    }
    // The trace is over: the open bucket is as complete as it will get.
    out.buckets.extend(bucketizer.open().filter(|b| b.samples > 0).map(BucketView::from));
    Ok(out)
}

/// The human-readable form.
pub fn table(r: &Replay) -> String {
    let mut out = String::from(
        "start                 end                   bps            up_bps         down_bps       reason\n",
    );
    let cell = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    for s in &r.samples {
        out += &format!(
            "{:<21} {:<21} {:<14} {:<14} {:<14} {}\n",
            s.start,
            s.end,
            cell(s.bps),
            cell(s.up_bps),
            cell(s.down_bps),
            s.reason.as_deref().unwrap_or("")
        );
    }
    out += "\nbucket                max_bps        samples\n";
    for b in &r.buckets {
        out += &format!("{:<21} {:<14} {}\n", b.start, b.max_bps, b.samples);
    }
    for a in &r.anomalies {
        out += &format!("anomaly: {a}\n");
    }
    out
}
