#!/usr/bin/env python3
"""Helper of bench/drain-scale.sh (read that first): 10,000 WebSockets held
open through one nginx worker, then `watch=` edits that make the worker decide
them all again. Standard library only (a hand-written RFC 6455 handshake), so it
runs on a bare Debian python3.

    drain_scale.py yaml PERCENTAGE VERSION RATE OLD_PORT NEW_PORT   # prints m.yaml
    drain_scale.py backend OLD_PORT NEW_PORT                        # the WebSocket backend
    drain_scale.py run PREFIX PORT OLD_PORT NEW_PORT CONNS SAMPLES  # the measurement
"""

import asyncio
import base64
import hashlib
import json
import os
import re
import statistics
import sys
import time
import urllib.request

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
LINE = re.compile(rb"migration: (\d+) long-lived requests decided again in (\d+) us, (\d+) slice\(s\), "
                  rb"the longest (\d+) us \((\d+) newly misplaced; list (\d+) bytes\)")
PASS_LIMIT_US = 5000          # the limits, for 10,000 requests on one worker
STATE_LIMIT_BYTES = 2_000_000


def yaml(percentage, version, rate, old_port, new_port):
    return f"""version: "{version}"
services:
  - name: ws
    old_host: ws.example
    old_backend: 127.0.0.1:{old_port}
    new_host: ws.example
    new_backend: 127.0.0.1:{new_port}
    migration:
      enabled: true
      strategy: user
      percentage: {percentage}
      user_key: arg:user
      drain: {{rate: {rate}}}
"""


# --- backend: one asyncio process on both ports; answers the upgrade, sends its
# name in one frame (the client checks it came from old), then holds the
# connection until the peer closes it.
async def backend(old_port, new_port):
    async def serve(name, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            key = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)", head).group(1)
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                         + bytes([0x81, len(name)]) + name)
            while await reader.read(65536):
                pass
        except (OSError, asyncio.IncompleteReadError, AttributeError):
            pass
        writer.close()

    # A backlog well above the client's 500 handshakes in flight.
    servers = [await asyncio.start_server(lambda r, w, n=name: serve(n, r, w), "127.0.0.1", port, backlog=4096)
               for name, port in ((b"old", old_port), (b"new", new_port))]
    print("backend ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


# --- the measurement
def worker_pid(prefix):
    master = open(f"{prefix}/logs/nginx.pid").read().strip()
    return int(open(f"/proc/{master}/task/{master}/children").read().split()[0])


def rss_kb(pid):
    return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))


def status(port):
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10))


async def ws_open(port, i):
    """One WebSocket through nginx; returns (reader, writer) or the error."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16))
        writer.write(b"GET /ws?user=u%d HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n" % (i, key))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            return "status " + repr(head.split(b"\r\n")[0])
        frame = await asyncio.wait_for(reader.readexactly(5), 10)
        if frame != b"\x81\x03old":
            writer.close()
            return f"first frame {frame!r}, not old"
        return reader, writer
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
        return f"{type(e).__name__}: {e}"


def publish(prefix, k, percentage, rate, old_port, new_port):
    """Rewrites m.yaml as a ConfigMap swap does (a whole new file renamed in)."""
    tmp = f"{prefix}/m.yaml.tmp"
    with open(tmp, "w") as f:
        f.write(yaml(percentage, f"drain-{k}", rate, old_port, new_port))
    os.rename(tmp, f"{prefix}/m.yaml")


def wait_line(log, offset, timeout=15):
    """The first pass line written to the error log after `offset`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(log, "rb") as f:
            f.seek(offset)
            m = LINE.search(f.read())
        if m:
            return tuple(int(x) for x in m.groups())
        time.sleep(0.02)
    raise SystemExit(f"no pass line in {log} within {timeout} s")


