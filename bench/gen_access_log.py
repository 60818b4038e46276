#!/usr/bin/env python3
"""Writes a synthetic nginx access log in the combined format plus "$host"
"$http_x_user_id" (the format bench/replay.sh and the tests give replay):
realistic request lines, user agents and referers, 50,000 distinct users,
a few hosts, some lines with escaped quotes and empty fields.

    gen_access_log.py LINES OUT [--gzip]
"""
import gzip
import random
import sys

FORMAT = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
          '"$http_referer" "$http_user_agent" "$host" "$http_x_user_id"')

AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "curl/8.5.0",
    "okhttp/4.12.0",
    "Go-http-client/1.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html) \\x22quoted\\x22",
]
PATHS = ["/", "/api/v1/orders", "/api/v1/orders/8812?expand=items&beta=1", "/static/app.js", "/login?next=%2Fhome", "/api/v2/search?q=shoes&page=2"]
HOSTS = ["api.example.com", "shop.example.com", "www.example.com", "legacy.example.com"]


def main():
    lines = int(sys.argv[1])
    out = sys.argv[2]
    rnd = random.Random(7)
    opener = gzip.open if "--gzip" in sys.argv else open
    with opener(out, "wt") as f:
        buf = []
        for i in range(lines):
            ip = f"{rnd.choice((10, 172, 192, 203))}.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
            user = f"user-{rnd.randrange(50000)}" if rnd.random() < 0.9 else "-"
            method = "GET" if rnd.random() < 0.8 else "POST"
            referer = "-" if rnd.random() < 0.5 else "https://www.example.com/"
            buf.append(
                f'{ip} - - [27/Nov/2026:10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d} +0000] "{method} {rnd.choice(PATHS)} HTTP/1.1" '
                f'{rnd.choice((200, 200, 200, 304, 404, 502))} {rnd.randrange(100, 90000)} "{referer}" "{rnd.choice(AGENTS)}" '
                f'"{rnd.choice(HOSTS)}" "{user}"\n'
            )
            if len(buf) == 10000:
                f.write("".join(buf))
                buf = []
        f.write("".join(buf))


if __name__ == "__main__":
    main()
