#!/usr/bin/env bash
# `make run`: Tally on this machine. The collector with its embedded store, and a local agent
# enrolled against it that measures this machine's WAN interfaces (those with a default route).
# Everything lives under ./tally-data; a second run reuses it. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -q -p tally-collector -p tally-agent
bin=${CARGO_TARGET_DIR:-target}/release
data=./tally-data
mkdir -p "$data"

collector_config=$data/collector.toml
agent_config=$data/agent.toml
[ -f "$collector_config" ] || cat > "$collector_config" <<CONF
data_dir = "$data/collector"
quic_listen = "127.0.0.1:4433"
http_listen = "127.0.0.1:8080"
operator_token = "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
CONF
[ -f "$agent_config" ] || cat > "$agent_config" <<CONF
state_dir = "$data/agent"
CONF
collector() { "$bin/tally-collector" --config "$collector_config" "$@"; }

first_run=false
[ -f "$data/collector/tally.db" ] || first_run=true
if $first_run; then
  collector account add --id local --name "This machine"
  collector site add --account local --id local --name "This machine" --country "${TALLY_COUNTRY:-US}" --type socket
fi

collector serve 2> >(tee "$data/collector.log" >&2) &
collector_pid=$!
trap 'kill $collector_pid 2>/dev/null; wait $collector_pid 2>/dev/null' EXIT
# The collector is ready once it logs that ingest listens.
until grep -q "ingest listening" "$data/collector.log" 2>/dev/null; do
  kill -0 $collector_pid 2>/dev/null || { echo "the collector did not start" >&2; exit 1; }
  sleep 0.2
done

if [ ! -f "$data/agent/identity/client.key" ]; then
  token=$(collector site enroll-token --site local)
  "$bin/tally-agent" enroll --config "$agent_config" --collector 127.0.0.1:4433 --token "$token"
fi

token=$(sed -n 's/^operator_token = "\(.*\)"$/\1/p' "$collector_config")
cat >&2 <<INFO
collector: http://127.0.0.1:8080/healthz, QUIC 127.0.0.1:4433
usage:     $bin/tally-collector --config $collector_config report --account local --month $(date -u +%Y-%m)
           curl -H "Authorization: Bearer $token" "http://127.0.0.1:8080/v1/accounts/local/usage?month=$(date -u +%Y-%m)"
agent:     $bin/tally-agent status --config $agent_config
INFO
"$bin/tally-agent" run --config "$agent_config"
