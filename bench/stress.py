#!/usr/bin/env python3
"""Reload under load: nginx with the module (2 workers) serves a steady load on
loopback while the YAML file changes and nginx reloads again and again (and,
with --watch, while `watch=` publishes changes between reloads). At the end it
asserts what docs/module.md (migration_config: reloads and watch=) promises:

* no request failed: every response is a 200 from the backend the module chose,
  and the backend agrees with $migration_target;
* the error log has no [alert], [crit] or [emerg] and no "exited on signal";
* the status counters add up to exactly the requests the load sent.

With --hostile, a share of the requests carry hostile input (docs/yaml.md, "Errors"):
long and repeated headers, empty values, bytes that are not UTF-8 in headers,
cookies and arguments, malformed cookies, a spoofed X-Real-IP; each must still get
a 200 with a defined decision. --seconds runs for a fixed time instead of a fixed
number of reloads.

Clients keep their connections alive, as real ones do. A worker that shuts down
after a reload closes its idle keep-alive connections; like any HTTP client
(RFC 9110, 9.2.2), this one then retries the idempotent GET once on a new
connection, and reports how often it did. Any other error is a failure.

    bench/stress.py --reloads 50            # the full run (make stress)
    bench/stress.py --reloads 10 --quick    # what CI runs (make test)
    bench/stress.py --seconds 60 --watch 300ms --hostile 0.3   # issue 4's crash-free run
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NGINX = os.path.join(REPO, "target", "nginx", "sbin", "nginx")
MODULE = os.path.join(REPO, "target", "nginx", "modules", "ngx_http_migration_module.so")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def yaml_text(percentage, version):
    return f"""version: "{version}"
services:
  - name: api
    old_host: api.example
    old_backend: 127.0.0.1:{PORTS['old']}
    new_host: api.new.example
    new_backend: 127.0.0.1:{PORTS['new']}
    migration: {{percentage: {percentage}, strategy: user}}
    canary:
      header_rules:
        - {{header: X-Canary, value: "on", target: new}}
        - {{header: X-Beta, pattern: "^b[0-9]+$", target: new, from: [10.0.0.0/8]}}
      ip_rules:
        - {{cidr: 192.168.0.0/16, target: old}}
      user_rules:
        - {{users: [alice], target: old}}
    fallback: {{failures: 5, cooldown: 2s}}
"""


def hostile_headers(rng):
    """Headers a hostile or broken client sends: each is just a value to the module."""
    user = rng.choice([
        b"u" * rng.randrange(1, 6000),            # long id
        b"",                                     # empty: absent
        b"\xff\xfe\x80 not utf-8",               # not UTF-8
        "élodie".encode(),
        b"alice",
    ])
    headers = [("Host", b"api.example"), ("X-User-ID", user)]
    kind = rng.randrange(6)
    if kind == 0:
        headers += [("X-User-ID", b"user-%d" % i) for i in range(100)]      # repeated
    elif kind == 1:
        headers += [("Cookie", rng.choice([b"uid", b"=x", b";;;", b"uid=;uid=alice", b'uid="a"', b"\xff=\xfe" * 200]))]
    elif kind == 2:
        headers += [("X-Real-IP", b"10.1.2.3"), ("X-Forwarded-For", b"10.1.2.3")]  # spoofed, not trusted
    elif kind == 3:
        headers += [("X-Beta", b"b1" * rng.randrange(1, 3000)), ("X-Canary", b"")]
    elif kind == 4:
        headers += [("X-Canary", b"on\xff")]
    else:
        headers += [("X-Junk-%d" % i, bytes(rng.randrange(128, 256) for _ in range(40))) for i in range(50)]
    path = rng.choice(["/", "/?uid=%ff%fe", "/?uid=alice&uid=bob", "/?=&&uid", "/a/../b?x=" + "y" * 2000])
    return path, headers


def write_atomically(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


PORTS = {}


def nginx_conf(watch):
    watch_param = f" watch={watch}" if watch else ""
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
    migration_config conf/m.yaml{watch_param};
    server {{
        listen 127.0.0.1:{PORTS['front']} reuseport;
        server_name api.example;
        location / {{
            migration on;
            proxy_set_header Host $migration_host;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header X-Migration-Target $migration_target always;
            proxy_pass http://$migration_backend;
        }}
        location = /status {{ migration_status; }}
    }}
    server {{ listen 127.0.0.1:{PORTS['old']}; location / {{ return 200 "old"; }} }}
    server {{ listen 127.0.0.1:{PORTS['new']}; location / {{ return 200 "new"; }} }}
}}
"""


