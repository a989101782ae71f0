//! The web console against the real collector holding a generated month.
//!
//! - In a real browser (Debian's chromium, driven over WebDriver through chromedriver, started
//!   once for the whole binary): sign in with a token, every figure of the usage page and of the
//!   site-day page equals the API's (read through `data-value`), the site-day page marks exactly
//!   the 14 discarded buckets, each CSV equals the API's JSON, another account's page is a 404,
//!   signing out ends the session. Screenshots of the pages go to `docs/screenshots/`.
//! - Over plain HTTP: the session cookie's flags, a form without its token refused, a revoked
//!   token's session ended, a wrong token refused at sign-in (over HTTPS, `net/https.rs`).

#[path = "../support/mod.rs"]
mod support;

mod orders;
mod over_http;
mod usage_pages;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};
use orders::the_order_story;
use serde_json::{Value, json};
use support::http::{exchange, get};
use support::in_process::serve;
use support::{Collector, MID_NOVEMBER_2026, args};
use tally_testkit::skip;
use usage_pages::{meters_show_the_apis_figures, usage_pages_show_the_apis_figures};

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

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    page[at..at + 64].to_owned()
}
