//! The collector's container image, end to end (root, podman): built by `scripts/image.sh`
//! (`make image`) once for this binary, run with published ports and a named volume.
//!
//! - Admin commands through `podman exec`; a real agent on the host enrolls over the published
//!   UDP port and ships a day's backlog; every bucket is in the store and in the usage report
//!   over the published HTTP port, over HTTPS (a certificate mounted into the container; a
//!   token over plain HTTP from the host would be refused: it is not loopback to the container).
//! - `podman stop` (SIGTERM): the collector exits 0 within 10 s; a new container on the same
//!   volume has everything.
//! - The same on PostgreSQL (`TALLY_DATABASE_URL` at the tests' throwaway cluster), on the
//!   host's network, over plain HTTP on loopback.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use support::FakeTree;
use support::collector::{Logged, assert_same_buckets, seed_backlog};
use support::pg_cluster;
use tally_testkit::skip;

const OPERATOR_TOKEN: &str = "container-operator-token-0123456789abcdef";

/// podman with the flags this kind of machine needs (DESIGN.md: no systemd, hybrid cgroups).
fn podman(args: &[&str]) -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--cgroup-manager=cgroupfs", "--runtime", "/usr/sbin/runc"]).args(args);
    cmd
}

/// `podman run` with the limits root may set here (it lacks CAP_SYS_RESOURCE), and `args`.
fn podman_run(args: &[&str]) -> Command {
    podman(&[&["run", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"], args].concat())
}

fn succeeded(mut cmd: Command) -> String {
    let out: Output = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The image, built once for this binary; `Err` says why there is none here.
fn image() -> Result<&'static str, String> {
    static BUILT: OnceLock<Result<&'static str, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !rustix::process::geteuid().is_root() {
                return Err("running containers needs root".into());
            }
            if Command::new("podman").arg("--version").output().is_err() {
                return Err("podman is not installed (apt-get install podman buildah runc)".into());
            }
            let tag = "localhost/tally-collector:test";
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/image.sh");
            let out = Command::new(script).arg(tag).output().unwrap();
            assert!(out.status.success(), "image build: {}", String::from_utf8_lossy(&out.stderr));
            let bytes: u64 =
                succeeded(podman(&["image", "inspect", "--format", "{{.Size}}", tag])).trim().parse().unwrap();
            assert!(bytes <= 30_000_000, "the image is {bytes} bytes, over 30 MB");
            Ok(tag)
        })
        .clone()
}

fn free_port(udp: bool) -> u16 {
    match udp {
        true => std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(),
        false => std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(),
    }
}

/// A named volume and the containers run on it, removed at the end.
struct Deployment {
    name: String,
    image: &'static str,
    env: Vec<String>,
    /// Host networking (to reach the tests' PostgreSQL on loopback) instead of published ports.
    host_network: bool,
    quic: u16,
    http: u16,
    runs: usize,
    /// The certificate the HTTP listener serves, and the directory mounted with it and its key.
    tls: Option<(Vec<u8>, tempfile::TempDir)>,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for run in 0..self.runs {
            let _ = podman(&["rm", "-f", &format!("{}-{run}", self.name)]).output();
        }
        let _ = podman(&["volume", "rm", "-f", &self.name]).output();
    }
}

