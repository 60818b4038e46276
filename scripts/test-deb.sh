#!/usr/bin/env bash
# The Debian package on Debian's own nginx (part of `make test`, as root):
#  1. the module signature of the packaged .so equals /usr/sbin/nginx's;
#  2. apt-get install of the .deb: the modules-enabled link, `nginx -t` with Debian's
#     stock /etc/nginx/nginx.conf, then with the packaged example site and YAML;
#     /usr/bin/nginx-migration (the command-line tool) checks the example and a bad file;
#  3. the whole t/ suite against /usr/sbin/nginx loading the installed .so;
#  4. remove (link kept as .removed), reinstall (link back), purge: nothing of the
#     package is left in /etc/nginx/modules-enabled/.
# Expects `make deb` to have run (target/deb/*.deb).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
package=libnginx-mod-http-migration
so=/usr/lib/nginx/modules/ngx_http_migration_module.so
link=/etc/nginx/modules-enabled/50-mod-http-migration.conf
deb=$(ls "$root"/target/deb/${package}_*.deb)
say() { printf '\n== test-deb: %s\n' "$*"; }
fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
if [ "$(id -u)" -ne 0 ]; then
    echo "test-deb: needs root (apt-get install, dpkg -i, /etc/nginx)" >&2
    exit 1
fi

# Installing packages must not start services on a CI machine (as in Docker images).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
export DEBIAN_FRONTEND=noninteractive

signature() { strings -a "$1" | grep -E '^[0-9]+,[0-9]+,[0-9]+,[01]{20,}$' | sort -u; }
say "module signature"
pkg_so=$root/target/deb/build/pkg$so
sig_nginx=$(signature /usr/sbin/nginx)
sig_module=$(signature "$pkg_so")
echo "/usr/sbin/nginx ($(/usr/sbin/nginx -v 2>&1 | sed 's/.*nginx\///')): $sig_nginx"
echo "packaged module:            $sig_module"
[ -n "$sig_nginx" ] && [ "$sig_nginx" = "$sig_module" ] || fail "the module's signature differs from /usr/sbin/nginx's"

say "install $(basename "$deb")"
dpkg -c "$deb"
apt-get purge -y -qq "$package" >/dev/null 2>&1 || true
apt-get install -y -qq "$deb" >/dev/null
[ -f "$so" ] || fail "$so not installed"
[ "$(readlink "$link")" = /usr/share/nginx/modules-available/mod-http-migration.conf ] || fail "$link is not the module's link"
/usr/sbin/nginx -t 2>&1 | tee /tmp/test-deb-nginx-t.log
grep -q "test is successful" /tmp/test-deb-nginx-t.log || fail "nginx -t with the stock nginx.conf"

say "the packaged example site (conf.d) and YAML with the stock nginx.conf"
doc=/usr/share/doc/$package/examples
[ ! -e /etc/nginx/conf.d/migration.conf ] && [ ! -e /etc/nginx/migration.yaml ] || fail "/etc/nginx already has a migration.conf or migration.yaml; not touching them"
cp "$doc/nginx-site.conf" /etc/nginx/conf.d/migration.conf
cp "$doc/migration.yaml" /etc/nginx/migration.yaml
set +e
/usr/sbin/nginx -t >/tmp/test-deb-nginx-t.log 2>&1
rc=$?
set -e
rm -f /etc/nginx/conf.d/migration.conf /etc/nginx/migration.yaml
cat /tmp/test-deb-nginx-t.log
[ $rc -eq 0 ] || fail "nginx -t with the example site"
grep -q "migration: loaded /etc/nginx/migration.yaml" /tmp/test-deb-nginx-t.log || fail "the example YAML was not loaded"

say "the packaged command-line tool checks the example YAML and refuses a bad one as nginx -t does"
/usr/bin/nginx-migration check "$doc/migration.yaml" || fail "nginx-migration check of the example YAML"
bad=$(mktemp --suffix=.yaml)
sed 's/percentage: 20/percentage: 101/' "$doc/migration.yaml" >"$bad"
set +e
/usr/bin/nginx-migration check "$bad" >/tmp/test-deb-cli.log 2>&1
rc=$?
set -e
rm -f "$bad"
cat /tmp/test-deb-cli.log
[ $rc -eq 1 ] || fail "nginx-migration check of a bad file exited $rc, not 1"
grep -q 'percentage' /tmp/test-deb-cli.log || fail "nginx-migration check did not name the bad field"

# t/18-faults.t needs the test-hooks build of the module, made for target/nginx
# only: it is skipped here, saying so.
say "prove -r t/ against /usr/sbin/nginx + $so"
cd "$root"
started=$(date +%s)
TEST_NGINX_BINARY=/usr/sbin/nginx TEST_NGINX_LOAD_MODULES=$so \
    TEST_NGINX_SERVROOT=$root/target/servroot-deb TEST_NGINX_TEST_HOOKS_MODULE=none prove -r t/ 2>&1 | tee /tmp/test-deb-prove.log
status=${PIPESTATUS[0]}
echo "t/ on Debian's nginx: $(($(date +%s) - started)) s"
[ "$status" -eq 0 ] || fail "t/ against Debian's nginx"

say "remove keeps the admin's choice (.removed), reinstall restores the link, purge leaves nothing"
apt-get remove -y -qq "$package" >/dev/null
[ -L "$link.removed" ] && [ ! -e "$link" ] || fail "remove: expected $link.removed"
apt-get install -y -qq "$deb" >/dev/null
[ -L "$link" ] && [ ! -e "$link.removed" ] || fail "reinstall: expected $link back"
apt-get purge -y -qq "$package" >/dev/null
left=$(ls -A /etc/nginx/modules-enabled/ | grep -i migration || true)
[ -z "$left" ] || fail "left in /etc/nginx/modules-enabled after purge: $left"
[ ! -e "$so" ] || fail "$so left after purge"
/usr/sbin/nginx -t >/dev/null 2>&1 || fail "nginx -t after purge"
echo "test-deb: OK"
