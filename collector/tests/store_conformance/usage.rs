//! Usage: metered events, LAN devices (R29), a month finalized once with its over-usage (R9, R14),
//! resolutions (R16), the outbox (R15).

use super::*;

fn event(id: &str, meter: LicenseKind, subject: &str, hour: u32, region: Option<ZtnaRegion>) -> MeterEvent {
    MeterEvent {
        id: id.into(),
        account: "acme".into(),
        meter,
        occurred_at: at(hour),
        subject: subject.into(),
        region,
        quantity: 1,
        counted: true,
        source: None,
    }
}

/// Events are kept once by id; users are counted once, ZTNA users in the region of their latest
/// counted session (R12); the Data Lake's peak is its busiest hour (R13).
pub(crate) async fn usage_events_are_stored_once_and_counted_by_meter<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let ztna = LicenseKind::ZtnaUsers;
    let events = [
        event("e1", ztna, "ann", 1, Some(ZtnaRegion::General)),
        event("e2", ztna, "ann", 3, Some(ZtnaRegion::China)),
        event("e3", ztna, "bob", 2, Some(ZtnaRegion::General)),
        MeterEvent { counted: false, ..event("e4", ztna, "cid", 2, Some(ZtnaRegion::General)) },
        event("e5", LicenseKind::Devices, "laptop-1", 1, None),
        event("e6", LicenseKind::Devices, "laptop-1", 2, None),
        MeterEvent { quantity: 40, ..event("e7", LicenseKind::DataLake, "2026-10-07T01", 1, None) },
        MeterEvent { quantity: 90, ..event("e8", LicenseKind::DataLake, "2026-10-07T02", 2, None) },
    ];
    assert_eq!(store.add_usage_events(&events).await.unwrap(), EventsAdded { new: 8, late: 0 });
    let again = store.add_usage_events(&events[..2]).await.unwrap();
    assert_eq!(again, EventsAdded { new: 0, late: 0 }, "ids already stored");
    let counts = store.meter_counts("acme", "2026-10").await.unwrap();
    assert_eq!(counts.ztna_by_region, [(ZtnaRegion::China, 1), (ZtnaRegion::General, 1)], "by region name");
    assert_eq!((counts.devices.total, counts.data_lake_peak_hour, counts.dem_users), (1, 90, 0));
    assert_eq!(store.meter_counts("acme", "2026-11").await.unwrap(), Default::default());

    // R33: once October is finalized, a new event of October is late; a repeated one is not new.
    // (Stored times have milliseconds: what follows arrives in a later one.)
    let finalized_at = Utc::now();
    while Utc::now().timestamp_millis() == finalized_at.timestamp_millis() {
        std::hint::spin_loop();
    }
    assert!(store.finalize_month("acme", "2026-10", finalized_at, "{}", &[], None).await.unwrap());
    let late = [MeterEvent { quantity: 60, ..event("e9", LicenseKind::DataLake, "2026-10-07T01", 1, None) }];
    assert_eq!(store.add_usage_events(&late).await.unwrap(), EventsAdded { new: 1, late: 1 });
    assert_eq!(store.add_usage_events(&events[..1]).await.unwrap(), EventsAdded { new: 0, late: 0 });
    let received_late = store.events_received_after("acme", "2026-10", finalized_at).await.unwrap();
    assert_eq!(received_late, [(LicenseKind::DataLake, 1)]);
    assert_eq!(store.meter_counts("acme", "2026-10").await.unwrap().data_lake_peak_hour, 100, "stored and counted");
}

