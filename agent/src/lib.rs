//! tally-agent as a library: `main.rs` parses the command line and calls [`run`]; tests call the
//! same function with a clock and a shutdown future of their own.
//!
//! - [`config`]: the configuration file, validated before anything is opened.
//! - [`clock`]: wall and monotonic time, behind a trait for paused and accelerated tests.
//! - [`netif`]: which interfaces are the WAN, and their counters, speed, ifindex, boot id.
//! - [`measure`]: the 5-second loop around `tally-common`'s sampler and bucketizer.
//! - [`store`]: sled: closed buckets waiting for the collector, and the state between ticks.
//! - [`uplink`]: enrollment, and shipping closed buckets to the collector.
//! - [`lan`]: the capture that finds the LAN's devices (R29).
//! - [`enforce`], [`shaper`]: the site's cap (R17) as traffic control on the WAN.
//! - [`status`], [`replay`]: the `status` and `replay` commands.
//! - [`others`]: other agents running on this socket; [`doctor`]: the installer's pre-flight check.
//! - [`timer`]: timers that wake the thread once, for the tick and the uplink's QUIC.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod clock;
pub mod config;
pub mod doctor;
pub mod enforce;
pub mod journal;
pub mod lan;
pub mod link_stats;
pub mod measure;
pub mod netif;
pub mod others;
pub mod replay;
pub mod route;
pub mod shaper;
pub mod status;
pub mod store;
pub mod timer;
pub mod uplink;

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use clock::Clock;
use config::Config;
use measure::{Meter, Notify};
use store::Store;

/// `tally-agent X.Y.Z`, as logs and the collector see it.
pub const AGENT_VERSION: &str = concat!("tally-agent ", env!("CARGO_PKG_VERSION"));

/// Opens the store (moving a corrupt one aside), serves `status`, and measures until `shutdown`.
pub async fn run(
    config: Config,
    clock: &(impl Clock + Clone + Send + Sync + 'static),
    shutdown: impl Future<Output = ()>,
    notify: &impl Notify,
) -> anyhow::Result<()> {
    let opened = Store::open(&config.state_dir, config.max_pending_buckets())?;
    if let Some((aside, why)) = &opened.moved_aside {
        tracing::error!(
            moved_to = %aside.display(),
            error = %why,
            "the store would not open (corrupt files); it was moved aside and a fresh store started"
        );
    }
    if opened.restored > 0 {
        tracing::error!(
            restored = opened.restored,
            "{} closed buckets missing from the store (damaged files, or closed while the disk was full) were restored from the journal",
            opened.restored
        );
    }
    if opened.journal_damaged > 0 {
        tracing::error!(
            damaged = opened.journal_damaged,
            "{} records of the journal of closed buckets were damaged and skipped: a bucket the store also lost is lost",
            opened.journal_damaged
        );
    }
    let status = Arc::new(Mutex::new(status::Status::default()));
    let socket = config.status_socket();
    let _ = std::fs::remove_file(&socket);
    match tokio::net::UnixListener::bind(&socket) {
        Ok(listener) => {
            tokio::spawn(status::serve(listener, status.clone()));
        }
        Err(e) => {
            tracing::warn!(socket = %socket.display(), error = %e, "`tally-agent status` will not reach this agent")
        }
    }
    let identity = uplink::Identity::load(&config.state_dir).unwrap_or_else(|why| {
        // Measuring goes on: the buckets wait for a new enrollment.
        tracing::error!("the socket's identity is unusable: {why}; closed buckets are kept meanwhile");
        None
    });
    let store = Rc::new(RefCell::new(opened.store));
    let state_dir = config.state_dir.clone();
    let wans: Vec<String> = netif::NetPaths::from_config(&config)
        .default_route_interfaces()
        .iter()
        .map(|w| w.to_string())
        .chain(config.wan.iter().map(|w| w.to_string()))
        .collect();
    let lans: Vec<String> = config.lan.iter().map(|l| l.to_string()).collect();
    let today = clock.wall().date_naive();
    let kept = store.borrow().lan_day(today).map(|kept| kept.devices);
    let devices = lan::Devices::new(kept.unwrap_or_else(|| lan::DeviceDay::new(today)));
    let own = lan::own_addresses(&config.sysfs_net);
    let watched = lan::watch(
        &lan::interfaces(&config.sysfs_net, &lans, &wans),
        own.clone(),
        config.max_lan_devices_per_day,
        {
            let clock = clock.clone();
            move || clock.wall()
        },
        devices.clone(),
        status.clone(),
    );
    if let Some(minutes) = config.lan_arp_sweep_minutes.filter(|_| !watched.is_empty()) {
        lan::sweep_every(watched, std::time::Duration::from_secs(60 * u64::from(minutes)));
    }
    let mut meter = Meter::new(config, store.clone(), status.clone(), devices)?;
    // One shutdown for both halves: the meter saves its state, the uplink closes its connection.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let closed = meter.closed();
    let (policies, received) = tokio::sync::watch::channel(None);
    let (reports, to_report) = tokio::sync::watch::channel(None);
    let enforcer = enforce::run(
        store.clone(),
        clock,
        status.clone(),
        received,
        meter.wans(),
        reports,
        until_stopped(stopped.clone()),
    );
    let uplink = async {
        match identity {
            Some(identity) => {
                tracing::info!(site = %identity.site, collectors = %identity.collectors.join(" "), "enrolled: shipping buckets to the collector");
                let link = uplink::Link {
                    state_dir,
                    store: store.clone(),
                    status: status.clone(),
                    closed,
                    policies,
                    reports: to_report,
                    own,
                };
                uplink::run(identity, link, clock, until_stopped(stopped.clone())).await
            }
            None => {
                tracing::warn!("not enrolled: closed buckets are kept until `tally-agent enroll` is run");
                Ok(())
            }
        }
    };
    let signal = async {
        shutdown.await;
        let _ = stop.send(true);
    };
    let (measured, shipped, (), ()) =
        tokio::join!(meter.run(clock, until_stopped(stopped.clone()), notify), uplink, enforcer, signal);
    let _ = std::fs::remove_file(&socket);
    shipped?;
    Ok(measured?)
}
