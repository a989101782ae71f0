//! Timers that wake the agent once. tokio's timer wheel reaches a deadline seconds away by
//! stages: a 5-second sleep wakes the thread at the wheel's 4-second and 64-millisecond slot
//! boundaries before its own, three wake-ups where one will do. A timer here is a `timerfd`
//! (`CLOCK_MONOTONIC`) in tokio's reactor: the kernel wakes the thread at the deadline only.
//! The meter's tick sleeps on one ([`sleep`]), and so do quinn's timers ([`QuinnRuntime`]: the
//! uplink's keep-alives and idle timeout).

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};
use tokio::io::unix::AsyncFd;

/// A one-shot `timerfd` timer in tokio's reactor.
pub struct Timer {
    fd: AsyncFd<OwnedFd>,
    deadline: Instant,
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer").field("deadline", &self.deadline).finish()
    }
}

impl Timer {
    /// A timer due at `deadline`; needs a tokio runtime with I/O enabled.
    pub fn new(deadline: Instant) -> io::Result<Timer> {
        let fd =
            rustix::time::timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)?;
        // Deprecated for inner types whose descriptor may change under the reactor; an `OwnedFd`
        // owned by the `AsyncFd` never does, and its replacement (`register`) is `unsafe`, which
        // this workspace forbids.
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd)?;
        let mut timer = Timer { fd, deadline };
        timer.set(deadline)?;
        Ok(timer)
    }

    /// Moves the deadline (without a wake-up: the kernel's timer is only reprogrammed).
    pub fn set(&mut self, deadline: Instant) -> io::Result<()> {
        self.deadline = deadline;
        // A zero value would disarm the timer: a deadline already past is a nanosecond away.
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_nanos(1));
        let value = Timespec { tv_sec: left.as_secs() as i64, tv_nsec: i64::from(left.subsec_nanos()) };
        let spec = Itimerspec { it_interval: Timespec { tv_sec: 0, tv_nsec: 0 }, it_value: value };
        rustix::time::timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
        Ok(())
    }

    /// Ready once the deadline has passed.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if Instant::now() >= self.deadline {
                return Poll::Ready(());
            }
            let Ok(mut ready) = ready!(self.fd.poll_read_ready(cx)) else {
                // The reactor lost the timer: no way to wait for it, so it is due now.
                return Poll::Ready(());
            };
            // The expiration count is not needed: the deadline decides.
            let mut count = [0u8; 8];
            let _ = rustix::io::read(self.fd.get_ref(), &mut count);
            ready.clear_ready();
        }
    }
}

thread_local! {
    /// The timer of the last [`sleep`] on this thread, kept for the next: the meter sleeps once a
    /// tick, and reprogramming one timer costs a system call where a new one costs five. (One
    /// thread, one runtime: the agent's.)
    static SPARE: RefCell<Option<Timer>> = const { RefCell::new(None) };
}

/// Sleeps for `d` on a [`Timer`] (on tokio's when no timer can be made).
pub async fn sleep(d: Duration) {
    let deadline = Instant::now() + d;
    let timer = match SPARE.with(|spare| spare.borrow_mut().take()) {
        Some(mut timer) => timer.set(deadline).map(|()| timer),
        None => Timer::new(deadline),
    };
    match timer {
        Ok(mut timer) => {
            std::future::poll_fn(|cx| timer.poll_expired(cx)).await;
            SPARE.with(|spare| *spare.borrow_mut() = Some(timer));
        }
        Err(_) => tokio::time::sleep(d).await,
    }
}

impl quinn::AsyncTimer for Timer {
    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        let timer = self.get_mut();
        if timer.set(deadline).is_err() {
            timer.deadline = Instant::now();
        }
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().poll_expired(cx)
    }
}

/// quinn's tokio runtime with [`Timer`]s, and the system's monotonic clock as its `now` (the
/// timers' clock).
#[derive(Debug)]
pub struct QuinnRuntime;

impl quinn::Runtime for QuinnRuntime {
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn quinn::AsyncTimer>> {
        match Timer::new(deadline) {
            Ok(timer) => Box::pin(timer),
            Err(_) => quinn::TokioRuntime.new_timer(deadline),
        }
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        quinn::TokioRuntime.spawn(future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        quinn::TokioRuntime.wrap_udp_socket(socket)
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}
