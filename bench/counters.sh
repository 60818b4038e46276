#!/usr/bin/env bash
# What the shared counters cost (issue: "no measurable throughput"): the same
# configuration and requests against two nginx instances, one loading the module
# as built, one loading it built with `--features uncounted` (no atomic
# increments), alternating A/B/A/B in the same run. One worker each, pinned to
# core 0; wrk pinned to core 1; only one instance is under load at a time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nginx="$root/target/nginx/sbin/nginx"
duration=${DURATION:-10s}
rounds=${ROUNDS:-3}
variant="$root/target/bench/ngx_http_migration_module-uncounted.so"
mkdir -p "$root/target/bench"
# Build the variant, keep a copy, then rebuild the real module in place.
cargo build --release --locked -p ngx_http_migration_module --features uncounted --quiet
cp "$root/target/release/libngx_http_migration_module.so" "$variant"
cargo build --release --locked -p ngx_http_migration_module --quiet

work=$(mktemp -d)
trap 'for d in counted uncounted; do "$nginx" -p "$work/$d/" -s stop 2>/dev/null || true; done; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A port
for d in counted uncounted; do
    mkdir -p "$work/$d"/{conf,logs}
    port[$d]=$(free_port)
    module="$root/target/nginx/modules/ngx_http_migration_module.so"
    [ "$d" = uncounted ] && module="$variant"
    cat >"$work/$d/conf/nginx.conf" <<CONF
load_module $module;
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    migration_config $root/nginx/configmap.yaml;
    server {
        listen 127.0.0.1:${port[$d]};
        server_name api-name01.teamname.dev.aliyun.intracloud.cn.aibang;
        location = /migration { migration on; return 200 "\$migration_target"; }
        location = /status { migration_status; }
    }
}
CONF
    taskset -c 0 "$nginx" -p "$work/$d/"
done
sleep 0.5
host='Host: api-name01.teamname.dev.aliyun.intracloud.cn.aibang'
run() {
    taskset -c 1 wrk -t1 -c32 -d"$duration" -H "$host" -H 'X-User-ID: user-42' "http://127.0.0.1:${port[$1]}/migration" \
        | awk '/Requests\/sec/ {print $2}'
}
ratios=()
for round in $(seq 1 "$rounds"); do
    u=$(run uncounted); c=$(run counted)
    ratio=$(python3 -c "print(f'{$c/$u:.3f}')")
    ratios+=("$ratio")
    echo "round $round: without counters $u req/s, with counters $c req/s, ratio $ratio"
done
python3 -c "import statistics, sys; r=[float(x) for x in sys.argv[1:]]; print(f'ratio with/without counters: median {statistics.median(r):.3f}, mean {statistics.mean(r):.3f}, min {min(r):.3f}, max {max(r):.3f} over {len(r)} rounds')" "${ratios[@]}"
counted=$(curl -s "http://127.0.0.1:${port[counted]}/status" | python3 -c 'import json,sys; print(sum(json.load(sys.stdin)["services"][0]["requests"].values()))')
uncounted=$(curl -s "http://127.0.0.1:${port[uncounted]}/status" | python3 -c 'import json,sys; print(sum(json.load(sys.stdin)["services"][0]["requests"].values()))')
echo "status: the counted instance counted $counted requests, the uncounted one $uncounted"
