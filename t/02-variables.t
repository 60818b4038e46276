# The $migration_* variables (docs/module.md, "Embedded variables"): their values, and that they all
# come from one decision per request.
use lib 't/lib';
use Test::MigrationNginx;

plan tests => blocks() * 2;
run_tests();

__DATA__

=== TEST 1: every variable for a request routed new by a header rule
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
version: "v7"
services:
  - name: api-1
    old_host: api.example
    old_backend: old.svc.cluster.local:8078
    new_host: api.kong.example
    new_backend: api.kong.example:443
    canary:
      header_rules:
        - header: X-Migration-Target
          value: new
          target: new_cluster
--- config
    location / {
        migration on;
        return 200 "target=$migration_target backend=$migration_backend host=$migration_host scheme=$migration_scheme service=$migration_service rule=$migration_rule version=$migration_config_version\n";
    }
--- request
GET /
--- more_headers
Host: api.example
X-Migration-Target: new
--- response_body
target=new backend=api.kong.example:443 host=api.kong.example scheme=https service=api-1 rule=header version=v7



=== TEST 2: every variable for a request routed old
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
version: "v7"
services:
  - name: api-1
    old_host: api.example
    old_backend: old.svc.cluster.local:8078
    new_host: api.kong.example
    new_backend: api.kong.example:443
--- config
    location / {
        migration on;
        return 200 "target=$migration_target backend=$migration_backend host=$migration_host scheme=$migration_scheme service=$migration_service rule=$migration_rule version=$migration_config_version\n";
    }
--- request
GET /
--- more_headers
Host: API.Example:8080
--- response_body
target=old backend=old.svc.cluster.local:8078 host=api.example scheme=http service=api-1 rule=weight version=v7



=== TEST 3: no service matched: everything empty but the rule and the version
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
version: "v7"
services:
  - name: api-1
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
--- config
    location / {
        migration on;
        return 200 "[$migration_target][$migration_backend][$migration_host][$migration_scheme][$migration_service][$migration_rule][$migration_config_version]\n";
    }
--- request
GET /
--- more_headers
Host: other.example
--- response_body
[][][][][][none][v7]



=== TEST 4: an explicit scheme in the backend wins
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: a
    old_host: a.example
    old_backend: "https://old.example:8443"
    new_host: a.example
    new_backend: "http://new.example:443"
    migration: {percentage: 0}
  - name: b
    old_host: b.example
    old_backend: my_upstream
    new_host: b.example
    new_backend: new.example:443
    migration: {percentage: 100}
--- config
    location /a { migration_service a; return 200 "$migration_scheme://$migration_backend\n"; }
--- request
GET /a
--- response_body
https://old.example:8443



=== TEST 5: upstream names and port 443 backends get their schemes
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: b
    old_host: b.example
    old_backend: my_upstream
    new_host: b.example
    new_backend: new.example:443
    migration: {percentage: 100}
    canary:
      header_rules:
        - header: X-Old
          present: true
          target: old_cluster
--- config
    location / { migration_service b; return 200 "$migration_scheme://$migration_backend\n"; }
--- request
GET /
--- response_body
https://new.example:443



=== TEST 6: without a version the content hash is reported
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services: []
--- config
    location / { return 200 "$migration_config_version\n"; }
--- request
GET /
--- response_body_like
^[0-9a-f]{16}$



=== TEST 7: variables work without "migration on" (decided on first use)
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
    migration: {percentage: 100}
--- config
    location / { return 200 "$migration_target $migration_rule\n"; }
--- request
GET /
--- more_headers
Host: api.example
--- response_body
new weight



=== TEST 8: no migration_config: the variables are empty and the rule is none
--- config
    location / { return 200 "[$migration_target][$migration_rule][$migration_config_version]\n"; }
--- request
GET /
--- response_body
[][none][]



=== TEST 9: wildcard hosts, case-insensitive, port ignored; exact names beat wildcards
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: wild
    hosts: ["*.example.com"]
    old_host: x.example.com
    old_backend: old:80
    new_host: x.example.com
    new_backend: new:80
  - name: exact
    hosts: ["api.example.com"]
    old_host: api.example.com
    old_backend: old:80
    new_host: api.example.com
    new_backend: new:80
--- config
    location / { return 200 "$migration_service\n"; }
