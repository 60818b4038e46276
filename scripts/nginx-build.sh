# Sourced by the build scripts (with $root set to the repository): where the nginx
# the module links against was built, as build.rs records it, and the nginx source
# tree it came from (nginx-src writes it as the first, quoted, field of
# last-build-info).
target=${CARGO_TARGET_DIR:-$root/target}
objs=$(cat "$target/release/nginx-build-dir" 2>/dev/null || true)
nginx_src=$(sed -n 's/^"\([^"]*\)".*/\1/p' "$objs/last-build-info" 2>/dev/null || true)
