#!/usr/bin/env bash
# Every benchmark once at a reduced size, so that none of them rots: CI runs this after the
# tests. The figures printed here are not the README's (those come from the full sizes); what
# counts is that each benchmark still builds, runs and checks what it checks (the usage bench
# fails if its engine and its single query disagree). Needs root for the agent's benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

# Runs `bench NAME COMMAND...`, printing (and in CI recording, TALLY_CI_PHASES) how long it took.
bench() {
  local name=$1 start=$SECONDS
  shift
  echo "=== $name"
  "$@"
  printf '%-44s %5d s\n' "ci: benchmark, $name" $((SECONDS - start)) | tee -a "${TALLY_CI_PHASES:-/dev/null}"
}

# One release build serves them all: the collector's benches and both programs, built by one
# cargo invocation so that its features are resolved once (separate `cargo build -p` runs would
# each build the collector again). orders.sh and agent.sh then take the programs as built
# (TALLY_PREBUILT); run alone, they build their own.
packages=(-p tally-collector -p tally-agent)
bench "release build" cargo bench --locked -q "${packages[@]}" --no-run
export TALLY_PREBUILT=1
bench "usage engine (SITES=300 ACCOUNTS=10)" \
  env SITES=300 ACCOUNTS=10 cargo bench --locked -q "${packages[@]}" --bench usage
bench "storm (STORM_AGENTS=100 STORM_RUNS=1 STEADY_AGENTS=200 STEADY_SECONDS=5)" \
  env STORM_AGENTS=100 STORM_RUNS=1 STEADY_AGENTS=200 STEADY_SECONDS=5 \
  cargo bench --locked -q "${packages[@]}" --bench storm
bench "console pages (SITES=100 RUNS=20)" env SITES=100 RUNS=20 cargo bench --locked -q "${packages[@]}" --bench console
bench "orders API (DURATION=2)" env DURATION=2 CONNECTIONS=8 bench/orders.sh
bench "agent (DURATION=20)" env DURATION=20 bench/agent.sh
