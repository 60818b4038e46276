# Faults injected with the test-hooks build of the module
# (modules/ngx_http_migration_module_test_hooks.so, src/test_hooks.rs): races and
# failures that a test cannot otherwise bring about on demand. Each block names
# its hooks in MIGRATION_TEST_HOOKS (read by the master when it starts).
use lib 't/lib';
use File::Basename ();
use Cwd ();
BEGIN {
    my $repo = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/..');
    my $hooks = $ENV{TEST_NGINX_TEST_HOOKS_MODULE} // "$repo/target/nginx/modules/ngx_http_migration_module_test_hooks.so";
    $ENV{TEST_NGINX_LOAD_MODULES} = $hooks if -f $hooks;
    $main::no_hooks = !-f $hooks;
}
use Test::MigrationNginx;
use Test::MigrationHelpers qw(write_file);
use JSON::PP ();
use Time::HiRes ();
use IO::Socket::INET ();

plan skip_all => 'no test-hooks build of the module for this nginx (make build makes one for target/nginx)' if $main::no_hooks;

sub yaml_for {
    my (%o) = @_;
    return "version: \"$o{version}\"\nservices:\n  - name: api\n    old_host: api.example\n    old_backend: old:80\n"
         . "    new_host: api.example\n    new_backend: new:80\n    migration: {percentage: $o{percentage}}\n";
}

