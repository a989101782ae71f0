#!/usr/bin/env bash
# Agent benchmark: the release agent measuring 4 interfaces for DURATION seconds (default 120),
# enrolled and connected to a release collector (its QUIC keep-alives count) and watching a LAN
# on which LAN_RATE frames a second flow (default 1,000; one in a hundred a device's ARP, the
# rest traffic its kernel filter drops), beside vnstatd and prometheus-node-exporter measuring
# the same 4 interfaces in the same run, and a loop that does nothing but sleep 5 s at a time
# (the floor of anything woken once a tick on this machine). Reports resident memory (peak and
# steady), CPU time per 5-second tick (all threads, the main thread), wake-ups per minute
# (voluntary context switches) of the program's own threads, the same two figures for sled's I/O
# pool on their own, and the stripped binary size; then the ratios the footprint targets are
# stated in. Needs root (a network namespace with veth interfaces) and installs vnstat and
# prometheus-node-exporter from Debian if they are missing.
#
#   sudo bench/agent.sh            # prints a Markdown table
#   DURATION=30 bench/agent.sh     # a quicker look
#   RUNS=2 bench/agent.sh          # two runs one after the other, their ratios side by side
#   TALLY_PREBUILT=DIR ...         # the programs already built in DIR (CI: the test build's)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-1}
if [ "$RUNS" -gt 1 ]; then
  # Each run on its own (a fresh namespace, collector and agent), the programs built once.
  [ -n "${TALLY_PREBUILT:-}" ] || cargo build --release --locked -q -p tally-agent -p tally-collector
  ratios=$(mktemp)
  for run in $(seq "$RUNS"); do
    echo "## Run $run of $RUNS"
    RUNS=1 RATIOS_FILE="$ratios" TALLY_PREBUILT="${TALLY_PREBUILT:-${CARGO_TARGET_DIR:-target}/release}" "$0"
  done
  echo
  echo "## tally-agent beside vnstatd, run by run"
  echo
  printf '| measure |'; for run in $(seq "$RUNS"); do printf ' run %s |' "$run"; done; echo ' target |'
  printf '|---|'; for _ in $(seq "$RUNS"); do printf -- '---|'; done; echo '---|'
  awk -F'\t' -v runs="$RUNS" '{ key[$1] = $3; if (!($1 in row)) { order[n++] = $1 } row[$1] = row[$1] " " $2 " |" }
    END { for (i = 0; i < n; i++) printf "| %s |%s %s |\n", order[i], row[order[i]], key[order[i]] }' "$ratios"
  rm -f "$ratios"
  exit 0
fi
DURATION=${DURATION:-120}
LAN_RATE=${LAN_RATE:-1000}
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

target=${CARGO_TARGET_DIR:-target}
[ -n "${TALLY_PREBUILT:-}" ] || cargo build --release --locked -q -p tally-agent -p tally-collector
agent="${TALLY_PREBUILT:-$target/release}/tally-agent"
collector="${TALLY_PREBUILT:-$target/release}/tally-collector"
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
ip -n "$NS" link add lan0 type veth peer name lanpeer
ip -n "$NS" link set lan0 up
ip -n "$NS" link set lanpeer up

# Per thread: its id, its class (main; sled, sled's I/O pool; own, the program's other threads),
# CPU time in nanoseconds from the scheduler (the clock-tick counters in /proc/PID/stat are 10 ms
# coarse, far too coarse for microseconds per tick) and voluntary context switches (wake-ups).
threads() {
  local pid=$1 t tid class
  for t in /proc/"$pid"/task/*; do
    tid=${t##*/}
    class=own; [ "$tid" = "$pid" ] && class=main
    case $(cat "$t/comm" 2>/dev/null) in sled-io*) class=sled;; esac
    echo "$tid $class $(awk '{print $1}' "$t/schedstat" 2>/dev/null || echo 0) \
      $(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status" 2>/dev/null || echo 0) $(tr ' ' _ < "$t/comm")"
  done
}
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

