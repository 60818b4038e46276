# Long-lived requests follow the split (docs/drain.md, migration.drain): real
# WebSocket and server-sent-event clients through proxy_pass to two real
# backends (t/lib/Test/LongLived.pm). When the percentage moves, exactly the
# misplaced requests are closed, oldest first, at the configured rate; the
# others stay open; the clients that reconnect land on the side they belong to.
# Without drain they are counted and never closed.
use lib 't/lib';
use Test::MigrationNginx;
use Test::MigrationHelpers qw(murmur2 write_file status);
use Test::LongLived;
use Time::HiRes ();
use IO::Socket::INET;

our @BACKENDS;

# The service: user ids from ?user=, old and new on the block's ports 1 and 2.
sub yaml {
    my (%o) = @_;
    my $percentage = $o{percentage} // 0;
    my $drain = exists $o{drain} ? $o{drain} : '{rate: 20/s}';
    my $drain_line = defined $drain ? "      drain: $drain\n" : '';
    my $version = $o{version} // $percentage;
    my $user_key = $o{user_key} // 'arg:user';
    # A cookie rule: every decision parses the request's cookies for it.
    my $canary = $o{canary} ? "    canary:\n      header_rules:\n        - {cookie: canary, value: always, target: new}\n" : '';
    my $text = <<"YAML";
version: "$version"
services:
  - name: ws
    old_host: ws.example
    old_backend: 127.0.0.1:\$TEST_NGINX_RAND_PORT_1
    new_host: ws.example
    new_backend: 127.0.0.1:\$TEST_NGINX_RAND_PORT_2
    migration:
      enabled: true
      strategy: user
      percentage: $percentage
      user_key: $user_key
$drain_line$canary
YAML
    $text =~ s{\$(TEST_NGINX_RAND_PORT_(\d))}{Test::MigrationNginx::rand_port($2)}ge if $o{expand};
    return $text;
}

# Rewrites the file watch= follows and waits until the status shows it.
sub publish {
    my (%o) = @_;
    write_file(Test::MigrationNginx::html_dir() . '/m.yaml', yaml(%o, expand => 1));
    my $want = $o{version} // $o{percentage} // 0;
    my $deadline = Time::HiRes::time() + 5;
    my $seen = '';
    until ($seen eq $want || Time::HiRes::time() > $deadline) {
        Time::HiRes::sleep(0.05);
        $seen = eval { status()->{version} } // '';
    }
    Test::More::is($seen, "$want", "published $want");
}

# Adds `set $uid_c VALUE;` to the running nginx.conf's /ws location (TESTs 18
# and 19: a variable the workers a reload retires do not know).
sub conf_defines_uid_c {
    my ($value) = @_;
    my $conf = Test::MigrationNginx::servroot() . '/conf/nginx.conf';
    my $text = do { local (@ARGV, $/) = $conf; <> };
    Test::More::ok($text =~ s/set \$uid_b \$arg_user;/set \$uid_b \$arg_user; set \$uid_c $value;/, 'nginx.conf gains $uid_c');
    write_file($conf, $text);
}

# Whether user $id belongs on new at $percentage (nginx's split_clients rule).
sub cohort {
    my ($id, $percentage) = @_;
    return murmur2($id) < int($percentage * 100 * 0xFFFFFFFF / 10000) ? 'new' : 'old';
}

sub start_backends {
    @BACKENDS = (start_backend(port => Test::MigrationNginx::rand_port(1), name => 'old'),
        start_backend(port => Test::MigrationNginx::rand_port(2), name => 'new'));
}

sub stop_backends { stop_backend($_) for splice @BACKENDS }

# $n WebSockets, user u0 .. u<n-1> (each one's side is murmur2's).
sub open_ws {
    my ($n, $from) = @_;
    $from //= 0;
    my @conns = map { ws_connect(Test::MigrationNginx::server_port(), "/ws?user=u$_", host => 'ws.example') } $from .. $from + $n - 1;
    $conns[$_]{user} = 'u' . ($from + $_) for 0 .. $#conns;
    return \@conns;
}

# Watches until $want connections closed (or $seconds passed), then $quiet
# seconds more to see that no other one closes. Returns how many closed.
sub closes {
    my ($conns, $want, $seconds, $quiet) = @_;
    my $closed = 0;
    my $deadline = Time::HiRes::time() + $seconds;
    while ($closed < $want && Time::HiRes::time() < $deadline) {
        $closed += watch_closes($conns, 0.1);
    }
    $closed += watch_closes($conns, $quiet);
    return $closed;
}

sub connections { status()->{services}[0]{connections} }

# Polls the status until the service's connections are $want (a worker counts
# a request when it reads its 101 or its after passes).
sub connections_are {
    my ($want, $name) = @_;
    my $deadline = Time::HiRes::time() + 3;
    my $got = connections();
    until (JSON::PP->new->canonical->encode($got) eq JSON::PP->new->canonical->encode($want) || Time::HiRes::time() > $deadline) {
        Time::HiRes::sleep(0.05);
        $got = connections();
    }
    Test::More::is_deeply($got, $want, $name);
}

