//! A damaged store loses no closed bucket (issue 15, item 3): sled's recovery silently drops what
//! it cannot read, so the journal beside it puts those buckets back. Each damage the issue lists
//! is done to a real store holding 4 pending buckets; every time, the store opens, the 4 buckets
//! are pending again, and what was restored is counted (the agent logs it at ERROR).

mod support;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use tally_agent::store::Store;
use tally_common::bucket::Bucket;
use tally_common::time::BucketStart;

fn buckets() -> Vec<Bucket> {
    (0..4)
        .map(|k| Bucket {
            start: BucketStart::from_unix(1_791_331_200 + 300 * k).unwrap(),
            max_bps: 1_000 * (k as u64 + 1),
            samples: 60,
        })
        .collect()
}

/// Pseudo-random bytes (a fixed seed: a failure can be repeated).
fn noise(n: usize) -> Vec<u8> {
    let mut seed = 0x5eed_u64;
    (0..n)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 56) as u8
        })
        .collect()
}

fn damage(db: &Path, how: &str) {
    let len = std::fs::metadata(db).unwrap().len() as usize;
    match how {
        "64 random bytes at offset 100" => {
            let mut file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
            file.seek(SeekFrom::Start(100)).unwrap();
            file.write_all(&noise(64)).unwrap();
        }
        "the whole file random" => std::fs::write(db, noise(len)).unwrap(),
        "truncated to 1,000 bytes" => std::fs::OpenOptions::new().write(true).open(db).unwrap().set_len(1_000).unwrap(),
        "truncated to 0" => std::fs::OpenOptions::new().write(true).open(db).unwrap().set_len(0).unwrap(),
        "byte 20 flipped" => {
            let mut bytes = std::fs::read(db).unwrap();
            bytes[20] ^= 0xff;
            std::fs::write(db, bytes).unwrap();
        }
        "deleted" => std::fs::remove_file(db).unwrap(),
        other => unreachable!("{other}"),
    }
}

#[test]
fn every_damage_to_the_store_is_repaired_from_the_journal() {
    for how in [
        "64 random bytes at offset 100",
        "the whole file random",
        "truncated to 1,000 bytes",
        "truncated to 0",
        "byte 20 flipped",
        "deleted",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 1_000).unwrap().store;
        store.add_closed(&buckets()).unwrap();
        drop(store);

        damage(&dir.path().join("store/db"), how);
        let opened = Store::open(dir.path(), 1_000).unwrap_or_else(|e| panic!("{how}: the store did not open: {e}"));
        assert_eq!(opened.store.oldest_pending(100).unwrap(), buckets(), "{how}");
        assert_eq!(opened.journal_damaged, 0, "{how}");
        println!("{how}: {} restored, moved aside: {:?}", opened.restored, opened.moved_aside.map(|m| m.0));
        // And it keeps working: one more bucket closes, one is acknowledged.
        let mut store = opened.store;
        let next = Bucket { start: BucketStart::from_unix(1_791_331_200 + 300 * 4).unwrap(), max_bps: 9, samples: 60 };
        store.add_closed(&[next]).unwrap();
        store.delete_acknowledged(&buckets()[..1]).unwrap();
        drop(store);
        let store = Store::open(dir.path(), 1_000).unwrap().store;
        assert_eq!(store.oldest_pending(100).unwrap(), [&buckets()[1..], &[next]].concat(), "{how}, reopened");
    }
}

/// The real agent on a damaged store: one ERROR with the number restored, and measuring goes on.
#[test]
fn the_agent_says_what_it_restored_and_keeps_measuring() {
    let tree = support::FakeTree::new();
    tree.add("eth1", 2, Some(1_000));
    let config = tree.write_config(&["eth1"], "");
    let mut store = Store::open(&tree.state(), 1_000).unwrap().store;
    store.add_closed(&buckets()).unwrap();
    drop(store);
    damage(&tree.state().join("store/db"), "truncated to 0");

    let anchor = tally_agent::clock::ScaledClock::now_anchor();
    let log = tree.dir.path().join("agent.log");
    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_tally-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env(tally_agent::clock::TEST_CLOCK_VAR, format!("1791332400:{}:100", anchor.as_nanos()))
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !read().contains("bucket closed") {
        assert!(std::time::Instant::now() < deadline, "no bucket closed in 60 s:\n{}", read());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
    let text = read();
    let restored: Vec<&str> = text.lines().filter(|l| l.contains("restored from the journal")).collect();
    assert!(restored.len() == 1 && restored[0].contains("ERROR") && restored[0].contains("restored=4"), "{text}");
    let opened = text.lines().find(|l| l.contains("store opened")).unwrap();
    assert_eq!(support::field(opened, "pending"), Some("4"), "{opened}");
}
