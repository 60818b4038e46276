#!/usr/bin/env python3
"""A ramp under attack: nginx with the module (2 workers) runs a gated ramp while
users send traffic, and attackers try to steer the gate. Each scenario runs
twice, once without attackers and once with them, and the ramp's outcome must be
the same (docs/ramp.md: the gate judges only what the percentage split
decided; a request the client abandoned is neither an error nor a latency
sample).

Scenarios:

* healthy: new answers every user. Attackers force `X-Canary: new` onto a path of
  new that answers 503, and open requests to a slow path of new that they
  abandon after 50 ms (nginx logs 499). Expected: the ramp walks to `done`, and
  no user request fails.
* broken: new answers 503 to users. Attackers force 1,000 requests onto a path of
  new that always answers 200. Expected: the ramp rolls back at its first step.

Prints each run's outcome, the users' requests and failures, and the attackers'
requests; exits 1 when an outcome differs or a user request of the healthy
scenario failed.

    bench/ramp_attack.py            # both scenarios (make stress)
"""

import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NGINX = os.path.join(REPO, "target", "nginx", "sbin", "nginx")
MODULE = os.environ.get("MODULE", os.path.join(REPO, "target", "nginx", "modules", "ngx_http_migration_module.so"))
EVERY_S = 3
STEPS = [10, 50, 100]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Slow(BaseHTTPRequestHandler):
    """New's slow path: answers after half a second (the attackers leave first)."""

    def do_GET(self):  # noqa: N802 - the http.server API
        time.sleep(0.5)
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        try:
            self.wfile.write(b"slow")
        except OSError:
            pass

    def log_message(self, *args):
        pass


def nginx_conf(ports, broken):
    new_root = 'return 503 "new is down";' if broken else 'return 200 "new";'
    return f"""
daemon off;
master_process on;
worker_processes 2;
error_log logs/error.log notice;
pid logs/nginx.pid;
load_module {MODULE};
events {{ worker_connections 4096; }}
http {{
    access_log off;
    migration_config conf/m.yaml;
    server {{
        listen 127.0.0.1:{ports['front']} reuseport;
        server_name api.example;
        location / {{
            migration on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header X-Migration-Target $migration_target always;
            proxy_pass http://$migration_backend;
        }}
        location = /status {{ migration_status; }}
    }}
    server {{ listen 127.0.0.1:{ports['old']}; location / {{ return 200 "old"; }} }}
    server {{
        listen 127.0.0.1:{ports['new']};
        location / {{ {new_root} }}
        location /bad {{ return 503 "new fails here"; }}
        location /ok {{ return 200 "new"; }}
        location /slow {{ proxy_pass http://127.0.0.1:{ports['slow']}; }}
    }}
}}
"""


def yaml_text(ports):
    return f"""version: "ramp-attack"
services:
  - name: api
    old_host: api.example
    old_backend: 127.0.0.1:{ports['old']}
    new_host: api.example
    new_backend: 127.0.0.1:{ports['new']}
    migration:
      strategy: user
      ramp:
        steps: {STEPS}
        every: {EVERY_S}s
        gate:
          min_requests: 20
          max_error_rate: 5%
          max_p99: 400ms
        on_failure: rollback
    canary:
      header_rules:
        - {{header: X-Canary, value: new, target: new}}
"""


class Loop(threading.Thread):
    """Calls `step` until stopped; counts what it returns."""

    def __init__(self, step):
        super().__init__(daemon=True)
        self.step, self.stop, self.counts = step, threading.Event(), {}

    def run(self):
        while not self.stop.is_set():
            outcome = self.step()
            self.counts[outcome] = self.counts.get(outcome, 0) + 1


