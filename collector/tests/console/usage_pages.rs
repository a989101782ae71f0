//! The usage and site-day pages in the browser: every figure equals the API's, each CSV its JSON,
//! the meters' figures too.

use super::*;

pub(super) async fn usage_pages_show_the_apis_figures(client: &Client, http: &str, acme: &str) {
    let http = http.to_owned();
    let base = format!("http://{http}");
    let (status, _, body) = get(&http, &format!("/v1/accounts/acme/usage?month={MONTH}"), Some(acme));
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();

    // Signed out, a page leads to the sign-in; a wrong token is refused there.
    client.goto(&format!("{base}/accounts/acme/usage")).await.unwrap();
    assert_eq!(client.current_url().await.unwrap().path(), "/login");
    accessible(client, "sign-in").await;
    in_customer_words(client, "sign-in").await;
    fits_a_phone(client, "sign-in").await;
    client.find(Locator::Id("token")).await.unwrap().send_keys("tally_wrong").await.unwrap();
    click_then(client, "button[type=submit]", "#login-error").await;
    let refused = client.find(Locator::Id("login-error")).await.unwrap().text().await.unwrap();
    assert!(refused.contains("not valid"), "{refused}");
    client.find(Locator::Id("token")).await.unwrap().send_keys(acme).await.unwrap();
    click_then(client, "button[type=submit]", "header form").await;
    assert_eq!(client.current_url().await.unwrap().path(), "/accounts/acme/usage", "a customer goes to its account");

    // The usage page: every pool figure and every day's aggregate, as the API has them.
    client.goto(&format!("{base}/accounts/acme/usage?month={MONTH}")).await.unwrap();
    let page = figures(client).await;
    assert_eq!(figure(&page, &[("field", "status")]), [api["status"].as_str().unwrap()]);
    let pools = api["bandwidth_pool"].as_array().unwrap();
    assert_eq!(pools.len(), 2, "{api}");
    for pool in pools {
        let group = pool["region_group"].as_str().unwrap();
        for field in ["monthly_p95_bps", "licensed_bps", "excess_bps"] {
            let shown = figure(&page, &[("group", group), ("field", field)]);
            assert_eq!(shown, [pool[field].to_string()], "{group} {field}");
        }
        assert_eq!(figure(&page, &[("group", group), ("field", "peak_day")]), [pool["peak_day"].as_str().unwrap()]);
        let days = pool["days"].as_array().unwrap();
        assert_eq!(days.len(), 31);
        for day in days {
            let date = day["date"].as_str().unwrap();
            let at = [("group", group), ("date", date)];
            assert_eq!(figure(&page, &[at[0], at[1], ("field", "aggregate_bps")]), [day["aggregate_bps"].to_string()]);
            assert_eq!(figure(&page, &[at[0], at[1], ("field", "in_window")]), [day["in_window"].to_string()]);
        }
    }
    // Each site's highest daily P95 of the month, and the day it links to.
    let mut peaks = BTreeMap::new();
    for site in api["sites"].as_array().unwrap() {
        let id = site["site"].as_str().unwrap();
        let days = site["days"].as_array().unwrap();
        let top = days.iter().map(|d| d["p95_bps"].as_u64().unwrap()).max().unwrap();
        let date = days.iter().find(|d| d["p95_bps"] == top).unwrap()["date"].as_str().unwrap();
        let shown: Vec<&BTreeMap<String, String>> =
            page.iter().filter(|f| f.get("site").map(String::as_str) == Some(id) && f["field"] == "p95_bps").collect();
        assert_eq!((shown.len(), shown[0]["value"].clone(), shown[0]["date"].as_str()), (1, top.to_string(), date));
        assert_eq!(
            figure(&page, &[("site", id), ("field", "cap_bps")]),
            [site["cap_bps"].as_u64().map_or(String::new(), |c| c.to_string())]
        );
        let (_, _, body) = get(&http, &format!("/v1/accounts/acme/sites/{id}/enforcement"), Some(acme));
        let enforcement: Value = serde_json::from_str(&body).unwrap();
        let in_force = if site["cap_bps"].is_null() { String::new() } else { enforcement["in_force"].to_string() };
        assert_eq!(figure(&page, &[("site", id), ("field", "in_force")]), [in_force.as_str()], "{id}");
        peaks.insert(id.to_owned(), (date.to_owned(), top));
    }
    screenshot(&client.screenshot().await.unwrap(), "usage.png");
    accessible(client, "usage").await;
    in_customer_words(client, "usage").await;
    fits_a_phone(client, "usage").await;
    client.set_window_size(390, 844).await.unwrap();
    screenshot(&client.screenshot().await.unwrap(), "usage-phone.png");
    client.set_window_size(1280, 1000).await.unwrap();

    // The site-day page of hq's peak day: 14 buckets discarded, the 15th highest is the P95.
    let (date, p95) = peaks["hq"].clone();
    click_then(client, &format!("tr[data-site=hq] a[data-date='{date}']"), "tr[data-slot]").await;
    assert_eq!(client.current_url().await.unwrap().path(), format!("/accounts/acme/sites/hq/days/{date}"));
    let day = figures(client).await;
    assert_eq!(figure(&day, &[("field", "p95_bps")]), [p95.to_string()]);
    let slots: Vec<&BTreeMap<String, String>> = day.iter().filter(|f| f.contains_key("slot")).collect();
    assert_eq!(slots.len(), 288);
    let value = |f: &BTreeMap<String, String>| f["value"].parse::<u64>().unwrap_or(0);
    let discarded: Vec<u64> = slots.iter().filter(|f| f.contains_key("discarded")).map(|f| value(f)).collect();
    assert_eq!(discarded.len(), 14);
    assert!(discarded.iter().all(|v| *v >= p95), "{discarded:?} vs {p95}");
    let kept: Vec<u64> = slots.iter().filter(|f| !f.contains_key("discarded")).map(|f| value(f)).collect();
    assert_eq!(kept.iter().max(), Some(&p95), "the 15th highest is the P95");
    let present = slots.iter().filter(|f| !f["value"].is_empty()).count();
    let hq = api["sites"].as_array().unwrap().iter().find(|s| s["site"] == "hq").unwrap();
    let api_day = hq["days"].as_array().unwrap().iter().find(|d| d["date"] == date.as_str()).unwrap();
    assert_eq!(figure(&day, &[("field", "buckets_present")]), [api_day["buckets_present"].to_string()]);
    assert_eq!(present.to_string(), api_day["buckets_present"].to_string());
    screenshot(&client.screenshot().await.unwrap(), "site-day.png");
    accessible(client, "site-day").await;
    in_customer_words(client, "site-day").await;
    fits_a_phone(client, "site-day").await;

    // A month without traffic says so instead of drawing empty charts.
    client.goto(&format!("{base}/accounts/acme/usage?month=2026-09")).await.unwrap();
    assert_eq!(client.find_all(Locator::Css("[data-field=no_traffic]")).await.unwrap().len(), 2);
    assert!(client.find_all(Locator::Css("svg.chart")).await.unwrap().is_empty());
    in_customer_words(client, "quiet month").await;

    // The CSVs, with the browser's session: the API's values.
    let cookie = client.get_named_cookie("tally_session").await.unwrap();
    let cookie = format!("tally_session={}", cookie.value());
    let (status, head, body) =
        with_cookie(&http, "GET", &format!("/accounts/acme/usage.csv?month={MONTH}"), &cookie, "");
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/csv"), "{head}");
    let expected: Vec<Vec<String>> = pools
        .iter()
        .flat_map(|p| {
            p["days"].as_array().unwrap().iter().map(|d| {
                vec![
                    p["region_group"].as_str().unwrap().to_owned(),
                    d["date"].as_str().unwrap().to_owned(),
                    d["aggregate_bps"].to_string(),
                    d["in_window"].to_string(),
                ]
            })
        })
        .collect();
    assert_eq!(csv_rows(&body), expected);
    let (_, _, body) = with_cookie(&http, "GET", &format!("/accounts/acme/sites.csv?month={MONTH}"), &cookie, "");
    let expected: Vec<Vec<String>> = api["sites"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["days"].as_array().unwrap().iter().map(|d| {
                let field = |k: &str| d[k].to_string();
                vec![
                    s["site"].as_str().unwrap().to_owned(),
                    s["region_group"].as_str().unwrap().to_owned(),
                    d["date"].as_str().unwrap().to_owned(),
                    field("p95_bps"),
                    field("buckets_present"),
                    field("buckets_expected"),
                    field("in_window"),
                ]
            })
        })
        .collect();
    assert_eq!(csv_rows(&body), expected);

    // Another account's page: a 404 like a missing one.
    for path in ["/accounts/other/usage", "/accounts/nobody/usage", "/accounts/other/sites/hq/days/2026-10-01"] {
        client.goto(&format!("{base}{path}")).await.unwrap();
        assert_eq!(figure(&figures(client).await, &[("field", "status")]), ["404"], "{path}");
    }

    // Signing out ends the session on the server: the old cookie leads to the sign-in.
    client.goto(&format!("{base}/accounts/acme/usage")).await.unwrap();
    click_then(client, "header form button", "#token").await;
    assert_eq!(client.current_url().await.unwrap().path(), "/login");
    let (status, head, _) = with_cookie(&http, "GET", "/accounts/acme/usage", &cookie, "");
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("location: /login"), "{head}");
}

