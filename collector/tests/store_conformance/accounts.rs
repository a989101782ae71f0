//! Accounts, their checked changes (R17), contract terms (R27) and recipients (R15).

use super::*;

pub(crate) async fn accounts_are_listed_and_updated_but_keep_their_partner<B: Backend>(backend: B) {
    let store = backend.open().await;
    store.add_account(&account("partner", None), term()).await.unwrap();
    store.add_account(&account("acme", Some("partner")), term()).await.unwrap();
    assert_eq!(store.account_ids().await.unwrap(), ["acme", "partner"]);
    let renamed = Account {
        name: "Acme Corp".into(),
        partner: None,
        eop_contact_email: Some("eop@acme.example".into()),
        ..account("acme", None)
    };
    assert!(store.update_account(&renamed).await.unwrap());
    let stored = store.account("acme").await.unwrap().unwrap();
    assert_eq!(stored, Account { partner: Some("partner".into()), ..renamed });
    assert!(!store.update_account(&account("ghost", None)).await.unwrap());
    assert_eq!(store.accounts().await.unwrap().len(), 2);
    assert_eq!(store.account("ghost").await.unwrap(), None);
}

/// R17 inside the store's transaction: a change that breaks it is not written; one that keeps
/// it is, and a new cap is a new policy version.
pub(crate) async fn a_checked_change_that_breaks_r17_writes_nothing<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    store.add_license(&pool("acme", RegionGroup::China, 100)).await.unwrap();
    let before = store.policy("sh").await.unwrap().unwrap();
    let mut sh = store.site("sh").await.unwrap().unwrap();

    sh.cap_bps = Some(200_000_000);
    let refused = store.apply_checked(&CapChange::UpdateSite(sh.clone()), at(12)).await.unwrap();
    assert!(matches!(refused.as_slice(), [CapViolation::OverPool { sum_bps: 200_000_000, .. }]), "{refused:?}");
    assert_eq!(store.site("sh").await.unwrap().unwrap().cap_bps, None, "nothing written");
    assert_eq!(store.policy("sh").await.unwrap().unwrap(), before);

    sh.cap_bps = Some(50_000_000);
    assert_eq!(store.apply_checked(&CapChange::UpdateSite(sh.clone()), at(12)).await.unwrap(), []);
    assert_eq!(store.site("sh").await.unwrap().unwrap(), sh);
    let after = store.policy("sh").await.unwrap().unwrap();
    assert!(after.version > before.version && after.cap_bps == Some(50_000_000), "{after:?}");
    let changed = store.policies_since(before.version).await.unwrap();
    assert_eq!(changed.iter().map(|p| p.site.as_str()).collect::<Vec<_>>(), ["sh"]);

    let report = PolicyReport { version: after.version, ok: true, detail: "shaped on wan0".into(), at: at(1) };
    store.record_policy_report("sh", &report).await.unwrap();
    assert_eq!(store.policy_report("sh").await.unwrap(), Some(report));
}

