//! Tokens and certificates in SQLite.

use chrono::{DateTime, Utc};
use tally_common::time::rfc3339;

use super::{SqliteStore, db, insert_error, now, parse};
use crate::store::{AccessStore, ApiToken, CertificateRecord, Role, StoreError, TokenRecord, TokenRefusal};

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: i64,
    role: String,
    account_id: Option<String>,
    contact: bool,
    created_at: String,
    revoked_at: Option<String>,
}

impl AccessStore for SqliteStore {
    async fn add_api_token(
        &self,
        hash: &str,
        role: Role,
        account: Option<&str>,
        contact: bool,
    ) -> Result<i64, StoreError> {
        let id =
            sqlx::query("INSERT INTO api_tokens (hash, role, account_id, contact, created_at) VALUES (?, ?, ?, ?, ?)")
                .bind(hash)
                .bind(role.as_str())
                .bind(account)
                .bind(contact)
                .bind(now())
                .execute(&self.pool)
                .await
                .map_err(insert_error("token", account.unwrap_or("operator")))?
                .last_insert_rowid();
        Ok(id)
    }

    async fn api_token(&self, hash: &str) -> Result<Option<ApiToken>, StoreError> {
        let row: Option<(i64, String, Option<String>, bool, bool)> = sqlx::query_as(
            "SELECT id, role, account_id, contact, revoked_at IS NOT NULL FROM api_tokens WHERE hash = ?",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|(id, role, account, contact, revoked)| {
            Ok(ApiToken { id, role: parse(&role, "token role")?, account, contact, revoked })
        })
        .transpose()
    }

    async fn revoke_api_token(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?")
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn api_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows: Vec<TokenRow> =
            sqlx::query_as("SELECT id, role, account_id, contact, created_at, revoked_at FROM api_tokens ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.into_iter()
            .map(|r| {
                Ok(TokenRecord {
                    id: r.id,
                    role: parse(&r.role, "token role")?,
                    account: r.account_id,
                    contact: r.contact,
                    created_at: r.created_at,
                    revoked_at: r.revoked_at,
                })
            })
            .collect()
    }

    async fn add_enroll_token(
        &self,
        token_hash: &str,
        site: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO enrollment_tokens (token_hash, site_id, expires_at) VALUES (?, ?, ?)")
            .bind(token_hash)
            .bind(site)
            .bind(rfc3339(expires_at))
            .execute(&self.pool)
            .await
            .map_err(insert_error("enrollment token for site", site))?;
        Ok(())
    }

    async fn redeem_enroll_token(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<String, TokenRefusal>, StoreError> {
        let now = rfc3339(now);
        // One statement: two agents racing with the same token cannot both win.
        let site: Option<String> = sqlx::query_scalar(
            "UPDATE enrollment_tokens SET used_at = ?
             WHERE token_hash = ? AND used_at IS NULL AND expires_at > ? RETURNING site_id",
        )
        .bind(&now)
        .bind(token_hash)
        .bind(&now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some(site) = site {
            return Ok(Ok(site));
        }
        let used: Option<Option<String>> =
            sqlx::query_scalar("SELECT used_at FROM enrollment_tokens WHERE token_hash = ?")
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
        sqlx::query("INSERT INTO certificates (serial, site_id, not_after, created_at) VALUES (?, ?, ?, ?)")
            .bind(serial)
            .bind(site)
            .bind(rfc3339(not_after))
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(insert_error("certificate", serial))?;
        Ok(())
    }

    async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        let row: Option<(String, String, Option<String>)> =
            sqlx::query_as("SELECT serial, site_id, revoked_at FROM certificates WHERE serial = ?")
                .bind(serial)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(row.map(|(serial, site, revoked_at)| CertificateRecord { serial, site, revoked: revoked_at.is_some() }))
    }

    async fn revoke_site(&self, site: &str, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query("UPDATE certificates SET revoked_at = ? WHERE site_id = ? AND revoked_at IS NULL")
            .bind(rfc3339(now))
            .bind(site)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }
}
