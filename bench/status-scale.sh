#!/usr/bin/env bash
# What a 10,000-service status costs everything else (issue "status at scale"):
# one worker, wrk with 8 keep-alive connections on `return 200 $migration_target`,
# while N scrapers loop on /migration/status?format=prometheus (each reading the
# whole body as fast as it can), then while 8 scrapers send the request and never
# read. Prints p50/p99/max of the other requests, the scrape's size and time, and
# the worker's RSS growth under the readers that never read. Compare two builds
# in one run with MODULES="old.so new.so" (default: target/nginx's).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nginx=${TEST_NGINX_BINARY:-$root/target/nginx/sbin/nginx}
modules=${MODULES:-$root/target/nginx/modules/ngx_http_migration_module.so}
services=${SERVICES:-10000}
seconds=${SECONDS_PER_RUN:-8}
scrapers=${SCRAPERS:-4}
work=$(mktemp -d)
trap 'stop_nginx; rm -rf "$work"' EXIT
mkdir -p "$work"/{conf,logs}
python3 "$root/bench/gen_config.py" "$services" 20 >"$work/m.yaml"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user=""; [ "$(id -u)" = 0 ] && user="user root;"
stop_nginx() { [ -f "$work/logs/nginx.pid" ] && "$nginx" -p "$work" -s stop 2>/dev/null; sleep 0.3; rm -f "$work/logs/nginx.pid"; }
for module in $modules; do
    cat >"$work/conf/nginx.conf" <<CONF
load_module $module;
$user
worker_processes 1;
error_log logs/error.log notice;
pid logs/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    migration_config $work/m.yaml zone=bench:128m;
    server {
        listen 127.0.0.1:$port;
        location / { migration on; migration_service auto any_server; return 200 "\$migration_target\n"; }
        location = /migration/status { migration_status; }
    }
}
CONF
    "$nginx" -p "$work" -c conf/nginx.conf
    sleep 1
    echo "== $(basename "$module") ($services services)"
    python3 - "$port" "$seconds" "$scrapers" "$work/logs/nginx.pid" <<'PY'
import re, socket, subprocess, sys, threading, time, urllib.request
port, seconds, scrapers, pidfile = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
url = f"http://127.0.0.1:{port}"
start = time.time(); body = urllib.request.urlopen(url + "/migration/status?format=prometheus").read()
print(f"  one scrape alone: {len(body) / 1e6:.1f} MB in {time.time() - start:.3f} s")
def wrk(label):
    out = subprocess.run(["wrk", "-t1", "-c8", f"-d{seconds}s", "--latency", "-H", "Host: s1.example", url + "/"],
                         capture_output=True, text=True).stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    mx = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1)
    rps = re.search(r"Requests/sec:\s+(\S+)", out).group(1)
    print(f"  {label:<34} p50 {lat.get('50')}  p99 {lat.get('99')}  max {mx}  ({rps} req/s)")
wrk("no scrape")
stop = threading.Event(); scraped = [0]
def scrape():
    while not stop.is_set():
        urllib.request.urlopen(url + "/migration/status?format=prometheus", timeout=60).read(); scraped[0] += 1
threads = [threading.Thread(target=scrape, daemon=True) for _ in range(scrapers)]
for t in threads: t.start()
wrk(f"{scrapers} scrapers reading")
stop.set()
for t in threads: t.join()
print(f"  ({scraped[0]} scrapes in {seconds} s)")
worker = subprocess.run(["sh", "-c", f"cat /proc/$(cat {pidfile})/task/*/children"], capture_output=True, text=True).stdout.split()[0]
rss = lambda: int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{worker}/status").read()).group(1)) / 1024
before = rss(); idle = []
for _ in range(8):
    c = socket.create_connection(("127.0.0.1", port)); c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.sendall(b"GET /migration/status?format=prometheus HTTP/1.1\r\nHost: x\r\n\r\n"); idle.append(c)
time.sleep(2)
print(f"  8 scrapers that never read: worker RSS {before:.0f} MB -> {rss():.0f} MB")
wrk("8 idle scrapers")
for c in idle: c.close()
PY
    stop_nginx
done
