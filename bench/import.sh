#!/usr/bin/env bash
# import-buckets benchmark (issue 30): the release collector imports ROWS buckets (default
# 1,000,000: 100 sites × 10,000 five-minute buckets, 35 days each) from one CSV into a new
# SQLite store, then the same file again (every row merged with a stored one), then a file of
# ROWS bad rows (refused, nothing written). Reports the wall time and the peak resident memory
# of each run; the targets are 20 s and 200 MiB for 1,000,000 rows. Checks the store holds ROWS
# buckets after the first run and still after the refused one.
#
#   bench/import.sh                 # prints a Markdown table
#   ROWS=20000 bench/import.sh      # a quicker look
#   TALLY_PREBUILT=DIR ...         # the programs already built in DIR (CI: the test build's)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
SITES=100
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

[ -n "${TALLY_PREBUILT:-}" ] || cargo build --release --locked -q -p tally-collector
collector="${TALLY_PREBUILT:-${CARGO_TARGET_DIR:-target}/release}/tally-collector"
cat > "$work/c.toml" <<CONF
data_dir = "$work/data"
log = "warn"
CONF
admin() { "$collector" --config "$work/c.toml" "$@"; }
admin account add --id acme --name Acme >/dev/null
for s in $(seq 0 $((SITES - 1))); do
  admin site add --account acme --id "s$s" --name "Site $s" --country US --type socket >/dev/null
done

# Rows interleave the sites, as an export sorted by time would; starts from 2026-09-01.
python3 - "$ROWS" "$SITES" "$work" <<'PY'
import sys
rows, sites, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
from datetime import datetime, timedelta, timezone
first = datetime(2026, 9, 1, tzinfo=timezone.utc)
with open(f"{work}/good.csv", "w") as good, open(f"{work}/bad.csv", "w") as bad:
    good.write("site,bucket_start,max_bps,samples\n")
    for i in range(rows):
        slot, site = divmod(i, sites)
        start = (first + timedelta(minutes=5 * slot)).strftime("%Y-%m-%dT%H:%M:%SZ")
        good.write(f"s{site},{start},{(i * 7919) % 900_000_000},60\n")
        bad.write(f"s{site},{start[:-3]}01Z,{i},60\n")
PY

# Runs the import of FILE, printing "seconds peak_kib exit_code".
measure() {
  python3 - "$collector" "$work/c.toml" "$1" <<'PY'
import resource, subprocess, sys, time
collector, config, csv = sys.argv[1:]
started = time.monotonic()
run = subprocess.run([collector, "--config", config, "import-buckets", "--csv", csv], capture_output=True, text=True)
took = time.monotonic() - started
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"{took:.2f} {peak} {run.returncode}")
if run.returncode not in (0, 1) or (run.returncode == 1 and "nothing was imported" not in run.stderr):
    sys.exit(f"import-buckets: {run.stderr}")
PY
}
stored() { admin site buckets --site s0 --date 2026-09-01 --format json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))'; }

read -r new_s new_kib new_rc < <(measure "$work/good.csv")
[ "$new_rc" = 0 ] || { echo "the import failed"; exit 1; }
per_day=$(( ROWS / SITES < 288 ? ROWS / SITES : 288 ))
[ "$(stored)" = "$per_day" ] || { echo "site s0 holds $(stored) buckets of 2026-09-01, expected $per_day"; exit 1; }
read -r again_s again_kib again_rc < <(measure "$work/good.csv")
read -r bad_s bad_kib bad_rc < <(measure "$work/bad.csv")
[ "$bad_rc" = 1 ] || { echo "the bad file was not refused"; exit 1; }
[ "$(stored)" = "$per_day" ] || { echo "the refused import changed the store"; exit 1; }

size=$(stat -c %s "$work/good.csv")
echo
echo "| import-buckets, $ROWS rows ($((size / 1048576)) MiB of CSV) | wall time | peak memory |"
echo "|---|---|---|"
echo "| new buckets, a new store | $new_s s | $((new_kib / 1024)) MiB |"
echo "| the same file again (every row merged) | $again_s s | $((again_kib / 1024)) MiB |"
echo "| $ROWS bad rows (refused: 20 listed, the rest counted) | $bad_s s | $((bad_kib / 1024)) MiB |"
