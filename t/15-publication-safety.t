# What may publish a configuration, and what may not (docs/module.md,
# migration_config): `watch=` refuses whatever `nginx -t` would refuse; workers of an
# older cycle never publish their (old) file after a reload; the cache manager
# and loader never watch; and a bad YAML on disk never blocks `nginx -s quit`,
# `stop` or `reopen`.
use lib 't/lib';
use Test::MigrationNginx;
use Test::MigrationHelpers qw(write_file status nginx_run);
use JSON::PP ();
use Time::HiRes ();
use IO::Socket::INET ();

sub yaml_for {
    my (%o) = @_;
    my $name = $o{name} // 'api';
    return "version: \"$o{version}\"\nservices:\n  - name: $name\n    old_host: api.example\n    old_backend: old:80\n"
         . "    new_host: api.example\n    new_backend: new:80\n    migration: {percentage: $o{percentage}}\n";
}

# Seventeen services whose names (and hosts) are new in every round.
sub renamed {
    my ($round, $migration) = @_;
    $migration //= 'percentage: 0';
    my $y = "version: \"r$round\"\nservices:\n";
    for my $i (0 .. 16) {
        my $name = "s$i-r$round";
        $y .= "  - name: $name\n    old_host: $name.example\n    old_backend: old:80\n    new_host: $name.example\n"
            . "    new_backend: new:80\n    migration: {$migration}\n";
    }
    return $y;
}

# One service, version $version, and a comment of $kb KiB: a file whose copies
# fill a small zone.
sub padded {
    my ($version, $kb) = @_;
    return "# " . ('x' x ($kb * 1024)) . "\n" . yaml_for(version => $version, percentage => 0);
}

# Publishes renamed(1 .. $rounds) by watch=, a round at a time: each must be
# the status's version within 3 s. Whether all were.
sub publish_rounds {
    my ($rounds) = @_;
    for my $round (1 .. $rounds) {
        write_file(html_dir() . '/m.yaml', renamed($round));
        my $deadline = Time::HiRes::time() + 3;
        my $version = '';
        while (Time::HiRes::time() < $deadline) {
            # A worker killed mid-answer (TEST 7) is an empty answer, not a death.
            $version = eval { status()->{version} } // '';
            last if $version eq "r$round";
            Time::HiRes::sleep(0.02);
        }
        is($version, "r$round", "round $round published") or return 0;
    }
    return 1;
}

