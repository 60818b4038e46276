# A percentage that moves itself (docs/ramp.md) and the responses it is judged
# on (docs/status.md, "Responses per target"): steps of a second or two, two workers, fake
# old and new clusters in the same nginx whose health a file switches
# (html/new-down: new answers 503; html/old-down: old does).
use lib 't/lib';
use Test::MigrationNginx;
use Test::MigrationHelpers qw(murmur2 write_file touch status stalling_new);
use JSON::PP ();
use Time::HiRes ();
use IO::Socket::INET ();
use POSIX ();

# new iff murmur2(user) < percentage_bp * 0xFFFFFFFF / 10000 (100 %: everyone).
sub expected_side {
    my ($user, $percentage) = @_;
    my $bp = int($percentage * 100 + 0.5);
    return 'new' if $bp >= 10000;
    return murmur2($user) < int($bp * 0xFFFFFFFF / 10000) ? 'new' : 'old';
}

sub api { (grep { $_->{name} eq 'api' } @{ status()->{services} })[0] }

# Sends one request per user over keep-alive; returns [[user, target, percentage, rule, status]...].
sub sample {
    my ($users, %h) = @_;
    my @list = map { ['GET', '/', [Host => 'api.example', 'X-User-ID' => $_, %h]] } @$users;
    my $res = http_requests_keepalive(\@list);
    my @out;
    for my $i (0 .. $#$users) {
        my ($target, $pct, $rule) = split ' ', ($res->[$i]{headers}{'x-decision'} // '');
        push @out, [$users->[$i], $target // '', $pct // '', $rule // '', $res->[$i]{status} // 0];
    }
    return \@out;
}

# Processes a block starts besides the nginx under test (a replica, a
# Prometheus): stopped when the block ends, and at exit if a test died first.
our @stop_at_end;
sub stop_children {
    while (my $p = shift @stop_at_end) { kill $p->[0], $p->[1]; waitpid $p->[1], 0 }
}
END { stop_children() }

sub wait_until {
    my ($limit, $test) = @_;
    my $deadline = Time::HiRes::time() + $limit;
    while (Time::HiRes::time() < $deadline) {
        return 1 if $test->();
        Time::HiRes::sleep(0.05);
    }
    return 0;
}

# A backend that answers "slow" after $delay seconds, with $status (200 OK); a
# path under /slow/stream is answered as a server-sent event stream.
sub slow_backend {
    my ($port, $delay, $status) = @_;
    $status //= '200 OK';
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        # A client nginx gave up on: its write fails, the backend goes on.
        $SIG{PIPE} = 'IGNORE';
        my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port, Listen => 64, ReuseAddr => 1)
            or POSIX::_exit(1);
        # One process per connection: requests nginx gave up on do not queue the next.
        $SIG{CHLD} = 'IGNORE';
        while (my $c = $l->accept) {
            if (fork() == 0) {
                my $req = '';
                while (defined(my $line = <$c>)) { $req .= $line; last if $line =~ /^\r?\n$/ }
                my $type = $req =~ m{^GET /slow/stream} ? "Content-Type: text/event-stream; charset=utf-8\r\n" : '';
                Time::HiRes::sleep($delay);
                print $c "HTTP/1.1 $status\r\n${type}Content-Length: 4\r\nConnection: close\r\n\r\nslow";
                close $c;
                POSIX::_exit(0);
            }
            close $c;
        }
        POSIX::_exit(0);
    }
    push @stop_at_end, ['KILL', $pid];
    return $pid;
}

our $RAMP_YAML = <<'YAML';
version: "v1"
services:
  - name: api
    old_host: api.example
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.example
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      strategy: user
      ramp:
%RAMP%
    canary:
      header_rules:
        - {header: X-Canary, value: "on", target: new}
YAML

sub ramp_yaml {
    my ($ramp, $version) = @_;
    my $y = $RAMP_YAML;
    $ramp =~ s/^/        /mg;
    $y =~ s/%RAMP%\n/$ramp/;
    $y =~ s/"v1"/"$version"/ if $version;
    return $y;
}

