//! The operator's commands through the real binary: validation messages, restricted countries,
//! and an all-or-nothing CSV import with line numbers.

mod support;

use std::path::Path;
use std::process::Command;

use support::{Collector, args};

fn setup() -> Collector {
    let c = Collector::new();
    c.ok(&args("account add --id acme --name Acme --eop-contact-name Ann --eop-contact-email ann@acme.test"));
    c.ok(&args("site add --account acme --id hq --name HQ --country US --type socket"));
    c
}

#[test]
fn sites_follow_their_country_and_restricted_countries_are_refused() {
    let c = setup();
    c.ok(&args("license add --account acme --kind bandwidth_pool --region china --quantity 50 --from 2020-01-01 --to 2099-12-31"));
    let out = c.ok(&args("site add --account acme --id sh --name SH --country CN --type socket --cap-mbps 50"));
    assert_eq!(out.trim(), "site sh added in china (CN)");
    let err = c.fails(&args("site add --account acme --id ir --name IR --country IR --type socket"));
    assert!(err.contains("Iran (IR) is on the restricted-country list"), "{err}");
    let err = c.fails(&args("site add --account acme --id x --name X --country US --type router"));
    assert!(
        err.contains("--type: \"router\" is not a valid site type; expected one of: socket, ipsec, cloud_interconnect"),
        "{err}"
    );
    let err = c.fails(&args("site add --account acme --id hq --name HQ --country US --type socket"));
    assert!(err.contains("site \"hq\" already exists"), "{err}");
    let err = c.fails(&args("site add --account ghost --id y --name Y --country US --type socket"));
    assert!(err.contains("account \"ghost\" does not exist"), "{err}");
}

#[test]
fn licenses_are_checked_for_their_kind() {
    let c = setup();
    c.ok(&args("license add --account acme --kind bandwidth_pool --region group1 --quantity 100 --from 2026-01-01 --to 2026-12-31"));
    let err = c.fails(&args(
        "license add --account acme --kind bandwidth_pool --quantity 100 --from 2026-01-01 --to 2026-12-31",
    ));
    assert!(err.contains("--region is required for bandwidth_pool licenses"), "{err}");
    let err =
        c.fails(&args("license add --account acme --kind devices --quantity 3 --from 2026-01-01 --to 2026-12-31"));
    assert!(err.contains("--block-size is required for devices licenses"), "{err}");
    let err =
        c.fails(&args("license add --account acme --kind dem_users --quantity 3 --from 2026-12-01 --to 2026-01-31"));
    assert!(err.contains("--from 2026-12-01 is after --to 2026-01-31"), "{err}");
}

#[test]
fn a_bad_csv_row_imports_nothing_and_every_bad_row_is_named() {
    let c = setup();
    let good = c.file(
        "good.csv",
        "site,bucket_start,max_bps,samples\nhq,2026-10-07T00:00:00Z,1000,60\nhq,2026-10-07T00:05:00Z,2000\n",
    );
    let bad = c.file(
        "bad.csv",
        "hq,2026-10-07T00:10:00Z,5\nghost,2026-10-07T00:15:00Z,5\nhq,2026-10-07T00:17:00Z,5\nhq,2026-10-07T00:20:00Z,99999999999999999\nhq,2026-10-07T00:25:00Z,5,0\nhq,2026-10-07T00:30:00Z\n",
    );
    let err = c.fails(&["import-buckets", "--csv", &bad]);
    assert!(err.contains("5 error(s), nothing was imported"), "{err}");
    assert!(err.contains("line 2: site \"ghost\" does not exist"), "{err}");
    assert!(err.contains("line 3: bucket_start \"2026-10-07T00:17:00Z\" is not on a 5-minute boundary"), "{err}");
    assert!(err.contains("line 4: max_bps 99999999999999999 is above the sanity bound"), "{err}");
    assert!(err.contains("line 5: samples \"0\" is not between 1 and 60"), "{err}");
    assert!(err.contains("line 6: expected site,bucket_start,max_bps[,samples], found 2 fields"), "{err}");
    let listing = c.ok(&args("site buckets --site hq --date 2026-10-07 --format json"));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&listing).unwrap(), serde_json::json!([]));

    assert!(c.ok(&["import-buckets", "--csv", &good]).contains("imported 2 new bucket(s), merged 0"));
    let lower = c.file("lower.csv", "hq,2026-10-07T00:00:00Z,10,5\n");
    assert!(c.ok(&["import-buckets", "--csv", &lower]).contains("merged 1"));
    let listing: serde_json::Value =
        serde_json::from_str(&c.ok(&args("site buckets --site hq --date 2026-10-07 --format json"))).unwrap();
    assert_eq!(
        listing,
        serde_json::json!([
            {"start": "2026-10-07T00:00:00Z", "max_bps": 1000, "samples": 60},
            {"start": "2026-10-07T00:05:00Z", "max_bps": 2000, "samples": 60}
        ]),
        "a lower re-import never lowers a bucket (R10)"
    );
    // A spreadsheet's export: a byte-order mark, CRLF line ends, quoted fields.
    let exported = c.file(
        "exported.csv",
        "\u{feff}site,bucket_start,max_bps\r\n\"hq\",\"2026-10-07T00:10:00Z\",\"3000\"\r\nhq, 2026-10-07T00:15:00Z ,4000\r\n",
    );
    assert!(c.ok(&["import-buckets", "--csv", &exported]).contains("imported 2 new bucket(s)"));
    let quoted_comma = c.file("comma.csv", "\"hq,annex\",2026-10-07T00:20:00Z,5\n");
    let err = c.fails(&["import-buckets", "--csv", &quoted_comma]);
    assert!(err.contains("line 1: site \"hq,annex\" does not exist"), "a quoted comma is part of the field: {err}");
}

