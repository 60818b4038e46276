# One decision per request (docs/module.md, "Embedded variables"): every variable agrees, in every
# phase, across internal redirects (index, try_files, error_page). Each test uses
# a 50 % weighted split, so a second coin toss would disagree about half the time
# and 200 requests would catch it.
use lib 't/lib';
use Test::MigrationNginx;

plan tests => blocks() * 2;
run_tests();

sub agree {
    my ($path, $n) = @_;
    my @reqs = map { ['GET', $path, ['Host' => 'api.example']] } 1 .. $n;
    my $res = http_requests_keepalive(\@reqs);
    my ($bad, %seen) = (0);
    for my $r (@$res) {
        my ($first, $backend, $rule) = split ' ', $r->{body};
        $seen{$first}++;
        $bad++ unless $r->{status} == 200 && $backend eq "$first:80" && $rule eq 'weight';
    }
    is($bad, 0, "$path: the decision before the redirect is the decision after it ($n requests)");
    ok($seen{new} && $seen{old}, "$path: both sides seen, so the split is live");
}

__DATA__

=== TEST 1: try_files keeps the decision made in the first location
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
    migration: {percentage: 50}
--- config
    location /t {
        migration on;
        set $first $migration_target;
        try_files /nonexistent /after;
    }
    location = /after { migration on; return 200 "$first $migration_backend $migration_rule\n"; }
--- request
GET /t
--- more_headers
Host: api.example
--- response_body_like
^(new new|old old):80 weight$
--- check_eval
main::agree('/t', 200);



=== TEST 2: error_page keeps the decision
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
    migration: {percentage: 50}
--- config
    location /t {
        migration on;
        set $first $migration_target;
        error_page 404 = /after;
        return 404;
    }
    location = /after { migration on; return 200 "$first $migration_backend $migration_rule\n"; }
--- request
GET /t
--- more_headers
Host: api.example
--- response_body_like
^(new new|old old):80 weight$
--- check_eval
main::agree('/t', 200);



=== TEST 3: an index redirect keeps the decision
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
    migration: {percentage: 50}
>>> dir/index.html
unused
--- config
    root $TEST_NGINX_HTML_DIR;
    location /dir/ {
        migration on;
        set $first $migration_target;
        index index.html;
    }
    location = /dir/index.html { migration on; return 200 "$first $migration_backend $migration_rule\n"; }
--- request
GET /dir/
--- more_headers
Host: api.example
--- response_body_like
^(new new|old old):80 weight$
--- check_eval
main::agree('/dir/', 200);



=== TEST 4: a variable read in the rewrite phase (return) decides, and the access phase agrees
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
    migration: {percentage: 50}
--- config
    location /t {
        migration on;
        set $first $migration_target;
        try_files /nonexistent /after;
    }
    location = /after {
        migration on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/echo;
        proxy_set_header X-Backend $migration_backend;
        proxy_set_header X-First $first;
        proxy_set_header Host localhost;
    }
    location = /echo { return 200 "$http_x_first $http_x_backend weight\n"; }
--- request
GET /t
--- more_headers
Host: api.example
--- response_body_like
^(new new|old old):80 weight$
--- check_eval
main::agree('/t', 100);



=== TEST 5: all variables of a request agree with each other under a live split
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
    migration: {percentage: 50}
--- config
    location /t { migration on; return 200 "$migration_target $migration_backend $migration_rule\n"; }
--- request
GET /t
--- more_headers
Host: api.example
--- response_body_like
^(new new|old old):80 weight$
--- check_eval
main::agree('/t', 300);