/// LAN sightings (R29) are merged per site, day and address; the device meter counts each
/// address once across the LAN and the API's events, never a socket's own (an HA peer seen on
/// the LAN); the addresses are forgotten after their retention, whole days at a time.
pub(crate) async fn lan_devices_count_once_across_sources_without_sockets_and_are_forgotten<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    let start = at(0).timestamp();
    let device = |last: u8, first: i64, seen: i64| LanDevice {
        mac: Mac([if last == 2 { 0x02 } else { 0x00 }, 0x1b, 0x21, 0, 0, last]),
        first: start + first,
        last: start + seen,
        via: Via::Arp,
    };
    let peer = Mac([0, 0x1b, 0x21, 0, 0, 0x99]);
    let sightings = [device(1, 10, 20), device(2, 30, 30), LanDevice { mac: peer, ..device(3, 40, 40) }];
    store.add_lan_sightings("hq", day(), &sightings, &[Mac([0, 0x1b, 0x21, 0, 0, 0x98])]).await.unwrap();
    // Sent again, and widened: merged, not added.
    store.add_lan_sightings("hq", day(), &[device(1, 5, 50)], &[]).await.unwrap();
    store.add_lan_sightings("sh", day(), &[], &[peer]).await.unwrap();
    assert!(store.add_lan_sightings("nowhere", day(), &sightings, &[]).await.is_err());
    let api = |id: &str, subject: &str, source: &str| MeterEvent {
        source: Some(source.into()),
        ..event(id, LicenseKind::Devices, subject, 3, None)
    };
    let events = [api("d1", "00-1B-21-00-00-01", "inline"), api("d2", "laptop-1", "inline")];
    store.add_usage_events(&events).await.unwrap();
    let devices = store.meter_counts("acme", "2026-10").await.unwrap().devices;
    let by_source: Vec<(&str, u64)> = devices.by_source.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    assert_eq!((devices.total, devices.locally_administered), (3, 1), "{devices:?}");
    assert_eq!(by_source, [("inline", 2), ("lan_discovery", 2)]);
    assert_eq!(store.meter_counts("acme", "2026-11").await.unwrap().devices.total, 0);
    // R33: what first arrives after a time is told apart; a merge keeps the first arrival.
    // (Stored times have milliseconds: what follows arrives in a later one.)
    let finalized_at = Utc::now();
    while Utc::now().timestamp_millis() == finalized_at.timestamp_millis() {
        std::hint::spin_loop();
    }
    assert_eq!(store.lan_sightings_received_after("acme", "2026-10", finalized_at).await.unwrap(), 0);
    store.add_lan_sightings("hq", day(), &[device(1, 5, 60), device(7, 5, 60)], &[]).await.unwrap();
    assert_eq!(
        store.lan_sightings_received_after("acme", "2026-10", finalized_at).await.unwrap(),
        1,
        "only the new one"
    );
    assert_eq!(store.lan_sightings_received_after("acme", "2026-11", finalized_at).await.unwrap(), 0);
    // Retention: the LAN's addresses of October go; the API's events are usage, and stay.
    assert_eq!(store.forget_lan_sightings_before(day()).await.unwrap(), 0);
    assert_eq!(store.forget_lan_sightings_before(NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()).await.unwrap(), 4);
    let devices = store.meter_counts("acme", "2026-10").await.unwrap().devices;
    assert_eq!((devices.total, devices.by_source.get("lan_discovery")), (2, None));
    assert!(store.month_devices("acme", "2026-10").await.unwrap().sockets.is_empty());
}

fn overusage() -> NewOverusage {
    NewOverusage {
        license: LicenseKind::BandwidthPool,
        region: Some("group1".into()),
        measured: 150,
        licensed: 100,
        excess: 50,
        required_purchase: 1,
        flags: vec![LicenseKind::PremiumSecurity],
    }
}

fn notification() -> Notification {
    Notification {
        subject: "Over-usage in 2026-10".into(),
        text: "plain".into(),
        json: "{\"month\":\"2026-10\"}".into(),
    }
}

/// R9 and R15: a month is finalized once, with its over-usage and one outbox row per recipient
/// of the account and of its managing partner, all in one transaction.
pub(crate) async fn a_month_is_finalized_once_with_its_overusage_and_notifications<B: Backend>(backend: B) {
    let store = backend.open().await;
    store.add_account(&account("partner", None), term()).await.unwrap();
    store.add_account(&account("acme", Some("partner")), term()).await.unwrap();
    add_recipient(&store, "acme", Channel::Email, "billing@acme.example").await;
    add_recipient(&store, "acme", Channel::Webhook, "https://hooks.acme.example/tally").await;
    add_recipient(&store, "partner", Channel::Email, "ops@partner.example").await;
    assert!(!add_recipient(&store, "acme", Channel::Email, "billing@acme.example").await, "already there");
    assert_eq!(store.finalized_report("acme", "2026-10").await.unwrap(), None);

    let saved = store
        .finalize_month("acme", "2026-10", at(1), "{\"v\":1}", &[overusage()], Some(&notification()))
        .await
        .unwrap();
    assert!(saved, "this call saved it");
    let (found, note) = ([overusage()], notification());
    let again = store.finalize_month("acme", "2026-10", at(2), "{\"v\":2}", &found, Some(&note)).await.unwrap();
    assert!(!again, "R30: only the first call saves it");
    let first = Some((at(1), "{\"v\":1}".to_owned()));
    assert_eq!(
        store.finalized_report("acme", "2026-10").await.unwrap(),
        first,
        "finalized once: the first report stays"
    );
    assert_eq!(store.finalized_months("acme").await.unwrap(), ["2026-10"]);
    assert!(store.overusages_before_units().await.unwrap().is_empty(), "R32: stored with its required purchase");
    assert!(store.finalized_months("partner").await.unwrap().is_empty());

    let found = store.overusages("acme", "2026-10").await.unwrap();
    assert_eq!(found.iter().map(|o| &o.found).collect::<Vec<_>>(), [&overusage()]);
    let outbox = store.notifications(Some("acme")).await.unwrap();
    let mut sent: Vec<(Channel, &str, &str)> =
        outbox.iter().map(|n| (n.channel, n.recipient.as_str(), n.body.as_str())).collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            (Channel::Email, "billing@acme.example", "plain"),
            (Channel::Email, "ops@partner.example", "plain"),
            (Channel::Webhook, "https://hooks.acme.example/tally", "{\"month\":\"2026-10\"}"),
        ]
    );
    assert!(outbox.iter().all(|n| n.topic == "2026-10" && n.subject == "Over-usage in 2026-10"));
}

