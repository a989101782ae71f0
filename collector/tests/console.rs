//! The web console against the real collector holding a generated month.
//!
//! - In a real browser (Debian's chromium, driven over WebDriver through chromedriver, started
//!   once for the whole binary): sign in with a token, every figure of the usage page and of the
//!   site-day page equals the API's (read through `data-value`), the site-day page marks exactly
//!   the 14 discarded buckets, each CSV equals the API's JSON, another account's page is a 404,
//!   signing out ends the session. Screenshots of the pages go to `docs/screenshots/`.
//! - Over plain HTTP: the session cookie's flags, a form without its token refused, a revoked
//!   token's session ended, a wrong token refused at sign-in (over HTTPS, `https.rs`).

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use support::http::{exchange, get};
use support::in_process::serve;
use support::{Collector, MID_NOVEMBER_2026, args};
use tally_testkit::skip;

const MONTH: &str = "2026-10";

/// Account `acme` (sites in the US, Germany and China, a pool per group) with every bucket of
/// October 2026, its contact's token, and `other`'s token. The clock is mid-November: October
/// is finalized by the engine.
fn generated_month() -> (Collector, String, String) {
    let c = Collector::with_config("").at(MID_NOVEMBER_2026);
    for line in [
        "account add --id acme --name Acme --eop-contact-name Ann --eop-contact-email ann@acme.example",
        "account add --id other --name Other",
        "license add --account acme --kind bandwidth_pool --region group1 --quantity 200 --from 2026-01-01 --to 2026-12-31",
        "license add --account acme --kind bandwidth_pool --region china --quantity 50 --from 2026-01-01 --to 2026-12-31",
        "site add --account acme --id hq --name HQ --country US --type socket",
        "site add --account acme --id fra --name Frankfurt --country DE --type ipsec",
        "site add --account acme --id sh --name Shanghai --country CN --type socket --cap-mbps 40",
    ] {
        c.ok(&args(line));
    }
    // Each site's days: a daily shape, a different level per site and day, some spikes and gaps.
    let mut csv = String::from("site,bucket_start,max_bps\n");
    let mut seed: u64 = 7;
    for (site, level) in [("hq", 120_000_000u64), ("fra", 80_000_000), ("sh", 30_000_000)] {
        for day in 1..=31u64 {
            for slot in 0..288u64 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                if (seed >> 60) == 0 {
                    continue; // about one slot in 16 has no bucket
                }
                let hour_shape = 50 + (slot % 144).abs_diff(72);
                let mut bps = level / 100 * hour_shape * (90 + day % 20) / 100 + (seed >> 40) % 1_000_000;
                if (seed >> 56) % 64 == 1 {
                    bps *= 3; // a spike
                }
                csv += &format!("{site},2026-10-{day:02}T{:02}:{:02}:00Z,{bps}\n", slot / 12, slot % 12 * 5);
            }
        }
    }
    let file = c.file("month.csv", &csv);
    c.ok(&["import-buckets", "--csv", &file]);
    // October closed: the engine finalizes it (R34); a page never does (R35).
    c.ok(&["engine", "--once"]);
    let token = |line: &str| c.ok(&args(line)).trim().to_owned();
    let named = ["--name", "Ann Lee", "--email", "ann@acme.example"];
    let acme =
        c.ok(&[&args("token create --role customer --account acme --contact")[..], &named].concat()).trim().to_owned();
    let other = token("token create --role customer --account other");
    (c, acme, other)
}

