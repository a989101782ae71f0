//! Late data: buckets that arrive after a month was provisional or finalized, and a finalized month
//! served as saved with its ETag until they do; a report's sites in pages.

use super::*;

#[test]
fn late_buckets_change_a_provisional_month_through_the_incremental_path() {
    let c = load_golden_month("grace_hours = 744");
    c.ok(&["engine", "--once"]);
    let before = october(&c);
    assert_eq!(before["status"], "provisional", "October has ended, its 31 days of grace have not");
    assert_eq!(group2(&before)["monthly_p95_bps"], 10_000_000);
    late_tokyo_buckets(&c);
    let pool = group2(&october(&c));
    assert_eq!(pool["monthly_p95_bps"], 90_000_000);
    assert_eq!(pool["peak_day"], "2026-10-12");
    assert_eq!(pool["excess_bps"], 85_000_000);
}

#[test]
fn late_buckets_for_a_finalized_month_are_counted_and_change_nothing() {
    let c = load_golden_month("");
    c.ok(&["engine", "--once"]);
    let before = october(&c);
    assert_eq!(before["status"], "finalized");
    assert_eq!(before["late_buckets"], 0);
    assert!(before["finalized_at"].is_string());
    late_tokyo_buckets(&c);
    let after = october(&c);
    assert_eq!(after["late_buckets"], 15, "R9: stored and counted");
    assert_eq!(after["bandwidth_pool"], before["bandwidth_pool"], "R9: a finalized month does not change");
    assert_eq!(after["sites"], before["sites"]);
    assert_eq!(after["finalized_at"], before["finalized_at"]);
}

/// A finalized month is served as saved, the late data beside it (R9): the API's answer equals
/// the report the command computes and carries an ETag that `If-None-Match` turns into a 304
/// without a body; a late bucket changes the tag and the count. A document saved before the
/// overlays were kept apart is served alike.
#[test]
fn a_finalized_month_is_served_as_saved_with_an_etag_until_late_data_arrives() {
    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    let c = load_golden_month(&format!("operator_token = \"{TOKEN}\""));
    c.ok(&["engine", "--once"]);
    let _serving = c.serve();
    let http = c.http_address().to_string();
    let get = |etag: Option<&str>| {
        let headers = format!(
            "Authorization: Bearer {TOKEN}\r\n{}",
            etag.map_or(String::new(), |e| format!("If-None-Match: {e}\r\n"))
        );
        let path = "/v1/accounts/acme/usage?month=2026-10";
        let (status, head, body) = tally_testkit::http::exchange(&http, "GET", path, &headers, "");
        let etag = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("etag: ").map(str::to_owned));
        (status, etag, body)
    };
    let (status, etag, body) = get(None);
    assert_eq!(status, 200, "{body}");
    let etag = etag.expect("a finalized month has an ETag");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), october(&c), "as the command computes it");
    let (status, again, body) = get(Some(&etag));
    assert_eq!((status, again.as_deref(), body.as_str()), (304, Some(etag.as_str()), ""));

    late_tokyo_buckets(&c);
    let (status, later, body) = get(Some(&etag));
    assert_eq!(status, 200, "{body}");
    assert_ne!(later.as_deref(), Some(etag.as_str()), "a late bucket is news");
    let served: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(served["late_buckets"], 15);
    for field in ["\"late_buckets\":", "\"finalized_at\":", "\"overusage\":"] {
        assert_eq!(body.matches(field).count(), 1, "each field once: {body}");
    }
    assert_eq!(served, october(&c));

    // The document as the engine saved it before: the overlays' fields in it, at their first values.
    let mut old = october(&c);
    let fields = old.as_object_mut().unwrap();
    fields.remove("finalized_at");
    fields.insert("late_buckets".into(), 0.into());
    let old = old.to_string();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let update = "UPDATE finalized_months SET report = $1 WHERE account_id = 'acme' AND month = '2026-10'";
        match &c.database_url {
            Some(url) => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                sqlx::query(update).bind(&old).execute(&pool).await.unwrap();
            }
            None => {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", c.data_file("tally.db").display()))
                    .await
                    .unwrap();
                sqlx::query(update).bind(&old).execute(&pool).await.unwrap();
            }
        }
    });
    let (status, _, body) = get(None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), october(&c), "an older document, parsed");
    assert_eq!(body.matches("\"late_buckets\":").count(), 1, "each field once: {body}");
}

/// A report's sites come a page at a time (`sites_limit`, `sites_after`), by site id, and
/// together they are the whole report's; the pools and meters are always the whole account's.
#[test]
fn a_reports_sites_come_in_pages_and_its_totals_whole() {
    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    let c = load_golden_month(&format!("operator_token = \"{TOKEN}\""));
    c.ok(&["engine", "--once"]);
    let _serving = c.serve();
    let http = c.http_address().to_string();
    let whole = october(&c);
    let mut sites = Vec::new();
    let mut after: Option<String> = None;
    let pages = loop {
        let path = match &after {
            None => "/v1/accounts/acme/usage?month=2026-10&sites_limit=1".to_owned(),
            Some(a) => format!("/v1/accounts/acme/usage?month=2026-10&sites_limit=1&sites_after={a}"),
        };
        let (status, _, body) = tally_testkit::http::get(&http, &path, Some(TOKEN));
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((&page["bandwidth_pool"], &page["meters"]), (&whole["bandwidth_pool"], &whole["meters"]));
        assert_eq!(page["sites_page"]["before"], sites.len() as u64);
        sites.extend(page["sites"].as_array().unwrap().iter().cloned());
        match page["sites_page"]["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break page["sites_page"]["total"].as_u64().unwrap(),
        }
    };
    assert_eq!(Value::from(sites), whole["sites"], "the pages together");
    assert!(pages > 1, "{pages} sites");
    let (status, _, body) =
        tally_testkit::http::get(&http, "/v1/accounts/acme/usage?month=2026-10&sites_limit=0", Some(TOKEN));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("sites_limit") && body.contains("from 1 to 1000"), "{body}");
}
