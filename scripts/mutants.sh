#!/usr/bin/env bash
# make mutants: cargo-mutants over engine/ with the engine's suites as the test
# command, then the verdict: every missed mutant must be listed, with the reason
# it is equivalent or harmless, in engine/.cargo/mutants-allowed.txt; prints
# caught / missed / unviable / timeouts and the share of viable mutants caught
# (timeouts count as caught: the mutant hangs the tests). Fails below 95 % or on
# a missed mutant that is not listed.
#
#   scripts/mutants.sh            the whole run (about an hour and a half on 2 cores)
#   scripts/mutants.sh --iterate  only the mutants the last run did not catch (after new tests)
#   scripts/mutants.sh --check    only the verdict on the last run's output
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${MUTANTS_OUT:-$root/target/mutants}
allowed=$root/engine/.cargo/mutants-allowed.txt
cd "$root"
iterate=()
dir=$out/mutants.out
if [ "${1:-}" = --iterate ]; then
    iterate=(--iterate)
    # cargo-mutants files earlier unviable mutants under previously_caught.txt:
    # keep them apart, so they are not counted as caught.
    cat "$dir/unviable.txt" "$out/unviable.accumulated" 2>/dev/null | sort -u >"$out/unviable.tmp" || true
    mv "$out/unviable.tmp" "$out/unviable.accumulated"
elif [ "${1:-}" != --check ]; then
    rm -f "$out/unviable.accumulated"
fi
if [ "${1:-}" != --check ]; then
    command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
    mkdir -p "$out"
    # -j 1 and nice: the machines this runs on are small and shared.
    nice -n 10 cargo mutants --config engine/.cargo/mutants.toml -p migration-engine -j "${MUTANTS_JOBS:-1}" \
        --no-shuffle "${iterate[@]}" -o "$out" || true
fi
[ -f "$dir/outcomes.json" ] || { echo "mutants: no $dir/outcomes.json (run without --check first)" >&2; exit 2; }

# Mutant names without line:column, so that the list survives edits elsewhere.
strip() { sed -E 's/^([^:]+):[0-9]+:[0-9]+: /\1: /'; }
count() { cat "$dir/$1" 2>/dev/null | grep -c . || true; }
# --iterate keeps what earlier runs caught, and found unviable, in previously_caught.txt.
unviable_all=$(cat "$dir/unviable.txt" "$out/unviable.accumulated" 2>/dev/null | grep . | sort -u || true)
earlier=$(comm -23 <(sort -u "$dir/previously_caught.txt" 2>/dev/null) <(printf '%s\n' "$unviable_all") | grep -c . || true)
caught=$(( $(count caught.txt) + earlier )) missed=$(count missed.txt) timeouts=$(count timeout.txt)
unviable=$(printf '%s\n' "$unviable_all" | grep -c . || true)
viable=$((caught + missed + timeouts))
listed=$(grep -v '^#' "$allowed" 2>/dev/null | grep . | sort -u || true)
missed_names=$(strip <"$dir/missed.txt" | sort -u)
unlisted=$(comm -23 <(printf '%s\n' "$missed_names") <(printf '%s\n' "$listed") | grep . || true)
stale=$(comm -23 <(printf '%s\n' "$listed") <(printf '%s\n' "$missed_names") | grep . || true)
share=$(awk -v c=$((caught + timeouts)) -v v=$viable 'BEGIN { printf "%.1f", v ? 100 * c / v : 0 }')
echo "mutants: $((viable + unviable)) mutants: $caught caught, $missed missed ($(printf '%s\n' "$listed" | grep -c . || true) listed as harmless), $timeouts timeouts, $unviable unviable"
echo "mutants: $share % of the $viable viable mutants caught (timeouts included)"
status=0
if [ -n "$unlisted" ]; then
    echo "mutants: missed and not in engine/.cargo/mutants-allowed.txt (kill them with a test, or list them with the reason):"
    sed "s/^/  /" <<<"$unlisted"
    status=1
fi
if [ -n "$stale" ]; then
    echo "mutants: listed in mutants-allowed.txt but not missed any more (remove them):"
    sed "s/^/  /" <<<"$stale"
fi
awk -v c=$((caught + timeouts)) -v v=$viable 'BEGIN { exit !(v && c / v >= 0.95) }' || { echo "mutants: below 95 %"; status=1; }
exit $status
