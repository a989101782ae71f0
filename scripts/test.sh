#!/usr/bin/env bash
# `make test`: formatting, lints, every test binary of the workspace (a failing binary does not
# hide the others), every fuzz target for FUZZ_SECONDS (20) each, then the collector's tests whose
# collectors follow the test clock again with it at the instants where dates go wrong (the last
# day of a month, the first, 23:59:59 UTC), and the tests of what the store decides again on
# PostgreSQL. Ends with one line per test binary, the skipped tests and their reasons, each
# phase's time, and a total. In CI (`CI` set) a skipped test fails.
set -uo pipefail
cd "$(dirname "$0")/.."


work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TALLY_SKIP_LOG="$work/skipped"
: >"$TALLY_SKIP_LOG"
# The tests whose collectors follow TALLY_TEST_NOW (tally-testkit records them): the clock reruns
# run just those.
export TALLY_CLOCK_USERS="$work/clock-users"
: >"$TALLY_CLOCK_USERS"
failed=0

# Each phase's time, printed with the summary (and CI's own phases, TALLY_CI_PHASES, before).
phases="$work/phases"
: >"$phases"
timed() {
  local name=$1 start=$SECONDS status
  shift
  "$@"
  status=$?
  printf '%-44s %5d s\n' "$name" $((SECONDS - start)) >>"$phases"
  return $status
}

timed "make test: fmt and clippy" eval 'cargo fmt --all --check && cargo clippy --workspace --all-targets --locked -- -D warnings' ||
  exit 1

# Runs `cargo test ARGS...`, its output also kept under $work/NAME.log.
run() {
  local name=$1
  shift
  echo "=== $name: cargo test $*"
  cargo test --locked --no-fail-fast "$@" 2>&1 | tee "$work/$name.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failed=1
}

