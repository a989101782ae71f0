//! The fuzz targets: each takes arbitrary bytes as a peer, a file or a request would hand them
//! over, and asserts what must hold whatever they are. A target never panics on bad input; a
//! panic is a bug found.

use chrono::{DateTime, NaiveDate, Utc};
use tally_collector::store::sqlite::SqliteStore;
use tally_collector::store::{Account, AccountStore, ContractTerm, Site};
use tally_common::kinds::SiteType;
use tally_common::region::{RegionGroup, RegionTable};
use tally_common::wire::frame::{DecodeError, decode, encode};
use tally_common::wire::{AgentMessage, CollectorMessage};

/// The wire's frame decoder, as both peers read it, frame after frame (wire protocol).
pub fn frame_decoder(data: &[u8]) {
    let mut rest = data;
    while let Ok((message, used)) = decode::<AgentMessage>(rest) {
        // Whatever decodes must encode back to the same message.
        let again = encode(&message).expect("a decoded message re-encodes");
        assert_eq!(decode::<AgentMessage>(&again).map(|(m, _)| m), Ok(message));
        rest = &rest[used..];
    }
    // "Incomplete" only ever asks for more bytes than it was given.
    if let Err(DecodeError::Incomplete { needed }) = decode::<AgentMessage>(rest) {
        assert!(needed > rest.len(), "incomplete, needing {needed} of the {} given", rest.len());
    }
    let _ = decode::<CollectorMessage>(data);
}

/// The LAN frame reader, as a capture socket hands frames over: whatever it identifies is a
/// device's address (R29).
pub fn lan_frame(frame: &[u8]) {
    if let Some((mac, _)) = tally_common::lan::identify(frame) {
        assert!(mac.is_device(), "{mac} names no device");
    }
}

/// The instant the events target's collector reads the clock at.
const EVENTS_NOW: &str = "2026-11-16T12:00:00Z";

/// The body of `POST /v1/usage/events` (R12, R13): read as the handler reads it; every event is
/// either kept or refused with its field named, and a kept one falls in the accepted times.
pub fn events_body(body: &[u8]) {
    let Ok(body) = tally_collector::api::body::object(body) else { return };
    let now: DateTime<Utc> = EVENTS_NOW.parse().expect("a fixed instant");
    let max_age = chrono::TimeDelta::days(62);
    let Ok(batch) = tally_collector::usage::events::parse_batch(&body, &RegionTable::builtin(), (now, max_age)) else {
        return;
    };
    let events = body["events"].as_array().map_or(0, Vec::len);
    assert_eq!(batch.good.len() + batch.errors.len(), events, "every event kept or refused, once");
    let (from, until) = tally_collector::usage::events::accepted_times(now, max_age);
    for (i, event) in &batch.good {
        assert!(*i < events);
        assert!(
            event.quantity <= tally_collector::usage::events::MAX_COUNT,
            "events[{i}] kept a count beyond 2^53 - 1"
        );
        assert!((from..=until).contains(&event.occurred_at), "events[{i}] kept at {}", event.occurred_at);
    }
    for error in &batch.errors {
        assert!(error.field.starts_with("events["), "{error:?}");
    }
}

/// `import-buckets --csv`: on a real SQLite store with site `hq`, a file is imported whole or
/// not at all, and a refusal names its lines.
pub fn csv_import(csv: &[u8]) {
    CSV_STORE.with(|store| {
        let CsvStore { runtime, store, reader, .. } = store;
        runtime.block_on(async {
            let before = stored(reader).await;
            match tally_collector::usage::import::import_buckets(store, "fuzz.csv", csv, 100_000_000_000, None).await {
                Ok(stats) => assert_eq!(stored(reader).await, before + stats.inserted),
                Err(e) => {
                    assert_eq!(stored(reader).await, before, "a refused file wrote nothing: {e}");
                    assert!(!e.to_string().is_empty());
                }
            }
        });
    });
}

/// The agent's configuration file: parsed, or refused with every error said.
pub fn agent_config(text: &[u8]) {
    let Ok(text) = std::str::from_utf8(text) else { return };
    if let Err(e) = tally_agent::config::parse(text) {
        assert!(!e.errors.is_empty() && !e.to_string().is_empty(), "{e:?}");
    }
}

/// The collector's configuration file (no environment): parsed, or refused with every error said.
pub fn collector_config(text: &[u8]) {
    let Ok(text) = std::str::from_utf8(text) else { return };
    if let Err(e) = tally_collector::config::parse_with(text, |_| None) {
        assert!(!e.errors.is_empty() && !e.to_string().is_empty(), "{e:?}");
    }
}

thread_local! {
    /// The CSV target's store, made once per thread.
    static CSV_STORE: CsvStore = csv_store();
}

/// A runtime, the store, a connection of its own to count what the store holds, its directory.
struct CsvStore {
    runtime: tokio::runtime::Runtime,
    store: SqliteStore,
    reader: sqlx::SqlitePool,
    _dir: tempfile::TempDir,
}

fn csv_store() -> CsvStore {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("tally.db");
    let (store, reader) = runtime.block_on(async {
        let store = SqliteStore::open(&path).await.expect("the store");
        add_hq(&store).await;
        let reader = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.expect("a reader");
        (store, reader)
    });
    CsvStore { runtime, store, reader, _dir: dir }
}

async fn add_hq(store: &SqliteStore) {
    let account = Account {
        id: "acme".into(),
        name: "Acme".into(),
        partner: None,
        eop_contact_name: None,
        eop_contact_email: None,
    };
    let start = NaiveDate::from_ymd_opt(2026, 1, 1).expect("a date");
    store.add_account(&account, ContractTerm::months_from(start, 12)).await.expect("account acme");
    let site = Site {
        id: "hq".into(),
        account: "acme".into(),
        name: "HQ".into(),
        country: "US".parse().expect("a country"),
        region_group: RegionGroup::Group1,
        site_type: SiteType::Socket,
        cap_bps: None,
    };
    store.add_site(&site).await.expect("site hq");
}

/// How many buckets the store holds (all of them acme's site's).
async fn stored(reader: &sqlx::SqlitePool) -> u64 {
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM buckets").fetch_one(reader).await.expect("counting buckets");
    u64::try_from(count).expect("a count")
}
