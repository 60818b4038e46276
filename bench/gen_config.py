#!/usr/bin/env python3
"""Writes a migration.yaml of N services, each with a header rule and a /24 CIDR
(the shape of issue 11's measurements): `gen_config.py N [PERCENTAGE] > m.yaml`."""
import sys


def config(n, percentage=20, version="gen"):
    out = [f'version: "{version}"', "services:"]
    for i in range(n):
        out.append(f"""  - name: svc-{i:06d}
    hosts: [svc-{i:06d}.example.com]
    old_host: svc-{i:06d}.old.example.com
    old_backend: old-{i % 250}.svc.cluster.local:8078
    new_host: svc-{i:06d}.new.example.com
    new_backend: new-{i % 250}.kong.example.com:443
    migration:
      strategy: user
      percentage: {percentage}
      user_key: header:X-User-ID
    canary:
      header_rules:
        - header: X-Migration-Target
          value: new
          target: new_cluster
      ip_rules:
        - cidr: 10.{i // 256 % 256}.{i % 256}.0/24
          target: new_cluster""")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    n = int(sys.argv[1])
    pct = sys.argv[2] if len(sys.argv) > 2 else "20"
    sys.stdout.write(config(n, pct))
