//! Orders in SQLite: `orders`, `order_items`, `order_item_history` (migrations 0010, 0012). Items
//! and quotes are kept as JSON text in the Contract's shape, and each order's whole document in
//! `orders.doc`, rebuilt in the transaction of every change: a page of orders is one query that
//! concatenates text.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use sqlx::SqliteConnection;
use tally_common::kinds::ItemStatus;

use super::accounts::{insert_license, terms};
use super::{SqliteStore, db, from_json, parse, stamp, to_json};
use crate::orders::rules::SiteFacts;
use crate::orders::{Created, NewOrder, Order, OrderMail, OrderPage, Quote, Transition, TransitionRefused};
use crate::store::transition::{self, Effect};
use crate::store::{OrderStore, StoreError};

async fn create(conn: &mut SqliteConnection, order: &NewOrder) -> Result<Created, StoreError> {
    if let Some((key, hash)) = &order.idempotency {
        let known: Option<(i64, String)> =
            sqlx::query_as("SELECT id, request_hash FROM orders WHERE account_id = ? AND idempotency_key = ?")
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
         VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
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
            sqlx::query_scalar("INSERT INTO order_items (order_id, item, status) VALUES (?, ?, ?) RETURNING id")
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
async fn enqueue(conn: &mut SqliteConnection, account: &str, mail: &OrderMail, at: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (account_id, topic, channel, recipient, subject, body, next_attempt_at)
         SELECT ?, ?, 'email', address, ?, ?, ? FROM (
             SELECT eop_contact_email AS address FROM accounts WHERE id = ? AND eop_contact_email IS NOT NULL
             UNION
             SELECT address FROM notification_recipients WHERE ? AND account_id = ? AND channel = 'email')
         WHERE true
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
    conn: &mut SqliteConnection,
    item: i64,
    status: ItemStatus,
    actor: &str,
    at: &str,
    quote: Option<&Quote>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO order_item_history (item_id, seq, status, actor, at, quote)
         VALUES (?, (SELECT coalesce(max(seq), 0) + 1 FROM order_item_history WHERE item_id = ?), ?, ?, ?, ?)",
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

/// An order's document, the Contract's JSON (the shape [`Order`] reads back), built from its
/// rows by SQLite: kept in `orders.doc` after every change, so reading orders is reading text.
/// It is exactly what serde makes of an [`Order`]: `json_patch` drops a `null` quote as serde's
/// `skip_serializing_if` does (tests/orders.rs compares the routes).
macro_rules! order_doc {
    () => {
        "json_object(
          'id', o.id, 'account', o.account_id, 'status', o.status, 'created_at', o.created_at,
          'items', (SELECT json_group_array(json(item)) FROM (
              SELECT json_patch(i.item, json_object(
                  'id', i.id, 'status', i.status, 'quote', json(i.quote),
                  'history', (SELECT json_group_array(json(entry)) FROM (
                      SELECT json_patch(json_object('status', h.status, 'actor', h.actor, 'at', h.at),
                                        json_object('quote', json(h.quote))) AS entry
                      FROM order_item_history h WHERE h.item_id = i.id ORDER BY h.seq)))) AS item
              FROM order_items i WHERE i.order_id = o.id ORDER BY i.id)))"
    };
}

/// Rebuilds order `id`'s document after a change, in the same transaction.
async fn refresh_doc(conn: &mut SqliteConnection, id: i64) -> Result<(), StoreError> {
    sqlx::query(concat!("UPDATE orders AS o SET doc = ", order_doc!(), " WHERE o.id = ?"))
        .bind(id)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

/// Builds the documents of orders that have none yet (made before migration 0012).
pub(super) async fn build_missing_docs(store: &SqliteStore) -> Result<(), StoreError> {
    let mut tx = store.begin_write().await?;
    sqlx::query(concat!("UPDATE orders AS o SET doc = ", order_doc!(), " WHERE o.doc = '{}'"))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await
}

/// The documents of the orders of account `?1` that `$filter` (a literal) selects, as one JSON
/// array in one row (sqlx hands rows over one at a time: one row is cheapest), with their count
/// and last id.
macro_rules! orders_json {
    ($filter:literal) => {
        concat!(
            "SELECT '[' || coalesce(group_concat(doc, ','), '') || ']', count(*), max(id) FROM (
               SELECT o.id AS id, o.doc AS doc FROM orders o WHERE o.account_id = ?1 AND ",
            $filter,
            ")"
        )
    };
}

/// The orders `ids` of `account` (those that exist), with their items and histories, by id.
async fn load(conn: &mut SqliteConnection, account: &str, ids: &[i64]) -> Result<Vec<Order>, StoreError> {
    let (json, _, _): (String, i64, Option<i64>) =
        sqlx::query_as(orders_json!("o.id IN (SELECT value FROM json_each(?2)) ORDER BY o.id"))
            .bind(account)
            .bind(to_json(&ids)?)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    from_json(&json, "orders")
}

/// Up to `limit` orders of `account` after id `after`, optionally of one summary status: the
/// JSON array, and the last id when the page is full.
async fn page_json(
    conn: &mut SqliteConnection,
    account: &str,
    status: Option<ItemStatus>,
    after: i64,
    limit: u32,
) -> Result<OrderPage, StoreError> {
    let (json, count, last): (String, i64, Option<i64>) =
        sqlx::query_as(orders_json!("(?2 IS NULL OR o.status = ?2) AND o.id > ?3 ORDER BY o.id LIMIT ?4"))
            .bind(account)
            .bind(status.map(|s| s.as_str()))
            .bind(after)
            .bind(limit)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    Ok(OrderPage { json, next_after: last.filter(|_| count == i64::from(limit)) })
}

/// Plans the transition ([`transition::plan`]), then writes all of it or nothing.
async fn apply_transition(
    conn: &mut SqliteConnection,
    t: &Transition,
) -> Result<Result<Order, TransitionRefused>, StoreError> {
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
        sqlx::query("UPDATE order_items SET status = ?, quote = coalesce(?, quote) WHERE id = ?")
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
                sqlx::query("UPDATE sites SET activation_date = ? WHERE id = ? AND account_id = ?")
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
    sqlx::query("UPDATE orders SET status = ? WHERE id = ?")
        .bind(plan.summary.as_str())
        .bind(t.order)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    refresh_doc(conn, t.order).await?;
    let changed = load(conn, &t.account, &[t.order]).await?.pop();
    changed.map(Ok).ok_or_else(|| StoreError::Corrupt(format!("order {} vanished", t.order)))
}

async fn site_facts(conn: &mut SqliteConnection, account: &str) -> Result<BTreeMap<String, SiteFacts>, StoreError> {
    let rows: Vec<(String, String, Option<String>, String)> =
        sqlx::query_as("SELECT id, region_group, activation_date, created_at FROM sites WHERE account_id = ?")
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

impl OrderStore for SqliteStore {
    async fn create_order(&self, order: &NewOrder) -> Result<Created, StoreError> {
        // The write lock first: two requests with one idempotency key never both create an order.
        let mut tx = self.begin_write().await?;
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
