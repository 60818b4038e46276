#!/usr/bin/env bash
# Where a function of the module spends its instructions per request, line by
# line: valgrind's callgrind counts each instruction of nginx serving 20,000
# keep-alive requests to bench/instructions.sh's /module location, and objdump
# maps the module's instructions to their source lines (callgrind reads the
# module's symbols but not its line table, so callgrind_annotate alone shows
# no lines for it).
#
#   bench/profile-lines.sh 'decide::decide_traced'         per line, in code order
#   bench/profile-lines.sh 'decision::decision_for' --sum  per line, summed, largest first
#
# Only the function's own instructions count (not the functions it calls).
# HEADERS=2 sends only Host and X-User-ID, as bench/instructions.sh does.
# Not part of make test or make bench: a tool for the request path's work.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 FUNCTION-NAME-PART [--sum]" >&2; exit 2; }
want=$1 sum=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
module=${TEST_NGINX_LOAD_MODULES:-$root/target/nginx/modules/ngx_http_migration_module.so}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# bench/instructions.sh's nginx.conf and client, with one callgrind run kept
# (PROFILE_IN=FILE reads a run `bench/instructions.sh profile` kept instead).
cg=${PROFILE_IN:-$out/cg.out}
[ -n "${PROFILE_IN:-}" ] || PROFILE_OUT=$cg PROFILE_REQUESTS=20000 "$root/bench/instructions.sh" profile
python3 - "$cg" "$want" "$module" "$sum" 20000 <<'PY'
import collections, re, subprocess, sys
path, want, module, summed, requests = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "--sum", int(sys.argv[5])
names = {"ob": {}, "fn": {}}

def name(kind, text):
    m = re.match(r"\((\d+)\)(?: (.*))?", text)
    if m.group(2) is not None:
        names[kind][m.group(1)] = m.group(2)
    return names[kind][m.group(1)]

cost = collections.Counter()
ob = fn = None
addr = 0
after_calls = False
for line in open(path):
    line = line.rstrip("\n")
    for key, kind in (("ob=", "ob"), ("cob=", "ob"), ("fn=", "fn"), ("cfn=", "fn")):
        if line.startswith(key):
            value = name(kind, line[len(key):])
            if key == "ob=":
                ob = value
            elif key == "fn=":
                fn = value
            break
    else:
        if line.startswith("calls="):
            after_calls = True
            continue
        m = re.match(r"^(0x[0-9a-f]+|[+-]\d+|\*)\s+\S+\s+(\d+)$", line)
        if not m:
            continue
        a = m.group(1)
        addr = int(a, 16) if a.startswith("0x") else addr if a == "*" else addr + int(a)
        if after_calls:  # the inclusive cost of a call, not this function's own
            after_calls = False
            continue
        if ob == module and want in (fn or ""):
            cost[addr] += int(m.group(2))
if not cost:
    sys.exit(f"no instructions of a function named like {want!r} in {module}")
lo, hi = min(cost), max(cost) + 16
dump = subprocess.run(["objdump", "-d", "-l", "--no-show-raw-insn", "-C", f"--start-address={lo:#x}",
                       f"--stop-address={hi:#x}", module], capture_output=True, text=True, check=True).stdout
source, rows, by_line = "?", [], collections.Counter()
for line in dump.splitlines():
    m = re.match(r"^\s+([0-9a-f]+):\s+(.*)", line)
    if m:
        n = cost.get(int(m.group(1), 16), 0) / requests
        if n >= 0.5:
            rows.append((n, source, m.group(2)))
            by_line[source] += n
    elif line.startswith("/"):
        source = re.sub(r" \(discriminator \d+\)$", "", line)
print(f"{want}: {sum(cost.values()) / requests:.0f} instructions of its own per request")
if summed:
    for where, n in by_line.most_common():
        print(f"{n:7.1f}  {where}")
else:
    for n, where, text in rows:
        print(f"{n:7.1f}  {where[-60:]:60}  {text[:70]}")
PY
