#!/usr/bin/env bash
# `make deb`: builds target/deb/libnginx-mod-http-migration_<version>_<arch>.deb for
# the nginx installed from apt on this machine (Debian 12: nginx 1.22.1), the way
# Debian builds its own libnginx-mod-* packages:
#
#  * configure a private copy of nginx-dev's /usr/share/nginx/src with its
#    conf_flags (the flags that make up the module ABI, --with-compat among them);
#  * build the module crate against that tree (NGINX_SOURCE_DIR, NGINX_BUILD_DIR;
#    not the vendored nginx), so the module signature is /usr/sbin/nginx's;
#  * lay the package out as dh_nginx does: the .so in /usr/lib/nginx/modules/, the
#    load_module line in /usr/share/nginx/modules-available/mod-http-migration.conf,
#    postinst/prerm/postrm from nginx-dev's own dh_nginx autoscripts (the
#    50-mod-http-migration.conf link in /etc/nginx/modules-enabled/ and its
#    `.removed` dance), Depends: on the nginx ABI package read from nginx-dev's
#    debian/libnginx-mod.abisubstvars, docs, copyright and an example;
#  * and the operator's command-line tool as /usr/bin/nginx-migration.
#
# As root it installs what it needs with apt-get (nginx, nginx-dev, the build deps).
# Nothing here needs the network but apt and crates.io (Cargo.lock, --locked).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${DEB_OUT_DIR:-$root/target/deb}
work=$out/build
cargo=${CARGO:-cargo}
src=/usr/share/nginx/src

"$root/scripts/install-deps.sh" nginx nginx-dev dpkg-dev libclang-dev libpcre2-dev libssl-dev zlib1g-dev pkg-config make
[ -f "$src/conf_flags" ] || { echo "build-deb: $src/conf_flags is missing (nginx-dev)" >&2; exit 1; }

nginx_version=$(/usr/sbin/nginx -v 2>&1 | sed -n 's|^nginx version: nginx/||p')
abi=$(sed -n 's/^nginx:abi=//p' "$src/debian/libnginx-mod.abisubstvars")
[ -n "$abi" ] || { echo "build-deb: no nginx:abi in $src/debian/libnginx-mod.abisubstvars" >&2; exit 1; }
crate_version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
version="$crate_version-1"
arch=$(dpkg --print-architecture)
package=libnginx-mod-http-migration
deb="$out/${package}_${version}_${arch}.deb"

# 1. A private, configured copy of Debian's nginx source tree.
tree=$work/nginx-src
stamp="$tree/.configured-$(md5sum "$src/conf_flags" | cut -c1-12)-$nginx_version"
if [ ! -f "$stamp" ]; then
    rm -rf "$tree" && mkdir -p "$work"
    cp -a "$src" "$tree"
    (
        cd "$tree"
        # shellcheck disable=SC1091
        . ./conf_flags
        ./configure "${NGX_CONF_FLAGS[@]}" >"$work/configure.log" 2>&1
    ) || { tail -30 "$work/configure.log"; exit 1; }
    touch "$stamp"
fi

# 2. The module crate against it: no vendored nginx; the cdylib exports its own
#    ngx_modules table as nginx's --add-dynamic-module build would generate it.
NGINX_SOURCE_DIR="$tree" NGINX_BUILD_DIR="$tree/objs" CARGO_TARGET_DIR="$work/cargo" \
    $cargo build --release --locked -p ngx_http_migration_module --no-default-features --features export-modules
so="$work/cargo/release/libngx_http_migration_module.so"
# The operator's command-line tool links no nginx: the project's usual build.
$cargo build --release --locked -p nginx-migration
cli="$root/target/release/nginx-migration"

# 3. The package tree.
pkg=$work/pkg
rm -rf "$pkg"
install -d "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/usr/lib/nginx/modules" "$pkg/usr/share/nginx/modules-available" \
    "$pkg/usr/share/doc/$package/examples"
