#!/usr/bin/env bash
# The official image's path, without Docker: the nginx addon files (`config`,
# `config.make`) and the Dockerfile's build stage, checked against an nginx built
# the way the official `nginx:1.28.3` image's is.
#
#  1. The module, as the Dockerfile builds it: a fresh copy of the vendored nginx
#     source, `auto/configure --with-compat --add-dynamic-module=<repo>` (the
#     release tarball calls it ./configure), `make modules`.
#  2. nginx, as the official image's is: the vendored 1.28.3 source configured with
#     that image's `nginx -V` arguments (`--with-compat`, file AIO, threads, its
#     http, mail and stream modules), every path moved under target/official/
#     (/usr/sbin/nginx -> target/official/usr/sbin/nginx, /etc/nginx -> ..., so
#     nothing outside the repository is touched), `make install`.
#  3. Both binaries carry the same module signature, and nginx -t of (2) loads (1).
#
# `make test` then runs the whole t/ suite against that pair
# (TEST_NGINX_BINARY=target/official/usr/sbin/nginx). Only the platform bits,
# PCRE and the HTTP cache are left to the signature once --with-compat is on both
# sides, so a module built with --with-compat alone loads into the full build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${ADDON_CHECK_DIR:-$root/target/addon-check}
official=${OFFICIAL_PREFIX:-$root/target/official}
. "$root/scripts/nginx-build.sh"
if [ ! -d "$nginx_src/auto" ]; then
    echo "check-addon-build: no nginx source tree found (run make build first)" >&2
    exit 1
fi
jobs=$(nproc)

# 1. The module, as the Dockerfile's build stage makes it.
rm -rf "$work/nginx" && mkdir -p "$work"
cp -r "$nginx_src" "$work/nginx"
cd "$work/nginx"
auto/configure --with-compat --add-dynamic-module="$root" >"$work/configure.log" 2>&1 \
    || { tail -20 "$work/configure.log"; exit 1; }
make -j"$jobs" modules >"$work/make.log" 2>&1 || { tail -40 "$work/make.log"; exit 1; }
so="$work/nginx/objs/ngx_http_migration_module.so"
test -f "$so"

# 2. The official image's nginx (nginx.org packaging, 1.28.3-1: `docker run
#    nginx:1.28.3 nginx -V`), paths under $official. Rebuilt only when the flags
#    or the source change.
o=$official
official_args=(
    --prefix="$o/etc/nginx" --sbin-path="$o/usr/sbin/nginx" --modules-path="$o/usr/lib/nginx/modules"
    --conf-path="$o/etc/nginx/nginx.conf" --error-log-path="$o/var/log/nginx/error.log"
    --http-log-path="$o/var/log/nginx/access.log" --pid-path="$o/run/nginx.pid" --lock-path="$o/run/nginx.lock"
    --http-client-body-temp-path="$o/var/cache/nginx/client_temp" --http-proxy-temp-path="$o/var/cache/nginx/proxy_temp"
    --http-fastcgi-temp-path="$o/var/cache/nginx/fastcgi_temp" --http-uwsgi-temp-path="$o/var/cache/nginx/uwsgi_temp"
    --http-scgi-temp-path="$o/var/cache/nginx/scgi_temp" --user=nginx --group=nginx
    --with-compat --with-file-aio --with-threads
    --with-http_addition_module --with-http_auth_request_module --with-http_dav_module --with-http_flv_module
    --with-http_gunzip_module --with-http_gzip_static_module --with-http_mp4_module --with-http_random_index_module
    --with-http_realip_module --with-http_secure_link_module --with-http_slice_module --with-http_ssl_module
    --with-http_stub_status_module --with-http_sub_module --with-http_v2_module --with-http_v3_module
    --with-mail --with-mail_ssl_module --with-stream --with-stream_realip_module --with-stream_ssl_module
    --with-stream_ssl_preread_module
    --with-cc-opt="-g -O2 -fstack-protector-strong -Wformat -Werror=format-security -Wp,-D_FORTIFY_SOURCE=2 -fPIC"
    --with-ld-opt="-Wl,-z,relro -Wl,-z,now -Wl,--as-needed -pie"
)
stamp="$o/.built-$(printf '%s\n' "${official_args[@]}" "$nginx_src" | md5sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ ! -x "$o/usr/sbin/nginx" ]; then
    rm -rf "$o" "$work/official-src" && mkdir -p "$o"
    cp -r "$nginx_src" "$work/official-src"
    cd "$work/official-src"
    auto/configure "${official_args[@]}" >"$work/official-configure.log" 2>&1 \
        || { tail -20 "$work/official-configure.log"; exit 1; }
    make -j"$jobs" >"$work/official-make.log" 2>&1 || { tail -40 "$work/official-make.log"; exit 1; }
    make install >>"$work/official-make.log" 2>&1 || { tail -20 "$work/official-make.log"; exit 1; }
    mkdir -p "$o/var/cache/nginx" "$o/var/log/nginx" "$o/run"
    # As in the image: /etc/nginx/modules -> /usr/lib/nginx/modules.
    ln -sfn "$o/usr/lib/nginx/modules" "$o/etc/nginx/modules"
    touch "$stamp"
fi
install -D -m 755 "$so" "$o/usr/lib/nginx/modules/ngx_http_migration_module.so"

# 3. Same signature; the official nginx loads the module and routes.
signature() { strings -a "$1" | grep -E '^[0-9]+,[0-9]+,[0-9]+,[01]{20,}$' | sort -u; }
sig_nginx=$(signature "$o/usr/sbin/nginx")
sig_module=$(signature "$so")
echo "official-configured nginx: $sig_nginx"
echo "module (--with-compat):    $sig_module"
if [ -z "$sig_nginx" ] || [ "$sig_nginx" != "$sig_module" ]; then
    echo "check-addon-build: the module's signature differs from the official-configured nginx's" >&2
    exit 1
fi

prefix="$work/prefix"
rm -rf "$prefix" && mkdir -p "$prefix"/{conf,logs}
cat >"$prefix/conf/m.yaml" <<'YAML'
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:443
    migration: {percentage: 100}
YAML
cat >"$prefix/conf/nginx.conf" <<CONF
load_module $o/usr/lib/nginx/modules/ngx_http_migration_module.so;
user $(id -un);
error_log logs/error.log notice;
pid logs/nginx.pid;
events {}
http { migration_config conf/m.yaml; server { listen 127.0.0.1:1; location / { migration on; return 200 \$migration_target; } } }
CONF
"$o/usr/sbin/nginx" -p "$prefix/" -e logs/error.log -c conf/nginx.conf -t
echo "addon build OK: $so loads into $o/usr/sbin/nginx ($("$o/usr/sbin/nginx" -v 2>&1 | sed 's/^nginx version: //'))"