/// chromedriver, started once for the binary; each [`Browser::session`] is a headless chromium
/// of its own (its own profile, so its own cookies).
struct Browser {
    driver: Child,
    port: u16,
    profiles: Vec<tempfile::TempDir>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Starts chromedriver on a free port, ready once its WebDriver `/status` says so.
fn browser() -> Option<Browser> {
    if !std::path::Path::new(CHROMEDRIVER).exists() || !std::path::Path::new(CHROMIUM).exists() {
        skip!("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let driver = Command::new(CHROMEDRIVER).arg(format!("--port={port}")).stdout(Stdio::null()).spawn().unwrap();
    // Killed when dropped, also when it never gets ready.
    let mut browser = Browser { driver, port, profiles: Vec::new() };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut last = None;
    loop {
        last = tally_testkit::http::try_get(address, "/status").or(last);
        if last.as_ref().is_some_and(|(status, body)| {
            *status == 200 && serde_json::from_str::<Value>(body).is_ok_and(|s| s["value"]["ready"] == true)
        }) {
            return Some(browser);
        }
        assert!(browser.driver.try_wait().unwrap().is_none(), "chromedriver exited");
        assert!(std::time::Instant::now() < deadline, "chromedriver was not ready within 30 s: {last:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Browser {
    /// A new headless chromium with an empty profile.
    async fn session(&mut self) -> Client {
        let profile = tempfile::tempdir().unwrap();
        let options = json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--window-size=1280,1000",
                     format!("--user-data-dir={}", profile.path().display())],
        });
        self.profiles.push(profile);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromium session")
    }
}

/// Clicks `button` and waits until the page it leads to shows `expected` (a form's answer
/// replaces the page after the click returns).
async fn click_then(client: &Client, button: &str, expected: &str) {
    client.find(Locator::Css(button)).await.unwrap().click().await.unwrap();
    client.wait().for_element(Locator::Css(expected)).await.unwrap();
}

/// Signs `client` in with `token` through the sign-in form.
async fn sign_in_with(client: &Client, base: &str, token: &str) {
    client.goto(&format!("{base}/login")).await.unwrap();
    client.find(Locator::Id("token")).await.unwrap().send_keys(token).await.unwrap();
    click_then(client, "button[type=submit]", "header form").await;
}

/// Every `data-field` of the page, with the `data-*` of the elements around it that say whose
/// figure it is (group, site, date, slot, license), in document order.
async fn figures(client: &Client) -> Vec<BTreeMap<String, String>> {
    let script = r#"
        return Array.from(document.querySelectorAll('[data-field]')).map(e => {
            const found = {};
            for (let n = e; n && n.dataset; n = n.parentElement) {
                for (const [k, v] of Object.entries(n.dataset)) { if (!(k in found)) found[k] = v; }
            }
            return found;
        });"#;
    let value = client.execute(script, vec![]).await.unwrap();
    serde_json::from_value(value).unwrap()
}

fn figure<'a>(all: &'a [BTreeMap<String, String>], wanted: &[(&str, &str)]) -> Vec<&'a str> {
    all.iter()
        .filter(|f| wanted.iter().all(|(k, v)| f.get(*k).map(String::as_str) == Some(*v)))
        .map(|f| f["value"].as_str())
        .collect()
}

/// axe-core's script (`TALLY_AXE_JS`, installed from npm by `.ci/run`), once per binary.
fn axe_script() -> Option<&'static str> {
    static SCRIPT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SCRIPT
        .get_or_init(|| {
            let path = std::env::var_os("TALLY_AXE_JS")?;
            std::fs::read_to_string(path).ok()
        })
        .as_deref()
}

