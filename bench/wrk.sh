#!/usr/bin/env bash
# Request-level cost of the module, measured against a baseline in the same run:
# one nginx worker on loopback, wrk against `return 200` with and without a
# decision (seed ConfigMap: header rule + 20 % weight), alternating A/B/A/B.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nginx="$root/target/nginx/sbin/nginx"
duration=${DURATION:-10s}
work=$(mktemp -d)
trap '"$nginx" -p "$work/" -s stop 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work"/{conf,logs}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/conf/nginx.conf" <<CONF
load_module $root/target/nginx/modules/ngx_http_migration_module.so;
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    migration_config $root/nginx/configmap.yaml;
    server {
        listen 127.0.0.1:$port;
        server_name api-name01.teamname.dev.aliyun.intracloud.cn.aibang;
        location = /baseline  { return 200 "old"; }
        location = /migration { migration on; return 200 "\$migration_target"; }
    }
}
CONF
taskset -c 0 "$nginx" -p "$work/"
sleep 0.5
host='Host: api-name01.teamname.dev.aliyun.intracloud.cn.aibang'
run() {
    taskset -c 1 wrk -t1 -c32 -d"$duration" -H "$host" -H 'X-User-ID: user-42' -H 'Accept: */*' "http://127.0.0.1:$port$1" \
        | awk '/Requests\/sec/ {print $2}'
}
for round in 1 2 3; do
    b=$(run /baseline); m=$(run /migration)
    echo "round $round: baseline $b req/s, migration $m req/s, ratio $(python3 -c "print(f'{$m/$b:.3f}')")"
done
