//! Other agents on this socket: `run` without `--config` beside a running agent would measure the
//! same interfaces into a second store, so it refuses and names the agent already running.

use std::path::Path;

/// A running `tally-agent run` other than this process: its pid and command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningAgent {
    pub pid: u32,
    pub command: String,
}

/// Every other process whose program is this one's (by name) and that runs `run`, from `/proc`.
pub fn running_agents() -> Vec<RunningAgent> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found: Vec<RunningAgent> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own)
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let program = Path::new(args.first()?).file_name()?.to_str()?;
            (program == "tally-agent" && args.iter().skip(1).any(|a| a == "run"))
                .then(|| RunningAgent { pid, command: args.join(" ") })
        })
        .collect();
    found.sort_by_key(|a| a.pid);
    found
}

/// Why `run` without `--config` must not start, when other agents run (each named).
pub fn refuse_a_second_agent() -> Option<String> {
    let running = running_agents();
    if running.is_empty() {
        return None;
    }
    let named: Vec<String> = running.iter().map(|a| format!("pid {}: {}", a.pid, a.command)).collect();
    Some(format!(
        "an agent is already running ({}): a second one without --config would measure this socket into \
         another store. Stop it first (systemctl stop tally-agent), or give --config to run one on purpose",
        named.join("; ")
    ))
}
