#!/usr/bin/env bash
# Instructions per request (valgrind callgrind counts instructions, not time, so
# the figures repeat whatever else the machine does): nginx alone answering
# `return 200`, the stock geo + map + split_clients chain that decides the same
# way, and the module (`migration on; return 200 $migration_target`, a service
# with a header rule, a CIDR and a user-hash split). Each is the difference
# between 4,000 and 2,000 keep-alive requests, over 2,000, so start-up cancels.
# The last figure, nginx answering `return 200 $host`, is what any variable in
# `return` costs through nginx's script engine (the chain and the module pay it).
# Requests carry 9 headers as a browser sends them; HEADERS=2 sends only Host
# and X-User-ID (the figure the request-path goal is stated in).
#
# `bench/instructions.sh sticky` measures what `sticky` costs a request that
# carries its cookie: the same service with `user_key: cookie:mig_uid`, without
# and with `sticky: {}`, requests carrying `Cookie: ...; mig_uid=user-42`.
#
# `bench/instructions.sh hosts` measures finding the service (`migration_service
# auto`): two services, one Host or both in turn, named by one server block of
# one name, two such blocks, one block naming both, or a wildcard.
#
# `bench/instructions.sh profile` (with PROFILE_OUT=FILE) keeps one callgrind run
# of /module (PROFILE_PATH=/proxy-module: the proxied one) for bench/profile-lines.sh.
#
# `bench/instructions.sh proxied` measures what `migration on` costs a proxied
# request: `proxy_pass` to this nginx's own /plain, without and with it.
#
# `bench/instructions.sh drain` measures what `drain` costs a short request: the
# service without and with `drain: {rate: 20/s}` (each request is listed by its
# worker and taken out as it ends; the worker's 100 ms timer runs while any is
# listed, and its firings during the run count too).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nginx=${TEST_NGINX_BINARY:-$root/target/nginx/sbin/nginx}
module=${TEST_NGINX_LOAD_MODULES:-$root/target/nginx/modules/ngx_http_migration_module.so}
work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work"/{conf,logs}
write_conf() {  # nginx.conf routing by the YAML $1
cat >"$work/conf/nginx.conf" <<CONF
daemon off;
master_process off;
error_log logs/error.log warn;
load_module $module;
events { worker_connections 64; }
http {
    access_log off;
    migration_config $1;
    # The same decision with nginx's own modules.
    geo \$chain_cidr { default 0; 10.0.0.0/8 1; }
    map \$http_x_migration_target \$chain_header { new 1; default 0; }
    split_clients "\${http_x_user_id}" \$chain_split { 20% new; * old; }
    map "\$chain_header\$chain_cidr" \$chain_target { "10" new; "11" new; "01" new; default \$chain_split; }
$(server_block "${SERVER_NAMES:-api-name01.teamname.dev.example}")
$([ -z "${SECOND_SERVER:-}" ] || server_block "$SECOND_SERVER")
}
CONF
}
proxy_locations() {  # only for `proxied`: more locations cost every request a longer location lookup
cat <<CONF
        location = /proxy-plain  { proxy_pass http://127.0.0.1:$port/plain; }
        location = /proxy-module { migration on; proxy_pass http://127.0.0.1:$port/plain; }
CONF
}
server_block() {  # a server block named $1, with the three locations
cat <<CONF
    server {
        listen 127.0.0.1:$port;
        server_name $1;
        location = /plain  { return 200 "old"; }
        location = /host   { return 200 \$host; }
        location = /chain  { return 200 \$chain_target; }
        location = /module { migration on; return 200 \$migration_target; }
$([ -z "${PROXIED:-}" ] || proxy_locations)
    }
CONF
}
requests() {
    python3 - "$port" "$1" "$2" "${HEADERS:-9}" "${COOKIE:-session=abc; theme=dark}" "${HOSTS:-}" <<'PY'
import http.client, sys, time
port, path, n, few, cookie = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "2", sys.argv[5]
hosts = sys.argv[6].split() or ["api-name01.teamname.dev.example"]  # taken in turn
for _ in range(600):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60); c.connect(); break
    except OSError:
        time.sleep(0.1)
headers = {"Host": "api-name01.teamname.dev.example", "User-Agent": "bench/1.0", "Accept": "*/*",
           "Accept-Language": "en", "Accept-Encoding": "gzip", "X-User-ID": "user-42",
           "X-Request-ID": "0123456789abcdef", "Cookie": cookie, "Referer": "http://example/"}
if few:
    headers = {"Host": headers["Host"], "X-User-ID": headers["X-User-ID"]}
    if "mig_uid" in cookie:  # the sticky comparison: the id is the cookie
        headers["Cookie"] = cookie
for i in range(n):
    headers["Host"] = hosts[i % len(hosts)]
    # skip_host/skip_accept_encoding: http.client would add its own two.
    c.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    for name, value in headers.items():
        c.putheader(name, value)
    c.endheaders(); c.getresponse().read()
PY
}
under_callgrind() {  # nginx serving $3 requests to $2 under callgrind, counts into $1; more valgrind options after
    local out=$1 path=$2 n=$3; shift 3
    valgrind --tool=callgrind "$@" --callgrind-out-file="$out" "$nginx" -p "$work/" >/dev/null 2>&1 &
    local pid=$!
    requests "$path" "$n"
    kill -QUIT "$pid"; wait "$pid" || true
}
total() {  # instructions of nginx serving $2 requests to $1
    under_callgrind "$work/cg.out" "$1" "$2"
    awk '/^summary:/ {print $2}' "$work/cg.out"
}
per_request() {
    local a b
    a=$(total "$1" 2000); b=$(total "$1" 4000)
    echo $(( (b - a) / 2000 ))
}
if [ "${1:-}" = profile ]; then  # for bench/profile-lines.sh: one run kept, instruction by instruction
    case ${PROFILE_PATH:-} in /proxy-*) export PROXIED=1 ;; esac
    write_conf "$root/bench/instructions.yaml"
    under_callgrind "$PROFILE_OUT" "${PROFILE_PATH:-/module}" "${PROFILE_REQUESTS:-20000}" --dump-instr=yes
    exit 0
