//! The web console's pages under a big account (issue 17's benchmark, a real month's since issue
//! 32): `cargo bench -p tally-collector --bench console`.
//!
//! On each store of `CONSOLE_STORES` (both: `sqlite,postgres`), a store with account `big` of
//! `SITES` (1,000) sites and account `hundred` of 100 (or `SITES`, if fewer), every slot of every day of October 2026
//! measured (8,928 buckets a site), is served by the release `tally-collector serve` with its
//! clock in mid-November; the bench waits for its engine to finalize October for both. Signed in
//! as the operator, it asks `RUNS` (200) times for each page, one request at a time, after a few
//! to warm up: the usage page of `big` (and, beside it, the API's JSON of the same report, and
//! the same asked again with its ETag: a 304), the site-day page of `s00000` on Oct 15, and the
//! usage page of `hundred`. It reports the median and p99 of the time to the last byte on
//! loopback (the server's time and a few tens of microseconds of loopback), and the bytes sent,
//! raw and gzipped (`gzip -9`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate, Utc};
use tally_collector::store::postgres::PgStore;
use tally_collector::store::sqlite::SqliteStore;
use tally_collector::store::{Account, ContractTerm, Site, Store};
use tally_common::bucket::Bucket;
use tally_common::kinds::SiteType;
use tally_common::region::RegionGroup;
use tally_common::time::BucketStart;
use tally_testkit::Logged;
use tally_testkit::collector::{CLOCK_OFFSET_VAR, free_port, wait_for_healthz};
use tally_testkit::postgres as pg_cluster;

const TOKEN: &str = "bench-operator-token-of-the-console-benchmark";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The buckets of site `id` (`s`) on `date`: every slot.
fn buckets_of(id: &str, s: usize, date: NaiveDate) -> Vec<(String, Bucket)> {
    let first = BucketStart::first_of_day(date).unix();
    (0..288)
        .filter_map(|slot| {
            let start = BucketStart::from_unix(first + 300 * slot as i64).ok()?;
            let value = 1_000_000 + ((s * 7_919 + slot * 104_729 + date.ordinal() as usize * 13) % 50_000_000) as u64;
            Some((id.to_owned(), Bucket { start, max_bps: value, samples: 60 }))
        })
        .collect()
}

async fn build_store<S: Store>(store: &S, sites: usize) -> anyhow::Result<()> {
    let term = ContractTerm::months_from(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(), 12);
    let mut rows = Vec::new();
    for (account, count) in [("big", sites), ("hundred", sites.min(100))] {
        let a = Account {
            id: account.into(),
            name: account.into(),
            partner: None,
            eop_contact_name: None,
            eop_contact_email: None,
        };
        store.add_account(&a, term).await?;
        for s in 0..count {
            let id = if account == "big" { format!("s{s:05}") } else { format!("h{s:03}") };
            let site = Site {
                id: id.clone(),
                account: account.into(),
                name: id.clone(),
                country: "US".parse()?,
                region_group: RegionGroup::Group1,
                site_type: SiteType::Socket,
                cap_bps: None,
            };
            store.add_site(&site).await?;
            for d in 1..=31 {
                rows.extend(buckets_of(&id, s, NaiveDate::from_ymd_opt(2026, 10, d).unwrap_or_default()));
            }
            if rows.len() >= 50_000 {
                store.merge_buckets(&rows.iter().map(|(site, b)| (site.as_str(), *b)).collect::<Vec<_>>()).await?;
                rows.clear();
            }
        }
    }
    store.merge_buckets(&rows.iter().map(|(site, b)| (site.as_str(), *b)).collect::<Vec<_>>()).await?;
    Ok(())
}

/// One GET with the session cookie and `headers` (lines ending with CRLF): status, head, body,
/// time to the last byte.
fn get(http: &str, path: &str, cookie: &str, headers: &str) -> anyhow::Result<(u16, String, Vec<u8>, Duration)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(http)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nCookie: {cookie}\r\nAuthorization: Bearer {TOKEN}\r\n\
         {headers}Connection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let took = started.elapsed();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow::anyhow!("no head"))?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, head, response[split + 4..].to_vec(), took))
}

fn gzipped_len(body: &[u8]) -> anyhow::Result<usize> {
    let mut gzip = Command::new("gzip").arg("-9c").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    gzip.stdin.take().ok_or_else(|| anyhow::anyhow!("gzip's stdin"))?.write_all(body)?;
    Ok(gzip.wait_with_output()?.stdout.len())
}