install -m 644 "$so" "$pkg/usr/lib/nginx/modules/ngx_http_migration_module.so"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$pkg/usr/lib/nginx/modules/ngx_http_migration_module.so"
install -m 755 "$cli" "$pkg/usr/bin/nginx-migration"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$pkg/usr/bin/nginx-migration"
echo "load_module modules/ngx_http_migration_module.so;" >"$pkg/usr/share/nginx/modules-available/mod-http-migration.conf"
chmod 644 "$pkg/usr/share/nginx/modules-available/mod-http-migration.conf"
doc=$pkg/usr/share/doc/$package
gzip -9n <"$root/README.md" >"$doc/README.md.gz"
# The reference README.md links to: docs/*.md, beside it.
install -d "$doc/docs"
for page in "$root"/docs/*.md; do
    gzip -9n <"$page" >"$doc/docs/$(basename "$page").gz"
done
# The example YAML is a neutral one (example.internal placeholders), not the demo's.
install -m 644 "$root/deploy/debian/migration.yaml" "$root/nginx/configmap.yaml" "$doc/examples/"
install -m 644 "$root/deploy/debian/nginx-site.conf" "$doc/examples/nginx-site.conf"
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
date=$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}")
gzip -9n >"$doc/changelog.Debian.gz" <<EOF
$package ($version) unstable; urgency=medium

  * Built from ngx_http_migration_module $crate_version (commit $commit) against
    nginx $nginx_version ($abi).

 -- ngx_http_migration_module maintainers <root@localhost>  $date
EOF
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ngx_http_migration_module
Comment: Rust dependencies are statically linked; their licences are those
 listed in Cargo.lock's crates (MIT and/or Apache-2.0, BSD, ISC, Zlib).

Files: *
Copyright: ngx_http_migration_module authors
License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 can be
 found in /usr/share/common-licenses/Apache-2.0.
EOF
find "$doc" -type f -exec chmod 644 {} +

# The maintainer scripts are nginx-dev's dh_nginx autoscripts, as dh_nginx
# writes them into Debian's own module packages.
names="mod-http-migration.conf:50-mod-http-migration.conf"
for script in postinst prerm postrm; do
    {
        printf '#!/bin/sh\nset -e\n# Automatically added by dh_nginx (autoscript %s-nginx)\n' "$script"
        sed "s/#NAMES#/$names/" "/usr/share/debhelper/autoscripts/$script-nginx"
        echo "# End automatically added section"
    } >"$pkg/DEBIAN/$script"
    chmod 755 "$pkg/DEBIAN/$script"
done

# Shared-library dependencies, as dh_shlibdeps computes them.
shlibs=$(cd "$work" && mkdir -p debian && printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$package" "$package" >debian/control \
    && dpkg-shlibdeps -O "$pkg/usr/lib/nginx/modules/ngx_http_migration_module.so" "$pkg/usr/bin/nginx-migration" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
installed_size=$(du -k -s --exclude=DEBIAN "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<EOF
Package: $package
Version: $version
Architecture: $arch
Maintainer: ngx_http_migration_module maintainers <root@localhost>
Installed-Size: $installed_size
Depends: $abi${shlibs:+, $shlibs}
Recommends: nginx
Section: httpd
Priority: optional
Multi-Arch: foreign
Description: nginx module that moves a service's traffic from an old cluster to a new one
 ngx_http_migration_module routes each request to the old or the new cluster of
 a service by header rules, client networks, user lists, sticky user hashing or
 a percentage, from a YAML file (a Kubernetes ConfigMap), with a fallback
 breaker, a status endpoint and Prometheus metrics.
 .
 Built for nginx $nginx_version ($abi).
EOF
(cd "$pkg" && find usr -type f -print0 | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
chmod 644 "$pkg/DEBIAN/control" "$pkg/DEBIAN/md5sums"
rm -f "$out"/"${package}"_*.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "built $deb (for nginx $nginx_version, Depends: $abi${shlibs:+, $shlibs})"
