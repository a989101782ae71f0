//! The collector under many agents (issue 4's benchmark): `cargo bench -p tally-collector --bench storm`.
//!
//! The real `tally-collector serve` process, and simulated agents in this one: QUIC endpoints
//! (one per 50 agents) with a real client certificate per agent, signed by the collector's CA
//! and recorded in its store.
//!
//! On each store of `STORM_STORES` (both: `sqlite,postgres`): an SQLite file (WAL,
//! `synchronous = FULL`), or a database on a throwaway PostgreSQL cluster with its durable
//! defaults.
//!
//! 1. Raw store rate: the storm's rows merged straight into the store with the same store code
//!    (`IntakeStore::ingest`: on PostgreSQL, arrays through `UNNEST` from one client), in groups
//!    of 256 batches like the ingest's group commit, without QUIC.
//! 2. Storm, `STORM_RUNS` (3) times on a fresh collector: `STORM_AGENTS` (1,000) agents connect
//!    at once, each with a 288-bucket backlog: time until every bucket is acknowledged; the
//!    collector's CPU time and peak RSS.
//! 3. Steady (SQLite): `STEADY_AGENTS` (5,000) agents stay connected, each sending a one-bucket
//!    batch every 30 s (ten times the real rate) for `STEADY_SECONDS` (60): the collector's RSS
//!    and CPU.
//! 4. On PostgreSQL, once more with two collectors on one database, the agents split between
//!    them: a check that every bucket is acknowledged (R30), not a measure.
//!
//! `STORM_COLLECTOR=PATH` runs another build of `tally-collector` (the image's static binary).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{NaiveDate, TimeDelta, Utc};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tally_collector::agents::ca::{Ca, CertificateRequest};
use tally_testkit::Logged;
use tally_testkit::collector::{free_port, wait_for_healthz};
use tally_testkit::postgres as pg_cluster;

use tally_collector::store::postgres::PgStore;
use tally_collector::store::sqlite::SqliteStore;
use tally_collector::store::{Account, ContractTerm, Intake, Measured, Site, Store};
use tally_common::kinds::SiteType;
use tally_common::region::RegionGroup;
use tally_common::sampler::DiscardCounters;
use tally_common::time::BucketStart;
use tally_common::wire::frame::{decode, encode};
use tally_common::wire::{
    ALPN, AgentMessage, Bounds, CollectorMessage, Hello, PROTOCOL_VERSION, StampedBatch, StampedBucket, WireBucket,
};

const AGENTS_PER_ENDPOINT: usize = 50;
const BUCKETS_PER_AGENT: usize = 288;
const GROUP_BATCHES: usize = 256;

/// The collector run: `STORM_COLLECTOR` names another build of it (the container image's static
/// musl binary, say), else this build's.
fn collector_binary() -> std::path::PathBuf {
    std::env::var_os("STORM_COLLECTOR").map_or_else(|| env!("CARGO_BIN_EXE_tally-collector").into(), Into::into)
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Where a benchmark's collector keeps its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// A new, empty database of this backend: PostgreSQL's URL (`None`: SQLite, in the data dir).
    fn database(self) -> anyhow::Result<Option<String>> {
        match self {
            Backend::Sqlite => Ok(None),
            Backend::Postgres => Ok(Some(pg_cluster::durable_cluster().map_err(anyhow::Error::msg)?.database())),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let storm_agents = setting("STORM_AGENTS", 1_000);
    let steady_agents = setting("STEADY_AGENTS", 5_000);
    let steady_seconds = setting("STEADY_SECONDS", 60) as u64;
    let storm_runs = setting("STORM_RUNS", 3);
    let stores = std::env::var("STORM_STORES").unwrap_or_else(|_| "sqlite,postgres".to_owned());
    println!("collector: {}", collector_binary().display());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        for name in stores.split(',') {
            let backend = match name {
                "sqlite" => Backend::Sqlite,
                "postgres" => Backend::Postgres,
                other => bail!("STORM_STORES: {other:?} is neither sqlite nor postgres"),
            };
            println!("--- {name}");
            let raw = raw_store_rate(storm_agents, backend).await?;
            println!("raw store: {} rows in {:.2} s = {:.0} rows/s", storm_agents * BUCKETS_PER_AGENT, raw.0, raw.1);
            for run in 1..=storm_runs {
                let storm = storm(storm_agents, backend, 1).await?;
                let ingest_rate = (storm_agents * BUCKETS_PER_AGENT) as f64 / storm.seconds;
                println!(
                    "storm {run}/{storm_runs}: {storm_agents} agents x {BUCKETS_PER_AGENT} buckets acknowledged in \
                     {:.2} s = {ingest_rate:.0} buckets/s ({:.0} % of the raw store rate); collector CPU {:.2} s, \
                     peak RSS {:.0} MiB",
                    storm.seconds,
                    100.0 * ingest_rate / raw.1,
                    storm.cpu_seconds,
                    storm.peak_rss_mib
                );
            }
            match backend {
                Backend::Sqlite => {
                    let steady = steady(steady_agents, steady_seconds).await?;
                    println!(
                        "steady: {steady_agents} agents connected ({:.1} s to connect), {} batches in \
                         {steady_seconds} s: collector RSS {:.0} MiB (peak {:.0} MiB), CPU {:.1} % of one core",
                        steady.connect_seconds, steady.batches, steady.rss_mib, steady.peak_rss_mib, steady.cpu_percent
                    );
                }
                Backend::Postgres => {
                    let pair = storm(storm_agents, backend, 2).await?;
                    println!(
                        "two collectors on one database: {storm_agents} agents x {BUCKETS_PER_AGENT} buckets \
                         acknowledged in {:.2} s (a check, not a measure: both share these 2 cores with PostgreSQL)",
                        pair.seconds
                    );
                }
            }
        }
        anyhow::Ok(())
    })
}

