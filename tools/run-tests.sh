#!/bin/bash
# The whole test suite: installs dependencies, builds twice (plain and
# ASan+UBSan), runs every unit and integration test in both, then the fuzz
# targets for a bounded time. Ends with one "N passed, N failed, N skipped"
# line. Run as root on Debian 12.
#
# A run is only green when the tests ran: a missing or empty test log, a
# registered test without a result, a fuzz target that did not run all fail
# it (tools/tally-tests.py). Under CI=true (.ci/run sets it) any skip fails.
set -uo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)

bash tools/install-deps.sh || { echo "dependency installation failed"; exit 1; }

passed=0 failed=0 skipped=0

# The real Hyper-V/qemu images live beside the repository, not in it.
if [ ! -d ../shared/fixtures/vhdx ]; then
  echo "note: ../shared/fixtures/vhdx is absent (the fixture images are not part of the repository):"
  echo "      test-vhdx and test_once_fixtures skip their fixture cases$( [ "${CI:-}" = true ] && echo ', which fails the run under CI=true')"
fi

add_counts() {   # "P F S" from tools/tally-tests.py
  local p f s
  read -r p f s <<<"$1"
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-1})); skipped=$((skipped + ${s:-0}))
}

run_suite() {   # $1: build dir, rest: meson setup options
  local dir=$1; shift
  if [ ! -d "$dir" ]; then
    meson setup "$dir" "$@" >/dev/null || { echo "meson setup $dir failed"; failed=$((failed + 1)); return; }
  fi
  ninja -C "$dir" >/dev/null || { ninja -C "$dir" | tail -40; echo "build $dir failed"; failed=$((failed + 1)); return; }
  # A log left by an earlier run must not stand in for this one.
  rm -f "$dir/meson-logs/testlog.json"
  meson test -C "$dir" --list --no-rebuild >"$dir/meson-logs/registered-tests.txt" 2>/dev/null
  meson test -C "$dir" --print-errorlogs --num-processes 2
  add_counts "$(python3 tools/tally-tests.py meson "$dir/meson-logs/testlog.json" "$dir/meson-logs/registered-tests.txt")"
}

run_suite build
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  run_suite build-asan -Db_sanitize=address,undefined -Db_lundef=false

# Each fuzz target is a result of its own; one that did not run fails.
fuzz_out=$top/build-fuzz/fuzz-runs/$(date +%Y%m%d-%H%M%S)
fuzz_targets=$(bash tools/run-fuzz.sh --list)
FUZZ_OUT=$fuzz_out bash tools/run-fuzz.sh
fuzz_status=$?
fuzz_counts=$(python3 tools/tally-tests.py fuzz "$fuzz_out" $fuzz_targets)
add_counts "$fuzz_counts"
if [ "$fuzz_status" -ne 0 ] && [ "${fuzz_counts#* }" = "0 0" ]; then
  echo "run-fuzz.sh failed (exit $fuzz_status) with every target passing: counted failed"
  failed=$((failed + 1))
fi

echo
echo "$passed passed, $failed failed, $skipped skipped"
if [ "${CI:-}" = true ] && [ "$skipped" -gt 0 ]; then
  echo "CI=true: $skipped skipped test(s) fail the run (see the SKIP lines above)"
  exit 1
fi
[ "$failed" -eq 0 ]
