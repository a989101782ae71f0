//! The site's cap (R17) on this socket: the policy the collector pushes, applied to the WAN
//! interfaces with [`shaper`](crate::shaper), and reported back.
//!
//! The policy is kept in the store, so a restart re-applies it before the collector is reached;
//! it is applied again whenever the WAN interfaces change (one appears, or comes back with a new
//! ifindex after being re-created, which takes its qdiscs with it). A failure (no
//! CAP_NET_ADMIN, most likely) is reported with `ok = false` and logged once at ERROR;
//! measuring goes on regardless: enforcement never changes what is measured.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use tally_common::bandwidth::Bandwidth;
use tally_common::enforcement::CapSetting;
use tally_common::sampler::InterfaceName;
use tally_common::time::rfc3339;
use tally_common::wire::{Policy, PolicyApplied};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::shaper;
use crate::status::{self, PolicyStatus, SharedStatus};
use crate::store::Store;

/// The WAN interfaces as the meter last found them: name and ifindex.
pub type WanSet = Vec<(InterfaceName, u32)>;

/// Applies each policy from `policies` (and the stored one at start) to the interfaces from
/// `wans`, and publishes every outcome on `reports`, until `shutdown`. Each version applied is
/// recorded with its time by `clock`, for the stamps on the buckets (R26).
pub async fn run(
    store: Rc<RefCell<Store>>,
    clock: &impl Clock,
    status: SharedStatus,
    mut policies: watch::Receiver<Option<Policy>>,
    mut wans: watch::Receiver<WanSet>,
    reports: watch::Sender<Option<PolicyApplied>>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut policy = match store.borrow().policy() {
        Ok(policy) => policy,
        Err(e) => {
            tracing::error!(error = %e, "the saved policy does not read: waiting for the collector's");
            None
        }
    };
    let mut interfaces = wans.borrow_and_update().clone();
    let mut due = policy.is_some();
    let mut logged = None;
    loop {
        if let (true, Some(current)) = (due, policy) {
            let report = apply(current, &interfaces).await;
            let at = clock.wall();
            log(&report, current, &mut logged);
            let setting = CapSetting { since: at, cap_bps: current.cap_bps, version: current.version };
            if report.ok
                && let Err(e) = store.borrow().record_applied(setting)
            {
                tracing::error!(error = %e, "the applied policy could not be recorded: buckets go unstamped");
            }
            status::update(&status, |s| {
                s.policy = Some(PolicyStatus {
                    version: current.version,
                    cap_bps: current.cap_bps,
                    applied: Some(report.ok),
                    detail: report.detail.clone(),
                    at: Some(rfc3339(at)),
                })
            });
            reports.send_replace(Some(report));
            due = false;
        }
        tokio::select! {
            () = &mut shutdown => return,
            Ok(()) = policies.changed() => {
                let Some(received) = *policies.borrow_and_update() else { continue };
                if policy != Some(received)
                    && let Err(e) = store.borrow().save_policy(&received)
                {
                    tracing::error!(error = %e, "the policy could not be saved: a restart will wait for the collector's");
                }
                policy = Some(received);
                due = true;
            }
            Ok(()) = wans.changed() => {
                let found = wans.borrow_and_update().clone();
                due = found != interfaces;
                interfaces = found;
            }
        }
    }
}

/// Runs the shaper off the runtime's thread (it waits for `tc`), so ticks stay on time.
async fn apply(policy: Policy, interfaces: &WanSet) -> PolicyApplied {
    let names: Vec<InterfaceName> = interfaces.iter().map(|(name, _)| name.clone()).collect();
    let outcome = tokio::task::spawn_blocking(move || shaper::apply(policy.cap_bps, &names)).await;
    match outcome {
        Err(e) => {
            PolicyApplied { version: policy.version, ok: false, detail: format!("the shaper did not finish: {e}") }
        }
        Ok(outcome) => applied(policy, outcome),
    }
}

/// The report of one application of `policy`.
fn applied(policy: Policy, outcome: Result<String, shaper::ShapeError>) -> PolicyApplied {
    match outcome {
        Ok(detail) => PolicyApplied { version: policy.version, ok: true, detail },
        // The same words for every version, so the failure is logged once.
        Err(e) if e.is_permission() => PolicyApplied {
            version: policy.version,
            ok: false,
            detail: format!(
                "{}: cannot change traffic control ({}): the agent needs CAP_NET_ADMIN to shape \
                 (the systemd unit grants it)",
                e.interface, e.message
            ),
        },
        Err(e) => PolicyApplied { version: policy.version, ok: false, detail: e.to_string() },
    }
}

/// What [`log`] last said: a success by its version and detail, a failure by its words alone.
type Logged = Option<(bool, u64, String)>;

/// A success at INFO, a failure at ERROR, each once: the same policy applied again (at start,
/// then pushed by the collector) or the same failure for another version is a DEBUG line.
fn log(report: &PolicyApplied, policy: Policy, logged: &mut Logged) {
    let cap = policy.cap_bps.map_or("none".to_owned(), |c| Bandwidth(c).to_string());
    let said = (report.ok, if report.ok { report.version } else { 0 }, report.detail.clone());
    if logged.as_ref() == Some(&said) {
        if report.ok {
            tracing::debug!(version = report.version, detail = %report.detail, "policy applied again, as before");
        } else {
            tracing::debug!(version = report.version, error = %report.detail, "policy not applied (as before)");
        }
        return;
    }
    if report.ok {
        tracing::info!(version = report.version, %cap, detail = %report.detail, "policy applied");
    } else {
        tracing::error!(version = report.version, %cap, error = %report.detail, "policy NOT applied: still measuring");
    }
    *logged = Some(said);
}
