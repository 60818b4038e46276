#!/usr/bin/env bash
# Builds the module with the cargo feature `test-hooks` (fault injection for the
# t/ files that need it, src/test_hooks.rs) against the nginx that `make build` just
# built (no second nginx build), and installs it beside the real module as
# modules/ngx_http_migration_module_test_hooks.so. The real module is untouched.
set -euo pipefail
prefix=$1
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/nginx-build.sh"
cd "$root"
NGINX_BUILD_DIR="$objs" NGINX_SOURCE_DIR="$nginx_src" ${CARGO:-cargo} build --locked --profile test-hooks \
    --no-default-features --features export-modules,test-hooks -p ngx_http_migration_module
so="$target/test-hooks/libngx_http_migration_module.so"
dest="$prefix/modules/ngx_http_migration_module_test_hooks.so"
cmp -s "$so" "$dest" 2>/dev/null || install -m 755 "$so" "$dest"
