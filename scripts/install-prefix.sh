#!/usr/bin/env bash
# Lays out the runnable nginx prefix: sbin/nginx (built by nginx-sys from the
# vendored source), modules/ngx_http_migration_module.so, conf/, logs/.
# Copies only what changed, so a Rust-only rebuild never touches nginx.
set -euo pipefail
prefix=$1
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/nginx-build.sh"
if [ -z "$objs" ] || [ ! -x "$objs/nginx" ]; then
    echo "install-prefix: no nginx binary in '$objs' (see $target/release/nginx-build-dir)" >&2
    exit 1
fi
mkdir -p "$prefix"/{sbin,bin,modules,conf,logs,html}
install_if_changed() {
    cmp -s "$1" "$2" 2>/dev/null || install -m "$3" "$1" "$2"
}
install_if_changed "$objs/nginx" "$prefix/sbin/nginx" 755
install_if_changed "$target/release/libngx_http_migration_module.so" "$prefix/modules/ngx_http_migration_module.so" 755
# The operator's command-line tool, on the same engine as the module.
install_if_changed "$target/release/nginx-migration" "$prefix/bin/nginx-migration" 755
# mime.types and friends from the nginx source tree the binary was built from.
conf_src=${nginx_src:+$nginx_src/conf}
if [ -n "$conf_src" ] && [ -d "$conf_src" ]; then
    for f in mime.types fastcgi_params scgi_params uwsgi_params; do
        [ -f "$prefix/conf/$f" ] || install -m 644 "$conf_src/$f" "$prefix/conf/$f"
    done
fi
# A runnable configuration from the start (`nginx -p target/nginx/` right after
# make build): the example one, as make demo runs it. Never replaces the user's.
for f in nginx.conf migration.yaml; do
    [ -f "$prefix/conf/$f" ] || install -m 644 "$root/nginx/$f" "$prefix/conf/$f"
done
echo "nginx prefix ready: $prefix ($("$prefix/sbin/nginx" -v 2>&1 | sed 's/^nginx version: //'))"