/// The rows of `agents` agents' 288-bucket backlogs (one day each).
fn backlog(agents: usize) -> Vec<Vec<WireBucket>> {
    let day = BucketStart::first_of_day((Utc::now() - TimeDelta::days(2)).date_naive()).unix();
    (0..agents)
        .map(|a| {
            (0..BUCKETS_PER_AGENT)
                .map(|i| WireBucket {
                    start: day + 300 * i as i64,
                    max_bps: 1_000_000 + (a * 7_919 + i * 104_729) as u64 % 50_000_000,
                    samples: 60,
                })
                .collect()
        })
        .collect()
}

fn site_id(i: usize) -> String {
    format!("site-{i:05}")
}

/// Account `bench` and `sites` sites in `store`.
async fn add_sites<S: Store>(store: &S, sites: usize) -> anyhow::Result<()> {
    let account = Account {
        id: "bench".into(),
        name: "Bench".into(),
        partner: None,
        eop_contact_name: None,
        eop_contact_email: None,
    };
    store.add_account(&account, ContractTerm::months_from(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), 24)).await?;
    for i in 0..sites {
        let site = Site {
            id: site_id(i),
            account: "bench".into(),
            name: site_id(i),
            country: "US".parse()?,
            region_group: RegionGroup::Group1,
            site_type: SiteType::Socket,
            cap_bps: None,
        };
        store.add_site(&site).await?;
    }
    Ok(())
}

async fn raw_store_rate(agents: usize, backend: Backend) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    match backend.database()? {
        None => raw_rate(&SqliteStore::open(&dir.path().join("raw.db")).await?, agents).await,
        Some(url) => raw_rate(&PgStore::open(&url).await?, agents).await,
    }
}

