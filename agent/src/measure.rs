//! The measuring loop: every 5 s, on wall-clock multiples of 5 s (R2), read the WAN counters,
//! turn them into a sample with `tally-common`'s sampler (R1, R3), fold samples into 5-minute
//! buckets (R4), and put each closed bucket in the store.
//!
//! The rules live in `tally-common`; this module does the I/O around them: reading counters,
//! logging for field engineers, saving state (each minute and at shutdown, not each tick: flash
//! wear), re-discovering interfaces each minute, and feeding the systemd watchdog.

use std::cell::{Ref, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::PoisonError;
use std::time::Duration;

use chrono::{DateTime, Days, TimeDelta, Utc};
use tally_common::bandwidth::Bandwidth;
use tally_common::bucket::{Bucket, Bucketizer};
use tally_common::sampler::{
    Anomaly, DiscardCounters, InterfaceName, InterfaceReading, Interval, MAX_INTERFACES, NoSample, Sampler, TickReading,
};
use tally_common::time::{TICK_SECS, next_tick, rfc3339};

use crate::clock::Clock;
use crate::config::Config;
use crate::enforce::WanSet;
use crate::lan::SharedDevices;
use crate::netif::{CounterSource, NetPaths, Wan, counter_source};
use crate::status::{self, BucketView, InterfaceStatus, SampleView, SharedStatus};
use crate::store::{Stopping, Store, StoreError};

/// How often the open bucket and the last counters are saved, and interfaces re-checked.
pub const SAVE_EVERY: Duration = Duration::from_secs(60);

/// Notifications for the service manager.
pub trait Notify {
    /// The first tick is scheduled.
    fn ready(&self);
    /// A tick completed: the loop is alive.
    fn alive(&self);
}

/// No service manager (tests, a terminal).
#[derive(Debug, Clone, Copy)]
pub struct NoNotify;

impl Notify for NoNotify {
    fn ready(&self) {}
    fn alive(&self) {}
}

/// The agent's measuring state.
#[derive(Debug)]
pub struct Meter {
    config: Config,
    paths: NetPaths,
    /// Where each tick's counters come from: one read of every interface.
    counters: Box<dyn CounterSource>,
    /// Shared with the uplink, on the same thread; never borrowed across an `.await`.
    store: Rc<RefCell<Store>>,
    /// Woken when a bucket closes, for the uplink.
    closed: Rc<tokio::sync::Notify>,
    /// The WAN interfaces found, for the shaper.
    found: tokio::sync::watch::Sender<WanSet>,
    sampler: Sampler,
    bucketizer: Bucketizer,
    discards: DiscardCounters,
    wans: Vec<Wan>,
    readings: heapless::Vec<InterfaceReading, MAX_INTERFACES>,
    boot_id: u128,
    status: SharedStatus,
    /// Today's devices on the LAN (R29), from the capture threads: saved with the state.
    devices: SharedDevices,
    /// What the last save wrote: the open bucket, the sampler, the discard counters.
    saved: Option<(Option<Bucket>, Sampler, DiscardCounters)>,
    /// This run has ticked: its first interval spans the time the agent was not running.
    ticked: bool,
}

impl Meter {
    /// Resumes from what the store saved.
    pub fn new(
        config: Config,
        store: Rc<RefCell<Store>>,
        status: SharedStatus,
        devices: SharedDevices,
    ) -> Result<Self, StoreError> {
        let paths = NetPaths::from_config(&config);
        let (sampler, open, discards) = {
            let store = store.borrow();
            // A saved open bucket that is pending already closed after that save: the pending
            // copy holds every sample of it.
            let open = store.open_bucket()?.filter(|b| !store.is_pending(b.start).unwrap_or(false));
            (store.sampler()?, open, store.discards()?)
        };
        let meter = Meter {
            sampler,
            bucketizer: Bucketizer::restore(open),
            discards,
            closed: Rc::new(tokio::sync::Notify::new()),
            found: tokio::sync::watch::channel(WanSet::new()).0,
            boot_id: paths.boot_id(),
            counters: counter_source(&paths),
            paths,
            config,
            store,
            wans: Vec::new(),
            readings: heapless::Vec::new(),
            status,
            devices,
            saved: None,
            ticked: false,
        };
        status::update(&meter.status, |s| {
            s.running = true;
            s.agent_version = crate::AGENT_VERSION.into();
            s.store = meter.config.store_dir().display().to_string();
            s.open_bucket = meter.bucketizer.open().map(BucketView::from);
            s.discarded = meter.discards;
        });
        Ok(meter)
    }

    pub fn store(&self) -> Ref<'_, Store> {
        self.store.borrow()
    }

    /// Notified each time buckets close.
    pub fn closed(&self) -> Rc<tokio::sync::Notify> {
        self.closed.clone()
    }

    /// The WAN interfaces, each time they change.
    pub fn wans(&self) -> tokio::sync::watch::Receiver<WanSet> {
        self.found.subscribe()
    }

    /// Runs until `shutdown` completes, then saves the open bucket and the last counters.
    pub async fn run(
        &mut self,
        clock: &impl Clock,
        shutdown: impl Future<Output = ()>,
        notify: &impl Notify,
    ) -> Result<(), StoreError> {
        self.discover();
        self.log_start()?;
        let mut tick_at = next_tick(clock.wall());
        let mut last_save = clock.monotonic();
        notify.ready();
        tokio::pin!(shutdown);
        loop {
            let wait = (tick_at - clock.wall()).to_std().unwrap_or_default();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = clock.sleep(wait) => {}
            }
            // The tick we woke for; after a wall-clock step, the one nearest to the new time.
            let now = clock.wall();
            let tick = next_tick(now - TimeDelta::milliseconds(TICK_SECS * 500));
            self.tick(tick, clock.monotonic())?;
            notify.alive();
            if clock.monotonic().saturating_sub(last_save) >= SAVE_EVERY {
                self.save_if_changed()?;
                self.discover();
                last_save = clock.monotonic();
            }
            tick_at = tick + TimeDelta::seconds(TICK_SECS);
        }
        self.save()?;
        let Stopping { dropped, lost } = self.store.borrow_mut().before_stop()?;
        self.log_dropped(&dropped);
        if !lost.is_empty() {
            let starts: Vec<String> = lost.iter().map(|b| b.start.to_string()).collect();
            tracing::error!(
                lost = lost.len(),
                starts = %starts.join(" "),
                "{} closed buckets are lost with this stop: the disk is full and they were only in memory",
                lost.len()
            );
        }
        tracing::info!(
            open_start = self.bucketizer.open().map(|b| b.start.to_string()),
            open_max_bps = self.bucketizer.open().map(|b| b.max_bps),
            pending = self.store.borrow().pending_count(),
            "stopping: {}",
            if self.store.borrow().full().is_some() {
                "the disk is full, the open bucket and last counters are not saved"
            } else {
                "open bucket and last counters saved"
            }
        );
        Ok(())
    }

    /// One tick: read, sample, bucket, store.
    pub fn tick(&mut self, wall: DateTime<Utc>, monotonic: Duration) -> Result<(), StoreError> {
        self.readings.clear();
        if let Err(e) = self.counters.refresh() {
            // Every interface then reads as gone for this tick, and is looked up again.
            tracing::warn!(error = %e, "the interfaces' counters could not be read");
        }
        for wan in &mut self.wans {
            if let Some(reading) = wan.read(&*self.counters, &self.paths, &self.config) {
                // `discover` keeps at most MAX_INTERFACES, so this cannot overflow.
                let _ = self.readings.push(reading);
            }
        }
        let reading = TickReading { wall, monotonic, boot_id: self.boot_id, interfaces: &self.readings };
        let after_start = !std::mem::replace(&mut self.ticked, true);
        let Some(interval) = self.sampler.tick(&reading, |anomaly| log_anomaly(anomaly, after_start)) else {
            return Ok(());
        };
        self.record(&interval)
    }

    fn record(&mut self, interval: &Interval) -> Result<(), StoreError> {
        match interval.outcome {
            Ok(sample) => tracing::debug!(
                start = %rfc3339(interval.start), up_bps = sample.up_bps, down_bps = sample.down_bps, bps = sample.bps(), "sample"
            ),
            Err(NoSample::Discarded(reason)) => self.discards.count(reason),
            Err(NoSample::NothingMeasured) => {}
        }
        let closed = self.bucketizer.push(interval);
        if !closed.is_empty() {
            let dropped = self.store.borrow_mut().add_closed(&closed)?;
            self.save()?;
            self.closed.notify_one();
            for bucket in &closed {
                tracing::info!(
                    start = %bucket.start,
                    max = %Bandwidth(bucket.max_bps),
                    max_bps = bucket.max_bps,
                    valid_samples = bucket.samples,
                    // Said only when more than the buckets just closed wait: a backlog.
                    pending = Some(self.store.borrow().pending_count()).filter(|p| *p > closed.len()),
                    "bucket closed"
                );
            }
            self.log_dropped(&dropped);
        }
        let pending = if closed.is_empty() { None } else { Some(self.store.borrow().pending_summary()?) };
        status::update(&self.status, |s| {
            s.last_sample = Some(SampleView::from(interval));
            s.open_bucket = self.bucketizer.open().map(BucketView::from);
            s.discarded = self.discards;
            if let Some(pending) = pending {
                s.set_pending(pending);
            }
        });
        Ok(())
    }

    fn log_dropped(&self, dropped: &[Bucket]) {
        for bucket in dropped {
            tracing::error!(
                start = %bucket.start,
                max_bps = bucket.max_bps,
                retention_days = self.config.retention_days,
                "oldest unsent bucket dropped: the collector has been unreachable for longer than the retention"
            );
        }
    }

    /// The minute's save, skipped when nothing it writes changed since the last: the open
    /// bucket, the discard counters, the counters themselves (not the time they were read at)
    /// and the LAN's days. An idle socket then writes nothing, and wakes no store thread, for
    /// hours; the price is that after a crash (not a stop, which saves) the first interval of the
    /// restarted agent spans back to the last save and, over a minute long, is discarded (R3).
    fn save_if_changed(&mut self) -> Result<(), StoreError> {
        let lan_changed = self.devices.lock().unwrap_or_else(PoisonError::into_inner).has_changes();
        let unchanged = self.saved.as_ref().is_some_and(|(open, sampler, discards)| {
            *open == self.bucketizer.open().copied()
                && *discards == self.discards
                && sampler.same_counters(&self.sampler)
        });
        if unchanged && !lan_changed {
            tracing::trace!("nothing changed since the last save");
            return Ok(());
        }
        self.save()
    }

    /// Saves the open bucket, the last counters, the discard counters and the LAN's days that
    /// changed (R29), which the uplink is then told of. Days not saved (a full disk) are kept for
    /// the next save.
    pub fn save(&mut self) -> Result<(), StoreError> {
        // Today on the agent's clock, as the LAN's devices last saw it.
        let (days, today) = {
            let mut devices = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
            (devices.take_changed(), devices.today.day)
        };
        let saved = self.store.borrow_mut().save_state(self.bucketizer.open(), &self.sampler, &self.discards, &days);
        if !days.is_empty() {
            if matches!(saved, Ok(true)) {
                let oldest = today - Days::new(u64::from(self.config.retention_days));
                let dropped = self.store.borrow().drop_lan_days_before(oldest)?;
                if dropped > 0 {
                    tracing::error!(days = dropped, "LAN devices of days older than the retention dropped unsent");
                }
                self.closed.notify_one();
            } else {
                self.devices.lock().unwrap_or_else(PoisonError::into_inner).put_back(days);
            }
        }
        if saved? {
            self.saved = Some((self.bucketizer.open().copied(), self.sampler.clone(), self.discards));
        }
        let open = self.bucketizer.open();
        tracing::debug!(
            open_start = open.map(|b| b.start.to_string()),
            open_max_bps = open.map(|b| b.max_bps),
            "state saved"
        );
        Ok(())
    }

    /// Finds the WAN interfaces (configured, or carrying a default route) and logs changes.
    fn discover(&mut self) {
        let names: Vec<InterfaceName> =
            if self.config.wan.is_empty() { self.paths.default_route_interfaces() } else { self.config.wan.clone() };
        let mut wans: Vec<Wan> = names.iter().filter_map(|n| Wan::open(&self.paths, n, &self.config)).collect();
        if wans.len() > MAX_INTERFACES {
            tracing::error!(
                found = wans.len(),
                ignored = ?wans[MAX_INTERFACES..].iter().map(|w| w.name.as_str()).collect::<Vec<_>>(),
                "more WAN interfaces than the agent measures (at most {MAX_INTERFACES}): list the right ones in `wan`"
            );
            wans.truncate(MAX_INTERFACES);
        }
        for wan in &wans {
            let known = self.wans.iter().find(|w| w.name == wan.name);
            if known.is_none_or(|k| k.ifindex != wan.ifindex || k.cap != wan.cap) && !self.wans.is_empty() {
                tracing::info!(interface = %wan.name, "WAN interface found: {}", wan.describe());
            }
        }
        for old in &self.wans {
            if !wans.iter().any(|w| w.name == old.name) {
                tracing::warn!(interface = %old.name, "WAN interface is gone: not measured until it comes back");
            }
        }
        for name in names.iter().filter(|n| !wans.iter().any(|w| &w.name == *n)) {
            if self.config.wan.contains(name) {
                tracing::debug!(interface = %name, "configured WAN interface does not exist (yet)");
            }
        }
        self.wans = wans;
        let found: WanSet = self.wans.iter().map(|w| (w.name.clone(), w.ifindex)).collect();
        self.found.send_if_modified(|known| {
            let changed = *known != found;
            *known = found;
            changed
        });
        status::update(&self.status, |s| s.interfaces = self.wans.iter().map(InterfaceStatus::from).collect());
    }

    fn log_start(&self) -> Result<(), StoreError> {
        let source = if self.config.wan.is_empty() { "interfaces with a default route" } else { "configured `wan`" };
        if self.wans.is_empty() {
            tracing::warn!(
                "no WAN interface to measure ({source}: none found); re-checking every {} s",
                SAVE_EVERY.as_secs()
            );
        } else {
            let described: Vec<String> = self.wans.iter().map(Wan::describe).collect();
            tracing::info!("measuring {} ({source})", described.join(", "));
        }
        let store = self.store.borrow();
        let pending = store.pending_summary()?;
        tracing::info!(
            store = %self.config.store_dir().display(),
            pending = pending.count,
            oldest = pending.oldest.as_deref().unwrap_or("-"),
            open_start = self.bucketizer.open().map(|b| b.start.to_string()),
            open_max_bps = self.bucketizer.open().map(|b| b.max_bps),
            "store opened"
        );
        status::update(&self.status, |s| {
            s.set_pending(pending);
            s.dropped_buckets = store.dropped().unwrap_or_default();
        });
        Ok(())
    }
}

/// Every anomaly once, at WARN, with its interface and values (R3).
/// An anomaly at WARN, but for what a start explains at INFO: the first interval of a run spans
/// the time the agent was stopped (or the reboot), and is discarded as expected.
fn log_anomaly(anomaly: Anomaly, after_start: bool) {
    let interface = match &anomaly {
        Anomaly::Counter { interface, .. }
        | Anomaly::IfindexChanged { interface, .. }
        | Anomaly::TooManyInterfaces { interface } => Some(interface.as_str()),
        Anomaly::Elapsed { .. } | Anomaly::BootIdChanged => None,
    };
    let expected = after_start && matches!(anomaly, Anomaly::Elapsed { .. } | Anomaly::BootIdChanged);
    match (anomaly.discard_reason(), expected) {
        (Some(reason), true) => tracing::info!(
            reason = reason.as_str(),
            "the first interval after the start spans the time the agent was not running: discarded, as expected"
        ),
        (None, true) => tracing::info!("{anomaly} (the agent starts after a reboot, as expected)"),
        (Some(reason), false) => tracing::warn!(interface, reason = reason.as_str(), "interval discarded: {anomaly}"),
        (None, false) => tracing::warn!(interface, "{anomaly}"),
    }
}
