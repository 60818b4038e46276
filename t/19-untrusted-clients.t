# Nothing a client sends steers what the operator did not allow (docs/yaml.md,
# "Errors"): header-rule traffic cannot trip the breaker; a Host sent to the wrong
# server block never reaches another block's service; a user id can come from a
# variable the proxy verified (user_key: var:NAME) instead of a header anyone
# can set.
use lib 't/lib';
use Test::MigrationNginx;
use Test::MigrationHelpers qw(fallback status write_file);
use IO::Socket::INET ();
use Time::HiRes ();
use JSON::PP ();

# Sends raw request bytes to 127.0.0.1:$port; returns the response body (after the headers).
sub raw {
    my ($port, $request) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 5)
        or die "connect $port: $!";
    print $s $request;
    local $/;
    my $response = <$s> // '';
    close $s;
    my ($status) = $response =~ m{^HTTP/1\.\d (\d+)};
    my ($body) = $response =~ /\r\n\r\n(.*)\z/s;
    return $status == 200 ? $body : "status $status";
}

sub get { raw($_[0], "GET / HTTP/1.1\r\nHost: $_[1]\r\nConnection: close\r\n\r\n") }

run_tests();

__DATA__

=== TEST 1: requests a header rule sends to a failing new cluster never trip the breaker; requests the migration sends there do
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "old"; } }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; location / { return 503 "new is failing"; } }
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.example
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration: {percentage: 100}
    canary:
      header_rules:
        - {header: X-Migration-Target, value: new, target: new}
    fallback: {failures: 3, cooldown: 30s}
--- config
    location / { migration on; proxy_pass http://$migration_backend; }
    location = /status { migration_status; }
--- request
GET /status
--- check_eval
for (1 .. 10) { http_request('GET', '/', [Host => 'api.example', 'X-Migration-Target' => 'new']) }
my $f = main::fallback();
is($f->{state}, 'closed', 'ten anonymous header-rule requests to a failing path leave the breaker closed');
is($f->{consecutive_failures}, 0, 'and are not counted');
for (1 .. 3) { http_request('GET', '/', [Host => 'api.example']) }
is(main::fallback()->{state}, 'open', 'three requests the split sent to new open it');



=== TEST 2: a Host sent to the wrong server block routes nowhere; the server block that names it routes it
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 default_server;
        server_name api.example;
        location / { migration on; return 200 "$migration_service|$migration_rule|$migration_backend"; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        server_name admin.internal;
        location / { migration on; return 200 "$migration_service|$migration_rule|$migration_backend"; }
    }
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: api-old:80
    new_host: api.example
    new_backend: api-new:80
  - name: admin
    old_host: admin.internal
    old_backend: admin-old:80
    new_host: admin.internal
    new_backend: admin-new:80
--- config
    location = /t { return 200 "ok"; }
--- request
GET /t
--- check_eval
my ($api, $admin) = (Test::MigrationNginx::_var("TEST_NGINX_RAND_PORT_1"), Test::MigrationNginx::_var("TEST_NGINX_RAND_PORT_2"));
is(main::get($api, 'api.example'), 'api|weight|api-old:80', 'api.example on the api server: routed');
is(main::get($api, 'admin.internal'), '|none|', 'admin.internal sent to the api server (its default server): no service');
is(main::raw($api, "GET http://admin.internal/ HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n"), '|none|',
   'an absolute URI naming admin.internal: no service either');
is(main::get($admin, 'admin.internal'), 'admin|weight|admin-old:80', 'admin.internal on its own server block: routed');
is(main::get($admin, 'api.example'), '|none|', 'api.example sent to the admin listener: no service');



=== TEST 3: server_name wildcards and regular expressions name hosts as nginx matches them
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server_name *.api.example .shop.example www.docs.*  ~^v[0-9]+\.app\.example$;
        location / { migration on; return 200 "$migration_service|$migration_rule"; }
    }
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: ["*.api.example"]
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
  - name: shop
    hosts: [shop.example, "*.shop.example"]
    old_host: shop.example
    old_backend: old:80
    new_host: shop.example
    new_backend: new:80
  - name: docs
    hosts: [www.docs.example, docs.example]
    old_host: docs.example
    old_backend: old:80
    new_host: docs.example
    new_backend: new:80
  - name: app
    hosts: ["*.app.example"]
    old_host: app.example
    old_backend: old:80
    new_host: app.example
    new_backend: new:80
