#!/usr/bin/env bash
# What deciding 10,000 long-lived requests again costs one worker (issue "drain
# at scale", docs/drain.md): one nginx worker holds 10,000 WebSockets proxied to
# a Python backend; `watch=` edits move the percentage 50 -> 0 -> 50 ...; each
# edit makes the worker decide all of them again, and its info line
#   migration: N long-lived requests decided again in X us, S slice(s), the longest Y us (...; list B bytes)
# gives the time of the pass (X), its longest stretch of the event loop (Y) and the list size (B). Also prints
# the worker's RSS growth per WebSocket, the status counts, and how fast the
# misplaced ones close at 10000/s. Fails if a slice takes over 5 ms or the list
# over 2 MB. Uses the module as built (target/nginx); rebuilds nothing.
#
#   bench/drain-scale.sh                  # CONNS=10000 SAMPLES=5
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nginx=${TEST_NGINX_BINARY:-$root/target/nginx/sbin/nginx}
module=${MODULE:-$root/target/nginx/modules/ngx_http_migration_module.so}
prefix=${PREFIX:-$root/target/bench-drain}
conns=${CONNS:-10000}
samples=${SAMPLES:-5}
py=$(command -v /usr/bin/python3 || command -v python3)
helper="$py $root/bench/drain_scale.py"

# Every process here holds up to 10,000 sockets (nginx twice that): raise the
# soft limit as far as the hard one allows (65536 wanted; raising the hard limit
# needs CAP_SYS_RESOURCE, which a container may lack: the helper then opens as
# many as fit and says so).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)

backend=""
cleanup() {
    [ -f "$prefix/logs/nginx.pid" ] && kill "$(cat "$prefix/logs/nginx.pid")" 2>/dev/null
    [ -n "$backend" ] && kill "$backend" 2>/dev/null
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); old=$(free_port); new=$(free_port)
rm -rf "$prefix"; mkdir -p "$prefix"/{conf,logs}
$helper yaml 0 drain-0 1/m "$old" "$new" >"$prefix/m.yaml"

# The worker reads m.yaml (watch=): as root, keep it root rather than nobody.
# worker_connections well above 2 x 10,000: nginx starts closing connections
# that wait for a request (handshakes in flight) once under 1/16 of them are
# free. Above the open-file limit it only costs a [warn] at start.
user=""; [ "$(id -u)" = 0 ] && user="user root;"
cat >"$prefix/conf/nginx.conf" <<CONF
load_module $module;
$user
worker_processes 1;
worker_rlimit_nofile $nofile;
error_log logs/error.log info;
pid logs/nginx.pid;
events { worker_connections 30000; }
http {
    access_log off;
    migration_config $prefix/m.yaml watch=200ms;
    server {
        listen 127.0.0.1:$port backlog=4096;
        server_name ws.example;             # migration_service auto finds the service by it
        location /ws {
            migration on;
            proxy_pass http://\$migration_backend;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
        }
        location = /status { migration_status; }
    }
}
CONF

# Backend first (it prints "backend ready" once it listens), then nginx.
$helper backend "$old" "$new" >"$prefix/logs/backend.log" 2>&1 &
backend=$!
for _ in $(seq 50); do grep -qs ready "$prefix/logs/backend.log" && break; sleep 0.1; done
"$nginx" -p "$prefix" -c conf/nginx.conf
sleep 0.5

# The pass is timed by the wall clock: a busy machine shows in it.
echo "== drain at scale: $conns WebSockets, one worker, $(nproc) cores, open-file limit $nofile, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "module: $module ($(date -ur "$module" '+%F %T UTC'))"
rc=0
$helper run "$prefix" "$port" "$old" "$new" "$conns" "$samples" || rc=$?

# Anything nginx found wrong (a pass line and the clients' closes are info).
echo "error log: $(grep -c '\[info\]' "$prefix/logs/error.log") info lines;" \
    "$(grep -cE '\[(warn|error|crit|alert|emerg)\]' "$prefix/logs/error.log" || true) at warn or above"
grep -E '\[(warn|error|crit|alert|emerg)\]' "$prefix/logs/error.log" |
    sed -E 's/^.*\[(warn|error|crit|alert|emerg)\] [0-9]+#[0-9]+: (\*[0-9]+ )?/[\1] /' | sort | uniq -c | sort -rn | head -5 || true
echo "took ${SECONDS} s, load at the end $(cut -d' ' -f1-3 /proc/loadavg) (logs kept in $prefix/logs)"
exit $rc
