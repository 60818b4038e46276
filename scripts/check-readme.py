#!/usr/bin/env python3
"""Every nginx.conf and YAML example of the documentation works as printed (make test).

The documentation is README.md, every docs/*.md page, t/README.md and
bench/README.md: each file's examples are run the same way, and an id= YAML of
one file can be named by a yaml= of any other (the complete nginx.conf of
docs/install.md runs with the YAML of docs/yaml.md).

A fenced ```nginx or ```yaml block may be preceded by a marker comment:

    <!-- check: fragment (why it is not meant to run alone) -->
    <!-- check: id=NAME -->                 a YAML document other checks refer to
    <!-- check: run yaml=NAME [wrap=server|http]
         [GET /path] [on=N] [Name: value, Name: value] => OUTCOME
         ... -->

* A YAML block without a marker, or with id=, must be a whole migration.yaml:
  `nginx -t` with the module loads it.
* Every nginx block needs a marker: `fragment` (skipped, with its reason printed)
  or `run`. A `run` block is a whole nginx.conf, or with wrap= the contents of a
  server{} or http{} block, which the check puts into a minimal nginx.conf (the
  module, `migration_config` of the YAML named by yaml=, a resolver). The check
  changes only what cannot be the same here: `listen` becomes a free loopback port
  (on=N picks the Nth listen, default 1), the `migration_config` path the YAML
  named by yaml=, `load_module modules/` the built module, an `error_log` path
  logs/error.log (its level stays), `resolver` a stub DNS
  server on loopback that answers every name with an address of its own in
  127.0.0.0/8 (where nothing listens, so a proxied request fails fast with 502).
  Then `nginx -t`, a start, and each request: OUTCOME is a status code, or the
  backends nginx tried, in order, as `new`, `old` or `new, old` (read from the
  error log's `upstream: "..."`, mapped back to the YAML's new_backend/old_backend).
* `target/nginx/sbin/nginx -p target/nginx/` (docs/install.md, "Build outputs") has a
  configuration right after `make build`.
"""

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NGINX = os.environ.get("TEST_NGINX_BINARY", os.path.join(ROOT, "target", "nginx", "sbin", "nginx"))
MODULE = os.environ.get("TEST_NGINX_MODULE", os.path.join(ROOT, "target", "nginx", "modules",
                                                          "ngx_http_migration_module.so"))
BLOCK = re.compile(r"(?:<!--\s*check:(?P<marker>.*?)-->\s*\n)?```(?P<lang>nginx|yaml)\n(?P<body>.*?)\n```", re.S)

failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL: {msg}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StubDNS(threading.Thread):
    """Answers every A query with 127.0.0.N, one N per name; AAAA with no answer."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.names = {}

    def address(self, name):
        if name not in self.names:
            self.names[name] = f"127.0.0.{10 + len(self.names)}"
        return self.names[name]

    def run(self):
        while True:
            data, peer = self.sock.recvfrom(512)
            try:
                qid, _flags, _qd = struct.unpack(">HHH", data[:6])
                pos, labels = 12, []
                while data[pos]:
                    labels.append(data[pos + 1:pos + 1 + data[pos]].decode().lower())
                    pos += 1 + data[pos]
                qtype = struct.unpack(">H", data[pos + 1:pos + 3])[0]
                question = data[12:pos + 5]
                answer = b""
                if qtype == 1:
                    ip = socket.inet_aton(self.address(".".join(labels)))
                    answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + ip
                header = struct.pack(">HHHHHH", qid, 0x8180, 1, 1 if answer else 0, 0, 0)
                self.sock.sendto(header + question + answer, peer)
            except (IndexError, struct.error, UnicodeDecodeError):
                continue


def nginx_t(prefix, conf):
    r = subprocess.run([NGINX, "-p", prefix + "/", "-e", "logs/error.log", "-c", conf, "-t"],
                       capture_output=True, text=True)
    return r.returncode, r.stderr


def minimal_conf(prefix, yaml_path, inner, wrap, dns):
    head = f"load_module {MODULE};\nevents {{}}\nhttp {{\n    migration_config {yaml_path};\n" \
           f"    resolver 127.0.0.1:{dns.port};\n"
    if wrap == "server":
        # Names every Host, as the t/ harness's server does, so auto sees every service.
        return head + f"    server {{\n        listen 80;\n        server_name localhost ~.;\n{inner}\n    }}\n}}\n"
    if wrap == "http":
        return head + inner + "\n}\n"
    return head + "}\n"


def request(port, path, headers):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def backends_of(yaml_text):
    found = {}
    for side in ("old", "new"):
        m = re.search(rf"^\s*{side}_backend:\s*(\S+)", yaml_text, re.M)
        host = re.sub(r"^https?://", "", m.group(1)).rsplit(":", 1)[0]
        found[host.lower()] = side
    return found


def run_block(n, body, marker, yamls, dns):
    opts = dict(re.findall(r"\b(yaml|wrap)=(\S+)", marker.splitlines()[0]))
    expectations = [l.strip() for l in marker.splitlines()[1:] if "=>" in l]
    yaml_text = yamls[opts["yaml"]]
    prefix = tempfile.mkdtemp(prefix="readme-check.")
    os.chmod(prefix, 0o755)
    try:
        os.makedirs(os.path.join(prefix, "logs"))
        os.makedirs(os.path.join(prefix, "conf"))
        yaml_path = os.path.join(prefix, "conf", "migration.yaml")
        with open(yaml_path, "w") as fh:
            fh.write(yaml_text)
        text = body if "wrap" not in opts else minimal_conf(prefix, yaml_path, body, opts["wrap"], dns)
        text = text.replace("load_module modules/ngx_http_migration_module.so", f"load_module {MODULE}")
        text = re.sub(r"migration_config \S+?(;| )", lambda m: f"migration_config {yaml_path}{m.group(1)}", text)
        text = re.sub(r"resolver [^ ;]+", f"resolver 127.0.0.1:{dns.port}", text)
        text = re.sub(r"error_log [^ ;]+", "error_log logs/error.log", text)
        ports = []

        def listen(m):
            ports.append(free_port())
            return f"listen 127.0.0.1:{ports[-1]};"

        text = re.sub(r"listen [^;]+;", listen, text)
        conf = os.path.join(prefix, "conf", "nginx.conf")
        with open(conf, "w") as fh:
            fh.write(text)
        rc, out = nginx_t(prefix, conf)
        if rc != 0:
            fail(f"nginx block {n}: nginx -t failed:\n{out}")
            return
        r = subprocess.run([NGINX, "-p", prefix + "/", "-e", "logs/error.log", "-c", conf], capture_output=True,
                           text=True)
        if r.returncode != 0:
            fail(f"nginx block {n}: nginx did not start:\n{r.stderr}")
            return
        log = os.path.join(prefix, "logs", "error.log")
        names = backends_of(yaml_text)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", ports[0]), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            for exp in expectations:
                what, want = [x.strip() for x in exp.split("=>")]
                path, on = "/", 1
                m = re.match(r"GET (\S+)\s*", what)
                if m:
                    path, what = m.group(1), what[m.end():]
                m = re.match(r"on=(\d+)\s*", what)
                if m:
                    on, what = int(m.group(1)), what[m.end():]
                headers = dict(h.split(":", 1) for h in what.split(",") if h.strip())
                headers = {k.strip(): v.strip() for k, v in headers.items()}
                before = os.path.getsize(log)
                status = request(ports[on - 1], path, headers)
                with open(log) as fh:
                    fh.seek(before)
                    new_lines = fh.read()
                tried = []
                for ip in re.findall(r'upstream: "https?://([\d.]+):\d+', new_lines):
                    host = next((h for h, a in dns.names.items() if a == ip), ip)
                    tried.append(names.get(host, host))
                got = str(status) if want.isdigit() else ", ".join(tried)
                if got != want:
                    fail(f"nginx block {n}: {exp}: got {got} (status {status}, tried {tried})")
                else:
                    print(f"ok: nginx block {n}: {exp}")
            bad = [l for l in open(log) if re.search(r"\[(alert|crit|emerg)\]|exited on signal", l)]
            if bad:
                fail(f"nginx block {n}: error log: {bad[:3]}")
        finally:
            subprocess.run([NGINX, "-p", prefix + "/", "-e", "logs/error.log", "-c", conf, "-s", "quit"],
                           capture_output=True)
            pidfile = os.path.join(prefix, "logs", "nginx.pid")
            for _ in range(100):
                if not os.path.exists(pidfile):
                    break
                time.sleep(0.05)
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def documents():
    """The files whose examples are checked, README.md first, by their path from the root."""
    names = ["README.md"]
    docs = os.path.join(ROOT, "docs")
    if os.path.isdir(docs):
        names += sorted("docs/" + f for f in os.listdir(docs) if f.endswith(".md"))
    names += [f for f in ("t/README.md", "bench/README.md") if os.path.exists(os.path.join(ROOT, f))]
    return [(name, open(os.path.join(ROOT, name)).read()) for name in names]


def main():
    dns = StubDNS()
    dns.start()
    yamls, runs, fragments, loaded = {}, [], [], 0
    files = [(name, text, list(BLOCK.finditer(text))) for name, text in documents()]
    for name, text, blocks in files:
        for m in blocks:
            marker = (m.group("marker") or "").strip()
            m_id = re.match(r"id=(\S+)", marker)
            if m_id:
                if m_id.group(1) in yamls:
                    fail(f"{name}: id={m_id.group(1)} is defined twice")
                yamls[m_id.group(1)] = m.group("body") + "\n"
    for name, text, blocks in files:
        for m in blocks:
            lang, body = m.group("lang"), m.group("body") + "\n"
            marker = (m.group("marker") or "").strip()
            n = text[:m.start("body")].count("\n") + 1
            where = f"{name}:{n}"
            if marker.startswith("fragment"):
                fragments.append(f"{where} ({lang}): {marker}")
                continue
            if lang == "yaml":
                prefix = tempfile.mkdtemp(prefix="readme-check.")
                try:
                    os.makedirs(os.path.join(prefix, "logs"))
                    with open(os.path.join(prefix, "m.yaml"), "w") as fh:
                        fh.write(body)
                    conf = os.path.join(prefix, "nginx.conf")
                    with open(conf, "w") as fh:
                        fh.write(minimal_conf(prefix, os.path.join(prefix, "m.yaml"), "", None, dns))
                    rc, out = nginx_t(prefix, conf)
                    out += open(os.path.join(prefix, "logs", "error.log")).read()
                    if rc != 0 or "migration: loaded" not in out:
                        fail(f"{where}: this YAML does not load:\n{out}")
                    else:
                        loaded += 1
                        print(f"ok: {where}: YAML loads with nginx -t")
                finally:
                    shutil.rmtree(prefix, ignore_errors=True)
                continue
            if not marker.startswith("run"):
                fail(f"{where}: an nginx block without a check marker (fragment or run)")
                continue
            m_yaml = re.search(r"\byaml=(\S+)", marker.splitlines()[0])
            if not m_yaml or m_yaml.group(1) not in yamls:
                fail(f"{where}: run names no YAML of an id= block (yaml=NAME)")
                continue
            runs.append(where)
            run_block(where, body, marker, yamls, dns)
    rc, out = nginx_t(os.path.join(ROOT, "target", "nginx"), "conf/nginx.conf")
    if rc != 0:
        fail(f"target/nginx/sbin/nginx -p target/nginx/ has no working configuration after make build:\n{out}")
    else:
        print("ok: target/nginx/sbin/nginx -p target/nginx/ -t after make build")
    print(f"documentation examples ({', '.join(name for name, _, _ in files)}): {len(runs)} nginx configurations "
          f"run, {loaded} YAML documents loaded, {len(fragments)} fragments not run alone:")
    for f in fragments:
        print(f"  {f}")
    print(f"check-readme: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
