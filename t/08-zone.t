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
invalid parameter "zone=b:1m": expected zone=NAME:SIZE, watch=INTERVAL or max_size=SIZE, each at most once



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



=== TEST 11: the size the error asked for is enough
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=small:57k;
--- user_files eval
[[ 'm.yaml', $main::YAML . ("# a long comment line that only takes room in the zone, as ConfigMaps with notes do\n" x 200) ]]
--- config
    location / { migration on; return 200 "$migration_target\n"; }
--- request
GET /
--- more_headers
Host: api.example
--- response_body
new



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