fi
if [ "${1:-}" = sticky ]; then
    sed 's/^      percentage: 20$/      percentage: 20\n      user_key: cookie:mig_uid/' "$root/bench/instructions.yaml" >"$work/cookie.yaml"
    sed 's/^      user_key: cookie:mig_uid$/&\n      sticky: {}/' "$work/cookie.yaml" >"$work/sticky.yaml"
    grep -q 'sticky: {}' "$work/sticky.yaml" || { echo "instructions.sh: the sticky YAML was not made" >&2; exit 1; }
    export COOKIE="session=abc; theme=dark; mig_uid=user-42"
    write_conf "$work/cookie.yaml"; without=$(per_request /module)
    write_conf "$work/sticky.yaml"; with=$(per_request /module)
    echo "instructions per request carrying the cookie (callgrind, ${HEADERS:-9} request headers): user_key cookie without sticky: $without; with sticky: $with (+$((with - without)))"
    exit 0
fi
if [ "${1:-}" = hosts ]; then
    # Two services (the second a copy of the first under another name and Host);
    # what finding the request's service costs with one Host and with requests
    # alternating between the two, by how nginx.conf names them.
    one=api-name01.teamname.dev.example two=api-name02.teamname.dev.example
    { cat "$root/bench/instructions.yaml"
      sed -n '/^  - name: api-name01$/,$p' "$root/bench/instructions.yaml" | sed 's/api-name01/api-name02/g'
    } >"$work/two.yaml"
    grep -q "old_host: $two" "$work/two.yaml" || { echo "instructions.sh: the two-service YAML was not made" >&2; exit 1; }
    case_() {  # $1: what; the rest: NAME=VALUE for write_conf and requests
        local what=$1; shift
        (export "$@"; write_conf "$work/two.yaml"
         local plain module; plain=$(per_request /plain); module=$(per_request /module)
         printf '%s: plain %s, module %s (+%s)\n' "$what" "$plain" "$module" "$((module - plain))")
    }
    echo "instructions per request (callgrind, ${HEADERS:-9} request headers, two services):"
    case_ "  one server block of one name, one Host" SERVER_NAMES=$one HOSTS=$one
    case_ "  two server blocks of one name each, alternating" SERVER_NAMES=$one SECOND_SERVER=$two HOSTS="$one $two"
    case_ "  one block naming both, one Host" SERVER_NAMES="$one $two" HOSTS=$one
    case_ "  one block naming both, alternating" SERVER_NAMES="$one $two" HOSTS="$one $two"
    case_ "  one block *.teamname.dev.example, alternating" SERVER_NAMES='*.teamname.dev.example' HOSTS="$one $two"
    exit 0
fi
if [ "${1:-}" = proxied ]; then
    # A proxied request (to /plain of the same nginx, which both figures
    # include): what `migration on` adds to it, the log phase's reading of the
    # routed upstream (its states, its end, a gRPC status) included.
    PROXIED=1 write_conf "$root/bench/instructions.yaml"
    plain=$(per_request /proxy-plain); module=$(per_request /proxy-module)
    python3 - "${HEADERS:-9}" "$plain" "$module" <<'PY'
import sys
headers, plain, module = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print(f"instructions per proxied request (callgrind, {headers} request headers, the backend's own included): "
      f"proxy_pass: {plain}; migration on + proxy_pass: {module} ({module / plain:.3f}x, +{module - plain})")
PY
    exit 0
fi
if [ "${1:-}" = drain ]; then
    sed 's/^      percentage: 20$/&\n      drain: {rate: 20\/s}/' "$root/bench/instructions.yaml" >"$work/drain.yaml"
    grep -q 'drain: {rate: 20/s}' "$work/drain.yaml" || { echo "instructions.sh: the drain YAML was not made" >&2; exit 1; }
    write_conf "$root/bench/instructions.yaml"; without=$(per_request /module)
    write_conf "$work/drain.yaml"; with=$(per_request /module)
    echo "instructions per request (callgrind, ${HEADERS:-9} request headers): without drain: $without; with drain: $with (+$((with - without)))"
    exit 0
fi
write_conf "$root/bench/instructions.yaml"
plain=$(per_request /plain)
host=$(per_request /host)
chain=$(per_request /chain)
module=$(per_request /module)
python3 - "${HEADERS:-9}" "$plain" "$chain" "$module" "$host" <<'PY'
import sys
headers = sys.argv[1]
plain, chain, module, host = map(int, sys.argv[2:6])
print(f"instructions per request (callgrind, {headers} request headers): plain return 200: {plain}; "
      f"geo+map+split_clients: {chain} ({chain / plain:.3f}x, +{chain - plain}); "
      f"module: {module} ({module / plain:.3f}x, +{module - plain}); "
      f"plain return 200 $host (a variable in the body, nginx's script engine): {host} (+{host - plain})")
PY