/// `import-buckets` at the size operators use (issue 30): a file of 100,000 bad rows lists the
/// first 20 errors and counts the rest; a 50 MB field is quoted cut; a 50 MB line is one error,
/// never held; bad UTF-8 names its line; a bucket past the collector's clock and 10 minutes is
/// refused unless the import says it is deliberate.
#[test]
fn import_buckets_refuses_big_bad_files_in_a_few_lines() {
    let c = setup().at("2026-11-15T12:00:00Z");
    let mut many = String::from("site,bucket_start,max_bps\n");
    for i in 0..100_000 {
        many += &format!("hq,2026-10-07T00:{:02}:01Z,{i}\n", i % 60);
    }
    let err = c.fails(&["import-buckets", "--csv", &c.file("many.csv", &many)]);
    assert!(err.contains("many.csv: 100000 error(s), nothing was imported"), "{err}");
    assert!(err.contains("line 2: bucket_start \"2026-10-07T00:00:01Z\" is not on a 5-minute boundary"), "{err}");
    assert!(err.contains("line 21: ") && !err.contains("line 22: "), "the first 20 only: {err}");
    assert!(err.contains("… and 99980 more"), "{err}");
    assert!(err.lines().count() <= 23, "{} lines", err.lines().count());

    let huge_field = format!("hq,2026-10-07T00:00:00Z,{}\n", "9".repeat(50 << 20));
    let err = c.fails(&["import-buckets", "--csv", &c.file("field.csv", &huge_field)]);
    assert!(err.contains("line 1: 52428824 bytes long, more than the 4096 a line may have"), "{err}");
    assert!(err.len() < 1_000, "{} bytes of error", err.len());
    let long_value = format!("hq,2026-10-07T00:00:00Z,{}\n", "9".repeat(3_000));
    let err = c.fails(&["import-buckets", "--csv", &c.file("value.csv", &long_value)]);
    assert!(
        err.contains(&format!("line 1: max_bps \"{}\"… (3000 bytes) is not a non-negative integer", "9".repeat(40))),
        "{err}"
    );

    let commas = format!("hq,2026-10-07T00:00:00Z,1\n{}\nhq,2026-10-07T00:05:00Z,1\n", ",".repeat(50 << 20));
    let err = c.fails(&["import-buckets", "--csv", &c.file("commas.csv", &commas)]);
    assert!(err.contains("1 error(s)") && err.contains("line 2: 52428800 bytes long"), "{err}");

    let mut latin1 = b"hq,2026-10-07T00:00:00Z,1\nhq,2026-10-07T00:05:00Z,1\n# caf".to_vec();
    latin1.extend_from_slice(b"\xe9\nhq,2026-10-07T00:10:00Z,1\n");
    let path = c.dir.path().join("latin1.csv");
    std::fs::write(&path, latin1).unwrap();
    let err = c.fails(&["import-buckets", "--csv", &path.display().to_string()]);
    assert!(err.contains("line 3: not UTF-8 (at byte 6)"), "{err}");

    // The collector's clock is 12:00: 12:10 is the last start QUIC would take.
    let future = c.file("future.csv", "hq,2026-11-15T12:10:00Z,7\nhq,2026-11-15T12:15:00Z,8\n");
    let err = c.fails(&["import-buckets", "--csv", &future]);
    assert!(err.contains("1 error(s)"), "{err}");
    // (The test's clock runs on from 12:00 while it runs.)
    assert!(err.contains("line 2: bucket_start 2026-11-15T12:15:00Z is in the future (after 2026-11-15T12:1"), "{err}");
    assert!(
        err.contains("the collector's clock and 10 minutes); give --allow-future to import it deliberately"),
        "{err}"
    );
    assert!(c.ok(&["import-buckets", "--csv", &future, "--allow-future"]).contains("imported 2 new bucket(s)"));
    let listing = c.ok(&args("site buckets --site hq --date 2026-10-07 --format json"));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&listing).unwrap(), serde_json::json!([]), "nothing else was");
}

