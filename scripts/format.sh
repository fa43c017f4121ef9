#!/usr/bin/env bash
# Formats every C file with the project's .clang-format; --check only reports.
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.c' '*.h' 2>/dev/null; find src tests bench -name '*.[ch]' 2>/dev/null)
files=$(printf '%s\n' $files | sort -u)
if [ "${1:-}" = "--check" ]; then
    bad=0
    for f in $files; do
        [ -f "$f" ] || continue
        if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
            echo "not formatted: $f (run scripts/format.sh)"
            bad=1
        fi
    done
    exit $bad
fi
for f in $files; do [ -f "$f" ] && clang-format -i "$f"; done
