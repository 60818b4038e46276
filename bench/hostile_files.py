#!/usr/bin/env python3
"""Hostile configuration files (docs/yaml.md, "Errors": nothing in a bad YAML file can
crash the master): each one is put where `migration_config` reads, then

* `nginx -t` must refuse it (or, for a valid but huge one, pass) within 1 s,
  with no process growing past 256 MB (the address space is capped there, so
  growing past it fails the run instead of just being measured);
* with `watch=`, a running nginx (2 workers) must keep serving by the last good
  file, log the refusal once, never stall a request for long, and publish the
  good file again once it comes back.

Prints one line per file with its time and peak memory. `make test` runs it;
`--report` measures without asserting (for figures of an older module), and
`--limit-mb 0` lifts the memory cap.
"""

import argparse
import http.client
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NGINX = os.environ.get("TEST_NGINX_BINARY", os.path.join(ROOT, "target/nginx/sbin/nginx"))
MODULE = os.environ.get("TEST_NGINX_LOAD_MODULES", os.path.join(ROOT, "target/nginx/modules/ngx_http_migration_module.so"))

GOOD = """version: "good"
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def service_with(body):
    return GOOD + body


def alias_bomb():
    items = ",".join(str(i) for i in range(20000))
    return f"x: &a [{items}]\ny: [{','.join(['*a'] * 20000)}]\nservices: []\n"


def many_users():
    users = ", ".join(f"user-{i}" for i in range(80000))
    return service_with(f"    canary:\n      user_rules:\n        - {{users: [{users}], target: new}}\n"
                        f"        - {{users: [{users}], target: old}}\n")


def many_cidrs():
    nets = ", ".join(f"10.{i // 256 % 256}.{i % 256}.0/24" for i in range(40000))
    return service_with(f"    canary:\n      ip_rules:\n        - {{cidrs: [{nets}], target: new}}\n"
                        f"        - {{cidrs: [{nets}], target: old}}\n")


def big_file(size):
    line = "# " + "x" * 98 + "\n"
    return GOOD + line * (size // len(line) + 1)


# (name, how to make it, nginx -t must pass?, expected text in the refusal, zone)
CASES = [
    ("alias bomb (100 KB)", lambda p: write(p, alias_bomb()), False, "anchors and aliases", None),
    ("FIFO at the path", lambda p: swap_in(p, os.mkfifo), False, "is a FIFO, not a regular file", None),
    ("symlink to /dev/zero", lambda p: swap_in(p, lambda t: os.symlink("/dev/zero", t)), False,
     "is a device, not a regular file", None),
    ("50 MB regular file", lambda p: write(p, big_file(50 * 1024 * 1024)), False, "more than max_size", None),
    ("80 KB of [[[[", lambda p: write(p, "services: " + "[" * 80000), False, "nested more than 32 deep", None),
    ("120 KB of [[[[", lambda p: write(p, "[" * 120000), False, "nested more than 32 deep", None),
    ("80,000 users, twice", lambda p: write(p, many_users()), True, None, "zone=migration:16m"),
    ("40,000 CIDRs, twice", lambda p: write(p, many_cidrs()), True, None, "zone=migration:16m"),
    ("2 MB file, default zone", lambda p: write(p, big_file(2 * 1024 * 1024)), False, "too small", None),
]


def swap_in(path, make):
    """Makes the thing beside `path` and renames it into place (atomically)."""
    make(path + ".new")
    os.rename(path + ".new", path)


def write(path, text):
    # Written beside and renamed into place, as kubelet and editors do: a watcher
    # never sees half of it.
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def conf(prefix, yaml, port, zone=None, watch=None, master=False):
    params = "".join(f" {p}" for p in (zone, f"watch={watch}" if watch else None) if p)
    user = "user root;\n" if os.geteuid() == 0 else ""
    modules = "".join(f"load_module {m};\n" for m in MODULE.split())
    text = f"""daemon off;
