//! Enrollment: the operator makes a one-time token for a site ([`enroll_token`]); over QUIC, a
//! socket without a certificate redeems it and gets one; a site's certificates are revoked
//! ([`revoke_site`]).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tally_common::token::EnrollToken;
use tally_common::wire::{CollectorMessage, EnrollRequest, Enrolled, ErrorCode};

use super::CERTIFICATE_YEARS;
use super::frames::{refuse, send, tell_collectors};
use crate::accounts::{ChangeError, invalid};
use crate::agents::ca::{Ca, CertificateRequest};
use crate::digest::{random_hex, sha256_hex};
use crate::store::Store;

/// Redeems the token, signs the request for the token's site, records the certificate, and
/// tells the agent the collectors it may use (`addresses`).
pub(super) async fn enroll<S: Store>(
    conn: &quinn::Connection,
    tx: &mut quinn::SendStream,
    store: &S,
    ca: &Ca,
    request: EnrollRequest,
    addresses: &[String],
) {
    let remote = conn.remote_address();
    let refused = |message: String| {
        tracing::warn!(%remote, %message, "enrollment refused");
        message
    };
    let csr = match CertificateRequest::from_der(&request.csr_der) {
        Ok(csr) => csr,
        Err(e) => {
            let message = refused(format!("the certificate request does not parse: {e}"));
            return refuse(conn, Some(tx), ErrorCode::EnrollmentRefused, message).await;
        }
    };
    let hash = sha256_hex(request.token_secret.as_bytes());
    let site = match store.redeem_enroll_token(&hash, crate::clock::now()).await {
        Ok(Ok(site)) => site,
        Ok(Err(why)) => {
            let message = refused(why.to_string());
            return refuse(conn, Some(tx), ErrorCode::EnrollmentRefused, message).await;
        }
        Err(e) => return refuse(conn, Some(tx), ErrorCode::Internal, e.to_string()).await,
    };
    let valid_until = (crate::clock::now() + TimeDelta::days(365 * CERTIFICATE_YEARS)).date_naive();
    let (cert_der, serial) = match ca.sign_request(csr, &site, valid_until) {
        Ok(signed) => signed,
        Err(e) => return refuse(conn, Some(tx), ErrorCode::Internal, format!("signing the certificate: {e}")).await,
    };
    let not_after = valid_until.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or_else(crate::clock::now);
    if let Err(e) = store.add_certificate(&serial, &site, not_after).await {
        return refuse(conn, Some(tx), ErrorCode::Internal, e.to_string()).await;
    }
    tracing::info!(%remote, %site, %serial, "socket enrolled");
    let answer = CollectorMessage::Enrolled(Enrolled { site, cert_der, ca_der: ca.cert_der().to_vec() });
    if send(tx, &answer).await.is_ok() && request.protocol_version >= 3 {
        let _ = tell_collectors(tx, addresses).await;
    }
    let _ = tx.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), tx.stopped()).await;
}

/// A one-time enrollment token for `site`, valid for `valid_for` from `now`. Only the secret's
/// hash is stored.
pub async fn enroll_token(
    store: &impl Store,
    ca: &Ca,
    site: &str,
    valid_for: TimeDelta,
    now: DateTime<Utc>,
) -> Result<EnrollToken, ChangeError> {
    if store.site(site).await?.is_none() {
        return Err(invalid(format!("site {site:?} does not exist")));
    }
    if valid_for <= TimeDelta::zero() {
        return Err(invalid("a token must be valid for at least an hour"));
    }
    let token = EnrollToken { secret: random_hex(32)?, ca_fingerprint: ca.fingerprint() };
    store.add_enroll_token(&sha256_hex(token.secret.as_bytes()), site, now + valid_for).await?;
    Ok(token)
}

/// Revokes every certificate of `site`: its agent is refused from its next connection on.
pub async fn revoke_site(store: &impl Store, site: &str, now: DateTime<Utc>) -> Result<u64, ChangeError> {
    if store.site(site).await?.is_none() {
        return Err(invalid(format!("site {site:?} does not exist")));
    }
    Ok(store.revoke_site(site, now).await?)
}
