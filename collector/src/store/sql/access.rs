//! Tokens, enrollment tokens, certificates and console sessions.

use chrono::{DateTime, Utc};
use tally_common::time::rfc3339;

use super::{Backend, TokenRow, db, refused_insert, now, parse, select_token, stamp};
use crate::store::{AccessStore, ApiToken, CertificateRecord, ConsoleSession, Person, Role, StoreError, TokenRefusal};

impl AccessStore for Backend {
    async fn add_api_token(
        &self,
        hash: &str,
        role: Role,
        account: Option<&str>,
        contact: bool,
        person: Option<&Person>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let id = sqlx::query_scalar(
            "INSERT INTO api_tokens (hash, role, account_id, contact, created_at, person_name, person_email)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(hash)
        .bind(role.as_str())
        .bind(account)
        .bind(contact)
        .bind(now())
        .bind(person.map(|p| p.name.as_str()))
        .bind(person.map(|p| p.email.as_str()))
        .fetch_one(&mut *tx)
        .await
        .map_err(refused_insert("token", account.unwrap_or("operator"), db))?;
        tx.commit().await?;
        Ok(id)
    }

    async fn api_token(&self, hash: &str) -> Result<Option<ApiToken>, StoreError> {
        let row: Option<TokenRow> =
            sqlx::query_as(select_token!("WHERE hash = $1")).bind(hash).fetch_optional(&self.pool).await.map_err(db)?;
        row.map(TokenRow::into_token).transpose()
    }

    async fn revoke_api_token(&self, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE api_tokens SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        let rows: Vec<TokenRow> =
            sqlx::query_as(select_token!("ORDER BY id")).fetch_all(&self.pool).await.map_err(db)?;
        rows.into_iter().map(TokenRow::into_token).collect()
    }

    async fn add_enroll_token(
        &self,
        token_hash: &str,
        site: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO enrollment_tokens (token_hash, site_id, expires_at) VALUES ($1, $2, $3)")
            .bind(token_hash)
            .bind(site)
            .bind(rfc3339(expires_at))
            .execute(&mut *tx)
            .await
            .map_err(refused_insert("enrollment token for site", site, db))?;
        tx.commit().await?;
        Ok(())
    }

    async fn redeem_enroll_token(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<String, TokenRefusal>, StoreError> {
        let now = rfc3339(now);
        // One statement: two agents racing with the same token cannot both win.
        let mut tx = self.begin_write().await?;
        let site: Option<String> = sqlx::query_scalar(
            "UPDATE enrollment_tokens SET used_at = $1
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $3 RETURNING site_id",
        )
        .bind(&now)
        .bind(token_hash)
        .bind(&now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await?;
        if let Some(site) = site {
            return Ok(Ok(site));
        }
        let used: Option<Option<String>> =
            sqlx::query_scalar("SELECT used_at FROM enrollment_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(Err(match used {
            None => TokenRefusal::Unknown,
            Some(Some(_)) => TokenRefusal::Used,
            Some(None) => TokenRefusal::Expired,
        }))
    }

    async fn add_certificate(&self, serial: &str, site: &str, not_after: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO certificates (serial, site_id, not_after, created_at) VALUES ($1, $2, $3, $4)")
            .bind(serial)
            .bind(site)
            .bind(rfc3339(not_after))
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(refused_insert("certificate", serial, db))?;
        tx.commit().await?;
        Ok(())
    }

    async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        let row: Option<(String, String, Option<String>)> =
            sqlx::query_as("SELECT serial, site_id, revoked_at FROM certificates WHERE serial = $1")
                .bind(serial)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(row.map(|(serial, site, revoked_at)| CertificateRecord { serial, site, revoked: revoked_at.is_some() }))
    }

    async fn revoke_site(&self, site: &str, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE certificates SET revoked_at = $1 WHERE site_id = $2 AND revoked_at IS NULL")
            .bind(rfc3339(now))
            .bind(site)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn add_session(&self, id_hash: &str, session: &ConsoleSession, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
            .bind(stamp(now))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("INSERT INTO console_sessions (id_hash, token_hash, csrf, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(id_hash)
            .bind(&session.token_hash)
            .bind(&session.csrf)
            .bind(stamp(session.expires_at))
            .execute(&mut *tx)
            .await
            .map_err(refused_insert("console session", "(new)", db))?;
        tx.commit().await
    }

    async fn session(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<ConsoleSession>, StoreError> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT token_hash, csrf, expires_at FROM console_sessions WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(stamp(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|(token_hash, csrf, expires_at)| {
            Ok(ConsoleSession { token_hash, csrf, expires_at: parse(&expires_at, "session expiry")? })
        })
        .transpose()
    }

    async fn end_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }
}