timed "make test: cargo test --workspace" run all --workspace
# Every fuzz target for FUZZ_SECONDS (20) each, with the binary the tests built (fuzz/src/lib.rs).
target_dir=$(cargo metadata --locked --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
echo "=== fuzzing: each target for ${FUZZ_SECONDS:-20} s"
timed "make test: fuzzing, ${FUZZ_SECONDS:-20} s a target" \
  "$target_dir/debug/tally-fuzz" --seconds "${FUZZ_SECONDS:-20}" --seed "${FUZZ_SEED:-$(date +%s)}" || failed=1
# Business dates (R7, R9, R17, orders): the collector's tests whose collectors follow the test
# clock run again with it shifted (TALLY_TEST_NOW, see tally-testkit) to the instants where dates
# go wrong; tests whose collectors are set to a fixed instant cannot change and are not rerun.
# The binaries built above are run as they are: a `cargo test -p tally-collector` would unify the
# dependencies' features differently and build everything a second time.
collector_tests=$(cargo test --locked --workspace --no-run --message-format=json 2>/dev/null |
  python3 -c '
import json, sys
found = []
for line in sys.stdin:
    m = json.loads(line)
    t = m.get("target", {})
    # profile.test: a test harness (the collector binary itself is an executable too).
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "tally-collector" in m["package_id"] \
            and m["profile"]["test"]:
        found.append((t["kind"][0] == "test", t["kind"][0], t["src_path"].split("/collector/", 1)[1], m["executable"]))
for _, kind, src, exe in sorted(found):  # unit tests first: the summary takes the package from them
    print(kind, src, exe)
')
# Runs, with the environment assignment $1, the collector test binaries whose source matches $2
# (a regular expression); with $3, a file of `BINARY<TAB>TEST` lines, only those tests. Each is
# announced as cargo announces it.
run_collector_tests() {
  local status=0 kind src exe tests
  echo "=== package tally_collector" # for the summary, which names each binary's package
  while read -r kind src exe; do
    [[ $src =~ $2 ]] || continue
    tests=()
    if [ -n "${3:-}" ]; then
      # The long tests of hostile clients hold connections for a minute and read no date: once,
      # above, is enough.
      mapfile -t tests < <(awk -F '\t' -v exe="$exe" '$1 == exe { print $2 }' "$3" | sort -u |
        grep -vxE 'clients_that_never_speak_do_not_lock_an_agent_out|idle_and_slow_clients_are_closed_and_tokenless_bodies_are_never_read')
      [ ${#tests[@]} -gt 0 ] || continue
      tests=(--exact "${tests[@]}")
    fi
    if [ "$kind" = test ]; then echo "     Running $src ($exe)"; else echo "     Running unittests $src ($exe)"; fi
    # Standard input is the list being read: the tests get none.
    (cd collector && env "$1" "$exe" "${tests[@]}") </dev/null || {
      echo "$src exited with status $?"
      status=1
    }
  done <<<"$collector_tests"
  return $status
}
[ -n "$collector_tests" ] || { echo "the collector's test binaries were not found"; failed=1; }
echo "=== tests whose collectors follow the test clock (both crates; the collector's run again): $(sort -u "$TALLY_CLOCK_USERS" | wc -l)"
for at in 2026-12-31T23:59:59Z 2027-02-28T12:00:00Z 2027-03-01T00:00:00Z; do
  echo "=== clock-$at: the collector's tests on the test clock, TALLY_TEST_NOW=$at"
  timed "make test: rerun at $at" run_collector_tests "TALLY_TEST_NOW=$at" . "$TALLY_CLOCK_USERS" 2>&1 |
    tee "$work/clock-$at.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failed=1
done
# The PostgreSQL store (R30): the tests of what the store decides run again with every collector
# on PostgreSQL (a throwaway cluster per test binary; the store's own suite, tests/store.rs,
# runs on both backends above).
# A test binary is a file (tests/x.rs) or a directory of modules (tests/x/main.rs); each named
# must be found, so a binary moved or renamed is never silently left out.
postgres_tests="report api orders notify enforcement"
echo "=== postgres: the report, API, orders, notification and enforcement tests, TALLY_TEST_STORE=postgres"
timed "make test: rerun on PostgreSQL" run_collector_tests TALLY_TEST_STORE=postgres \
  "^tests/(${postgres_tests// /|})(\.rs|/main\.rs)\$" 2>&1 | tee "$work/postgres.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed=1
for name in $postgres_tests; do
  grep -qE "Running tests/$name(\.rs|/main\.rs) " "$work/postgres.log" ||
    { echo "the PostgreSQL rerun found no test binary tests/$name"; failed=1; }
done

echo
echo "=== summary: one line per test binary"
# cargo names each binary on stderr ("Running tests/x.rs (...)", "Doc-tests crate") before its
# "test result:" line on stdout.
awk '
  FNR == 1 { run = FILENAME; sub(/.*\//, "", run); sub(/\.log$/, "", run) }
  # A package'"'"'s unit tests come first, then its integration tests: the first names the package.
  /^=== package / { package = $3 }
  /^ *Running unittests / { package = $NF; gsub(/.*\/|-[0-9a-f]+\)$/, "", package); binary = package " " $3 }
  /^ *Running tests\// { binary = package " " $2 }
  /^ *Doc-tests / { binary = $2 " doc-tests" }
  /^test result:/ {
    printf "%-30s %-42s %s %d passed, %d failed\n", run, binary, $3, $4, $6
    passed += $4; failures += $6
  }
  END { printf "%d %d\n", passed, failures > "/dev/stderr" }
' "$work"/*.log 2>"$work/totals"
read -r passed failures <"$work/totals"
skipped=$(wc -l <"$TALLY_SKIP_LOG")
passed=$((passed - skipped)) # libtest counts a skipped test as passed
if [ "$skipped" -gt 0 ]; then
  echo
  echo "=== skipped tests (each says why; CI fails on any)"
  cat "$TALLY_SKIP_LOG"
fi
[ "$failures" -eq 0 ] || failed=1
echo
echo "=== time of each phase"
[ -z "${TALLY_CI_PHASES:-}" ] || cat "$TALLY_CI_PHASES"
cat "$phases"
if [ -n "${TALLY_CI_STARTED:-}" ]; then
  printf '%-44s %5d s\n' "CI in all (.ci/run)" $(($(date +%s) - TALLY_CI_STARTED))
fi
if [ "$failed" -ne 0 ] && [ "$failures" -eq 0 ]; then
  echo "a test binary did not build or run to its end: see its output above"
  failures=1
fi
echo
echo "total: $passed passed, $failures failed, $skipped skipped"
exit "$failed"
