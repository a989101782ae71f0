//! LAN devices (R29).

use chrono::{DateTime, NaiveDate, Utc};
use tally_common::lan::Mac;
use tally_common::time::Month;
use tally_common::wire::lan::LanDevice;

use super::{Backend, db, refused_insert, now, stamp};
use crate::store::{DeviceStore, LAN_DISCOVERY, MonthDevices, StoreError};

impl DeviceStore for Backend {
    async fn add_lan_sightings(
        &self,
        site: &str,
        day: NaiveDate,
        devices: &[LanDevice],
        own: &[Mac],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let (date, month) = (day.to_string(), Month::containing(day).to_string());
        let received = now();
        for device in devices {
            sqlx::query(concat!(
                "INSERT INTO lan_sightings (site_id, day, month, mac, first_seen, last_seen, via, received_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (site_id, day, mac) DO UPDATE SET first_seen = ",
                least!("lan_sightings.first_seen", "excluded.first_seen"),
                ", last_seen = ",
                greatest!("lan_sightings.last_seen", "excluded.last_seen")
            ))
            .bind(site)
            .bind(&date)
            .bind(&month)
            .bind(device.mac.to_string())
            .bind(stamp(DateTime::from_timestamp(device.first, 0).unwrap_or_default()))
            .bind(stamp(DateTime::from_timestamp(device.last, 0).unwrap_or_default()))
            .bind(device.via.name())
            .bind(&received)
            .execute(&mut *tx)
            .await
            .map_err(refused_insert("LAN sighting of site", site, db))?;
        }
        for mac in own {
            sqlx::query(concat!(
                "INSERT INTO socket_addresses (site_id, mac, reported_day) VALUES ($1, $2, $3)
                 ON CONFLICT (site_id, mac) DO UPDATE SET reported_day = ",
                greatest!("socket_addresses.reported_day", "excluded.reported_day")
            ))
            .bind(site)
            .bind(mac.to_string())
            .bind(&date)
            .execute(&mut *tx)
            .await
            .map_err(refused_insert("socket address of site", site, db))?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn month_devices(&self, account: &str, month: &str) -> Result<MonthDevices, StoreError> {
        // Plain reads; the meter's rule (one device across sources) is `MonthDevices::count`.
        let mut seen: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT DISTINCT subject, source FROM usage_events
             WHERE account_id = $1 AND month = $2 AND meter = 'devices' AND counted",
        )
        .bind(account)
        .bind(month)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let sighted: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT l.mac FROM lan_sightings l JOIN sites s ON s.id = l.site_id
             WHERE s.account_id = $1 AND l.month = $2",
        )
        .bind(account)
        .bind(month)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        seen.extend(sighted.into_iter().map(|mac| (mac, Some(LAN_DISCOVERY.to_owned()))));
        let sockets = sqlx::query_scalar(
            "SELECT DISTINCT a.mac FROM socket_addresses a JOIN sites s ON s.id = a.site_id WHERE s.account_id = $1",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(MonthDevices { seen, sockets })
    }

    async fn lan_sightings_received_after(
        &self,
        account: &str,
        month: &str,
        since: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let late: i64 = sqlx::query_scalar(super::counts::LAN_SIGHTINGS_RECEIVED_AFTER)
            .bind(account)
            .bind(month)
            .bind(stamp(since))
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        super::to_u64(late, "late LAN sightings")
    }

    async fn forget_lan_sightings_before(&self, day: NaiveDate) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let forgotten = sqlx::query("DELETE FROM lan_sightings WHERE day < $1")
            .bind(day.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        sqlx::query("DELETE FROM socket_addresses WHERE reported_day < $1")
            .bind(day.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await?;
        Ok(forgotten)
    }
}
