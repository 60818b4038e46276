# Warnings that need the whole configuration (src/checks.rs), printed by
# `nginx -t` on the terminal and logged at start and reload:
#  * watch= when the worker user cannot read the file (it would be found out only
#    at the first change, which would then be refused);
#  * a zone this configuration alone mostly fills (a reload that keeps the zone
#    may then be refused, which `nginx -s reload` does not show).
use lib 't/lib';
use Test::MigrationNginx;

run_tests();

# `nginx -t` of the block's configuration, as an operator runs it; its output.
sub nginx_t {
    my $cmd = join ' ', map { "'$_'" } nginx_binary(), '-p', servroot() . '/', '-e', 'logs/error.log',
        '-c', 'conf/nginx.conf', '-t';
    my $out = `$cmd 2>&1`;
    return ($? >> 8, $out);
}

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
my ($rc, $out) = nginx_t();
is($rc, 0, 'nginx -t still passes (a warning)');
like($out, qr{nginx: \[warn\] migration: watch= cannot work: the worker processes run as "nobody" and cannot read \S+/private/m\.yaml: Permission denied}, 'nginx -t prints the warning');



=== TEST 2: the same file, readable by the worker user: no warning
--- requires: root
--- main_config
user nobody nogroup;
--- http_config
    migration_config $TEST_NGINX_SERVROOT/private/m.yaml watch=1s;
--- init
mkdir servroot() . '/private', 0755 or die "mkdir: $!";
chmod 0755, servroot() . '/private';
open my $fh, '>', servroot() . '/private/m.yaml' or die $!;
print $fh "services: []\n";
close $fh;
--- config
    location / { return 200 "ok\n"; }
--- no_error_log
watch= cannot work
--- check_eval
my ($rc, $out) = nginx_t();
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
my ($rc, $out) = nginx_t();
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