class Load:
    """Threads sending GETs over keep-alive connections until stopped."""

    def __init__(self, threads, hostile=0.0):
        self.hostile = hostile
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.failures = []
        self.retries = 0
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

    def run(self, seed):
        rng = random.Random(seed)
        conn = None
        sent = retries = 0
        failures = []
        while not self.stop.is_set():
            if rng.random() < self.hostile:
                path, headers = hostile_headers(rng)
            else:
                path, headers = "/", [("Host", b"api.example"), ("X-User-ID", b"user-%d" % rng.randrange(100000))]
                if rng.random() < 0.05:
                    headers.append(("X-Canary", b"on"))
            for attempt in (1, 2):
                reused = conn is not None
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", PORTS["front"], timeout=10)
                try:
                    conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
                    for name, value in headers:
                        conn.putheader(name, value)
                    conn.endheaders()
                    resp = conn.getresponse()
                    body = resp.read().decode("latin-1")
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                    conn.close()
                    conn = None
                    if reused and attempt == 1:
                        retries += 1
                        continue
                    failures.append(f"{type(e).__name__}: {e}")
                    break
                except Exception as e:  # noqa: BLE001 - every other error is a failure
                    conn.close()
                    conn = None
                    failures.append(f"{type(e).__name__}: {e}")
                    break
                sent += 1
                target = resp.getheader("X-Migration-Target")
                if resp.status != 200 or body not in ("old", "new") or body != target:
                    failures.append(f"status {resp.status}, body {body!r}, $migration_target {target!r}")
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
                break
        with self.lock:
            self.sent += sent
            self.retries += retries
            self.failures += failures

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def status(timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", PORTS["front"], timeout=timeout)
    conn.request("GET", "/status")
    doc = json.loads(conn.getresponse().read())
    conn.close()
    return doc


def wait_for_port(port, deadline):
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reloads", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=0, help="run this long (reloading every --pause) instead of --reloads")
    ap.add_argument("--hostile", type=float, default=0.0, help="share of requests with hostile input, 0 to 1")
    ap.add_argument("--pause", type=float, default=0.3, help="seconds between reloads")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--watch", default="", help="also run watch=INTERVAL (shorter than --pause) and change the file between reloads")
    ap.add_argument("--quick", action="store_true", help="short warm-up and drain, for CI")
    ap.add_argument("--keep", action="store_true", help="keep the prefix directory")
    args = ap.parse_args()

    for name in ("front", "old", "new"):
        PORTS[name] = free_port()
    prefix = tempfile.mkdtemp(prefix="migration-stress-")
    os.chmod(prefix, 0o755)  # the workers (user nobody under root) read the file for watch=
    for d in ("conf", "logs"):
        os.makedirs(os.path.join(prefix, d))
    conf_yaml = os.path.join(prefix, "conf", "m.yaml")
    write_atomically(conf_yaml, yaml_text(50, "r0"))
    with open(os.path.join(prefix, "conf", "nginx.conf"), "w") as f:
        f.write(nginx_conf(args.watch))

    nginx = subprocess.Popen([NGINX, "-p", prefix + "/", "-c", "conf/nginx.conf"], stderr=subprocess.PIPE)
    ok = False
    try:
        if not wait_for_port(PORTS["front"], time.time() + 10):
            raise SystemExit("nginx did not start: " + nginx.stderr.read().decode())
        generation0 = status()["generation"]
        counted0 = sum(status()["services"][0]["requests"].values())
        started = time.time()
        refused = 0
        with Load(args.threads, args.hostile) as load:
            time.sleep(0.5 if args.quick else 2)
            i = 0
            while (time.time() - started < args.seconds) if args.seconds else (i < args.reloads):
                i += 1
                percentage = random.choice([0, 10, 25.5, 50, 90, 100])
                if args.watch and i % 2 == 0:
                    # A change for watch= to publish, then a moment later a reload.
                    write_atomically(conf_yaml, yaml_text(percentage, f"w{i}"))
                    time.sleep(args.pause)
                if i % 10 == 5:
                    # A bad file now and then: that reload must be refused, and
                    # the old workers must go on serving.
                    write_atomically(conf_yaml, yaml_text(percentage, f"r{i}").replace("strategy: user", "strategy: sticky"))
                    refused += 1
                else:
                    write_atomically(conf_yaml, yaml_text(percentage, f"r{i}"))
                os.kill(nginx.pid, signal.SIGHUP)
                time.sleep(args.pause)
            args.reloads = i
            write_atomically(conf_yaml, yaml_text(50, "final"))
            os.kill(nginx.pid, signal.SIGHUP)
            time.sleep(0.5 if args.quick else 2)
        elapsed = time.time() - started
        time.sleep(0.3)
        doc = status()
        counted = sum(doc["services"][0]["requests"].values()) - counted0
        log = open(os.path.join(prefix, "logs", "error.log"), errors="replace").read()
        bad_lines = [l for l in log.splitlines() if re.search(r"\[(alert|crit)\]|exited on signal", l)]
        emerg = [l for l in log.splitlines() if "[emerg]" in l]
        bad_emerg = [l for l in emerg if "must be weight, user or ip" not in l]
        reloads_logged = len(re.findall(r"signal 1 \(SIGHUP\) received", log))
        watch_published = len(re.findall(r"changed; published generation", log))
        print(f"reloads: {args.reloads} signalled ({reloads_logged} seen by the master, {refused} with a bad file and refused); "
              f"generations {generation0} -> {doc['generation']}, {watch_published} of them published by watch=")
        print(f"hostile share: {args.hostile:.0%}; breaker trips: {doc['services'][0]['fallback']['trips']}")
        print(f"requests: {load.sent} in {elapsed:.1f} s ({load.sent / elapsed:.0f} req/s), failures: {len(load.failures)}, "
              f"retried after a closed keep-alive connection: {load.retries}")
        print(f"status counted {counted} of the {load.sent} requests")
        print(f"error log: {len(bad_lines)} [alert]/[crit]/exited-on-signal lines, {len(emerg)} [emerg] lines "
              f"({len(bad_emerg)} not from the bad files)")
        for line in (load.failures[:5] + bad_lines[:5] + bad_emerg[:5]):
            print("  " + line)
        ok = (not load.failures and not bad_lines and not bad_emerg and counted == load.sent
              and reloads_logged == args.reloads + 1 and len(emerg) >= refused)
        print("PASS" if ok else "FAIL")
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(timeout=10)
        except subprocess.TimeoutExpired:
            nginx.kill()
        if args.keep or not ok:
            print(f"prefix kept: {prefix}")
        else:
            shutil.rmtree(prefix, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
