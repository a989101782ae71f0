//! The order story in the browser: a customer orders, Customer Success quotes and moves it, every
//! item's details equal the API's.

use super::*;

/// The articles' order page: the contact submits two items (one wrong, shown beside its field,
/// nothing created), an operator in another session moves them on and quotes, the contact
/// approves, and the license is on the usage page.
pub(super) async fn the_order_story(browser: &mut Browser, c: &Collector, http: &str, acme: &str) {
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