--- config
    location = /t { return 200 "ok"; }
--- request
GET /t
--- check_eval
my $p = Test::MigrationNginx::_var("TEST_NGINX_RAND_PORT_1");
is(main::get($p, 'eu.api.example'), 'api|weight', '*.api.example names eu.api.example');
is(main::get($p, 'shop.example'), 'shop|weight', '.shop.example names shop.example');
is(main::get($p, 'eu.shop.example'), 'shop|weight', 'and its subdomains');
is(main::get($p, 'www.docs.example'), 'docs|weight', 'www.docs.* names www.docs.example');
is(main::get($p, 'docs.example'), '|none', 'but not docs.example');
is(main::get($p, 'v2.app.example'), 'app|weight', 'the regex names v2.app.example');
is(main::get($p, 'beta.app.example'), '|none', 'but not beta.app.example');



=== TEST 4: "migration_service auto any_server" is the explicit catch-all router; nginx -t warns about a nameless server using auto
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { migration on; migration_service auto any_server; return 200 "$migration_service|$migration_rule"; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        server_name _;
        location / { migration on; return 200 "$migration_service|$migration_rule"; }
    }
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
--- config
    location = /t { return 200 "ok"; }
--- request
GET /t
--- error_log eval
qr/\[warn\] .*migration: the server block in \S+nginx\.conf:\d+ names no host in server_name, so "migration_service auto" routes none of its requests/
--- check_eval
is(main::get(Test::MigrationNginx::_var("TEST_NGINX_RAND_PORT_1"), 'api.example'), 'api|weight', 'any_server: a catch-all server routes by Host');
# The warning names the nameless block's own line, not the end of the http block.
my @conf = do { open my $fh, '<', servroot() . '/conf/nginx.conf' or die $!; <$fh> };
my ($named) = error_log_text() =~ /the server block in \S+nginx\.conf:(\d+) names no host/;
my ($nameless_line) = grep { $conf[$_ - 1] =~ /^\s*server\s*\{/ && ($conf[$_ + 1] // '') =~ /server_name _;/ } 1 .. @conf;
is($named, $nameless_line, "the warning names the server block's line ($nameless_line)");
is(main::get(Test::MigrationNginx::_var("TEST_NGINX_RAND_PORT_2"), 'api.example'), '|none', 'server_name _ with auto: nothing');
my @warned = error_log_text() =~ /names no host in server_name/g;
is(scalar @warned, 1, 'warned once, for the nameless block only');



=== TEST 5: user_key var: reads the identity auth_request verified; a client's own header changes nothing
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        # The identity service: a token "t-alice" is alice; anything else is refused.
        location / {
            if ($http_authorization = "Bearer t-alice") { add_header X-User alice; return 200; }
            return 401;
        }
    }
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
    migration: {strategy: user, percentage: 0, user_key: "var:verified_user"}
    canary:
      user_rules:
        - {users: [alice], target: new}
--- config
    location / {
        auth_request /auth;
        auth_request_set $verified_user $upstream_http_x_user;
        migration on;
        proxy_pass http://127.0.0.1:$server_port/echo/$migration_target/$migration_rule;
    }
    location = /auth { internal; proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1; proxy_pass_request_body off; proxy_set_header Content-Length ""; }
    location /echo/ { return 200 "$uri\n"; }
--- request
GET /
--- more_headers
Host: api.example
Authorization: Bearer t-alice
--- response_body
/echo/new/user_list
--- check_eval
my $r = http_request('GET', '/', [Host => 'api.example', Authorization => 'Bearer t-alice', 'X-User-ID' => 'bob']);
is($r->{body}, "/echo/new/user_list\n", 'alice, as auth_request verified her');
$r = http_request('GET', '/', [Host => 'api.example', 'X-User-ID' => 'alice', 'verified_user' => 'alice']);
is($r->{status}, 401, 'no token: auth_request refuses, whatever headers claim');



=== TEST 6: over HTTP/2, :authority is the Host: the server block that names it routes it, another server block routes nowhere
--- requires
nginx >= 1.25.1
configure --with-http_v2_module
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 default_server;
        http2 on;
        server_name api.example;
        location / { migration on; return 200 "$server_protocol|$migration_service|$migration_rule|$migration_backend"; }
    }
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: api-old:80
    new_host: api.example
    new_backend: api-new:80
  - name: admin
    old_host: admin.internal
    old_backend: admin-old:80
    new_host: admin.internal
    new_backend: admin-new:80
--- config
    location = /t { return 200 "ok"; }
--- request
GET /t
--- check_eval
my $port = Test::MigrationNginx::_var("TEST_NGINX_RAND_PORT_1");
# curl sends the URL's host as :authority and no Host header (HTTP/2 over
# cleartext, prior knowledge).
my $h2 = sub {
    my ($authority) = @_;
    my $out = `curl -s --max-time 10 --http2-prior-knowledge --resolve '$authority:$port:127.0.0.1' 'http://$authority:$port/' 2>&1`;
    return $out;
};
is($h2->('api.example'), 'HTTP/2.0|api|weight|api-old:80', ':authority api.example on the server block that names it: routed');
is($h2->('admin.internal'), 'HTTP/2.0||none|', ':authority admin.internal on the api server (its default server): no service');



=== TEST 7: the 421 guard of docs/module.md reads $migration_service in the rewrite phase without deciding: an authenticated listed user is routed by user_list after auth_request_set
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / {
            if ($http_authorization = "Bearer t-alice") { add_header X-User alice; return 200; }
            return 401;
        }
    }