# The parent of process $pid (0 when it is gone), from /proc: no procps needed.
sub parent_of {
    open my $st, '<', "/proc/$_[0]/stat" or return 0;
    my $line = <$st> // return 0;
    return (split ' ', ($line =~ s/^.*\) //sr))[1] // 0;
}

# nginx's worker: a child of the master $master.
sub worker_of {
    my ($master) = @_;
    return (grep { parent_of($_) == $master } map { m{/proc/(\d+)$} ? $1 : () } glob '/proc/[0-9]*')[0];
}

# { "answer" => count } over $n requests on new connections.
sub answers {
    my ($n, $path) = @_;
    my %seen;
    for (1 .. $n) {
        my $body = http_request('GET', $path // '/', [Host => 'api.example'])->{body} // 'none';
        chomp $body;
        $seen{$body}++;
    }
    return \%seen;
}

# Rewrites nginx.conf: $from replaced by $to (the harness wrote it; a reload reads it again).
sub edit_conf {
    my ($from, $to) = @_;
    my $file = servroot() . '/conf/nginx.conf';
    open my $in, '<', $file or die $!;
    my $conf = do { local $/; <$in> };
    close $in;
    $conf =~ s/\Q$from\E/$to/ or die "edit_conf: '$from' not in nginx.conf\n";
    write_file($file, $conf);
}

# Runs the nginx binary with the block's prefix and configuration and extra
# arguments; returns (exit code, stderr+stdout). -e as the harness gives it: what
# nginx says while reading its configuration goes to the block's error.log whatever
# error log the binary was built with (Debian's, the official image's).
run_tests();

__DATA__

=== TEST 1: watch= refuses a file that drops a service nginx.conf pins with migration_service, with nginx -t's message
--- workers: 2
--- listen_options: reuseport
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=200ms;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location /named { migration on; migration_service api; return 200 "$migration_service $migration_rule $migration_target $migration_config_version\n"; }
    location / { migration on; return 200 "$migration_service $migration_rule $migration_target $migration_config_version\n"; }
    location = /status { migration_status; }
--- error_log eval
qr/\[error\] .*migration_service: no service named "api"/
--- expect_alerts eval
qr/\[emerg\] .*migration_service: no service named "api" in \S+ in \S+nginx\.conf/
--- check_eval
is_deeply(main::answers(10, '/named'), { 'api weight old v1' => 10 }, 'the pinned service routes');
main::write_file(html_dir() . '/m.yaml', main::yaml_for(name => 'api-renamed', percentage => 100, version => 'v2'));
Time::HiRes::sleep(1.2);
is(main::status()->{generation}, 1, 'the change is not published');
is_deeply(main::answers(10, '/named'), { 'api weight old v1' => 10 }, 'the pinned location still routes by v1 on both workers');
my @refused = error_log_text() =~ /\[error\] [^\n]*migration: [^\n]*(migration_service: no service named "api" in \S+\/m\.yaml \(migration_service in \S+\/nginx\.conf:\d+\)); the change is not published, generation 1 \(version v1\) stays/g;
is(scalar @refused, 1, 'refused once, for all workers, naming the service and where nginx.conf pins it');
my ($code, $out) = main::nginx_run('-t');
isnt($code, 0, 'nginx -t refuses the same file');
like($out, qr/migration_service: no service named "api" in \S+\/m\.yaml in \S+nginx\.conf:\d+/, 'with the same message');



=== TEST 2: after a reload to a file without watch=, the old workers never republish their own file
--- workers: 2
--- listen_options: reuseport
--- master_on
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/a.yaml watch=100ms;
--- user_files eval
[[ 'a.yaml', main::yaml_for(percentage => 0, version => 'a') ], [ 'b.yaml', main::yaml_for(percentage => 100, version => 'b') ]]
--- config
    location / { migration on; return 200 "$migration_target $migration_config_version\n"; }
    location = /status { migration_status; }
--- check_eval
is_deeply(main::answers(10), { 'old a' => 10 }, 'routes by a.yaml');
for my $round (1 .. 2) {
    main::edit_conf('a.yaml watch=100ms', 'b.yaml');
    ok(reload_nginx(), "round $round: reload to b.yaml, no watch=");
    Time::HiRes::sleep(0.5);
    main::status() for 1 .. 4;
    is(main::status()->{version}, 'b', "round $round: status shows b");
    is_deeply(main::answers(20), { 'new b' => 20 }, "round $round: every request is routed by b.yaml");
    main::edit_conf('b.yaml', 'a.yaml watch=100ms');
    ok(reload_nginx(), "round $round: reload back to a.yaml with watch=");
    Time::HiRes::sleep(0.3);
    is_deeply(main::answers(10), { 'old a' => 10 }, "round $round: routed by a.yaml again");
}
unlike(error_log_text(), qr/changed; published generation/, 'no worker published its file with watch=: every generation came from a reload');



=== TEST 3: the cache manager and loader never watch the file: only a worker publishes
--- workers: 1
--- master_on
--- http_config
    proxy_cache_path $TEST_NGINX_SERVROOT/cache keys_zone=c:1m;
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=100ms;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location / { migration on; return 200 "$pid $migration_target $migration_config_version\n"; }
--- check_eval
my ($worker) = split ' ', http_request('GET', '/', [Host => 'api.example'])->{body};
like(error_log_text(), qr/start cache manager process/, 'a cache manager runs');
kill 'STOP', $worker;
main::write_file(html_dir() . '/m.yaml', main::yaml_for(percentage => 100, version => 'v2'));
Time::HiRes::sleep(1);
my $while_stopped = error_log_text();
kill 'CONT', $worker;
unlike($while_stopped, qr/changed; published/, 'with the only worker stopped, nothing publishes the change');
my $deadline = Time::HiRes::time() + 3;
Time::HiRes::sleep(0.05) until error_log_text() =~ /changed; published generation 2/ || Time::HiRes::time() > $deadline;
my ($by) = error_log_text() =~ /\[notice\] (\d+)#\d+: migration: \S+ changed; published generation 2/;
is($by, $worker, 'the worker publishes it once it runs');
is(http_request('GET', '/', [Host => 'api.example'])->{body}, "$worker new v2\n", 'and routes by it');



=== TEST 4: a bad YAML on disk: nginx -s reopen, -s quit and -s stop still reach the master; -s reload prints the located error and signals nothing
--- workers: 1
--- master_on
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0, version => 'v1') ]]
--- config
    location / { migration on; return 200 "$migration_target $migration_config_version\n"; }
