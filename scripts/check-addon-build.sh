#!/usr/bin/env bash
# Checks the nginx addon files (`config`, `config.make`) and mirrors the build
# stage of the Dockerfile: configures a fresh copy of the vendored nginx source
# with `--with-compat --add-dynamic-module=<repo>`, runs `make modules`, and loads
# the resulting .so into target/nginx/sbin/nginx with `nginx -t`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${ADDON_CHECK_DIR:-$root/target/addon-check}
. "$root/scripts/nginx-build.sh"
if [ ! -d "$nginx_src/auto" ]; then
    echo "check-addon-build: no nginx source tree found (run make build first)" >&2
    exit 1
fi

rm -rf "$work/nginx" && mkdir -p "$work"
cp -r "$nginx_src" "$work/nginx"
cd "$work/nginx"
# The same flags as the official nginx image's module ABI needs: --with-compat.
auto/configure --with-compat --with-http_realip_module --with-http_ssl_module \
    --with-http_v2_module --with-http_stub_status_module \
    --add-dynamic-module="$root" >"$work/configure.log" 2>&1 \
    || { tail -20 "$work/configure.log"; exit 1; }
make -j"$(nproc)" modules >"$work/make.log" 2>&1 || { tail -40 "$work/make.log"; exit 1; }
so="$work/nginx/objs/ngx_http_migration_module.so"
test -f "$so"

# Load the addon-built module into the project's nginx and route one request.
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
load_module $so;
error_log logs/error.log notice;
events {}
http { migration_config conf/m.yaml; server { listen 127.0.0.1:1; location / { migration on; return 200 \$migration_target; } } }
CONF
"$root/target/nginx/sbin/nginx" -p "$prefix/" -t
echo "addon build OK: $so"