# TEST 4 and 5: two event streams over one HTTP/2 connection (nghttp) to $port.
# One nghttp client, two event streams at $path on one HTTP/2 connection to
# $port: stream 13 of a user that belongs on new at 50 %, stream 15 of one that
# stays on old. Returns nghttp's pid, the users, and a reader of its output so far.
sub nghttp_streams {
    my ($port, $path) = @_;
    my ($moving) = grep { main::cohort($_, 50) eq 'new' } map { "h$_" } 1 .. 50;
    my ($staying) = grep { main::cohort($_, 50) eq 'old' } map { "h$_" } 1 .. 50;
    my $out = Test::MigrationNginx::servroot() . '/nghttp.out';
    my $pid = fork;
    if (!$pid) {
        open STDOUT, '>', $out;
        open STDERR, '>&', \*STDOUT;
        { exec 'nghttp', '-v', '-H', ':authority: ws.example', "http://127.0.0.1:$port$path?user=$moving", "http://127.0.0.1:$port$path?user=$staying" }
        POSIX::_exit(127);
    }
    # Empty until nghttp has made its output file.
    my $read = sub { -e $out ? do { local (@ARGV, $/) = ($out); <> } // '' : '' };
    # Both streams decided at 0 % before the caller moves the percentage: a
    # slow start (a loaded machine) would have them decided after it.
    my $deadline = Time::HiRes::time() + 10;
    Time::HiRes::sleep(0.05)
        until $read->() =~ /recv DATA frame <[^>]*stream_id=13>/ && $read->() =~ /recv DATA frame <[^>]*stream_id=15>/
        || Time::HiRes::time() > $deadline;
    return ($pid, $moving, $staying, $read);
}

sub h2_streams {
    my ($port) = @_;
    my ($pid, $moving, $staying, $read) = nghttp_streams($port, '/sse');
    main::publish(percentage => 50);
    # The streams become long-lived 5 s (the default after) after they began: then
    # the moved one is decided again, and reset.
    my $deadline = Time::HiRes::time() + 12;
    my $text = '';
    until ($text =~ /recv RST_STREAM frame <[^>]*stream_id=13>/ || Time::HiRes::time() > $deadline) {
        Time::HiRes::sleep(0.2);
        $text = $read->();
    }
    Time::HiRes::sleep(1.5);
    kill 'TERM', $pid;
    waitpid $pid, 0;
    $text = $read->();
    my ($reset_at) = $text =~ /\[\s*([\d.]+)\] recv RST_STREAM frame <[^>]*stream_id=13>/;
    Test::More::ok(defined $reset_at, "the stream of $moving (13, on old, belongs on new) was reset") or Test::More::diag($text);
    my @after = grep { $_ > ($reset_at // 1e9) } $text =~ /\[\s*([\d.]+)\] recv DATA frame <[^>]*stream_id=15>/g;
    Test::More::ok(@after >= 3, scalar(@after) . " events of $staying (15, stays on old) came on the same connection after the reset");
    Test::More::unlike($text, qr/GOAWAY/, 'the connection was never closed');
    Test::More::is(status()->{services}[0]{connections}{drained}, 1, 'one drained');
    main::stop_backends();
}

# TEST 10: two event streams over one HTTP/2 connection to $port, each quiet
# after its first event: the misplaced one's reset must reach the client
# although nothing else is written on the connection.
sub h2_quiet_streams {
    my ($port) = @_;
    my ($pid, $moving, $staying, $read) = nghttp_streams($port, '/sse-quiet');
    main::publish(percentage => 50);
    # Long-lived 5 s (the default after) after they began, then drained.
    my $deadline = Time::HiRes::time() + 12;
    Time::HiRes::sleep(0.1) until status()->{services}[0]{connections}{drained} == 1 || Time::HiRes::time() > $deadline;
    my $drained_at = Time::HiRes::time();
    Test::More::is(status()->{services}[0]{connections}{drained}, 1, "the stream of $moving (13) was drained");
    my $text = $read->();
    until ($text =~ /recv RST_STREAM frame <[^>]*stream_id=13>/ || Time::HiRes::time() > $drained_at + 3) {
        Time::HiRes::sleep(0.05);
        $text = $read->();
    }
    my $took = Time::HiRes::time() - $drained_at;
    Test::More::like($text, qr/recv RST_STREAM frame <[^>]*stream_id=13>/,
        sprintf('its RST_STREAM reached the client (%.2f s after the drain) while the other stream was quiet', $took))
        or Test::More::diag($text);
    Test::More::ok($took < 1, sprintf('at once: %.2f s', $took));
    Test::More::like($text, qr/recv DATA frame <[^>]*stream_id=15>/, "the stream of $staying (15) had its one event");
    Test::More::unlike($text, qr/GOAWAY/, 'the connection was never closed');
    kill 'TERM', $pid;
    waitpid $pid, 0;
    main::stop_backends();
}

# TEST 14: a raw HTTP/2 client (core Perl) that stops reading. Stream 1 is a
# quiet event stream of a user who stays on old, stream 3 a flood of a user
# who belongs on new at 50 %. While the client reads nothing, nginx's output
# for stream 3 backs up (a frame half written: nginx defers the stream's close
# until its queued frames are out, and queues its RST_STREAM only then). Once
# the drain has closed stream 3 the client reads again: the reset must follow
# the stream's last frame at once, although nothing else is written on the
# connection (stream 1 is quiet, and the client sends nothing).
sub h2_frame {
    my ($type, $flags, $stream, $payload) = @_;
    my $len = length $payload;
    return pack('CnCCN', $len >> 16, $len & 0xffff, $type, $flags, $stream) . $payload;
}

sub hpack_literal {    # a literal header field without indexing, new name
    my ($name, $value) = @_;
    die 'short strings only' if length($name) > 126 || length($value) > 126;
    return "\x00" . chr(length $name) . $name . chr(length $value) . $value;
}

sub h2_stalled_stream {
    my ($port) = @_;
    require Socket;
    my ($moving) = grep { main::cohort($_, 50) eq 'new' } map { "f$_" } 1 .. 50;
    my ($staying) = grep { main::cohort($_, 50) eq 'old' } map { "f$_" } 1 .. 50;
    socket(my $s, Socket::PF_INET(), Socket::SOCK_STREAM(), 0) or die "socket: $!";
    # A small receive buffer: the flood fills it, and nginx's, at once.
    setsockopt($s, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), pack('i', 4096)) or die "setsockopt: $!";
    connect($s, Socket::pack_sockaddr_in($port, Socket::inet_aton('127.0.0.1'))) or die "connect: $!";
    binmode $s;
    my $send = sub { my ($bytes) = @_; while (length $bytes) { my $n = syswrite($s, $bytes) // die "write: $!"; substr($bytes, 0, $n) = '' } };
    # Windows as large as HTTP/2 allows: no flow control, only TCP holds nginx back.
    $send->("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" . h2_frame(4, 0, 0, pack('nN', 4, 0x7fffffff))
        . h2_frame(8, 0, 0, pack('N', 0x7fffffff - 65535)));
    my $request = sub {
        my ($stream, $path) = @_;
        $send->(h2_frame(1, 0x5, $stream, hpack_literal(':method', 'GET') . hpack_literal(':scheme', 'http')
            . hpack_literal(':path', $path) . hpack_literal(':authority', 'ws.example')));
    };
    $request->(1, "/sse-quiet?user=$staying");
    $request->(3, "/sse-flood?user=$moving");
    my ($buf, %data, %rst, $goaway, $last_data_3) = ('');
    # Reads frames until $done or $seconds pass.
    my $read = sub {
        my ($done, $seconds) = @_;
        my $deadline = Time::HiRes::time() + $seconds;
        until ($done->() || Time::HiRes::time() > $deadline) {
            my $in = '';
            vec($in, fileno($s), 1) = 1;
            next unless select($in, undef, undef, 0.05);
            my $n = sysread($s, $buf, 1 << 20, length $buf);
            last unless $n;
            while (length($buf) >= 9) {
                my ($hi, $lo, $type, $flags, $stream) = unpack('CnCCN', $buf);
                my $len = ($hi << 16) | $lo;
                last if length($buf) < 9 + $len;
                substr($buf, 0, 9 + $len) = '';
                $stream &= 0x7fffffff;
                if ($type == 0) { $data{$stream} += $len; $last_data_3 = Time::HiRes::time() if $stream == 3 }
                elsif ($type == 3) { $rst{$stream} = Time::HiRes::time() }
                elsif ($type == 7) { $goaway = 1 }
                elsif ($type == 4 && !($flags & 1)) { $send->(h2_frame(4, 1, 0, '')) }
            }
        }
    };
    $read->(sub { ($data{1} // 0) > 0 && ($data{3} // 0) >= 65536 }, 5);
    Test::More::ok(($data{3} // 0) >= 65536, "the flood of $moving (stream 3) came, and the event of $staying (stream 1)");
    # The client stops reading: nginx's output backs up.
    main::publish(percentage => 50);
    # Long-lived 5 s (the default after) after it began, then drained.
    my $deadline = Time::HiRes::time() + 15;
    Time::HiRes::sleep(0.1) until status()->{services}[0]{connections}{drained} == 1 || Time::HiRes::time() > $deadline;
    Test::More::is(status()->{services}[0]{connections}{drained}, 1, "the stream of $moving (3) was drained while its output was backed up");
    # It reads again: what was queued, then the reset.
    $read->(sub { $rst{3} }, 8);
    Test::More::ok($rst{3}, "its RST_STREAM reached the client after its last frame ($data{3} bytes of data)");
    my $took = defined $rst{3} ? $rst{3} - ($last_data_3 // $rst{3}) : 1e9;
    Test::More::ok($took < 1, sprintf('at once: %.2f s after the last DATA frame', $took));
    Test::More::ok(!$rst{1} && !$goaway, 'the quiet stream and the connection go on');
    close $s;
    main::stop_backends();
}

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(user_files => ">>> m.yaml\n" . main::yaml()) unless defined $block->{user_files};
    $block->set_value(http_config => "    migration_config \$TEST_NGINX_HTML_DIR/m.yaml watch=100ms;\n")
        unless defined $block->{http_config};
    $block->set_value(init => 'main::start_backends()') unless defined $block->{init};
    $block->set_value(config => <<'CONF') unless defined $block->{config};
    location /ws {
        # User ids as variables, for the services with `user_key: var:` (TESTs 13, 16).
        set $uid_a $arg_user;
        set $uid_b $arg_user;
        migration on;
        proxy_pass http://$migration_backend;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        proxy_read_timeout 1h;
    }
    location /sse {
        migration on;
        proxy_pass http://$migration_backend;
        proxy_buffering off;
        proxy_read_timeout 1h;
    }
    location /slow {
        migration on;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
CONF
});

run_tests();

__DATA__

=== TEST 1: 40 WebSockets at 0 %, raised to 50 %: exactly the misplaced ones close, oldest first, at 20/s; their reconnects land on new; a rollback moves them back the same way
--- timeout: 60
--- request
GET /status
--- check_eval
my $port = server_port();
my $conns = main::open_ws(40);
is(scalar(grep { ($_->{status} // 0) == 101 && ($_->{first_message} // '') eq 'old' } @$conns), 40, '40 WebSockets upgraded, all on old');
main::connections_are({old => 40, new => 0, misplaced => 0, drained => 0}, 'counted: 40 on old');

my @moving = grep { main::cohort($_->{user}, 50) eq 'new' } @$conns;
my $k = @moving;
ok($k >= 12 && $k <= 28, "$k of the 40 belong on new at 50 %");
my $raised = Time::HiRes::time();
main::publish(percentage => 50);
my $closed = main::closes($conns, $k, 10, 1);
is($closed, $k, "$k closed");
is(join(' ', sort map { $_->{user} } grep { $_->{closed_at} } @$conns), join(' ', sort map { $_->{user} } @moving),
    'exactly the ones that belong on new');
my @at = sort { $a <=> $b } map { $_->{closed_at} } grep { $_->{closed_at} } @$conns;
my $spread = $at[-1] - $at[0];
my $paced = ($k - 1) / 20;
ok($spread >= $paced - 0.15 && $spread <= $paced + 1, sprintf('spread over %.2f s ((k-1)/rate = %.2f s)', $spread, $paced));
ok($at[0] - $raised < 1.5, sprintf('the first one %.2f s after the edit', $at[0] - $raised));
main::connections_are({old => 40 - $k, new => 0, misplaced => 0, drained => $k}, 'the rest stay counted on old; drained counts them');
my $responses = status()->{services}[0]{responses}{old};
is("$responses->{aborted} $responses->{'1xx'} $responses->{failed}", "$k 0 0", 'the drained ones ended as aborted (the module ended them, not old): no 1xx, no failure');

my $metrics = http_request('GET', '/status?format=prometheus')->{body};
like($metrics, qr/^migration_connections_drained_total\{service="ws",target="old"\} $k$/m, 'Prometheus: drained from old');
like($metrics, qr/^migration_connections\{service="ws",target="old"\} ${\ (40 - $k)}$/m, 'Prometheus: open on old');
like($metrics, qr/^migration_connections_misplaced\{service="ws"\} 0$/m, 'Prometheus: none misplaced');

my $back = [map { my $c = ws_connect($port, "/ws?user=$_->{user}", host => 'ws.example'); $c->{user} = $_->{user}; $c } @moving];
is(scalar(grep { ($_->{first_message} // '') eq 'new' } @$back), $k, 'every reconnect lands on new');
main::connections_are({old => 40 - $k, new => $k, misplaced => 0, drained => $k}, "$k on new now");

main::publish(percentage => 0);
my @open = grep { !$_->{closed_at} } @$conns;
$closed = main::closes([@$back, @open], $k, 10, 1);
is($closed, $k, "rollback: $k closed");
is(scalar(grep { $_->{closed_at} } @$back), $k, 'all of them on new');
is(scalar(grep { $_->{closed_at} } @open), 0, 'none of those on old');
main::connections_are({old => 40 - $k, new => 0, misplaced => 0, drained => 2 * $k}, 'drained counts both ways');
like(http_request('GET', '/status?format=prometheus')->{body}, qr/^migration_connections_drained_total\{service="ws",target="new"\} $k$/m, 'Prometheus: drained from new');
my $again = ws_connect($port, "/ws?user=$moving[0]{user}", host => 'ws.example');
is($again->{first_message}, 'old', 'a reconnect lands on old again');
close_all([@$conns, @$back, $again]);
main::connections_are({old => 0, new => 0, misplaced => 0, drained => 2 * $k}, 'closed by the clients: no longer counted');
main::stop_backends();
--- response_body_like: "connections":\{"old":0,"new":0,"misplaced":0,"drained":0\}



=== TEST 2: server-sent events become long-lived after `after`; a raise to 100 % closes them, a plain request is never counted
--- user_files eval
">>> m.yaml\n" . main::yaml(drain => '{rate: 50/s, after: 300ms}')
--- timeout: 30
--- request
GET /status
--- check_eval
my $port = server_port();
my $dir = servroot();
my @sse = map { my $c = sse_connect($port, "/sse?user=s$_", host => 'ws.example'); $c->{user} = "s$_"; $c } 1 .. 10;
is(scalar(grep { ($_->{status} // 0) == 200 } @sse), 10, '10 event streams open');
ok(Test::LongLived::read_until($sse[0], qr/data: old/, 3), 'streaming from old');
# And two real clients: curl -N, as a shell script would follow a stream.
my @curls = map {
    my $i = $_;
    my $pid = fork;
    if (!$pid) {
        open STDOUT, '>', "$dir/curl$i.out";
        open STDERR, '>', "$dir/curl$i.err";
        { exec 'curl', '-sS', '-N', '--max-time', '20', '-H', 'Host: ws.example', "http://127.0.0.1:$port/sse?user=c$i" }
        POSIX::_exit(127);
    }
    $pid
} 1 .. 2;
main::connections_are({old => 12, new => 0, misplaced => 0, drained => 0}, 'long-lived after 300 ms: 12 on old');
is(http_request('GET', '/ws?user=plain', [Host => 'ws.example'])->{body}, 'old', 'a plain request');
main::connections_are({old => 12, new => 0, misplaced => 0, drained => 0}, 'is not counted');
my $raised = Time::HiRes::time();
main::publish(percentage => 100, drain => '{rate: 50/s, after: 300ms}');
is(main::closes(\@sse, 10, 5, 0.3), 10, 'all 10 closed at 100 %');
for my $i (1 .. 2) {
    waitpid $curls[$i - 1], 0;
    my $code = $? >> 8;
    my $took = Time::HiRes::time() - $raised;
    ok($code != 0 && $code != 28 && $took < 5, sprintf("curl -N $i: its stream ended by the drain (exit %d, %.1f s after the raise)", $code, $took));
    like(do { local (@ARGV, $/) = ("$dir/curl$i.out"); <> } // '', qr/^data: old$/m, "curl -N $i: it had streamed from old");
}
main::connections_are({old => 0, new => 0, misplaced => 0, drained => 12}, 'all 12 drained');
my $back = sse_connect($port, '/sse?user=s1', host => 'ws.example');
ok(Test::LongLived::read_until($back, qr/data: new/, 3), 'the reconnect streams from new');
close_all([$back]);
# A request whose upstream has not answered yet is no stream, however long it
# waits: the edit back to 0 % during its 1.5 s leaves it alone.
my $slow = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 5) or die "connect: $!";
print $slow "GET /slow?user=s1 HTTP/1.0\r\nHost: ws.example\r\n\r\n";
main::publish(percentage => 0, drain => '{rate: 50/s, after: 300ms}');
my $answer = do { local $/; <$slow> } // '';
like($answer, qr{^HTTP/1\.1 200 .*\r\n\r\nnew\z}s, 'a slow answer (1.5 s, past after) decided new is answered, not closed');
is(status()->{services}[0]{connections}{drained}, 12, 'nothing more drained');
main::stop_backends();
--- response_body_like: "connections"



=== TEST 3: without drain, long-lived requests are counted and misplaced, never closed; they leave the counts as they end
--- user_files eval
">>> m.yaml\n" . main::yaml(drain => undef)
--- timeout: 30
--- request
GET /status
--- check_eval
my $conns = main::open_ws(20);
main::connections_are({old => 20, new => 0, misplaced => 0, drained => 0}, 'upgrades counted without drain');
write_file(html_dir() . '/m.yaml', main::yaml(drain => undef, percentage => 100, expand => 1));
main::connections_are({old => 20, new => 0, misplaced => 20, drained => 0}, 'all 20 misplaced at 100 %');
is(watch_closes($conns, 1.5), 0, 'none closed');
close_all($conns);
main::connections_are({old => 0, new => 0, misplaced => 0, drained => 0}, 'the clients closed them: the gauges are back to 0');
main::stop_backends();
--- response_body_like: "connections"



=== TEST 4: HTTP/2 (nghttp, two event streams on one connection): the misplaced stream is reset, the other one goes on, and so does the connection (nginx >= 1.25.1: `http2 on`)
--- requires
nginx >= 1.25.1
configure --with-http_v2_module
--- timeout: 40
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=100ms;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
        http2 on;
        server_name ~.;
        location /sse {
            migration on;
            proxy_pass http://$migration_backend;
            proxy_buffering off;
        }
    }
--- request
GET /status
--- check_eval
main::h2_streams(rand_port(3));
--- response_body_like: "connections"



=== TEST 5: HTTP/2 (nghttp, two event streams on one connection): the misplaced stream is reset, the other one goes on, and so does the connection (nginx < 1.25.1: `listen ... http2`)
--- requires
nginx < 1.25.1
configure --with-http_v2_module
--- timeout: 40
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=100ms;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3 http2;
        server_name ~.;
        location /sse {
            migration on;
            proxy_pass http://$migration_backend;
            proxy_buffering off;
        }
    }
--- request
GET /status
--- check_eval
main::h2_streams(rand_port(3));
--- response_body_like: "connections"



=== TEST 6: a reload keeps the WebSockets of the retired workers open and counted; their clients are not closed by the reload
--- master_on
--- workers: 2
--- timeout: 30
--- request
GET /status
--- check_eval
my $conns = main::open_ws(10);
main::connections_are({old => 10, new => 0, misplaced => 0, drained => 0}, '10 on old');
reload_nginx();
is(watch_closes($conns, 1.5), 0, 'none closed by the reload');
main::connections_are({old => 10, new => 0, misplaced => 0, drained => 0}, 'still counted after it (the zone outlives the reload)');
my $more = main::open_ws(10, 10);
main::connections_are({old => 20, new => 0, misplaced => 0, drained => 0}, 'new workers add theirs');
close_all([@$conns, @$more]);
main::connections_are({old => 0, new => 0, misplaced => 0, drained => 0}, 'and both take theirs back as they end');
main::stop_backends();
--- response_body_like: "connections"



=== TEST 7: a worker's list of long-lived requests gives its memory back as they end (a burst of 40, then 1, then none)
--- error_log_level: info
--- timeout: 30
--- request
GET /status
--- check_eval
# The walk's line reports what the worker's list holds. Before the list gave
# memory back, what 40 WebSockets had taken stayed for the worker's life (and
# more: 64 free indices besides the 64 entries).
my $list_bytes = sub {
    my ($since, $n) = @_;
    my $deadline = Time::HiRes::time() + 5;
    while (Time::HiRes::time() < $deadline) {
        my @seen = substr(error_log_text(), $since) =~ /migration: $n long-lived requests decided again in \d+ us, \d+ slice\(s\), the longest \d+ us \(\d+ newly misplaced; list (\d+) bytes\)/g;
        return $seen[-1] if @seen;
        Time::HiRes::sleep(0.05);
    }
    return undef;
};
my $conns = main::open_ws(40);
main::connections_are({old => 40, new => 0, misplaced => 0, drained => 0}, '40 on old');
my $since = length error_log_text();
main::publish(percentage => 0.01);
my $burst = $list_bytes->($since, 40);
ok(defined $burst && $burst >= 40 * 40, 'the walk over 40 reports their entries (' . ($burst // 'none') . ' bytes)');
# u0 is the first listed: the 39 after it end, and the list's tail with them.
close_all([@$conns[1 .. 39]]);
main::connections_are({old => 1, new => 0, misplaced => 0, drained => 0}, 'one left');
Time::HiRes::sleep(0.3);
$since = length error_log_text();
main::publish(percentage => 0.02);
my $one = $list_bytes->($since, 1);
ok(defined $one && defined $burst && $one < $burst / 10, 'with one left, the list holds ' . ($one // 'none') . " bytes (under a tenth of the burst's)");
close_all([$conns->[0]]);
main::connections_are({old => 0, new => 0, misplaced => 0, drained => 0}, 'none left');
Time::HiRes::sleep(0.3);
my $again = main::open_ws(1, 40);
main::connections_are({old => 1, new => 0, misplaced => 0, drained => 0}, 'a new one');
$since = length error_log_text();
main::publish(percentage => 0.03);
my $fresh = $list_bytes->($since, 1);
ok(defined $fresh && defined $burst && $fresh < $burst / 10, 'after the list emptied, one new request: ' . ($fresh // 'none') . ' bytes');
close_all($again);
main::stop_backends();
--- response_body_like: "connections"



=== TEST 8: a service removed while its WebSockets are open, and added back: they leave its counts as they end, and no count is left behind
--- timeout: 30
--- request
GET /status
--- check_eval
my $conns = main::open_ws(3);
main::connections_are({old => 3, new => 0, misplaced => 0, drained => 0}, '3 on old');
# Another service in its place (the Host ws.example routes nowhere now).
my $other = main::yaml(expand => 1);
$other =~ s/^version: .*$/version: "gone"/m;
$other =~ s/name: ws$/name: other/m;
$other =~ s/ws\.example/other.example/g;
write_file(html_dir() . '/m.yaml', $other);
my $deadline = Time::HiRes::time() + 5;
Time::HiRes::sleep(0.05) until (eval { status()->{version} } // '') eq 'gone' || Time::HiRes::time() > $deadline;
is(status()->{services}[0]{name}, 'other', 'ws is gone from the configuration');
is(watch_closes($conns, 0.5), 0, 'its WebSockets stay open');
close_all($conns);
Time::HiRes::sleep(0.5);
main::publish(percentage => 0);
is(status()->{services}[0]{name}, 'ws', 'ws is back');
main::connections_are({old => 0, new => 0, misplaced => 0, drained => 0}, 'the three that ended while it was gone are not counted');
my $again = main::open_ws(2, 10);
main::connections_are({old => 2, new => 0, misplaced => 0, drained => 0}, 'two new ones are, and only they');
close_all($again);
main::connections_are({old => 0, new => 0, misplaced => 0, drained => 0}, 'and leave as they end');
main::stop_backends();
--- response_body_like: "connections"



=== TEST 9: a stream whose decision an auth_request subrequest made first (to a location with migration on) is listed all the same: long-lived after `after`, and drained
--- user_files eval
">>> m.yaml\n" . main::yaml(drain => '{rate: 50/s, after: 300ms}')
--- config
    location /sse-authed {
        auth_request /auth-by-side;
        migration on;
        proxy_pass http://$migration_backend;
        proxy_buffering off;
        proxy_read_timeout 1h;
    }
    # An auth check routed to the user's side, as the stream it guards.
    location = /auth-by-side {
        internal;
        migration on;
        set $side $migration_target;
        return 204;
    }
    location = /status { migration_status; }
--- timeout: 30
--- request
GET /status
--- check_eval
my $port = server_port();
my @sse = map { my $c = sse_connect($port, "/sse-authed?user=a$_", host => 'ws.example'); $c->{user} = "a$_"; $c } 1 .. 3;
is(scalar(grep { ($_->{status} // 0) == 200 } @sse), 3, '3 event streams open through auth_request');
ok(Test::LongLived::read_until($sse[0], qr/data: old/, 3), 'streaming from old');
main::connections_are({old => 3, new => 0, misplaced => 0, drained => 0}, 'long-lived after 300 ms: 3 on old');
is(status()->{services}[0]{requests}{old}, 3, 'each counted once, by the subrequest that decided it');
main::publish(percentage => 100, drain => '{rate: 50/s, after: 300ms}');
is(main::closes(\@sse, 3, 5, 0.3), 3, 'all 3 closed at 100 %');
main::connections_are({old => 0, new => 0, misplaced => 0, drained => 3}, 'all 3 drained');
main::stop_backends();
--- response_body_like: "connections"



=== TEST 10: HTTP/2, two quiet event streams on one connection: the misplaced stream's reset reaches the client at once, with nothing else to write on the connection
--- requires
nginx >= 1.25.1
configure --with-http_v2_module
--- timeout: 40
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=100ms;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
        http2 on;
        server_name ~.;
        location /sse {
            migration on;
            proxy_pass http://$migration_backend;
            proxy_buffering off;
        }
    }
--- request
GET /status
--- check_eval
main::h2_quiet_streams(rand_port(3));
--- response_body_like: "connections"



=== TEST 11: HTTP/2, two quiet event streams on one connection: the misplaced stream's reset reaches the client at once (nginx < 1.25.1: `listen ... http2`)
--- requires
nginx < 1.25.1
configure --with-http_v2_module
--- timeout: 40
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=100ms;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3 http2;
        server_name ~.;
        location /sse {
            migration on;
            proxy_pass http://$migration_backend;
            proxy_buffering off;
        }
    }
--- request
GET /status
--- check_eval
main::h2_quiet_streams(rand_port(3));
--- response_body_like: "connections"



=== TEST 12: WebSocket clients that send right behind their handshake (nginx then reads their later bytes over the request's header buffer) are decided again from what they carried: none that stays on its side is closed
--- timeout: 30
--- request
GET /status
--- check_eval
# Users that belong on old at 0 % and at 50 % alike.
my @stay = grep { main::cohort($_, 50) eq 'old' } map { "p$_" } 1 .. 60;
@stay = @stay[0 .. 19];
my @conns = map {
    my $c = ws_connect(server_port(), "/ws-slow?user=$_", host => 'ws.example', preread => "\x81\x05hello", then => 'z' x 120);
    $c->{user} = $_;
    $c
} @stay;
# Each sends a frame with its handshake and more bytes before its 101: nginx
# relays the frame and reads the rest into the buffer that held the request
# line and headers (where the request's arguments and headers point).
is(scalar(grep { ($_->{status} // 0) == 101 } @conns), 20, '20 WebSockets upgraded, each with bytes behind its handshake');
main::connections_are({old => 20, new => 0, misplaced => 0, drained => 0}, '20 on old');
main::publish(percentage => 50);
is(watch_closes(\@conns, 2), 0, 'none closed: each still belongs on old');
main::connections_are({old => 20, new => 0, misplaced => 0, drained => 0}, 'none misplaced, none drained');
close_all(\@conns);
main::stop_backends();
--- response_body_like: "connections"



=== TEST 13: a configuration published after the upgrade reads the user id from another variable: it is read from each WebSocket's request, and none that stays on its side is closed
--- timeout: 30
--- user_files eval
">>> m.yaml\n" . main::yaml(percentage => 50, user_key => 'var:uid_a')
--- request
GET /status
--- check_eval
my $conns = main::open_ws(20);
is(scalar(grep { ($_->{status} // 0) == 101 } @$conns), 20, '20 WebSockets upgraded');
my $new = grep { main::cohort($_->{user}, 50) eq 'new' } @$conns;
main::connections_are({old => 20 - $new, new => $new, misplaced => 0, drained => 0}, "each on its user's side at 50 % ($new on new)");
main::publish(percentage => 50, user_key => 'var:uid_b', version => 'uid_b');
is(watch_closes($conns, 2), 0, 'none closed: each user id is the same through the other variable');
main::connections_are({old => 20 - $new, new => $new, misplaced => 0, drained => 0}, 'none misplaced, none drained');
close_all($conns);
main::stop_backends();
--- response_body_like: "connections"



=== TEST 14: HTTP/2, a client that stops reading while a misplaced stream floods it: drained, the stream's reset follows its last queued frame at once, with nothing else to write on the connection
--- requires
nginx >= 1.25.1
configure --with-http_v2_module
--- timeout: 45
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=100ms;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3 sndbuf=16k;
        http2 on;
        server_name ~.;
        location /sse {
            migration on;
            proxy_pass http://$migration_backend;
            proxy_buffering off;
        }
    }
--- request
GET /status
--- check_eval
main::h2_stalled_stream(rand_port(3));
--- response_body_like: "connections"



=== TEST 15: HTTP/2, a client that stops reading while a misplaced stream floods it: the stream's reset follows its last queued frame at once (nginx < 1.25.1: `listen ... http2`)
--- requires
nginx < 1.25.1
configure --with-http_v2_module
--- timeout: 45
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=100ms;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3 http2 sndbuf=16k;
        server_name ~.;
        location /sse {
            migration on;
            proxy_pass http://$migration_backend;
            proxy_buffering off;
        }
    }
--- request
GET /status
--- check_eval
main::h2_stalled_stream(rand_port(3));
--- response_body_like: "connections"



=== TEST 16: clients that sent bytes behind their handshake, and a configuration published after the upgrade that reads the user id from an argument's variable: nginx may have read their later bytes over the arguments, so they are not decided from it, and none is closed
--- timeout: 30
--- user_files eval
">>> m.yaml\n" . main::yaml(percentage => 50, user_key => 'var:uid_a')
--- request
GET /status
--- check_eval
my @conns = map {
    my $c = ws_connect(server_port(), "/ws-slow?user=p$_", host => 'ws.example', preread => "\x81\x05hello", then => 'z' x 120);
    $c->{user} = "p$_";
    $c
} 1 .. 20;
is(scalar(grep { ($_->{status} // 0) == 101 } @conns), 20, '20 WebSockets upgraded, each with bytes behind its handshake');
my $new = grep { main::cohort($_->{user}, 50) eq 'new' } @conns;
main::connections_are({old => 20 - $new, new => $new, misplaced => 0, drained => 0}, "each on its user's side at 50 % ($new on new)");
main::publish(percentage => 50, user_key => 'var:arg_user', version => 'arg_user');
is(watch_closes(\@conns, 2), 0, 'none closed');
main::connections_are({old => 20 - $new, new => $new, misplaced => 0, drained => 0}, 'none misplaced, none drained');
close_all(\@conns);
main::stop_backends();
--- response_body_like: "connections"



=== TEST 17: a reload that raises the percentage: the retired workers' misplaced WebSockets are drained too, at the rate, and the others stay; the workers exit once their last one ends
--- master_on
--- workers: 2
--- timeout: 40
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- request
GET /status
--- check_eval
my $conns = main::open_ws(30);
main::connections_are({old => 30, new => 0, misplaced => 0, drained => 0}, '30 on old');
my @moving = grep { main::cohort($_->{user}, 50) eq 'new' } @$conns;
my $k = @moving;
ok($k >= 8 && $k <= 22, "$k of the 30 belong on new at 50 %");
# No watch=: the file is published by the reload alone, which retires the
# workers that hold the WebSockets.
write_file(html_dir() . '/m.yaml', main::yaml(percentage => 50, expand => 1));
my $reloaded = Time::HiRes::time();
ok(reload_nginx(), 'reloaded');
my $closed = main::closes($conns, $k, 10, 1);
is($closed, $k, "$k closed");
is(join(' ', sort map { $_->{user} } grep { $_->{closed_at} } @$conns), join(' ', sort map { $_->{user} } @moving),
    'exactly the ones that belong on new');
my @at = sort { $a <=> $b } map { $_->{closed_at} } grep { $_->{closed_at} } @$conns;
ok($at[-1] - $at[0] >= ($k - 1) / 20 - 0.15, sprintf('paced: spread over %.2f s', $at[-1] - $at[0]));
ok($at[0] - $reloaded < 2, sprintf('the first one %.2f s after the reload', $at[0] - $reloaded));
main::connections_are({old => 30 - $k, new => 0, misplaced => 0, drained => $k}, 'the rest stay counted on old; drained counts them');
my $exits_before = () = error_log_text() =~ /\bexit\b/g;
close_all($conns);
main::connections_are({old => 0, new => 0, misplaced => 0, drained => $k}, 'closed by their clients');
# The retired workers then exit (their drain timer does not hold them).
my $deadline = Time::HiRes::time() + 5;
my $exited = 0;
until ($exited >= 2 || Time::HiRes::time() > $deadline) {
    Time::HiRes::sleep(0.1);
    $exited = (() = error_log_text() =~ /\bexit\b/g) - $exits_before;
}
ok($exited >= 2, "the retired workers exited ($exited)");
main::stop_backends();
--- response_body_like: "connections"



=== TEST 18: a reload whose file reads the user id from a variable only the new nginx.conf defines: the retired workers cannot read it, so they do not follow (said at warn), and none of their WebSockets is closed
--- master_on
--- workers: 2
--- timeout: 40
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- request
GET /status
--- check_eval
my $conns = main::open_ws(20);
main::connections_are({old => 20, new => 0, misplaced => 0, drained => 0}, '20 on old');
my $k = grep { main::cohort($_->{user}, 50) eq 'new' } @$conns;
# The new nginx.conf defines $uid_c; the retired workers' did not.
main::conf_defines_uid_c('$arg_user');
write_file(html_dir() . '/m.yaml', main::yaml(percentage => 50, user_key => 'var:uid_c', expand => 1));
ok(reload_nginx(), 'reloaded');
is(watch_closes($conns, 2), 0, "none closed (of the $k the new file would move)");
main::connections_are({old => 20, new => 0, misplaced => 0, drained => 0}, 'none misplaced, none drained');
like(error_log_text(), qr/\[warn\].*a retired worker does not follow generation \d+: .*unknown variable "\$uid_c"/,
    'the retired workers say why');
my $moving = (grep { main::cohort($_->{user}, 50) eq 'new' } @$conns)[0];
my $again = ws_connect(server_port(), "/ws?user=$moving->{user}", host => 'ws.example');
is($again->{first_message}, 'new', 'a new WebSocket lands on its side by the new file');
close_all([@$conns, $again]);
main::stop_backends();
--- response_body_like: "connections"



=== TEST 19: the same, with a ramp in the new file: its step (50 %) is in the zone's cells at once, but a retired worker that does not follow the file never judges its WebSockets by it
--- master_on
--- workers: 2
--- timeout: 40
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- request
GET /status
--- check_eval
my $conns = main::open_ws(20);
main::connections_are({old => 20, new => 0, misplaced => 0, drained => 0}, '20 on old');
my $k = grep { main::cohort($_->{user}, 50) eq 'new' } @$conns;
# An id no client sends: by the old file's arg:user at the ramp's 50 %, $k would move.
main::conf_defines_uid_c('$http_x_uid');
my $yaml = main::yaml(percentage => 50, user_key => q{var:uid_c}, expand => 1);
ok($yaml =~ s/^(      user_key: var:uid_c\n)/$1      ramp: {steps: [50, 100], every: 1h}\n/m, 'with a ramp');
write_file(html_dir() . '/m.yaml', $yaml);
ok(reload_nginx(), 'reloaded');
is(status()->{services}[0]{percentage}, 50, 'the ramp is on its first step');
is(watch_closes($conns, 2), 0, "none closed (of the $k the old file would move at 50 %)");
main::connections_are({old => 20, new => 0, misplaced => 0, drained => 0}, 'none misplaced, none drained');
close_all($conns);
main::stop_backends();
--- response_body_like: "connections"



=== TEST 20: a long-lived request counts in its class but gives no latency sample (its upstream time is its whole life): WebSockets and a stream past `after` leave the histogram to the plain request
--- user_files eval
">>> m.yaml\n" . main::yaml(drain => '{rate: 20/s, after: 300ms}')
--- timeout: 30
--- request
GET /status
--- check_eval
my $port = server_port();
my $ws = main::open_ws(3);
my $sse = sse_connect($port, '/sse?user=s1', host => 'ws.example');
ok(Test::LongLived::read_until($sse, qr/data: old/, 3), 'a stream from old');
main::connections_are({old => 4, new => 0, misplaced => 0, drained => 0}, '3 WebSockets and the stream, long-lived');
Time::HiRes::sleep(1.2);
close_all([@$ws, $sse]);
main::connections_are({old => 0, new => 0, misplaced => 0, drained => 0}, 'ended by their clients');
my $slow = http_request('GET', '/slow?user=p1', [Host => 'ws.example']);
is($slow->{body}, 'old', 'a plain request (1.5 s)');
my $old = status()->{services}[0]{responses}{old};
is(join(' ', map { $_ // 0 } @$old{qw(1xx 2xx)}), '3 2', 'counted: 3 upgrades, the stream and the plain request');
my $metrics = http_request('GET', '/status?format=prometheus')->{body};
like($metrics, qr/^migration_upstream_response_seconds_count\{service="ws",target="old"\} 1$/m, 'one latency sample: the plain request');
like($metrics, qr/^migration_upstream_response_seconds_bucket\{service="ws",target="old",le="1"\} 0$/m, 'none under 1 s (no upgrade handshake either)');
main::stop_backends();
--- response_body_like: "connections"



=== TEST 21: a walk over WebSockets that carried 48 KB of cookies each (a cookie rule and a cookie key read them at every decision) ends a slice after about a millisecond, not only after 4,096 decisions
--- error_log_level: info
--- timeout: 60
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=100ms;
    large_client_header_buffers 8 16k;
--- user_files eval
">>> m.yaml\n" . main::yaml(user_key => 'cookie:mig_uid', canary => 1)
--- request
GET /status
--- check_eval
my $port = server_port();
my $filler = join '; ', map { "c$_=" . ('x' x 1000) } 1 .. 7;
my @conns = map {
    my $c = ws_connect($port, "/ws", host => 'ws.example',
        headers => [(map { ['Cookie', "$filler; p$_=1"] } 1 .. 6), ['Cookie', "mig_uid=u$_"]]);
    $c->{user} = "u$_";
    $c;
} 0 .. 299;
is(scalar(grep { ($_->{status} // 0) == 101 && ($_->{first_message} // '') eq 'old' } @conns), 300, '300 WebSockets with 48 KB of cookies each, all on old');
main::connections_are({old => 300, new => 0, misplaced => 0, drained => 0}, 'counted');
my $since = length error_log_text();
main::publish(percentage => 50, user_key => 'cookie:mig_uid', canary => 1);
my ($spent, $slices, $longest);
my $deadline = Time::HiRes::time() + 5;
until (defined $slices || Time::HiRes::time() > $deadline) {
    Time::HiRes::sleep(0.05);
    ($spent, $slices, $longest) = substr(error_log_text(), $since) =~ /migration: 300 long-lived requests decided again in (\d+) us, (\d+) slice\(s\), the longest (\d+) us/;
}
ok(defined $slices, "the walk's line: 300 decided again in " . ($spent // '?') . " us");
cmp_ok($slices // 0, '>=', 3, "in several slices (" . ($slices // '?') . ", the longest " . ($longest // '?') . " us), not in one");
close_all(\@conns);
main::stop_backends();
--- response_body_like: "connections"