--- expect_alerts eval
qr/\[emerg\] .*m\.yaml:4:\d+: services\[0\]/
--- check_eval
main::write_file(html_dir() . '/m.yaml', "services:\n  - name: api\n    old_host: api.example\n    migration: {percentage: 120}\n");
my ($code, $out) = main::nginx_run('-s', 'reopen');
is($code, 0, 'nginx -s reopen succeeds') or diag($out);
my $deadline = Time::HiRes::time() + 3;
Time::HiRes::sleep(0.05) until error_log_text() =~ /reopening logs/ || Time::HiRes::time() > $deadline;
like(error_log_text(), qr/signal 10 \(SIGUSR1\) received|reopening logs/, 'the master reopened its logs');
($code, $out) = main::nginx_run('-s', 'reload');
is($code, 1, 'nginx -s reload fails');
like($out, qr{m\.yaml:4:\d+: services\[0\]: missing field `old_backend`|m\.yaml:\d+:\d+: services\[0\]}, 'with the located error') or diag($out);
unlike(error_log_text(), qr/signal 1 \(SIGHUP\)/, 'and sends no signal');
is(http_request('GET', '/', [Host => 'api.example'])->{body}, "old v1\n", 'the running configuration stays');
# -s quit: on a second nginx of its own, so that this block's nginx stays up for the harness.
my $prefix = servroot() . '/second';
mkdir $prefix; mkdir "$prefix/logs"; mkdir "$prefix/conf";
my $port = free_port();
main::write_file("$prefix/conf/nginx.conf", "daemon on;\nmaster_process on;\nworker_processes 1;\nerror_log logs/error.log info;\npid logs/nginx.pid;\n"
    . CORE::join('', map { "load_module $_;\n" } grep { length } split /\s+/, ($ENV{TEST_NGINX_LOAD_MODULES} // "$ENV{PWD}/target/nginx/modules/ngx_http_migration_module.so"))
    . ($> == 0 ? "user root;\n" : '')
    . "events {}\nhttp {\n    access_log off;\n    client_body_temp_path $prefix/t; proxy_temp_path $prefix/t; fastcgi_temp_path $prefix/t; uwsgi_temp_path $prefix/t; scgi_temp_path $prefix/t;\n"
    . "    migration_config " . html_dir() . "/good.yaml;\n    server { listen 127.0.0.1:$port; server_name api.example; location / { migration on; return 200 \$migration_target; } }\n}\n");
for my $signal ('quit', 'stop') {
    main::write_file(html_dir() . '/good.yaml', main::yaml_for(percentage => 0, version => 'v1'));
    system(nginx_binary(), '-p', "$prefix/", '-e', 'logs/error.log', '-c', 'conf/nginx.conf');
    is($?, 0, "a second nginx starts (for -s $signal)");
    # The daemon writes its pid file after the starting process has returned.
    $deadline = Time::HiRes::time() + 10;
    Time::HiRes::sleep(0.05) until -s "$prefix/logs/nginx.pid" || Time::HiRes::time() > $deadline;
    main::write_file(html_dir() . '/good.yaml', "services:\n");
    my $out = `'${\ nginx_binary()}' -p '$prefix/' -e logs/error.log -c conf/nginx.conf -s $signal 2>&1`;
    is($? >> 8, 0, "nginx -s $signal succeeds although the file is now bad") or diag($out);
    $deadline = Time::HiRes::time() + 15;
    Time::HiRes::sleep(0.05) while -e "$prefix/logs/nginx.pid" && Time::HiRes::time() < $deadline;
    ok(!-e "$prefix/logs/nginx.pid", "and the second nginx exits");
    # If not: TERM lets the master stop its worker (KILL would leave the worker running).
    if (-e "$prefix/logs/nginx.pid") { open my $p, '<', "$prefix/logs/nginx.pid"; my $pid = <$p>; kill 'TERM', $pid if $pid; last }
}



=== TEST 5: 1,020 renamed services in a small zone keep publishing: slots no process can use are reclaimed
--- workers: 2
--- listen_options: reuseport
--- timeout: 60
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=renames:128k watch=100ms;
--- user_files eval
[[ 'm.yaml', main::renamed(0) ]]
--- config
    location / { migration on; return 200 "$migration_service $migration_target $migration_config_version\n"; }
    location = /status { migration_status; }
--- check_eval
ok(main::publish_rounds(60), 'sixty publications of seventeen new names each');
unlike(error_log_text(), qr/does not fit|no room left|too small/, 'never refused for room');
# Each worker catches up within one watch= interval: the one answering may be a tick behind.
my ($body, $until) = ('', Time::HiRes::time() + 3);
Time::HiRes::sleep(0.02) until ($body = http_request('GET', '/', [Host => 's16-r60.example'])->{body}) eq "s16-r60 old r60\n"
    || Time::HiRes::time() > $until;
is($body, "s16-r60 old r60\n", 'the last names route');
main::write_file(html_dir() . '/m.yaml', main::renamed(61, 'enabled: false'));
my $deadline = Time::HiRes::time() + 3;
# One document: the two workers may answer a tick apart.
my $doc;
Time::HiRes::sleep(0.02) until ($doc = main::status())->{version} eq 'r61' || Time::HiRes::time() > $deadline;
is($doc->{services}[0]{enabled}, JSON::PP::false, 'and the emergency rollback still publishes');



=== TEST 6: the publication thread blocks every signal but the faults (as nginx's own thread pools do), and the worker's own mask is left as nginx set it
--- workers: 1
--- master_on
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=100ms;
--- user_files eval
[[ 'm.yaml', "version: \"t1\"\nservices: []\n" ]]
--- config
    location = /t { return 200 "$migration_config_version\n"; }
--- request
GET /t
--- response_body
t1
--- check_eval
my $m = html_dir() . '/m.yaml';
open my $fh, '>', "$m.tmp" or die $!; print $fh "version: \"t2\"\nservices: []\n"; close $fh; rename "$m.tmp", $m or die $!;
my $deadline = time + 5;
sleep 1 while time < $deadline && http_request('GET', '/t')->{body} ne "t2\n";
is(http_request('GET', '/t')->{body}, "t2\n", 'a watch= change went through the publication thread');
# The worker: the master's child (from /proc, no procps needed).
my $worker = main::worker_of(nginx_pid());
ok($worker, "the worker is $worker");
my (%mask, $thread);
for my $task (glob "/proc/$worker/task/*") {
    my $comm = do { open my $c, '<', "$task/comm" or next; local $/; <$c> };
    my ($blocked) = do { open my $s, '<', "$task/status" or next; local $/; <$s> } =~ /^SigBlk:\s*([0-9a-f]+)/m;
    chomp $comm;
    # Signals 1 to 31 are the low 32 bits.
    $mask{$comm eq 'migration-publi' ? 'thread' : $task =~ m{/$worker$} ? 'main' : 'other'} = hex substr($blocked, -8);
}
ok(defined $mask{thread}, 'the publication thread runs');
my $bit = sub { ($_[0] >> ($_[1] - 1)) & 1 };
for my $sig ([HUP => 1], [INT => 2], [QUIT => 3], [USR1 => 10], [USR2 => 12], [ALRM => 14], [TERM => 15], [CHLD => 17], [WINCH => 28], [IO => 29]) {
    is($bit->($mask{thread}, $sig->[1]), 1, "the thread blocks SIG$sig->[0]");
    is($bit->($mask{main}, $sig->[1]), 0, "the worker's event loop does not block SIG$sig->[0]");
}
for my $sig ([ILL => 4], [BUS => 7], [FPE => 8], [SEGV => 11]) {
    is($bit->($mask{thread}, $sig->[1]), 0, "the thread leaves SIG$sig->[0] unblocked");
}



=== TEST 7: 300 SIGKILLed workers leak no process-table entry: rotating publications in a small zone keep being published
--- workers: 1
--- master_on
--- timeout: 90
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=kills:128k watch=100ms;
--- user_files eval
[[ 'm.yaml', main::renamed(0) ]]
--- expect_alerts
worker process \d+ exited on signal 9
--- config
    location / { migration on; return 200 "$migration_service $migration_target $migration_config_version\n"; }
    location = /status { migration_status; }
--- check_eval

my $killed = 0;
for (1 .. 300) {
    my $w;
    my $deadline = Time::HiRes::time() + 5;
    # A worker that answered has run init_process: it has its entry.
    until (($w = main::worker_of(nginx_pid())) && http_request('GET', '/status')->{status} == 200) {
        last if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.01);
    }
    $killed++ if $w && kill('KILL', $w);
    Time::HiRes::sleep(0.01) while $w && -e "/proc/$w" && main::parent_of($w) == nginx_pid() && Time::HiRes::time() < $deadline;
}
is($killed, 300, '300 workers killed, each after it registered');
ok(main::publish_rounds(30), 'thirty publications of seventeen new names each, after the kills');
unlike(error_log_text(), qr/does not fit|no room left|too small/, 'never refused for room');



=== TEST 8: a request held open (a POST whose body never comes) pins no zone memory: sixty rotating publications in a small zone all go through meanwhile
--- workers: 1
--- master_on
--- timeout: 60
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=held:128k watch=100ms;
--- user_files eval
[[ 'm.yaml', main::renamed(0) ]]
--- config
    location / { migration on; return 200 "$migration_service $migration_target $migration_config_version\n"; }
    location /upload { migration on; proxy_pass http://127.0.0.1:$server_port/sink; }
    location = /sink { return 200 "got it\n"; }
    location = /status { migration_status; }
--- check_eval
my $held = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port()) or die $!;
print $held "POST /upload HTTP/1.1\r\nHost: s0-r0.example\r\nContent-Length: 100\r\n\r\n";
Time::HiRes::sleep(0.2);
ok(main::publish_rounds(60), 'sixty publications while the request is held');
unlike(error_log_text(), qr/does not fit|no room left|too small/, 'never refused for room');
# The held request finishes normally: its body comes, new's answer goes back.
print $held 'x' x 100;
my $answer = '';
while (my $line = <$held>) { $answer .= $line; last if $answer =~ /got it/ }
like($answer, qr/^HTTP\/1\.1 200.*got it/s, 'the held request is answered once its body comes');
close $held;



=== TEST 9: an old worker still finishing a request after a reload holds its generation: a change that needs that room waits (said at notice), and is published, unchanged on disk, once the worker exits
--- workers: 1
--- master_on
--- timeout: 60
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=lag:128k watch=100ms;
--- user_files eval
[[ 'm.yaml', main::renamed(0) ]]
--- config
    location / { migration on; return 200 "$migration_service $migration_target $migration_config_version\n"; }
    location /upload { migration on; proxy_pass http://127.0.0.1:$server_port/sink; }
    location = /sink { return 200 "got it\n"; }
    location = /status { migration_status; }
--- check_eval
my $held = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port()) or die $!;
print $held "POST /upload HTTP/1.1\r\nHost: s0-r0.example\r\nContent-Length: 100\r\n\r\n";
Time::HiRes::sleep(0.2);
ok(reload_nginx(), 'reload while the request is held: its worker stays, on its generation');
my $waits = qr/it is published once the processes still on generation (\d+) catch up or exit/;
my $waiting;
for my $round (1 .. 60) {
    main::write_file(html_dir() . '/m.yaml', main::renamed($round));
    my $deadline = Time::HiRes::time() + 3;
    my $version = '';
    until ($version eq "r$round" || error_log_text() =~ $waits || Time::HiRes::time() > $deadline) {
        Time::HiRes::sleep(0.05);
        $version = eval { main::status()->{version} } // '';
    }
    if (error_log_text() =~ $waits) { $waiting = $round; last }
    last if $version ne "r$round";
}
ok($waiting, "round $waiting waits for room the old worker holds");
unlike(error_log_text(), qr/does not fit|no room left|too small/, 'a wait is not a refusal');
Time::HiRes::sleep(0.5);
is(main::status()->{version}, 'r' . ($waiting - 1), 'meanwhile the last published generation routes');
is(main::status()->{file}{state}, 'ok', 'and the file is not marked refused');
# The held request finishes: its worker exits, and with it its hold.
print $held 'x' x 100;
my $answer = '';
while (my $line = <$held>) { $answer .= $line; last if $answer =~ /got it/ }
like($answer, qr/^HTTP\/1\.1 200.*got it/s, 'the held request is answered by the old worker');
close $held;
my ($version, $deadline) = ('', Time::HiRes::time() + 5);
until ($version eq "r$waiting" || Time::HiRes::time() > $deadline) {
    Time::HiRes::sleep(0.05);
    $version = eval { main::status()->{version} } // '';
}
is($version, "r$waiting", 'the waiting change is published once the old worker has exited, with no new write');



=== TEST 10: a reload that fails after the zone prepared its copy (a listen nginx cannot bind) takes the copy out again, and the slots of the services only it named: a watch= change that needs their room is published
--- workers: 1
--- master_on
--- timeout: 60
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=failed:128k watch=100ms;
--- user_files eval
[[ 'm.yaml', main::padded('p0', 36) ], [ 'other.yaml', main::renamed(1) ]]
--- config
    location / { migration on; return 200 "$migration_config_version\n"; }
    location = /status { migration_status; }
--- check_eval
my $busy = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp') or die $!;
my $port = $busy->sockport;
expect_alert(qr/\[emerg\] .*bind\(\) to 127\.0\.0\.1:$port failed/, qr/\[emerg\] .*still could not bind\(\)/);
# The reload reads another file, of 17 services no record has named.
main::edit_conf('location = /status {', "listen 127.0.0.1:$port;\n    location = /status {");
main::edit_conf('/m.yaml zone=', '/other.yaml zone=');
ok(!reload_nginx(timeout => 15), 'the reload fails: the port is taken');
my $deadline = Time::HiRes::time() + 10;
Time::HiRes::sleep(0.1) until error_log_text() =~ /still could not bind/ || Time::HiRes::time() > $deadline;
Time::HiRes::sleep(0.3);
like(error_log_text(), qr/\[notice\] .*migration: the failed reload's configuration was taken out of the zone/, 'its copy is taken out, said at notice');
is(http_request('GET', '/', [Host => 'api.example'])->{body}, "p0\n", 'the running configuration routes on');
main::write_file(html_dir() . '/m.yaml', main::padded('p1', 60));
my $version = '';
$deadline = Time::HiRes::time() + 5;
until ($version eq 'p1' || Time::HiRes::time() > $deadline) {
    Time::HiRes::sleep(0.05);
    $version = eval { main::status()->{version} } // '';
}
is($version, 'p1', 'a change that needs the room is published');
unlike(error_log_text(), qr/does not fit|no room left/, 'nothing was refused for want of room');