master_process {'on' if master else 'off'};
worker_processes 2;
error_log logs/error.log notice;
pid logs/nginx.pid;
{user}{modules}
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp; fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
    migration_config {yaml}{params};
    server {{
        listen 127.0.0.1:{port} reuseport;
        server_name api.example;
        location / {{ migration on; return 200 "$migration_target $migration_config_version\\n"; }}
    }}
}}
"""
    write(os.path.join(prefix, "conf/nginx.conf"), text)


def limit(mb):
    def apply():
        if mb:
            resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))
    return apply


def nginx_t(prefix, limit_mb, timeout):
    """Runs nginx -t; returns (exit status or 'timeout', seconds, peak RSS in MB, output)."""
    out = open(os.path.join(prefix, "logs/t.out"), "w+")
    t0 = time.monotonic()
    p = subprocess.Popen([NGINX, "-p", prefix + "/", "-c", "conf/nginx.conf", "-t"], stdout=out, stderr=out,
                         preexec_fn=limit(limit_mb))
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            pid, status, usage = os.wait4(p.pid, 0)
            status = "timeout"
            break
        time.sleep(0.002)
    took = time.monotonic() - t0
    out.seek(0)
    text = out.read()
    if status != "timeout":
        status = os.waitstatus_to_exitcode(status)
    return status, took, usage.ru_maxrss / 1024, text


def get(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    t0 = time.monotonic()
    c.request("GET", "/", headers={"Host": "api.example"})
    body = c.getresponse().read().decode()
    c.close()
    return body.strip(), time.monotonic() - t0


def workers_peak_mb(master_pid):
    peak = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                status = f.read()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() == str(master_pid):
            peak = max(peak, int(fields.get("VmHWM", "0 kB").split()[0]) / 1024)
    return peak


def watch_case(base, name, make, expect, limit_mb):
    """A running nginx with watch=100ms sees the hostile file appear, then the good one come back."""
    prefix = os.path.join(base, "watch")
    shutil.rmtree(prefix, ignore_errors=True)
    for d in ("conf", "logs", "tmp"):
        os.makedirs(os.path.join(prefix, d))
    yaml = os.path.join(prefix, "m.yaml")
    write(yaml, GOOD)
    port = free_port()
    conf(prefix, yaml, port, watch="100ms", master=True)
    master = subprocess.Popen([NGINX, "-p", prefix + "/", "-c", "conf/nginx.conf"], preexec_fn=limit(limit_mb))
    try:
        for _ in range(100):
            try:
                get(port)
                break
            except OSError:
                time.sleep(0.05)
        make(yaml)
        worst, answers, t0 = 0.0, set(), time.monotonic()
        while time.monotonic() - t0 < 1.5:
            body, took = get(port)
            answers.add(body)
            worst = max(worst, took)
        log = open(os.path.join(prefix, "logs/error.log")).read()
        refusals = log.count("[error]")
        peak = workers_peak_mb(master.pid)
        write(yaml, GOOD.replace('"good"', '"good-again"'))
        back, t1 = False, time.monotonic()
        while time.monotonic() - t1 < 3:
            if get(port)[0] == "old good-again":
                back = True
                break
            time.sleep(0.05)
        return answers, worst, refusals, expect in log if expect else True, back, peak
    finally:
        master.send_signal(signal.SIGQUIT)
        try:
            master.wait(5)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--report", action="store_true", help="measure only, assert nothing")
    ap.add_argument("--limit-mb", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--no-watch", action="store_true")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="hostile-")
    os.chmod(base, 0o755)
    failures = []
    print(f"{'file':28} {'nginx -t':>9} {'peak MB':>8}  outcome")
    try:
        for name, make, passes, expect, zone in CASES:
            prefix = os.path.join(base, "t")
            shutil.rmtree(prefix, ignore_errors=True)
            for d in ("conf", "logs", "tmp"):
                os.makedirs(os.path.join(prefix, d))
            yaml = os.path.join(prefix, "m.yaml")
            make(yaml)
            conf(prefix, yaml, free_port(), zone=zone)
            status, took, peak, out = nginx_t(prefix, args.limit_mb, args.timeout)
            line = next((l for l in out.splitlines() if "[emerg]" in l), out.strip().splitlines()[-1] if out.strip() else "")
            outcome = "passes" if status == 0 else f"exit {status}: {line[line.find('m.yaml'):][:90]}"
            print(f"{name:28} {took:8.3f}s {peak:8.1f}  {outcome}")
            ok = took < 1.0 and (status == 0) == passes and (expect is None or expect in out) and peak < 256
            if not ok:
                failures.append(f"{name}: nginx -t took {took:.3f} s, peak {peak:.1f} MB, exit {status}\n{out[-500:]}")
        if not args.no_watch:
            print(f"\n{'watch=100ms, 2 workers':28} {'worst req':>9} {'peak MB':>8}  outcome")
            for name, make, passes, expect, zone in CASES:
                if passes or zone:
                    continue
                answers, worst, refusals, said, back, peak = watch_case(base, name, make, expect, args.limit_mb)
                kept = answers == {"old good"}
                print(f"{name:28} {worst * 1000:7.1f}ms {peak:8.1f}  kept the good file: {kept}, "
                      f"refusals logged: {refusals}, good file back: {back}")
                if not (kept and worst < 0.5 and refusals == 1 and said and back and peak < 256):
                    failures.append(f"{name} under watch=: answers {answers}, worst {worst:.3f} s, "
                                    f"{refusals} refusals, said {said}, back {back}, peak {peak:.1f} MB")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if failures and not args.report:
        print("\nFAIL\n" + "\n".join(failures))
        sys.exit(1)
    print("\nPASS" if not failures else "\n(report only)")


if __name__ == "__main__":
    main()