--- request
GET /
--- more_headers
Host: A.B.Example.COM:8443
--- response_body
wild
--- check_eval
my $r = http_request('GET', '/', ['Host' => 'API.example.com']);
is($r->{body}, "exact\n", 'exact name beats the wildcard');
$r = http_request('GET', '/', ['Host' => 'example.com']);
is($r->{body}, "\n", 'the bare suffix is not matched by *.suffix');



=== TEST 10: migration_service NAME ignores the Host, and inherits from server to location
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: billing
    old_host: billing.example
    old_backend: billing-old:80
    new_host: billing.example
    new_backend: billing-new:80
--- config
    migration_service billing;
    location / { return 200 "$migration_service $migration_backend\n"; }
    location /auto { migration_service auto; return 200 "[$migration_service]\n"; }
--- request
GET /
--- more_headers
Host: anything.example
--- response_body
billing billing-old:80
--- check_eval
my $r = http_request('GET', '/auto', ['Host' => 'anything.example']);
is($r->{body}, "[]\n", 'auto in the location overrides the server');



=== TEST 11: $migration_old_* name the old side whatever was decided, and each differs from the new side's value
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.old.example
    old_backend: "https://old.internal:8443"
    new_host: api.new.example
    new_backend: new.internal:80
    canary:
      header_rules:
        - {header: X-Side, value: new, target: new}
--- config
    location / {
        return 200 "$migration_target host=$migration_host backend=$migration_backend scheme=$migration_scheme old_host=$migration_old_host old_backend=$migration_old_backend old_scheme=$migration_old_scheme\n";
    }
--- request
GET /
--- more_headers
Host: api.example
X-Side: new
--- response_body
new host=api.new.example backend=new.internal:80 scheme=http old_host=api.old.example old_backend=old.internal:8443 old_scheme=https
--- check_eval
is(http_request('GET', '/', [Host => 'api.example'])->{body},
   "old host=api.old.example backend=old.internal:8443 scheme=https old_host=api.old.example old_backend=old.internal:8443 old_scheme=https\n",
   'routed old: the decided side and the old side agree');
is(http_request('GET', '/', [Host => 'other.example', 'X-Side' => 'new'])->{body},
   " host= backend= scheme= old_host= old_backend= old_scheme=\n", 'no service: all empty');



=== TEST 12: $migration_old_* read before anything decides (the service from the Host alone) name the old side too
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.old.example
    old_backend: "https://old.internal:8443"
    new_host: api.new.example
    new_backend: new.internal:80
    migration: {percentage: 100}
--- config
    location / {
        # No target-dependent variable before these: they are read with the
        # service found from the Host alone, and nothing is decided.
        return 200 "old_host=$migration_old_host old_backend=$migration_old_backend old_scheme=$migration_old_scheme service=$migration_service\n";
    }
--- request
GET /
--- more_headers
Host: api.example
--- response_body
old_host=api.old.example old_backend=old.internal:8443 old_scheme=https service=api



=== TEST 13: a service-only read is not kept past an internal redirect: after it, the service variables follow the decision
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: one
    old_host: one.old.example
    old_backend: one-old:80
    new_host: one.new.example
    new_backend: one-new:80
  - name: two
    old_host: two.old.example
    old_backend: two-old:80
    new_host: two.new.example
    new_backend: two-new:80
--- config
    location /a {
        migration_service one;
        # Read before any decision: the service of /a, from its configuration alone.
        set $seen "$migration_service $migration_old_host";
        rewrite ^ /b last;
    }
    location /b {
        migration_service two;
        # The target is decided here, for /b's service; the service variables
        # read after it must name that service, not what /a read.
        return 200 "$seen | $migration_target $migration_service $migration_old_host $migration_old_backend\n";
    }
--- request
GET /a
--- response_body
one one.old.example | old two two.old.example two-old:80



=== TEST 14: $migration_user_id read first by an auth_request subrequest is the id the decision read, the main request's (the subrequest carries no query); nginx keeps that value for the whole request
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
    migration: {strategy: user, percentage: 50, user_key: "arg:user"}
>>> ok.txt
ok
--- config
    location = /authed {
        auth_request /auth;
        migration on;
        add_header X-Decision "$migration_rule $migration_target [$migration_user_id]";
        try_files /ok.txt =404;
    }
    location = /auth { internal; migration on; set $who $migration_user_id; return 204; }
--- request
GET /authed?user=u1
--- more_headers
Host: api.example
--- response_headers_like
X-Decision: ^user_hash (new|old) \[u1\]$