#[test]
fn validate_and_default_config() {
    let c = Collector::new();
    let text = c.ok(&args("default-config"));
    let path = c.file("default.toml", &text);
    let out =
        Command::new(env!("CARGO_BIN_EXE_tally-collector")).args(["validate", "--config", &path]).output().unwrap();
    assert!(out.status.success());
    let bad = c.file("bad.toml", "http_listen = \"here\"\nextra = 1\n");
    let out =
        Command::new(env!("CARGO_BIN_EXE_tally-collector")).args(["validate", "--config", &bad]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("2 error(s)") && err.contains("http_listen: \"here\"") && err.contains("extra: unknown key"),
        "{err}"
    );
    assert!(!Path::new(&c.dir.path().join("data")).exists(), "validate opens nothing");

    // A data directory that cannot be created: under a regular file.
    let file = c.file("a-file", "");
    let unusable = c.file("unusable.toml", &format!("data_dir = \"{file}/data\"\n"));
    let out =
        Command::new(env!("CARGO_BIN_EXE_tally-collector")).args(["validate", "--config", &unusable]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(&format!("data_dir: {file}/data cannot be created: {file} is not a directory")), "{err}");
    // Under a directory nothing can be made in, whatever its modes say (root passes them all).
    let unusable = c.file("proc.toml", "data_dir = \"/proc/tally/data\"\n");
    let out =
        Command::new(env!("CARGO_BIN_EXE_tally-collector")).args(["validate", "--config", &unusable]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("data_dir: /proc/tally/data cannot be created: nothing can be made in /proc: "), "{err}");

    // R30: collectors sharing a database share a CA, given to them; a URL that is not
    // PostgreSQL's is refused, and so is one from the environment; the password is never shown.
    let validate = |text: &str, url: Option<&str>| {
        let path = c.file("shared.toml", text);
        let mut command = Command::new(env!("CARGO_BIN_EXE_tally-collector"));
        command.args(["validate", "--config", &path]).env_remove("TALLY_DATABASE_URL");
        if let Some(url) = url {
            command.env("TALLY_DATABASE_URL", url);
        }
        let out = command.output().unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    let url = "database_url = \"postgres://tally:hunter2@db.example/tally\"\n";
    let (code, err) = validate(url, None);
    assert_eq!(code, Some(64));
    assert!(err.contains("ca_dir: collectors sharing one database (database_url) must share one CA"), "{err}");
    assert_eq!(validate(&format!("{url}ca_dir = \"/run/secrets/tally-ca\"\n"), None).0, Some(0));
    let (code, err) = validate("database_url = \"mysql://tally:hunter2@db/tally\"\n", None);
    assert_eq!(code, Some(64));
    assert!(err.contains("mysql://tally:***@db/tally is not a postgres:// URL") && !err.contains("hunter2"), "{err}");
    let (code, err) = validate("", Some("postgres://tally@db.example/tally"));
    assert_eq!(code, Some(64), "the environment's database_url needs ca_dir too");
    assert!(err.contains("ca_dir:"), "{err}");
}

/// Every key can come from the environment (`TALLY_<KEY>`), over the file; a bad value is
/// reported by its variable's name, with every other error.
#[test]
fn the_environment_configures_every_key_and_names_its_bad_values() {
    let c = Collector::new();
    let validate = |file: Option<&str>, vars: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tally-collector"));
        command.env_clear().arg("validate");
        if let Some(text) = file {
            command.args(["--config", &c.file("env.toml", text)]);
        }
        let out = command.envs(vars.iter().copied()).output().unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    // The file's bad value is replaced by the environment's good one.
    let data = c.dir.path().join("env-data").display().to_string();
    let good = [
        ("TALLY_HTTP_LISTEN", "0.0.0.0:8080"),
        ("TALLY_ALLOW_PLAINTEXT_TOKENS", "false"),
        ("TALLY_TRUSTED_PROXIES", "10.0.0.0/8,192.0.2.7"),
        ("TALLY_DATA_DIR", data.as_str()),
        ("TALLY_SERVER_NAMES", "collector.example,10.0.0.5"),
        ("TALLY_MAX_CONNECTIONS", "50"),
        ("TALLY_OPERATOR_TOKEN", "01234567890123456789012345678901234567"),
    ];
    assert_eq!(validate(Some("http_listen = \"here\"\n"), &good), (Some(0), String::new()));
    // Bad values, named by their variables, all at once.
    let bad = [
        ("TALLY_HTTP_LISTEN", "everywhere"),
        ("TALLY_MAX_CONNECTIONS", "many"),
        ("TALLY_GRACE_HOURS", "-1"),
        ("TALLY_ALLOW_PLAINTEXT_TOKENS", "maybe"),
        ("TALLY_PUBLIC_ADDRESSES", "c1.example:4433,c2.example"),
    ];
    let (code, err) = validate(None, &bad);
    assert_eq!(code, Some(64));
    for expected in [
        "TALLY_HTTP_LISTEN (http_listen: \"everywhere\" is not an address",
        "TALLY_MAX_CONNECTIONS: expected an integer, found \"many\"",
        "TALLY_GRACE_HOURS (grace_hours: -1 is out of range",
        "TALLY_ALLOW_PLAINTEXT_TOKENS: expected true or false, found \"maybe\"",
        "TALLY_PUBLIC_ADDRESSES (public_addresses: expected a list of 1 to",
        "5 error(s)",
    ] {
        assert!(err.contains(expected), "{expected} in {err}");
    }
}

#[test]
fn enrollment_tokens_carry_the_ca_fingerprint() {
    let c = setup();
    let init = c.ok(&args("ca init"));
    let fingerprint = init.lines().find_map(|l| l.strip_prefix("fingerprint (SHA-256): ")).unwrap().to_owned();
    assert!(init.starts_with("CA created"), "{init}");
    assert!(c.ok(&args("ca init")).starts_with("CA exists"), "never overwritten");
    let token = c.ok(&args("site enroll-token --site hq"));
    let token: tally_common::token::EnrollToken = token.trim().parse().unwrap();
    assert_eq!(token.ca_fingerprint, fingerprint);
    let other = c.ok(&args("site enroll-token --site hq"));
    assert_ne!(other.trim(), token.to_string(), "every token is new");
    let err = c.fails(&args("site enroll-token --site ghost"));
    assert!(err.contains("site \"ghost\" does not exist"), "{err}");
    assert_eq!(c.ok(&args("site revoke --site hq")).trim(), "site hq: 0 certificate(s) revoked");
}

/// The collector's clock can be shifted for tests (`TALLY_CLOCK_OFFSET_MS`, set by
/// `Collector::at`): every business date follows it. A bad value is a configuration error.
#[test]
fn the_clock_offset_moves_business_dates_and_a_bad_one_is_refused() {
    let c = Collector::new().at("2027-03-01T00:00:00Z");
    c.ok(&args("account add --id acme --name Acme"));
    let report: serde_json::Value =
        serde_json::from_str(&c.ok(&args("report --account acme --month 2027-03 --format json"))).unwrap();
    assert_eq!((report["status"].as_str(), report["open_from"].as_str()), (Some("open"), Some("2027-03-01")));
    let out = c.command().args(["validate"]).env(tally_collector::clock::OFFSET_VAR, "soon").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("TALLY_CLOCK_OFFSET_MS=\"soon\" is not a whole number of milliseconds"), "{err}");
}