add_block_preprocessor(sub {
    my $block = shift;
    $block->{workers} //= ['2'];
    $block->{request} //= ["GET /status\n"];
    $block->{timeout} //= ['30'];
    $block->{http_config} //= ["    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n"];
    $block->{http_config}[0] .= <<'BACKENDS';
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { if (-f $TEST_NGINX_HTML_DIR/old-down) { return 503 "old is down"; } return 200 "old"; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location / { if (-f $TEST_NGINX_HTML_DIR/new-down) { return 503 "new is down"; } return 200 "new"; }
        # What a client can force with a header rule: a path of new that fails,
        # one that always answers.
        location /bad { return 503 "new fails here"; }
        location /ok { return 200 "new ok"; }
        # A path of new whose answer a test's slow_backend gives.
        location /slow { proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_3; }
    }
BACKENDS
    $block->{config} //= [<<'CONF'];
    location / {
        migration on;
        add_header X-Decision "$migration_target $migration_percentage $migration_rule" always;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
CONF
});

run_tests();

__DATA__

=== TEST 1: a healthy ramp walks 1 -> 10 -> 50 -> 100 and stops there; every user's side is the hash's at the percentage in force, and no user ever goes back to old
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [1, 10, 50, 100]\nevery: 1500ms\n") ]]
--- check_eval
my @users = map { "user-$_" } 1 .. 400;
my (%side, %seen_pct, @order, $wrong, $back);
my $deadline = Time::HiRes::time() + 12;
while (Time::HiRes::time() < $deadline) {
    for my $r (@{ main::sample(\@users) }) {
        my ($u, $target, $pct, $rule) = @$r;
        $seen_pct{$pct}++ or push @order, $pct;
        $wrong++ if $target ne main::expected_side($u, $pct);
        $back++ if ($side{$u} // '') eq 'new' && $target eq 'old';
        $side{$u} = $target;
    }
    last if ($order[-1] // '') eq '100' && $seen_pct{100} > 400;
}
is("@order", "1 10 50 100", 'the percentages in force, in order');
is($wrong // 0, 0, 'every user on the side the hash gives at the percentage in force');
is($back // 0, 0, 'no user went from new back to old');
is(scalar(grep { $_ eq 'new' } values %side), 400, 'at 100 % every user is on new');
my $ramp = main::api()->{ramp};
is_deeply([@$ramp{qw(state step steps percentage)}], ['done', 4, 4, 100], 'status: done, on the last step (counted from 1, as the log counts), 100 %');
is($ramp->{next_step_at}, undef, 'nothing is due');
for my $step ([2, '10'], [3, '50'], [4, '100']) {
    my @lines = error_log_text() =~ /\[notice\] [^\n]*migration: service "api": ramp step $step->[0] of 4 begins: $step->[1]% in force/g;
    is(scalar @lines, 1, "step $step->[0] logged once, by one of the two workers");
}
like(error_log_text(), qr/ramp step 4 of 4 begins: 100% in force; the last step: the ramp is done/, 'the end is logged');
like(error_log_text(), qr/\[notice\] [^\n]*migration: service "api": ramp step 1 of 4 begins: 1% in force; the next is due at /,
    'the step in force when the configuration was published is logged too');
like(error_log_text(), qr/\[warn\] [^\n]*service "api": the ramp has no start: [^\n]*binary upgrade \(USR2\)[^\n]*set ramp.start/,
    'a ramp without start is warned about: a binary upgrade begins it again');
my $prom = http_request('GET', '/status?format=prometheus')->{body};
like($prom, qr/^migration_ramp_percentage\{service="api"\} 100$/m, 'migration_ramp_percentage');
like($prom, qr/^migration_ramp_state\{service="api",state="done"\} 1$/m, 'migration_ramp_state');



=== TEST 2: new failing during a step: the gate fails at the step's end and the ramp rolls back to 0 %, logged once with its numbers; header rules still reach new
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [10, 50, 100]\nevery: 2s\ngate:\n  min_requests: 20\n  max_error_rate: 5%\non_failure: rollback\n") ]]
--- error_log eval
qr/\[warn\] .*migration: service "api": ramp step 1 of 3 \(10%\) failed its gate: error rate 100.00% above max_error_rate 5.00% \(new: \d+ responses, 100.00% errors, p99 [\d.]+ ms; old: \d+ responses, 0.00% errors, p99 [\d.]+ ms\); rolled back to 0% until the service's migration or backends change/
--- check_eval
main::touch('new-down', 1);
my @users = map { "u-$_" } 1 .. 500;
main::sample(\@users);
ok(main::wait_until(4, sub { (main::api()->{ramp}{state} // '') eq 'rolled_back' }), 'rolled back at the end of the step');
my $s = main::api();
is_deeply([@{ $s->{ramp} }{qw(state step percentage)}], ['rolled_back', 1, 0], 'status: rolled_back on step 1, 0 %');
is($s->{ramp}{last_gate}{verdict}, 'fail', 'the last gate failed');
cmp_ok($s->{ramp}{last_gate}{new_requests}, '>=', 20, 'judged on at least min_requests responses of new');
is_deeply($s->{ramp}{last_gate}{failed}, [{limit => 'max_error_rate', value => 0.05, measured => 1}],
    'last_gate names the limit that failed, its value and the measured one');
is_deeply([@$s{qw(percentage configured_percentage)}], [0, 10], 'percentage: the 0 % in force; configured_percentage: the file\'s step');
my $prom = http_request('GET', '/status?format=prometheus')->{body};
like($prom, qr/^migration_percentage\{service="api"\} 0$/m, 'Prometheus migration_percentage: in force');
like($prom, qr/^migration_configured_percentage\{service="api"\} 10$/m, 'Prometheus migration_configured_percentage: the file\'s');
my $after = main::sample([map { "v-$_" } 1 .. 200]);
is(scalar(grep { $_->[1] eq 'new' } @$after), 0, 'nobody goes to new by the split');
is(main::sample(['v-1'], 'X-Canary' => 'on')->[0][1], 'new', 'a header rule still reaches new');
my @warned = error_log_text() =~ /failed its gate/g;
is(scalar @warned, 1, 'logged once');
Time::HiRes::sleep(2.5);
is(main::api()->{ramp}{state}, 'rolled_back', 'the rollback stays');



=== TEST 3: on_failure: hold keeps the failed step's percentage
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [10, 50, 100]\nevery: 2s\ngate:\n  min_requests: 20\n  max_error_rate: 5%\non_failure: hold\n") ]]
--- error_log eval
qr/\[warn\] .*ramp step 1 of 3 \(10%\) failed its gate: .*; held at 10% until the service's migration or backends change/
--- check_eval
main::touch('new-down', 1);
main::sample([map { "u-$_" } 1 .. 500]);
ok(main::wait_until(4, sub { (main::api()->{ramp}{state} // '') eq 'held' }), 'held at the end of the step');
is(main::api()->{ramp}{percentage}, 10, 'on 10 %');
my $r = main::sample([map { "w-$_" } 1 .. 300]);
is(scalar(grep { $_->[2] ne '10' } @$r), 0, 'every request is decided at 10 %');



=== TEST 4: max_error_rate_vs_old: both sides failing alike passes the gate; the ramp advances
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [10, 50]\nevery: 2s\ngate:\n  min_requests: 20\n  max_error_rate_vs_old: 0.5%\n") ]]
--- check_eval
main::touch('new-down', 1);
main::touch('old-down', 1);
main::sample([map { "u-$_" } 1 .. 500]);
ok(main::wait_until(4, sub { (main::api()->{ramp}{percentage} // 0) == 50 }), 'advanced to 50 % although everything failed');
my $gate = main::api()->{ramp}{last_gate};
is($gate->{verdict}, 'pass', 'the gate passed');
is($gate->{new_error_rate}, 1, 'new failed every response');
is($gate->{old_error_rate}, 1, 'and so did old');



=== TEST 5: max_error_rate_vs_old: new failing more than old fails the gate
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [10, 50]\nevery: 2s\ngate:\n  min_requests: 20\n  max_error_rate_vs_old: 0.5%\n") ]]
--- error_log eval
qr/\[warn\] .*failed its gate: error rate 100.00% vs old's 0.00%: 100.00% points above, more than max_error_rate_vs_old 0.50%/
--- check_eval
main::touch('new-down', 1);
main::sample([map { "u-$_" } 1 .. 500]);
ok(main::wait_until(4, sub { (main::api()->{ramp}{state} // '') eq 'rolled_back' }), 'rolled back');



=== TEST 6: a slow new cluster fails max_p99 and max_p99_vs_old
--- init
main::slow_backend(Test::MigrationNginx::_var('TEST_NGINX_RAND_PORT_3'), 0.3);
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    upstream slow_new { server 127.0.0.1:$TEST_NGINX_RAND_PORT_3; }
--- error_log eval
qr/\[warn\] .*failed its gate: p99 [\d.]+ ms above max_p99 100 ms; p99 [\d.]+ ms vs old's [\d.]+ ms: [\d.]+x, more than max_p99_vs_old 1.5/
--- check_eval
my @users = map { "u-$_" } 1 .. 30;
main::sample(\@users);
ok(main::wait_until(6, sub { main::sample(['x-' . int(rand(1e6))]); (main::api()->{ramp}{state} // '') eq 'rolled_back' }), 'rolled back for latency');
my $s = main::api();
cmp_ok($s->{latency_p99_ms}{new}, '>', 250, 'status: new p99 above 250 ms');
cmp_ok($s->{latency_p99_ms}{old}, '<', 50, 'old p99 below 50 ms');
main::stop_children();
--- user_files eval
[[ 'm.yaml', do { my $y = main::ramp_yaml("steps: [50, 100]\nevery: 3s\ngate:\n  min_requests: 5\n  max_p99: 100ms\n  max_p99_vs_old: 1.5\n"); $y =~ s/new_backend: 127.0.0.1:\$TEST_NGINX_RAND_PORT_2/new_backend: slow_new/; $y } ]]



=== TEST 7: too few responses: the step waits instead of failing, then advances once traffic comes
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [10, 50]\nevery: 1s\ngate:\n  min_requests: 30\n  max_error_rate: 5%\n") ]]
--- check_eval
Time::HiRes::sleep(1.8);
my $s = main::api();
is_deeply([@{ $s->{ramp} }{qw(state step percentage)}], ['ramping', 1, 10], 'past its time, the step waits');
is($s->{ramp}{last_gate}{verdict}, 'waiting', 'the gate is waiting for responses');
main::sample([map { "u-$_" } 1 .. 600]);
ok(main::wait_until(2, sub { (main::api()->{ramp}{percentage} // 0) == 50 }), 'with enough responses of new, it advances');



=== TEST 8: a reload or watch= publication with the same ramp keeps the step; a changed ramp starts again
--- master_on
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=200ms;
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [10, 20, 30, 40, 50]\nevery: 1500ms\n") ]]
--- check_eval
my $m = html_dir() . '/m.yaml';
ok(main::wait_until(3, sub { (main::api()->{ramp}{step} // 0) >= 2 }), 'on step 2');
my $step = main::api()->{ramp}{step};
ok(reload_nginx(), 'reload with the same file');
is(main::api()->{ramp}{step}, $step, 'the reload kept the step');
main::write_file($m, Test::MigrationNginx::_expand(main::ramp_yaml("steps: [10, 20, 30, 40, 50]\nevery: 1500ms\n", 'v2')));
ok(main::wait_until(2, sub { main::status()->{version} eq 'v2' }), 'watch= published another version');
cmp_ok(main::api()->{ramp}{step}, '>=', $step, 'with the same ramp: the step is kept');
main::write_file($m, Test::MigrationNginx::_expand(main::ramp_yaml("steps: [5, 20, 30, 40, 50]\nevery: 1500ms\n", 'v3')));
ok(main::wait_until(2, sub { main::status()->{version} eq 'v3' }), 'a changed ramp published');
my $r = main::api()->{ramp};
is_deeply([@$r{qw(step percentage)}], [1, 5], 'it starts again at its first step');



=== TEST 9: responses per target and the latency histogram count exactly what the clients saw, over two workers
--- listen_options: reuseport
--- user_files eval
[[ 'm.yaml', "services:\n  - name: api\n    old_host: api.example\n    old_backend: 127.0.0.1:\$TEST_NGINX_RAND_PORT_1\n    new_host: api.example\n    new_backend: 127.0.0.1:\$TEST_NGINX_RAND_PORT_2\n    canary:\n      header_rules:\n        - {header: X-Canary, value: \"on\", target: new}\n        - {header: X-Canary, value: dead, target: new}\n  - name: dead\n    old_host: dead.example\n    old_backend: 127.0.0.1:1\n    new_host: dead.example\n    new_backend: 127.0.0.1:1\n" ]]
--- check_eval
my (%saw);
for my $i (1 .. 240) {
    my @h = (Host => 'api.example');
    push @h, ('X-Canary' => 'on') if $i % 3 == 0;
    main::touch('new-down', $i % 7 == 0);
    main::touch('old-down', $i % 11 == 0);
    my $r = http_request('GET', '/', \@h);
    my ($target) = split ' ', $r->{headers}{'x-decision'};
    $saw{$target}{ substr($r->{status}, 0, 1) . 'xx' }++;
}
for (1 .. 5) { my $r = http_request('GET', '/', [Host => 'dead.example']); $saw{dead}{ $r->{status} }++ }
my $s = main::status();
my ($api) = grep { $_->{name} eq 'api' } @{ $s->{services} };
my ($dead) = grep { $_->{name} eq 'dead' } @{ $s->{services} };
for my $target (qw(old new)) {
    for my $class (qw(2xx 5xx)) {
        is($api->{responses}{$target}{$class}, $saw{$target}{$class} // 0, "$target $class: as the clients saw");
    }
}
is($dead->{responses}{old}{failed}, 5, 'a refused connection is failed, not 5xx');
is($dead->{responses}{old}{'5xx'}, 0, 'and not counted as 5xx');
my $prom = http_request('GET', '/status?format=prometheus')->{body};
my ($count_new) = $prom =~ /^migration_upstream_response_seconds_count\{service="api",target="new"\} (\d+)$/m;
my ($inf_new) = $prom =~ /^migration_upstream_response_seconds_bucket\{service="api",target="new",le="\+Inf"\} (\d+)$/m;
my $new_total = ($saw{new}{'2xx'} // 0) + ($saw{new}{'5xx'} // 0);
is($count_new, $new_total, 'the histogram counts every response of new');
is($inf_new, $new_total, 'its +Inf bucket too');
like($prom, qr/^migration_responses_total\{service="api",target="old",class="2xx"\} $saw{old}{'2xx'}$/m, 'migration_responses_total');



=== TEST 10: with start, replicas started seconds apart put every user on the same side at every moment
--- workers: 1
--- init
# The start is 4 s after this nginx starts (the file is written just before).
$main::start = int(Time::HiRes::time()) + 4;
my @t = gmtime($main::start);
my $at = sprintf '%04d-%02d-%02dT%02d:%02d:%02dZ', $t[5] + 1900, $t[4] + 1, $t[3], $t[2], $t[1], $t[0];
main::write_file(html_dir() . '/m.yaml', Test::MigrationNginx::_expand(main::ramp_yaml("steps: [10, 30, 60, 100]\nevery: 1s\nstart: $at\n")));
--- check_eval
is(main::api()->{ramp}{state}, 'scheduled', 'before its start, the ramp is scheduled');
is(main::sample(['someone'])->[0][2], '0', 'at 0 %');
# A second nginx of its own, started two seconds later, with the same file.
Time::HiRes::sleep(2);
my $prefix = servroot() . '/replica';
mkdir $prefix; mkdir "$prefix/logs"; mkdir "$prefix/conf";
my $port = free_port();
my $modules = CORE::join '', map { "load_module $_;\n" } grep { length } split /\s+/, ($ENV{TEST_NGINX_LOAD_MODULES} // "$ENV{PWD}/target/nginx/modules/ngx_http_migration_module.so");
main::write_file("$prefix/conf/nginx.conf", "daemon on;\nmaster_process on;\nworker_processes 1;\nerror_log logs/error.log info;\npid logs/nginx.pid;\n$modules"
    . ($> == 0 ? "user root;\n" : '')
    . "events {}\nhttp {\n    access_log off;\n    client_body_temp_path $prefix/t; proxy_temp_path $prefix/t; fastcgi_temp_path $prefix/t; uwsgi_temp_path $prefix/t; scgi_temp_path $prefix/t;\n"
    . "    migration_config " . html_dir() . "/m.yaml;\n    server { listen 127.0.0.1:$port; server_name api.example; location / { migration on; return 200 \"\$migration_target \$migration_percentage\"; } }\n}\n");
system(nginx_binary(), '-p', "$prefix/", '-c', 'conf/nginx.conf', '-e', 'logs/error.log');
is($?, 0, 'the replica starts two seconds later');
# The daemon writes its pid file after `system` returns: read too soon, the
# replica was never stopped and outlived the test run.
for (1 .. 100) { last if -s "$prefix/logs/nginx.pid"; Time::HiRes::sleep(0.05) }
if (open my $pidfile, '<', "$prefix/logs/nginx.pid") { my $pid = <$pidfile>; chomp $pid; push @main::stop_at_end, ['QUIT', $pid] }
my @users = map { "r-$_" } 1 .. 500;
for my $i (0 .. 3) {
    my $at = $main::start + $i + 0.5;
    Time::HiRes::sleep($at - Time::HiRes::time()) if $at > Time::HiRes::time();
    my $here = main::sample(\@users);
    my @there = map {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port) or die $!;
        print $s "GET / HTTP/1.1\r\nHost: api.example\r\nX-User-ID: $_\r\nConnection: close\r\n\r\n";
        local $/; my ($body) = (<$s> // '') =~ /\r\n\r\n(.*)\z/s; close $s; [split ' ', $body // '']
    } @users;
    my $differ = grep { $here->[$_][1] ne $there[$_][0] } 0 .. $#users;
    my %pct = map { ($_->[2] => 1) } @$here;
    is($differ, 0, "step " . ($i + 1) . ": 500 users, the same side on both replicas (" . CORE::join(',', sort keys %pct) . "%)");
}
main::stop_children();



=== TEST 11: Prometheus itself: promtool check metrics passes the exposition, and a real Prometheus server scraping the status endpoint gets from histogram_quantile the JSON's latency_p50_ms and latency_p99_ms
--- workers: 1
--- init
main::slow_backend(Test::MigrationNginx::_var('TEST_NGINX_RAND_PORT_3'), 0.03);
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    upstream slow_new { server 127.0.0.1:$TEST_NGINX_RAND_PORT_3; }
--- user_files eval
[[ 'm.yaml', do { my $y = main::ramp_yaml("steps: [20, 100]\nevery: 1h\n"); $y =~ s/new_backend: 127.0.0.1:\$TEST_NGINX_RAND_PORT_2/new_backend: slow_new/; $y } ]]
--- check_eval
for my $tool ('/usr/bin/promtool', '/usr/bin/prometheus') {
    -x $tool or die "$tool is missing: make deps installs Debian's prometheus\n";
}
my @users = map { "p-$_" } 1 .. 60;
main::sample(\@users);
http_request('GET', '/', [Host => 'api.example', 'X-Canary' => 'on']) for 1 .. 12;
my $text = http_request('GET', '/status?format=prometheus')->{body};
my $file = servroot() . '/metrics.txt';
main::write_file($file, $text);
my $check = `/usr/bin/promtool check metrics < '$file' 2>&1`;
is($?, 0, 'promtool check metrics: exit 0') or diag($check);
is($check, '', 'promtool check metrics: no complaint');
like($text, qr/^# TYPE migration_upstream_response_seconds histogram$/m, 'the latency family is a histogram');

# A Prometheus server of its own scrapes /status?format=prometheus every 200 ms.
my $nginx_port = Test::MigrationNginx::_var('TEST_NGINX_SERVER_PORT');
my $prom_port = free_port();
my $dir = servroot() . '/prometheus';
mkdir $dir;
main::write_file("$dir/prometheus.yml", <<"YML");
global: {scrape_interval: 200ms, evaluation_interval: 1s}
scrape_configs:
  - job_name: migration
    metrics_path: /status
    params: {format: [prometheus]}
    static_configs: [{targets: ['127.0.0.1:$nginx_port']}]
YML
my $pid = fork();
if ($pid == 0) {
    open STDOUT, '>', "$dir/log"; open STDERR, '>&', \*STDOUT;
    { exec '/usr/bin/prometheus', "--config.file=$dir/prometheus.yml", "--storage.tsdb.path=$dir/data",
        "--web.listen-address=127.0.0.1:$prom_port", '--log.level=warn' }
    POSIX::_exit(127);
}
push @main::stop_at_end, ['TERM', $pid];
my $query = sub {
    my ($promql) = @_;
    my $q = $promql =~ s/([^A-Za-z0-9_.~-])/sprintf '%%%02X', ord $1/ger;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $prom_port) or return undef;
    print $s "GET /api/v1/query?query=$q HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    local $/; my ($body) = (<$s> // '') =~ /\r\n\r\n(.*)\z/s;
    my $doc = eval { JSON::PP::decode_json($body // '') } or return undef;
    my $result = $doc->{data}{result} // [];
    return @$result ? $result->[0]{value}[1] : undef;
};
my $ok = main::wait_until(20, sub { defined $query->('migration_upstream_response_seconds_count{service="api",target="new"}') });
ok($ok, 'Prometheus scraped the status endpoint') or diag(do { local $/; open my $l, '<', "$dir/log"; <$l> });
my $api = main::api();
for my $target (qw(old new)) {
    for my $q ([0.5, 'latency_p50_ms'], [0.99, 'latency_p99_ms']) {
        my $got = $query->("histogram_quantile($q->[0], migration_upstream_response_seconds_bucket{service=\"api\",target=\"$target\"}) * 1000");
        ok(defined $got && defined $api->{ $q->[1] }{$target}
               && abs($got - $api->{ $q->[1] }{$target}) < 0.0006,
           "$target: histogram_quantile($q->[0]) = $q->[1] (" . ($got // 'none') . " ms, JSON " . ($api->{ $q->[1] }{$target} // 'null') . ")");
    }
}
cmp_ok($api->{latency_p50_ms}{new}, '>', 25, 'new is the slow side (30 ms per response)');
my $requests = $query->('sum(migration_requests_total{service="api"})');
is($requests, 72, 'Prometheus counts every request');
is($query->('migration_ramp_percentage{service="api"}'), 20, 'and reads the ramp');
# The dashboard queries of docs/status.md (rate() needs two scrapes in its window: a second's worth).
Time::HiRes::sleep(1);
for my $promql ('sum by (service) (rate(migration_requests_total{target="new"}[5m])) / sum by (service) (rate(migration_requests_total[5m]))',
                'sum by (service, target) (rate(migration_responses_total{class=~"5xx|failed"}[5m])) / sum by (service, target) (rate(migration_responses_total[5m]))',
                'histogram_quantile(0.99, sum by (service, target, le) (rate(migration_upstream_response_seconds_bucket[5m])))') {
    ok(defined $query->($promql), "the dashboard query of docs/status.md answers: $promql");
}
main::stop_children();



=== TEST 12: forced header traffic neither fails a healthy ramp nor rescues a failing one: the gate judges only the percentage split
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [10, 50]\nevery: 2500ms\ngate:\n  min_requests: 20\n  max_error_rate: 5%\n") ]]
--- check_eval
# 30 anonymous requests forced to a failing path of new, during a healthy step.
my $forced = main::sample([map { "attacker" } 1 .. 30], 'X-Canary' => 'on');
http_requests_keepalive([map { ['GET', '/bad', [Host => 'api.example', 'X-Canary' => 'on']] } 1 .. 30]);
main::sample([map { "u-$_" } 1 .. 500]);
ok(main::wait_until(5, sub { (main::api()->{ramp}{percentage} // 0) == 50 }), 'the healthy ramp advanced to 50 %');
my $s = main::api();
is($s->{ramp}{last_gate}{verdict}, 'pass', 'the gate passed');
my $split_new = $s->{rules}{user_hash};
cmp_ok($s->{ramp}{last_gate}{new_requests}, '<', 100, 'the gate judged the split\'s new responses only (about 10 % of 500)');
is($s->{ramp}{last_gate}{new_error_rate}, 0, 'none of the forced 503s is in the gate');
cmp_ok($s->{responses}{new}{'5xx'}, '>=', 30, 'responses still show every routed request, the forced 503s included');



=== TEST 13: a broken new cluster is not rescued by 1,000 forced successful requests: the ramp rolls back
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [10, 50]\nevery: 3s\ngate:\n  min_requests: 20\n  max_error_rate: 5%\n") ]]
--- check_eval
main::touch('new-down', 1);
main::sample([map { "u-$_" } 1 .. 500]);
http_requests_keepalive([map { ['GET', '/ok', [Host => 'api.example', 'X-Canary' => 'on']] } 1 .. 1000]);
ok(main::wait_until(5, sub { (main::api()->{ramp}{state} // '') eq 'rolled_back' }), 'rolled back');
my $s = main::api();
is($s->{ramp}{last_gate}{new_error_rate}, 1, 'the gate saw new failing every split request');
cmp_ok($s->{responses}{new}{'2xx'}, '>=', 1000, 'the forced successes are in responses, not in the gate');



=== TEST 14: clients that hang up while new is slow are aborted, not failed: no error, no latency sample, no rollback
--- init
main::slow_backend(Test::MigrationNginx::_var('TEST_NGINX_RAND_PORT_3'), 0.3);
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    upstream slow_new { server 127.0.0.1:$TEST_NGINX_RAND_PORT_3; }
--- user_files eval
[[ 'm.yaml', do { my $y = main::ramp_yaml("steps: [50, 100]\nevery: 2s\ngate:\n  min_requests: 3\n  max_error_rate: 5%\n  max_p99: 1s\n"); $y =~ s/new_backend: 127.0.0.1:\$TEST_NGINX_RAND_PORT_2/new_backend: slow_new/; $y } ]]
--- check_eval
my @cohort = grep { main::expected_side($_, 50) eq 'new' } map { "u-$_" } 1 .. 200;
my $port = server_port();
for my $user (@cohort[0 .. 24]) {
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port) or die $!;
    print $c "GET / HTTP/1.1\r\nHost: api.example\r\nX-User-ID: $user\r\n\r\n";
    Time::HiRes::sleep(0.05);
    close $c;
}
ok(main::wait_until(3, sub { (main::api()->{responses}{new}{aborted} // 0) == 25 }), '25 abandoned requests counted as aborted');
my $s = main::api();
is($s->{responses}{new}{failed}, 0, 'none counted as failed');
is($s->{latency_p99_ms}{new}, undef, 'and none as a latency sample');
isnt($s->{ramp}{state}, 'rolled_back', 'the ramp did not roll back');
main::sample([@cohort[25 .. 28]]);
ok(main::wait_until(4, sub { (main::api()->{ramp}{percentage} // 0) == 100 }), 'with real responses of new, it advances');
like(error_log_text(), qr/ 499 |client prematurely closed|client closed/, 'nginx saw the clients leave') or diag(error_log_text());
main::stop_children();



=== TEST 15: a rollback stays over a comment-only edit and an edit of another service; a change of its migration starts the ramp again
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=200ms;
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [10, 50]\nevery: 1500ms\ngate:\n  min_requests: 20\n  max_error_rate: 5%\n") ]]
--- check_eval
my $m = html_dir() . '/m.yaml';
my $yaml = Test::MigrationNginx::_expand(main::ramp_yaml("steps: [10, 50]\nevery: 1500ms\ngate:\n  min_requests: 20\n  max_error_rate: 5%\n"));
main::touch('new-down', 1);
main::sample([map { "u-$_" } 1 .. 500]);
ok(main::wait_until(4, sub { (main::api()->{ramp}{state} // '') eq 'rolled_back' }), 'rolled back');
main::touch('new-down', 0);
my $generation = main::status()->{generation};
main::write_file($m, "# a comment only\n$yaml");
ok(main::wait_until(3, sub { main::status()->{generation} > $generation }), 'the commented file was published');
is(main::api()->{ramp}{state}, 'rolled_back', 'a comment-only edit keeps the rollback');
$generation = main::status()->{generation};
main::write_file($m, "$yaml  - name: other\n    old_host: other.example\n    old_backend: 127.0.0.1:1\n    new_host: other.example\n    new_backend: 127.0.0.1:1\n");
ok(main::wait_until(3, sub { main::status()->{generation} > $generation }), 'another service added');
is(main::api()->{ramp}{state}, 'rolled_back', 'an edit of another service keeps the rollback');
my $salted = $yaml =~ s/strategy: user/strategy: user\n      hash_salt: "s2"/r;
main::write_file($m, $salted);
ok(main::wait_until(3, sub { (main::api()->{ramp}{state} // '') eq 'ramping' }), 'a change of its migration block starts it again');
is_deeply([@{ main::api()->{ramp} }{qw(step percentage)}], [1, 10], 'on its first step');
like(error_log_text(), qr/ramp rolled back on step 1 of 2: 0% in force until the service's migration or backends change/, 'a kept rollback is logged at publication');



=== TEST 16: workers of the old configuration never move the new ramp: a fast ramp reloaded into [1, 2] every 30d stays on 1 %, three times
--- master_on
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [" . CORE::join(', ', 1 .. 99) . "]\nevery: 100ms\n") ]]
--- check_eval
my $m = html_dir() . '/m.yaml';
my $fast = Test::MigrationNginx::_expand(main::ramp_yaml("steps: [" . CORE::join(', ', 1 .. 99) . "]\nevery: 100ms\n"));
my $slow = Test::MigrationNginx::_expand(main::ramp_yaml("steps: [1, 2]\nevery: 30d\n"));
for my $round (1 .. 3) {
    main::write_file($m, $fast);
    ok(reload_nginx(), "round $round: reload into the fast ramp");
    ok(main::wait_until(3, sub { (main::api()->{ramp}{steps} // 0) == 99 && main::api()->{ramp}{step} > 2 }), "round $round: the fast ramp moves");
    main::write_file($m, $slow);
    ok(reload_nginx(), "round $round: reload into [1, 2] every 30d");
    ok(main::wait_until(3, sub { (main::api()->{ramp}{steps} // 0) == 2 }), "round $round: the new ramp is published");
    Time::HiRes::sleep(1);
    my $r = main::api()->{ramp};
    is_deeply([@$r{qw(state step percentage)}], ['ramping', 1, 1], "round $round: still on its first step, 1 %");
}
my $r = main::sample([map { "u-$_" } 1 .. 200]);
is(scalar(grep { $_->[2] ne '1' } @$r), 0, 'every request decided at 1 %');



=== TEST 17: enabled: false freezes the ramp and its clock; 0 % is in force meanwhile, and the step resumes with the time it had left
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=200ms;
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [10, 50]\nevery: 4s\n") ]]
--- check_eval
my $m = html_dir() . '/m.yaml';
my $on = Test::MigrationNginx::_expand(main::ramp_yaml("steps: [10, 50]\nevery: 4s\n"));
my $off = $on =~ s/strategy: user/strategy: user\n      enabled: false/r;
Time::HiRes::sleep(0.3);
main::write_file($m, $off);
ok(main::wait_until(2, sub { !main::api()->{enabled} }), 'disabled');
Time::HiRes::sleep(4);
my $s = main::api();
is_deeply([@{ $s->{ramp} }{qw(state step percentage frozen)}], ['ramping', 1, 0, JSON::PP::true], 'frozen on step 1 with 0 % in force');
is($s->{percentage}, 0, 'the service\'s percentage in force is 0');
is($s->{ramp}{next_step_at}, undef, 'nothing is due while frozen');
my $prom = http_request('GET', '/status?format=prometheus')->{body};
like($prom, qr/^migration_ramp_percentage\{service="api"\} 0$/m, 'Prometheus: 0 % in force');
my $r = main::sample([map { "u-$_" } 1 .. 100]);
is(scalar(grep { $_->[1] eq 'new' || $_->[2] ne '0' } @$r), 0, 'every request to old, at 0 %');
main::write_file($m, $on);
ok(main::wait_until(2, sub { main::api()->{enabled} }), 'enabled again');
Time::HiRes::sleep(1.2);
is(main::api()->{ramp}{percentage}, 10, 'the step goes on: the frozen time did not count toward every');
ok(main::wait_until(5, sub { (main::api()->{ramp}{percentage} // 0) == 50 }), 'and ends when its time is up');



=== TEST 18: a step's window takes only the requests decided under it: slow failures decided under step 1 that end in step 2 neither fail step 2's gate nor count for it
--- timeout: 40
--- init
main::slow_backend(Test::MigrationNginx::_var('TEST_NGINX_RAND_PORT_3'), 4.5, '503 Service Unavailable');
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [50, 60, 100]\nevery: 4s\ngate:\n  min_requests: 3\n  max_error_rate: 50%\non_failure: rollback\n") ]]
--- check_eval
my @cohort = grep { main::expected_side($_, 50) eq 'new' } map { "u-$_" } 1 .. 100;
my $fast = main::sample([@cohort[0 .. 3]]);
is(scalar(grep { $_->[1] eq 'new' && $_->[4] == 200 } @$fast), 4, 'step 1: four successes of new');
my $port = server_port();
my @slow = map {
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port) or die $!;
    print $c "GET /slow HTTP/1.1\r\nHost: api.example\r\nX-User-ID: $_\r\nConnection: close\r\n\r\n";
    $c;
} @cohort[4 .. 7];
is(main::api()->{ramp}{step}, 1, 'four slow requests decided under step 1');
my @status = map { my $c = $_; local $/; my $text = <$c> // ''; close $c; $text =~ m{^HTTP/1\.1 (\d+)} ? $1 : 0 } @slow;
is("@status", '503 503 503 503', 'each failed, 4.5 s later');
my $s = main::api();
is_deeply([@{ $s->{ramp} }{qw(state step)}], ['ramping', 2], 'they ended under step 2');
is($s->{responses}{new}{'5xx'}, 4, 'the responses per target count them');
ok(main::wait_until(6, sub { (main::api()->{ramp}{last_gate}{verdict} // '') ne 'pass' }), 'step 2 judged at its end');
$s = main::api();
is_deeply([@{ $s->{ramp} }{qw(state step)}, @{ $s->{ramp}{last_gate} }{qw(verdict new_requests)}], ['ramping', 2, 'waiting', 0],
    'step 2 had no response of its own: it waits, not rolled back');
main::sample([grep { main::expected_side($_, 60) eq 'new' } map { "v-$_" } 1 .. 20]);
ok(main::wait_until(3, sub { (main::api()->{ramp}{percentage} // 0) == 100 }), 'with responses decided under step 2, it advances');
main::stop_children();



=== TEST 19: a server-sent event stream gives no latency sample (its upstream time is how long it stayed open), without drain; a plain response as slow does
--- init
main::slow_backend(Test::MigrationNginx::_var('TEST_NGINX_RAND_PORT_3'), 0.6);
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [100]\nevery: 1h\n") ]]
--- check_eval
my $r = http_requests_keepalive([map { ['GET', $_, [Host => 'api.example', 'X-User-ID' => 'u-1']] } '/slow/stream', '/slow']);
is_deeply([map { $_->{status} } @$r], [200, 200], 'both answered by new');
like($r->[0]{headers}{'content-type'}, qr{^text/event-stream}, 'the first as an event stream');
my $s = main::api();
is($s->{responses}{new}{'2xx'}, 2, 'both count in their class');
cmp_ok($s->{latency_p99_ms}{new}, '>=', 500, 'the plain one is a latency sample');
my $metrics = http_request('GET', '/status?format=prometheus')->{body};
like($metrics, qr/^migration_upstream_response_seconds_count\{service="api",target="new"\} 1$/m, 'one latency sample: the plain response');
main::stop_children();




=== TEST 20: responses nginx makes without asking a cluster are no evidence: a flood into limit_req (its 503s) does not fail a healthy step
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    limit_req_zone $server_name zone=flood:1m rate=1r/m;
--- config
    location / {
        migration on;
        # Read in the rewrite phase: decided (and counted) before limit_req refuses.
        set $side $migration_target;
        limit_req zone=flood nodelay;
        limit_req_status 503;
        add_header X-Decision "$migration_target $migration_percentage $migration_rule" always;
        proxy_pass http://$migration_backend;
    }
    location /healthy {
        migration on;
        add_header X-Decision "$migration_target $migration_percentage $migration_rule" always;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [10, 50]\nevery: 2500ms\ngate:\n  min_requests: 20\n  max_error_rate: 5%\n") ]]
--- check_eval
my $flood = http_requests_keepalive([map { ['GET', '/', [Host => 'api.example', 'X-User-ID' => "flood-$_"]] } 1 .. 500]);
cmp_ok(scalar(grep { $_->{status} == 503 } @$flood), '>=', 498, 'limit_req refused the flood with 503s');
http_requests_keepalive([map { ['GET', '/healthy', [Host => 'api.example', 'X-User-ID' => "u-$_"]] } 1 .. 500]);
ok(main::wait_until(5, sub { (main::api()->{ramp}{percentage} // 0) == 50 }), 'the healthy ramp advanced to 50 %');
my $s = main::api();
is($s->{ramp}{last_gate}{verdict}, 'pass', 'the gate passed');
is($s->{ramp}{last_gate}{new_error_rate}, 0, 'none of the 503s limit_req made is in the gate');
cmp_ok($s->{responses}{new}{'5xx'}, '>=', 20, 'responses still show them, as the client got them');



=== TEST 21: nor do they rescue a failing step: new broken, answers nginx gives itself (`return`) for the split's requests are not new's successes
--- config
    location / {
        migration on;
        add_header X-Decision "$migration_target $migration_percentage $migration_rule" always;
        proxy_pass http://$migration_backend;
    }
    location /hello { migration on; return 200 "$migration_target\n"; }
    location = /status { migration_status; }
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [10, 50]\nevery: 3s\ngate:\n  min_requests: 20\n  max_error_rate: 5%\n") ]]
--- check_eval
main::touch('new-down', 1);
main::sample([map { "u-$_" } 1 .. 500]);
my $hello = http_requests_keepalive([map { ['GET', '/hello', [Host => 'api.example', 'X-User-ID' => "h-$_"]] } 1 .. 3000]);
cmp_ok(scalar(grep { $_->{body} eq "new\n" } @$hello), '>=', 200, 'hundreds of split decisions for new answered 200 by nginx itself');
ok(main::wait_until(6, sub { (main::api()->{ramp}{state} // '') eq 'rolled_back' }), 'rolled back');
is(main::api()->{ramp}{last_gate}{new_error_rate}, 1, 'the gate saw new failing every split request it was asked');



=== TEST 22: with the error_page recipe, limit_req's 503s (decided before limit_req) go to @old: old's 200s are not new's successes, and a flood does not rescue a failing step
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    limit_req_zone $server_name zone=flood:1m rate=1r/m;
--- config
    location / {
        migration on;
        # Read in the rewrite phase: decided (and counted) before limit_req refuses.
        set $side $migration_target;
        limit_req zone=flood nodelay;
        proxy_intercept_errors on;
        error_page 502 503 504 = @old;
        proxy_pass http://$migration_backend;
    }
    location /api {
        migration on;
        proxy_intercept_errors on;
        error_page 502 503 504 = @old;
        proxy_pass http://$migration_backend;
    }
    # With `migration on` here too (as at server level): a location reached
    # through error_page is not where the request was routed.
    location @old { migration on; proxy_pass http://$migration_old_backend; }
    location = /status { migration_status; }
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [50, 100]\nevery: 4s\ngate:\n  min_requests: 20\n  max_error_rate: 10%\n") =~ s/strategy: user/strategy: weight/r ]]
--- timeout: 60
--- check_eval
main::touch('new-down', 1);
# Real traffic: new fails every request it gets.
http_requests_keepalive([map { ['GET', '/api', [Host => 'api.example']] } 1 .. 100]);
# An anonymous flood into limit_req: every request refused, each answered 200 by old through error_page.
my $flood = http_requests_keepalive([map { ['GET', '/', [Host => 'api.example']] } 1 .. 2000]);
cmp_ok(scalar(grep { $_->{status} == 200 && $_->{body} eq 'old' } @$flood), '>=', 1990, 'old answered the refused flood');
ok(main::wait_until(8, sub { my $r = main::api()->{ramp}; ($r->{state} // '') eq 'rolled_back' || ($r->{percentage} // 0) == 100 }), 'the step ended');
my $s = main::api();
is($s->{ramp}{state}, 'rolled_back', 'new failed every request it was asked: rolled back');
is($s->{ramp}{last_gate}{new_error_rate}, 1, 'the gate saw only the requests new was asked');



=== TEST 23: with proxy_next_upstream (nginx's default: error, timeout) across new's servers, a latency sample is the time the client waited, every attempt of the group, not the last attempt's
--- init
main::slow_backend(Test::MigrationNginx::_var('TEST_NGINX_RAND_PORT_3'), 30);
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    # One of new's two servers hangs: it accepts and never answers in time.
    upstream new_up {
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3 max_fails=0;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 max_fails=0;
    }
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.example
    new_backend: new_up
    migration: {percentage: 100}
--- workers: 1
--- config
    location / {
        migration on;
        proxy_read_timeout 1s;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
--- check_eval
my $slow = 0;
for (1 .. 4) {
    my $t0 = Time::HiRes::time();
    my $r = http_request('GET', '/', [Host => 'api.example']);
    is("$r->{status} $r->{body}", '200 new', 'answered by the server that works');
    $slow++ if Time::HiRes::time() - $t0 > 0.9;
}
is($slow, 2, 'half the clients waited out the hanging server first');
my $s = main::api();
is($s->{responses}{new}{'2xx'}, 4, 'four 2xx of new');
cmp_ok($s->{latency_p99_ms}{new}, '>=', 900, "new's p99 shows the second those clients waited");
main::stop_children();



=== TEST 24: a response new breaks off in the middle of its body (a 200 cut short when new stalls past proxy_read_timeout) is an error to the gate: the step rolls back
--- http_config eval
"    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n" . main::stalling_new('$TEST_NGINX_RAND_PORT_3')
--- config
    location / {
        migration on;
        proxy_read_timeout 300ms;
        add_header X-Decision "$migration_target $migration_percentage $migration_rule" always;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
--- user_files eval
[[ 'm.yaml', main::ramp_yaml("steps: [50, 100]\nevery: 2s\ngate:\n  min_requests: 3\n  max_error_rate: 5%\n") =~ s/RAND_PORT_2/RAND_PORT_3/r ]]
--- check_eval
my $answers = http_requests_keepalive([map { ["GET", "/", [Host => "api.example", "X-User-ID" => "u-$_"]] } 1 .. 16], incomplete_ok => 1);
my @new = grep { ($_->{headers}{"x-decision"} // "") =~ /^new / } @$answers;
cmp_ok(scalar(grep { $_->{status} == 200 && $_->{error} } @new), '>=', 3, "new answered its share with a 200 status line, and broke off");
ok(main::wait_until(8, sub { (main::api()->{ramp}{state} // '') eq 'rolled_back' }), 'rolled back');
is(main::api()->{ramp}{last_gate}{new_error_rate}, 1, 'every broken response was an error of new');
