#!/usr/bin/env bash
# `make run`: Tally on this machine. The collector with its embedded store, and a local agent
# enrolled against it that measures this machine's WAN interfaces (those with a default route).
#
# Everything lives under ./tally-data (TALLY_DATA). Each step checks what exists and creates
# what is missing, so a run that failed half-way can simply be run again. Every process started
# here is stopped on every way out (an error, Ctrl-C, SIGTERM); Ctrl-C exits 0.
#
# TALLY_COUNTRY (default US) is the site's country. In a stand-alone region group (China,
# Vietnam, Morocco: R11) R17 wants a cap on every site and a pool the caps fit in, so the first
# run adds a 10 Gbit/s pool and cap there (no shaping to speak of). TALLY_BIN names a directory
# with both binaries already built (the tests use it); otherwise they are built here.
set -euo pipefail
umask 077 # the configuration holds the operator token; the store and the CA are private
cd "$(dirname "$0")/.."

data=${TALLY_DATA:-./tally-data}
country=${TALLY_COUNTRY:-US}

if [ -n "${TALLY_BIN:-}" ]; then
  bin=$TALLY_BIN
else
  # The first build takes minutes: cargo shows its progress.
  cargo build --release --locked -p tally-collector -p tally-agent
  bin=${CARGO_TARGET_DIR:-target}/release
fi
mkdir -p "$data"

collector_config=$data/collector.toml
agent_config=$data/agent.toml
[ -f "$collector_config" ] || cat >"$collector_config" <<CONF
data_dir = "$data/collector"
quic_listen = "127.0.0.1:4433"
http_listen = "127.0.0.1:8080"
operator_token = "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
CONF
[ -f "$agent_config" ] || cat >"$agent_config" <<CONF
state_dir = "$data/agent"
CONF
setting() { sed -n "s/^$1 = \"\(.*\)\"$/\1/p" "$collector_config"; }
# The operator's token, beside the contact person's, for the examples of the docs.
[ -s "$data/operator-token" ] || setting operator_token >"$data/operator-token"
quic=$(setting quic_listen)
http=$(setting http_listen)
collector() { "$bin/tally-collector" --config "$collector_config" "$@"; }

# Both ports must be free; if not, say which program holds them.
for port in "u UDP $quic" "t TCP $http"; do
  set -- $port
  held=$(ss -Hln"$1"p "sport = :${3##*:}" 2>/dev/null || true)
  if [ -n "$held" ]; then
    echo "make run: $2 port ${3##*:} is in use ($(grep -o 'users:.*' <<<"$held" || echo "by another program")); stop it, or change $collector_config" >&2
    exit 1
  fi
done

# Every background job of this script (a signal can come between starting one and noting it).
stop_all() {
  trap - EXIT INT TERM
  local running
  running=$(jobs -p)
  [ -z "$running" ] && return
  kill -TERM $running 2>/dev/null || true
  wait 2>/dev/null || true
  # The collector's log ends when the collector has ended; wait for its last lines.
  exec 3>&-
  [ -z "${logging:-}" ] || wait "$logging" 2>/dev/null || true
}
trap stop_all EXIT
trap 'exit 0' INT TERM

# Setup: each step only if its result is missing.
if ! collector account list 2>/dev/null | grep -q '^local '; then
  collector account add --id local --name "This machine" \
    --eop-contact-name "Local contact" --eop-contact-email "contact@local.example"
elif collector account list | grep '^local ' | grep -q ' -$'; then
  collector account set --id local --eop-contact-name "Local contact" --eop-contact-email "contact@local.example"
fi
if ! collector site list --account local | grep -q '^local '; then
  case $country in # the stand-alone region groups (R11), which need a pool and a cap (R17)
    CN) group=china ;;
    VN) group=vietnam ;;
    MA) group=morocco ;;
    *) group= ;;
  esac
  cap=()
  if [ -n "$group" ]; then
    year=$(date -u +%Y)
    collector license add --account local --kind bandwidth_pool --region "$group" --quantity 10000 \
      --from "$year-01-01" --to "$((year + 1))-12-31"
    cap=(--cap-mbps 10000)
  fi
  collector site add --account local --id local --name "This machine" --country "$country" --type socket "${cap[@]}"
fi
if [ ! -s "$data/contact-token" ]; then
  (umask 077 && collector token create --role customer --account local --contact >"$data/contact-token.new" 2>/dev/null)
  mv "$data/contact-token.new" "$data/contact-token"
fi

# The collector, and once it listens, the agent. A terminal's Ctrl-C reaches every process of
# the group: `tee` ignores it, so the collector's shutdown lines still reach the log, and it
# ends when the collector does (this script holds no copy of the pipe once the collector runs).
exec 3> >(trap '' INT && exec tee "$data/collector.log" >&2)
logging=$!
"$bin/tally-collector" --config "$collector_config" serve 2>&3 3>&- &
serving=$!
exec 3>&-
until grep -q "ingest listening" "$data/collector.log" 2>/dev/null; do
  kill -0 "$serving" 2>/dev/null || { echo "make run: the collector did not start; see $data/collector.log" >&2; exit 1; }
  sleep 0.2
done
if [ ! -f "$data/agent/identity/client.key" ]; then
  token=$(collector site enroll-token --site local)
  "$bin/tally-agent" enroll --config "$agent_config" --collector "$quic" --token "$token"
fi

"$bin/tally-agent" run --config "$agent_config" &
agent=$!

month=$(date -u +%Y-%m)
cat >&2 <<INFO

Tally runs: the collector (QUIC $quic, HTTP http://$http) and an agent measuring this machine.
The first bucket closes within 5 minutes (it may be partial). Ctrl-C stops both.
  console:  http://$http/ — sign in with the contact person's token: $(cat "$data/contact-token")
            (or the operator's, in $data/operator-token)
  agent:    $bin/tally-agent status --config $agent_config
  buckets:  $bin/tally-collector --config $collector_config site buckets --site local --date $(date -u +%F)
  usage:    $bin/tally-collector --config $collector_config report --account local --month $month
            curl -H "Authorization: Bearer $(setting operator_token)" "http://$http/v1/accounts/local/usage?month=$month"
  orders:   the contact person's token is in $data/contact-token (docs/api.md, "Online orders")

INFO
# `wait` returns when the agent ends or a signal arrives (a foreground program would delay the
# trap until it exits).
wait "$agent"
