#!/usr/bin/env bash
# Orders API benchmark (issue: online orders): the release collector with its SQLite store on
# loopback, wrk listing an account's orders (a page of 20, from 1,000) and creating orders, each
# for DURATION seconds (default 20) with CONNECTIONS connections (default 32) on 2 threads.
# Reports requests per second and latency percentiles. Installs wrk from Debian if missing.
#
#   bench/orders.sh                 # prints a Markdown table
#   DURATION=5 bench/orders.sh      # a quicker look
#   TALLY_PREBUILT=DIR ...         # the programs already built in DIR (CI: the test build's)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-32}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

if ! command -v wrk >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
[ -n "${TALLY_PREBUILT:-}" ] || cargo build --release --locked -q -p tally-collector
collector="${TALLY_PREBUILT:-${CARGO_TARGET_DIR:-target}/release}/tally-collector"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/c.toml" <<CONF
data_dir = "$work/data"
http_listen = "127.0.0.1:$port"
quic_listen = "127.0.0.1:0"
log = "warn"
CONF
admin() { "$collector" --config "$work/c.toml" "$@"; }
admin account add --id acme --name Acme --eop-contact-name Ann --eop-contact-email ann@acme.example >/dev/null
admin site add --account acme --id hq --name HQ --country US --type socket >/dev/null
token=$(admin token create --role customer --account acme --contact 2>/dev/null)
"$collector" --config "$work/c.toml" serve 2>"$work/serve.log" &
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.1; done

today=$(date -u +%F)
body="{\"items\": [{\"type\": \"sockets\", \"start_date\": \"$today\", \"site\": \"hq\", \"model\": \"X1700\", \"quantity\": 2}, {\"type\": \"ip_addresses\", \"start_date\": \"$today\", \"quantity\": 4}]}"
for _ in $(seq 1000); do echo "$body"; done | python3 -c '
import sys, urllib.request
for line in sys.stdin:
    r = urllib.request.Request(sys.argv[1], data=line.encode(), headers={"Authorization": "Bearer " + sys.argv[2]})
    urllib.request.urlopen(r).read()
' "http://127.0.0.1:$port/v1/accounts/acme/orders" "$token"

cat > "$work/create.lua" <<LUA
wrk.method = "POST"
wrk.body = [[$body]]
wrk.headers["Content-Type"] = "application/json"
LUA
run() { # name, extra wrk arguments...
  local name=$1; shift
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Authorization: Bearer $token" "$@" >"$work/$name.txt"
  python3 - "$name" "$work/$name.txt" <<'PY'
import re, sys
name, text = sys.argv[1], open(sys.argv[2]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
def ms(p):
    v, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", text).groups()
    return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(f"| {name} | {rps:,.0f} | {ms(50):.2f} ms | {ms(99):.2f} ms | {errors.group(1) if errors else 0} |")
PY
}
echo "| request | requests/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|"
run "list 20 of 1,000 orders" "http://127.0.0.1:$port/v1/accounts/acme/orders?limit=20&after=500"
run "create an order of 2 items" -s "$work/create.lua" "http://127.0.0.1:$port/v1/accounts/acme/orders"
