//! The console over plain HTTP: the session cookie's flags, the form token, a revoked token's
//! session, wrong tokens slowed down, sites in pages of 100.

use super::*;

/// Signs in over plain HTTP: the `Set-Cookie` line and the session cookie.
fn sign_in(http: &str, token: &str) -> (String, String) {
    let (status, head, _) = with_cookie(http, "POST", "/login", "", &format!("token={token}"));
    assert_eq!(status, 303, "{head}");
    let line = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap().to_owned();
    let cookie = line.split_once(':').unwrap().1.trim().split(';').next().unwrap().to_owned();
    (line, cookie)
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
