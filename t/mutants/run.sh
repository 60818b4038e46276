#!/usr/bin/env bash
# Planted bugs for the nginx layer: applies each t/mutants/*.patch (or the ones
# named) to a scratch copy of the working tree, builds nginx + the module, runs
# the engine's tests (for a patch to engine/) and `prove -r t/`, and reports
# whether some test failed (killed) or none did (SURVIVED). cargo-mutants judges
# the engine on its own (make mutants); it cannot judge src/, whose behaviour
# only nginx shows.
#
#   t/mutants/run.sh                     every patch, about four minutes each
#   t/mutants/run.sh t/mutants/03-*.patch
#   t/mutants/run.sh --applies           only whether every patch still applies (make check)
#
# Not part of `make test` (slow), but for `--applies`, which `make check` runs.
# A patch that no longer applies is reported as stale: rewrite it against the
# current code. Exit status 1 when a mutant survived or a patch is stale.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
scratch=${MUTANTS_DIR:-$root/target/mutants-src}
report=${MUTANTS_REPORT:-$root/target/mutants-nginx.txt}
patches=("$@")
[ ${#patches[@]} -gt 0 ] || patches=("$root"/t/mutants/*.patch)

log() { printf '%s\n' "$*" >&2; }

# A refactor that moves a planted bug's lines makes it stale, and the mutation
# figure silently drops (six of 35 were, on 2026-12-06): `make check` asks, in
# a second, that each applies exactly to the tree as it is.
if [ "${1:-}" = --applies ]; then
    stale=0
    for p in "$root"/t/mutants/*.patch; do
        if ! (cd "$root" && git apply --check "$p" 2>/dev/null); then
            log "mutants: $p no longer applies: rewrite it against the current code, keeping its bug"
            stale=$((stale + 1))
        fi
    done
    [ "$stale" = 0 ] && log "mutants: every planted bug of t/mutants/ applies"
    exit $((stale > 0))
fi

# A fresh copy of the working tree (tracked and new files, not what .gitignore
# names), with a copy of the build tree so nginx itself is not rebuilt. The
# files get the time of the copy (tar -m): cargo must not take a build of an
# earlier run's mutant for newer than them.
log "mutants: copying the tree to $scratch"
mkdir -p "$scratch"
find "$scratch" -mindepth 1 -maxdepth 1 ! -name target -exec rm -rf {} +
(cd "$root" && git ls-files -z --cached --others --exclude-standard | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) \
    | tar -C "$scratch" -xmf -
if [ ! -d "$scratch/target/release" ] && [ -d "$root/target/release" ]; then
    mkdir -p "$scratch/target" && cp -a "$root/target/release" "$scratch/target/"
fi

# As `make build` does it (the same nginx configure flags, the test-hooks
# module that t/18 loads), in the scratch copy.
build() {
    make -s -C "$scratch" build >/dev/null 2>&1
}

# The failed tests of a prove run, one "file<TAB>test name" per line (names,
# not numbers: a mutant may change how many tests a file runs).
prove_failures() {
    (cd "$scratch" && TEST_NGINX_SERVROOT="$scratch/t/servroot" prove -v "$@" 2>&1) | awk '
        /^t\/[^ ]*\.t \.+/ { file = $1 }
        /^not ok [0-9]+/ { sub(/^not ok [0-9]+( - )?/, ""); print file "\t" $0 }
        /^t\/[^ ]*\.t *\(Wstat/ { print $1 "\t(exit status)" }' | sort -u
    # A mutant may leave a daemonized nginx of the scratch tree running (t/20's
    # replicas were found after runs): none outlives its prove.
    pkill -f "$scratch/target/nginx/sbin/nginx" 2>/dev/null || true
}

# The files among prove_failures' lines whose failures the unmutated tree does not have.
new_failures() {
    comm -23 <(printf '%s\n' "$1" | grep . | sort -u) <(printf '%s\n' "${baseline_failures:-}" | grep . | sort -u) \
        | cut -f1 | sort -u
}

# Runs the suites; prints what failed ("" when everything passed). A t/ file
# that fails is run again, and counts only if it fails again: on a loaded
# machine a timing test may fail once, and a flaky failure must not pass for a
# killed mutant. Files the unmutated tree fails are left out.
suites() {
    local engine=$1 failed=() f
    if [ "$engine" = 1 ] && ! (cd "$scratch" && cargo test --profile test-hooks --locked -q -p migration-engine >/dev/null 2>&1); then
        failed+=("cargo test")
    fi
    for f in $(new_failures "$(prove_failures -r t/)"); do
        [ -n "$(new_failures "$(prove_failures "$f")")" ] && failed+=("$f")
    done
    printf '%s\n' "${failed[*]}"
}

if [ "${MUTANTS_BASELINE:-1}" = 1 ]; then
    log "mutants: baseline (no mutant): build and every suite"
    build >/dev/null || { log "mutants: the unmutated tree does not build"; exit 2; }
    baseline_failures=$(prove_failures -r t/)
    if [ -n "$baseline_failures" ]; then
        log "mutants: the unmutated tree fails these tests; only other failures count as killing a mutant:"
        printf '  %s\n' "$baseline_failures" >&2
    fi
    if ! (cd "$scratch" && cargo test --profile test-hooks --locked -q -p migration-engine >/dev/null 2>&1); then
        log "mutants: the engine's tests fail on the unmutated tree; fix that first"
        exit 2
    fi
fi

: >"$report"
[ -n "${baseline_failures:-}" ] && printf 'unmutated tree fails (not counted):\n%s\n' "$baseline_failures" >>"$report"
survived=0 stale=0 killed=0 unviable=0
for p in "${patches[@]}"; do
    name=$(basename "$p" .patch)
    files=$(sed -n 's/^+++ b\///p' "$p")
    engine=0
    grep -q '^engine/' <<<"$files" && engine=1
    start=$SECONDS
    # The scratch copy's own files, kept to undo the patch (the working tree may
    # change while this runs).
    backup=$(mktemp -d)
    for f in $files; do mkdir -p "$backup/$(dirname "$f")" && cp "$scratch/$f" "$backup/$f"; done
    if ! patch -p1 --forward --silent -d "$scratch" <"$p" >/dev/null 2>&1; then
        result="stale (does not apply)"; stale=$((stale + 1))
    elif ! build >/dev/null 2>&1; then
        result="unviable (does not build)"; unviable=$((unviable + 1))
    else
        failed=$(suites $engine)
        if [ -n "$failed" ]; then
            result="killed by: $failed"; killed=$((killed + 1))
        else
            result="SURVIVED"; survived=$((survived + 1))
        fi
    fi
    for f in $files; do cp "$backup/$f" "$scratch/$f"; done
    rm -rf "$backup"
    rm -f "$scratch"/*.orig "$scratch"/*/*.orig "$scratch"/*/*/*.orig "$scratch"/*.rej "$scratch"/*/*.rej "$scratch"/*/*/*.rej
    line=$(printf '%-44s %s (%ds)' "$name" "$result" $((SECONDS - start)))
    printf '%s\n' "$line" | tee -a "$report"
done
build >/dev/null 2>&1
summary="mutants: ${#patches[@]} planted bugs: $killed killed, $survived survived, $stale stale, $unviable unviable"
printf '%s\n' "$summary" | tee -a "$report"
[ "$survived" = 0 ] && [ "$stale" = 0 ]
