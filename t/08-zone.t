# The shared zone of `migration_config PATH zone=NAME:SIZE watch=INTERVAL`: its
# parameters, its size check, and what it holds.
use lib 't/lib';
use Test::MigrationNginx;

our $YAML = <<'YAML';
version: "z1"
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
    migration: {percentage: 100}
YAML

add_block_preprocessor(sub {
    my $block = shift;
    $block->{user_files} = [">>> m.yaml\n$YAML"] unless exists $block->{user_files};
});

run_tests();

__DATA__

=== TEST 1: the default zone is migration:1m and routes
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- config
    location / { migration on; return 200 "$migration_target $migration_config_version\n"; }
    location = /status { migration_status; }
--- request
GET /
--- more_headers
Host: api.example
--- response_body
new z1
--- check_eval
like(http_request('GET', '/status')->{body}, qr/"generation":1,/, 'first generation');



=== TEST 2: a named zone of the smallest size nginx allows (8 pages)
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=canary_zone:32k;
--- config
    location / { migration on; return 200 "$migration_target\n"; }
--- request
GET /
--- more_headers
Host: api.example
--- response_body
new



=== TEST 3: a zone below 8 pages is refused
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=m:16k;
--- must_die
--- error_log
invalid parameter "zone=m:16k": zone size must be at least 32k



=== TEST 4: a zone without a size is refused
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=m;
--- must_die
--- error_log
invalid parameter "zone=m": the zone needs a size, as in zone=migration:1m



=== TEST 5: a zone without a name is refused
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=:1m;
--- must_die
--- error_log
invalid parameter "zone=:1m": the zone needs a name, as in zone=migration:1m



=== TEST 6: a zone size nginx cannot read is refused
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=m:lots;
--- must_die
--- error_log
invalid parameter "zone=m:lots": invalid zone size in "m:lots"



=== TEST 7: zone= given twice is refused
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=a:1m zone=b:1m;
--- must_die
--- error_log
invalid parameter "zone=b:1m": expected zone=NAME:SIZE, watch=INTERVAL, max_size=SIZE or last_good=PATH, each at most once



=== TEST 8: an interval nginx cannot read is refused
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=often;
--- must_die
--- error_log
invalid parameter "watch=often": invalid interval; write it as nginx times are written, e.g. watch=2s or watch=500ms



=== TEST 9: an interval under 100ms is refused
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=10ms;
--- must_die
--- error_log
invalid parameter "watch=10ms": the watch interval must be at least 100ms



=== TEST 10: a configuration that does not fit the zone fails nginx -t and says how much it needs
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=small:32k;
--- user_files eval
[[ 'm.yaml', $main::YAML . ("# a long comment line that only takes room in the zone, as ConfigMaps with notes do\n" x 200) ]]
--- must_die
--- error_log eval
qr{zone "small" is too small for \S+/html/m\.yaml \(1 services, 16971 bytes of YAML\): it needs at least (\d+)k, e.g\. zone=small:\1k}



=== TEST 11: the size the error asks for is the least nginx -t accepts, and it is enough to start, route and reload (two records at once)
--- master_on
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=small:1m;
--- user_files eval
[[ 'm.yaml', $main::YAML . ("# a long comment line that only takes room in the zone, as ConfigMaps with notes do\n" x 200) ]]
--- config
    location / { migration on; return 200 "$migration_target\n"; }
    location = /status { migration_status; }
--- request
GET /
--- more_headers
Host: api.example
--- response_body
new
--- check_eval
my $conf = servroot() . '/conf/nginx.conf';
my $live = do { open my $fh, '<', $conf or die $!; local $/; <$fh> };
# nginx -t of this very configuration with another zone size: (passed, output)
my $test_with = sub {
    my ($size) = @_;
    (my $text = $live) =~ s/zone=small:1m/zone=small:$size/ or die 'no zone in nginx.conf';
    my $file = servroot() . "/conf/t-$size.conf";
    open my $fh, '>', $file or die $!; print $fh $text; close $fh;
    # -e: before it opens the configured error_log, nginx writes to its built-in
    # path (/var/log/nginx/error.log for Debian's and the official image's nginx)
    my $out = `'${\ nginx_binary()}' -p '${\ servroot()}/' -e logs/error.log -c '$file' -t 2>&1`;
    # nginx -t logs its refusal to the block's error log too
    expect_alert(qr/\[emerg\] .*zone "small" is too small for .* in \S+\/t-\Q$size\E\.conf:\d+/) if $?;
    return ($? == 0, $out);
};
my ($ok, $out) = $test_with->('32k');
ok(!$ok, 'nginx -t refuses 32k');
# "it needs at least N": N is the least size accepted; "it needs more than N":
# N itself is refused. Either way the e.g. is a size that works.
my ($rule, $need, $k) = $out =~ /it needs (at least|more than) (\d+)k, e\.g\. zone=small:(\d+)k/
    or return fail("no suggested size in: $out");