/// `runs` GETs of `path` (with `headers`), each answered with `expected`: the median and p99.
fn measure(
    http: &str,
    cookie: &str,
    name: &str,
    path: &str,
    (headers, expected): (&str, u16),
    runs: usize,
) -> anyhow::Result<()> {
    let (status, _, body, _) = get(http, path, cookie, headers)?;
    anyhow::ensure!(status == expected, "{path}: {status}, not {expected}");
    for _ in 0..5 {
        get(http, path, cookie, headers)?;
    }
    let mut times: Vec<Duration> =
        (0..runs).map(|_| get(http, path, cookie, headers).map(|(_, _, _, t)| t)).collect::<Result<_, _>>()?;
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).saturating_sub(1).min(times.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    println!(
        "{name}: median {:.1} ms, p99 {:.1} ms over {runs} requests; {} bytes ({} gzipped)",
        ms(at(0.5)),
        ms(at(0.99)),
        body.len(),
        gzipped_len(&body)?
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let (sites, runs) = (setting("SITES", 1_000), setting("RUNS", 200));
    let stores = std::env::var("CONSOLE_STORES").unwrap_or_else(|_| "sqlite,postgres".to_owned());
    for store in stores.split(',') {
        println!("--- {store}");
        let database_url = match store {
            "sqlite" => None,
            "postgres" => Some(pg_cluster::durable_cluster().map_err(anyhow::Error::msg)?.database()),
            other => anyhow::bail!("CONSOLE_STORES: {other:?} is neither sqlite nor postgres"),
        };
        bench_on(database_url.as_deref(), sites, runs)?;
    }
    Ok(())
}

/// The benchmark on the PostgreSQL database at `database_url`, or on an SQLite file.
fn bench_on(database_url: Option<&str>, sites: usize, runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let started = Instant::now();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
        match database_url {
            Some(url) => build_store(&PgStore::open(url).await?, sites).await,
            None => build_store(&SqliteStore::open(&data.join("tally.db")).await?, sites).await,
        }
    })?;
    let hundred = sites.min(100);
    println!("store: {sites} + {hundred} sites, October 2026, built in {:.1} s", started.elapsed().as_secs_f64());

    let config = dir.path().join("collector.toml");
    let port = free_port();
    let mut settings = format!(
        "data_dir = {data:?}\nhttp_listen = \"127.0.0.1:{port}\"\nquic_listen = \"127.0.0.1:{}\"\n\
         operator_token = \"{TOKEN}\"\nlog = \"warn,tally_collector=info\"\n",
        free_port()
    );
    if let Some(url) = database_url {
        settings += &format!("database_url = {url:?}\nca_dir = {:?}\n", dir.path().join("ca"));
    }
    std::fs::write(&config, settings)?;
    let collector = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tally-collector"));
        command.arg("--config").arg(&config);
        command
    };
    if database_url.is_some() {
        anyhow::ensure!(collector().args(["ca", "init"]).output()?.status.success(), "ca init failed");
    }
    let mid_november = chrono::DateTime::parse_from_rfc3339("2026-11-16T12:00:00Z")?.to_utc();
    let mut command = collector();
    command.arg("serve");
    command.env(CLOCK_OFFSET_VAR, (mid_november - Utc::now()).num_milliseconds().to_string());
    let mut serving = Logged::spawn(command);
    let http = format!("127.0.0.1:{port}");
    wait_for_healthz(([127, 0, 0, 1], port).into(), &mut serving);
    // The engine's first pass: every site-day computed, then October finalized for both accounts.
    let started = Instant::now();
    serving.until_n("month finalized", 2);
    println!(
        "engine: October's site-days computed and both months finalized in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    serving.drain_log();

    let result = (|| -> anyhow::Result<()> {
        let mut stream = TcpStream::connect(&http)?;
        let form = format!("token={TOKEN}");
        write!(
            stream,
            "POST /login HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let cookie = answer
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .and_then(|c| c.split(';').next())
            .ok_or_else(|| anyhow::anyhow!("no session: {answer}"))?
            .to_owned();
        let fresh = ("", 200);
        measure(
            &http,
            &cookie,
            &format!("usage page, {sites} sites"),
            "/accounts/big/usage?month=2026-10",
            fresh,
            runs,
        )?;
        let api = "/v1/accounts/big/usage?month=2026-10";
        measure(&http, &cookie, &format!("the API's usage report (JSON), {sites} sites"), api, fresh, runs)?;
        let (_, head, _, _) = get(&http, api, &cookie, "")?;
        // (A collector from before issue 32 has no ETag: the bench runs against it too.)
        match head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("etag: ").map(str::to_owned)) {
            Some(etag) => {
                let held = format!("If-None-Match: {etag}\r\n");
                measure(&http, &cookie, "the same, asked again with its ETag (304)", api, (&held, 304), runs)?;
            }
            None => println!("the same, asked again with its ETag: no ETag"),
        }
        measure(&http, &cookie, "site-day page", "/accounts/big/sites/s00000/days/2026-10-15", fresh, runs)?;
        let name = format!("usage page, {hundred} sites");
        measure(&http, &cookie, &name, "/accounts/hundred/usage?month=2026-10", fresh, runs)?;
        Ok(())
    })();
    serving.kill();
    result
}