/// November, open, with ZTNA sessions and an AI Security user: every meter row (and ZTNA's rows
/// by region, R12) as the API has it.
pub(super) async fn meters_show_the_apis_figures(client: &Client, c: &Collector, http: &str, acme: &str) {
    sign_in_with(client, &format!("http://{http}"), acme).await;
    let operator = c.ok(&args("token create --role operator")).trim().to_owned();
    c.ok(&args(
        "license add --account acme --kind ztna_users --region general --quantity 2 --from 2026-01-01 --to 2026-12-31",
    ));
    let session = |id: &str, user: &str, country: &str| {
        json!({"id": id, "type": "ztna_session", "account": "acme", "time": "2026-11-02T10:00:00Z", "user": user,
               "authenticated": true, "generated_traffic": true, "remote": true, "work_country": country})
    };
    let device = |id: &str, device: &str, source: &str| {
        json!({"id": id, "type": "device_sighting", "account": "acme", "time": "2026-11-04T10:00:00Z",
               "device": device, "source": source, "is_socket": false})
    };
    let events = json!({"events": [session("z1", "u1", "US"), session("z2", "u2", "CN"), session("z3", "u3", "DE"),
        {"id": "a1", "type": "ai_security_activity", "account": "acme", "time": "2026-11-03T10:00:00Z", "user": "u1", "enabled": true},
        device("d1", "02:1b:21:00:00:05", "inline"), device("d2", "02-1B-21-00-00-05", "integration"),
        device("d3", "printer-2", "inline")]});
    let (status, _, body) =
        support::http::request(http, "POST", "/v1/usage/events", Some(&operator), &events.to_string());
    assert_eq!(status, 200, "{body}");
    let (_, _, body) = get(http, "/v1/accounts/acme/usage?month=2026-11", Some(&operator));
    let api: Value = serde_json::from_str(&body).unwrap();
    client.goto(&format!("http://{http}/accounts/acme/usage?month=2026-11")).await.unwrap();
    let page = figures(client).await;
    let meters = api["meters"].as_array().unwrap();
    assert!(meters.len() >= 2, "{api}");
    for meter in meters {
        let license = meter["license"].as_str().unwrap();
        for field in ["measured", "licensed", "excess", "required_purchase"] {
            let shown: Vec<&str> = page
                .iter()
                .filter(|f| f.get("license").map(String::as_str) == Some(license))
                .filter(|f| !f.contains_key("region") && !f.contains_key("source"))
                .filter(|f| f["field"] == field)
                .map(|f| f["value"].as_str())
                .collect();
            assert_eq!(shown, [meter[field].to_string()], "{license} {field}");
        }
        for region in meter["by_region"].as_array().into_iter().flatten() {
            let name = region["region"].as_str().unwrap();
            for field in ["measured", "licensed"] {
                let shown = figure(&page, &[("license", license), ("region", name), ("field", field)]);
                assert_eq!(shown, [region[field].to_string()], "{license} in {name}: {field}");
            }
        }
    }
    // Devices (R29): once across sources, each source's own count, the private addresses.
    let devices = meters.iter().find(|m| m["license"] == "devices").unwrap();
    assert_eq!(devices["measured"], 2, "{devices}");
    for (source, count) in devices["by_source"].as_object().unwrap() {
        assert_eq!(
            figure(&page, &[("license", "devices"), ("source", source), ("field", "measured")]),
            [count.to_string()]
        );
    }
    assert_eq!(devices["by_source"], json!({"inline": 2, "integration": 1}));
    assert_eq!(figure(&page, &[("license", "devices"), ("field", "locally_administered")]), ["1"]);
    let ztna = meters.iter().find(|m| m["license"] == "ztna_users").unwrap();
    assert_eq!((ztna["measured"].as_u64(), ztna["by_region"].as_array().map(Vec::len)), (Some(3), Some(2)), "{ztna}");
    // The bandwidth pool is a license too: a row per region group, in bit/s, beside the meters.
    for pool in api["bandwidth_pool"].as_array().unwrap() {
        let group = pool["region_group"].as_str().unwrap();
        let at = [("license", "bandwidth_pool"), ("pool", group)];
        assert_eq!(figure(&page, &[at[0], at[1], ("field", "measured")]), [pool["monthly_p95_bps"].to_string()]);
        assert_eq!(figure(&page, &[at[0], at[1], ("field", "licensed")]), [pool["licensed_bps"].to_string()]);
    }
    in_customer_words(client, "open month's usage").await;

    // A ZTNA session of finalized October arrives now: kept and shown, never billed (R33).
    let mut late = session("z9", "u9", "US");
    late["time"] = json!("2026-10-20T10:00:00Z");
    let body = json!({ "events": [late] }).to_string();
    let (status, _, answer) = support::http::request(http, "POST", "/v1/usage/events", Some(&operator), &body);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""late":1"#), "{answer}");
    client.goto(&format!("http://{http}/accounts/acme/usage?month=2026-10")).await.unwrap();
    let shown = client.find(Locator::Css("[data-field=late_events][data-meter=ztna_users]")).await.unwrap();
    assert_eq!(shown.attr("data-value").await.unwrap().as_deref(), Some("1"));
    let said = shown.text().await.unwrap();
    assert!(said.contains("ZTNA users: with them the month would have counted 1, not the 0 billed"), "{said}");
    screenshot(&client.screenshot().await.unwrap(), "usage-late.png");
    in_customer_words(client, "late arrivals' usage").await;
}