my $yaml = -s html_dir() . '/m.yaml';
cmp_ok($k * 1024, '>=', 2 * $yaml, "the suggestion, ${k}k, holds the file twice over (a new record beside the old one)");
my $refused = $rule eq 'at least' ? $need - 1 : $need;
($ok, $out) = $test_with->("${refused}k");
ok(!$ok, "${refused}k is refused, as 'it needs $rule ${need}k' says") or diag($out);
($ok, $out) = $test_with->("${k}k");
ok($ok, "${k}k passes nginx -t") or diag($out);
# The suggested size, live: a new zone of that size at a reload, then a second
# reload publishing into it while the first record still serves.
$live =~ s/zone=small:1m/zone=small:${k}k/ or die;
open my $fh, '>', $conf or die $!; print $fh $live; close $fh;
ok(reload_nginx(), "reload into a new zone of ${k}k");
is(http_request('GET', '/', [Host => 'api.example'])->{body}, "new\n", 'routes');
ok(reload_nginx(), 'reload again: the second record fits beside the first');
is(http_request('GET', '/', [Host => 'api.example'])->{body}, "new\n", 'routes');
like(http_request('GET', '/status')->{body}, qr/"generation":2,/, 'the second reload published generation 2 of the new zone');



=== TEST 12: a zone name used by another module is refused by nginx
--- http_config
    limit_req_zone $binary_remote_addr zone=shared:1m rate=1r/s;
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=shared:1m;
--- must_die
--- error_log
the shared memory zone "shared" is already declared for a different use



=== TEST 13: migration_status needs migration_config
--- config
    location = /status { migration_status; }
--- must_die
--- error_log
migration_status needs migration_config in the http block



=== TEST 14: migration_status takes no arguments
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- config
    location = /status { migration_status json; }
--- must_die
--- error_log
invalid number of arguments in "migration_status" directive



=== TEST 15: four workers each count into a cell of their own; the status sums them exactly
--- master_on
--- workers: 4
--- error_log_level: notice
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- config
    location / { migration on; return 200 "$migration_target $pid\n"; }
    location = /status { migration_status; }
--- request
GET /
--- more_headers
Host: api.example
--- response_body_like: ^new \d+\n$
--- no_error_log
counter cell
--- check_eval
use Test::MigrationHelpers qw(status);
# 400 requests, a connection each, spread by the kernel over the workers.
my %pids;
for (1 .. 400) {
    my $body = http_request('GET', '/', [Host => 'api.example'])->{body};
    $pids{$1}++ if $body =~ /^new (\d+)$/;
}
cmp_ok(scalar keys %pids, '>=', 2, 'more than one worker answered (' . join(', ', map {"$_: $pids{$_}"} sort keys %pids) . ')');
my $api = status()->{services}[0];
is($api->{requests}{new}, 401, 'every request counted once, whichever worker counted it');
is($api->{responses}{new}{'2xx'}, 401, 'every response counted once');



=== TEST 16: a zone without room for a cell per worker gives them fewer, says so at notice, and still counts exactly
--- master_on
--- workers: 4
--- error_log_level: notice
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=tight:64k;
--- user_files eval
[[ 'm.yaml', "version: z1\nservices:\n" . CORE::join('', map { <<"S" } 1 .. 8) ]]
  - name: svc$_
    hosts: [svc$_.example]
    old_host: svc$_.example
    old_backend: old:80
    new_host: svc$_.example
    new_backend: new:80
    migration: {percentage: 100}
S
--- config
    location / { migration on; return 200 "$migration_target $pid\n"; }
    location = /status { migration_status; }
--- request
GET /
--- more_headers
Host: svc1.example
--- response_body_like: ^new \d+\n$
--- error_log eval
qr/\[notice\] .*migration: zone "tight" \(64k\) has room for [123] counter cell\(s\) per service, not one for each of the 4 workers: workers share cells \(the counts stay exact, busy workers contend for them\); zone=tight:\d+k would give each its own/
--- check_eval
use Test::MigrationHelpers qw(status);
my %pids;
for (1 .. 200) {
    my $body = http_request('GET', '/', [Host => 'svc1.example'])->{body};
    $pids{$1}++ if $body =~ /^new (\d+)$/;
}
cmp_ok(scalar keys %pids, '>=', 2, 'more than one worker answered');
my ($svc1) = grep { $_->{name} eq 'svc1' } @{ status()->{services} };
is($svc1->{requests}{new}, 201, 'every request counted once');
is($svc1->{responses}{new}{'2xx'}, 201, 'every response counted once');
