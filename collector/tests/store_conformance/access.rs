//! Access: enrollment tokens, certificates, API tokens, console sessions.

use super::*;

pub(crate) async fn an_enrollment_token_is_accepted_once_and_only_before_it_expires<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let now = at(12);
    store.add_enroll_token("fresh", "hq", now + TimeDelta::hours(24)).await.unwrap();
    store.add_enroll_token("stale", "hq", now - TimeDelta::seconds(1)).await.unwrap();
    assert_eq!(store.redeem_enroll_token("fresh", now).await.unwrap(), Ok("hq".to_owned()));
    assert_eq!(store.redeem_enroll_token("fresh", now).await.unwrap(), Err(TokenRefusal::Used));
    assert_eq!(store.redeem_enroll_token("stale", now).await.unwrap(), Err(TokenRefusal::Expired));
    assert_eq!(store.redeem_enroll_token("forged", now).await.unwrap(), Err(TokenRefusal::Unknown));
}

pub(crate) async fn revoking_a_site_revokes_its_certificates_only<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let later = at(0) + TimeDelta::days(365);
    store.add_certificate("01ab", "hq", later).await.unwrap();
    store.add_certificate("02cd", "sh", later).await.unwrap();
    assert_eq!(store.revoke_site("hq", at(1)).await.unwrap(), 1);
    assert_eq!(store.revoke_site("hq", at(2)).await.unwrap(), 0, "already revoked");
    assert!(store.certificate("01ab").await.unwrap().unwrap().revoked);
    assert!(!store.certificate("02cd").await.unwrap().unwrap().revoked);
    assert_eq!(store.certificate("ffff").await.unwrap(), None);
}

fn ann() -> Person {
    Person { name: "Ann Lee".into(), email: "ann@acme.example".into() }
}

pub(crate) async fn api_tokens_are_found_by_hash_and_revoked<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let operator = store.add_api_token("hash-op", Role::Operator, None, false, None).await.unwrap();
    let contact = store.add_api_token("hash-acme", Role::Customer, Some("acme"), true, Some(&ann())).await.unwrap();
    let found = store.api_token("hash-acme").await.unwrap().unwrap();
    assert_eq!(
        (found.id, found.role, found.account.as_deref(), found.contact, found.person),
        (contact, Role::Customer, Some("acme"), true, Some(ann()))
    );
    assert_eq!(store.api_token("hash-op").await.unwrap().unwrap().person, None);
    assert_eq!(store.api_token("unknown").await.unwrap(), None);
    assert!(store.revoke_api_token(operator).await.unwrap());
    assert!(store.api_token("hash-op").await.unwrap().unwrap().revoked());
    assert!(!store.revoke_api_token(9_999).await.unwrap());
    let listed = store.api_tokens().await.unwrap();
    assert_eq!(
        listed.iter().map(|t| (t.id, t.revoked_at.is_some())).collect::<Vec<_>>(),
        [(operator, true), (contact, false)]
    );
}

/// A console session is found by its hash until it expires or ends; starting one forgets the
/// expired.
pub(crate) async fn console_sessions_expire_and_end<B: Backend>(backend: B) {
    let store = backend.open().await;
    let session = |hours: i64| ConsoleSession {
        token_hash: "t".repeat(64),
        csrf: "c".repeat(64),
        expires_at: at(12) + TimeDelta::hours(hours),
    };
    store.add_session("short", &session(1), at(12)).await.unwrap();
    store.add_session("long", &session(12), at(12)).await.unwrap();
    assert_eq!(store.session("short", at(12)).await.unwrap(), Some(session(1)));
    assert_eq!(store.session("short", at(13)).await.unwrap(), None, "expired");
    assert_eq!(store.session("nobody", at(12)).await.unwrap(), None);
    assert!(store.end_session("long").await.unwrap());
    assert!(!store.end_session("long").await.unwrap());
    assert_eq!(store.session("long", at(12)).await.unwrap(), None, "ended");
    store.add_session("next", &session(30), at(14)).await.unwrap();
    assert!(!store.end_session("short").await.unwrap(), "the expired one was forgotten");
}
