//! Accounts, sites and licenses.

use chrono::{DateTime, Utc};
use tally_common::enforcement::CapViolation;
use tally_common::region::{CountryCode, RegionGroup};

use super::{
    AccountRow, Backend, Conn, LicenseRow, SiteRow, bucket_start, db, refused_insert, now, parse, stamp, to_i64,
};

use crate::store::{
    Account, AccountLife, AccountStore, CapChange, ContractTerm, License, NewLicense, Site, SiteGroupSpan, StoreError,
};

async fn sites_of_account(conn: &mut Conn, account: &str) -> Result<Vec<Site>, StoreError> {
    let rows: Vec<SiteRow> = sqlx::query_as(
        "SELECT id, account_id, name, country, region_group, site_type, cap_bps FROM sites
         WHERE account_id = $1 ORDER BY id",
    )
    .bind(account)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    rows.into_iter().map(SiteRow::into_site).collect()
}

async fn licenses_of_account(conn: &mut Conn, account: &str) -> Result<Vec<License>, StoreError> {
    let rows: Vec<LicenseRow> = sqlx::query_as(
        "SELECT id, account_id, kind, region, quantity, block_size, per_unit, effective_from, effective_to
         FROM licenses WHERE account_id = $1 ORDER BY id",
    )
    .bind(account)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    rows.into_iter().map(LicenseRow::into_license).collect()
}

/// Keeps the site's cap in its history (R26) if its policy version is new, effective `at`.
async fn record_cap(conn: &mut Conn, site: &str, at: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO cap_history (site_id, effective_at, cap_bps, version)
         SELECT id, $1, cap_bps, policy_version FROM sites WHERE id = $2
         ON CONFLICT (site_id, version) DO NOTHING",
    )
    .bind(at)
    .bind(site)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

async fn insert_site(conn: &mut Conn, s: &Site, at: &str) -> Result<(), StoreError> {
    let cap = s.cap_bps.map(|c| to_i64(c, "cap")).transpose()?;
    sqlx::query(concat!(
        "INSERT INTO sites (id, account_id, name, country, region_group, site_type, cap_bps, created_at, policy_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, ",
        next_policy_version!(),
        ")"
    ))
    .bind(&s.id)
    .bind(&s.account)
    .bind(&s.name)
    .bind(s.country.as_str())
    .bind(s.region_group.as_str())
    .bind(s.site_type.as_str())
    .bind(cap)
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(refused_insert("site", &s.id, db))?;
    write_site_group(conn, &s.id, super::counts::SINCE_EVER, s.country, s.region_group).await?;
    record_cap(conn, &s.id, at).await
}

/// A site's country and group from `from` on (R31): the history from that day is replaced.
async fn write_site_group(
    conn: &mut Conn,
    site: &str,
    from: &str,
    country: CountryCode,
    group: RegionGroup,
) -> Result<(), StoreError> {
    sqlx::query(super::counts::SITE_GROUPS_FROM).bind(site).bind(from).execute(&mut *conn).await.map_err(db)?;
    sqlx::query(super::counts::SITE_GROUP)
        .bind(site)
        .bind(from)
        .bind(country.as_str())
        .bind(group.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

pub(super) async fn insert_license(conn: &mut Conn, l: &NewLicense) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO licenses (account_id, kind, region, quantity, block_size, per_unit, effective_from, effective_to, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(&l.account)
    .bind(l.kind.as_str())
    .bind(&l.region)
    .bind(to_i64(l.quantity, "quantity")?)
    .bind(l.block_size.map(|b| to_i64(b, "block size")).transpose()?)
    .bind(l.per_unit.map(|p| to_i64(p, "events per unit")).transpose()?)
    .bind(l.effective_from.to_string())
    .bind(l.effective_to.to_string())
    .bind(now())
    .fetch_one(conn)
    .await
    .map_err(refused_insert("license", &l.account, db))
}

async fn insert_term(conn: &mut Conn, account: &str, term: ContractTerm) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO contract_terms (account_id, term_start, term_end) VALUES ($1, $2, $3)")
        .bind(account)
        .bind(term.start.to_string())
        .bind(term.end.to_string())
        .execute(conn)
        .await
        .map_err(refused_insert("contract term of account", account, db))?;
    Ok(())
}

/// An account's contract terms, oldest first (R27).
pub(super) async fn terms(
    conn: impl sqlx::Executor<'_, Database = super::Db>,
    account: &str,
) -> Result<Vec<ContractTerm>, StoreError> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT term_start, term_end FROM contract_terms WHERE account_id = $1 ORDER BY term_start")
            .bind(account)
            .fetch_all(conn)
            .await
            .map_err(db)?;
    rows.iter()
        .map(|(start, end)| Ok(ContractTerm { start: parse(start, "term start")?, end: parse(end, "term end")? }))
        .collect()
}

