#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Builds the libFuzzer targets (build-fuzz: clang, ASan+UBSan) and runs each
# for a bounded time, starting from the committed seeds in tests/fuzz/corpus/.
# Prints executions, coverage and findings per target; fails on any finding
# (crash, sanitizer report, leak, timeout, out-of-memory, broken invariant).
#
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_TARGETS   space-separated subset, e.g. "vhdx config" (default: all built)
#   FUZZ_PARALLEL  targets run at once (default 2)
#   FUZZ_OUT       where new corpus entries and findings go (default: a fresh
#                  directory under build-fuzz/fuzz-runs/, kept for inspection)
set -uo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
build=build-fuzz
seconds=${FUZZ_SECONDS:-60}
parallel=${FUZZ_PARALLEL:-2}

all_targets=$(cd "$top/tests/fuzz/corpus" && ls)
targets=
for t in ${FUZZ_TARGETS:-$all_targets}; do
        # fuzz-ctl-args exists only once ctl/args.c does.
        if [ "$t" = ctl-args ] && [ ! -f ctl/args.c ]; then continue; fi
        targets+="$t "
done
# --list: the targets a run would fuzz, one a line (tools/run-tests.sh
# counts each as a result and fails one that did not run).
if [ "${1:-}" = --list ]; then
        printf '%s\n' $targets
        exit 0
fi
if [ ! -d "$build" ]; then
        CC=clang meson setup "$build" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false -Dtests=false >/dev/null \
                || { echo "run-fuzz: meson setup $build failed"; exit 1; }
fi
build_targets=()
for t in $targets; do
        build_targets+=("tests/fuzz/fuzz-$t")
done
ninja -C "$build" "${build_targets[@]}" >/dev/null || { ninja -C "$build" "${build_targets[@]}" | tail -30; echo "run-fuzz: build failed"; exit 1; }

out=${FUZZ_OUT:-$top/$build/fuzz-runs/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"

max_len_for() {
        case $1 in
        vhdx) echo 32768 ;;     # a seed holds a whole VHDX's structures
        partition) echo 4096 ;;
        config) echo 8192 ;;
        *) echo 1024 ;;
        esac
}

# Runs one target; writes "name execs cov findings status" to $out/NAME.summary.
run_one() {
        local t=$1 dir=$out/$1 log=$out/$1.log
        mkdir -p "$dir/corpus" "$dir/findings"
        ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1} \
        UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
        "$build/tests/fuzz/fuzz-$t" \
                -max_total_time="$seconds" -max_len="$(max_len_for "$t")" \
                -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
                -artifact_prefix="$dir/findings/" \
                "$dir/corpus" "$top/tests/fuzz/corpus/$t" >"$log" 2>&1
        local status=$?
        local execs cov findings
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
        findings=$(find "$dir/findings" -type f | wc -l)
        echo "$t ${execs:-0} ${cov:-0} $findings $status" >"$out/$t.summary"
}

running=0
for t in $targets; do
        run_one "$t" &
        running=$((running + 1))
        if [ "$running" -ge "$parallel" ]; then
                wait -n
                running=$((running - 1))
        fi
done
wait

failed=0
printf '%-12s %12s %8s %9s\n' target executions coverage findings
for s in "$out"/*.summary; do
        read -r t execs cov findings status <"$s"
        printf '%-12s %12s %8s %9s\n' "$t" "$execs" "$cov" "$findings"
        if [ "${execs:-0}" -eq 0 ] && [ "$status" -eq 0 ]; then
                failed=1
                echo "fuzz-$t: FAILED: it ran no input; log $out/$t.log"
        elif [ "$findings" -gt 0 ] || [ "$status" -ne 0 ]; then
                failed=1
                echo "fuzz-$t: FAILED (exit $status); findings in $out/$t/findings/, log $out/$t.log:"
                grep -E 'ERROR|invariant failed|SUMMARY' "$out/$t.log" | head -5
        fi
done
[ "$failed" -eq 0 ] && echo "run-fuzz: no findings (${seconds}s per target)"
exit "$failed"
