#!/usr/bin/env bash
# bench/fuzz.sh TARGET SECONDS [BUILD_DIR] - run one libFuzzer target for a bounded time.
#
# TARGET is a name of tests/fuzz/fuzz_<TARGET>.c (router, range, cursor, storage,
# config, probe, http). Builds BUILD_DIR (default build-fuzz: clang,
# -DTESSERA_FUZZ=ON) with -j1 if needed, fuzzes with the seed corpus
# tests/fuzz/corpus/TARGET (read only) plus a working corpus in
# BUILD_DIR/fuzz-work/TARGET, and prints the executions and crashes at the end.
# A crash input is left as BUILD_DIR/fuzz-work/crash-TARGET-*; add it to the seed
# corpus once fixed. Prints numbers; never a pass/fail test.
set -euo pipefail

target=${1:?usage: bench/fuzz.sh TARGET SECONDS [BUILD_DIR]}
seconds=${2:?usage: bench/fuzz.sh TARGET SECONDS [BUILD_DIR]}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${3:-$root/build-fuzz}
seeds=$root/tests/fuzz/corpus/$target
work=$build/fuzz-work/$target

[ -f "$root/tests/fuzz/fuzz_$target.c" ] || { echo "no target tests/fuzz/fuzz_$target.c" >&2; exit 2; }
if [ ! -f "$build/CMakeCache.txt" ]; then
    CC=clang cmake -S "$root" -B "$build" -DTESSERA_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j1 --target "fuzz_$target" >/dev/null
mkdir -p "$work"

# The HTTP target runs a server with threads: leaks of libmicrohttpd's
# per-connection state at exit are not findings, so leak checks are off there.
leaks=1
[ "$target" = http ] && leaks=0
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=$leaks}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/lsan.supp}

log=$build/fuzz-work/$target.log
set +e
"$build/tests/fuzz/fuzz_$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len=65536 -detect_leaks=$leaks -print_final_stats=1 \
    -artifact_prefix="$build/fuzz-work/crash-$target-" "$work" "$seeds" 2>"$log"
rc=$?
set -e
execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
crashes=$(ls "$build/fuzz-work/" 2>/dev/null | grep -c "^crash-$target-" || true)
echo "target=$target seconds=$seconds executions=${execs:-?} exit=$rc crash_files=$crashes log=$log"
exit $rc
