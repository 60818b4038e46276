# The fallback breaker at its edges (docs/fallback.md, decision step 4): a new
# cluster whose name does not resolve fails like a refused connection, with or
# without the error_page retry on old; subrequests (SSI, auth_request) never
# speak for the new cluster, only the main request does.
use lib 't/lib';
use Test::MigrationNginx;
use Test::MigrationHelpers qw(fallback);

sub yaml_for {
    my (%o) = @_;
    return <<"YAML";
services:
  - name: api
    old_host: api.example
    old_backend: 127.0.0.1:$o{old}
    new_host: api.example
    new_backend: $o{new}
    migration: {percentage: 100}
    fallback:
      failures: $o{failures}
      cooldown: 30s
YAML
}

sub get {
    my $res = http_request('GET', $_[0] // '/', [Host => 'api.example']);
    # nginx's own error pages are left out: only a backend's answer is shown.
    my $body = ($res->{status} // 0) < 300 ? ($res->{body} // '') =~ s/\s+$//r : '';
    return join ' ', grep { length } $res->{status} // 'none', $res->{headers}{'x-rule'} // '-', $body;
}

add_block_preprocessor(sub {
    my $block = shift;
    $block->{request} //= ["GET /status\n"];
    $block->{http_config}[0] .= <<'BACKENDS';
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "old"; } }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; location / { return 503 "new is failing"; } }
BACKENDS
});

run_tests();

__DATA__

=== TEST 1: a new cluster whose name cannot be resolved (no resolver) trips the breaker after `failures` requests
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => 'new-cluster.invalid:8443', failures => 2) ]]
--- config
    location / { migration on; add_header X-Rule $migration_rule always; proxy_pass http://$migration_backend; }
    location = /status { migration_status; }
--- error_log
no resolver defined to resolve new-cluster.invalid
fallback opened after 2 consecutive failures of the new cluster (last: 502)
--- check_eval
is(main::get(), '502 weight', 'first request: new cannot be resolved, 502');
is(main::fallback()->{consecutive_failures}, 1, 'counted as a failure of new');
is(main::get(), '502 weight', 'second request: 502');
is(main::fallback()->{state}, 'open', 'the breaker is open');
is(main::get(), '200 fallback old', 'the next request goes to old');



=== TEST 2: a resolver that never answers: the timed-out resolution counts as a failure too
--- timeout: 20
--- http_config
    resolver 127.0.0.1:$TEST_NGINX_RAND_PORT_3 valid=1s ipv6=off;
    resolver_timeout 300ms;
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => 'new-cluster.invalid:8443', failures => 2) ]]
--- config
    location / { migration on; add_header X-Rule $migration_rule always; proxy_pass http://$migration_backend; }
    location = /status { migration_status; }
--- error_log
could not be resolved (110: Operation timed out)
--- check_eval
is(main::get(), '502 weight', 'first request: resolution times out, 502');
is(main::get(), '502 weight', 'second request: 502');
is(main::fallback()->{state}, 'open', 'the breaker is open');
is(main::get(), '200 fallback old', 'the next request goes to old');



=== TEST 3: with the error_page retry on old, the client gets old's answer and the unresolvable new still counts
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => 'new-cluster.invalid:8443', failures => 2) ]]
--- config
    location / {
        migration on;
        add_header X-Rule $migration_rule always;
        proxy_pass http://$migration_backend;
        proxy_intercept_errors on;
        error_page 502 = @old;
    }
    location @old { add_header X-Rule $migration_rule always; proxy_pass http://$migration_old_backend; }
    location = /status { migration_status; }
--- error_log
no resolver defined to resolve new-cluster.invalid
--- check_eval
is(main::get(), '200 weight old', 'first request: retried on old');
is(main::fallback()->{consecutive_failures}, 1, 'and counted as a failure of new');
is(main::get(), '200 weight old', 'second request: retried on old');
is(main::fallback()->{state}, 'open', 'the breaker is open');
is(main::get(), '200 fallback old', 'the next request goes to old by the breaker');



=== TEST 4: SSI subrequests that reach a failing new cluster never trip the breaker; the page itself has no upstream
--- http_config
    log_subrequest on;
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '127.0.0.1:$TEST_NGINX_RAND_PORT_2', failures => 5) ],
 [ 'page.html', CORE::join('', map { "<!--# include virtual=\"/part/$_\" -->\n" } 1 .. 6) ]]
--- config
    location = /page.html { migration on; ssi on; root $TEST_NGINX_HTML_DIR; }
    location /part/ { proxy_pass http://$migration_backend; }
    location = /status { migration_status; }
--- check_eval
for (1 .. 3) {
    my $page = main::get('/page.html');
    like($page, qr/^200 - (new is failing\s*){6}$/, 'the page holds six parts answered by new');
}
my $f = main::fallback();
is($f->{state}, 'closed', 'eighteen failing subrequests did not open the breaker');
is($f->{consecutive_failures}, 0, 'and none was counted');




=== TEST 5: auth_request subrequests that reach a failing new cluster never trip the breaker either
--- http_config
    log_subrequest on;
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '127.0.0.1:$TEST_NGINX_RAND_PORT_2', failures => 5) ],
 [ 'app.txt', "app\n" ]]
--- config
    location = /app.txt { migration on; auth_request /auth; root $TEST_NGINX_HTML_DIR; }
    location = /auth { internal; proxy_pass http://$migration_backend/auth; }
    location = /status { migration_status; }
--- check_eval
# The new cluster answers the authorisation subrequest 503: auth_request makes
# the page a 500, which is the page's own answer, not an upstream's.
for (1 .. 8) {
    is(main::get('/app.txt'), '500 -', 'the page fails with its subrequest');
}
my $f = main::fallback();
is($f->{state}, 'closed', 'eight failing auth subrequests did not open the breaker');
is($f->{consecutive_failures}, 0, 'and none was counted');
like(error_log_text(), qr/auth request unexpected status: 503/, 'the subrequest did reach the failing new cluster');
