//! Usage and over-usage: metered events, finalized months, over-usage and its resolutions.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use tally_common::kinds::LicenseKind;
use tally_common::time::Month;

use super::accounts::insert_license;
use super::{Backend, Conn, OverusageRow, db, refused_insert, now, parse, select_overusage, stamp, to_i64, to_u64};
use crate::store::{
    DeviceStore, EventsAdded, MeterCounts, MeterEvent, MonthEvent, MonthEvents, NewLicense, NewOverusage, Notification,
    Overusage, Resolution, StoreError, UnitsUpgrade, UsageStore,
};

impl UsageStore for Backend {
    async fn add_usage_events(&self, events: &[MeterEvent]) -> Result<EventsAdded, StoreError> {
        let mut tx = self.begin_write().await?;
        let received = now();
        let mut finalized: HashMap<&str, HashSet<String>> = HashMap::new();
        let mut added = EventsAdded::default();
        for e in events {
            let month = Month::containing(e.occurred_at.date_naive()).to_string();
            if !finalized.contains_key(e.account.as_str()) {
                let months: Vec<String> = sqlx::query_scalar(super::counts::FINALIZED_MONTHS)
                    .bind(&e.account)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db)?;
                finalized.insert(&e.account, months.into_iter().collect());
            }
            let late = finalized.get(e.account.as_str()).is_some_and(|months| months.contains(&month));
            let new = sqlx::query(
                "INSERT INTO usage_events
                     (id, account_id, meter, month, subject, region, quantity, counted, occurred_at, received_at, source)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&e.id)
            .bind(&e.account)
            .bind(e.meter.as_str())
            .bind(month)
            .bind(&e.subject)
            .bind(e.region.map(|r| r.as_str()))
            .bind(to_i64(e.quantity, "quantity")?)
            .bind(e.counted)
            .bind(stamp(e.occurred_at))
            .bind(&received)
            .bind(&e.source)
            .execute(&mut *tx)
            .await
            .map_err(refused_insert("usage event of account", &e.account, db))?
            .rows_affected()
                == 1;
            added.new += u64::from(new);
            added.late += u64::from(new && late);
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn events_received_after(
        &self,
        account: &str,
        month: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<(LicenseKind, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(super::counts::EVENTS_RECEIVED_AFTER)
            .bind(account)
            .bind(month)
            .bind(stamp(since))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.into_iter().map(|(meter, n)| Ok((parse(&meter, "meter")?, to_u64(n, "count")?))).collect()
    }

    async fn meter_counts(&self, account: &str, month: &str) -> Result<MeterCounts, StoreError> {
        // Plain reads of the month's counted events; the meters' rules are `MonthEvents::counts`.
        let rows: Vec<(String, String, Option<String>, i64, String, String)> = sqlx::query_as(
            "SELECT meter, subject, region, quantity, occurred_at, id FROM usage_events
             WHERE account_id = $1 AND month = $2 AND counted
               AND meter IN ('ztna_users', 'ai_security_users', 'dem_users', 'data_lake')",
        )
        .bind(account)
        .bind(month)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let events = rows
            .into_iter()
            .map(|(meter, subject, region, quantity, occurred_at, id)| {
                Ok(MonthEvent {
                    meter: parse(&meter, "meter")?,
                    region: region.map(|r| parse(&r, "ZTNA region")).transpose()?,
                    quantity: to_u64(quantity, "quantity")?,
                    subject,
                    occurred_at,
                    id,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        MonthEvents(events).counts(self.month_devices(account, month).await?.count())
    }

    async fn finalized_at(&self, account: &str, month: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<String> =
            sqlx::query_scalar("SELECT finalized_at FROM finalized_months WHERE account_id = $1 AND month = $2")
                .bind(account)
                .bind(month)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        at.map(|at| parse(&at, "finalized_at")).transpose()
    }

    async fn finalized_report(
        &self,
        account: &str,
        month: &str,
    ) -> Result<Option<(DateTime<Utc>, String)>, StoreError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT finalized_at, report FROM finalized_months WHERE account_id = $1 AND month = $2")
                .bind(account)
                .bind(month)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        row.map(|(at, report)| Ok((parse(&at, "finalized_at")?, report))).transpose()
    }

    async fn finalize_month(
        &self,
        account: &str,
        month: &str,
        at: DateTime<Utc>,
        report: &str,
        overusage: &[NewOverusage],
        notification: Option<&Notification>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO finalized_months (account_id, month, finalized_at, report) VALUES ($1, $2, $3, $4)
             ON CONFLICT (account_id, month) DO NOTHING",
        )
        .bind(account)
        .bind(month)
        .bind(stamp(at))
        .bind(report)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if inserted == 1 {
            for o in overusage {
                let flags: Vec<&str> = o.flags.iter().map(|f| f.as_str()).collect();
                sqlx::query(
                    "INSERT INTO overusages
                         (account_id, month, license, region, measured, licensed, excess, flags, created_at, required_purchase)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(account)
                .bind(month)
                .bind(o.license.as_str())
                .bind(o.region.as_deref().unwrap_or(""))
                .bind(to_i64(o.measured, "measured")?)
                .bind(to_i64(o.licensed, "licensed")?)
                .bind(to_i64(o.excess, "excess")?)
                .bind(flags.join(","))
                .bind(stamp(at))
                .bind(to_i64(o.required_purchase, "required purchase")?)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            if let Some(n) = notification {
                notify_recipients(&mut tx, account, month, n, at).await?;
            }
        }
        tx.commit().await?;
        Ok(inserted == 1)
    }

    async fn finalized_months(&self, account: &str) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(super::counts::FINALIZED_MONTHS).bind(account).fetch_all(&self.pool).await.map_err(db)
    }

    async fn overusages(&self, account: &str, month: &str) -> Result<Vec<Overusage>, StoreError> {
        let rows: Vec<OverusageRow> =
            sqlx::query_as(select_overusage!("WHERE o.account_id = $1 AND o.month = $2 ORDER BY o.id"))
                .bind(account)
                .bind(month)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.into_iter().map(OverusageRow::into_overusage).collect()
    }

    async fn overusages_before_units(&self) -> Result<Vec<Overusage>, StoreError> {
        let rows: Vec<OverusageRow> =
            sqlx::query_as(select_overusage!("WHERE o.required_purchase IS NULL ORDER BY o.id"))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.into_iter().map(OverusageRow::into_overusage).collect()
    }

    async fn upgrade_overusage_units(&self, id: i64, upgrade: &UnitsUpgrade) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let upgraded = sqlx::query(super::counts::UPGRADE_OVERUSAGE)
            .bind(id)
            .bind(to_i64(upgrade.required_purchase, "required purchase")?)
            .bind(upgrade.review.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected()
            == 1;
        if let (true, Some(quantity)) = (upgraded, upgrade.resolved_quantity) {
            sqlx::query(super::counts::UPGRADE_RESOLUTION)
                .bind(id)
                .bind(to_i64(quantity, "quantity")?)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await?;
        Ok(upgraded)
    }

    async fn overusages_to_review(&self) -> Result<Vec<Overusage>, StoreError> {
        let rows: Vec<OverusageRow> = sqlx::query_as(select_overusage!("WHERE o.review IS NOT NULL ORDER BY o.id"))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.into_iter().map(OverusageRow::into_overusage).collect()
    }

    async fn overusage(&self, id: i64) -> Result<Option<Overusage>, StoreError> {
        let row: Option<OverusageRow> = sqlx::query_as(select_overusage!("WHERE o.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(OverusageRow::into_overusage).transpose()
    }

    async fn resolve_overusage(
        &self,
        id: i64,
        resolution: &Resolution,
        new_license: Option<&NewLicense>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // The over-usage's row first: two resolutions on two collectors are decided one at a time.
        sqlx::query(concat!("SELECT id FROM overusages WHERE id = $1", for_update!()))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let resolved: Option<i64> = sqlx::query_scalar("SELECT overusage_id FROM resolutions WHERE overusage_id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if resolved.is_some() {
            tx.rollback().await?;
            return Ok(false);
        }
        let license_id = match new_license {
            Some(l) => Some(insert_license(&mut tx, l).await?),
            None => None,
        };
        sqlx::query(
            "INSERT INTO resolutions (overusage_id, kind, quantity, license_id, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(resolution.kind.as_str())
        .bind(to_i64(resolution.quantity, "quantity")?)
        .bind(license_id)
        .bind(stamp(resolution.at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Addresses `n` about `topic` to the account's recipients and its managing partner's (R15), in
/// the caller's transaction; a recipient already sent that topic is skipped. Returns the rows
/// added.
pub(super) async fn notify_recipients(
    conn: &mut Conn,
    account: &str,
    topic: &str,
    n: &Notification,
    at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let added = sqlx::query(
        "INSERT INTO outbox (account_id, topic, channel, recipient, subject, body, next_attempt_at)
         SELECT DISTINCT $1, $2, r.channel, r.address, $3, CASE r.channel WHEN 'email' THEN $4 ELSE $5 END, $6
         FROM notification_recipients r
         WHERE r.account_id = $7 OR r.account_id = (SELECT partner_id FROM accounts WHERE id = $8)
         ON CONFLICT (account_id, topic, channel, recipient) DO NOTHING",
    )
    .bind(account)
    .bind(topic)
    .bind(&n.subject)
    .bind(&n.text)
    .bind(&n.json)
    .bind(stamp(at))
    .bind(account)
    .bind(account)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(added.rows_affected())
}