/// Read-only commands never create a store: pointed at a data directory without one (a missing
/// `--config`), they say so and leave nothing behind.
#[test]
fn read_only_commands_create_no_store() {
    let c = Collector::new();
    for line in [
        "report --account local --month 2026-11",
        "notifications",
        "site buckets --site local --date 2026-11-30",
        "site enforcement --site local",
        "account list",
        "site list",
        "token list",
    ] {
        let err = c.fails(&args(line));
        assert!(err.contains("no store at") && err.contains("(is --config missing?)"), "{line}: {err}");
    }
    assert!(!c.dir.path().join("data").exists(), "nothing was created");
}

/// Accounts, sites and tokens can be listed and an existing account enrolled in the EoP;
/// a token's secret is never shown again; a bad date says what form it wants.
#[test]
fn accounts_sites_and_tokens_are_listed_and_an_account_joins_the_eop() {
    let c = setup();
    c.ok(&args("account add --id late --name Late"));
    let err = c.fails(&args("account set --id late --eop-contact-name Lee --eop-contact-email not-an-address"));
    assert!(err.contains("--eop-contact-email \"not-an-address\""), "{err}");
    c.ok(&args("account set --id late --eop-contact-name Lee --eop-contact-email lee@late.test"));
    let accounts: serde_json::Value = serde_json::from_str(&c.ok(&args("account list --format json"))).unwrap();
    assert_eq!(accounts[1]["id"], "late");
    assert_eq!((accounts[1]["eop_contact_name"].as_str(), accounts[1]["name"].as_str()), (Some("Lee"), Some("Late")));
    assert!(c.ok(&args("account list")).contains("Lee <lee@late.test>"));
    assert!(c.fails(&args("account set --id ghost --name G")).contains("account \"ghost\" does not exist"));

    c.ok(&args("site add --account late --id shop --name Shop --country DE --type ipsec"));
    let sites: serde_json::Value = serde_json::from_str(&c.ok(&args("site list --format json"))).unwrap();
    let ids: Vec<&str> = sites.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["hq", "shop"]);
    let late: serde_json::Value = serde_json::from_str(&c.ok(&args("site list --account late --format json"))).unwrap();
    assert_eq!(late[0]["region_group"], "group1");
    assert_eq!(late.as_array().unwrap().len(), 1);

    let secret = c.ok(&args("token create --role customer --account late --contact"));
    c.ok(&args("token create --role operator"));
    c.ok(&args("token revoke --id 2"));
    let listed = c.ok(&args("token list"));
    assert!(!listed.contains(secret.trim()), "the secret is never listed: {listed}");
    let tokens: serde_json::Value = serde_json::from_str(&c.ok(&args("token list --format json"))).unwrap();
    assert_eq!((tokens[0]["role"].as_str(), tokens[0]["contact"].as_bool()), (Some("customer"), Some(true)));
    assert!(tokens[0]["revoked_at"].is_null() && tokens[1]["revoked_at"].is_string(), "{tokens}");

    let err = c.fails(&args("site buckets --site hq --date 30-11-2026"));
    assert!(err.contains("date \"30-11-2026\" is not of the form YYYY-MM-DD"), "{err}");
}