impl Deployment {
    /// Published ports, and HTTPS with a certificate made here; or the host's network, on
    /// loopback, in plain HTTP.
    fn new(image: &'static str, label: &str, env: &[String], host_network: bool) -> Deployment {
        let name = format!("tally-test-{label}-{}", std::process::id());
        let (quic, http) = (free_port(true), free_port(false));
        let mut env: Vec<String> = env.to_vec();
        env.extend([
            format!("TALLY_OPERATOR_TOKEN={OPERATOR_TOKEN}"),
            "TALLY_SERVER_NAMES=127.0.0.1".into(),
            // The backlog's buckets are a day old at most; the default bound would do too.
            "TALLY_MAX_BUCKET_AGE_DAYS=40".into(),
        ]);
        let mut tls = None;
        if host_network {
            env.push(format!("TALLY_QUIC_LISTEN=127.0.0.1:{quic}"));
            env.push(format!("TALLY_HTTP_LISTEN=127.0.0.1:{http}"));
        } else {
            let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("tls.crt"), made.cert.pem()).unwrap();
            std::fs::write(dir.path().join("tls.key"), made.signing_key.serialize_pem()).unwrap();
            // Readable by the image's user (uid 65532).
            for (path, mode) in [(dir.path().to_owned(), 0o755), (dir.path().join("tls.key"), 0o644)] {
                std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
            }
            env.push("TALLY_HTTP_TLS_CERT=/etc/tally/tls/tls.crt".into());
            env.push("TALLY_HTTP_TLS_KEY=/etc/tally/tls/tls.key".into());
            tls = Some((made.cert.der().to_vec(), dir));
        }
        Deployment { name, image, env, host_network, quic, http, runs: 0, tls }
    }

    fn current(&self) -> String {
        format!("{}-{}", self.name, self.runs - 1)
    }

    /// Starts a new container on the volume; returns once its health check (the image's
    /// `tally-collector healthcheck`) passes.
    fn start(&mut self) -> Logged {
        let name = format!("{}-{}", self.name, self.runs);
        self.runs += 1;
        let mut args = vec![
            "--detach".to_owned(),
            "--name".into(),
            name.clone(),
            "--volume".into(),
            format!("{}:/data", self.name),
        ];
        if self.host_network {
            args.extend(["--network".into(), "host".into()]);
        } else {
            args.extend(["--publish".into(), format!("127.0.0.1:{}:4433/udp", self.quic)]);
            args.extend(["--publish".into(), format!("127.0.0.1:{}:8080/tcp", self.http)]);
        }
        if let Some((_, dir)) = &self.tls {
            args.extend(["--volume".into(), format!("{}:/etc/tally/tls:ro", dir.path().display())]);
        }
        for var in &self.env {
            args.extend(["--env".into(), var.clone()]);
        }
        args.push(self.image.into());
        succeeded(podman_run(&args.iter().map(String::as_str).collect::<Vec<_>>()));
        let mut cmd = podman(&["logs", "--follow", &name]);
        cmd.stdout(std::process::Stdio::null());
        let log = Logged::spawn(cmd);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !podman(&["exec", &name, "tally-collector", "healthcheck"]).output().unwrap().status.success() {
            assert!(std::time::Instant::now() < deadline, "the container was not healthy within 60 s");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        log
    }

    /// `tally-collector ARGS` inside the running container.
    fn exec(&self, args: &[&str]) -> String {
        let name = self.current();
        succeeded(podman(&[&["exec", name.as_str(), "/usr/bin/tally-collector"], args].concat()))
    }

    /// `podman stop`: SIGTERM, then the time it took and the collector's exit code.
    fn stop(&self) -> (Duration, String) {
        let started = Instant::now();
        succeeded(podman(&["stop", "--time", "10", &self.current()]));
        let took = started.elapsed();
        let code = succeeded(podman(&["inspect", "--format", "{{.State.ExitCode}}", &self.current()]));
        (took, code.trim().to_owned())
    }

    /// The stored buckets of site `hq` at `starts`, read through `site buckets` in the container.
    fn buckets(&self, starts: impl IntoIterator<Item = i64>) -> BTreeMap<i64, u64> {
        let days: std::collections::BTreeSet<String> = starts
            .into_iter()
            .map(|s| chrono::DateTime::from_timestamp(s, 0).unwrap().date_naive().to_string())
            .collect();
        let mut stored = BTreeMap::new();
        for day in days {
            let json = self.exec(&["site", "buckets", "--site", "hq", "--date", &day, "--format", "json"]);
            let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
            for row in rows.as_array().unwrap() {
                let start: chrono::DateTime<chrono::Utc> = row["start"].as_str().unwrap().parse().unwrap();
                stored.insert(start.timestamp(), row["max_bps"].as_u64().unwrap());
            }
        }
        stored
    }

    /// `GET path` with the operator's token on the HTTP port (over HTTPS when it serves it,
    /// trusting only its certificate): status and body.
    fn get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let tcp = std::net::TcpStream::connect(("127.0.0.1", self.http)).unwrap();
        let mut stream: Box<dyn ReadWrite> = match &self.tls {
            None => Box::new(tcp),
            Some((certificate, _)) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(rustls::pki_types::CertificateDer::from(certificate.clone())).unwrap();
                let tls =
                    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                        .with_safe_default_protocol_versions()
                        .unwrap()
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let connection = rustls::ClientConnection::new(Arc::new(tls), name).unwrap();
                Box::new(rustls::StreamOwned::new(connection, tcp))
            }
        };
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {OPERATOR_TOKEN}\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        // Over TLS the server may close without close_notify after an HTTP/1.0 answer: it is whole.
        let _ = stream.read_to_string(&mut answer);
        let status = answer[9..12].parse().unwrap();
        (status, answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
    }
}

trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

/// An account, a site, a real agent enrolled from the host that ships a day's backlog; the
/// container stopped and a new one started on the volume; everything is still there.
fn a_day_survives_the_container(mut deployment: Deployment) {
    let container = deployment.start();
    deployment.exec(&["account", "add", "--id", "acme", "--name", "Acme"]);
    let site = "site add --account acme --id hq --name HQ --country US --type socket";
    deployment.exec(&site.split(' ').collect::<Vec<_>>());
    let token = deployment.exec(&["site", "enroll-token", "--site", "hq"]).trim().to_owned();

    let tree = FakeTree::new();
    // The WAN interface is down, so the agent closes no bucket (R4): it ships the backlog alone.
    let config = tree.write_config(&["wan0"], "");
    let agent = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally-agent"));
        cmd.args(args).arg("--config").arg(&config);
        cmd
    };
    let collector = format!("127.0.0.1:{}", deployment.quic);
    succeeded(agent(&["enroll", "--collector", &collector, "--token", &token]));
    let shipped = seed_backlog(&tree.state(), 288);
    let mut running = Logged::spawn(agent(&["run"]));
    running.until("backlog replayed");
    running.stop();
    assert_same_buckets(&deployment.buckets(shipped.keys().copied()), &shipped);

    // The usage report over the published HTTP port counts them, day by day.
    let mut per_day: BTreeMap<chrono::NaiveDate, u64> = BTreeMap::new();
    for start in shipped.keys() {
        *per_day.entry(chrono::DateTime::from_timestamp(*start, 0).unwrap().date_naive()).or_default() += 1;
    }
    for (day, count) in &per_day {
        let month = day.format("%Y-%m");
        let (status, body) = deployment.get(&format!("/v1/accounts/acme/usage?month={month}"));
        assert_eq!(status, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        let days = report["sites"][0]["days"].as_array().unwrap();
        let shown = days.iter().find(|d| d["date"] == day.to_string()).unwrap();
        assert_eq!(shown["buckets_present"].as_u64(), Some(*count), "{day}");
    }

    let (took, code) = deployment.stop();
    let (_, log) = container.finish();
    assert_eq!(code, "0", "{log}");
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    assert!(log.contains("collector stopped"), "{log}");

    let _again = deployment.start();
    assert_same_buckets(&deployment.buckets(shipped.keys().copied()), &shipped);
    assert!(deployment.exec(&["healthcheck"]).starts_with("healthy"));
    let (took, code) = deployment.stop();
    assert_eq!((code.as_str(), took < Duration::from_secs(10)), ("0", true), "{took:?}");
}

#[test]
fn the_image_keeps_its_data_on_its_volume_across_containers() {
    let image = match image() {
        Ok(image) => image,
        Err(why) => return skip!(&why),
    };
    a_day_survives_the_container(Deployment::new(image, "sqlite", &[], false));
}

#[test]
fn the_image_runs_on_postgresql() {
    let image = match image() {
        Ok(image) => image,
        Err(why) => return skip!(&why),
    };
    let cluster = match pg_cluster::cluster() {
        Ok(cluster) => cluster,
        Err(why) => return skip!(&why),
    };
    // The CA is made once, by `ca init`, on the volume the containers mount (R30).
    let env = [format!("TALLY_DATABASE_URL={}", cluster.database()), "TALLY_CA_DIR=/data/ca".into()];
    let deployment = Deployment::new(image, "postgres", &env, true);
    let init = podman_run(&[
        "--rm",
        "--volume",
        &format!("{}:/data", deployment.name),
        "--env",
        &env[0],
        "--env",
        &env[1],
        "--network",
        "host",
        image,
        "ca",
        "init",
    ]);
    assert!(succeeded(init).starts_with("CA created"));
    a_day_survives_the_container(deployment);
}
