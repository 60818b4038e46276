# realip configured inside a location runs in the preaccess phase there, after
# set, if, return and rewrite. A $migration_* variable read by one of those
# decides before realip has set the client address, so ip rules, `from:` and
# strategy ip would see the proxy's address. The module never lets that pass
# silently: `nginx -t` warns about such locations, and a request decided that
# way is logged. The cure (docs/operating.md): realip at the
# server or http level.
use lib 't/lib';
use Test::MigrationNginx;

add_block_preprocessor(sub {
    my $block = shift;
    $block->{http_config} //= ["    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n"];
    $block->{user_files} //= [<<'YAML'];
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
    canary:
      ip_rules:
        - {cidr: 10.0.0.0/8, target: new}
YAML
    $block->{more_headers} //= ["Host: api.example\nX-Real-IP: 10.1.2.3\n"];
});

run_tests();

__DATA__

=== TEST 1: realip in a location where `if` reads $migration_target: nginx -t warns, and the early decision is logged
--- config
    location /early {
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Real-IP;
        migration on;
        if ($migration_target = "new") { return 200 "new $migration_rule $remote_addr\n"; }
        return 200 "$migration_target $migration_rule $remote_addr\n";
    }
--- request
GET /early
--- response_body
old weight 127.0.0.1
--- error_log eval
[qr/\[warn\] .*realip is configured in location "\/early", where it runs in the preaccess phase: a \$migration_\* variable read before that \(by set, if, return or rewrite\) decides by the proxy's address/]



=== TEST 2: the request decided before location-level realip is logged with the client's real address
--- config
    location /early {
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Real-IP;
        migration on;
        set $side $migration_target;
        proxy_pass http://127.0.0.1:$server_port/echo/$side;
    }
    location /echo/ { return 200 "$uri\n"; }
--- request
GET /early
--- response_body
/echo/old
--- error_log eval
[qr/\[warn\] .*migration: service "api" was decided before realip set the client address 10\.1\.2\.3 \(realip in this location runs after set, if, return and rewrite\)/]



=== TEST 3: realip at the server level: the same `if` sees the client's address and routes by the ip rule, with no warning
--- config
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    location /early {
        migration on;
        if ($migration_target = "new") { return 200 "new $migration_rule $remote_addr\n"; }
        return 200 "$migration_target $migration_rule $remote_addr\n";
    }
--- request
GET /early
--- response_body
new cidr 10.1.2.3
--- no_error_log
realip is configured in location
was decided before realip



=== TEST 4: realip in a location that only reads the variables after the access phase routes by the client's address
--- config
    location /late {
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Real-IP;
        migration on;
        add_header X-Decision "$migration_target $migration_rule";
        proxy_pass http://127.0.0.1:$server_port/echo/$migration_target;
    }
    location /echo/ { return 200 "$uri\n"; }
--- request
GET /late
--- response_body
/echo/new
--- response_headers
X-Decision: new cidr
--- no_error_log
was decided before realip
