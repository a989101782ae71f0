//! Many collectors behind one fleet (R30), end to end: three collector processes on one
//! throwaway PostgreSQL, sharing one CA and listing each other as `public_addresses`, and twenty
//! real agents, each enrolled through one of them.
//!
//! - Enrolling hands each agent the three collectors; each connects to one of its own choice.
//! - One collector SIGKILLed while it ingests: its agents move to the others, and every bucket
//!   of every agent is stored once with its value (R10), none left pending.
//! - A cap changed through one collector's API reaches an agent connected to another within 5 s.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::collector::{Collector, Logged, assert_same_buckets, binary, run, seed_backlog};
use support::pg_cluster;
use support::{FakeTree, field};
use tally_testkit::skip;

const AGENTS: usize = 20;
const OPERATOR_TOKEN: &str = "fleet-operator-token-0123456789abcdef";

/// Three collectors on the database at `url`, with one CA made once, listing each other as
/// `public_addresses`, with account `acme`, its pool and sites `s0`..; only the second logs each
/// commit (the test reads its log while it ingests).
fn fleet(url: String) -> Vec<Collector> {
    let first = Collector::on(Some(url), "");
    let others = [first.beside(""), first.beside("")];
    let members: Vec<Collector> = std::iter::once(first).chain(others).collect();
    let public: Vec<String> = members.iter().map(|m| format!("\"{}\"", m.quic)).collect();
    for (i, member) in members.iter().enumerate() {
        let log = if i == 1 { "info,tally_collector::agents=debug" } else { "info" };
        member.configure(&format!(
            "server_names = [\"127.0.0.1\"]\npublic_addresses = [{}]\noperator_token = \"{OPERATOR_TOKEN}\"\n\
             max_bucket_age_days = 3650\nlog = \"{log}\"",
            public.join(", ")
        ));
    }
    let admin = |line: &str| members[0].ok(&line.split_whitespace().collect::<Vec<_>>());
    admin("account add --id acme --name Acme");
    admin(
        "license add --account acme --kind bandwidth_pool --region group1 --quantity 10000000000 \
         --from 2020-01-01 --to 2099-12-31",
    );
    for n in 0..AGENTS {
        admin(&format!("site add --account acme --id s{n} --name s{n} --country US --type socket"));
    }
    members
}

/// An enrolled agent with three days of backlog.
struct Agent {
    _tree: FakeTree,
    config: PathBuf,
    seeded: BTreeMap<i64, u64>,
}

fn status(config: &Path) -> serde_json::Value {
    let out = run(
        Path::new(env!("CARGO_BIN_EXE_tally-agent")),
        &["status", "--format", "json", "--config", config.to_str().unwrap()],
    );
    serde_json::from_str(&out).unwrap()
}

