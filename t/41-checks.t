# Warnings that need the whole configuration (src/state/cycle_warnings.rs), printed by
# `nginx -t` on the terminal and logged at start and reload:
#  * watch= when the worker user cannot read the file (it would be found out only
#    at the first change, which would then be refused);
#  * a zone this configuration alone mostly fills (a reload that keeps the zone
#    may then be refused, which `nginx -s reload` does not show).
use lib 't/lib';
use Test::MigrationNginx;
use Test::MigrationHelpers qw(nginx_run);
use Cwd ();
use File::Spec ();
use File::Temp ();

# TEST 2 needs a file the worker user ("nobody") can read. One under the
# servroot is not, whatever its own mode, when the clone sits below a
# directory only its owner may enter (root's home, a `mktemp -d`): it is made
# in a 0755 directory of its own in the system temp dir instead, removed at
# exit. Where even that is out of the worker's reach (a TMPDIR only root may
# enter), a block whose http_config names $TEST_NGINX_WORKER_DIR is skipped,
# with the reason.
my $WorkerDir = File::Temp::tempdir('migration-t41-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $WorkerDir or die "chmod $WorkerDir: $!";
$ENV{TEST_NGINX_WORKER_DIR} = $WorkerDir;

# Why a user who is neither owner nor in the group (nobody) cannot reach
# $dir: the first directory on its path that others may not search; or undef.
sub unreachable_by_others {
    my ($dir) = @_;
    my $path = Cwd::abs_path($dir);
    my @parts = File::Spec->splitdir($path);
    for my $n (1 .. $#parts) {
        my $d = File::Spec->catdir(@parts[0 .. $n]) || '/';
        my @st = stat $d or return "cannot stat $d: $!";
        return sprintf('%s is mode %04o: others cannot enter it', $d, $st[2] & 07777) unless $st[2] & 01;
    }
    return undef;
}

add_block_preprocessor(sub {
    my $block = shift;
    return unless join('', @{ $block->{http_config} || [] }) =~ /TEST_NGINX_WORKER_DIR/;
    if (my $why = unreachable_by_others($WorkerDir)) {
        my $reason = "the worker user cannot reach the system temp dir ($why)";
        # Never silent: prove shows a diag without -v, as for `requires`.
        Test::More::diag('skipped ' . $block->name . ": $reason");
        $block->{skip} = [$reason];
    }
});

run_tests();

__DATA__

=== TEST 1: watch= with a file the worker user cannot read (a 0700 directory): nginx -t warns at once
--- requires: root
--- main_config
user nobody nogroup;
--- http_config
    migration_config $TEST_NGINX_SERVROOT/private/m.yaml watch=1s;
--- init
mkdir servroot() . '/private', 0700 or die "mkdir: $!";
chmod 0700, servroot() . '/private';
open my $fh, '>', servroot() . '/private/m.yaml' or die $!;
print $fh "services: []\n";
close $fh;
--- config
    location / { return 200 "ok\n"; }
--- error_log eval
qr{\[warn\] .*migration: watch= cannot work: the worker processes run as "nobody" and cannot read .*/private/m\.yaml: Permission denied}
--- check_eval
my ($rc, $out) = nginx_run('-t');
is($rc, 0, 'nginx -t still passes (a warning)');
like($out, qr{nginx: \[warn\] migration: watch= cannot work: the worker processes run as "nobody" and cannot read \S+/private/m\.yaml: Permission denied}, 'nginx -t prints the warning');



=== TEST 2: the same file, readable by the worker user: no warning
--- requires: root
--- main_config
user nobody nogroup;
--- http_config
    migration_config $TEST_NGINX_WORKER_DIR/m.yaml watch=1s;
--- init
my $file = "$ENV{TEST_NGINX_WORKER_DIR}/m.yaml";
open my $fh, '>', $file or die $!;
print $fh "services: []\n";
close $fh;
chmod 0644, $file or die "chmod $file: $!";
--- config
    location / { return 200 "ok\n"; }
--- no_error_log
watch= cannot work
--- check_eval
my ($rc, $out) = nginx_run('-t');
is($rc, 0, 'nginx -t passes');
unlike($out, qr/watch= cannot work/, 'no warning from nginx -t');



=== TEST 3: without watch= only the master (root) reads the file: no warning
--- requires: root
--- main_config
user nobody nogroup;
--- http_config
    migration_config $TEST_NGINX_SERVROOT/private/m.yaml;
--- init
mkdir servroot() . '/private', 0700 or die "mkdir: $!";
chmod 0700, servroot() . '/private';
open my $fh, '>', servroot() . '/private/m.yaml' or die $!;
print $fh "services: []\n";
close $fh;
--- config
    location / { return 200 "ok\n"; }
--- no_error_log
watch= cannot work



=== TEST 4: a configuration that takes most of its zone: nginx -t says a reload may not fit
--- http_config eval
"    migration_config \$TEST_NGINX_HTML_DIR/m.yaml zone=small:64k;\n"
--- user_files eval
[['m.yaml', "services:\n" . CORE::join('', map { "  - {name: s$_, old_host: h$_.example, old_backend: old:80, new_host: h$_.example, new_backend: new:80}\n" } 1 .. 30)]]
--- config
    location / { return 200 "ok\n"; }
--- error_log eval
qr{\[warn\] .*migration: zone "small" \(64k\) is \d+% taken by \S+/m\.yaml alone; a reload that keeps the zone also needs room}
--- check_eval
my ($rc, $out) = nginx_run('-t');
is($rc, 0, 'nginx -t passes');
like($out, qr{nginx: \[warn\] migration: zone "small" \(64k\) is \d+% taken .* consider zone=small:\d+k}, 'nginx -t prints the warning and a size');



=== TEST 5: a zone with room to spare: no warning
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=roomy:256k;
--- user_files
>>> m.yaml
services:
  - {name: s1, old_host: h1.example, old_backend: old:80, new_host: h1.example, new_backend: new:80}
--- config
    location / { return 200 "ok\n"; }
--- no_error_log
is taken by
% taken



=== TEST 6: a service no location can route (no server block that routes by auto names its hosts, no migration_service names it, no any_server) is warned about at start; reachable ones are not
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=200ms;
    migration_service api;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server_name *.shop.example;
        location / { migration_service auto; migration on; return 200 "$migration_service\n"; }
    }
