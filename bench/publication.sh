#!/usr/bin/env bash
# What a publication costs the requests in flight (issue "no request waits for a
# configuration"): one worker, wrk with 8 keep-alive connections on
# `return 200 $migration_target`, a 10,000-service YAML (bench/gen_config.py:
# a header rule and a /24 CIDR each). Prints, from runs on the same machine:
#   baseline:   no change, no watch=
#   watch=1s:   no change at all (the cost of watching)
#   watch= publication: the file's percentage changes mid-run
#   reload:     nginx -s reload mid-run
# each as p99 and max latency. Also times nginx -t of the file.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nginx=${TEST_NGINX_BINARY:-$root/target/nginx/sbin/nginx}
module=${TEST_NGINX_LOAD_MODULES:-$root/target/nginx/modules/ngx_http_migration_module.so}
services=${SERVICES:-10000}
seconds=${SECONDS_PER_RUN:-6}
work=$(mktemp -d)
trap 'stop_nginx; rm -rf "$work"' EXIT
mkdir -p "$work"/{conf,logs}
python3 "$root/bench/gen_config.py" "$services" 20 >"$work/m.yaml"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user=""; [ "$(id -u)" = 0 ] && user="user root;"
conf() {  # conf WATCH
    cat >"$work/conf/nginx.conf" <<CONF
load_module $module;
$user
worker_processes 1;
error_log logs/error.log notice;
pid logs/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    migration_config $work/m.yaml zone=migration:64m $1;
    server {
        listen 127.0.0.1:$port;
        server_name svc-000042.example.com;
        location / { migration on; return 200 "\$migration_target\n"; }
    }
}
CONF
}
echo "file: $services services, $(( $(stat -c %s "$work/m.yaml") / 1024 )) KB"
conf ""
start=$(date +%s.%N)
"$nginx" -p "$work/" -t -q
echo "nginx -t: $(python3 -c "print(f'{$(date +%s.%N) - $start:.2f}')") s"

# wrk for $seconds seconds; after 2 s, runs "$@"; prints "p99 max" in ms.
measure() {
    local out="$work/wrk.out"
    taskset -c 1 wrk -t1 -c8 -d"${seconds}s" --latency -H 'Host: svc-000042.example.com' -H 'X-User-ID: user-42' \
        "http://127.0.0.1:$port/" >"$out" &
    local wrk_pid=$!
    sleep 2
    [ $# -gt 0 ] && "$@"
    wait "$wrk_pid"
    python3 - "$out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", text)
mx = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\b", text)
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
print(f"{ms(*p99.groups()):.3f} {ms(*mx.groups()):.3f} {float(rps.group(1)):.0f}")
PY
}
stop_nginx() {
    local pidfile="$work/logs/nginx.pid" pid
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -QUIT "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$pidfile"
}
start_nginx() {
    stop_nginx
    conf "$1"
    taskset -c 0 "$nginx" -p "$work/"
    for _ in $(seq 100); do curl -s -o /dev/null -H 'Host: svc-000042.example.com' "http://127.0.0.1:$port/" && break; sleep 0.1; done
}
# The changed file is written before the run and renamed into place mid-run, as
# the kubelet swaps a ConfigMap volume's ..data link: generating 10,000 services
# in Python mid-run would measure Python's CPU, not nginx's.
prepare_percentage() {
    python3 "$root/bench/gen_config.py" "$services" "$1" >"$work/m.yaml.new"
}
change_file() {
    mv "$work/m.yaml.new" "$work/m.yaml"
}
wait_published() {  # until the log shows generation $1
    for _ in $(seq 100); do grep -q "generation $1" "$work/logs/error.log" && return; sleep 0.1; done
}
row() { printf '%-34s p99 %8.3f ms   max %8.3f ms   %7s req/s\n' "$1" $2 $3 $4; }

start_nginx ""
row "baseline (no watch=, no change)" $(measure)
start_nginx "watch=1s"
row "watch=1s, no change" $(measure)
prepare_percentage 30
row "watch=1s, a publication mid-run" $(measure change_file)
wait_published 2
start_nginx ""
row "nginx -s reload mid-run" $(measure "$nginx" -p "$work/" -s reload)