#[test]
fn agents_fail_over_between_collectors_on_one_database_and_hear_caps_set_on_any() {
    if binary().is_none() {
        return skip!("the collector binary is not built; run `cargo test --workspace`");
    }
    let cluster = match pg_cluster::cluster() {
        Ok(cluster) => cluster,
        Err(why) => return skip!(&why),
    };
    let members = fleet(cluster.database());
    let mut servers: Vec<Option<Logged>> = members.iter().map(|m| Some(m.serve())).collect();
    let quic: Vec<String> = members.iter().map(|m| m.quic.to_string()).collect();

    let agents: Vec<Agent> = (0..AGENTS)
        .map(|n| {
            let tree = FakeTree::new();
            // The WAN is down (not in the tree): what the agent ships is its seeded backlog (R4).
            let config = tree.write_config(&["wan0"], "");
            let through = &members[n % 3];
            let token = through.ok(&["site", "enroll-token", "--site", &format!("s{n}")]);
            let out = Command::new(env!("CARGO_BIN_EXE_tally-agent"))
                .args(["enroll", "--collector", &through.quic.to_string(), "--token", token.trim(), "--config"])
                .arg(&config)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let listed = std::fs::read_to_string(tree.state().join("identity/collector")).unwrap();
            assert_eq!(listed.lines().count(), 3, "enrolling hands over the fleet: {listed}");
            let seeded = seed_backlog(&tree.state(), 3 * 288);
            Agent { _tree: tree, config, seeded }
        })
        .collect();
    let mut running: Vec<Logged> = agents
        .iter()
        .map(|a| {
            // Under `timeout`: an agent that never reconnects ends the test instead of hanging it.
            let mut cmd = Command::new("timeout");
            cmd.arg("300").arg(env!("CARGO_BIN_EXE_tally-agent")).args(["run", "--config"]).arg(&a.config);
            Logged::spawn(cmd)
        })
        .collect();
    let first: Vec<String> = running
        .iter_mut()
        .map(|r| field(&r.until("connected to the collector"), "collector").unwrap().to_owned())
        .collect();
    for member in &quic {
        assert!(first.contains(member), "agents spread over the collectors: {first:?}");
    }

    // The second collector dies while it commits a batch.
    let victim = &quic[1];
    let mut dying = servers[1].take().unwrap();
    dying.until("batch committed");
    dying.kill();
    for (n, agent) in running.iter_mut().enumerate().filter(|(n, _)| first[*n] == *victim) {
        let moved = agent.until("connected to the collector");
        let to = field(&moved, "collector").unwrap();
        assert!(to != victim && quic.iter().any(|q| q == to), "agent {n} moved to {to}");
    }
    // Every agent ends with nothing pending: all it had is acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    for agent in &agents {
        while status(&agent.config)["pending_buckets"] != 0 {
            assert!(Instant::now() < deadline, "{} still pending: {}", agent.config.display(), status(&agent.config));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // A cap set through one collector reaches an agent connected to another within 5 s (R17).
    let (n, on) = (0..AGENTS)
        .map(|n| (n, status(&agents[n].config)["uplink"]["collector"].as_str().unwrap().to_owned()))
        .find(|(_, on)| *on != quic[0])
        .unwrap();
    assert_ne!(on, *victim);
    let set_at = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PATCH", "-H", "Content-Type: application/json"])
        .args(["-H", &format!("Authorization: Bearer {OPERATOR_TOKEN}"), "-d", r#"{"cap_bps": 50000000}"#])
        .arg(format!("http://{}/v1/accounts/acme/sites/s{n}", members[0].http_address()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{}", String::from_utf8_lossy(&out.stderr));
    loop {
        let line = running[n].until("policy received");
        if field(&line, "cap_bps") == Some("50000000") {
            break;
        }
    }
    let took = set_at.elapsed();
    assert!(took < Duration::from_secs(5), "the cap reached the agent on {on} after {took:?}");
    println!("cap set on {} reached the agent on {on} in {took:?}", quic[0]);

    for agent in running {
        agent.stop();
    }
    for server in servers.into_iter().flatten() {
        server.stop();
    }
    // Every bucket of every agent, stored once with its value (R10).
    for (n, agent) in agents.iter().enumerate() {
        let mut stored = BTreeMap::new();
        let days: std::collections::BTreeSet<String> = agent
            .seeded
            .keys()
            .map(|s| chrono::DateTime::from_timestamp(*s, 0).unwrap().format("%F").to_string())
            .collect();
        for day in days {
            let json =
                members[0].ok(&["site", "buckets", "--site", &format!("s{n}"), "--date", &day, "--format", "json"]);
            for row in serde_json::from_str::<serde_json::Value>(&json).unwrap().as_array().unwrap() {
                let start = chrono::DateTime::parse_from_rfc3339(row["start"].as_str().unwrap()).unwrap().timestamp();
                stored.insert(start, row["max_bps"].as_u64().unwrap());
            }
        }
        assert_same_buckets(&stored, &agent.seeded);
    }
}