/// R16: one resolution per over-usage; a True-Forward's license is written with it.
pub(crate) async fn an_overusage_is_resolved_once<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    store.finalize_month("acme", "2026-10", at(1), "{}", &[overusage()], None).await.unwrap();
    let id = store.overusages("acme", "2026-10").await.unwrap()[0].id;
    let resolution = Resolution { kind: ResolutionKind::TrueForward, quantity: 50, license_id: None, at: at(2) };
    let license = NewLicense { quantity: 150, ..pool("acme", RegionGroup::Group1, 0) };
    assert!(store.resolve_overusage(id, &resolution, Some(&license)).await.unwrap());
    let true_up = Resolution { kind: ResolutionKind::TrueUp, ..resolution.clone() };
    assert!(!store.resolve_overusage(id, &true_up, None).await.unwrap(), "resolved already");

    let resolved = store.overusage(id).await.unwrap().unwrap().resolution.unwrap();
    let licenses = store.licenses_of_account("acme").await.unwrap();
    assert_eq!(licenses.len(), 1, "only the True-Forward made a license");
    assert_eq!(resolved, Resolution { license_id: Some(licenses[0].id), ..resolution });
    assert_eq!(store.overusage(id + 1).await.unwrap(), None);
}

/// R15's delivery: due rows of the channels that can send, oldest first; a failure counts an
/// attempt and waits; a delivery is final.
pub(crate) async fn the_outbox_hands_out_what_is_due_and_keeps_attempts<B: Backend>(backend: B) {
    let store = seeded(&backend).await;
    add_recipient(&store, "acme", Channel::Email, "billing@acme.example").await;
    add_recipient(&store, "acme", Channel::Webhook, "https://hooks.acme.example/tally").await;
    store.finalize_month("acme", "2026-10", at(1), "{}", &[overusage()], Some(&notification())).await.unwrap();

    let lease = TimeDelta::minutes(15);
    let claim = |now, channels: &'static [Channel]| store.claim_due_notifications(now, lease, 10, channels);
    assert!(claim(at(0), &[Channel::Email, Channel::Webhook]).await.unwrap().is_empty());
    let due = claim(at(1), &[Channel::Email]).await.unwrap();
    assert_eq!(due.iter().map(|n| n.channel).collect::<Vec<_>>(), [Channel::Email], "only channels that can send");
    let email = due[0].id;
    // R30: a claimed row is the claimant's until its lease ends: then it is due again (its
    // claimant died), once.
    assert!(claim(at(1), &[Channel::Email]).await.unwrap().is_empty(), "claimed once");
    let after_lease = at(1) + lease;
    assert!(claim(after_lease - TimeDelta::seconds(1), &[Channel::Email]).await.unwrap().is_empty());
    assert_eq!(claim(after_lease, &[Channel::Email]).await.unwrap().iter().map(|n| n.id).collect::<Vec<_>>(), [email]);

    store.mark_failed(email, "connection refused", at(3)).await.unwrap();
    assert!(claim(at(2), &[Channel::Email]).await.unwrap().is_empty(), "waits for its retry");
    let retried = claim(at(3), &[Channel::Email]).await.unwrap();
    assert_eq!((retried[0].attempts, retried[0].last_error.as_deref()), (1, Some("connection refused")));

    store.mark_delivered(email, at(4)).await.unwrap();
    assert!(claim(at(5) + lease * 2, &[Channel::Email]).await.unwrap().is_empty(), "delivered: never again");
    let delivered = store.notifications(None).await.unwrap().into_iter().find(|n| n.id == email).unwrap();
    assert_eq!((delivered.attempts, delivered.delivered_at, delivered.last_error), (2, Some(at(4)), None));
}
