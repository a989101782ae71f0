//! Moving a store. `migrate-store` (R30): an SQLite store holding a generated month, copied into
//! PostgreSQL, answers every account's reports exactly as before; a target that is not empty is
//! refused. `backup` while `serve` runs and `restore` into a new data directory: the same
//! reports and the same CA; a data directory in use and a damaged backup are refused.

mod support;

use support::pg_cluster;
use support::{Collector, args};
use tally_testkit::skip;

/// Two accounts, one managed by a partner, sites in two region groups (one capped), October 2026
/// and half of November in buckets (a different curve per site).
fn generated_month(c: &Collector) {
    c.ok(&args("account add --id partner --name Partner"));
    c.ok(&args("account add --id acme --name Acme --eop-contact-name Ann --eop-contact-email ann@acme.test"));
    c.ok(&args("account add --id beta --name Beta --partner partner"));
    for (account, region, mbps) in [("acme", "group1", 300), ("acme", "china", 20), ("beta", "group1", 1_000)] {
        c.ok(&args(&format!(
            "license add --account {account} --kind bandwidth_pool --region {region} --quantity {mbps} --from \
             2026-01-01 --to 2026-12-31"
        )));
    }
    for (account, site, country) in [("acme", "hq", "US"), ("acme", "ber", "DE"), ("beta", "nyc", "US")] {
        c.ok(&args(&format!(
            "site add --account {account} --id {site} --name {site} --country {country} --type socket"
        )));
    }
    // A stand-alone country's site has a cap (R17): its history moves too.
    c.ok(&args("site add --account acme --id sh --name sh --country CN --type socket --cap-mbps 20"));
    let mut csv = String::from("site,bucket_start,max_bps,samples\n");
    let october = 1_790_812_800; // 2026-10-01T00:00:00Z
    for (n, site) in ["hq", "ber", "sh", "nyc"].into_iter().enumerate() {
        // One bucket an hour: enough for the reports to differ by site and day.
        for slot in (0..46 * 288).step_by(12) {
            let start = chrono::DateTime::from_timestamp(october + slot * 300, 0).unwrap();
            let start = start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let bps = (slot * 7_919 + n as i64 * 104_729) % 250_000_000;
            csv += &format!("{site},{start},{bps},60\n");
        }
    }
    let file = c.file("month.csv", &csv);
    c.ok(&["import-buckets", "--csv", &file]);
}

/// Every account's reports, without the time each was generated.
fn reports(c: &Collector) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    // The partner itself has nothing before its creation in November (R28).
    for (account, month) in
        [("acme", "2026-10"), ("acme", "2026-11"), ("beta", "2026-10"), ("beta", "2026-11"), ("partner", "2026-11")]
    {
        let out = c.ok(&args(&format!("report --account {account} --month {month} --format json")));
        let mut report: serde_json::Value = serde_json::from_str(&out).unwrap();
        report.as_object_mut().unwrap().remove("generated_at");
        all.push(report);
    }
    all
}

#[test]
fn a_store_moved_to_postgres_reports_every_account_as_before() {
    let cluster = match pg_cluster::cluster() {
        Ok(cluster) => cluster,
        Err(why) => return skip!(&why),
    };
    let c = Collector::new().at(support::MID_NOVEMBER_2026);
    assert!(c.database_url.is_none(), "the source is SQLite");
    generated_month(&c);
    // The engine finalizes October (R34): the saved report moves with the store.
    c.ok(&["engine", "--once"]);
    let before = reports(&c);
    assert_eq!(before[0]["status"], "finalized");

    let url = cluster.database();
    let from = format!("sqlite://{}", c.data_file("tally.db").display());
    let out = c.ok(&["migrate-store", "--from", &from, "--to", &url]);
    assert!(out.contains("every table's count matches, buckets SHA-256"), "{out}");
    let buckets = out.lines().find(|l| l.starts_with("buckets ")).unwrap();
    assert_eq!(buckets.split_whitespace().nth(1), Some((4 * 46 * 24).to_string().as_str()), "{out}");

    // The same collector, now on PostgreSQL with the CA it had.
    c.configure(&format!("database_url = {url:?}\nca_dir = {:?}", c.data_file("ca")));
    assert_same(&reports(&c), &before);

    // A second copy into the same database is refused, and changes nothing.
    let refused = c.fails(&["migrate-store", "--from", &from, "--to", &url]);
    assert!(refused.contains("the target store is not empty (3 account(s))"), "{refused}");
    assert_same(&reports(&c), &before);
    let missing = c.fails(&["migrate-store", "--from", "sqlite:///nowhere/tally.db", "--to", &url]);
    assert!(missing.contains("expected sqlite://PATH naming an existing store"), "{missing}");
}

