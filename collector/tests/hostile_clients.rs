//! Clients that connect and never speak must not lock agents out (issue 15, item 5): 100 QUIC
//! connections without a certificate, topped up as the collector closes them, against
//! `max_connections = 50`, while a real enrolled agent reconnects and ships a bucket every few
//! seconds for a minute.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use support::quic::{Identity, connect, enroll, hello, receive, send};
use support::{Collector, args};
use tally_common::sampler::DiscardCounters;
use tally_common::token::EnrollToken;
use tally_common::wire::{AgentMessage, BucketBatch, CollectorMessage, WireBucket};

const HOLDERS: usize = 100;
const ATTACK: Duration = Duration::from_secs(60);
/// How long the agent may take to connect, say Hello and have a bucket acknowledged.
const AGENT_DEADLINE: Duration = Duration::from_secs(5);

/// One agent session: connect, Hello, one bucket, its ack.
async fn ship(quic: SocketAddr, ca: &[u8], identity: &Identity, seq: u64, start: i64) -> Result<(), String> {
    let (_conn, mut tx, mut rx) = connect(quic, ca, Some(identity)).await?;
    send(&mut tx, &hello()).await;
    let bucket = WireBucket { start, max_bps: 1_000_000 + seq, samples: 60 };
    let batch = BucketBatch { seq, buckets: vec![bucket], discarded: DiscardCounters::default() };
    send(&mut tx, &AgentMessage::Buckets(batch)).await;
    let mut buf = Vec::new();
    loop {
        match receive(&mut rx, &mut buf).await {
            Some(CollectorMessage::AckV2(ack)) if ack.seq == seq && ack.refused.is_empty() => return Ok(()),
            Some(CollectorMessage::WelcomeV2(_) | CollectorMessage::Policy(_)) => {}
            other => return Err(format!("expected the ack of {seq}, got {other:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_speak_do_not_lock_an_agent_out() {
    let c = Collector::with_config("max_connections = 50");
    c.ok(&args("account add --id acme --name Acme"));
    c.ok(&args("site add --account acme --id hq --name HQ --country US --type socket"));
    let token: EnrollToken = c.ok(&args("site enroll-token --site hq")).trim().parse().unwrap();
    let mut serving = c.serve();
    let quic: SocketAddr = c.quic;
    serving.drain_log();
    let ca = CertificateDer::from_pem_file(c.ca_file("ca.pem")).unwrap().to_vec();
    let identity = match enroll(quic, &ca, &token.secret).await {
        (Some(CollectorMessage::Enrolled(e)), key) => (e.cert_der, key),
        (other, _) => panic!("enrollment failed: {other:?}"),
    };
    let hour_ago = (c.now().timestamp() - 3_600) / 300 * 300;
    // The baseline is a collector that has served agents for a while: its caches, threads and
    // allocator arenas are in use before the attack starts.
    for seq in 0..20 {
        ship(quic, &ca, &identity, seq, hour_ago).await.unwrap();
    }
    let baseline = serving.rss_kib();

    let attacking = Arc::new(AtomicBool::new(true));
    let held = Arc::new(AtomicU64::new(0));
    let holders: Vec<_> = (0..HOLDERS)
        .map(|_| {
            let (attacking, held, ca) = (attacking.clone(), held.clone(), ca.clone());
            tokio::spawn(async move {
                while attacking.load(Ordering::Relaxed) {
                    match connect(quic, &ca, None).await {
                        // The stream is opened and never written to: the collector waits for a first frame.
                        Ok((conn, _tx, _rx)) => {
                            held.fetch_add(1, Ordering::Relaxed);
                            conn.closed().await;
                        }
                        // Refused at the limit: an attacker tries again at once, paced a little.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    let (mut sessions, mut slowest, mut peak) = (20u64, Duration::ZERO, baseline);
    while started.elapsed() < ATTACK {
        tokio::time::sleep(Duration::from_secs(2)).await;
        sessions += 1;
        let at = Instant::now();
        let shipped = tokio::time::timeout(AGENT_DEADLINE, ship(quic, &ca, &identity, sessions, hour_ago)).await;
        let took = at.elapsed();
        assert!(matches!(shipped, Ok(Ok(()))), "session {sessions} after {took:?}: {shipped:?}");
        slowest = slowest.max(took);
        peak = peak.max(serving.rss_kib());
    }
    attacking.store(false, Ordering::Relaxed);
    for holder in holders {
        holder.abort();
    }
    let held = held.load(Ordering::Relaxed);
    let during = sessions - 20;
    println!(
        "{during} agent sessions in the attack, slowest {slowest:?}; {held} holder connections; RSS {baseline} → {peak} KiB"
    );
    assert!(held > HOLDERS as u64, "the holders were closed and came back: {held} connections");
    assert!(peak - baseline < 10 * 1024, "the collector's RSS grew by {} KiB", peak - baseline);
}
