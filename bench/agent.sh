#!/usr/bin/env bash
# Agent benchmark (issue: agent measuring): the release agent measuring 4 interfaces for
# DURATION seconds (default 120), beside vnstatd and prometheus-node-exporter measuring the same
# 4 interfaces in the same run. Reports resident memory (peak and steady), CPU time per 5-second
# tick, and the stripped binary size. Needs root (a network namespace with 4 veth interfaces)
# and installs vnstat and prometheus-node-exporter from Debian if they are missing.
#
#   sudo bench/agent.sh            # prints a Markdown table
#   DURATION=30 bench/agent.sh     # a quicker look
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-120}
TICK=5
NS=tally-bench-$$
work=$(mktemp -d)
trap 'ip netns del "$NS" 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

need=()
command -v vnstatd >/dev/null || need+=(vnstat)
command -v prometheus-node-exporter >/dev/null || need+=(prometheus-node-exporter)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
systemctl stop vnstat prometheus-node-exporter 2>/dev/null || true

cargo build --release --locked -q -p tally-agent
target=${CARGO_TARGET_DIR:-target}
agent="$target/release/tally-agent"
cp "$agent" "$work/tally-agent" && strip "$work/tally-agent"
agent_size=$(stat -c %s "$work/tally-agent")
static_size=""
if rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl && command -v musl-gcc >/dev/null; then
  cargo build --release --locked -q -p tally-agent --target x86_64-unknown-linux-musl
  cp "$target/x86_64-unknown-linux-musl/release/tally-agent" "$work/tally-agent-musl" && strip "$work/tally-agent-musl"
  static_size=$(stat -c %s "$work/tally-agent-musl")
fi

ip netns add "$NS"
ip -n "$NS" link set lo up
for i in 0 1 2 3; do   # veth pairs: this kernel may have no dummy interfaces
  ip -n "$NS" link add "wan$i" type veth peer name "peer$i"
  ip -n "$NS" link set "wan$i" up
  ip -n "$NS" link set "peer$i" up
done

# CPU time of all the process's threads in nanoseconds, from the scheduler (the clock-tick
# counters in /proc/PID/stat are 10 ms coarse, far too coarse for microseconds per tick).
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{sum += $1} END {print sum}'; }
main_ns() { awk '{print $1}' "/proc/$1/task/$1/schedstat"; }
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

# measure NAME PID: samples RSS each second; CPU from after a 10 s warm-up to the end.
measure() {
  local name=$1 pid=$2 warm=10 rss_sum=0 rss_n=0 cpu0 cpu1 main0 main1
  sleep "$warm"
  cpu0=$(cpu_ns "$pid"); main0=$(main_ns "$pid")
  for _ in $(seq $((DURATION - warm))); do
    sleep 1
    rss_sum=$((rss_sum + $(kib "$pid" VmRSS))); rss_n=$((rss_n + 1))
  done
  cpu1=$(cpu_ns "$pid"); main1=$(main_ns "$pid")
  local ticks=$(((DURATION - warm) / TICK))
  local us_per_tick=$(( (cpu1 - cpu0) / 1000 / ticks )) main_us=$(( (main1 - main0) / 1000 / ticks ))
  printf '%s %s %s %s %s\n' "$name" "$(kib "$pid" VmHWM)" "$((rss_sum / rss_n))" "$us_per_tick" "$main_us" >> "$work/results"
}

# tally-agent
cat > "$work/agent.toml" <<CONF
state_dir = "$work/agent-state"
wan = ["wan0", "wan1", "wan2", "wan3"]
log = "warn"
CONF
ip netns exec "$NS" "$work/tally-agent" run --config "$work/agent.toml" 2>"$work/agent.log" &
agent_pid=$!

# vnstatd, polling every 5 s like the agent
mkdir -p "$work/vnstat"
cat > "$work/vnstat.conf" <<CONF
DatabaseDir "$work/vnstat"
PollInterval 5
UpdateInterval 5
SaveInterval 5
AlwaysAddNewInterfaces 0
UseLogging 0
CONF
ip netns exec "$NS" vnstatd --initdb --config "$work/vnstat.conf" >/dev/null
for i in 0 1 2 3; do ip netns exec "$NS" vnstat --config "$work/vnstat.conf" --add -i "wan$i" >/dev/null; done
ip netns exec "$NS" vnstatd -n --config "$work/vnstat.conf" >/dev/null 2>&1 &
vnstat_pid=$!

# prometheus-node-exporter with only the netdev collector, scraped every 5 s
ip netns exec "$NS" prometheus-node-exporter --collector.disable-defaults --collector.netdev \
  --web.listen-address=127.0.0.1:19100 >/dev/null 2>&1 &
exporter_pid=$!
( while sleep "$TICK"; do ip netns exec "$NS" curl -s -o /dev/null http://127.0.0.1:19100/metrics || true; done ) &

measure tally-agent "$agent_pid" & m1=$!
measure vnstatd "$vnstat_pid" & m2=$!
measure prometheus-node-exporter "$exporter_pid" & m3=$!
wait $m1 $m2 $m3

vn_size=$(stat -c %s "$(command -v vnstatd)")
ne_size=$(stat -c %s "$(readlink -f "$(command -v prometheus-node-exporter)")")
size_of() { case $1 in tally-agent) echo "$agent_size";; vnstatd) echo "$vn_size";; *) echo "$ne_size";; esac; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }

echo
echo "4 interfaces, ${DURATION} s, one 5-second tick or scrape; $(nproc) cores, $(uname -m)"
echo
echo "| program | peak RSS (MiB) | steady RSS (MiB) | CPU per tick, all threads (µs) | CPU per tick, main thread (µs) | binary (MiB) |"
echo "|---|---|---|---|---|---|"
sort "$work/results" | while read -r name hwm rss us main; do
  echo "| $name | $(mib $((hwm * 1024))) | $(mib $((rss * 1024))) | $us | $main | $(mib "$(size_of "$name")") |"
done
[ -n "$static_size" ] && echo "| tally-agent (static musl) | | | | | $(mib "$static_size") |"
echo
echo "Targets for tally-agent: <= 12 MiB resident, <= 50 µs CPU per tick, stripped binary <= 8 MiB."