# Every "changed; published generation N (version V" of the log, in order.
sub published_versions { [ error_log_text() =~ /changed; published generation \d+ \(version (\w+)/g ] }

add_block_preprocessor(sub {
    my $block = shift;
    my $hooks = $block->{hooks} ? $block->{hooks}[0] : '';
    $hooks =~ s/^\s+|\s+$//g;
    # The hooks reach nginx through the master's environment.
    $block->{init} //= [sub { $ENV{MIGRATION_TEST_HOOKS} = $hooks }];
});

run_tests();

__DATA__

=== TEST 1: a worker that read the file before another published a newer change never commits its older read
--- workers: 2
--- listen_options: reuseport
--- hooks: watch_delay_once=1500
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=100ms;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location / { migration on; return 200 "$migration_target $migration_config_version\n"; }
    location = /status { migration_status; }
--- timeout: 15
--- check_eval
main::write_file(html_dir() . '/m.yaml', main::yaml_for(percentage => 50, version => 'v2'));
# One worker now sleeps 1.5 s on its read of v2; the other publishes v2, then v3.
Time::HiRes::sleep(0.4);
main::write_file(html_dir() . '/m.yaml', main::yaml_for(percentage => 100, version => 'v3'));
Time::HiRes::sleep(2.5);
my @versions = @{ main::published_versions() };
is($versions[-1], 'v3', 'v3, the file as it is, is the last publication');
my $after_v3 = join ' ', @versions[ (grep { $versions[$_] eq 'v3' } 0 .. $#versions)[0] .. $#versions ];
unlike($after_v3, qr/v2/, 'the delayed read of v2 was never committed after v3') or diag("publications: @versions");
ok(-e html_dir() . '/m.yaml.hook-claimed', 'one worker did sleep on its read');
my $status = JSON::PP::decode_json(http_request('GET', '/status')->{body});
is($status->{version}, 'v3', 'status shows v3');



=== TEST 2: a location configuration that cannot be allocated fails nginx -t cleanly, never a crash
--- hooks: fail_loc_conf_alloc=3
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location / { migration on; return 200 "$migration_target\n"; }
--- must_die
--- error_log
test failed
--- no_error_log
exited on signal
Segmentation fault



=== TEST 3: a panic while nginx.conf is read refuses the configuration with [emerg]; nginx never aborts
--- hooks: panic=migration_config
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location / { migration on; return 200 "$migration_target\n"; }
--- must_die
--- error_log eval
qr/\[emerg\] .*migration: internal error in migration_config \(a panic at src\/test_hooks\.rs:\d+: test hook: a panic in migration_config\)/
--- no_error_log
exited on signal
Aborted



=== TEST 4: a panic in the zone's init or in init_module refuses the cycle with [emerg]
--- hooks: panic=the zone's init
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location / { migration on; return 200 "$migration_target\n"; }
--- must_die
--- error_log eval
qr/\[emerg\] .*migration: internal error in the zone's init \(a panic at /



=== TEST 5: a panic in init_module refuses the cycle with [emerg]
--- hooks: panic=init_module
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location / { migration on; return 200 "$migration_target\n"; }
--- must_die
--- error_log eval
qr/\[emerg\] .*migration: internal error in init_module \(a panic at /



=== TEST 6: a panic in a worker's init_process is logged at [alert]; the worker serves on
--- hooks: panic=init_process
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location / { migration on; return 200 "rule $migration_rule\n"; }
--- more_headers
Host: api.example
--- response_body
rule none
--- expect_alerts eval
qr/\[alert\] .*migration: internal error in init_process \(a panic at /



=== TEST 7: a panic in a variable's getter: the variable is empty for that request, with an [alert]; the next ones are served
--- hooks: panic=a $migration_* variable
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location = /var { return 200 "[$migration_target]\n"; }
    location = /plain { return 200 "plain\n"; }
--- request
GET /var
--- more_headers
Host: api.example
--- response_body
[]
--- expect_alerts eval
qr/\[alert\] .*migration: internal error in a \$migration_\* variable \(a panic at [^)]*\); this request fails/
--- check_eval
is(http_request('GET', '/plain')->{body}, "plain\n", 'the worker serves the next request');



=== TEST 8: a panic in the access phase: a 500 for that request
--- hooks: panic=the access phase
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location / { migration on; proxy_pass http://127.0.0.1:1; }
--- more_headers
Host: api.example
--- error_code: 500
--- expect_alerts eval
qr/\[alert\] .*migration: internal error in the access phase \(a panic at /



=== TEST 9: a panic in the status handler: a 500 for that request
--- hooks: panic=the status handler
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location = /status { migration_status; }
--- request
GET /status
--- error_code: 500
--- expect_alerts eval
qr/\[alert\] .*migration: internal error in the status handler \(a panic at /



=== TEST 10: a panic in the log phase is logged; the response already went out whole
--- hooks: panic=the log phase
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location / { migration on; return 200 "$migration_target\n"; }
--- more_headers
Host: api.example
--- response_body
old
--- expect_alerts eval
qr/\[alert\] .*migration: internal error in the log phase \(a panic at /



=== TEST 11: a panic while a watch= change is compiled (the publication thread) refuses the change; the last good configuration stays
--- workers: 2
--- hooks: panic=publication
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=100ms;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location / { migration on; return 200 "$migration_target $migration_config_version\n"; }
--- error_log eval
qr/\[error\] .*migration: internal error \(a panic: test hook: a panic in publication\); the change is not published, generation 1 \(version v1\) stays/
--- check_eval
main::write_file(html_dir() . '/m.yaml', main::yaml_for(percentage => 100, version => 'v2'));
Time::HiRes::sleep(1);
is(http_request('GET', '/', [Host => 'api.example'])->{body}, "old v1\n", 'v1 still routes');



=== TEST 12: a panic in the watch= timer on the event loop is logged; the worker serves on and the timer keeps running
--- hooks: panic=watch=
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=100ms;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location / { migration on; return 200 "$migration_target $migration_config_version\n"; }
--- more_headers
Host: api.example
--- response_body
old v1
--- check_eval
Time::HiRes::sleep(0.5);
my @ticks = error_log_text() =~ /\[error\] [^\n]*migration: internal error in watch= \(a panic at [^)]*\); the change is not published, the last good configuration stays/g;
cmp_ok(scalar @ticks, '>=', 2, 'each tick is caught and logged, and the timer runs on');
is(http_request('GET', '/', [Host => 'api.example'])->{body}, "old v1\n", 'requests are served');



=== TEST 13: a reload's read of the file never overwrites a newer watch= read of the same file made while the master was between reading and committing
--- workers: 1
--- master_on
--- hooks: reload_commit_delay=1500
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=100ms;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location / { migration on; return 200 "$migration_target $migration_config_version\n"; }
    location = /status { migration_status; }
--- timeout: 15
--- check_eval
my $file = html_dir() . '/m.yaml';
# The master reads v1 at once, then waits 1.5 s before committing it; the old
# worker's watch= publishes v2 meanwhile.
ok(signal_nginx('HUP'), 'reload');
Time::HiRes::sleep(0.5);
main::write_file($file, main::yaml_for(percentage => 100, version => 'v2'));
my $deadline = Time::HiRes::time() + 10;
Time::HiRes::sleep(0.05) until error_log_text() =~ /that newer read stays/ || Time::HiRes::time() > $deadline;
like(error_log_text(), qr/m\.yaml was published as generation 2 by watch= after this reload read it; that newer read stays/,
     'the master keeps the newer read');
# Once the new worker serves, v2 routes, and nobody had to publish v2 again.
my $body = '';
$deadline = Time::HiRes::time() + 5;
Time::HiRes::sleep(0.05) until ($body = http_request('GET', '/', [Host => 'api.example'])->{body} // '') eq "new v2\n" || Time::HiRes::time() > $deadline;
is($body, "new v2\n", 'routes by v2');
Time::HiRes::sleep(0.5);
is_deeply(main::published_versions(), ['v2'], 'v2 was published once: the reload did not put v1 back in between');



=== TEST 14: a worker killed while it holds the zone's lock during a reload never hangs the master: the master releases a dead holder's lock and the reload completes
--- workers: 2
--- master_on
--- hooks: hold_zone_lock=30000
--- expect_alerts
worker process \d+ exited on signal 9
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location / { migration on; return 200 "$migration_target $migration_config_version\n"; }
    location = /status { migration_status; }
--- request
GET /
--- more_headers
Host: api.example
--- response_body
old v1
--- timeout: 30
--- check_eval
my $file = html_dir() . '/m.yaml';
# A worker takes the lock (the status hook) and blocks there, holding it.
my $holder_conn = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port()) or die $!;
print $holder_conn "GET /status HTTP/1.1\r\nHost: x\r\n\r\n";
my $deadline = Time::HiRes::time() + 5;
my $holder;
until (($holder) = error_log_text() =~ /test hook: process (\d+) holds the zone's lock/) {
    last if Time::HiRes::time() > $deadline;
    Time::HiRes::sleep(0.05);
}
ok($holder, "a worker ($holder) holds the zone's lock");
# The master starts a reload and waits for the lock; the holder is killed then.
main::write_file($file, main::yaml_for(percentage => 100, version => 'v2'));
ok(signal_nginx('HUP'), 'reload');
Time::HiRes::sleep(0.7);
ok(kill('KILL', $holder), 'the holder is killed while the master waits');
$deadline = Time::HiRes::time() + 10;
Time::HiRes::sleep(0.05) until error_log_text() =~ /published .* as generation 2/ || Time::HiRes::time() > $deadline;
like(error_log_text(), qr/\[warn\] .*migration: process $holder died holding the zone's lock; the master released it/,
     'the master released the dead holder\'s lock');
like(error_log_text(), qr/published .*m\.yaml as generation 2 \(version v2\)/, 'the reload completed');
my $body = '';
$deadline = Time::HiRes::time() + 5;
Time::HiRes::sleep(0.05) until ($body = http_request('GET', '/', [Host => 'api.example'])->{body} // '') eq "new v2\n" || Time::HiRes::time() > $deadline;
is($body, "new v2\n", 'the new workers route by v2');
close $holder_conn;
