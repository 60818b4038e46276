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

With --websockets N (docs/drain.md), N WebSocket clients (user ids u0..u<N-1>,
one thread each) stay connected through nginx for the whole run to a second
service, ws.example, with `drain: {rate: 50/s}` and `user_key: arg:user`, whose
split moves at every good edit of the file: most edits give it the HTTP
service's new percentage, one in three a short ramp (three steps, 200 ms apart),
so percentage changes reach it by watch= publications, reloads and ramp steps.
Its backends (old, new) are threads of this script: a minimal RFC 6455 server
that answers 101 with X-Backend: NAME, sends one text frame NAME and holds the
connection until the peer closes it. A client whose connection closes
reconnects at once (as browsers' WebSocket apps do). A reload retires the
workers, which keep what they hold and never drain it: before every change the
run counts the misplaced connections held by a worker whose title says
"shutting down" (X-Worker-Pid, added to the 101, names it) and reports them,
not as failures; then the clients of half of the connections retired workers
hold (picked at random) close them and reconnect, so that the current workers
always hold some for the next change to drain (those closes are the script's
own and are not judged). At the end:

* 0 unexpected closes. A close is expected only if its connection was
  misplaced (murmur2(user) against the split; its side is the one its 101 and
  first frame named) at a percentage that may have been in force on its worker
  shortly before the close: a worker decides its requests again at each look
  (every 100 ms) and closes only what is misplaced then, so the percentages
  judged are those in force from max(opened, closed - 0.3 s) - SLACK until
  just after the close. SLACK = the watch= interval + 0.5 s: a worker
  publishes an edit up to one interval after it is written, and a reload's
  old workers take connections for about 100 ms more, on the old split. "In
  force" means the last good file written (a refused one publishes nothing),
  each of a ramp's later steps from the earliest it is due, and whatever the
  status showed (a poller, every 25 ms). Judging a close against every
  percentage since its connection opened would be simpler, but far weaker: a
  connection open for a while has been misplaced at some percentage or other,
  so a correctly placed one closed by a reload would pass.
* 0 wrong-side connections: each one, first or reconnect, is on its user's
  side at a percentage in force from SLACK before it opened until its 101.
* The status agrees: as many `drained` as closes seen (so no close but a
  drain, whatever the judging window allowed) and the open connections per side.
* With --watch, a final drain check, so that drains are seen to happen and not
  only allowed: the clients move what retired workers hold onto the current
  workers, then a watch= edit takes the service from 50 % to 0 %: exactly the
  connections on new must close, at the rate, and come back on old; none on old
  may close; the status must then show 0 misplaced.

    bench/stress.py --reloads 50            # the full run, without watch= or WebSockets
    bench/stress.py --reloads 10 --quick    # what CI runs (make test)
    bench/stress.py --seconds 60 --watch 300ms --hostile 0.3   # issue 4's crash-free run
    bench/stress.py --reloads 50 --watch 200ms --pause 0.5 --websockets 40   # make stress
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import socketserver
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


def yaml_text(percentage, version, ws=None):
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
""" + (ws_service_yaml(ws) if ws else "")


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


def nginx_conf(watch, websockets=False):
    watch_param = f" watch={watch}" if watch else ""
    # X-Worker-Pid names the worker that holds each WebSocket, so that the run
    # can tell a retired one (docs/drain.md: it does not drain).
    ws_location = """
        location /ws {
            migration on;
            proxy_pass http://$migration_backend;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            add_header X-Worker-Pid $pid always;
        }""" if websockets else ""
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
        server_name api.example{' ws.example' if websockets else ''};
        location / {{
            migration on;
            proxy_set_header Host $migration_host;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header X-Migration-Target $migration_target always;
            proxy_pass http://$migration_backend;
        }}
        location = /status {{ migration_status; }}{ws_location}
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


def service(doc, name):
    return next(s for s in doc["services"] if s["name"] == name)


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


# --------------------------------------------------------------------------
# --websockets N: long-lived requests across reloads, watch= edits and ramp steps

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_RATE = 50            # drain: {rate: 50/s}
WS_RAMP_EVERY = "200ms"
WS_EPS = 0.25           # a change recorded up to this long after a close still counts for it
WS_DRAIN_LAG = 0.3      # a worker closes what was misplaced at its last look (every 100 ms)


def _split_hash():
    """nginx's MurmurHash2 as scripts/find-split-bound-keys.py transcribes it
    (src/core/ngx_murmurhash.c, line by line): one copy for the project's Python."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "find-split-bound-keys.py")
    spec = importlib.util.spec_from_file_location("find_split_bound_keys", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.murmur2


murmur2 = _split_hash()


def cohort(user, percentage):
    """The side of `user` at `percentage` (engine/src/hash.rs: split_clients'
    bound, with 100 % meaning everyone)."""
    bp = round(percentage * 100)
    return "new" if bp >= 10000 or murmur2(user.encode()) < bp * 0xFFFFFFFF // 10000 else "old"


def seconds_of(duration):
    """A watch= interval ("200ms", "1s") in seconds; 0 for none."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", duration or "0")
    if not m:
        raise SystemExit(f"--watch {duration!r}: expected e.g. 200ms or 1s")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60}[m.group(2)]


def ws_service_yaml(ws):
    """The ws service; `ws` is ("percentage", P) or ("ramp", [a, b, c])."""
    kind, value = ws
    if kind == "ramp":
        split = f"ramp: {{steps: [{', '.join(str(v) for v in value)}], every: {WS_RAMP_EVERY}}}"
    else:
        split = f"percentage: {value}"
    return f"""  - name: ws
    old_host: ws.example
    old_backend: 127.0.0.1:{PORTS['ws_old']}
    new_host: ws.example
    new_backend: 127.0.0.1:{PORTS['ws_new']}
    migration:
      strategy: user
      user_key: arg:user
      {split}
      drain: {{rate: {WS_RATE}/s}}
"""


def ws_frame(payload):
    """One unmasked final text frame (RFC 6455 5.2), payload under 126 bytes."""
    return bytes([0x81, len(payload)]) + payload


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


class WsBackendHandler(socketserver.BaseRequestHandler):
    """101 with X-Backend, one frame with the backend's name, then hold the
    connection until the peer (nginx) closes it."""

    def handle(self):
        sock, name = self.request, self.server.name
        sock.settimeout(10)
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(4096)
                if not chunk or len(buf) > 65536:
                    return
                buf += chunk
            lines = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            key = headers.get("sec-websocket-key")
            if headers.get("upgrade", "").lower() != "websocket" or not key:
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(name), name))
                return
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + ws_accept(key).encode() + b"\r\n"
                         b"X-Backend: " + name + b"\r\n\r\n" + ws_frame(name))
            sock.settimeout(None)
            while sock.recv(65536):
                pass
        except OSError:
            pass


class WsBackend(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, name):
        super().__init__(("127.0.0.1", 0), WsBackendHandler)
        self.name = name.encode()
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, args=(0.1,), daemon=True).start()


def worker_state(pid):
    """'current', 'retired' (its title says it is shutting down) or 'gone'."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read()
    except OSError:
        return "gone"
    return "retired" if b"shutting down" in title else "current"


class HandshakeError(Exception):
    pass


class WsConn:
    """One WebSocket connection of one client, from its handshake to its close."""

    def __init__(self, user, reconnect):
        self.user = user
        self.reconnect = reconnect
        self.opened_at = time.time()
        self.upgraded_at = None
        self.side = None            # X-Backend of the 101
        self.frame = None           # payload of the first frame
        self.pid = None             # X-Worker-Pid: the nginx worker holding it
        self.closed_at = None
        self.how = None             # "eof", an error, or "client" (closed by this script)
        self.sock = None


class WsFleet:
    """N clients, each a thread holding one WebSocket open (and reconnecting
    when nginx closes it), a status poller, and the record to judge at the end."""

    def __init__(self, n, slack):
        self.users = [f"u{i}" for i in range(n)]
        self.slack = slack
        self.lock = threading.Lock()
        self.stopping = False
        self.history = []           # (time, percentage, kind, label); kind: file, status or ramp
        self.written = None         # (time, version, ws) of the last good file written
        self.polled = None          # (time, percentage, version) of the last status poll
        self.poll_errors = 0
        self.conns = []             # every connection ever upgraded
        self.current = {}           # user -> its WsConn open now
        self.failures = []          # (time, user, error) of connection attempts that failed
        self.gave_up = []
        self.recycle = set()        # users whose connection this script closes itself
        self.retired_misplaced = set()
        self.retired_held = 0       # most connections seen on retired workers at once
        self.draining_seen = 0      # misplaced on a current worker at a snapshot (a drain under way)
        self.gone = 0
        self.moved_off = 0          # connections of retired workers their clients closed and reopened
        self.rng = random.Random()
        self.poll_stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(u,), daemon=True) for u in self.users]
        self.poller = threading.Thread(target=self.poll, daemon=True)

    # -- what the run publishes ---------------------------------------------

    def changed(self, ws, version, source):
        """Called just before a good file is written (a refused one publishes nothing)."""
        t = time.time()
        with self.lock:
            self.written = (t, version, ws)
            first = ws[1][0] if ws[0] == "ramp" else ws[1]
            self.history.append((t, first, "file", f"{source} {version}" + (f" ramp {ws[1]}" if ws[0] == "ramp" else "")))
            if ws[0] == "ramp":
                # Each later step, from the earliest it can be in force on: the
                # poller may miss one (a step taken by workers that a reload
                # retires a moment later, whose status no one asks any more).
                every = seconds_of(WS_RAMP_EVERY)
                for i, step in enumerate(ws[1][1:], 1):
                    self.history.append((t + i * every, step, "ramp", f"step {i + 1} of {version}, due"))

    def poll(self):
        last = None
        while not self.poll_stop.is_set():
            t = time.time()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", PORTS["front"], timeout=2)
                conn.request("GET", "/status?service=ws")
                doc = json.loads(conn.getresponse().read())
                conn.close()
                p, version = doc["services"][0]["percentage"], doc["version"]
            except Exception:  # noqa: BLE001 - a poll across a reload may fail; the next one will do
                self.poll_errors += 1
            else:
                with self.lock:
                    self.polled = (t, p, version)
                    if p != last:
                        self.history.append((t, p, "status", f"status {version}"))
                        last = p
            self.poll_stop.wait(0.025)

    def percentage_now(self):
        """The percentage in force now: the status's, once it shows the last
        file written (a ramp's step), else the file's own."""
        with self.lock:
            t, version, ws = self.written
            if self.polled and self.polled[2] == version and self.polled[0] >= t:
                return self.polled[1]
            return ws[1][0] if ws[0] == "ramp" else ws[1]

    # -- clients ------------------------------------------------------------

    def connect(self, user, reconnect):
        for attempt in range(40):
            with self.lock:
                if self.stopping:
                    return None
            conn = WsConn(user, reconnect)
            key = base64.b64encode(os.urandom(16)).decode()
            sock = None
            try:
                sock = socket.create_connection(("127.0.0.1", PORTS["front"]), timeout=5)
                sock.sendall(f"GET /ws?user={user} HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\n"
                             f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n".encode())
                buf = b""
                while b"\r\n\r\n" not in buf:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise HandshakeError("closed before the response header" + (f" (got {buf!r})" if buf else ""))
                    buf += chunk
                head, rest = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                if lines[0].split()[1:2] != ["101"]:
                    raise HandshakeError(f"{lines[0]!r}")
                if headers.get("sec-websocket-accept") != ws_accept(key):
                    raise HandshakeError(f"bad Sec-WebSocket-Accept {headers.get('sec-websocket-accept')!r}")
                conn.upgraded_at = time.time()
                conn.side = headers.get("x-backend")
                conn.pid = int(headers.get("x-worker-pid", "0")) or None
                sock.settimeout(2)
                while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
                    chunk = sock.recv(4096)
                    if not chunk:
                        # Upgraded, then closed before its frame: a close like any other.
                        conn.closed_at, conn.how = time.time(), "eof before the first frame"
                        break
                    rest += chunk
                else:
                    conn.frame = rest[2:2 + (rest[1] & 0x7F)].decode("latin-1")
            except (OSError, HandshakeError, ValueError, IndexError) as e:
                if sock:
                    sock.close()
                with self.lock:
                    self.failures.append((time.time(), user, f"{type(e).__name__}: {e}"))
                time.sleep(0.05)
                continue
            conn.sock = sock
            with self.lock:
                if self.stopping:
                    sock.close()
                    return None
                self.conns.append(conn)
                self.current[user] = conn
            return conn
        with self.lock:
            self.gave_up.append(user)
        return None

    def client(self, user):
        reconnect = False
        while True:
            conn = self.connect(user, reconnect)
            if conn is None:
                return
            reconnect = True
            sock, how = conn.sock, conn.how
            if conn.closed_at is None:
                sock.settimeout(None)
                try:
                    while sock.recv(65536):
                        pass
                    how = "eof"
                except OSError as e:
                    how = f"{type(e).__name__}: {e}"
            t = conn.closed_at or time.time()
            with self.lock:
                conn.closed_at = t
                conn.how = "client" if self.stopping or user in self.recycle else how
                self.recycle.discard(user)
                if self.current.get(user) is conn:
                    del self.current[user]
                stopping = self.stopping
            sock.close()
            if stopping:
                return

    def start(self):
        self.poller.start()
        for t in self.threads:
            t.start()

    def wait_connected(self, users, since, seconds):
        """Until each of `users` has a connection upgraded after `since`."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            with self.lock:
                if all(u in self.current and self.current[u].upgraded_at >= since for u in users):
                    return True
            time.sleep(0.02)
        return False

    def snapshot(self, move_off=True):
        """Before a change: counts the misplaced connections that retired
        workers hold; then the clients of half of the connections retired
        workers hold (picked at random) close them and reconnect, onto the
        current workers, so that there always are some there for the next
        change to drain (else, after the first reload, every connection would
        sit on a retired worker for the rest of the run)."""
        if self.written is None:
            return
        p = self.percentage_now()
        with self.lock:
            open_now = list(self.current.values())
        held = []
        for c in open_now:
            state = worker_state(c.pid)
            if state == "retired":
                held.append(c)
            if cohort(c.user, p) == c.side:
                continue
            if state == "retired":
                self.retired_misplaced.add(id(c))
            elif state == "current":
                self.draining_seen += 1
            else:
                self.gone += 1
        self.retired_held = max(self.retired_held, len(held))
        if move_off:
            movers = [c for c in held if self.rng.random() < 0.5]
            self.close_own(movers)
            self.moved_off += len(movers)

    def close_own(self, conns):
        """This script closes these connections itself (not counted as closes)."""
        with self.lock:
            for c in conns:
                if self.current.get(c.user) is c:
                    self.recycle.add(c.user)
                    try:
                        c.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def stop(self):
        self.poll_stop.set()
        with self.lock:
            self.stopping = True
            for c in self.current.values():
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in self.threads + [self.poller]:
            t.join(timeout=10)

    # -- judging --------------------------------------------------------------

    def published(self, start, end):
        """The percentages in force at `start` (the last file written before it,
        and the steps the status showed since: a ramp's) or published from
        `start` to `end`."""
        written = [t for t, _, kind, _ in self.history if t <= start and kind == "file"]
        since = max(written) if written else start
        return {p for t, p, _, _ in self.history if since <= t <= end}

    def judge(self):
        wrong, unexpected, expected = [], [], []
        for c in self.conns:
            at_open = self.published(c.opened_at - self.slack, c.upgraded_at + WS_EPS)
            if c.side not in {cohort(c.user, p) for p in at_open} or (c.frame is not None and c.frame != c.side):
                wrong.append((c, at_open))
            if c.closed_at is None or c.how == "client":
                continue
            start = max(c.opened_at, c.closed_at - WS_DRAIN_LAG) - self.slack
            since = self.published(start, c.closed_at + WS_EPS)
            if any(cohort(c.user, p) != c.side for p in since):
                expected.append(c)
            else:
                unexpected.append((c, since))
        return wrong, unexpected, expected

    def describe(self, c, t0):
        return (f"{c.user} on {c.side} (worker {c.pid}, {worker_state(c.pid) if c.pid else '?'}), "
                f"opened at {c.opened_at - t0:.3f} s" + (f", closed at {c.closed_at - t0:.3f} s ({c.how})" if c.closed_at else ""))

    def changes_near(self, t, t0, before=1.5, after=0.3):
        return "; ".join(f"{tt - t0:.3f} s: {p} % ({label})" for tt, p, _, label in sorted(self.history)
                         if t - before <= tt <= t + after)


def ws_final_drain(fleet, conf_yaml, t0):
    """With watch=: move what retired workers hold onto current workers, then
    take the service from 50 % to 0 %: exactly those on new must close, at the
    rate, and come back on old. Returns (lines to print, failures)."""
    lines, failures = [], []
    with fleet.lock:
        held = [c for c in fleet.current.values() if worker_state(c.pid) != "current"]
    since = time.time()
    fleet.close_own(held)
    if not fleet.wait_connected([c.user for c in held], since, 10):
        failures.append("the connections of retired workers did not all come back within 10 s")
    time.sleep(0.3)
    with fleet.lock:
        open_now = list(fleet.current.values())
    others = [c for c in open_now if worker_state(c.pid) != "current"]
    if others:
        failures.append(f"{len(others)} connections still on a retired worker")
    moving = [c for c in open_now if cohort(c.user, 0) != c.side]
    staying = [c for c in open_now if c not in moving]
    fleet.changed(("percentage", 0), "final-drain", "watch=")
    raised = time.time()
    write_atomically(conf_yaml, yaml_text(50, "final-drain", ws=("percentage", 0)))
    deadline = raised + fleet.slack + len(moving) / WS_RATE + 3
    while time.time() < deadline and not all(c.closed_at for c in moving):
        time.sleep(0.02)
    fleet.wait_connected([c.user for c in moving], raised, max(0.1, deadline - time.time()))
    time.sleep(0.5)
    drained = sorted(c.closed_at for c in moving if c.closed_at and c.how != "client")
    closed_staying = [c for c in staying if c.closed_at]
    with fleet.lock:
        back = [fleet.current.get(c.user) for c in moving]
    back_old = sum(1 for b in back if b and b.upgraded_at >= raised and b.side == "old")
    spread = drained[-1] - drained[0] if drained else 0
    lines.append(f"final drain check (watch=): {len(held)} connections of retired workers moved by their clients; "
                 f"50 % -> 0 %: {len(drained)} of the {len(moving)} on new closed"
                 + (f", the first {drained[0] - raised:.2f} s after the edit, over {spread:.2f} s "
                    f"((n-1)/rate = {(len(drained) - 1) / WS_RATE:.2f} s)" if drained else "")
                 + f"; {back_old} reconnected on old; {len(closed_staying)} of the {len(staying)} on old closed")
    if len(drained) != len(moving):
        failures.append(f"{len(moving) - len(drained)} misplaced connections on current workers not drained: "
                        + ", ".join(fleet.describe(c, t0) for c in moving if not c.closed_at)[:500])
    if back_old != len(moving):
        failures.append(f"{len(moving) - back_old} of the drained did not reconnect on old")
    if closed_staying:
        failures.append(f"{len(closed_staying)} connections on old closed")
    return lines, failures


def ws_status_check(fleet, all_current):
    """The status counts what the clients hold, and as many drains as closes
    seen (and none misplaced, once every connection is on a current worker:
    a retired worker's requests are never decided again)."""
    with fleet.lock:
        mine = {"old": sum(c.side == "old" for c in fleet.current.values()),
                "new": sum(c.side == "new" for c in fleet.current.values())}
        closes = sum(1 for c in fleet.conns if c.closed_at and c.how != "client")
    want = {"old": mine["old"], "new": mine["new"], "misplaced": 0, "drained": closes}
    if not all_current:
        del want["misplaced"]
    got = None
    deadline = time.time() + 3
    while time.time() < deadline:
        try:
            got = status()
            got = service(got, "ws")["connections"]
            if not all_current:
                got = {k: v for k, v in got.items() if k != "misplaced"}
        except Exception as e:  # noqa: BLE001
            got = repr(e)
        if got == want:
            break
        time.sleep(0.05)
    return got, want


def ws_report(fleet, args, ws_state, conf_yaml):
    """The end of the WebSocket part: the final drain check (with watch=), the
    status, then every close and connection judged. Prints; True if it passed."""
    t0 = fleet.history[0][0]
    fleet.snapshot(move_off=False)  # after the final reload
    lines, failures = [], []
    if args.watch:
        lines, failures = ws_final_drain(fleet, conf_yaml, t0)
    got, want = ws_status_check(fleet, all_current=bool(args.watch))
    fleet.stop()
    wrong, unexpected, expected = fleet.judge()
    first = sum(1 for c in fleet.conns if not c.reconnect)
    reconnects = len(fleet.conns) - first
    kinds = {}
    for _, _, error in fleet.failures:
        kind = re.sub(r"\d+", "N", error)[:80]
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"websockets: {len(fleet.users)} clients through nginx to ws.example (drain {WS_RATE}/s), "
          f"{ws_state['changes']} changes of its split written ({ws_state['ramps']} of them ramps of 3 steps, "
          f"every {WS_RAMP_EVERY}); judged with a slack of {fleet.slack:.2f} s")
    print(f"  connections: {first} first + {reconnects} reconnects, {len(wrong)} on the wrong side; "
          f"attempts that failed and were retried: {len(fleet.failures)}"
          + (f" ({', '.join(f'{n} x {k}' for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))})" if kinds else "")
          + (f"; clients that gave up: {len(fleet.gave_up)}" if fleet.gave_up else ""))
    print(f"  closes: {len(expected)} expected (misplaced, drained), {len(unexpected)} unexpected; "
          f"closed by their clients to move off a retired worker: {fleet.moved_off}")
    print(f"  misplaced but held by a retired worker (not drained, as documented): {len(fleet.retired_misplaced)} "
          f"connections, seen at the snapshots before each change (at most {fleet.retired_held} connections "
          f"on retired workers at once); misplaced on a current worker at a snapshot (a drain under way): "
          f"{fleet.draining_seen}" + (f"; on a worker gone: {fleet.gone}" if fleet.gone else ""))
    for line in lines:
        print("  " + line)
    print(f"  status connections: {got} (the clients hold {want})")
    for c, since in unexpected[:10]:
        print(f"  UNEXPECTED close: {fleet.describe(c, t0)}; percentages in force before it: {sorted(since)}; "
              f"changes around the close: {fleet.changes_near(c.closed_at, t0)}")
    for c, at_open in wrong[:10]:
        print(f"  WRONG SIDE: {fleet.describe(c, t0)}, first frame {c.frame!r}; belongs on "
              f"{sorted({cohort(c.user, p) for p in at_open})} at {sorted(at_open)} %; changes around it: "
              f"{fleet.changes_near(c.opened_at, t0)}")
    for f in failures:
        print("  FAILED: " + f)
    if got != want:
        extra = ""
        if isinstance(got, dict) and got.get("drained") != want["drained"]:
            extra = f": {want['drained'] - got.get('drained', 0)} closes seen that nginx did not count as drained"
        print("  FAILED: the status does not count what the clients hold" + extra)
    return not (wrong or unexpected or failures or fleet.gave_up or got != want)


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
    ap.add_argument("--websockets", type=int, default=0, metavar="N",
                    help="also hold N WebSockets open to a service with drain (see above)")
    args = ap.parse_args()

    for name in ("front", "old", "new"):
        PORTS[name] = free_port()
    fleet = None
    backends = []
    ws_rng = random.Random()
    ws_state = {"last": ("percentage", 50), "ramps": 0, "changes": 0}
    if args.websockets:
        backends = [WsBackend("old"), WsBackend("new")]
        PORTS["ws_old"], PORTS["ws_new"] = backends[0].port, backends[1].port
        fleet = WsFleet(args.websockets, seconds_of(args.watch) + 0.5)

    def write_yaml(percentage, version, source, bad=False, ws=None):
        """Writes the file; with --websockets, the ws service's split moves too:
        the same percentage, or one time in three a ramp of three steps."""
        if fleet:
            fleet.snapshot()
            if bad:
                ws = ws_state["last"]
            elif ws is None:
                ws = ("percentage", percentage)
                if ws_rng.random() < 1 / 3:
                    while ws == ("percentage", percentage) or ws == ws_state["last"]:
                        ws = ("ramp", sorted(ws_rng.sample([10, 25.5, 50, 90, 100], 3)))
            if not bad:
                ws_state["changes"] += ws != ws_state["last"]
                ws_state["ramps"] += ws[0] == "ramp"
                ws_state["last"] = ws
                fleet.changed(ws, version, source)
        text = yaml_text(percentage, version, ws if fleet else None)
        if bad:
            text = text.replace("strategy: user", "strategy: sticky")
        write_atomically(conf_yaml, text)
    prefix = tempfile.mkdtemp(prefix="migration-stress-")
    os.chmod(prefix, 0o755)  # the workers (user nobody under root) read the file for watch=
    for d in ("conf", "logs"):
        os.makedirs(os.path.join(prefix, d))
    conf_yaml = os.path.join(prefix, "conf", "m.yaml")
    write_yaml(50, "r0", "start", ws=("percentage", 50))
    with open(os.path.join(prefix, "conf", "nginx.conf"), "w") as f:
        f.write(nginx_conf(args.watch, websockets=bool(fleet)))

    nginx = subprocess.Popen([NGINX, "-p", prefix + "/", "-c", "conf/nginx.conf"], stderr=subprocess.PIPE)
    ok = False
    try:
        if not wait_for_port(PORTS["front"], time.time() + 10):
            raise SystemExit("nginx did not start: " + nginx.stderr.read().decode())
        generation0 = status()["generation"]
        counted0 = sum(service(status(), "api")["requests"].values())
        if fleet:
            t = time.time()
            fleet.start()
            if not fleet.wait_connected(fleet.users, t, 10):
                raise SystemExit(f"the WebSockets did not all connect: {fleet.failures[:5]}")
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
                    write_yaml(percentage, f"w{i}", "watch=")
                    time.sleep(args.pause)
                if i % 10 == 5:
                    # A bad file now and then: that reload must be refused, and
                    # the old workers must go on serving.
                    write_yaml(percentage, f"r{i}", "reload", bad=True)
                    refused += 1
                else:
                    write_yaml(percentage, f"r{i}", "reload")
                os.kill(nginx.pid, signal.SIGHUP)
                time.sleep(args.pause)
            args.reloads = i
            write_yaml(50, "final", "reload", ws=("percentage", 50))
            os.kill(nginx.pid, signal.SIGHUP)
            time.sleep(0.5 if args.quick else 2)
        elapsed = time.time() - started
        ws_ok = True
        if fleet:
            ws_ok = ws_report(fleet, args, ws_state, conf_yaml)
        time.sleep(0.3)
        doc = status()
        counted = sum(service(doc, "api")["requests"].values()) - counted0
        log = open(os.path.join(prefix, "logs", "error.log"), errors="replace").read()
        bad_lines = [l for l in log.splitlines() if re.search(r"\[(alert|crit)\]|exited on signal", l)]
        emerg = [l for l in log.splitlines() if "[emerg]" in l]
        bad_emerg = [l for l in emerg if "must be weight, user or ip" not in l]
        reloads_logged = len(re.findall(r"signal 1 \(SIGHUP\) received", log))
        watch_published = len(re.findall(r"changed; published generation", log))
        print(f"reloads: {args.reloads} signalled ({reloads_logged} seen by the master, {refused} with a bad file and refused); "
              f"generations {generation0} -> {doc['generation']}, {watch_published} of them published by watch=")
        print(f"hostile share: {args.hostile:.0%}; breaker trips: {service(doc, 'api')['fallback']['trips']}")
        print(f"requests: {load.sent} in {elapsed:.1f} s ({load.sent / elapsed:.0f} req/s), failures: {len(load.failures)}, "
              f"retried after a closed keep-alive connection: {load.retries}")
        print(f"status counted {counted} of the {load.sent} requests")
        print(f"error log: {len(bad_lines)} [alert]/[crit]/exited-on-signal lines, {len(emerg)} [emerg] lines "
              f"({len(bad_emerg)} not from the bad files)")
        for line in (load.failures[:5] + bad_lines[:5] + bad_emerg[:5]):
            print("  " + line)
        ok = (not load.failures and not bad_lines and not bad_emerg and counted == load.sent
              and reloads_logged == args.reloads + 1 and len(emerg) >= refused and ws_ok)
        print("PASS" if ok else "FAIL")
    finally:
        if fleet:
            fleet.stop()  # the WebSockets end first, or the retired workers would wait for them
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(timeout=10)
        except subprocess.TimeoutExpired:
            nginx.kill()
        for b in backends:
            b.shutdown()
            b.server_close()
        if args.keep or not ok:
            print(f"prefix kept: {prefix}")
        else:
            shutil.rmtree(prefix, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
