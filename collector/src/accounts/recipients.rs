//! Where an account's notifications go (R15): what a valid recipient is, who may change them,
//! and every change kept with who made it and when. The command line, the API and the console
//! all change recipients through here.

use chrono::{DateTime, Utc};

use super::tenancy::may_see;
use crate::net::webhook_target::{Resolve, Vetting, WebhookTargets};
use crate::store::{Account, Channel, Recipient, RecipientChange, Role, Store, StoreError};
use crate::validation::FieldError;

/// A recipient from its channel's name and address: an e-mail address, or an http(s) URL that
/// receives the signed JSON document. Errors name the field (`channel`, `address`).
pub fn parse(channel: &str, address: &str) -> Result<Recipient, FieldError> {
    let channel: Channel =
        channel.parse().map_err(|_| FieldError::new("channel", format!("{channel:?}: expected email or webhook")))?;
    let address = address.trim();
    let valid = match channel {
        // RFC 5321's longest address.
        Channel::Email => address.len() <= 254 && address.parse::<lettre::Address>().is_ok(),
        Channel::Webhook => {
            address.len() <= 2_000
                && address
                    .parse::<axum::http::Uri>()
                    .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
        }
    };
    if !valid {
        let expected = match channel {
            Channel::Email => "an e-mail address",
            Channel::Webhook => "an http:// or https:// URL",
        };
        // The schema says "a string"; which strings are addresses is this rule's.
        return Err(FieldError::by_rule("address", format!("{address:?}: expected {expected}")));
    }
    Ok(Recipient { channel, address: address.to_owned() })
}

/// Whether `recipient` may be added: a webhook whose host is, or resolves to, an address
/// webhooks never go to is refused naming `address`. A name that does not resolve now is
/// accepted: each delivery checks again.
pub async fn check_target(
    recipient: &Recipient,
    targets: &WebhookTargets,
    resolve: &impl Resolve,
) -> Result<(), FieldError> {
    if recipient.channel != Channel::Webhook {
        return Ok(());
    }
    let Ok(uri) = recipient.address.parse::<axum::http::Uri>() else { return Ok(()) };
    let (Some(host), port) = (uri.host(), uri.port_u16().unwrap_or(80)) else { return Ok(()) };
    let vetted = tokio::time::timeout(std::time::Duration::from_secs(2), targets.vet(host, port, resolve)).await;
    match vetted {
        Ok(Err(Vetting::Refused(why))) => Err(FieldError::by_rule("address", why)),
        _ => Ok(()),
    }
}

/// Whether a caller may change `account`'s recipients: an operator, the account's contact
/// person, or a partner for its own account and its sub-accounts.
pub fn may_change(role: Role, own: Option<&str>, contact: bool, account: &Account) -> bool {
    may_see(role, own, account) && (role != Role::Customer || contact)
}

/// Adds (`added`) or removes `recipient` of `account` as `actor`; false when there was nothing
/// to change.
pub async fn change(
    store: &impl Store,
    account: &str,
    recipient: Recipient,
    added: bool,
    actor: &str,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let change = RecipientChange { recipient, added, actor: actor.to_owned(), at };
    let changed = store.change_recipient(account, &change).await?;
    if changed {
        let (channel, address) = (change.recipient.channel.as_str(), &change.recipient.address);
        tracing::info!(account, channel, %address, added, actor, "notification recipients changed");
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_an_address_or_an_http_url() {
        assert_eq!(parse("email", " ann@acme.example ").unwrap().address, "ann@acme.example");
        assert_eq!(parse("webhook", "https://hooks.acme.example/t").unwrap().channel, Channel::Webhook);
        assert_eq!(parse("email", "ann").unwrap_err().field, "address");
        assert_eq!(parse("webhook", "ftp://x").unwrap_err().field, "address");
        assert_eq!(parse("pigeon", "x").unwrap_err().field, "channel");
    }

    #[test]
    fn the_contact_person_partners_and_operators_may_change_recipients() {
        let sub = Account {
            id: "sub".into(),
            name: "Sub".into(),
            partner: Some("reseller".into()),
            eop_contact_name: None,
            eop_contact_email: None,
        };
        assert!(may_change(Role::Operator, None, false, &sub));
        assert!(may_change(Role::Customer, Some("sub"), true, &sub));
        assert!(!may_change(Role::Customer, Some("sub"), false, &sub), "not the contact person");
        assert!(may_change(Role::Partner, Some("reseller"), false, &sub));
        assert!(!may_change(Role::Partner, Some("other"), true, &sub));
        assert!(!may_change(Role::Customer, Some("other"), true, &sub));
    }
}
