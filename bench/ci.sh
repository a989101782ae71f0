#!/usr/bin/env bash
# Every benchmark once at a reduced size, so that none of them rots: CI runs this before the
# tests. The figures printed here are not docs/benchmarks.md's (those come from the full sizes); what
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

# They run on the test build (`cargo test --workspace`, which .ci/run makes first and make test
# reuses): every program is built once, and a bench target is built like a test of its package,
# with the workspace's features. The figures are a debug build's, so they only show that the
# benchmarks run and check what they check; docs/benchmarks.md's come from release runs at full size.
target_dir=$(cargo metadata --locked --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export TALLY_PREBUILT="$target_dir/debug"
bench "usage engine (SITES=300 ACCOUNTS=10)" \
  env SITES=300 ACCOUNTS=10 cargo test --locked -q --workspace --bench usage
bench "storm (STORM_AGENTS=100 STORM_RUNS=1 STEADY_AGENTS=200 STEADY_SECONDS=5)" \
  env STORM_AGENTS=100 STORM_RUNS=1 STEADY_AGENTS=200 STEADY_SECONDS=5 cargo test --locked -q --workspace --bench storm
bench "console pages (SITES=10 RUNS=20, both stores)" env SITES=10 RUNS=20 cargo test --locked -q --workspace --bench console
bench "orders API (DURATION=2)" env DURATION=2 CONNECTIONS=8 bench/orders.sh
bench "import-buckets (ROWS=20000)" env ROWS=20000 bench/import.sh
bench "agent (DURATION=20)" env DURATION=20 bench/agent.sh