async fn raw_rate<S: Store>(store: &S, agents: usize) -> anyhow::Result<(f64, f64)> {
    add_sites(store, agents).await?;
    let bounds = Bounds { now: Utc::now(), max_age: TimeDelta::days(40), max_bps: u64::MAX };
    // What the ingest path commits: one intake per agent's batch, buckets and discard totals.
    let batches: Vec<Intake> = backlog(agents)
        .into_iter()
        .enumerate()
        .map(|(a, buckets)| {
            let buckets = buckets.iter().map(|w| w.validate(&bounds).map(Measured::from)).collect::<Result<_, _>>()?;
            Ok(Intake { site: site_id(a), buckets, ..Intake::default() })
        })
        .collect::<Result<_, tally_common::wire::Refusal>>()
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    let started = Instant::now();
    for group in batches.chunks(GROUP_BATCHES) {
        store.ingest(group).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((seconds, (agents * BUCKETS_PER_AGENT) as f64 / seconds))
}

/// Collector processes (`serve`) on one store with `sites` sites, and one enrolled certificate
/// per site. Several share one PostgreSQL database and one CA (R30).
struct Collector {
    _dir: tempfile::TempDir,
    servers: Vec<(Logged, SocketAddr)>,
    agents: Vec<quinn::ClientConfig>,
}

impl Collector {
    async fn start(sites: usize, backend: Backend, processes: usize) -> anyhow::Result<Collector> {
        let dir = tempfile::tempdir()?;
        let ca_dir = dir.path().join("ca");
        let (ca, _) = Ca::load_or_create(&ca_dir)?;
        let database = backend.database()?;
        let agents = match &database {
            None => enroll_sites(&SqliteStore::open(&dir.path().join("data0/tally.db")).await?, &ca, sites).await?,
            Some(url) => enroll_sites(&PgStore::open(url).await?, &ca, sites).await?,
        };
        let store = database.map(|url| format!("database_url = {url:?}\n")).unwrap_or_default();
        let mut servers = Vec::with_capacity(processes);
        for n in 0..processes {
            let (port, http) = (free_port(), free_port());
            let config = dir.path().join(format!("collector{n}.toml"));
            std::fs::write(
                &config,
                format!(
                    "data_dir = {:?}\n{store}ca_dir = {ca_dir:?}\nquic_listen = \"127.0.0.1:{port}\"\n\
                     http_listen = \"127.0.0.1:{http}\"\nmax_connections = {}\n\
                     log = \"warn,tally_collector=info,tally_collector::agents=warn\"\n",
                    dir.path().join(format!("data{n}")),
                    sites + 100
                ),
            )?;
            let mut command = Command::new(collector_binary());
            command.arg("--config").arg(&config).arg("serve");
            let mut serving = Logged::spawn(command);
            wait_for_healthz(([127, 0, 0, 1], http).into(), &mut serving);
            serving.drain_log();
            servers.push((serving, ([127, 0, 0, 1], port).into()));
        }
        Ok(Collector { _dir: dir, servers, agents })
    }

    /// Where agent `i` connects.
    fn addr(&self, i: usize) -> SocketAddr {
        self.servers[i % self.servers.len()].1
    }

    /// The first collector's process id.
    fn pid(&self) -> u32 {
        self.servers[0].0.pid()
    }

    fn status_kib(&self, field: &str) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status.lines().find(|l| l.starts_with(field)).context("no such field")?;
        Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
    }

    /// User + system CPU seconds so far.
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        let after_name = &stat[stat.rfind(')').context("stat")? + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        Ok(ticks / rustix::param::clock_ticks_per_second() as f64)
    }

    fn endpoints(&self) -> anyhow::Result<Vec<quinn::Endpoint>> {
        (0..self.agents.len().div_ceil(AGENTS_PER_ENDPOINT))
            .map(|_| {
                let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
                rustix::net::sockopt::set_socket_recv_buffer_size(
                    &socket,
                    tally_collector::agents::UDP_RECEIVE_BUFFER,
                )?;
                let runtime = quinn::default_runtime().context("runtime")?;
                Ok(quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)?)
            })
            .collect()
    }

    fn stop(self) -> anyhow::Result<()> {
        for (serving, _) in self.servers {
            serving.stop();
        }
        Ok(())
    }
}

/// The sites, and a client configuration per site with a certificate `ca` signed and `store`
/// recorded.
async fn enroll_sites<S: Store>(store: &S, ca: &Ca, sites: usize) -> anyhow::Result<Vec<quinn::ClientConfig>> {
    add_sites(store, sites).await?;
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?.serialize_request(&key)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.cert_der().to_vec()))?;
    let valid_until = (Utc::now() + TimeDelta::days(30)).date_naive();
    let mut agents = Vec::with_capacity(sites);
    // As the real agent: a keep-alive every 5 s holds the connection between batches.
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    let transport = Arc::new(transport);
    for i in 0..sites {
        let (cert, serial) = ca.sign_request(CertificateRequest::from_der(csr.der())?, &site_id(i), valid_until)?;
        store.add_certificate(&serial, &site_id(i), Utc::now() + TimeDelta::days(30)).await?;
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(
                vec![CertificateDer::from(cert)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport.clone());
        agents.push(config);
    }
    Ok(agents)
}

/// One simulated agent's connection.
struct Link {
    tx: quinn::SendStream,
    rx: quinn::RecvStream,
    buf: Vec<u8>,
    _conn: quinn::Connection,
}

impl Link {
    async fn open(endpoint: &quinn::Endpoint, config: quinn::ClientConfig, addr: SocketAddr) -> anyhow::Result<Link> {
        let conn = endpoint.connect_with(config, addr, "localhost")?.await?;
        let (tx, rx) = conn.open_bi().await?;
        let mut link = Link { tx, rx, buf: Vec::new(), _conn: conn };
        let hello = Hello { protocol_version: PROTOCOL_VERSION, agent_version: "storm".into() };
        link.tx.write_all(&encode(&AgentMessage::Hello(hello))?).await?;
        match link.receive().await? {
            CollectorMessage::WelcomeV2(_) => {}
            other => bail!("expected WelcomeV2, got {other:?}"),
        }
        match link.receive().await? {
            CollectorMessage::Policy(_) => Ok(link),
            other => bail!("expected the site's policy, got {other:?}"),
        }
    }