/// R27: terms are renewed without overlapping; a completed order's license (R24) ends with the
/// term in force on its start date, and a renewal extends none; without a term in force the
/// completion is refused and nothing moves.
pub(crate) async fn contract_terms_are_renewed_and_end_the_licenses_orders_make<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
    assert_eq!(store.contract_terms("acme").await.unwrap(), [term()]);
    assert_eq!(term().end, date(2026, 12, 31));
    let renewal = ContractTerm { start: date(2027, 1, 1), end: date(2027, 12, 31) };
    assert_eq!(store.set_contract_term("acme", renewal).await.unwrap(), Ok(None));
    assert_eq!(store.contract_terms("acme").await.unwrap(), [term(), renewal]);
    // Across both: refused, nothing changes.
    let across = ContractTerm { start: date(2026, 6, 1), end: date(2027, 5, 31) };
    assert_eq!(store.set_contract_term("acme", across).await.unwrap(), Err(vec![term(), renewal]));
    // Overlapping one: it replaces that one (a correction).
    let longer = ContractTerm { start: date(2026, 12, 1), end: date(2028, 6, 30) };
    assert_eq!(store.set_contract_term("acme", longer).await.unwrap(), Err(vec![term(), renewal]));
    let longer = ContractTerm { start: date(2027, 1, 1), end: date(2028, 6, 30) };
    assert_eq!(store.set_contract_term("acme", longer).await.unwrap(), Ok(Some(renewal)));
    assert_eq!(store.contract_terms("acme").await.unwrap(), [term(), longer]);

    let users = |start_date| Item::SdpUsers { start_date, region: SdpRegion::Global, quantity: 5 };
    let complete = async |item: Item, key: &str| {
        let new = NewOrder { items: vec![item], ..order(key, key, 1) };
        let Created::New(made) = store.create_order(&new).await.unwrap() else { panic!("not new") };
        let step = |to, actor, quote: Option<Quote>| Transition {
            account: "acme".into(),
            order: made.id,
            items: None,
            to,
            actor,
            actor_name: "someone".into(),
            quote,
            at: at(2),
            quote_mail: mail::quote,
        };
        store.transition_items(&step(ItemStatus::InProcess, Actor::Operator, None)).await.unwrap().unwrap();
        let quote = Quote { amount: "10.00".into(), currency: "USD".into() };
        let pending = step(ItemStatus::PendingConfirmation, Actor::Operator, Some(quote));
        store.transition_items(&pending).await.unwrap().unwrap();
        (made.id, store.transition_items(&step(ItemStatus::Completed, Actor::ContactPerson, None)).await.unwrap())
    };
    let (_, done) = complete(users(day()), "k1").await;
    assert_eq!(done.unwrap().status, ItemStatus::Completed);
    let licenses = store.licenses_of_account("acme").await.unwrap();
    let made: Vec<(LicenseKind, NaiveDate, NaiveDate)> =
        licenses.iter().map(|l| (l.terms.kind, l.terms.effective_from, l.terms.effective_to)).collect();
    assert_eq!(made, [(LicenseKind::ZtnaUsers, day(), date(2026, 12, 31))], "to the term's end, not a year on");
    let (_, done) = complete(users(date(2027, 3, 1)), "k2").await;
    assert_eq!(done.unwrap().status, ItemStatus::Completed);
    let ends: Vec<NaiveDate> =
        store.licenses_of_account("acme").await.unwrap().iter().map(|l| l.terms.effective_to).collect();
    assert_eq!(ends, [date(2026, 12, 31), date(2028, 6, 30)]);

    // After every term: refused, and the item stays where it was.
    let (id, refused) = complete(users(date(2029, 1, 1)), "k3").await;
    let item = store.order("acme", id).await.unwrap().unwrap().items[0].clone();
    assert_eq!(refused, Err(TransitionRefused::NoContractTerm { item: item.id, day: date(2029, 1, 1) }));
    assert_eq!(item.status, ItemStatus::PendingConfirmation);
    assert_eq!(store.licenses_of_account("acme").await.unwrap().len(), 2);
}

/// Recipients are added and removed once each, every change kept with who and when.
pub(crate) async fn recipient_changes_are_kept_with_who_and_when<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let ann = Recipient { channel: Channel::Email, address: "ann@acme.example".into() };
    let change = |added, hour| RecipientChange { recipient: ann.clone(), added, actor: "Ann Lee".into(), at: at(hour) };
    assert!(store.change_recipient("acme", &change(true, 1)).await.unwrap());
    assert!(!store.change_recipient("acme", &change(true, 2)).await.unwrap(), "already there");
    assert_eq!(store.recipients("acme").await.unwrap(), std::slice::from_ref(&ann));
    assert!(store.change_recipient("acme", &change(false, 3)).await.unwrap());
    assert!(!store.change_recipient("acme", &change(false, 4)).await.unwrap(), "already gone");
    assert!(store.recipients("acme").await.unwrap().is_empty());
    assert_eq!(store.recipient_changes("acme").await.unwrap(), [change(true, 1), change(false, 3)]);
    assert!(store.change_recipient("nobody", &change(true, 5)).await.is_err(), "an unknown account");
}
