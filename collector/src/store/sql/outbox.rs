//! Notifications: recipients, the outbox.

use chrono::{DateTime, TimeDelta, Utc};

use super::dialect::texts;
use super::{Backend, OutboxRow, db, refused_insert, outbox_columns, parse, select_outbox, stamp};
use crate::store::{Channel, Notification, OutboxItem, OutboxStore, Recipient, RecipientChange, StoreError};

impl OutboxStore for Backend {
    async fn change_recipient(&self, account: &str, change: &RecipientChange) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let Recipient { channel, address } = &change.recipient;
        let statement = if change.added {
            "INSERT INTO notification_recipients (account_id, channel, address) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM notification_recipients WHERE account_id = $1 AND channel = $2 AND address = $3"
        };
        let changed = sqlx::query(statement)
            .bind(account)
            .bind(channel.as_str())
            .bind(address)
            .execute(&mut *tx)
            .await
            .map_err(refused_insert("recipient of account", account, db))?
            .rows_affected()
            > 0;
        if changed {
            sqlx::query(
                "INSERT INTO recipient_changes (account_id, channel, address, change, actor, at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(account)
            .bind(channel.as_str())
            .bind(address)
            .bind(if change.added { "added" } else { "removed" })
            .bind(&change.actor)
            .bind(stamp(change.at))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn recipients(&self, account: &str) -> Result<Vec<Recipient>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT channel, address FROM notification_recipients WHERE account_id = $1 ORDER BY channel, address",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(channel, address)| Ok(Recipient { channel: parse(&channel, "channel")?, address }))
            .collect()
    }

    async fn recipient_changes(&self, account: &str) -> Result<Vec<RecipientChange>, StoreError> {
        let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
            "SELECT channel, address, change, actor, at FROM recipient_changes WHERE account_id = $1 ORDER BY id",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(channel, address, change, actor, at)| {
                Ok(RecipientChange {
                    recipient: Recipient { channel: parse(&channel, "channel")?, address },
                    added: change == "added",
                    actor,
                    at: parse(&at, "recipient change time")?,
                })
            })
            .collect()
    }

    async fn claim_due_notifications(
        &self,
        now: DateTime<Utc>,
        lease: TimeDelta,
        limit: usize,
        channels: &[Channel],
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let channels: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
        let mut tx = self.begin_write().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(concat!(
            "UPDATE outbox SET next_attempt_at = $1 WHERE id IN (
                 SELECT id FROM outbox
                 WHERE delivered_at IS NULL AND next_attempt_at <= $2 AND channel IN ",
            text_list!(3),
            "
                 ORDER BY next_attempt_at, id LIMIT $4",
            skip_locked!(),
            ")
             RETURNING ",
            outbox_columns!()
        ))
        .bind(stamp(now + lease))
        .bind(stamp(now))
        .bind(texts(&channels)?)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await?;
        let mut items = rows.into_iter().map(OutboxRow::into_item).collect::<Result<Vec<_>, _>>()?;
        items.sort_by_key(|item| item.id);
        Ok(items)
    }

    async fn mark_delivered(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, last_error = NULL WHERE id = $2")
            .bind(stamp(at))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await?;
        Ok(())
    }

    async fn mark_failed(&self, id: i64, error: &str, next_attempt: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2 WHERE id = $3")
            .bind(error)
            .bind(stamp(next_attempt))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await?;
        Ok(())
    }

    async fn notify_once(
        &self,
        account: &str,
        topic: &str,
        notification: &Notification,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let added = super::usage::notify_recipients(&mut tx, account, topic, notification, at).await?;
        tx.commit().await?;
        Ok(added)
    }

    async fn notifications_pending(&self) -> Result<u64, StoreError> {
        let pending: i64 =
            sqlx::query_scalar(super::counts::PENDING_NOTIFICATIONS).fetch_one(&self.pool).await.map_err(db)?;
        super::to_u64(pending, "pending notifications")
    }

    async fn notifications(&self, account: Option<&str>) -> Result<Vec<OutboxItem>, StoreError> {
        let rows: Vec<OutboxRow> = sqlx::query_as(select_outbox!("WHERE $1 IS NULL OR account_id = $2 ORDER BY id"))
            .bind(account)
            .bind(account)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.into_iter().map(OutboxRow::into_item).collect()
    }
}