#[test]
fn a_backup_taken_while_serving_restores_every_report_and_the_ca() {
    let c = Collector::on(None, "").at(support::MID_NOVEMBER_2026);
    generated_month(&c);
    let before = reports(&c);
    let fingerprint = |c: &Collector| c.ok(&["ca", "init"]).lines().last().unwrap().to_owned();
    let ca = fingerprint(&c);
    let backup = c.dir.path().join("tally.backup").display().to_string();
    {
        let _serving = c.serve();
        let out = c.ok(&["backup", "--to", &backup]);
        assert!(out.contains("the store and the CA (") && out.contains("ca.key"), "{out}");
    }

    let restored = Collector::on(None, "").at(support::MID_NOVEMBER_2026);
    let out = restored.ok(&["restore", "--from", &backup]);
    assert!(out.starts_with("restored tally.db, ca/"), "{out}");
    assert_same(&reports(&restored), &before);
    assert_eq!(fingerprint(&restored), ca, "the same CA: enrolled agents keep working");

    // A data directory in use is never overwritten; a damaged backup restores nothing.
    let refused = restored.fails(&["restore", "--from", &backup]);
    assert!(refused.contains("tally.db exists: restore into a new data_dir"), "{refused}");
    let damaged = c.file("damaged.backup", "");
    std::fs::write(&damaged, &std::fs::read(&backup).unwrap()[..2_000]).unwrap();
    let empty = Collector::on(None, "").at(support::MID_NOVEMBER_2026);
    let refused = empty.fails(&["restore", "--from", &damaged]);
    assert!(refused.contains("damaged"), "{refused}");
    assert!(!empty.data_file("tally.db").exists() && !empty.data_file("ca").exists(), "nothing restored");
    empty.ok(&["restore", "--from", &backup]);
    assert_same(&reports(&empty), &before);
}

/// The reports are the same; else the first field that differs.
fn assert_same(after: &[serde_json::Value], before: &[serde_json::Value]) {
    for (after, before) in after.iter().zip(before) {
        if after != before {
            let (a, b) = (after.as_object().unwrap(), before.as_object().unwrap());
            let key = b.keys().chain(a.keys()).find(|k| a.get(*k) != b.get(*k)).unwrap();
            panic!(
                "{} {}: {key} was {} and is {}",
                before["account"],
                before["month"],
                b.get(key).unwrap_or(&serde_json::Value::Null),
                a.get(key).unwrap_or(&serde_json::Value::Null)
            );
        }
    }
    assert_eq!(after.len(), before.len());
}

/// What a backup holds, read back from one `backup` wrote.
struct Parts {
    database: Vec<u8>,
    ca_pem: Vec<u8>,
    ca_key: Vec<u8>,
}

impl Parts {
    fn of(backup: &str) -> Parts {
        let mut archive = tar::Archive::new(std::fs::File::open(backup).unwrap());
        let mut files = std::collections::BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            files.insert(name, bytes);
        }
        let mut take = |name: &str| files.remove(name).unwrap_or_else(|| panic!("{name} in the backup"));
        Parts { database: take("tally.db"), ca_pem: take("ca/ca.pem"), ca_key: take("ca/ca.key") }
    }
}

/// A hand-made backup: its entries, in order.
type Backup<'a> = Vec<(&'static str, Entry<'a>)>;

/// An entry of a hand-made backup.
enum Entry<'a> {
    File(&'a [u8]),
    Symlink(&'a str),
    HardLink(&'a str),
    /// A regular file whose header claims this size, and no content.
    Claims(u64),
    /// A GNU sparse file, the way a 20 GiB hole is written.
    Sparse,
}

fn hand_made(path: &std::path::Path, entries: &[(&'static str, Entry)]) {
    use std::io::Write;
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, entry) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o600);
        match entry {
            Entry::File(bytes) => {
                header.set_size(bytes.len() as u64);
                tar.append_data(&mut header, name, *bytes).unwrap();
            }
            Entry::Symlink(target) | Entry::HardLink(target) => {
                let kind =
                    if matches!(entry, Entry::Symlink(_)) { tar::EntryType::Symlink } else { tar::EntryType::Link };
                header.set_entry_type(kind);
                header.set_size(0);
                tar.append_link(&mut header, name, target).unwrap();
            }
            Entry::Claims(size) => {
                header.set_path(name).unwrap();
                header.set_size(*size);
                header.set_cksum();
                tar.get_mut().write_all(header.as_bytes()).unwrap();
            }
            Entry::Sparse => {
                header.set_entry_type(tar::EntryType::GNUSparse);
                header.set_size(0);
                // 20 GiB: too large for octal, in GNU's base-256.
                let mut real_size = [0u8; 12];
                real_size[0] = 0x80;
                real_size[4..].copy_from_slice(&(20u64 << 30).to_be_bytes());
                let gnu = header.as_gnu_mut().unwrap();
                gnu.realsize = real_size;
                // One chunk, empty, at the end: a hole of 20 GiB.
                gnu.sparse[0].offset = real_size;
                gnu.sparse[0].numbytes.copy_from_slice(b"00000000000\0");
                tar.append_data(&mut header, name, std::io::empty()).unwrap();
            }
        }
    }
    tar.finish().unwrap();
}

/// Changes a copy of a store with `sql` (an SQLite database in one file).
fn altered(database: &[u8], sql: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("altered.db");
    std::fs::write(&path, database).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Delete);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&pool).await.unwrap();
        pool.close().await;
    });
    std::fs::read(&path).unwrap()
}

