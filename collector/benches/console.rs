//! The web console's pages under a big account (issue 17's benchmark):
//! `cargo bench -p tally-collector --bench console`.
//!
//! A store with account `big` of `SITES` (1,000) sites and account `hundred` of 100, October
//! 2026 measured (every tenth slot of each day, and every slot of Oct 15 for site `s00000`), is
//! served by the release `tally-collector serve` with its clock in mid-November. Signed in as
//! the operator, the bench asks `RUNS` (200) times for each page, one request at a time, after a
//! few to warm up: the usage page of `big` (and, beside it, the API's JSON of the same report),
//! the site-day page of `s00000` on Oct 15, and the usage page of `hundred`. It reports the median and p99 of the time to the last byte on
//! loopback (the server's time and a few tens of microseconds of loopback), and the bytes sent,
//! raw and gzipped (`gzip -9`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate, Utc};
use tally_collector::store::sqlite::SqliteStore;
use tally_collector::store::{Account, AccountStore, BucketStore, ContractTerm, Site};
use tally_common::bucket::Bucket;
use tally_common::kinds::SiteType;
use tally_common::region::RegionGroup;
use tally_common::time::BucketStart;
use tally_testkit::Logged;
use tally_testkit::collector::{CLOCK_OFFSET_VAR, free_port, wait_for_healthz};

const TOKEN: &str = "bench-operator-token-of-the-console-benchmark";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The buckets of site `id` (`s`) on `date`: every `step`-th slot.
fn buckets_of(id: &str, s: usize, date: NaiveDate, step: usize) -> Vec<(String, Bucket)> {
    let first = BucketStart::first_of_day(date).unix();
    (0..288)
        .step_by(step)
        .filter_map(|slot| {
            let start = BucketStart::from_unix(first + 300 * slot as i64).ok()?;
            let value = 1_000_000 + ((s * 7_919 + slot * 104_729 + date.ordinal() as usize * 13) % 50_000_000) as u64;
            Some((id.to_owned(), Bucket { start, max_bps: value, samples: 60 }))
        })
        .collect()
}

async fn build_store(path: &std::path::Path, sites: usize) -> anyhow::Result<()> {
    let store = SqliteStore::open(path).await?;
    let term = ContractTerm::months_from(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(), 12);
    let mut rows = Vec::new();
    for (account, count) in [("big", sites), ("hundred", 100)] {
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
                let date = NaiveDate::from_ymd_opt(2026, 10, d).unwrap_or_default();
                let full = id == "s00000" && d == 15;
                rows.extend(buckets_of(&id, s, date, if full { 1 } else { 10 }));
            }
        }
    }
    for chunk in rows.chunks(50_000) {
        store.merge_buckets(&chunk.iter().map(|(site, b)| (site.as_str(), *b)).collect::<Vec<_>>()).await?;
    }
    Ok(())
}

/// One GET with the session cookie: status, body, time to the last byte.
fn get(http: &str, path: &str, cookie: &str) -> anyhow::Result<(u16, Vec<u8>, Duration)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(http)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nCookie: {cookie}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Connection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let took = started.elapsed();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow::anyhow!("no head"))?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, response[split + 4..].to_vec(), took))
}

fn gzipped_len(body: &[u8]) -> anyhow::Result<usize> {
    let mut gzip = Command::new("gzip").arg("-9c").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    gzip.stdin.take().ok_or_else(|| anyhow::anyhow!("gzip's stdin"))?.write_all(body)?;
    Ok(gzip.wait_with_output()?.stdout.len())
}

fn measure(http: &str, cookie: &str, name: &str, path: &str, runs: usize) -> anyhow::Result<()> {
    let (status, body, _) = get(http, path, cookie)?;
    anyhow::ensure!(status == 200, "{path}: {status}");
    for _ in 0..5 {
        get(http, path, cookie)?;
    }
    let mut times: Vec<Duration> =
        (0..runs).map(|_| get(http, path, cookie).map(|(_, _, t)| t)).collect::<Result<_, _>>()?;
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
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let started = Instant::now();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(build_store(&data.join("tally.db"), sites))?;
    println!("store: {} + 100 sites, October 2026, built in {:.1} s", sites, started.elapsed().as_secs_f64());

    let config = dir.path().join("collector.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\nhttp_listen = \"127.0.0.1:{port}\"\nquic_listen = \"127.0.0.1:{}\"\n\
             operator_token = \"{TOKEN}\"\nlog = \"warn,tally_collector=info\"\n",
            free_port()
        ),
    )?;
    let mid_november = chrono::DateTime::parse_from_rfc3339("2026-11-16T12:00:00Z")?.to_utc();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally-collector"));
    command.arg("--config").arg(&config).arg("serve");
    command.env(CLOCK_OFFSET_VAR, (mid_november - Utc::now()).num_milliseconds().to_string());
    let mut serving = Logged::spawn(command);
    let http = format!("127.0.0.1:{port}");
    wait_for_healthz(([127, 0, 0, 1], port).into(), &mut serving);
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
        measure(&http, &cookie, &format!("usage page, {sites} sites"), "/accounts/big/usage?month=2026-10", runs)?;
        let api = format!("the API's usage report (JSON), {sites} sites");
        measure(&http, &cookie, &api, "/v1/accounts/big/usage?month=2026-10", runs)?;
        measure(&http, &cookie, "site-day page", "/accounts/big/sites/s00000/days/2026-10-15", runs)?;
        measure(&http, &cookie, "usage page, 100 sites", "/accounts/hundred/usage?month=2026-10", runs)?;
        Ok(())
    })();
    serving.kill();
    result
}
