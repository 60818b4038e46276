# The fallback breaker at its edges (docs/fallback.md, decision step 4): a new
# cluster whose name does not resolve fails like a refused connection, with or
# without the error_page retry on old; subrequests (SSI, auth_request) never
# speak for the new cluster, only the main request does.
use lib 't/lib';
use Test::MigrationNginx;
use Test::MigrationHelpers qw(fallback);
use IO::Socket::INET;
use POSIX ();
use Time::HiRes ();

# Forked backends of a block, killed at its end (and at exit).
our @Backends;
END { kill 'KILL', @Backends if @Backends }

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



=== TEST 6: a trial slower than the cooldown has its permit taken over; the takeover closes the breaker, and the slow trial's late 503 does not re-open it: it is one failure of a closed breaker
--- workers: 1
--- timeout: 30
--- init
# new: 503 at once for /fail, 503 after 2.5 s for /slow, else 200 "new".
my $port = rand_port(3);
my $pid = fork();
die "fork: $!" unless defined $pid;
if ($pid == 0) {
    $SIG{PIPE} = 'IGNORE';
    $SIG{CHLD} = 'IGNORE';
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port, Listen => 16, ReuseAddr => 1) or POSIX::_exit(1);
    while (my $c = $l->accept) {
        if (fork() == 0) {
            my $first = <$c> // '';
            while (defined(my $line = <$c>)) { last if $line =~ /^\r?\n$/ }
            Time::HiRes::sleep(2.5) if $first =~ m{ /slow };
            print $c $first =~ m{ /(fail|slow) }
                ? "HTTP/1.1 503 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                : "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nnew";
            close $c;
            POSIX::_exit(0);
        }
        close $c;
    }
    POSIX::_exit(0);
}
push @main::Backends, $pid;
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.example
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_3
    migration: {percentage: 100}
    fallback: {failures: 2, cooldown: 1s}
--- config
    location / { migration on; add_header X-Rule $migration_rule always; proxy_pass http://$migration_backend; }
    location = /status { migration_status; }
--- error_log
fallback opened after 2 consecutive failures of the new cluster (last: 503)
--- check_eval
is(main::get('/fail'), '503 weight', 'new fails') for 1 .. 2;
is(main::fallback()->{state}, 'open', 'the breaker opens (failures: 2)');
Time::HiRes::sleep(1.1);
my $slow = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port()) or die "connect: $!";
print $slow "GET /slow HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n";
Time::HiRes::sleep(1.2);
is(main::get('/'), '200 weight new', 'a cooldown later the slow trial is taken over by a request that reaches new');
is(main::fallback()->{state}, 'closed', 'whose success closes the breaker');
my $late = do { local $/; <$slow> } // '';
close $slow;
like($late, qr{^HTTP/1\.1 503}, 'the slow trial ends with 503');
Time::HiRes::sleep(0.2);
is_deeply(main::fallback(), { state => 'closed', consecutive_failures => 1, trips => 1 },
    'its late 503 is one failure of a closed breaker, not a re-opening');
kill 'KILL', splice @main::Backends;
