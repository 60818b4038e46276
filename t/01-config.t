# Loading the YAML: what loads, and how `nginx -t` refuses a bad file, with the
# file, line, column and field path of the problem (docs/yaml.md).
use lib 't/lib';
use Test::MigrationNginx;

plan tests => blocks() * 2;
run_tests();

__DATA__

=== TEST 1: the seed's ConfigMap loads unchanged and routes the header rule to new
--- http_config
    migration_config $TEST_NGINX_REPO_DIR/nginx/configmap.yaml;
--- config
    location / {
        migration on;
        return 200 "$migration_target $migration_rule $migration_backend $migration_scheme $migration_host\n";
    }
--- request
GET /
--- more_headers
Host: api-name01.teamname.dev.aliyun.intracloud.cn.aibang
X-Migration-Target: new
--- response_body
new header api-name01.kong.dev.aliyun.intracloud.cn.aibang:443 https api-name01.kong.dev.aliyun.intracloud.cn.aibang
--- error_log
migration: loaded



=== TEST 2: a plain service document loads too
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
version: "2026-11-24.1"
services:
  - name: api
    old_host: api.example
    old_backend: old.svc:8078
    new_host: api.new.example
    new_backend: api.new.example:443
--- config
    location / { return 200 "$migration_service $migration_config_version\n"; }
--- request
GET /
--- more_headers
Host: api.example
--- response_body
api 2026-11-24.1



=== TEST 3: a relative path is relative to the nginx prefix
--- http_config
    migration_config html/m.yaml;
--- user_files
>>> m.yaml
services: []
--- config
    location / { return 200 "$migration_rule\n"; }
--- request
GET /
--- response_body
none



=== TEST 4: a missing file fails nginx -t and names the file
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/nope.yaml;
--- must_die
--- error_log eval
qr{\[emerg\] .*/html/nope\.yaml: cannot read the file: No such file or directory}