--- user_files
>>> m.yaml
version: "g1"
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
    migration: {strategy: user, percentage: 0, user_key: "var:verified_user"}
    canary:
      user_rules:
        - {users: [alice], target: new}
--- config
    location / {
        if ($migration_service = "") { return 421; }
        set $seen "$migration_config_version|$migration_old_backend";
        auth_request /auth;
        auth_request_set $verified_user $upstream_http_x_user;
        migration on;
        proxy_pass http://127.0.0.1:$server_port/echo/$migration_target/$migration_rule/$seen;
    }
    location = /auth { internal; proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1; proxy_pass_request_body off; proxy_set_header Content-Length ""; }
    location /echo/ { return 200 "$uri\n"; }
    location = /status { migration_status; }
--- request
GET /
--- more_headers
Host: api.example
Authorization: Bearer t-alice
--- response_body
/echo/new/user_list/g1|old:80
--- check_eval
is(http_request('GET', '/', [Host => 'nobody.example'])->{status}, 421, 'the guard still refuses a Host no service has');
my $s = JSON::PP::decode_json(http_request('GET', '/status', [Host => 'api.example'])->{body});
is($s->{services}[0]{rules}{user_list}, 1, 'counted once, by user_list');
is($s->{services}[0]{rules}{weight} // 0, 0, 'never by weight');
unlike(error_log_text(), qr/was decided before the access phase|before the access phase: a request decided there/, 'no early decision to warn about, at start or at run time');



=== TEST 8: a target-dependent variable read before access with a var: key is said at warn, once per worker
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
    migration: {strategy: user, percentage: 0, user_key: "var:remote_user"}
--- config
    location / {
        set $early $migration_target;
        migration on;
        proxy_pass http://127.0.0.1:$server_port/echo/$early/$migration_rule;
    }
    location /echo/ { return 200 "$uri\n"; }
--- request
GET /
--- more_headers
Host: api.example
--- response_body
/echo/old/weight
--- error_log eval
[qr/\[warn\] .*migration: service "api" was decided before the access phase \(a \$migration_\* variable that depends on the target was read by set, if, return or rewrite\), so its user_key var:remote_user was read before auth_request_set could set it/,
 qr/\[warn\] .*migration: location "\/" reads \$migration_target with set, if, return or rewrite, before the access phase: a request decided there is decided before auth_request_set can set the user id of "api" \(var:remote_user\)/]



=== TEST 9: user_key var: naming a variable nginx.conf does not define fails nginx -t, located in the YAML
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
    migration:
      strategy: user
      user_key: var:doesnotexist
--- config
    location / { migration on; return 200; }
--- must_die
--- error_log eval
qr{\[emerg\] .*migration: .*/html/m\.yaml:9:17: services\[0\]\.migration\.user_key: unknown variable "\$doesnotexist": no module or directive of nginx\.conf defines it}



=== TEST 10: var: names defined by set, map, auth_request_set or a prefixed family ($http_*, $cookie_*, $arg_*) pass; a watch= change naming an unknown one is refused and the last good file keeps routing
--- workers
2
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=200ms;
    map $http_x_team $team_user { default ""; ~. "team-$http_x_team"; }
--- user_files
>>> m.yaml
version: "good"
services:
  - name: a
    old_host: a.example
    old_backend: old:80
    new_host: a.example
    new_backend: new:80
    migration: {strategy: user, percentage: 0, user_key: "var:team_user"}
  - name: b
    old_host: b.example
    old_backend: old:80
    new_host: b.example
    new_backend: new:80
    migration: {strategy: user, percentage: 0, user_key: "var:http_x_user"}
  - name: c
    old_host: c.example
    old_backend: old:80
    new_host: c.example
    new_backend: new:80
    migration: {strategy: user, percentage: 0, user_key: "var:cookie_uid"}
  - name: d
    old_host: d.example
    old_backend: old:80
    new_host: d.example
    new_backend: new:80
    migration: {strategy: user, percentage: 0, user_key: "var:set_user"}
--- config
    location / {
        set $set_user "s";
        migration on;
        return 200 "$migration_service|$migration_config_version|$migration_rule\n";
    }
--- request
GET /
--- more_headers
Host: a.example
X-Team: blue
--- response_body
a|good|user_hash
--- check_eval
my $m = html_dir() . '/m.yaml';
my $yaml = do { local $/; open my $fh, '<', $m or die $!; <$fh> };
(my $bad = $yaml) =~ s/var:cookie_uid/var:no_such_var/;
$bad =~ s/"good"/"bad"/;
open my $fh, '>', "$m.tmp" or die $!; print $fh $bad; close $fh; rename "$m.tmp", $m or die $!;
my $deadline = time + 5;
sleep 1 while time < $deadline && error_log_text() !~ /unknown variable/;
like(error_log_text(), qr/\[error\] .*\/html\/m\.yaml:20:58: services\[2\]\.migration\.user_key: unknown variable "\$no_such_var"/, 'the change is refused, located');
is(http_request('GET', '/', [Host => 'c.example', Cookie => 'uid=x'])->{body}, "c|good|user_hash\n", 'the last good file keeps routing');



=== TEST 11: nginx -t names each location that reads a target-dependent variable in the rewrite phase (if, return, rewrite) while a service has a var: key; none without a var: key
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
    migration: {strategy: user, percentage: 0, user_key: "var:remote_user"}
--- config
    location /if { if ($migration_rule = weight) { return 200 "w\n"; } return 200 "x\n"; }
    location /return { return 200 "$migration_backend\n"; }
    location /rewrite { rewrite ^ /echo/$migration_host last; }
    location /fine { set $s $migration_service; return 200 "$s $migration_old_backend\n"; }
    location /echo/ { return 200 "$uri\n"; }
--- request
GET /fine
--- more_headers
Host: api.example
--- response_body
api old:80
--- check_eval
for my $case (['/if', 'migration_rule'], ['/return', 'migration_backend'], ['/rewrite', 'migration_host']) {
    like(error_log_text(), qr/location "\Q$case->[0]\E" reads \$$case->[1] with set, if, return or rewrite, before the access phase/, "location $case->[0] is named");
}
unlike(error_log_text(), qr/location "\/fine" reads/, 'a location reading only service-level variables is not');



=== TEST 12: a decision made in the access phase and found again after an internal redirect is not an early one: no warning when the redirected location reads the target before its own access phase
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
    migration: {strategy: user, percentage: 0, user_key: "var:remote_user"}
--- config
    location / { migration on; error_page 404 = /second; try_files /nowhere =404; }
    location /second { set $t $migration_target; migration on; proxy_pass http://127.0.0.1:$server_port/echo/$t/$migration_rule; }
    location /echo/ { return 200 "$uri\n"; }
--- request
GET /
--- more_headers
Host: api.example
--- response_body
/echo/old/weight
--- check_eval
unlike(error_log_text(), qr/was decided before the access phase/, 'decided in the first location\'s access phase: not early');



=== TEST 13: a server block of exact names finds each name's service once per configuration: another Host of the same length routes nowhere, each name keeps its own service, and a watch= change that moves a Host to another service is found again
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=200ms;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 default_server;
        server_name api.example;
        location / { migration on; return 200 "$migration_service|$migration_rule"; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        server_name api.example apx.example;
        location / { migration on; return 200 "$migration_service|$migration_rule"; }
    }
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: api-old:80
    new_host: api.example
    new_backend: api-new:80
  - name: apx
    old_host: apx.example
    old_backend: apx-old:80
    new_host: apx.example
    new_backend: apx-new:80
--- config
    location = /t { return 200 "ok"; }
--- request
GET /t
--- check_eval
my $port = Test::MigrationNginx::_var("TEST_NGINX_RAND_PORT_1");
is(main::get($port, 'api.example'), 'api|weight', 'api.example on the server block that names it: routed');
is(main::get($port, 'apx.example'), '|none', 'apx.example (the same length) sent to it as the default server: no service');
is(main::get($port, 'api.example'), 'api|weight', 'api.example again: routed');
my $both = Test::MigrationNginx::_var("TEST_NGINX_RAND_PORT_2");
is(join(' ', map { main::get($both, $_) } qw(api.example apx.example api.example apx.example)),
   'api|weight apx|weight api|weight apx|weight', 'a block naming both: each Host its own service, in turn');
main::write_file(html_dir() . '/m.yaml', "services:\n"
    . "  - {name: other, old_host: other.example, old_backend: o:80, new_host: other.example, new_backend: o:80}\n"
    . "  - {name: moved, old_host: api.example, old_backend: m:80, new_host: api.example, new_backend: m:80}\n");
my $deadline = Time::HiRes::time() + 5;
my $answer = main::get($port, 'api.example');
while ($answer ne 'moved|weight' && Time::HiRes::time() < $deadline) {
    Time::HiRes::sleep(0.05);
    $answer = main::get($port, 'api.example');
}
is($answer, 'moved|weight', 'after a watch= change that lists the Host\'s service second: the new service');



=== TEST 14: user_key var: naming one of the module's own variables fails nginx -t, located in the YAML
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
    migration:
      strategy: user
      user_key: var:migration_target
--- config
    location / { migration on; return 200; }
--- must_die
--- error_log eval
qr{\[emerg\] .*migration: .*/html/m\.yaml:9:17: services\[0\]\.migration\.user_key: "\$migration_target" is one of the module's own variables, which the decision sets}



=== TEST 15: a user_key variable whose value reads the decision (a map of $migration_target) finds no value while the decision is made: one decision a request, counted once, no cycle
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    map $migration_target $side_user { default "user-$migration_target"; }
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
    migration: {strategy: user, percentage: 50, user_key: "var:side_user"}
--- config
    location = /status { migration_status; }
    location / { migration on; return 200 "$migration_rule $migration_user_id $migration_target\n"; }
--- request
GET /status
--- check_eval
my %seen;
$seen{ http_request('GET', '/x', [Host => 'api.example'])->{body} }++ for 1 .. 10;
my ($body) = keys %seen;
is_deeply([values %seen], [10], 'each decided once, the same way: by the id the map gives while nothing is decided');
like($body, qr/^user_hash user- (old|new)\n\z/, "and \$migration_target read afterwards is the decision's ($body)");
my $requests = status()->{services}[0]{requests};
is($requests->{old} + $requests->{new}, 10, '10 requests, 10 counted');
unlike(error_log_text(), qr/cycle while evaluating/, 'no cycle');
--- response_body_like: "services"

