#!/usr/bin/env bash
# Every benchmark once at a reduced size, so that none of them rots: CI runs this after the
# tests. The figures printed here are not the README's (those come from the full sizes); what
# counts is that each benchmark still builds, runs and checks what it checks (the usage bench
# fails if its engine and its single query disagree). Needs root for the agent's benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "=== usage engine (SITES=300 ACCOUNTS=10)"
SITES=300 ACCOUNTS=10 cargo bench --locked -q -p tally-collector --bench usage
echo "=== storm (STORM_AGENTS=100 STORM_RUNS=1 STEADY_AGENTS=200 STEADY_SECONDS=5)"
STORM_AGENTS=100 STORM_RUNS=1 STEADY_AGENTS=200 STEADY_SECONDS=5 cargo bench --locked -q -p tally-collector --bench storm
echo "=== console pages (SITES=100 RUNS=20)"
SITES=100 RUNS=20 cargo bench --locked -q -p tally-collector --bench console
echo "=== orders API (DURATION=2)"
DURATION=2 CONNECTIONS=8 bench/orders.sh
echo "=== agent (DURATION=20)"
DURATION=20 bench/agent.sh
