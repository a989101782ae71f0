//! Orders: `orders`, `order_items`, `order_item_history`. Items and quotes are kept as JSON text
//! in the Contract's shape, and each order's whole document in `orders.doc`, rebuilt by serde in
//! the transaction of every change: a page of orders is one query that concatenates text.
//! Creating an order and moving its items lock the account's row first, so one idempotency key
//! makes one order and one transition is checked against the statuses it changes, on any
//! collector (R30).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use tally_common::kinds::ItemStatus;

use super::accounts::{insert_license, lock_account, terms};
use super::dialect::ints;
use super::{Backend, Conn, db, from_json, parse, stamp, to_json};
use crate::orders::rules::SiteFacts;
use crate::orders::{
    Created, HistoryEntry, NewOrder, Order, OrderItem, OrderMail, OrderPage, Quote, Transition, TransitionRefused,
};
use crate::store::transition::{self, Effect};
use crate::store::{OrderStore, StoreError};

async fn create(conn: &mut Conn, order: &NewOrder) -> Result<Created, StoreError> {
    if let Some((key, hash)) = &order.idempotency {
        let known: Option<(i64, String)> =
            sqlx::query_as("SELECT id, request_hash FROM orders WHERE account_id = $1 AND idempotency_key = $2")
                .bind(&order.account)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db)?;
        if let Some((id, known_hash)) = known {
            if &known_hash != hash {
                return Ok(Created::KeyReused);
            }
            let found = load(conn, &order.account, &[id]).await?.pop();
            return found.map(Created::Replayed).ok_or_else(|| StoreError::Corrupt(format!("order {id} vanished")));
        }
    }
    let at = stamp(order.at);
    let (key, hash) = order.idempotency.clone().unzip();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO orders (account_id, status, created_at, created_by, idempotency_key, request_hash)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(&order.account)
    .bind(ItemStatus::Submitted.as_str())
    .bind(&at)
    .bind(&order.actor)
    .bind(key)
    .bind(hash)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    for item in &order.items {
        let item_id: i64 =
            sqlx::query_scalar("INSERT INTO order_items (order_id, item, status) VALUES ($1, $2, $3) RETURNING id")
                .bind(id)
                .bind(to_json(item)?)
                .bind(ItemStatus::Submitted.as_str())
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
        record(conn, item_id, ItemStatus::Submitted, &order.actor, &at, None).await?;
    }
    refresh_doc(conn, id).await?;
    let created = load(conn, &order.account, &[id]).await?.pop();
    let created = created.ok_or_else(|| StoreError::Corrupt(format!("order {id} vanished")))?;
    // R23: the organization's confirmation: its contact person and its e-mail recipients.
    enqueue(conn, &order.account, &(order.confirmation)(&created), &at).await?;
    Ok(Created::New(created))
}

