//! The site's cap (R17) as Linux traffic control on the WAN interfaces, both directions, through
//! the `tc` and `ip` programs, so a field engineer sees exactly this with `tc -s qdisc show`:
//!
//! - egress: `qdisc tbf 7a11: dev IF root rate CAP burst B lat 50ms`;
//! - ingress: an IFB device `ifb-IF`, whose own root is the same tbf, and an `ingress` qdisc on
//!   `IF` with one u32 filter redirecting every packet to it (this kernel has no police action;
//!   an IFB shapes rather than drops, which TCP prefers anyway).
//!
//! Shaping does not change what is measured: the sample still comes from `IF`'s counters (R1).
//! Lifting the cap removes exactly what this module installs (the tbf with handle `7a11:`, the
//! ingress qdisc when our IFB exists, the IFB) and leaves any other qdisc alone.

use std::process::Command;

use tally_common::bandwidth::Bandwidth;
use tally_common::sampler::InterfaceName;

/// The handle of the tbf this module installs: how it recognises its own.
pub const HANDLE: &str = "7a11:";
/// tbf's queue bound, as a delay.
const LATENCY: &str = "50ms";
/// The smallest burst: a 64 KiB segment (GSO/GRO) must fit, or it could never pass.
const MIN_BURST_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{interface}: `{command}` failed: {message}")]
pub struct ShapeError {
    pub interface: String,
    pub command: String,
    pub message: String,
}

impl ShapeError {
    /// Whether the agent lacks CAP_NET_ADMIN, rather than tc failing for another reason.
    pub fn is_permission(&self) -> bool {
        self.message.contains("Operation not permitted")
    }
}

/// How the agent's IFB devices are named: [`IFB_PREFIX`] and their WAN's name.
pub const IFB_PREFIX: &str = "ifb-";

/// The IFB device that carries `wan`'s ingress: `ifb-NAME`, within the 15 bytes a name may have.
pub fn ifb_name(wan: &str) -> String {
    if wan.len() <= 11 {
        return format!("{IFB_PREFIX}{wan}");
    }
    // Long names: a prefix and a hash of the whole, so two long names never share an IFB.
    let hash = wan.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    let prefix: String = wan.chars().take(6).collect();
    format!("{IFB_PREFIX}{prefix}{:05x}", hash & 0xf_ffff)
}

/// tbf's burst for `cap_bps`: 20 ms at the cap, at least [`MIN_BURST_BYTES`].
fn burst_bytes(cap_bps: u64) -> u64 {
    (cap_bps / 8 / 50).max(MIN_BURST_BYTES)
}

/// Shapes `interfaces` to `cap_bps` (`None`: removes the shaping). Returns what was done, for
/// the collector, or the first failure.
pub fn apply(cap_bps: Option<u64>, interfaces: &[InterfaceName]) -> Result<String, ShapeError> {
    for interface in interfaces {
        match cap_bps {
            Some(cap) => shape(interface, cap)?,
            None => unshape(interface)?,
        }
    }
    let names: Vec<&str> = interfaces.iter().map(InterfaceName::as_str).collect();
    Ok(match (cap_bps, names.is_empty()) {
        (_, true) => "no WAN interface to shape yet".into(),
        (Some(cap), false) => format!("{} shaped to {} each way (tbf + IFB)", names.join(", "), Bandwidth(cap)),
        (None, false) => format!("no cap: {} not shaped", names.join(", ")),
    })
}

fn shape(wan: &str, cap_bps: u64) -> Result<(), ShapeError> {
    let ifb = ifb_name(wan);
    let (rate, burst) = (format!("{cap_bps}bit"), burst_bytes(cap_bps).to_string());
    let tbf = |dev: &str| -> Result<(), ShapeError> {
        let args = [
            "qdisc", "replace", "dev", dev, "root", "handle", HANDLE, "tbf", "rate", &rate, "burst", &burst, "latency",
        ];
        run(wan, "tc", &[&args[..], &[LATENCY]].concat())
    };
    tbf(wan)?;
    if !link_exists(&ifb) {
        run(wan, "ip", &["link", "add", &ifb, "type", "ifb"])?;
    }
    run(wan, "ip", &["link", "set", &ifb, "up"])?;
    tbf(&ifb)?;
    run(wan, "tc", &["qdisc", "replace", "dev", wan, "handle", "ffff:", "ingress"])?;
    let redirect = [
        "filter", "replace", "dev", wan, "parent", "ffff:", "prio", "1", "handle", "800::1", "protocol", "all", "u32",
        "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", &ifb,
    ];
    run(wan, "tc", &redirect)
}

fn unshape(wan: &str) -> Result<(), ShapeError> {
    let installed = qdiscs(wan);
    if installed.iter().any(|q| q["kind"] == "tbf" && q["handle"] == HANDLE) {
        run(wan, "tc", &["qdisc", "del", "dev", wan, "root", "handle", HANDLE])?;
    }
    let ifb = ifb_name(wan);
    if link_exists(&ifb) {
        if installed.iter().any(|q| q["kind"] == "ingress") {
            run(wan, "tc", &["qdisc", "del", "dev", wan, "ingress"])?;
        }
        run(wan, "ip", &["link", "del", &ifb])?;
    }
    Ok(())
}

/// The qdiscs of `dev` as `tc -j` shows them (reading needs no privilege).
fn qdiscs(dev: &str) -> Vec<serde_json::Value> {
    Command::new("tc")
        .args(["-j", "qdisc", "show", "dev", dev])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| serde_json::from_slice(&out.stdout).ok())
        .unwrap_or_default()
}

fn link_exists(dev: &str) -> bool {
    Command::new("ip").args(["link", "show", "dev", dev]).output().is_ok_and(|out| out.status.success())
}

fn run(interface: &str, program: &str, args: &[&str]) -> Result<(), ShapeError> {
    let command = format!("{program} {}", args.join(" "));
    tracing::debug!(%command, "traffic control");
    let fail = |message: String| ShapeError { interface: interface.to_owned(), command: command.clone(), message };
    let out = Command::new(program).args(args).output().map_err(|e| fail(format!("cannot run {program}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(fail(stderr.split_whitespace().collect::<Vec<_>>().join(" ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifb_names_fit_and_do_not_collide() {
        assert_eq!(ifb_name("eth0"), "ifb-eth0");
        assert_eq!(ifb_name("wan-uplink1"), "ifb-wan-uplink1");
        let (a, b) = (ifb_name("enp0s31f6abc1"), ifb_name("enp0s31f6abc2"));
        assert!(a.len() <= 15 && b.len() <= 15, "{a} {b}");
        assert_ne!(a, b);
    }

    #[test]
    fn the_burst_holds_a_large_segment_and_scales_with_the_cap() {
        assert_eq!(burst_bytes(20_000_000), MIN_BURST_BYTES);
        assert_eq!(burst_bytes(1_000_000_000), 2_500_000);
    }
}