# measure NAME PID: samples RSS each second; CPU and wake-ups from after a 10 s warm-up to the
# end, per class of thread (a thread that started meanwhile counts from zero).
measure() {
  local name=$1 pid=$2 warm=10 rss_sum=0 rss_n=0
  sleep "$warm"
  threads "$pid" > "$work/$name.t0"
  for _ in $(seq $((DURATION - warm))); do
    sleep 1
    rss_sum=$((rss_sum + $(kib "$pid" VmRSS))); rss_n=$((rss_n + 1))
  done
  threads "$pid" > "$work/$name.t1"
  local seconds=$((DURATION - warm))
  awk -v name="$name" -v hwm="$(kib "$pid" VmHWM)" -v rss=$((rss_sum / rss_n)) -v s="$seconds" -v tick="$TICK" '
    NR == FNR { cpu[$1] = $3; woke[$1] = $4; next }
    { dc = $3 - cpu[$1]; dw = $4 - woke[$1]
      if ($2 == "sled") { sled_cpu += dc; sled_woke += dw } else { all += dc; own_woke += dw }
      if ($2 == "main") main += dc }
    END { ticks = s / tick; per_min = 60 / s
          printf "%s %d %d %d %d %d %d %d\n", name, hwm, rss, (all + sled_cpu) / 1000 / ticks, main / 1000 / ticks,
            own_woke * per_min, sled_cpu / 1000 / ticks, sled_woke * per_min }' \
    "$work/$name.t0" "$work/$name.t1" >> "$work/results"
  # Each thread's share, for where the time goes (THREADS=1).
  awk -v name="$name" -v s="$seconds" -v tick="$TICK" 'NR == FNR { cpu[$1] = $3; woke[$1] = $4; next }
    { printf "%s thread %s (%s): %d µs per tick, %d wake-ups per minute\n", name, $5, $2,
        ($3 - cpu[$1]) / 1000 / (s / tick), ($4 - woke[$1]) * 60 / s }' "$work/$name.t0" "$work/$name.t1" >> "$work/threads"
}

# The collector, in the namespace, with account acme and site hq for the agent to enroll as.
cat > "$work/collector.toml" <<CONF
data_dir = "$work/collector"
quic_listen = "127.0.0.1:4433"
http_listen = "127.0.0.1:0"
server_names = ["127.0.0.1"]
log = "warn,tally_collector::cli=info"
CONF
admin() { "$collector" --config "$work/collector.toml" "$@" >/dev/null; }
admin account add --id acme --name Acme
admin site add --account acme --id hq --name HQ --country US --type socket
token=$("$collector" --config "$work/collector.toml" site enroll-token --site hq)
ip netns exec "$NS" "$collector" --config "$work/collector.toml" serve 2>"$work/collector.log" &
until grep -q "ingest listening" "$work/collector.log"; do sleep 0.1; done

# tally-agent, enrolled, its LAN lan0
cat > "$work/agent.toml" <<CONF
state_dir = "$work/agent-state"
wan = ["wan0", "wan1", "wan2", "wan3"]
lan = ["lan0"]
log = "warn"
CONF
ip netns exec "$NS" "$work/tally-agent" enroll --collector 127.0.0.1:4433 --token "$token" --config "$work/agent.toml" >/dev/null
ip netns exec "$NS" "$work/tally-agent" run --config "$work/agent.toml" 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 100); do
  ip netns exec "$NS" "$work/tally-agent" status --format json --config "$work/agent.toml" 2>/dev/null |
    grep -q '"connected"' && break
  sleep 0.1
done

# The LAN's traffic: LAN_RATE frames a second into lan0, in bursts each 10 ms; one in a hundred
# an ARP request from one of 50 devices, the rest UDP datagrams (not DHCP) the filter drops.
ip netns exec "$NS" python3 - "$LAN_RATE" "$DURATION" <<'PY' &
import socket, sys, time
rate, duration = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("lanpeer", 0))
def device(n): return bytes([0x02, 0x1b, 0x21, 0, 4, n])
def arp(n): return b"\xff" * 6 + device(n) + b"\x08\x06" + bytes([0, 1, 8, 0, 6, 4, 0, 1]) + device(n) + bytes([10, 0, 0, n]) + bytes(6) + bytes([10, 0, 0, 1])
def udp(n): return b"\xff" * 6 + device(n) + b"\x08\x00" + bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, n, 255, 255, 255, 255, 0, 9, 0, 9, 0, 8, 0, 0])
frames = [arp(i % 50 + 1) if i % 100 == 0 else udp(i % 50 + 1) for i in range(1000)]
burst, start, sent = max(1, rate // 100), time.monotonic(), 0
while time.monotonic() - start < duration:
    for _ in range(burst):
        s.send(frames[sent % len(frames)])
        sent += 1
    slot = start + sent / rate
    time.sleep(max(0, slot - time.monotonic()))
PY

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

# the floor: woken every 5 s, and nothing else
python3 -c 'import time
while True: time.sleep(5)' &
floor_pid=$!

measure tally-agent "$agent_pid" & m1=$!
measure vnstatd "$vnstat_pid" & m2=$!
measure prometheus-node-exporter "$exporter_pid" & m3=$!
measure "sleep-5s-loop" "$floor_pid" & m4=$!
wait $m1 $m2 $m3 $m4

vn_size=$(stat -c %s "$(command -v vnstatd)")
ne_size=$(stat -c %s "$(readlink -f "$(command -v prometheus-node-exporter)")")
size_of() { case $1 in tally-agent) echo "$agent_size";; vnstatd) echo "$vn_size";; sleep-5s-loop) echo 0;; *) echo "$ne_size";; esac; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }

