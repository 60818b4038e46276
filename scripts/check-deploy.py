#!/usr/bin/env python3
"""Offline checks of deploy/kubernetes/ and of the container configuration (make test).

1. Every manifest is validated with kubernetes-validate, strict (unknown fields are
   errors), against Kubernetes 1.30 and 1.37; a kind without a schema is a failure.
   The one exception is optional/servicemonitor.yaml: the Prometheus Operator's CRD
   is not among kubernetes-validate's schemas (and is not vendored here), so it is
   left out of the strict run and checked structurally against the Service it
   selects instead. kustomization.yaml is kustomize's file, not an API object: it is
   checked to list every manifest of the directory.
2. The ConfigMaps hold exactly nginx/container.conf and nginx/container-migration.yaml
   (what the image ships); `--write` regenerates them from those two files.
3. Names agree across objects: volumes and ConfigMaps, selectors and pod labels,
   named ports, probes on the status listener's /healthz. The NetworkPolicy selects
   the Deployment's pods, restricts ingress only, leaves the traffic port (8080) open
   to every source and admits to the status port (8081) only the pods its `from`
   entries select by label (a podSelector, within a namespaceSelector if any; no
   ipBlock, no empty selector, no rule that opens every port).
4. The ConfigMap's nginx.conf and migration.yaml run: `nginx -t` with the module,
   then a real start as a non-root user (no `user` directive, pid and temp paths
   where the Deployment mounts emptyDirs), where /healthz answers 200 and is not
   counted, a Host no service claims gets 421, and a routed request is counted.
   The resolver is moved to a loopback port and the listeners to free loopback
   ports; nothing leaves the machine.

Usage: check-deploy.py [--write] --nginx BIN --module SO
"""

import argparse
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KDIR = os.path.join(ROOT, "deploy", "kubernetes")
CONF = os.path.join(ROOT, "nginx", "container.conf")
MIGRATION = os.path.join(ROOT, "nginx", "container-migration.yaml")
K8S_VERSIONS = ["1.30.0", "1.37.0"]
# Left out of the strict run (no schema offline), checked structurally below.
NO_SCHEMA = {("monitoring.coreos.com/v1", "ServiceMonitor")}

failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL: {msg}")


def ok(msg):
    print(f"ok: {msg}")


def configmap_text(name, key, source, comment):
    text = open(source).read()
    body = "".join(("    " + line) if line.strip() else "\n" for line in text.splitlines(True))
    return (
        f"{comment}apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels:\n"
        f"    app.kubernetes.io/name: nginx-migration\ndata:\n  {key}: |\n{body}"
    )


GENERATED = {
    "configmap-migration.yaml": (
        "traffic-migration",
        "migration.yaml",
        MIGRATION,
        "# The migration rules. Edit and `kubectl apply -k .`: the kubelet updates the mounted\n"
        "# file (within about a minute) and watch= publishes it on every replica.\n"
        "# Generated from nginx/container-migration.yaml (the image's copy):\n"
        "#   scripts/check-deploy.py --write\n",
    ),
    "configmap-nginx.yaml": (
        "nginx-migration-conf",
        "nginx.conf",
        CONF,
        "# nginx.conf; a change needs a rollout: kubectl rollout restart deployment/nginx-migration\n"
        "# Generated from nginx/container.conf (the image's copy): scripts/check-deploy.py --write\n",
    ),
}


def manifests():
    out = []
    for dirpath, _, files in os.walk(KDIR):
        for f in sorted(files):
            if f.endswith(".yaml") and f != "kustomization.yaml":
                out.append(os.path.relpath(os.path.join(dirpath, f), KDIR))
    return sorted(out)


def load_all():
    docs = {}
    for rel in manifests():
        with open(os.path.join(KDIR, rel)) as fh:
            docs[rel] = [d for d in yaml.safe_load_all(fh) if d is not None]
    return docs


def check_schemas(docs):
    import kubernetes_validate

    for rel, objs in docs.items():
        for obj in objs:
            what = f"{rel}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            if (obj.get("apiVersion"), obj.get("kind")) in NO_SCHEMA:
                print(f"not in the strict run: {what} (no schema for its CRD offline; checked structurally)")
                continue
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                except Exception as e:  # SchemaNotFoundError and ValidationError alike
                    fail(f"{what} against Kubernetes {version}: {type(e).__name__}: {e}")
                    break
            else:
                ok(f"{what} valid (strict) against Kubernetes {', '.join(K8S_VERSIONS)}")