/// axe-core, injected into the page `client` shows, finds no critical violation.
async fn accessible(client: &Client, page: &str) {
    let Some(axe) = axe_script() else {
        skip!("axe-core is not installed (TALLY_AXE_JS: .ci/run installs it from npm)");
        return;
    };
    client.execute(&format!("{axe}\nreturn true;"), vec![]).await.unwrap();
    let run = "const done = arguments[arguments.length - 1];
        axe.run(document).then(r => done(r.violations.filter(v => v.impact === 'critical')
            .map(v => v.id + ': ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', '))));";
    let critical = client.execute_async(run, vec![]).await.unwrap();
    assert_eq!(critical, json!([]), "axe-core on the {page} page");
}

/// What a customer reads on the page `client` shows is in words: no ruling number (`R15`), no
/// API name (`in_process`, `group1`, `customer:acme`), no configuration key or command, no raw
/// date or timestamp (`2026-10-03`, `2026-12-07T03:11:28Z`).
async fn in_customer_words(client: &Client, page: &str) {
    let script = r"
        const builders = /\bR\d{1,2}\b|\b[a-z]+_[a-z_]+\b|\b(customer|partner|operator):|\bgroup\d\b|\d{4}-\d{2}-\d{2}|tally-(collector|agent) /g;
        const text = document.body.innerText;
        return [text.match(builders) || [], text];";
    let found = client.execute(script, vec![]).await.unwrap();
    assert_eq!(found[0], json!([]), "the {page} page speaks the builders' language in\n{}", found[1].as_str().unwrap());
}

/// At a phone's width (390 px) no element outside a sideways-scrolling table is wider than the
/// screen, each table or chart wider than it says it scrolls sideways, the charts' labels are at
/// least 11 px, and every link and button is at least 24 px high to tap; the window is set back
/// after.
async fn fits_a_phone(client: &Client, page: &str) {
    client.set_window_size(390, 844).await.unwrap();
    let script = r#"
        const width = document.documentElement.clientWidth;
        const wide = Array.from(document.querySelectorAll('body *'))
            .filter(e => !e.closest('.scroll') && e.getBoundingClientRect().right > width + 1)
            .map(e => e.tagName + (e.id ? '#' + e.id : '') + ' ' + Math.round(e.getBoundingClientRect().right));
        const small = Array.from(document.querySelectorAll('svg.chart text'))
            .filter(t => t.getBoundingClientRect().height > 0 && parseFloat(getComputedStyle(t).fontSize)
                * t.ownerSVGElement.getScreenCTM().a < 11)
            .map(t => t.textContent);
        const tiny = Array.from(document.querySelectorAll('a, button, summary'))
            .filter(e => e.offsetParent !== null && e.getBoundingClientRect().height < 24)
            .map(e => e.textContent.trim());
        const unhinted = Array.from(document.querySelectorAll('.scroll'))
            .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth
                && !getComputedStyle(e, '::before').content.includes('scroll sideways'))
            .map(e => e.getAttribute('aria-label') || e.innerText.slice(0, 40));
        return { wide, small: small.slice(0, 5), tiny, unhinted };"#;
    let found = client.execute(script, vec![]).await.unwrap();
    client.set_window_size(1280, 1000).await.unwrap();
    assert_eq!(found, json!({"wide": [], "small": [], "tiny": [], "unhinted": []}), "the {page} page at 390 px");
}

fn screenshot(png: &[u8], name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

/// A request with a cookie: status, the raw head, the body.
fn with_cookie(http: &str, method: &str, path: &str, cookie: &str, form: &str) -> (u16, String, String) {
    let headers = format!("Cookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\n");
    exchange(http, method, path, &headers, form)
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

/// One browser for the binary: the pages' figures, then the order story.
#[tokio::test(flavor = "current_thread")]
async fn the_console_in_a_real_browser() {
    let Some(mut browser) = browser() else { return };
    let (c, acme, _) = generated_month();
    let (_serving, http) = serve(&c);
    let client = browser.session().await;
    usage_pages_show_the_apis_figures(&client, &http, &acme).await;
    meters_show_the_apis_figures(&client, &c, &http, &acme).await;
    client.close().await.unwrap();
    the_order_story(&mut browser, &c, &http, &acme).await;
}

async fn usage_pages_show_the_apis_figures(client: &Client, http: &str, acme: &str) {
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
async fn meters_show_the_apis_figures(client: &Client, c: &Collector, http: &str, acme: &str) {
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

/// The articles' order page: the contact submits two items (one wrong, shown beside its field,
/// nothing created), an operator in another session moves them on and quotes, the contact
/// approves, and the license is on the usage page.
async fn the_order_story(browser: &mut Browser, c: &Collector, http: &str, acme: &str) {
    let base = format!("http://{http}");
    let operator = c.ok(&args("token create --role operator")).trim().to_owned();
    let contact = browser.session().await;
    sign_in_with(&contact, &base, acme).await;
    contact.goto(&format!("{base}/accounts/acme/orders/new")).await.unwrap();
    for (index, kind) in ["site_bandwidth", "ip_addresses"].iter().enumerate() {
        click_then(&contact, &format!("button[value='add:{kind}']"), &format!("fieldset[data-item='{index}']")).await;
    }
    let tomorrow = (c.today() + chrono::TimeDelta::days(1)).to_string();
    let set = async |id: &str, value: &str| {
        let script = "document.getElementById(arguments[0]).value = arguments[1];";
        contact.execute(script, vec![json!(id), json!(value)]).await.unwrap();
    };
    set("item0-start_date", &tomorrow).await;
    set("item0-site", "hq").await;
    set("item0-bandwidth_mbps", "100").await;
    set("item1-start_date", &tomorrow).await;
    set("item1-quantity", "2000000").await;
    click_then(&contact, "#submit-order", "[data-error-for='items[1].quantity']").await;
    let error = contact.find(Locator::Css("[data-error-for='items[1].quantity']")).await.unwrap();
    assert!(error.text().await.unwrap().contains("up to 1000000"), "{}", error.text().await.unwrap());
    // The error sits in the second item's fieldset, beside its quantity.
    contact.find(Locator::Css("fieldset[data-item='1'] #item1-quantity-error")).await.unwrap();
    let (_, _, body) = get(http, "/v1/accounts/acme/orders", Some(acme));
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["orders"], json!([]), "nothing was created");
    screenshot(&contact.screenshot().await.unwrap(), "order-new.png");
    accessible(&contact, "order form").await;
    in_customer_words(&contact, "order form").await;
    fits_a_phone(&contact, "order form").await;
    set("item1-quantity", "2").await;
    click_then(&contact, "#submit-order", "section[data-item]").await;
    let path = contact.current_url().await.unwrap().path().to_owned();
    let id = path.rsplit('/').next().unwrap().to_owned();
    assert_eq!(path, format!("/accounts/acme/orders/{id}"));
    let (_, _, body) = get(http, &format!("/v1/accounts/acme/orders/{id}"), Some(acme));
    let order: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(order["status"], "submitted", "{order}");
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    // Every field of every item, as the API has it, in words, numbered within the order.
    let shown = figures(&contact).await;
    for (number, item) in order["items"].as_array().unwrap().iter().enumerate() {
        let item_id = item["id"].to_string();
        for (field, value) in item.as_object().unwrap() {
            if matches!(field.as_str(), "id" | "type" | "status" | "history" | "quote") {
                continue;
            }
            let value = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
            assert_eq!(figure(&shown, &[("item", &item_id), ("field", field)]), [value.as_str()], "item {item_id}");
        }
        let heading = contact.find(Locator::Css(&format!("section[data-item='{item_id}'] h2"))).await.unwrap();
        let heading = heading.text().await.unwrap();
        assert!(heading.starts_with(&format!("{}. ", number + 1)), "{heading}");
    }
    let first = contact.find(Locator::Css("section[data-item] h2")).await.unwrap().text().await.unwrap();
    let start = chrono::NaiveDate::parse_from_str(&tomorrow, "%Y-%m-%d").unwrap().format("%-d %B %Y");
    assert_eq!(first, format!("1. Site bandwidth — HQ (United States), 100 Mbps, from {start}"));
    let timeline = contact.find(Locator::Css("ol.timeline")).await.unwrap().text().await.unwrap();
    assert!(timeline.ends_with("UTC Submitted by Ann Lee"), "{timeline}");
    in_customer_words(&contact, "order").await;
    fits_a_phone(&contact, "order").await;
    // The contact is offered only what is theirs: cancelling, not moving items forward.
    let offered = |client: &Client| {
        let client = client.clone();
        async move {
            let steps = client
                .execute(
                    "return Array.from(document.querySelectorAll('form[data-step]')).map(f => f.dataset.step);",
                    vec![],
                )
                .await
                .unwrap();
            serde_json::from_value::<Vec<String>>(steps).unwrap()
        }
    };
    assert_eq!(offered(&contact).await, ["canceled"]);

    // A forged operator step from the contact's session: refused.
    let cookie = format!("tally_session={}", contact.get_named_cookie("tally_session").await.unwrap().value());
    let csrf = csrf_of(&contact.source().await.unwrap());
    let forged = format!("csrf={csrf}&to=in_process");
    let (status, _, _) =
        with_cookie(http, "POST", &format!("/accounts/acme/orders/{id}/transitions"), &cookie, &forged);
    assert_eq!(status, 403);

    // An operator, in a session of its own, moves the items on and attaches the quote.
    let staff = browser.session().await;
    sign_in_with(&staff, &base, &operator).await;
    staff.goto(&format!("{base}/accounts/acme/orders/{id}")).await.unwrap();
    assert_eq!(offered(&staff).await, ["in_process"]);
    click_then(&staff, "form[data-step=in_process] button", "form[data-step=pending_confirmation]").await;
    assert_eq!(offered(&staff).await, ["pending_confirmation"]);
    staff
        .find(Locator::Css("form[data-step=pending_confirmation] #amount"))
        .await
        .unwrap()
        .send_keys("1200.00")
        .await
        .unwrap();
    staff
        .find(Locator::Css("form[data-step=pending_confirmation] #currency"))
        .await
        .unwrap()
        .send_keys("USD")
        .await
        .unwrap();
    let quoted = "span[data-field=status][data-value=pending_confirmation]";
    click_then(&staff, "form[data-step=pending_confirmation] button", quoted).await;
    assert!(offered(&staff).await.is_empty(), "approving is the contact's");

    // October's over-usage (group 1 above its 200 Mbps): the contact is offered no resolution
    // and a forged one is refused; the operator resolves it with a True-Up.
    let october = format!("{base}/accounts/acme/usage?month={MONTH}");
    contact.goto(&october).await.unwrap();
    let (_, _, body) = get(http, &format!("/v1/accounts/acme/overusage?month={MONTH}"), Some(acme));
    let found: Value = serde_json::from_str(&body).unwrap();
    let pool = found["overusage"].as_array().unwrap().iter().find(|o| o["license"] == "bandwidth_pool").unwrap();
    let overusage = pool["id"].as_i64().unwrap();
    assert!(contact.find_all(Locator::Css("form[data-resolve]")).await.unwrap().is_empty());
    let csrf = csrf_of(&contact.source().await.unwrap());
    let forged = format!("csrf={csrf}&month={MONTH}&type=true_up");
    let path = format!("/accounts/acme/overusage/{overusage}/resolution");
    assert_eq!(with_cookie(http, "POST", &path, &cookie, &forged).0, 403);
    staff.goto(&october).await.unwrap();
    let resolved = format!("tr[data-overusage='{overusage}'] [data-field=resolution][data-value=true_up]");
    click_then(&staff, &format!("form[data-resolve='{overusage}'] button"), &resolved).await;
    let (_, _, body) = get(http, &format!("/v1/accounts/acme/overusage?month={MONTH}"), Some(acme));
    let found: Value = serde_json::from_str(&body).unwrap();
    let pool = found["overusage"].as_array().unwrap().iter().find(|o| o["id"] == overusage).unwrap();
    assert_eq!(
        (pool["resolution"]["type"].as_str(), pool["resolution"]["quantity"].clone()),
        (Some("true_up"), pool["required_purchase"].clone()),
        "R32: a True-Up charges the required purchase, in Mbps"
    );
    assert_eq!(pool["resolution"]["unit"], "Mbps");

    // The contact approves; the license is in force and on the usage page.
    contact.goto(&format!("{base}/accounts/acme/orders/{id}")).await.unwrap();
    assert_eq!(offered(&contact).await, ["completed", "canceled"]);
    click_then(&contact, "form[data-step=completed] button", "span[data-field=status][data-value=completed]").await;
    screenshot(&contact.screenshot().await.unwrap(), "order.png");
    accessible(&contact, "order").await;
    in_customer_words(&contact, "completed order").await;
    let timeline = contact.find(Locator::Css("ol.timeline")).await.unwrap().text().await.unwrap();
    for said in [
        "Submitted by Ann Lee",
        "Taken in process by Customer Success",
        "Quoted 1200.00 USD by Customer Success",
        "Approved by Ann Lee",
    ] {
        assert!(timeline.contains(said), "{said} in {timeline}");
    }
    contact.goto(&format!("{base}/accounts/acme/orders")).await.unwrap();
    accessible(&contact, "orders").await;
    in_customer_words(&contact, "orders").await;
    fits_a_phone(&contact, "orders").await;
    let (_, _, body) = get(http, &format!("/v1/accounts/acme/orders/{id}"), Some(acme));
    let order: Value = serde_json::from_str(&body).unwrap();
    let history: Vec<(&str, &str)> = order["items"][0]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["status"].as_str().unwrap(), h["actor"].as_str().unwrap()))
        .collect();
    let ann = "Ann Lee <ann@acme.example>, customer:acme (contact)";
    assert_eq!(
        history,
        [("submitted", ann), ("in_process", "operator"), ("pending_confirmation", "operator"), ("completed", ann)],
        "the person, not only the role"
    );

    // The contact sets who is notified; a wrong address is refused beside its field, as typed,
    // on the same page; the change is kept with her name.
    contact.goto(&format!("{base}/accounts/acme/settings")).await.unwrap();
    contact.find(Locator::Css("tr[data-contact='ann@acme.example']")).await.unwrap();
    contact.find(Locator::Id("address")).await.unwrap().send_keys("billing at acme").await.unwrap();
    click_then(&contact, "#add-recipient button", "[data-error-for=address]").await;
    assert_eq!(contact.current_url().await.unwrap().path(), "/accounts/acme/settings");
    let typed = contact.find(Locator::Id("address")).await.unwrap().prop("value").await.unwrap();
    assert_eq!(typed.as_deref(), Some("billing at acme"));
    contact.find(Locator::Id("address")).await.unwrap().clear().await.unwrap();
    contact.find(Locator::Id("address")).await.unwrap().send_keys("billing@acme.example").await.unwrap();
    click_then(&contact, "#add-recipient button", "tr[data-recipient='billing@acme.example']").await;
    assert_eq!(figure(&figures(&contact).await, &[("field", "actor")]), [ann]);
    screenshot(&contact.screenshot().await.unwrap(), "settings.png");
    accessible(&contact, "settings").await;
    in_customer_words(&contact, "settings").await;
    fits_a_phone(&contact, "settings").await;
    let (_, _, body) = get(http, "/v1/accounts/acme/recipients", Some(acme));
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["recipients"], json!([{"channel": "email", "address": "billing@acme.example"}]));
    assert_eq!(
        (listed["changes"][0]["change"].as_str(), listed["changes"][0]["actor"].as_str()),
        (Some("added"), Some(ann))
    );
    let month = &tomorrow[..7];
    contact.goto(&format!("{base}/accounts/acme/usage?month={month}")).await.unwrap();
    let shown = figure(&figures(&contact).await, &[("group", "group1"), ("field", "licensed_bps")])[0].to_owned();
    let (_, _, body) = get(http, &format!("/v1/accounts/acme/usage?month={month}"), Some(acme));
    let report: Value = serde_json::from_str(&body).unwrap();
    let group1 = report["bandwidth_pool"].as_array().unwrap().iter().find(|p| p["region_group"] == "group1").unwrap();
    assert_eq!((shown.as_str(), group1["licensed_bps"].as_u64()), ("300000000", Some(300_000_000)), "200 + 100 Mbps");

    // The orders' CSV: one row per item, as the API lists them.
    let (status, _, body) = with_cookie(http, "GET", "/accounts/acme/orders.csv", &cookie, "");
    assert_eq!(status, 200);
    let rows = csv_rows(&body);
    let items: Vec<(String, String, String)> = order["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (id.clone(), i["type"].as_str().unwrap().to_owned(), i["status"].as_str().unwrap().to_owned()))
        .collect();
    let listed: Vec<(String, String, String)> =
        rows.iter().map(|r| (r[0].clone(), r[4].clone(), r[14].clone())).collect();
    assert_eq!(listed, items);
    contact.close().await.unwrap();
    staff.close().await.unwrap();
}

/// Signs in over plain HTTP: the `Set-Cookie` line and the session cookie.
fn sign_in(http: &str, token: &str) -> (String, String) {
    let (status, head, _) = with_cookie(http, "POST", "/login", "", &format!("token={token}"));
    assert_eq!(status, 303, "{head}");
    let line = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap().to_owned();
    let cookie = line.split_once(':').unwrap().1.trim().split(';').next().unwrap().to_owned();
    (line, cookie)
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    page[at..at + 64].to_owned()
}

#[test]
fn sessions_have_safe_cookies_need_the_form_token_and_end_with_their_token() {
    let (c, acme, other) = generated_month();
    let (_serving, http) = serve(&c);
    let (line, cookie) = sign_in(&http, &acme);
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(line.contains(flag), "{line}");
    }
    assert!(!line.contains("Secure"), "plain HTTP on loopback: {line}");
    let (status, head, page) = with_cookie(&http, "GET", "/accounts/acme/usage", &cookie, "");
    assert_eq!(status, 200);
    // Every page: no script, no frame, no sniffing, no referrer; an account's page is never stored.
    let (_, login_head, _) = with_cookie(&http, "GET", "/login", "", "");
    for head in [&head, &login_head] {
        let head = head.to_ascii_lowercase();
        for wanted in [
            "content-security-policy: default-src 'self'; script-src 'none'",
            "frame-ancestors 'none'",
            "x-content-type-options: nosniff",
            "x-frame-options: deny",
            "referrer-policy: no-referrer",
            "cache-control: no-store",
        ] {
            assert!(head.contains(wanted), "{wanted}: {head}");
        }
    }
    assert!(!page.contains("style=\"") && !page.contains("<script"), "nothing the policy would block");

    // A sign-out without the form's token is refused, and the session lives on.
    let (status, _, _) = with_cookie(&http, "POST", "/logout", &cookie, "");
    assert_eq!(status, 403);
    let (status, _, _) = with_cookie(&http, "POST", "/logout", &cookie, "csrf=0123");
    assert_eq!(status, 403);
    assert_eq!(with_cookie(&http, "GET", "/accounts/acme/usage", &cookie, "").0, 200);
    let (status, head, _) = with_cookie(&http, "POST", "/logout", &cookie, &format!("csrf={}", csrf_of(&page)));
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("Max-Age=0"), "the cookie is cleared: {head}");
    assert_eq!(with_cookie(&http, "GET", "/accounts/acme/usage", &cookie, "").0, 303);

    // Revoking the token ends its sessions at once.
    let (_, cookie) = sign_in(&http, &other);
    assert_eq!(with_cookie(&http, "GET", "/accounts/other/usage", &cookie, "").0, 200);
    let listed: Value = serde_json::from_str(&c.ok(&args("token list --format json"))).unwrap();
    let id = listed.as_array().unwrap().iter().find(|t| t["account"] == "other").unwrap()["id"].to_string();
    c.ok(&["token", "revoke", "--id", &id]);
    assert_eq!(with_cookie(&http, "GET", "/accounts/other/usage", &cookie, "").0, 303);
    // A wrong token signs nobody in.
    let (status, head, body) = with_cookie(&http, "POST", "/login", "", "token=tally_nope");
    assert_eq!(status, 401);
    assert!(!head.to_ascii_lowercase().contains("set-cookie"), "{head}");
    assert!(body.contains("not valid"), "{body}");
}

/// Guessing tokens is slowed down per client address: after 10 wrong sign-ins an address is
/// answered 429 with `Retry-After`, its right token too, until its budget refills; a client at
/// another address (here behind the trusted proxy) signs in at once. The API's bearer tokens
/// are held to the same rule.
#[test]
fn wrong_tokens_are_slowed_down_per_client_address() {
    let c = Collector::with_config("trusted_proxies = [\"127.0.0.1\"]");
    c.ok(&args("account add --id acme --name Acme"));
    let token = c.ok(&args("token create --role customer --account acme")).trim().to_owned();
    let (_serving, http) = serve(&c);
    let from = |client: &str, form: &str| {
        let headers = format!(
            "X-Forwarded-For: {client}\r\nX-Forwarded-Proto: https\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        );
        exchange(&http, "POST", "/login", &headers, form)
    };
    let statuses: Vec<u16> = (0..12).map(|n| from("203.0.113.9", &format!("token=tally_guess{n}")).0).collect();
    assert_eq!(statuses, [[401; 10].as_slice(), &[429, 429]].concat());
    let (status, head, page) = from("203.0.113.9", &format!("token={token}"));
    assert_eq!(status, 429, "held back, right token or not, until the budget refills: {head}");
    let retry: u64 = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after: ").map(str::to_owned))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {head}"));
    assert!((1..=6).contains(&retry), "{head}");
    assert!(page.contains("Too many wrong access keys from your address"), "{page}");
    assert_eq!(from("198.51.100.7", &format!("token={token}")).0, 303, "another address signs in at once");

    // The API: ten wrong bearer tokens from one address, then 429 problem+json.
    let bearer = |client: &str, secret: &str| {
        let headers =
            format!("X-Forwarded-For: {client}\r\nX-Forwarded-Proto: https\r\nAuthorization: Bearer {secret}\r\n");
        exchange(&http, "GET", "/v1/accounts/acme", &headers, "")
    };
    let statuses: Vec<u16> = (0..11).map(|n| bearer("192.0.2.44", &format!("tally_guess{n}")).0).collect();
    assert_eq!(statuses, [[401; 10].as_slice(), &[429]].concat());
    let (status, head, body) = bearer("192.0.2.44", &token);
    assert_eq!(status, 429, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/problem+json"), "{head}");
    assert!(body.contains("too many wrong tokens from this address"), "{body}");
    assert_eq!(bearer("192.0.2.45", &token).0, 200);
}

/// An account of more sites than a page lists: its usage page lists 100 at a time by site,
/// says which in words, and links to the next and back to the first.
#[test]
fn a_usage_page_lists_a_hundred_sites_at_a_time() {
    let c = Collector::with_config("").at(MID_NOVEMBER_2026);
    c.ok(&args("account add --id many --name Many"));
    let site = |n: usize| tally_collector::store::Site {
        id: format!("m{n:03}"),
        account: "many".into(),
        name: format!("Branch {n}"),
        country: "US".parse().unwrap(),
        region_group: tally_common::region::RegionGroup::Group1,
        site_type: tally_common::kinds::SiteType::Socket,
        cap_bps: None,
    };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use tally_collector::store::AccountStore;
        match &c.database_url {
            Some(url) => {
                let store = tally_collector::store::postgres::PgStore::open(url).await.unwrap();
                for n in 0..105 {
                    store.add_site(&site(n)).await.unwrap();
                }
            }
            None => {
                let store = tally_collector::store::sqlite::SqliteStore::open(&c.data_file("tally.db")).await.unwrap();
                for n in 0..105 {
                    store.add_site(&site(n)).await.unwrap();
                }
            }
        }
    });
    let token = c.ok(&args("token create --role customer --account many")).trim().to_owned();
    let (_serving, http) = serve(&c);
    let (_, cookie) = sign_in(&http, &token);
    let rows = |page: &str| page.matches("<tr data-site=").count();

    let (status, _, first) = with_cookie(&http, "GET", "/accounts/many/usage?month=2026-11", &cookie, "");
    assert_eq!(status, 200, "{first}");
    assert_eq!(rows(&first), 100);
    assert!(first.contains("Sites 1 to 100 of 105."), "{first}");
    assert!(first.contains("<tr data-site=\"m099\">") && !first.contains("<tr data-site=\"m100\">"));
    let next = "/accounts/many/usage?month=2026-11&amp;sites_after=m099";
    assert!(first.contains(&format!("<a href=\"{next}\">Next 100 sites →</a>")), "{first}");
    assert!(!first.contains("First 100 sites"));

    let (status, _, last) = with_cookie(&http, "GET", &next.replace("&amp;", "&"), &cookie, "");
    assert_eq!(status, 200, "{last}");
    assert_eq!(rows(&last), 5);
    assert!(last.contains("Sites 101 to 105 of 105."), "{last}");
    assert!(last.contains("<a href=\"/accounts/many/usage?month=2026-11\">First 100 sites</a>"), "{last}");
    assert!(!last.contains("Next 100 sites"));
}