def get(port, path, headers, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("latin-1"), resp.getheader("X-Migration-Target")
    finally:
        conn.close()


def run(scenario, attack):
    ports = {name: free_port() for name in ("front", "old", "new", "slow")}
    slow = ThreadingHTTPServer(("127.0.0.1", ports["slow"]), Slow)
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    prefix = tempfile.mkdtemp(prefix="migration-ramp-attack-")
    os.makedirs(os.path.join(prefix, "conf"))
    os.makedirs(os.path.join(prefix, "logs"))
    with open(os.path.join(prefix, "conf", "m.yaml"), "w") as f:
        f.write(yaml_text(ports))
    with open(os.path.join(prefix, "conf", "nginx.conf"), "w") as f:
        f.write(nginx_conf(ports, scenario == "broken"))
    nginx = subprocess.Popen([NGINX, "-p", prefix + "/", "-c", "conf/nginx.conf"], stderr=subprocess.DEVNULL)
    front = ports["front"]
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", front), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        host = {"Host": "api.example"}

        def user():
            uid = f"u{random.randrange(100_000)}"
            try:
                status, body, target = get(front, "/", {**host, "X-User-ID": uid})
            except Exception as e:  # noqa: BLE001 - any error is a failed request
                return f"error {type(e).__name__}"
            if status == 200 and body == target:
                return "ok"
            return "new is down" if scenario == "broken" and target == "new" else f"failed {status}"

        def forced():
            path = "/bad" if scenario == "healthy" else "/ok"
            try:
                return f"forced {get(front, path, {**host, 'X-Canary': 'new'})[0]}"
            except Exception as e:  # noqa: BLE001
                return f"forced error {type(e).__name__}"

        def abandoned():
            # A user id the split may send to new, a slow path, gone after 50 ms.
            try:
                c = socket.create_connection(("127.0.0.1", front), timeout=2)
                uid = f"a{random.randrange(100_000)}"
                c.sendall(f"GET /slow HTTP/1.1\r\nHost: api.example\r\nX-User-ID: {uid}\r\n\r\n".encode())
                time.sleep(0.05)
                c.close()
                return "abandoned"
            except OSError as e:
                return f"abandoned error {e}"

        loops = [Loop(user) for _ in range(6)]
        if attack:
            loops += [Loop(forced) for _ in range(3)]
            if scenario == "healthy":
                loops += [Loop(abandoned) for _ in range(3)]
        for loop in loops:
            loop.start()
        wanted = {"healthy": ("done",), "broken": ("rolled_back",)}[scenario]
        state, deadline = None, time.time() + EVERY_S * (len(STEPS) + 2)
        while time.time() < deadline:
            state = json.loads(get(front, "/status", host)[1])["services"][0]["ramp"]["state"]
            if state in wanted or state in ("rolled_back", "held"):
                break
            time.sleep(0.2)
        for loop in loops:
            loop.stop.set()
        for loop in loops:
            loop.join()
        ramp = json.loads(get(front, "/status", host)[1])["services"][0]["ramp"]
        totals = {}
        for loop in loops:
            for k, v in loop.counts.items():
                totals[k] = totals.get(k, 0) + v
        return ramp, totals
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        slow.shutdown()
        subprocess.run(["rm", "-rf", prefix], check=False)


def main():
    bad = 0
    for scenario in ("healthy", "broken"):
        outcomes = {}
        for attack in (False, True):
            ramp, totals = run(scenario, attack)
            outcomes[attack] = (ramp["state"], ramp["step"], ramp["percentage"])
            users = sum(v for k, v in totals.items() if k in ("ok", "new is down") or k.startswith(("failed", "error")))
            failed = sum(v for k, v in totals.items() if k.startswith(("failed", "error")))
            attackers = {k: v for k, v in sorted(totals.items()) if k.startswith(("forced", "abandoned"))}
            print(
                f"{scenario:8} {'with' if attack else 'without'} attackers: ramp {ramp['state']} on step "
                f"{ramp['step']} of {ramp['steps']} at {ramp['percentage']} %; users {users} requests, "
                f"{failed} failed; attackers {attackers or 'none'}; last gate {json.dumps(ramp.get('last_gate'))}"
            )
            if scenario == "healthy" and failed:
                bad += 1
        if outcomes[False] != outcomes[True]:
            print(f"{scenario}: the attackers changed the outcome: {outcomes[False]} -> {outcomes[True]}")
            bad += 1
    print(f"ramp-attack: {bad} failure(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
