#!/usr/bin/env bash
# Starts the demo nginx (nginx/nginx.conf + nginx/migration.yaml) in target/nginx
# on 127.0.0.1:8080, then shows a few routing decisions with curl.
set -euo pipefail
prefix=$1
port=${2:-8080}
root=$(cd "$(dirname "$0")/.." && pwd)
nginx="$prefix/sbin/nginx"

install -m 644 "$root/nginx/nginx.conf" "$prefix/conf/nginx.conf"
install -m 644 "$root/nginx/migration.yaml" "$prefix/conf/migration.yaml"
checked=$("$nginx" -p "$prefix/" -t -q 2>&1) || { echo "$checked" >&2; exit 1; }
[ -z "$checked" ] || echo "$checked"
# The workers (nobody, when make demo runs as root) re-read the file for watch=:
# from a checkout they cannot enter (e.g. under /root, 0700) that never works.
if grep -q "watch= cannot work" <<<"$checked"; then
    cat <<WARN

WARNING: watch= is off in this demo: nginx's worker processes run as "nobody" and
cannot read $prefix/conf/migration.yaml
(a directory on the way is not searchable by others, e.g. a checkout under /root).
Editing the file will do nothing until you reload (make demo again, or
$nginx -p $prefix/ -s reload). To see watch= work: run make demo from a checkout
others can enter (chmod o+x on each directory of the path), or as a non-root user.

WARN
fi
if [ -f "$prefix/logs/nginx.pid" ] && kill -0 "$(cat "$prefix/logs/nginx.pid")" 2>/dev/null; then
    # A rebuilt module is only picked up by a fresh master (dlopen keeps the old one).
    kill -QUIT "$(cat "$prefix/logs/nginx.pid")"
    for _ in $(seq 50); do [ -f "$prefix/logs/nginx.pid" ] || break; sleep 0.1; done
fi
"$nginx" -p "$prefix/"
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done

# Prints the command as it can be pasted into a shell: an argument with a space
# or a shell metacharacter (-H 'X-User-ID: alice') in single quotes.
show() {
    local shown="" arg
    for arg in "$@"; do
        case $arg in
            *[[:space:]\'\"\\\$\;\&\|\<\>\(\)\*\?\[\]\#\~\`]*) arg="'${arg//\'/\'\\\'\'}'" ;;
        esac
        shown+="${shown:+ }$arg"
    done
    printf '\n$ %s\n' "$shown"
    "$@" -s -D - | grep -iE '^(x-migration:)|cluster answered' | sed 's/\r$//'
}
echo "nginx with ngx_http_migration_module is running on 127.0.0.1:$port (stop: make demo-stop)"
show curl "http://127.0.0.1:$port/" -H 'Host: api.example.com' -H 'X-Migration-Target: new'
show curl "http://127.0.0.1:$port/" -H 'Host: api.example.com' -H 'X-User-ID: alice'
show curl "http://127.0.0.1:$port/" -H 'Host: api.example.com' -H 'X-User-ID: mallory'
show curl "http://127.0.0.1:$port/" -H 'Host: api.example.com' -H 'X-Real-IP: 10.20.3.4'
show curl "http://127.0.0.1:$port/" -H 'Host: api.example.com' -H 'X-User-ID: user-42'
show curl "http://127.0.0.1:$port/" -H 'Host: eu.shop.example.com'
show curl "http://127.0.0.1:$port/" -H 'Host: unknown.example.com'
printf '\nuser_hash split of 1000 users at 20%%: '
for i in $(seq 1000); do
    curl -s "http://127.0.0.1:$port/" -H 'Host: api.example.com' -H "X-User-ID: user-$i" -o /dev/null -D - | grep -i '^x-migration:'
done | awk '{print $3}' | sort | uniq -c | tr '\n' ' '
echo
printf '\n$ curl http://127.0.0.1:9145/migration/status    # the status listener\n'
curl -s "http://127.0.0.1:9145/migration/status"
echo "access log: $prefix/logs/access.log"