/// `restore` takes only what `backup` writes (issue 30): every other backup is refused by name
/// and leaves no data directory behind; the good one still restores.
#[test]
fn restore_refuses_every_backup_backup_does_not_write() {
    let c = Collector::on(None, "").at(support::MID_NOVEMBER_2026);
    c.ok(&args("account add --id acme --name Acme"));
    c.ok(&["ca", "init"]);
    let backup = c.dir.path().join("tally.backup").display().to_string();
    c.ok(&["backup", "--to", &backup]);
    let good = Parts::of(&backup);
    let other_ca = Collector::on(None, "");
    other_ca.ok(&["ca", "init"]);
    let other_key = std::fs::read(other_ca.data_file("ca/ca.key")).unwrap();

    let mut damaged_page = good.database.clone();
    let page_size = usize::from(u16::from_be_bytes([damaged_page[16], damaged_page[17]]));
    damaged_page[page_size] = 0x42; // the second page's b-tree type: none
    let not_a_store = altered(&[], "CREATE TABLE t (x)");
    let table_dropped = altered(&good.database, "DROP TABLE outbox");
    let newer = altered(
        &good.database,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99999, 'a newer collector', 1, x'00', 0)",
    );
    // A backup of the three files, the way `backup` names them.
    let whole = |database, pem, key| -> Backup { vec![("tally.db", database), ("ca/ca.pem", pem), ("ca/ca.key", key)] };
    let (db, pem, key) = (|| Entry::File(&good.database), || Entry::File(&good.ca_pem), || Entry::File(&good.ca_key));
    let cases: Vec<(&str, Backup, &str)> = vec![
        ("an empty store", whole(Entry::File(&[]), pem(), key()), "\"tally.db\" is empty"),
        (
            "a symlink as the store",
            whole(Entry::Symlink("/etc/passwd"), pem(), key()),
            "\"tally.db\" is not a regular file (Symlink)",
        ),
        ("an empty CA key", whole(db(), pem(), Entry::File(&[])), "\"ca/ca.key\" is empty"),
        (
            "a hard-linked CA key",
            whole(db(), pem(), Entry::HardLink("ca/ca.pem")),
            "\"ca/ca.key\" is not a regular file (Link)",
        ),
        ("no CA", vec![("tally.db", db())], "holds no ca/ca.pem, ca/ca.key"),
        ("no store", vec![("ca/ca.pem", pem()), ("ca/ca.key", key())], "holds no tally.db"),
        (
            "a sparse entry of 20 GiB",
            vec![("tally.db", Entry::Sparse)],
            "\"tally.db\" is not a regular file (GNUSparse)",
        ),
        (
            "an entry larger than the disk",
            vec![("tally.db", Entry::Claims(1 << 50))],
            "\"tally.db\" is 1125899906842624 bytes: more than the space free",
        ),
        ("another file", vec![("ca/extra.key", Entry::File(b"x"))], "\"ca/extra.key\" is not part of a backup"),
        ("the store twice", vec![("tally.db", db()), ("tally.db", db())], "\"tally.db\" is there twice"),
        (
            "a damaged page",
            whole(Entry::File(&damaged_page), pem(), key()),
            "its tally.db: store error: SQLite's integrity check fails",
        ),
        (
            "a database that is not a store",
            whole(Entry::File(&not_a_store), pem(), key()),
            "not a Tally store (it has no schema version)",
        ),
        ("a table dropped", whole(Entry::File(&table_dropped), pem(), key()), "tables a store has are missing: outbox"),
        (
            "a newer schema",
            whole(Entry::File(&newer), pem(), key()),
            "its schema is at version 99999; this collector knows versions 1 to",
        ),
        ("the key of another CA", whole(db(), pem(), Entry::File(&other_key)), "ca.key: not the key of"),
    ];
    let into = Collector::on(None, "");
    for (what, entries, says) in cases {
        let path = into.dir.path().join("hand-made.backup");
        hand_made(&path, &entries);
        let refused = into.fails(&["restore", "--from", &path.display().to_string()]);
        assert!(refused.contains(says), "{what}: {refused}");
        assert!(!into.data_file("").exists(), "{what}: the data directory is left as it was (absent)");
    }
    into.ok(&["restore", "--from", &backup]);
    assert!(into.ok(&["account", "list"]).contains("acme"));
}