async def run(prefix, port, old_port, new_port, conns, samples):
    log = f"{prefix}/logs/error.log"
    pid = worker_pid(prefix)
    # The worker holds two descriptors per WebSocket (client and upstream): it
    # can hold at most (its open-file limit - what it has open already) / 2.
    nofile = int(re.search(r"Max open files\s+(\d+)", open(f"/proc/{pid}/limits").read()).group(1))
    base_fds = len(os.listdir(f"/proc/{pid}/fd"))
    fits = (nofile - base_fds - 16) // 2   # 16 spare: the status request, the compile thread's read of m.yaml
    n = min(conns, fits)
    if n < conns:
        print(f"NOTE: the worker's open-file limit is {nofile} (the hard limit here; raising it needs "
              f"CAP_SYS_RESOURCE) and it has {base_fds} open: {n} WebSockets fit, not {conns}; "
              f"the pass time is also given scaled to {conns}")

    rss_before = rss_kb(pid)
    t0 = time.time()
    opened, errors = [], []
    for start in range(0, n, 500):   # 500 handshakes in flight at a time
        for r in await asyncio.gather(*(ws_open(port, i) for i in range(start, min(start + 500, n)))):
            (opened if isinstance(r, tuple) else errors).append(r)
    print(f"opened {len(opened)} WebSockets in {time.time() - t0:.1f} s ({len(errors)} failed"
          + (f", e.g. {errors[0]}" if errors else "") + ")")
    if not opened:
        return 1
    deadline = time.time() + 10
    while (c := status(port)["services"][0]["connections"])["old"] + c["new"] < len(opened) and time.time() < deadline:
        await asyncio.sleep(0.1)
    rss_after = rss_kb(pid)
    print(f"status: connections {c}")
    print(f"worker RSS {rss_before / 1024:.1f} MB -> {rss_after / 1024:.1f} MB: "
          f"{(rss_after - rss_before) * 1024 / max(len(opened), 1):,.0f} bytes per WebSocket")

    # Count the closes the drain makes (EOF on the client side).
    closed = []

    async def watch(reader):
        try:
            await reader.read(1)
        except OSError:
            pass
        closed.append(time.time())
    watchers = [asyncio.create_task(watch(r)) for r, _ in opened]

    passes = []
    for k in range(1, samples + 1):
        await asyncio.sleep(0.5)   # let the previous pass's closes and the status settle
        offset = os.path.getsize(log)
        percentage = 50 if k % 2 else 0
        publish(prefix, k, percentage, "1/m", old_port, new_port)
        decided, us, slices, longest, misplaced, list_bytes = await asyncio.to_thread(wait_line, log, offset)
        passes.append((us, list_bytes, longest))
        print(f"edit {k}: {percentage:>2} %: {decided} decided again in {us} us over {slices} slice(s), "
              f"the longest {longest} us; {misplaced} newly misplaced, list {list_bytes} bytes")
    await asyncio.sleep(0.5)
    c = status(port)["services"][0]["connections"]
    print(f"status after the edits: connections {c} (sum old+new {c['old'] + c['new']}); "
          f"{len(closed)} closed by the drain at 1/m; worker RSS {rss_kb(pid) / 1024:.1f} MB")

    # The same edit at 10000/s: how fast the misplaced ones go (reported apart).
    # A raised rate holds at once (the 1/m close above set the next a minute ahead).
    if samples % 2 == 0:
        await asyncio.sleep(0.5)
        offset = os.path.getsize(log)
        publish(prefix, samples + 1, 50, "1/m", old_port, new_port)
        await asyncio.to_thread(wait_line, log, offset)
    await asyncio.sleep(0.5)
    before = len(closed)
    want = status(port)["services"][0]["connections"]["misplaced"]
    offset = os.path.getsize(log)
    edited = time.time()
    publish(prefix, samples + 2, 50, "10000/s", old_port, new_port)
    decided, us, _, _, _, _ = await asyncio.to_thread(wait_line, log, offset)
    deadline = time.time() + 75
    while len(closed) - before < want and time.time() < deadline:
        await asyncio.sleep(0.05)
    got = closed[before:]
    if got:
        print(f"rate 10000/s: {len(got)} of {want} misplaced closed, the first {got[0] - edited:.2f} s after "
              f"the edit, spread over {got[-1] - got[0]:.2f} s (the pace alone: {(want - 1) / 10000:.2f} s); "
              f"that edit's pass: {decided} in {us} us")
    else:
        print(f"rate 10000/s: none of {want} misplaced closed within 75 s")
    c = status(port)["services"][0]["connections"]
    print(f"status at the end: connections {c}")

    for _, w in opened:
        w.close()
    for t in watchers:
        t.cancel()

    us = sorted(p[0] for p in passes)
    state = max(p[1] for p in passes)
    longest = max(p[2] for p in passes)
    scale = conns / max(len(opened), 1)
    print(f"\n== {len(opened)} WebSockets on one worker, {samples} passes")
    print(f"pass time (us): min {us[0]}  median {statistics.median(us):g}  max {us[-1]}   (samples {us})"
          + (f"; scaled to {conns}: median {statistics.median(us) * scale:.0f}, max {us[-1] * scale:.0f}"
             if scale > 1 else ""))
    print(f"longest slice of the event loop: {longest} us   limit {PASS_LIMIT_US} "
          f"(a pass is split into slices of at most 4096 requests)")
    print(f"tracking list: {state} bytes ({state / len(opened):.1f} per WebSocket)   limit {STATE_LIMIT_BYTES}")
    print(f"worker RSS: {rss_before} kB -> {rss_after} kB, +{(rss_after - rss_before) * 1024 / len(opened):,.0f} bytes "
          f"per WebSocket (nginx's client and upstream connections, request pool, proxy buffers, the list)")
    # The verdict is on the longest slice, the event loop's longest stretch: a
    # slice is timed by the wall clock, so a preempted worker shows in it.
    ok = longest <= PASS_LIMIT_US and state <= STATE_LIMIT_BYTES and not errors
    print("within the limits" if ok else "OVER A LIMIT (or WebSockets failed to open)")
    return 0 if ok else 1


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "yaml":
        print(yaml(*args), end="")
    elif cmd == "backend":
        asyncio.run(backend(int(args[0]), int(args[1])))
    elif cmd == "run":
        prefix, port, old_port, new_port, conns, samples = args
        sys.exit(asyncio.run(run(prefix, int(port), old_port, new_port, int(conns), int(samples))))
    else:
        sys.exit(__doc__)