/// Puts an e-mail in the outbox (R15's, delivered by the same loop) for the account's contact
/// person and, when it says so, its e-mail recipients too.
async fn enqueue(conn: &mut Conn, account: &str, mail: &OrderMail, at: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (account_id, topic, channel, recipient, subject, body, next_attempt_at)
         SELECT $1, $2, 'email', address, $3, $4, $5 FROM (
             SELECT eop_contact_email AS address FROM accounts WHERE id = $6 AND eop_contact_email IS NOT NULL
             UNION
             SELECT address FROM notification_recipients WHERE $7 AND account_id = $8 AND channel = 'email')
         AS addresses WHERE true -- (SQLite reads an upsert's SELECT right only with a WHERE)
         ON CONFLICT (account_id, topic, channel, recipient) DO NOTHING",
    )
    .bind(account)
    .bind(&mail.topic)
    .bind(&mail.subject)
    .bind(&mail.text)
    .bind(at)
    .bind(account)
    .bind(mail.to_organization)
    .bind(account)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

async fn record(
    conn: &mut Conn,
    item: i64,
    status: ItemStatus,
    actor: &str,
    at: &str,
    quote: Option<&Quote>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO order_item_history (item_id, seq, status, actor, at, quote)
         VALUES ($1, (SELECT coalesce(max(seq), 0) + 1 FROM order_item_history WHERE item_id = $2), $3, $4, $5, $6)",
    )
    .bind(item)
    .bind(item)
    .bind(status.as_str())
    .bind(actor)
    .bind(at)
    .bind(quote.map(to_json).transpose()?)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// Rebuilds order `id`'s document after a change, in the same transaction: exactly what serde
/// makes of its [`Order`].
async fn refresh_doc(conn: &mut Conn, id: i64) -> Result<(), StoreError> {
    let (account, status, created_at): (String, String, String) =
        sqlx::query_as("SELECT account_id, status, created_at FROM orders WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    let items: Vec<(i64, String, String, Option<String>)> =
        sqlx::query_as("SELECT id, item, status, quote FROM order_items WHERE order_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
    let history: Vec<(i64, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT h.item_id, h.status, h.actor, h.at, h.quote FROM order_item_history h
         JOIN order_items i ON i.id = h.item_id WHERE i.order_id = $1 ORDER BY h.item_id, h.seq",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let quote = |text: Option<String>| text.map(|q| from_json::<Quote>(&q, "quote")).transpose();
    let mut entries: BTreeMap<i64, Vec<HistoryEntry>> = BTreeMap::new();
    for (item, status, actor, at, q) in history {
        let entry = HistoryEntry { status: parse(&status, "item status")?, actor, at, quote: quote(q)? };
        entries.entry(item).or_default().push(entry);
    }
    let order = Order {
        id,
        account,
        status: parse(&status, "order status")?,
        created_at,
        items: items
            .into_iter()
            .map(|(item_id, item, status, q)| {
                Ok(OrderItem {
                    id: item_id,
                    item: from_json(&item, "order item")?,
                    status: parse(&status, "item status")?,
                    quote: quote(q)?,
                    history: entries.remove(&item_id).unwrap_or_default(),
                })
            })
            .collect::<Result<_, StoreError>>()?,
    };
    sqlx::query("UPDATE orders SET doc = $1 WHERE id = $2")
        .bind(to_json(&order)?)
        .bind(id)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

/// Builds the documents of orders that have none yet (made before migration 0012).
pub(super) async fn build_missing_docs(store: &Backend) -> Result<(), StoreError> {
    let mut tx = store.begin_write().await?;
    let missing: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM orders WHERE doc = '{}'").fetch_all(&mut *tx).await.map_err(db)?;
    for id in missing {
        refresh_doc(&mut tx, id).await?;
    }
    tx.commit().await
}

/// The documents of the orders of account `?1` that `$filter` (a literal) selects, as one JSON
/// array in one row (sqlx hands rows over one at a time: one row is cheapest), with their count
/// and last id.
macro_rules! orders_json {
    ($($filter:tt)*) => {
        concat!(
            "SELECT '[' || coalesce(string_agg(doc, ',' ORDER BY id), '') || ']', count(*), max(id) FROM (
               SELECT o.id AS id, o.doc AS doc FROM orders o WHERE o.account_id = $1 AND ",
            $($filter)*,
            ") AS page"
        )
    };
}

/// The orders `ids` of `account` (those that exist), with their items and histories, by id.
async fn load(conn: &mut Conn, account: &str, ids: &[i64]) -> Result<Vec<Order>, StoreError> {
    let (json, _, _): (String, i64, Option<i64>) =
        sqlx::query_as(orders_json!(concat!("o.id IN ", int_list!(2), " ORDER BY o.id")))
            .bind(account)
            .bind(ints(ids)?)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    from_json(&json, "orders")
}

/// Up to `limit` orders of `account` after id `after`, optionally of one summary status: the
/// JSON array, and the last id when the page is full.
async fn page_json(
    conn: &mut Conn,
    account: &str,
    status: Option<ItemStatus>,
    after: i64,
    limit: u32,
) -> Result<OrderPage, StoreError> {
    let (json, count, last): (String, i64, Option<i64>) =
        sqlx::query_as(orders_json!("($2 IS NULL OR o.status = $2) AND o.id > $3 ORDER BY o.id LIMIT $4"))
            .bind(account)
            .bind(status.map(|s| s.as_str()))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    Ok(OrderPage { json, next_after: last.filter(|_| count == i64::from(limit)) })
}

/// Plans the transition ([`transition::plan`]), then writes all of it or nothing.
async fn apply_transition(conn: &mut Conn, t: &Transition) -> Result<Result<Order, TransitionRefused>, StoreError> {
    let Some(order) = load(conn, &t.account, &[t.order]).await?.pop() else {
        return Ok(Err(TransitionRefused::NoOrder(t.order)));
    };
    let (terms, sites) = if transition::needs_account_facts(t.to) {
        (terms(&mut *conn, &t.account).await?, site_facts(conn, &t.account).await?)
    } else {
        Default::default()
    };
    let plan = match transition::plan(&order, t, &terms, &sites)? {
        Ok(plan) => plan,
        Err(refused) => return Ok(Err(refused)),
    };
    let at = stamp(t.at);
    for item in &plan.chosen {
        let quote = t.quote.as_ref().map(to_json).transpose()?;
        sqlx::query("UPDATE order_items SET status = $1, quote = coalesce($2, quote) WHERE id = $3")
            .bind(t.to.as_str())
            .bind(quote)
            .bind(item.id)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        record(conn, item.id, t.to, &t.actor_name, &at, t.quote.as_ref()).await?;
    }
    for effect in &plan.effects {
        match effect {
            Effect::License(license) => {
                insert_license(conn, license).await?;
            }
            Effect::Activation { site, date } => {
                sqlx::query("UPDATE sites SET activation_date = $1 WHERE id = $2 AND account_id = $3")
                    .bind(date.to_string())
                    .bind(site)
                    .bind(&t.account)
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
            }
        }
    }
    if let Some(mail) = &plan.mail {
        enqueue(conn, &t.account, mail, &at).await?;
    }
    sqlx::query("UPDATE orders SET status = $1 WHERE id = $2")
        .bind(plan.summary.as_str())
        .bind(t.order)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    refresh_doc(conn, t.order).await?;
    let changed = load(conn, &t.account, &[t.order]).await?.pop();
    changed.map(Ok).ok_or_else(|| StoreError::Corrupt(format!("order {} vanished", t.order)))
}

async fn site_facts(conn: &mut Conn, account: &str) -> Result<BTreeMap<String, SiteFacts>, StoreError> {
    let rows: Vec<(String, String, Option<String>, String)> =
        sqlx::query_as("SELECT id, region_group, activation_date, created_at FROM sites WHERE account_id = $1")
            .bind(account)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
    let spans: Vec<(String, String, String, String)> =
        sqlx::query_as(super::counts::SITE_GROUPS_OF_ACCOUNT).bind(account).fetch_all(conn).await.map_err(db)?;
    let spans = super::site_group_spans(spans)?;
    rows.into_iter()
        .map(|(id, group, activation, created)| {
            let activation_date = match activation {
                Some(day) => parse(&day, "activation_date")?,
                None => created.get(..10).map_or(Ok(NaiveDate::MIN), |day| parse(day, "created_at"))?,
            };
            let group_history = crate::store::group_history(&spans, &id);
            Ok((id, SiteFacts { region_group: parse(&group, "region_group")?, group_history, activation_date }))
        })
        .collect()
}

impl OrderStore for Backend {
    async fn create_order(&self, order: &NewOrder) -> Result<Created, StoreError> {
        let mut tx = self.begin_write().await?;
        // The account's lock first: two requests with one idempotency key never both create an
        // order, whichever collectors they reach.
        lock_account(&mut tx, &order.account).await?;
        let created = create(&mut tx, order).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn order(&self, account: &str, id: i64) -> Result<Option<Order>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        Ok(load(&mut conn, account, &[id]).await?.pop())
    }

    async fn orders(
        &self,
        account: &str,
        status: Option<ItemStatus>,
        after: i64,
        limit: u32,
    ) -> Result<OrderPage, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        page_json(&mut conn, account, status, after, limit).await
    }

    async fn transition_items(&self, transition: &Transition) -> Result<Result<Order, TransitionRefused>, StoreError> {
        let mut tx = self.begin_write().await?;
        lock_account(&mut tx, &transition.account).await?;
        let result = apply_transition(&mut tx, transition).await?;
        if result.is_ok() {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(result)
    }

    async fn site_facts(&self, account: &str) -> Result<BTreeMap<String, SiteFacts>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        site_facts(&mut conn, account).await
    }
}
