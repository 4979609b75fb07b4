#!/bin/bash
# The whole test suite: installs dependencies, builds twice (plain and
# ASan+UBSan), runs every unit and integration test in both, then the fuzz
# targets for a bounded time. Ends with one "N passed, N failed, N skipped"
# line. Run as root on Debian 12.
set -uo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)

bash tools/install-deps.sh || { echo "dependency installation failed"; exit 1; }

passed=0 failed=0 skipped=0

tally() {   # $1: meson build dir
  local counts
  counts=$(python3 - "$1/meson-logs/testlog.json" <<'PY'
import json, sys
p = f = s = 0
try:
    for line in open(sys.argv[1]):
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"): p += 1
        elif r == "SKIP": s += 1
        else: f += 1
except FileNotFoundError:
    f += 1
print(p, f, s)
PY
)
  read -r p f s <<<"$counts"
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
}

run_suite() {   # $1: build dir, rest: meson setup options
  local dir=$1; shift
  if [ ! -d "$dir" ]; then
    meson setup "$dir" "$@" >/dev/null || { echo "meson setup $dir failed"; failed=$((failed + 1)); return; }
  fi
  ninja -C "$dir" >/dev/null || { ninja -C "$dir" | tail -40; echo "build $dir failed"; failed=$((failed + 1)); return; }
  meson test -C "$dir" --print-errorlogs --num-processes 2
  tally "$dir"
}

run_suite build
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  run_suite build-asan -Db_sanitize=address,undefined -Db_lundef=false

if [ -x tools/run-fuzz.sh ]; then
  if bash tools/run-fuzz.sh; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
fi

echo
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
