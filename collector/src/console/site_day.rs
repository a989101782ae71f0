//! A site's day in the console: each 5-minute slot's maximum, the slots the P95 discards, the
//! missing ones, the cap and its violations — why the day's P95 is what it is (R5).

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use chrono::NaiveDate;
use tally_common::p95::{daily_site_p95, discarded_slots};
use tally_common::time::{BucketStart, DAY_SLOTS};

use super::chart::{Bar, Chart, Line};
use super::{Chrome, Console, PageError, Signed, render, words};
use crate::api::auth::{internal, visible_account};
use crate::store::Store;

struct SlotView {
    time: String,
    max_bps: Option<u64>,
    discarded: bool,
}

#[derive(Template)]
#[template(path = "day.html")]
struct DayPage {
    chrome: Chrome,
    account: String,
    site_name: String,
    day: NaiveDate,
    day_words: String,
    p95_bps: u64,
    buckets_present: u16,
    buckets_expected: u16,
    cap_bps: Option<u64>,
    violations: Vec<(String, u64)>,
    chart: String,
    slots: Vec<SlotView>,
}

/// `/accounts/{a}/sites/{s}/days/{YYYY-MM-DD}`: why a day's P95 is what it is (R5).
pub(super) async fn site_day<S: Store + 'static>(
    State(console): State<Console<S>>,
    signed: Signed,
    Path((account, site, day)): Path<(String, String, String)>,
) -> Result<Response, PageError> {
    visible_account(&*console.store, &signed.caller, &account).await?;
    let found = console.store.site(&site).await.map_err(internal)?.filter(|s| s.account == account);
    let site = found.ok_or_else(|| PageError::not_found(format!("site {site:?} does not exist")))?;
    let day: NaiveDate = day.parse().map_err(|_| {
        PageError::new(axum::http::StatusCode::BAD_REQUEST, format!("{day:?} is not a date (YYYY-MM-DD)"))
    })?;
    let buckets = console.store.buckets_of_day(&site.id, day).await.map_err(internal)?;
    let values = || buckets.iter().map(|b| (b.start, b.max_bps));
    let p95 = daily_site_p95(day, values());
    let discarded = discarded_slots(day, values());
    let mut by_slot: Vec<Option<u64>> = vec![None; DAY_SLOTS];
    for b in &buckets {
        by_slot[b.start.slot()] = Some(b.max_bps);
    }
    let first = BucketStart::first_of_day(day).unix();
    let slots: Vec<SlotView> = by_slot
        .iter()
        .enumerate()
        .map(|(slot, max_bps)| SlotView {
            time: BucketStart::from_unix(first + 300 * slot as i64)
                .map_or_else(|_| String::new(), |s| s.time().format("%H:%M").to_string()),
            max_bps: *max_bps,
            discarded: discarded.contains(&slot),
        })
        .collect();
    let bars = slots
        .iter()
        .map(|s| Bar {
            label: s.time.clone(),
            value: s.max_bps.unwrap_or(0),
            class: match (s.discarded, s.max_bps) {
                (true, _) => "discarded",
                (false, None) => "missing",
                (false, Some(_)) => "in",
            },
        })
        .collect();
    let mut lines = vec![Line { value: p95.p95_bps, class: "p95", label: "daily P95".into() }];
    lines.extend(site.cap_bps.map(|cap| Line { value: cap, class: "cap", label: "cap".into() }));
    let day_words = words::date(day);
    let chart = Chart { title: format!("{} on {day_words}", site.name), bars, lines, shaded: None, label_every: 36 };
    let from = BucketStart::first_of_day(day);
    let to = BucketStart::first_of_day(day.succ_opt().unwrap_or(day));
    let violations = console
        .store
        .enforcement_violations(&account, Some(&site.id), from, to)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|v| (v.bucket_start.time().format("%H:%M").to_string(), v.max_bps))
        .collect();
    let page = DayPage {
        chrome: Chrome::of(&signed, Some(&account)),
        account,
        site_name: format!("{} ({})", site.name, words::country(site.country)),
        day,
        day_words,
        p95_bps: p95.p95_bps,
        buckets_present: p95.buckets_present,
        buckets_expected: p95.buckets_expected,
        cap_bps: site.cap_bps,
        violations,
        chart: chart.svg(),
        slots,
    };
    Ok(render(&page))
}