echo
if grep -q ERROR "$work/agent.log"; then echo "the agent logged errors:"; cat "$work/agent.log"; fi
echo
echo "4 interfaces, ${DURATION} s, one 5-second tick or scrape; the agent connected to a collector, ${LAN_RATE} LAN frames/s; $(nproc) cores, $(uname -m)"
echo
echo "| program | peak RSS (MiB) | steady RSS (MiB) | CPU per tick, all threads (µs) | CPU per tick, main thread (µs) | wake-ups per minute, own threads | sled pool: CPU per tick (µs) | sled pool: wake-ups per minute | binary (MiB) |"
echo "|---|---|---|---|---|---|---|---|---|"
sort "$work/results" | while read -r name hwm rss us main woke sled_us sled_woke; do
  sled="| | |"; [ "$name" = tally-agent ] && sled="| $sled_us | $sled_woke |"
  size=$(mib "$(size_of "$name")"); [ "$name" = sleep-5s-loop ] && size=""
  echo "| $name | $(mib $((hwm * 1024))) | $(mib $((rss * 1024))) | $us | $main | $woke $sled $size |"
done
[ -n "$static_size" ] && echo "| tally-agent (static musl) | | | | | | | | $(mib "$static_size") |"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
read -r _ _ agent_rss agent_all agent_main agent_woke sled_us sled_woke < <(grep '^tally-agent ' "$work/results")
read -r _ _ _ vn_all vn_main vn_woke _ _ < <(grep '^vnstatd ' "$work/results")
read -r _ _ _ _ floor_main _ _ _ < <(grep '^sleep-5s-loop ' "$work/results")
# Each measure of the footprint's targets: its name, this run's figure, the target.
{
  printf 'main thread CPU per tick ÷ vnstatd\t%s×\t≤ 0.5×\n' "$(ratio "$agent_main" "$vn_main")"
  printf 'all threads CPU per tick ÷ vnstatd\t%s×\t≤ 1.2×\n' "$(ratio "$agent_all" "$vn_all")"
  printf "sled's I/O pool: CPU per tick, wake-ups a minute\t%s µs, %s\t≤ 50 µs, ≤ 20\n" "$sled_us" "$sled_woke"
  printf "own threads' wake-ups ÷ vnstatd\t%s×\t≤ 1.5×\n" "$(ratio "$agent_woke" "$vn_woke")"
  printf 'steady RSS\t%s MiB\t≤ 6 MiB\n' "$(mib $((agent_rss * 1024)))"
  printf 'stripped binary\t%s MiB\t≤ 8 MiB\n' "$(mib "$agent_size")"
} > "$work/ratios"
echo
echo "| tally-agent | this run | target |"
echo "|---|---|---|"
awk -F'\t' '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$work/ratios"
echo
echo "The floor (a loop that only sleeps 5 s) ÷ vnstatd: $(ratio "$floor_main" "$vn_main"); tally-agent's main thread ÷ the floor: $(ratio "$agent_main" "$floor_main")."
if [ -n "${RATIOS_FILE:-}" ]; then cat "$work/ratios" >> "$RATIOS_FILE"; fi
case "$agent" in
*/debug/*) echo "These programs are a debug build (TALLY_PREBUILT=$TALLY_PREBUILT): the figures show the benchmark runs, not how the release agent compares." ;;
esac
if [ "${THREADS:-0}" = 1 ]; then echo; sort "$work/threads"; fi