    async fn receive(&mut self) -> anyhow::Result<CollectorMessage> {
        loop {
            if let Ok((message, used)) = decode::<CollectorMessage>(&self.buf) {
                self.buf.drain(..used);
                return Ok(message);
            }
            let mut chunk = [0u8; 4096];
            match self.rx.read(&mut chunk).await? {
                Some(n) => self.buf.extend_from_slice(&chunk[..n]),
                None => bail!("the collector closed the stream"),
            }
        }
    }

    /// Sends a batch and waits for its ack; every bucket must be accepted.
    async fn ship(&mut self, seq: u64, buckets: Vec<WireBucket>) -> anyhow::Result<()> {
        // As a version-2 agent sends them: stamped (with no policy: these sites are uncapped).
        let buckets = buckets.into_iter().map(|bucket| StampedBucket { bucket, policy_version: None }).collect();
        let batch = StampedBatch { seq, buckets, discarded: DiscardCounters::default() };
        self.tx.write_all(&encode(&AgentMessage::StampedBuckets(batch))?).await?;
        match self.receive().await? {
            CollectorMessage::AckV2(ack) if ack.seq == seq && ack.refused.is_empty() && ack.quarantined.is_empty() => {
                Ok(())
            }
            other => bail!("expected a clean ack of {seq}, got {other:?}"),
        }
    }
}

struct StormResult {
    seconds: f64,
    cpu_seconds: f64,
    peak_rss_mib: f64,
}

async fn storm(agents: usize, backend: Backend, collectors: usize) -> anyhow::Result<StormResult> {
    let collector = Collector::start(agents, backend, collectors).await?;
    let endpoints = collector.endpoints()?;
    let backlogs = backlog(agents);
    let cpu_before = collector.cpu_seconds()?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, buckets) in backlogs.into_iter().enumerate() {
        let (endpoint, config) = (endpoints[i / AGENTS_PER_ENDPOINT].clone(), collector.agents[i].clone());
        let addr = collector.addr(i);
        tasks.spawn(async move {
            let mut link = Link::open(&endpoint, config, addr).await?;
            link.ship(1, buckets).await?;
            anyhow::Ok(link)
        });
    }
    let mut links = Vec::with_capacity(agents);
    while let Some(result) = tasks.join_next().await {
        links.push(result??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = collector.cpu_seconds()? - cpu_before;
    let peak_rss_mib = collector.status_kib("VmHWM:")? / 1024.0;
    drop(links);
    collector.stop()?;
    Ok(StormResult { seconds, cpu_seconds, peak_rss_mib })
}

struct SteadyResult {
    connect_seconds: f64,
    batches: usize,
    rss_mib: f64,
    peak_rss_mib: f64,
    cpu_percent: f64,
}

async fn steady(agents: usize, seconds: u64) -> anyhow::Result<SteadyResult> {
    const PERIOD: Duration = Duration::from_secs(30);
    let collector = Collector::start(agents, Backend::Sqlite, 1).await?;
    let endpoints = collector.endpoints()?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..agents {
        let (endpoint, config) = (endpoints[i / AGENTS_PER_ENDPOINT].clone(), collector.agents[i].clone());
        let addr = collector.addr(i);
        tasks.spawn(async move { Link::open(&endpoint, config, addr).await });
    }
    let mut links = Vec::with_capacity(agents);
    while let Some(result) = tasks.join_next().await {
        links.push(result??);
    }
    let connect_seconds = started.elapsed().as_secs_f64();

    let cpu_before = collector.cpu_seconds()?;
    let window = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let day = BucketStart::first_of_day((Utc::now() - TimeDelta::days(3)).date_naive()).unix();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut link) in links.into_iter().enumerate() {
        // Spread evenly over the period, as sockets that booted at different times are.
        let offset = PERIOD * i as u32 / agents as u32;
        tasks.spawn(async move {
            let mut next = tokio::time::Instant::now() + offset;
            let mut sent = 0;
            while next < deadline {
                tokio::time::sleep_until(next).await;
                let bucket = WireBucket { start: day + 300 * sent as i64, max_bps: 1_000_000, samples: 60 };
                link.ship(sent + 1, vec![bucket]).await?;
                sent += 1;
                next += PERIOD;
            }
            anyhow::Ok((link, sent as usize))
        });
    }
    let mut batches = 0;
    let mut links = Vec::with_capacity(agents);
    while let Some(result) = tasks.join_next().await {
        let (link, sent) = result??;
        batches += sent;
        links.push(link);
    }
    let cpu_percent = 100.0 * (collector.cpu_seconds()? - cpu_before) / window.elapsed().as_secs_f64();
    let rss_mib = collector.status_kib("VmRSS:")? / 1024.0;
    let peak_rss_mib = collector.status_kib("VmHWM:")? / 1024.0;
    drop(links);
    collector.stop()?;
    Ok(SteadyResult { connect_seconds, batches, rss_mib, peak_rss_mib, cpu_percent })
}