=== TEST 5: a YAML syntax error is located
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: [api
--- must_die
--- error_log eval
qr{\[emerg\] .*/html/m\.yaml:3:1: .* in .*nginx\.conf:\d+}



=== TEST 6: a percentage out of range is refused at its line and column
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
      percentage: 120
--- must_die
--- error_log
/html/m.yaml:8:19: services[0].migration.percentage: must be between 0 and 100, got 120



=== TEST 7: more than two decimals are refused
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
    migration: {percentage: 12.345}
--- must_die
--- error_log
/html/m.yaml:7:29: services[0].migration.percentage: at most two decimals are allowed, got 12.345



=== TEST 8: an unknown key (a typo) is refused
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
    canary:
      header_rule: []
--- must_die
--- error_log
/html/m.yaml:8:7: services[0].canary: unknown field `header_rule`, expected one of `header_rules`, `ip_rules`, `user_rules`



=== TEST 9: a wrong type is refused
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
      enabled: maybe
--- must_die
--- error_log
/html/m.yaml:8:16: services[0].migration.enabled: wrong type: string "maybe", expected a boolean



=== TEST 10: a missing required field is refused
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    new_host: api.example
    new_backend: new:80
--- must_die
--- error_log
/html/m.yaml:2:5: services[0]: missing field `old_backend`



=== TEST 11: duplicate service names are refused at the second one
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: a.example
    old_backend: old:80
    new_host: a.example
    new_backend: new:80
  - name: api
    old_host: b.example
    old_backend: old:80
    new_host: b.example
    new_backend: new:80
--- must_die
--- error_log
/html/m.yaml:7:11: services[1].name: duplicate service name "api" (first used by services[0])



=== TEST 12: a bad CIDR is refused
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
    canary:
      ip_rules:
        - cidr: 10.0.0.0/40
          target: new_cluster
--- must_die
--- error_log
/html/m.yaml:9:17: services[0].canary.ip_rules[0].cidr: "10.0.0.0/40" is not a CIDR



=== TEST 13: a bad regex is refused
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
    canary:
      header_rules:
        - header: X-Canary
          pattern: "^(beta"
          target: new_cluster
--- must_die
--- error_log
/html/m.yaml:10:20: services[0].canary.header_rules[0].pattern: bad regex:



=== TEST 14: an unknown target is refused
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
    canary:
      header_rules:
        - header: X-Canary
          value: "1"
          target: blue_cluster
--- must_die
--- error_log
/html/m.yaml:11:19: services[0].canary.header_rules[0].target: must be new_cluster or old_cluster, got "blue_cluster"



=== TEST 15: an empty header name is refused
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
    canary:
      header_rules:
        - header: ""
          present: true
          target: new_cluster
--- must_die
--- error_log
/html/m.yaml:9:19: services[0].canary.header_rules[0].header: header name must not be empty



=== TEST 16: a bad user_key is refused
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
      user_key: "X-User-ID"
--- must_die
--- error_log
/html/m.yaml:9:17: services[0].migration.user_key: must be header:NAME, cookie:NAME, arg:NAME or var:NAME, got "X-User-ID"



=== TEST 17: an empty file is refused, so a half-written ConfigMap never wipes the routing
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
--- must_die
--- error_log
/html/m.yaml: the document is empty



=== TEST 18: a file without services is refused
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
version: "1"
--- must_die
--- error_log
/html/m.yaml:1:1: missing field `services`



=== TEST 19: errors inside a ConfigMap point at the manifest's own lines
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/cm.yaml;
--- user_files
>>> cm.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: migration-config
data:
  migration.yaml: |
    services:
      - name: api
        old_host: api.example
        old_backend: old:80
        new_host: api.example
        new_backend: new:80
        migration:
          strategy: canary
--- must_die
--- error_log
/html/cm.yaml:14:21: services[0].migration.strategy: must be weight, user or ip, got "canary"



=== TEST 20: migration_config is allowed once
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services: []
--- must_die
--- error_log
"migration_config" directive is duplicate



=== TEST 21: migration_service naming an unknown service is a configuration error
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services: []
--- config
    location / { migration_service billing; return 200; }
--- must_die
--- error_log eval
qr{\[emerg\] migration_service: no service named "billing" in .*/html/m\.yaml in .*nginx\.conf:\d+}



=== TEST 22: migration on without migration_config is a configuration error
--- config
    location / { migration on; return 200; }
--- must_die
--- error_log
"migration on" needs migration_config in the http block



=== TEST 23: migration accepts only on and off
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services: []
--- config
    location / { migration yes; return 200; }
--- must_die
--- error_log
invalid value "yes", it must be "on" or "off"



=== TEST 24: an unknown migration_config parameter is refused, not ignored
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml wach=5s;
--- user_files
>>> m.yaml
services: []
--- must_die
--- error_log
invalid parameter "wach=5s": expected zone=NAME:SIZE, watch=INTERVAL, max_size=SIZE or last_good=PATH, each at most once



=== TEST 25: a fallback cooldown that is not a time is refused, located
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
    fallback:
      failures: 5
      cooldown: a while
--- must_die
--- error_log
/html/m.yaml:9:17: services[0].fallback.cooldown: must be a time such as 30s, 500ms or 2m, got "a while"



=== TEST 26: a host claimed by two services is refused
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: a
    hosts: ["*.example.com"]
    old_host: a.example.com
    old_backend: old:80
    new_host: a.example.com
    new_backend: new:80
  - name: b
    hosts: ["*.EXAMPLE.com"]
    old_host: b.example.com
    old_backend: old:80
    new_host: b.example.com
    new_backend: new:80
--- must_die
--- error_log
/html/m.yaml:9:13: services[1].hosts[0]: host "*.example.com" is already routed by services[0]



=== TEST 27: reload re-reads the file; a bad file fails the reload and the last good one keeps routing
--- master_on
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
    migration: {percentage: 0}
--- config
    location / { migration on; return 200 "$migration_target $migration_rule\n"; }
--- request
GET /
--- more_headers
Host: api.example
--- response_body
old weight
--- expect_alerts
\[emerg\] .*/m\.yaml:7:29: services\[0\]\.migration\.percentage: must be between 0 and 100, got 101
--- check_eval
sub write_yaml {
    my ($pct) = @_;
    open my $fh, '>', html_dir() . '/m.yaml' or die $!;
    print $fh "services:\n  - name: api\n    old_host: api.example\n    old_backend: old:80\n"
            . "    new_host: api.example\n    new_backend: new:80\n    migration: {percentage: $pct}\n";
    close $fh;
}
write_yaml(100);
ok(reload_nginx(), 'reload with a good file succeeds');
is(http_request('GET', '/', ['Host' => 'api.example'])->{body}, "new weight\n", 'the new percentage routes after the reload');
write_yaml(101);
ok(!reload_nginx(), 'reload with a bad file is refused');
like(error_log_text(), qr{/m\.yaml:7:29: services\[0\]\.migration\.percentage: must be between 0 and 100, got 101}, 'located error in the log');
is(http_request('GET', '/', ['Host' => 'api.example'])->{body}, "new weight\n", 'the last good configuration keeps routing');



=== TEST 28: nginx -t warns, without failing, about rules an earlier rule shadows
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
    canary:
      header_rules:
        - {header: X-Migration-Target, value: new, target: new}
        - {header: x-migration-target, value: new, target: old}
      ip_rules:
        - {cidr: 10.0.0.0/8, target: new}
        - {cidr: 10.1.0.0/16, target: old}
      user_rules:
        - {users: [alice], target: new}
        - {users: [alice, bob], target: old}
--- config
    location / { migration on; return 200 "$migration_target $migration_rule\n"; }
--- request
GET /
--- more_headers
Host: api.example
X-Migration-Target: new
--- response_body
new header
--- error_log
[warn]
services[0].canary.header_rules[1]: never matches: services[0].canary.header_rules[0] already matches every request it would (same header, value "new")
services[0].canary.ip_rules[1]: never matches: services[0].canary.ip_rules[0] already matches every request it would (10.1.0.0/16 inside 10.0.0.0/8)
services[0].canary.user_rules[1].users[0]: never matches: services[0].canary.user_rules[0] already matches every request it would (user "alice")



=== TEST 29: a rule on a header name with '_' warns at start: nginx drops such request headers unless underscores_in_headers is on, and the rule indeed never matches
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
    canary:
      header_rules:
        - {header: X_Canary, value: "on", target: new}
--- config
    location / { migration on; return 200 "$migration_target $migration_rule\n"; }
--- request
GET /
--- more_headers
Host: api.example
X_Canary: on
--- response_body
old weight
--- error_log
[warn]
services[0].canary.header_rules[0].header: header "x_canary": nginx ignores request headers whose names contain '_' unless the server has `underscores_in_headers on`; without it this never matches



=== TEST 30: migration_config takes all four parameters at once (nginx refused a third before the handler saw it)
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=all_four:64k watch=1s max_size=64k last_good=$TEST_NGINX_HTML_DIR/last-good.yaml;
--- user_files
>>> m.yaml
version: four
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
    migration: {percentage: 100}
--- config
    location / { migration on; return 200 "$migration_target $migration_config_version\n"; }
--- request
GET /
--- more_headers
Host: api.example
--- response_body
new four
--- no_error_log
[emerg]



=== TEST 31: a fifth parameter repeats one, and is refused by name
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=five:64k watch=1s max_size=64k last_good=$TEST_NGINX_HTML_DIR/lg.yaml watch=2s;
--- user_files
>>> m.yaml
services: []
--- must_die
--- error_log
invalid parameter "watch=2s": expected zone=NAME:SIZE, watch=INTERVAL, max_size=SIZE or last_good=PATH, each at most once