--- user_files
>>> m.yaml
services:
  - {name: api, old_host: api.example, old_backend: "o:80", new_host: api.example, new_backend: "n:80"}
  - {name: shop, hosts: [eu.shop.example], old_host: s, old_backend: "o:80", new_host: s, new_backend: "n:80"}
  - {name: admin, old_host: admin.internal, old_backend: "o:80", new_host: admin.internal, new_backend: "n:80"}
--- config
    location = /t { return 200 "ok"; }
--- request
GET /t
--- response_body: ok
--- error_log eval
qr/\[warn\] .*migration: \S+m\.yaml: service "admin" is routed by no location: no server block that routes by "migration_service auto" names one of its hosts in server_name/
--- check_eval
unlike(error_log_text(), qr/service "(api|shop)" is routed by no location/, 'api (named by migration_service) and shop (under *.shop.example) are reachable');
my $m = html_dir() . '/m.yaml';
open my $fh, '>', "$m.tmp" or die $!;
print $fh "services:\n  - {name: api, old_host: api.example, old_backend: \"o:80\", new_host: api.example, new_backend: \"n:80\"}\n"
        . "  - {name: billing, old_host: billing.example, old_backend: \"o:80\", new_host: billing.example, new_backend: \"n:80\"}\n";
close $fh;
rename "$m.tmp", $m or die $!;
my $deadline = time + 5;
sleep 1 while time < $deadline && error_log_text() !~ /service "billing" is routed by no location/;
like(error_log_text(), qr/\[warn\] .*migration: \S+m\.yaml: service "billing" is routed by no location/, 'a watch= publication warns too');
like(error_log_text(), qr/changed; published generation 2/, 'and publishes: a warning, not a refusal');



=== TEST 7: a backend given by host name, while a location with migration on has no resolver, is warned about (every request there would be a 502); IP literals and upstream{} blocks are not
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    upstream pool { server 127.0.0.1:1; }
--- user_files
>>> m.yaml
services:
  - {name: api, old_host: api.example, old_backend: "10.0.0.1:80", new_host: api.new, new_backend: "https://api.new.example:443"}
  - {name: shop, old_host: shop.example, old_backend: "pool", new_host: shop.example, new_backend: "[2001:db8::1]:8080"}
--- config
    location / { migration on; return 200 "$migration_backend\n"; }
--- request
GET /
--- more_headers
Host: api.example
--- response_body
10.0.0.1:80
--- error_log eval
qr/\[warn\] .*migration: \S+m\.yaml: service "api": new_backend api\.new\.example:443 is a host name, which nginx resolves when a request is sent to it, and location "\/" \(migration on\) has no resolver: every request sent there fails with 502/
--- check_eval
my @warned = error_log_text() =~ /is a host name, which nginx resolves/g;
is(scalar @warned, 1, 'one backend warned about: not the IP literals, not the upstream block');



=== TEST 8: with a resolver where migration on routes, host-name backends are not warned about
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    resolver 127.0.0.1:53 valid=30s;
--- user_files
>>> m.yaml
services:
  - {name: api, old_host: api.example, old_backend: "api.old.example:80", new_host: api.new, new_backend: "api.new.example:443"}
--- config
    location / { migration on; return 200 "$migration_backend\n"; }
--- request
GET /
--- more_headers
Host: api.example
--- response_body
api.old.example:80
--- check_eval
unlike(error_log_text(), qr/is a host name, which nginx resolves/, 'no warning');



=== TEST 9: host-name backends are not warned about when no script reads $migration_backend (a map of $migration_target onto upstream blocks never resolves them)
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - {name: api, old_host: api.example, old_backend: "api.old.example:80", new_host: api.new, new_backend: "api.new.example:443"}
--- config
    location / { migration on; return 200 "$migration_target\n"; }
--- request
GET /
--- more_headers
Host: api.example
--- response_body
old
--- check_eval
unlike(error_log_text(), qr/is a host name, which nginx resolves/, 'no resolver warning');
