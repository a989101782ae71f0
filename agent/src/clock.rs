//! Where the agent's time comes from: the wall clock for tick alignment and bucket starts (R2),
//! the monotonic clock for elapsed times and rates (R1). Behind a trait so tests can run a whole
//! day in paused tokio time, or an accelerated day across real process restarts.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

pub trait Clock {
    /// The wall clock, UTC.
    fn wall(&self) -> DateTime<Utc>;
    /// A monotonic clock that keeps counting across process restarts within one boot.
    fn monotonic(&self) -> Duration;
    /// How long to sleep, in real time, for `d` of this clock's time.
    fn real(&self, d: Duration) -> Duration {
        d
    }
    /// Sleeps for `d` of this clock's time: on tokio's timer, which paused-time tests control.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        tokio::time::sleep(self.real(d))
    }
    /// Sleeps until the wall clock reads `at` (at once if it is past).
    fn sleep_until(&self, at: DateTime<Utc>) -> impl Future<Output = ()> {
        let wait = (at - self.wall()).to_std().unwrap_or_default();
        self.sleep(wait)
    }
}

/// The machine's clocks: `CLOCK_REALTIME` and `CLOCK_MONOTONIC`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

fn system_monotonic() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

impl Clock for SystemClock {
    fn wall(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        crate::timer::sleep(d)
    }

    fn monotonic(&self) -> Duration {
        system_monotonic()
    }
}

/// The variable that selects [`ScaledClock`]. For tests only: never set it on an appliance.
pub const TEST_CLOCK_VAR: &str = "TALLY_AGENT_TEST_CLOCK";

/// An accelerated clock for tests across process restarts: time runs `scale` times faster from
/// `epoch`, which was at the system monotonic instant `anchor`. Set with
/// `TALLY_AGENT_TEST_CLOCK=EPOCH_UNIX_SECS:ANCHOR_MONOTONIC_NANOS:SCALE`.
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock {
    epoch: DateTime<Utc>,
    anchor: Duration,
    scale: u32,
}

impl ScaledClock {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let bad = || format!("{TEST_CLOCK_VAR}={spec:?}: expected EPOCH_UNIX_SECS:ANCHOR_MONOTONIC_NANOS:SCALE");
        let mut parts = spec.split(':');
        let (Some(epoch), Some(anchor), Some(scale), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let epoch = epoch.parse().ok().and_then(|s| DateTime::from_timestamp(s, 0)).ok_or_else(bad)?;
        let anchor = Duration::from_nanos(anchor.parse().map_err(|_| bad())?);
        let scale = scale.parse().ok().filter(|s| *s > 0).ok_or_else(bad)?;
        Ok(ScaledClock { epoch, anchor, scale })
    }

    /// The system's monotonic reading, to anchor a scaled clock on.
    pub fn now_anchor() -> Duration {
        system_monotonic()
    }
}

impl Clock for ScaledClock {
    fn wall(&self) -> DateTime<Utc> {
        let elapsed = self.monotonic();
        let elapsed = TimeDelta::from_std(elapsed).unwrap_or(TimeDelta::MAX);
        self.epoch.checked_add_signed(elapsed).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn monotonic(&self) -> Duration {
        system_monotonic().saturating_sub(self.anchor).saturating_mul(self.scale)
    }

    fn real(&self, d: Duration) -> Duration {
        d / self.scale
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        crate::timer::sleep(self.real(d))
    }
}
