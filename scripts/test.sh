#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what the tests
# need, builds with warnings as errors, runs the unit tests
# under AddressSanitizer + UndefinedBehaviorSanitizer, then every test (unit and
# system, and the format and docs checks) with ctest. Exit status is ctest's.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
./scripts/npm-deps.sh

echo "== sanitizer build: unit tests under ASan + UBSan"
./scripts/build.sh build-asan -DTESSERA_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
(cd build-asan && ctest -L unit --output-on-failure)

echo "== release build: every test"
./scripts/build.sh build
cd build && ctest --output-on-failure "$@"
