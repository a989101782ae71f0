//! `tally-agent`: the socket appliance's metering agent. Its measuring loop arrives with its own
//! issue; this binary already builds statically for both appliance targets.

use clap::Parser;

#[derive(Parser)]
#[command(name = "tally-agent", version, about = "Tally's socket agent: measures the WAN into 5-minute buckets")]
struct Cli {}

fn main() -> anyhow::Result<()> {
    Cli::parse();
    Ok(())
}