/// `tally-collector site list | head -1`: the reader is gone before the collector writes; the
/// command exits quietly instead of panicking on the broken pipe.
#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let c = setup();
    let mut child = c
        .command()
        .arg("--config")
        .arg(c.dir.path().join("c.toml"))
        .args(args("site list"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("panicked"), "{:?}: {stderr}", out.status);
}

/// `serve` says at start, at ERROR, when its data directory has less free space than
/// `min_free_mb`.
#[test]
fn serve_warns_when_the_data_directory_is_short_of_space() {
    let c = Collector::with_config("min_free_mb = 1000000000");
    let mut serving = c.serve();
    let line = serving.until("little free space");
    assert!(line.contains("ERROR") && line.contains("min_free_mb=1000000000"), "{line}");
}

/// What the collector writes is its own (0700 directories, 0600 files), and a configuration
/// holding a secret that other users may read is warned of at start.
#[test]
fn the_store_is_private_and_a_readable_secret_is_warned_of() {
    use std::os::unix::fs::PermissionsExt;
    let token = "t".repeat(40);
    let c = Collector::with_config(&format!("operator_token = \"{token}\""));
    std::fs::set_permissions(c.dir.path().join("c.toml"), std::fs::Permissions::from_mode(0o644)).unwrap();
    c.ok(&args("account add --id acme --name Acme"));
    let mode = |path: std::path::PathBuf| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(c.data_file("")), 0o700);
    assert_eq!(mode(c.data_file("tally.db")), 0o600);
    let mut serving = c.serve();
    let line = serving.until("holds secrets");
    assert!(line.contains("WARN") && line.contains("mode 644") && line.contains("chmod 600"), "{line}");
    serving.until("certificate authority ready");
    assert_eq!(mode(c.data_file("ca")), 0o700);
    assert_eq!(mode(c.data_file("ca/ca.key")), 0o600);
}