impl AccountStore for Backend {
    async fn add_account(&self, a: &Account, term: ContractTerm) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO accounts (id, name, partner_id, eop_contact_name, eop_contact_email, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&a.id)
        .bind(&a.name)
        .bind(&a.partner)
        .bind(&a.eop_contact_name)
        .bind(&a.eop_contact_email)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(refused_insert("account", &a.id, db))?;
        insert_term(&mut tx, &a.id, term).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn contract_terms(&self, account: &str) -> Result<Vec<ContractTerm>, StoreError> {
        terms(&self.pool, account).await
    }

    async fn set_contract_term(
        &self,
        account: &str,
        term: ContractTerm,
    ) -> Result<Result<Option<ContractTerm>, Vec<ContractTerm>>, StoreError> {
        let mut tx = self.begin_write().await?;
        let overlapped: Vec<ContractTerm> =
            terms(&mut *tx, account).await?.into_iter().filter(|t| t.overlaps(&term)).collect();
        if overlapped.len() > 1 {
            return Ok(Err(overlapped));
        }
        if let Some(replaced) = overlapped.first() {
            sqlx::query("DELETE FROM contract_terms WHERE account_id = $1 AND term_start = $2")
                .bind(account)
                .bind(replaced.start.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        insert_term(&mut tx, account, term).await?;
        tx.commit().await?;
        Ok(Ok(overlapped.first().copied()))
    }

    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let row: Option<AccountRow> = sqlx::query_as(
            "SELECT id, name, partner_id, eop_contact_name, eop_contact_email FROM accounts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.map(Account::from))
    }

    async fn account_ids(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT id FROM accounts ORDER BY id").fetch_all(&self.pool).await.map_err(db)
    }

    async fn account_life(&self, id: &str) -> Result<Option<AccountLife>, StoreError> {
        // Each site's first bucket through its primary key, not a scan of the account's buckets.
        let row: Option<(String, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT created_at, (SELECT min(effective_from) FROM licenses WHERE account_id = $1),
                    (SELECT min((SELECT min(bucket_start) FROM buckets WHERE site_id = s.id))
                     FROM sites s WHERE s.account_id = $1)
             FROM accounts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some((created, first_license, first_bucket)) = row else { return Ok(None) };
        let created = parse::<DateTime<Utc>>(&created, "the time an account was created")?.date_naive();
        let first_license = first_license.map(|day| parse(&day, "a license's first day")).transpose()?;
        let first_bucket = first_bucket.map(|start| Ok::<_, StoreError>(bucket_start(start)?.day())).transpose()?;
        let since = [Some(created), first_license, first_bucket].into_iter().flatten().min().unwrap_or(created);
        Ok(Some(AccountLife { since, created }))
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows: Vec<AccountRow> = sqlx::query_as(
            "SELECT id, name, partner_id, eop_contact_name, eop_contact_email FROM accounts ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.into_iter().map(Account::from).collect())
    }

    async fn update_account(&self, a: &Account) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done =
            sqlx::query("UPDATE accounts SET name = $1, eop_contact_name = $2, eop_contact_email = $3 WHERE id = $4")
                .bind(&a.name)
                .bind(&a.eop_contact_name)
                .bind(&a.eop_contact_email)
                .bind(&a.id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_site(&self, s: &Site) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_site(&mut tx, s, &now()).await?;
        tx.commit().await
    }

    async fn site_groups(&self, account: &str) -> Result<Vec<SiteGroupSpan>, StoreError> {
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(super::counts::SITE_GROUPS_OF_ACCOUNT)
            .bind(account)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        super::site_group_spans(rows)
    }

    async fn site(&self, id: &str) -> Result<Option<Site>, StoreError> {
        let row: Option<SiteRow> = sqlx::query_as(
            "SELECT id, account_id, name, country, region_group, site_type, cap_bps FROM sites WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(SiteRow::into_site).transpose()
    }

    async fn apply_checked(&self, change: &CapChange, at: DateTime<Utc>) -> Result<Vec<CapViolation>, StoreError> {
        let day = at.date_naive();
        let mut tx = self.begin_write().await?;
        let account = match change {
            CapChange::AddSite(site) | CapChange::UpdateSite(site) | CapChange::MoveSite { site, .. } => {
                site.account.clone()
            }
            CapChange::UpdateLicense { id, .. } | CapChange::ChangeLicenseFrom { id, .. } => {
                sqlx::query_scalar("SELECT account_id FROM licenses WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?
                    .ok_or_else(|| StoreError::NotFound { what: "license", id: id.to_string() })?
            }
        };
        // The account's lock first: two changes to one account, on any collectors, never both
        // pass the check against the old state (R30).
        lock_account(&mut tx, &account).await?;
        let mut sites = sites_of_account(&mut tx, &account).await?;
        let mut licenses = licenses_of_account(&mut tx, &account).await?;
        let mut later = None;
        match change {
            CapChange::AddSite(site) => sites.push(site.clone()),
            CapChange::UpdateSite(site) | CapChange::MoveSite { site, .. } => {
                match sites.iter_mut().find(|s| s.id == site.id) {
                    Some(stored) => *stored = site.clone(),
                    None => return Err(StoreError::NotFound { what: "site", id: site.id.clone() }),
                }
            }
            CapChange::UpdateLicense { id, .. } | CapChange::ChangeLicenseFrom { id, .. } => {
                later = licenses.iter().find(|l| l.id == *id).and_then(|l| change.later_license(l));
                change.apply_to_licenses(&mut licenses);
            }
        }
        let violations = crate::store::cap_violations(&sites, &licenses, day)?;
        if !violations.is_empty() {
            tx.rollback().await?;
            return Ok(violations);
        }
        match change {
            CapChange::AddSite(site) => insert_site(&mut tx, site, &stamp(at)).await?,
            CapChange::UpdateSite(site) | CapChange::MoveSite { site, .. } => {
                if let CapChange::MoveSite { from, .. } = change {
                    write_site_group(&mut tx, &site.id, &from.to_string(), site.country, site.region_group).await?;
                }
                let cap = site.cap_bps.map(|c| to_i64(c, "cap")).transpose()?;
                // A new cap is a new policy version (pushed to the agent).
                sqlx::query(concat!(
                    "UPDATE sites SET country = $1, region_group = $2, site_type = $3,
                         policy_version = CASE WHEN cap_bps IS NOT DISTINCT FROM $4 THEN policy_version
                                          ELSE ",
                    next_policy_version!(),
                    " END,
                         cap_bps = $4
                     WHERE id = $5"
                ))
                .bind(site.country.as_str())
                .bind(site.region_group.as_str())
                .bind(site.site_type.as_str())
                .bind(cap)
                .bind(&site.id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                record_cap(&mut tx, &site.id, &stamp(at)).await?;
            }
            CapChange::ChangeLicenseFrom { id, from, .. } => {
                sqlx::query("UPDATE licenses SET effective_to = $1 WHERE id = $2")
                    .bind(from.pred_opt().unwrap_or(*from).to_string())
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                if let Some(later) = &later {
                    insert_license(&mut tx, later).await?;
                }
            }
            CapChange::UpdateLicense { id, quantity, effective_to } => {
                sqlx::query("UPDATE licenses SET quantity = $1, effective_to = $2 WHERE id = $3")
                    .bind(to_i64(*quantity, "quantity")?)
                    .bind(effective_to.to_string())
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
        }
        tx.commit().await?;
        Ok(Vec::new())
    }

    async fn add_license(&self, l: &NewLicense) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let id = insert_license(&mut tx, l).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn sites_of_account(&self, account: &str) -> Result<Vec<Site>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        sites_of_account(&mut conn, account).await
    }

    async fn licenses_of_account(&self, account: &str) -> Result<Vec<License>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        licenses_of_account(&mut conn, account).await
    }
}

/// Locks `account`'s row until the transaction ends: the changes that must be decided one at a
/// time per account (R17's checks, orders and their idempotency keys) take it first, whichever
/// collector runs them (on SQLite, every write transaction holds the database's lock already).
pub(super) async fn lock_account(conn: &mut Conn, account: &str) -> Result<(), StoreError> {
    sqlx::query(concat!("SELECT id FROM accounts WHERE id = $1", for_update!()))
        .bind(account)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}
