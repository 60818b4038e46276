#!/usr/bin/env bash
# No source file of the module, the engine or the CLI is over 700 lines, tests
# aside (a file's `#[cfg(test)]` module at its end, or a file named tests.rs):
# past that a file holds more than one job, and is split by job (docs/architecture.md).
# Run by `make check`.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=700
status=0
mapfile -t files < <(find src engine/src cli/src -name '*.rs' | sort)
[ ${#files[@]} -gt 0 ] || { echo "file sizes: no source files found" >&2; exit 1; }
for file in "${files[@]}"; do
    case $file in */tests.rs) continue ;; esac
    # Lines before the `#[cfg(test)]` that opens a `mod` (a test-only item
    # elsewhere in the file does not end the count).
    lines=$(awk 'test && /^mod / { print NR - 2; done = 1; exit }
        { test = /^#\[cfg\(test\)\]/ }
        END { if (!done) print NR }' "$file")
    if [ "$lines" -gt "$limit" ]; then
        echo "$file: $lines lines before its tests, over $limit: split it by job" >&2
        status=1
    fi
done
[ $status -eq 0 ] && echo "file sizes: every source file is at most $limit lines, tests aside"
exit $status