/// R27: an account's contract term is given at `account add`, or `default_contract_months` from
/// its creation; `account set` renews it (a term after the others) or corrects one (a term over
/// it), never several at once; `account list` shows the term in force.
#[test]
fn every_account_has_a_contract_term_given_or_by_default() {
    let c = Collector::with_config("default_contract_months = 24").at("2026-11-30T23:59:00Z");
    let added = c.ok(&args("account add --id acme --name Acme"));
    assert!(added.contains("account acme added (contract term 2026-11-30 to 2028-11-29)"), "{added}");
    let added = c.ok(&args("account add --id fixed --name Fixed --term-start 2026-01-01 --term-end 2026-12-31"));
    assert!(added.contains("(contract term 2026-01-01 to 2026-12-31)"), "{added}");
    let err = c.fails(&args("account add --id odd --name Odd --term-start 2026-06-01 --term-end 2026-05-31"));
    assert!(err.contains("--term-end 2026-05-31 is before --term-start 2026-06-01"), "{err}");
    let err = c.fails(&args("account add --id half --name Half --term-start 2026-06-01"));
    assert!(err.contains("--term-end"), "both or neither: {err}");

    let renewed = c.ok(&args("account set --id fixed --term-start 2027-01-01 --term-end 2027-12-31"));
    assert!(renewed.contains("contract term 2027-01-01 to 2027-12-31 added"), "{renewed}");
    let err = c.fails(&args("account set --id fixed --term-start 2026-12-01 --term-end 2027-02-28"));
    assert!(
        err.contains("overlaps 2 terms of account fixed (2026-01-01 to 2026-12-31, 2027-01-01 to 2027-12-31)"),
        "{err}"
    );
    let corrected = c.ok(&args("account set --id fixed --term-start 2026-01-01 --term-end 2026-12-30"));
    assert!(
        corrected.contains("contract term 2026-01-01 to 2026-12-30 replaces 2026-01-01 to 2026-12-31"),
        "{corrected}"
    );

    let listed: serde_json::Value = serde_json::from_str(&c.ok(&args("account list --format json"))).unwrap();
    let terms =
        |i: usize| (listed[i]["id"].clone(), listed[i]["contract_term"].clone(), listed[i]["contract_terms"].clone());
    let (id, in_force, all) = terms(0);
    assert_eq!((id.as_str(), in_force["end"].as_str()), (Some("acme"), Some("2028-11-29")));
    assert_eq!(all.as_array().unwrap().len(), 1);
    // On 2026-11-30 "fixed" is in its corrected first term; its renewal follows.
    let (id, in_force, all) = terms(1);
    assert_eq!(
        (id.as_str(), in_force["start"].as_str(), in_force["end"].as_str()),
        (Some("fixed"), Some("2026-01-01"), Some("2026-12-30"))
    );
    let starts: Vec<&str> = all.as_array().unwrap().iter().map(|t| t["start"].as_str().unwrap()).collect();
    assert_eq!(starts, ["2026-01-01", "2027-01-01"]);
    assert!(c.ok(&args("account list")).contains("2026-01-01 to 2026-12-30"));
}

/// Mistakes are answered with what was meant: a mistyped command with the closest harmless one
/// (clap alone offered `restore` for `repot`), an unknown configuration key with the closest key,
/// a month that does not exist with why.
#[test]
fn mistakes_are_answered_with_what_was_meant() {
    let c = Collector::new();
    let said = c.fails(&["repot"]);
    assert!(said.contains("unrecognized command 'repot'") && said.contains("did you mean 'report'?"), "{said}");
    assert!(!said.contains("restore"), "{said}");
    let said = c.fails(&["account", "ad"]);
    assert!(said.contains("did you mean 'add'?"), "{said}");
    c.ok(&["account", "add", "--id", "acme", "--name", "Acme"]);
    let said = c.fails(&["report", "--account", "acme", "--month", "2026-13"]);
    assert!(said.contains("month \"2026-13\" is not a month (13): months are 01 to 12"), "{said}");
    let wrong = Collector::with_config("smtp_form = \"tally@provider.example\"");
    let said = wrong.fails(&["validate"]);
    assert!(said.contains("smtp_form: unknown key; did you mean \"smtp_from\"?"), "{said}");
}
