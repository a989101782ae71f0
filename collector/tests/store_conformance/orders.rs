//! Orders: stored once per idempotency key, each transition all or nothing.

use super::*;

/// An idempotency key makes one order (R21): the same body again answers that order, another
/// body is refused; the confirmation e-mail is written with the order.
pub(crate) async fn an_order_is_stored_once_per_idempotency_key_with_its_confirmation<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let contact = Account { eop_contact_email: Some("eop@acme.example".into()), ..account("acme", None) };
    assert!(store.update_account(&contact).await.unwrap());
    let Created::New(made) = store.create_order(&order("k1", "h1", 4)).await.unwrap() else { panic!("not new") };
    assert_eq!((made.status, made.items.len()), (ItemStatus::Submitted, 1));
    assert_eq!(store.create_order(&order("k1", "h1", 4)).await.unwrap(), Created::Replayed(made.clone()));
    assert_eq!(store.create_order(&order("k1", "h2", 5)).await.unwrap(), Created::KeyReused);
    assert_eq!(store.order("acme", made.id).await.unwrap(), Some(made.clone()));
    assert_eq!(store.order("other", made.id).await.unwrap(), None, "orders are the account's own");

    let page = store.orders("acme", None, 0, 10).await.unwrap();
    let listed: serde_json::Value = serde_json::from_str(&page.json).unwrap();
    assert_eq!((listed[0]["id"].as_i64(), listed.as_array().unwrap().len()), (Some(made.id), 1));
    assert_eq!(page.next_after, None);
    let mailed: Vec<(String, String)> =
        store.notifications(Some("acme")).await.unwrap().into_iter().map(|n| (n.recipient, n.topic)).collect();
    assert_eq!(
        mailed,
        [("eop@acme.example".to_owned(), format!("order {}", made.id))],
        "one confirmation, to the contact"
    );
}

/// R22: a transition moves every chosen item or none.
pub(crate) async fn an_order_transition_is_all_or_nothing<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let mut two = order("k1", "h1", 4);
    two.items.push(Item::IpAddresses { start_date: day(), quantity: 2 });
    let Created::New(made) = store.create_order(&two).await.unwrap() else { panic!("not new") };
    let transition = |to, actor| Transition {
        account: "acme".into(),
        order: made.id,
        items: None,
        to,
        actor,
        actor_name: "someone".into(),
        quote: None,
        at: at(2),
        quote_mail: mail::quote,
    };
    let refused = store.transition_items(&transition(ItemStatus::InProcess, Actor::ContactPerson)).await.unwrap();
    assert!(matches!(refused, Err(TransitionRefused::Item { .. })), "{refused:?}");
    assert_eq!(store.order("acme", made.id).await.unwrap(), Some(made.clone()), "nothing moved");

    let moved = store.transition_items(&transition(ItemStatus::InProcess, Actor::Operator)).await.unwrap().unwrap();
    assert!(moved.items.iter().all(|i| i.status == ItemStatus::InProcess && i.history.len() == 2));
    assert_eq!(moved.status, ItemStatus::InProcess);
    let none = Transition { order: made.id + 1, ..transition(ItemStatus::Canceled, Actor::ContactPerson) };
    assert!(store.transition_items(&none).await.unwrap().is_err());
}