def check_kustomization():
    with open(os.path.join(KDIR, "kustomization.yaml")) as fh:
        k = yaml.safe_load(fh)
    if k.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or k.get("kind") != "Kustomization":
        fail("kustomization.yaml: not a kustomize Kustomization")
    listed = set(k.get("resources", []))
    wanted = {m for m in manifests() if not m.startswith("optional/")}
    for m in sorted(listed - set(manifests())):
        fail(f"kustomization.yaml lists {m}, which does not exist")
    for m in sorted(wanted - listed):
        fail(f"kustomization.yaml does not list {m}")
    if listed == wanted:
        ok(f"kustomization.yaml lists every manifest ({len(listed)})")


def objects(docs):
    for rel, objs in docs.items():
        for obj in objs:
            yield rel, obj


def check_references(docs):
    by_kind = {}
    for _, obj in objects(docs):
        by_kind.setdefault(obj["kind"], []).append(obj)
    (dep,) = by_kind["Deployment"]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    if spec["replicas"] != 3:
        fail("Deployment: replicas must be 3")
    if not spec["selector"]["matchLabels"].items() <= labels.items():
        fail("Deployment: selector does not match the pod labels")
    cms = {c["metadata"]["name"]: c for c in by_kind["ConfigMap"]}
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    for vol in pod["volumes"]:
        if "configMap" in vol:
            if vol["configMap"]["name"] not in cms:
                fail(f"volume {vol['name']}: no ConfigMap {vol['configMap']['name']}")
            if "subPath" in mounts[vol["name"]]:
                fail(f"volume {vol['name']} is mounted with subPath: updates would never reach it")
    sc, csc = pod["securityContext"], container["securityContext"]
    if not (sc.get("runAsNonRoot") and csc.get("readOnlyRootFilesystem") and csc.get("allowPrivilegeEscalation") is False):
        fail("Deployment: must run as non-root with a read-only root filesystem")
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        if get["path"] != "/healthz" or ports.get(get["port"]) != 8081:
            fail(f"{probe} must be /healthz on the status listener (8081)")
    for res in ("requests", "limits"):
        if not container.get("resources", {}).get(res):
            fail(f"Deployment: no resource {res}")
    for svc in by_kind["Service"]:
        if not svc["spec"]["selector"].items() <= labels.items():
            fail(f"Service {svc['metadata']['name']}: selector matches no pod")
        for p in svc["spec"]["ports"]:
            if p["targetPort"] not in ports:
                fail(f"Service {svc['metadata']['name']}: no container port named {p['targetPort']}")
    for pdb in by_kind["PodDisruptionBudget"]:
        if not pdb["spec"]["selector"]["matchLabels"].items() <= labels.items():
            fail("PodDisruptionBudget: selector matches no pod")
        if not 0 < pdb["spec"].get("minAvailable", 0) < spec["replicas"]:
            fail("PodDisruptionBudget: minAvailable must leave room for one disruption")
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"]["matchLabels"]
        hits = [s for s in by_kind["Service"] if sel.items() <= s["metadata"]["labels"].items()]
        if len(hits) != 1:
            fail(f"ServiceMonitor: its selector matches {len(hits)} Services, expected 1")
            continue
        names = {p["name"] for p in hits[0]["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep["port"] not in names or ep["path"] != "/migration/status" or ep.get("params") != {"format": ["prometheus"]}:
                fail(f"ServiceMonitor endpoint {ep}: must scrape /migration/status?format=prometheus on a port of {hits[0]['metadata']['name']}")
        ok(f"ServiceMonitor selects Service {hits[0]['metadata']['name']}, port {sm['spec']['endpoints'][0]['port']}")
    if not [f for f in failures if "Deployment" in f or "Service" in f or "volume" in f]:
        ok("names, selectors, ports, probes, mounts and security context agree")
    return cms, container


def selector_set(sel):
    """A label selector that narrows (neither absent nor empty, which select everything)."""
    return bool(sel) and bool(sel.get("matchLabels") or sel.get("matchExpressions"))


def describe_selector(sel):
    parts = [f"{k}={v}" for k, v in sorted(sel.get("matchLabels", {}).items())]
    parts += [f"{e['key']} {e['operator']} {e.get('values', [])}" for e in sel.get("matchExpressions", [])]
    return ",".join(parts)


def check_network_policy(docs):
    """The NetworkPolicy: 8080 (http) open to all, 8081 (status) to the scraper's pods only."""
    by_kind = {}
    for _, obj in objects(docs):
        by_kind.setdefault(obj["kind"], []).append(obj)
    pols = by_kind.get("NetworkPolicy", [])
    if len(pols) != 1:
        fail(f"expected 1 NetworkPolicy (status port for Prometheus only), found {len(pols)}")
        return
    (pol,) = pols
    name = f"NetworkPolicy {pol['metadata']['name']}"
    (dep,) = by_kind["Deployment"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    before = len(failures)
    if ports.get("http") != 8080 or ports.get("status") != 8081:
        fail(f"{name}: the Deployment's ports changed (http {ports.get('http')}, status {ports.get('status')}; expected 8080, 8081)")
        return
    if "namespace" in pol["metadata"]:
        fail(f"{name}: no metadata.namespace (it must land in the Deployment's namespace, as every manifest here)")
    spec = pol["spec"]
    sel = spec.get("podSelector", {})
    if not sel.get("matchLabels") or sel.get("matchExpressions") or not sel["matchLabels"].items() <= labels.items():
        fail(f"{name}: podSelector {sel} must be matchLabels that the Deployment's pod labels {labels} satisfy")
    if spec.get("policyTypes") != ["Ingress"] or "egress" in spec:
        fail(f"{name}: policyTypes must be [Ingress] with no egress rules (egress is not restricted), got {spec.get('policyTypes')}")

    def covers(rule_port, port_name, number):
        if rule_port.get("protocol", "TCP") != "TCP":
            return False
        if "port" not in rule_port:
            return True  # every port of that protocol
        p = rule_port["port"]
        if isinstance(p, str):
            return p == port_name
        return p <= number <= rule_port.get("endPort", p)

    rules = spec.get("ingress", [])
    for rule in rules:
        for rp in rule.get("ports", []):
            if "port" in rp and not any(covers(rp, n, num) for n, num in ports.items()):
                fail(f"{name}: port {rp} is no container port of the Deployment ({ports})")

    def admitting(port_name):
        num = ports[port_name]
        return [r for r in rules if not r.get("ports") or any(covers(rp, port_name, num) for rp in r["ports"])]

    if not any(not r.get("from") for r in admitting("http")):
        fail(f"{name}: the traffic port http (8080) must be open to every source (a rule with no `from`)")
    status_rules = admitting("status")
    if not status_rules:
        fail(f"{name}: no rule admits the status port (8081): Prometheus could not scrape it")
    peers = []
    for r in status_rules:
        if not r.get("from"):
            fail(f"{name}: a rule {r} admits every source to the status port (8081)")
            continue
        for peer in r["from"]:
            if "ipBlock" in peer:
                fail(f"{name}: the status port (8081) admits an ipBlock {peer['ipBlock']}; select the scraper's pods by label")
            elif not selector_set(peer.get("podSelector")):
                fail(f"{name}: status port peer {peer} selects no scraper pods by label (every pod of the namespace(s) it names)")
            elif "namespaceSelector" in peer and not selector_set(peer["namespaceSelector"]):
                fail(f"{name}: status port peer {peer} has an empty namespaceSelector (every namespace)")
            else:
                ns = peer.get("namespaceSelector")
                peers.append(f"pods {describe_selector(peer['podSelector'])} in "
                             + (f"namespaces {describe_selector(ns)}" if ns else "the policy's namespace"))
    if len(failures) == before:
        ok(f"{name}: selects the Deployment's pods, Ingress only; http (8080) open to all; "
           f"status (8081) only from {'; '.join(peers)}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, host="localhost"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def run_nginx(cms, container, nginx, module):
    conf = cms["nginx-migration-conf"]["data"]["nginx.conf"]
    migration = cms["traffic-migration"]["data"]["migration.yaml"]
    # The command the Deployment runs, and where it mounts the ConfigMaps.
    if container["command"][:3] != ["nginx", "-c", "/etc/nginx/k8s/nginx.conf"]:
        fail("the Deployment's command must run the ConfigMap's nginx.conf")
    tmp = tempfile.mkdtemp(prefix="nginx-migration-deploy.")
    os.chmod(tmp, 0o755)
    try:
        prefix = os.path.join(tmp, "etc-nginx")
        for d in ("modules", "k8s", "migration", "cache", "tmp", "sbin"):
            os.makedirs(os.path.join(prefix, d))
        shutil.copy(nginx, os.path.join(prefix, "sbin", "nginx"))
        shutil.copy(module, os.path.join(prefix, "modules", "ngx_http_migration_module.so"))
        shutil.copy(os.path.join(ROOT, "target", "nginx", "conf", "mime.types"), os.path.join(prefix, "mime.types"))
        http_port, status_port, dns_port = free_port(), free_port(), free_port()
        rewritten = (
            conf.replace("/etc/nginx/migration/", f"{prefix}/migration/")
            .replace("/etc/nginx/mime.types", f"{prefix}/mime.types")
            .replace("/var/cache/nginx", f"{prefix}/cache")
            .replace("/tmp/nginx.pid", f"{prefix}/tmp/nginx.pid")
            .replace("listen 8080;", f"listen 127.0.0.1:{http_port};")
            .replace("listen 8081;", f"listen 127.0.0.1:{status_port};")
        )
        rewritten = re.sub(r"resolver \S+", f"resolver 127.0.0.1:{dns_port}", rewritten, count=1)
        for needle in (f"127.0.0.1:{http_port}", f"127.0.0.1:{status_port}", f"{prefix}/migration/", f"{prefix}/cache"):
            if needle not in rewritten:
                fail(f"the ConfigMap's nginx.conf changed shape: {needle} not substituted")
                return
        with open(os.path.join(prefix, "k8s", "nginx.conf"), "w") as fh:
            fh.write(rewritten)
        with open(os.path.join(prefix, "migration", "migration.yaml"), "w") as fh:
            fh.write(migration)
        # A non-root user, as in the Deployment (nobody here: the image's uid 101 has no name on this machine).
        as_user = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            for dirpath, dirs, files in os.walk(tmp):
                for n in dirs + files + [""]:
                    os.chown(os.path.join(dirpath, n), nobody.pw_uid, nobody.pw_gid)
            as_user = ["runuser", "-u", "nobody", "--"]
        # Through a pipe the user owns, as a container's stdout and stderr are its
        # own: nginx opens /dev/stdout for the access log.
        cmd = as_user + ["bash", "-c", 'set -o pipefail; "$@" 2>&1 | cat', "bash",
                         os.path.join(prefix, "sbin", "nginx"), "-p", prefix + "/", "-e", "stderr",
                         "-c", f"{prefix}/k8s/nginx.conf"]
        t = subprocess.run(cmd + ["-t"], capture_output=True, text=True)
        print(t.stdout.strip())
        if t.returncode != 0 or "migration: loaded" not in t.stdout:
            fail("nginx -t of the ConfigMap's nginx.conf and migration.yaml with the module")
            return
        ok("nginx -t of the ConfigMap's nginx.conf + migration.yaml, with the module, as a non-root user")
        log = open(os.path.join(tmp, "stderr.log"), "w")
        proc = subprocess.Popen(cmd + ["-g", "daemon off;"], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            for _ in range(100):
                try:
                    if get(status_port, "/healthz")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.05)
            results = [get(status_port, "/healthz") for _ in range(5)]
            if any(r != (200, "ok\n") for r in results):
                fail(f"/healthz on the status listener: {results}")
            code, _ = get(http_port, "/", host="unknown.example")
            if code != 421:
                fail(f"a Host no service claims: expected 421, got {code}")
            service_host = yaml.safe_load(migration)["services"][0]["hosts"][0]
            code, _ = get(http_port, "/", host=service_host)  # proxied to old_api, unresolvable here: 502
            status = json.loads(get(status_port, "/migration/status")[1])
            counted = sum(status["services"][0]["requests"].values())
            if counted != 1 or status.get("unmatched") != 1:
                fail(f"status counts {counted} routed and {status.get('unmatched')} unmatched requests, expected 1 and 1 (probes must not count)")
            else:
                ok(f"started as {'nobody' if as_user else 'this user'}: /healthz 200 x5 and not counted, "
                   f"unknown Host 421, a routed request counted once (upstream answered {code})")
            prom = get(status_port, "/migration/status?format=prometheus")
            if prom[0] != 200 or "migration_requests_total" not in prom[1]:
                fail("the status listener does not serve ?format=prometheus")
        finally:
            try:
                os.kill(int(open(os.path.join(prefix, "tmp", "nginx.pid")).read()), signal.SIGQUIT)
            except (OSError, ValueError):
                os.killpg(proc.pid, signal.SIGQUIT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
            errors = open(os.path.join(tmp, "stderr.log")).read()
            if "published" not in errors and "loaded" not in errors:
                fail("nothing of nginx's error log reached stderr")
            bad = [l for l in errors.splitlines() if re.search(r"\[(alert|crit|emerg)\]|exited on signal", l)]
            if bad:
                fail("error log: " + "; ".join(bad[:5]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="regenerate the ConfigMaps from nginx/container*.")
    ap.add_argument("--nginx", default=os.path.join(ROOT, "target", "official", "usr", "sbin", "nginx"))
    ap.add_argument("--module", default=os.path.join(ROOT, "target", "official", "usr", "lib", "nginx", "modules",
                                                      "ngx_http_migration_module.so"))
    args = ap.parse_args()
    for fname, (name, key, source, comment) in GENERATED.items():
        text = configmap_text(name, key, source, comment)
        path = os.path.join(KDIR, fname)
        if args.write:
            with open(path, "w") as fh:
                fh.write(text)
            print(f"wrote {path}")
        elif open(path).read() != text:
            fail(f"{fname} differs from {os.path.relpath(source, ROOT)} (run scripts/check-deploy.py --write)")
        else:
            ok(f"{fname} holds {os.path.relpath(source, ROOT)} exactly")
    if args.write:
        return 0
    docs = load_all()
    check_schemas(docs)
    check_kustomization()
    cms, container = check_references(docs)
    check_network_policy(docs)
    run_nginx(cms, container, args.nginx, args.module)
    print(f"check-deploy: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
