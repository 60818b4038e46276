# fallback: (docs/fallback.md, decision step 4): when the new cluster fails,
# `failures` consecutive failures open the service's breaker and new-bound
# requests go to old; after `cooldown` one trial request goes to new, and its
# outcome closes or re-opens the breaker. Two workers share the breaker.
use lib 't/lib';
use Test::MigrationNginx;
use Test::MigrationHelpers qw(fallback status touch stalling_new);
use JSON::PP ();
use Time::HiRes ();
use IO::Socket::INET;
use POSIX ();
use Socket ();

sub yaml_for {
    my (%o) = @_;
    my $statuses = $o{statuses} ? "\n      statuses: [$o{statuses}]" : '';
    return <<"YAML";
services:
  - name: api
    old_host: api.example
    old_backend: 127.0.0.1:$o{old}
    new_host: api.example
    new_backend: 127.0.0.1:$o{new}
    migration: {percentage: 100}
    canary:
      header_rules:
        - {header: X-Canary, value: "on", target: new}
    fallback:
      failures: 3
      cooldown: 1500ms$statuses
YAML
}

sub get {
    my (@h) = @_;
    my $res = http_request('GET', '/', [Host => 'api.example', @h]);
    return join ' ', $res->{status} // 'none', ($res->{body} // '') =~ s/\s+$//r;
}

our $Silent;

# One request on a connection of its own, read to its end whatever it is (a
# body cut short included): "STATUS BYTES-OF-BODY".
sub raw {
    my ($method) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port()) or die "connect: $!";
    print $s "$method / HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n";
    local $/;
    my ($status, $body) = ((<$s> // '') =~ m{^HTTP/1\.1 (\d+).*?\r\n\r\n(.*)\z}s);
    return join ' ', $status // 'none', length($body // '');
}

# A request whose client reads the response's header and leaves.
sub raw_leave {
    my ($path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port()) or die "connect: $!";
    print $s "GET $path HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n";
    my $head = '';
    $head .= $_ while defined($_ = <$s>) && $_ ne "\r\n";
    close $s;
    return ($head =~ m{^HTTP/1\.1 (\d+)})[0] // 'none';
}

# HTTP/2 the way this nginx spells it, from the test's $spelling: `http2 on`
# from 1.25.1 ('http2 on'); before, the listen's `http2` ('listen'), which
# then speaks nothing else. (LISTEN-SUFFIX, SERVER-DIRECTIVE.)
sub h2_listen {
    my ($spelling) = @_;
    return $spelling eq 'http2 on' ? ('', "\n        http2 on;") : (' http2', '');
}

# gRPC: new as a gRPC server (nginx answering with a `grpc-status` trailer the
# client picks with X-Code, or with the status in the header on /only) on
# port 3, and a front on port 4 that routes with `grpc_pass`, both HTTP/2 the
# way this nginx spells it (`http2 on` from 1.25.1, `listen ... http2` before).
sub grpc_servers {
    my ($listen, $on) = h2_listen(@_);
    return <<"CONF";
    server {
        listen 127.0.0.1:\$TEST_NGINX_RAND_PORT_3$listen;$on
        default_type application/grpc;
        location / { add_trailer grpc-status \$http_x_code; return 200 "reply"; }
        location /only { add_header grpc-status \$http_x_code; return 200 ""; }
    }
    server {
        listen 127.0.0.1:\$TEST_NGINX_RAND_PORT_4$listen;$on
        server_name api.example;
        location / { migration on; grpc_pass grpc://127.0.0.1:\$TEST_NGINX_RAND_PORT_3; }
    }
CONF
}

# A gRPC call through the front (HTTP/2 without TLS): its HTTP status. Without
# a body: new's `return` answers before reading one, and then resets the
# stream, which curl may report as an error (92) before the status.
sub grpc_call {
    my ($code, $path, @deadlines) = @_;
    my $port = rand_port(4);
    $path //= '/pkg.Service/Call';
    my $timeout = join ' ', map { "-H 'grpc-timeout: $_'" } @deadlines;
    return `curl -sS -o /dev/null -w '%{http_code}' --max-time 10 --http2-prior-knowledge -H 'Content-Type: application/grpc' -H 'X-Code: $code' $timeout --resolve api.example:$port:127.0.0.1 http://api.example:$port$path 2>&1`;
}

sub grpc_checks {
    is(main::grpc_call(0), 200, 'grpc-status 0 (OK)');
    is(main::grpc_call(5), 200, 'grpc-status 5 (NOT_FOUND)');
    is(main::grpc_call(1), 200, 'grpc-status 1 (CANCELLED)');
    is(main::grpc_call(12), 200, 'grpc-status 12 (UNIMPLEMENTED)');
    is(main::grpc_call(4, undef, '1n'), 200, "grpc-status 4 (DEADLINE_EXCEEDED) once the call's own 1 ns deadline passed");
    is(main::grpc_call(4, undef, '100S', '1n'), 200, 'grpc-status 4, two deadlines (new may read the second)');
    is(main::grpc_call(4, undef, '-1S'), 200, 'grpc-status 4, a deadline the module does not read (new may)');
    my $s = main::status()->{services}[0];
    is(join(' ', map { $s->{responses}{new}{$_} // 0 } qw(2xx 4xx 5xx aborted)), '1 3 0 3', "OK is new's 2xx, NOT_FOUND, CANCELLED and UNIMPLEMENTED 4xx; DEADLINE_EXCEEDED the client's deadline explains is aborted");
    is($s->{fallback}{consecutive_failures}, 0, 'no breaker failure so far');
    is(main::grpc_call(4, undef, '10S'), 200, "grpc-status 4 well before the call's 10 s deadline: new's own");
    is(main::grpc_call(14, '/only'), 200, 'grpc-status 14 (UNAVAILABLE) in the header of an answer without a body');
    is(main::grpc_call(14), 200, 'grpc-status 14 in the trailers');
    $s = main::status()->{services}[0];
    is(join(' ', map { $s->{responses}{new}{$_} // 0 } qw(2xx 4xx 5xx aborted)), '1 3 3 3', 'DEADLINE_EXCEEDED of its own (504) and UNAVAILABLE (503) are 5xx');
    is_deeply($s->{fallback}, { state => 'open', consecutive_failures => 3, trips => 1 }, 'the three opened the breaker (503 and 504 are in statuses)');
    like(Test::MigrationNginx::error_log_text(), qr/fallback opened after 3 consecutive failures of the new cluster \(last: 503\)/, 'logged as 503');
}

# A new cluster played by Perl on $port: `$answer->($connection, $request)`
# answers each connection, in a process of its own, once the request's head
# is read; the connection is closed after it. Stopped at exit.
our @streamers;
END { kill 'KILL', @streamers if @streamers }
sub forked_new {
    my ($port, $answer) = @_;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port, Listen => 64, ReuseAddr => 1)
        or die "listen: $!";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $SIG{PIPE} = 'IGNORE';
        $SIG{CHLD} = 'IGNORE';
        while (my $c = $l->accept) {
            next if fork();
            my $req = '';
            while (defined(my $line = <$c>)) { $req .= $line; last if $line =~ /^\r?\n$/ }
            $answer->($c, $req);
            close $c;
            POSIX::_exit(0);
        }
        POSIX::_exit(0);
    }
    close $l;
    push @streamers, $pid;
}

# A new cluster streaming NDJSON (chunked, no Content-Length): one line at
# once, then, on a path with "idle", nothing for 3 s (a quiet stream), on one
# with "long", a line every 0.5 s for 10.5 s, and then (on every path) a close
# without the last chunk (a crash; a reset on a path with "reset").
sub streaming_new {
    my ($port) = @_;
    forked_new($port, sub {
        my ($c, $req) = @_;
        print $c "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
            . "9\r\n{\"n\": 1}\n\r\n";
        Time::HiRes::sleep(3) if $req =~ /idle/;
        if ($req =~ /long/) {
            for (1 .. 21) { Time::HiRes::sleep(0.5); print $c "9\r\n{\"n\": 2}\n\r\n" }
        }
        # A reset (RST) rather than a close: nginx reads an error.
        setsockopt($c, Socket::SOL_SOCKET(), Socket::SO_LINGER(), pack('ii', 1, 0)) if $req =~ /reset/;
    });
}

# A new cluster that answers whole but slowly: 4,000 bytes at 1,600 a second.
sub slow_whole_new {
    my ($port) = @_;
    my $body = 'y' x 4000;
    return "    server {\n        listen 127.0.0.1:$port;\n        location / { limit_rate 1600; return 200 \"$body\"; }\n    }\n";
}

# A new cluster that announces a body of 300,000 bytes (or, $grpc, a chunked
# body of type application/grpc), sends 150,000 at once and closes its
# connection (a crash mid-download).
sub crashing_new {
    my ($port, $grpc) = @_;
    my $head = $grpc
        ? "Content-Type: application/grpc\r\nTransfer-Encoding: chunked\r\n\r\n" . sprintf('%x', 150000) . "\r\n"
        : "Content-Length: 300000\r\n\r\n";
    forked_new($port, sub {
        my ($c) = @_;
        print $c "HTTP/1.1 200 OK\r\n$head" . ('z' x 150000);
        Time::HiRes::sleep(0.2);
    });
}

# An HTTP/2 frame: TYPE, FLAGS, STREAM-ID, PAYLOAD.
sub h2_frame {
    my ($type, $flags, $id, $payload) = @_;
    return substr(pack('N', length $payload), 1) . pack('CCN', $type, $flags, $id) . $payload;
}

# Reads and drops what comes on $c for $seconds, or until it closes.
sub drain_for {
    my ($c, $seconds) = @_;
    my $end = Time::HiRes::time() + $seconds;
    while (Time::HiRes::time() < $end) {
        my $ready = '';
        vec($ready, fileno($c), 1) = 1;
        last if select($ready, undef, undef, 0.1) && !sysread($c, my $junk, 65536);
    }
}

# A gRPC server (HTTP/2 without TLS) that answers a call's header at once,
# with :status $status, and then takes none of its messages: it never opens
# the flow-control window (65,535 bytes), and drains its socket for 10 s.
# (forked_new's read of a request head ends at the blank line of HTTP/2's
# preface, "PRI * HTTP/2.0\r\n\r\n": nginx's first frames came with it.)
sub unread_grpc_new {
    my ($port, $status) = @_;
    forked_new($port, sub {
        my ($c) = @_;
        # HPACK: :status 200 is static entry 8, another a literal of that
        # name; content-type (entry 31) a literal.
        my $fields = ($status == 200 ? "\x88" : "\x48\x03$status") . "\x5f\x10application/grpc";
        syswrite $c, h2_frame(4, 0, 0, '') . h2_frame(1, 4, 1, $fields);
        drain_for($c, 10);
    });
}

# An upload over HTTP/1.1 of $bytes bytes (200,000 by default) of type $type
# (gRPC by default: grpc_pass speaks HTTP/2 to new whatever the client
# speaks), written as far as nginx takes them. "STATUS whole|cut": the
# response's status, and whether its body came whole (its Content-Length, or
# its chunked body's end).
sub grpc_upload {
    my ($path, $bytes, $type) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port()) or die "connect: $!";
    my $body = 'm' x ($bytes // 200000);
    print $s "POST $path HTTP/1.1\r\nHost: api.example\r\nContent-Type: " . ($type // 'application/grpc') . "\r\n"
        . "Content-Length: " . length($body) . "\r\nConnection: close\r\n\r\n";
    $s->blocking(0);
    while (length $body) {
        my $ready = '';
        vec($ready, fileno($s), 1) = 1;
        last unless select(undef, $ready, undef, 0.5);
        my $sent = syswrite($s, $body, 16384) or last;
        substr($body, 0, $sent, '');
    }
    $s->blocking(1);
    my $response = '';
    while (1) {
        my $ready = '';
        vec($ready, fileno($s), 1) = 1;
        last unless select($ready, undef, undef, 10) && sysread($s, $response, 65536, length $response);
    }
    my ($head, $rest) = split /\r\n\r\n/, $response, 2;
    my ($status) = ($head // '') =~ m{^HTTP/1\.1 (\d+)};
    my ($length) = ($head // '') =~ m{\r\nContent-Length: (\d+)}i;
    my $whole = defined $length ? length($rest // '') == $length : ("\r\n" . ($rest // '')) =~ /\r\n0\r\n\r\n\z/;
    return join ' ', $status // 'none', $whole ? 'whole' : 'cut';
}

# A new cluster that answers at once, before the request's body (a 200
# announcing 100,000 bytes, 1,000 of them), then reads nothing for 2 s and
# closes.
sub deaf_new {
    my ($port) = @_;
    forked_new($port, sub {
        my ($c) = @_;
        print $c "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" . ('a' x 1000);
        Time::HiRes::sleep(2);
    });
}

# A GET over HTTP/2 without TLS (no HTTP/2 client library here: the frames
# by hand) from a client with a small receive buffer that reads nothing for
# $wait seconds (nginx's frames wait in its queue), then reads to the end,
# opening the flow-control window as it reads, as a browser does; or, with
# $cancel, cancels the stream (RST_STREAM CANCEL) once the header came. More
# request headers: NAME => VALUE after $cancel.
# Returns "STATUS DATA-BYTES RST_STREAM-CODE" ("none" for what did not come).
sub h2_get {
    my ($path, $wait, $cancel, %more) = @_;
    my $s = h2_open("\x82", $path, 1, %more);
    Time::HiRes::sleep($wait);
    return h2_read($s, $cancel && sub { syswrite $s, h2_frame(3, 0, 1, pack('N', 8)); 0 });
}

# A POST over HTTP/2 (as h2_get) of a body sent in two DATA frames of 600
# bytes: the second once the response's header came.
sub h2_upload {
    my ($path) = @_;
    my $s = h2_open("\x83", $path, 0);
    my $data = 'u' x 600;
    syswrite $s, h2_frame(0, 0, 1, $data);
    return h2_read($s, sub { syswrite $s, h2_frame(0, 1, 1, $data); 1 });
}

# A client-streaming gRPC call over HTTP/2 (as h2_get): 200,000 bytes of
# messages, sent as far as nginx's flow-control windows let them through.
sub h2_grpc_stream {
    my $s = h2_open("\x83", '/pkg.Service/Upload', 0, 'content-type' => 'application/grpc');
    my ($left, %window) = (200000, 0 => 65535, 1 => 65535);
    my $send = sub {
        while (1) {
            my ($n) = sort { $a <=> $b } 16384, $left, $window{0}, $window{1};
            last if $n <= 0;
            syswrite $s, h2_frame(0, 0, 1, 'm' x $n);
            ($left, $window{0}, $window{1}) = ($left - $n, $window{0} - $n, $window{1} - $n);
        }
    };
    $send->();
    return h2_read($s, sub { 1 }, sub { my ($id, $more) = @_; $window{$id} += $more; $send->() });
}

# A connection to port 4 with a small receive buffer, its stream 1 opened:
# HPACK: the method ("\x82" GET, "\x83" POST), http, :path and :authority as
# literals with indexed names, then NAME => VALUE literals; $end: no body.
sub h2_open {
    my ($method, $path, $end, %more) = @_;
    socket(my $s, Socket::PF_INET(), Socket::SOCK_STREAM(), 0) or die "socket: $!";
    setsockopt($s, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), 4096) or die "setsockopt: $!";
    connect($s, Socket::pack_sockaddr_in(rand_port(4), Socket::inet_aton('127.0.0.1'))) or die "connect: $!";
    my $headers = "$method\x86" . "\x04" . chr(length $path) . $path . "\x01" . chr(11) . 'api.example';
    $headers .= "\x00" . chr(length $_) . $_ . chr(length $more{$_}) . $more{$_} for sort keys %more;
    syswrite $s, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" . h2_frame(4, 0, 0, '') . h2_frame(1, $end ? 5 : 4, 1, $headers);
    return $s;
}

# Reads stream 1's response to its end, opening the flow-control window as
# it reads, as a browser does; `$on_header->()` runs once its header came,
# and the reading goes on if it returns true; `$on_window->(STREAM-ID,
# INCREMENT)` for each WINDOW_UPDATE. Closes the connection.
# "STATUS DATA-BYTES RST_STREAM-CODE" ("none" for what did not come).
sub h2_read {
    my ($s, $on_header, $on_window) = @_;
    my ($status, $bytes, $rst, $buf) = ('none', 0, 'none', '');
    my $read = sub { my ($n) = @_;
        while (length $buf < $n) {
            my $ready = ''; vec($ready, fileno($s), 1) = 1;
            return undef unless select($ready, undef, undef, 5);
            my $got = sysread($s, $buf, 65536, length $buf); return undef unless $got }
        return substr($buf, 0, $n, '') };
    while (defined(my $head = $read->(9))) {
        my ($len_hi, $len_lo, $type, $flags, $id) = unpack('CnCCN', $head);
        my $payload = $read->(($len_hi << 16) | $len_lo) // last;
        if ($type == 1 && $id == 1) {
            # :status 200 is HPACK's static entry 8; another, a literal.
            $status = substr($payload, 0, 1) eq "\x88" ? 200 : $payload =~ /^\x48\x03(\d{3})/ ? $1 : 'other';
            last if $on_header && !$on_header->();
        }
        elsif ($type == 0 && $id == 1) {
            $bytes += length $payload;
            last if $flags & 1;
            my $more = pack('N', length $payload);
            syswrite $s, h2_frame(8, 0, 0, $more) . h2_frame(8, 0, 1, $more) if length $payload;
        }
        elsif ($type == 3 && $id == 1) { $rst = unpack('N', $payload); last }
        elsif ($type == 8 && $on_window) { $on_window->($id, unpack('N', $payload)) }
        elsif ($type == 4 && !($flags & 1)) { syswrite $s, h2_frame(4, 1, 0, '') }
        elsif ($type == 7) { last }
    }
    close $s;
    return "$status $bytes $rst";
}

# HTTP/2 breaks (TESTs 21 and 22): a front on port 4 speaking HTTP/2 the way
# this nginx spells it (`http2 on` from 1.25.1; before, the listen's `http2`,
# which then speaks nothing else), with a small send buffer.
sub h2_break_front {
    my ($listen, $on) = h2_listen(@_);
    return <<"CONF";
    server {
        listen 127.0.0.1:\$TEST_NGINX_RAND_PORT_4 sndbuf=8k$listen;$on
        server_name api.example;
        location / {
            migration on;
            proxy_pass http://\$migration_backend;
        }
        location = /unbuffered {
            migration on;
            proxy_buffering off;
            proxy_pass http://\$migration_backend;
        }
        # new's slow but whole answer (routed to new: the service is at 100 %)
        location = /slow {
            migration on;
            proxy_pass http://127.0.0.1:\$TEST_NGINX_RAND_PORT_5;
        }
    }
CONF
}

sub h2_break_checks {
    main::crashing_new(rand_port(3));
    is(main::h2_get('/slow', 0, 'cancel'), '200 0 none', 'a client that cancels its stream after the header, while new sends its whole body slowly ...');
    Time::HiRes::sleep(1);
    is(main::fallback()->{consecutive_failures}, 0, '... is not a failure of new');
    is(main::h2_get('/', 0.5), '200 150000 2', 'new crashes after 150,000 of 300,000 bytes (buffered): the client reads them, then a reset stream');
    is(main::h2_get('/', 0.5), '200 150000 2', 'again');
    is(main::fallback()->{consecutive_failures}, 2, 'two failures of new');
    is(main::h2_get('/unbuffered', 0.5), '200 150000 2', 'the same unbuffered');
    is_deeply(main::fallback(), { state => 'open', consecutive_failures => 3, trips => 1 }, 'three broken responses opened the breaker');
    my $new = main::status()->{services}[0]{responses}{new};
    is(join(' ', map { $new->{$_} // 0 } qw(2xx failed)), '1 3', 'the cancelled stream is 2xx (its header was out), the broken ones failed');
}

# A new cluster that answers an upload at once, before its body (a 200
# announcing 100,000 bytes, 1,000 of them), then reads what comes for 1 s and
# closes.
sub early_answer_new {
    my ($port) = @_;
    forked_new($port, sub {
        my ($c) = @_;
        print $c "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" . ('a' x 1000);
        drain_for($c, 1);
    });
}

# A chunked upload of 600 bytes, then, once new's header came, 600 more: past
# a client_max_body_size of 1k after new answered. "STATUS BODY-BYTES".
sub upload_too_large {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port()) or die "connect: $!";
    my $chunk = sprintf("%x\r\n%s\r\n", 600, 'u' x 600);
    print $s "POST /upload HTTP/1.1\r\nHost: api.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n$chunk";
    my $head = '';
    $head .= $_ while defined($_ = <$s>) && $_ ne "\r\n";
    print $s $chunk;
    local $/;
    my $body = <$s> // '';
    return join ' ', ($head =~ m{^HTTP/1\.1 (\d+)})[0] // 'none', length $body;
}

# gRPC through a front that never buffers (`grpc_pass`, port 4) to a new
# cluster (port 3) that resets the call's stream mid-body: its own upstream
# (crashing_new, port 5) breaks off its chunked body: a gRPC body has no
# declared length. HTTP/2 the way this nginx spells it.
sub grpc_reset_servers {
    my ($listen, $on) = h2_listen(@_);
    return <<"CONF";
    server {
        listen 127.0.0.1:\$TEST_NGINX_RAND_PORT_3$listen;$on
        default_type application/grpc;
        location / { proxy_pass http://127.0.0.1:\$TEST_NGINX_RAND_PORT_5; }
    }
    server {
        listen 127.0.0.1:\$TEST_NGINX_RAND_PORT_4$listen;$on
        server_name api.example;
        location / { migration on; grpc_pass grpc://127.0.0.1:\$TEST_NGINX_RAND_PORT_3; }
    }
CONF
}

sub grpc_reset_checks {
    main::crashing_new(rand_port(5), 'grpc');
    # The front relays what came before the reset: up to 150,000 bytes.
    my $call = sub {
        my ($what, @deadline) = @_;
        my ($status, $bytes, $reset) = split ' ', main::h2_get('/pkg.Service/Stream', 0, undef, @deadline);
        is("$status $reset", '200 2', "$what: new's header, then a reset stream (INTERNAL_ERROR)");
        ok($bytes > 0 && $bytes <= 150000, "$what: part of the body ($bytes bytes)");
    };
    $call->('a call with a 1 ns deadline', 'grpc-timeout' => '1n');
    is(main::fallback()->{consecutive_failures}, 0, 'its deadline may explain the reset (a server resets a call past it): no failure of new');
    $call->('a call with a 100 s deadline', 'grpc-timeout' => '100S');
    is(main::fallback()->{consecutive_failures}, 1, 'reset well before its deadline: a failure of new');
    $call->("call $_ without a deadline") for 1 .. 2;
    is_deeply(main::fallback(), { state => 'open', consecutive_failures => 3, trips => 1 }, 'three broken calls opened the breaker');
    my $new = main::status()->{services}[0]{responses}{new};
    is(join(' ', map { $new->{$_} // 0 } qw(2xx failed aborted)), '0 3 1', 'failed, and the call its deadline explains aborted');
}

# TEST 23 over HTTP/2 (TESTs 27 and 28): a front on port 4 speaking HTTP/2
# the way this nginx spells it, whose /upload refuses bodies past 1k.
sub h2_upload_front {
    my ($listen, $on) = h2_listen(@_);
    return <<"CONF";
    server {
        listen 127.0.0.1:\$TEST_NGINX_RAND_PORT_4$listen;$on
        server_name api.example;
        location /upload {
            migration on;
            client_max_body_size 1k;
            proxy_http_version 1.1;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_pass http://\$migration_backend;
        }
    }
CONF
}

sub h2_upload_checks {
    main::early_answer_new(rand_port(3));
    for (1 .. 3) {
        my ($status, $bytes, $rst) = split ' ', main::h2_upload('/upload');
        is("$status $rst", '200 2', "upload $_: new's 200 went out, then the stream was reset (INTERNAL_ERROR)");
        cmp_ok($bytes, '<', 100000, "upload $_: cut short");
    }
    Time::HiRes::sleep(0.5);
    is(main::fallback()->{consecutive_failures}, 0, 'no failure of new');
    my $new = main::status()->{services}[0]{responses}{new};
    is(join(' ', map { $new->{$_} // 0 } qw(2xx failed)), '3 0', "new's three 200s");
}

# TEST 26 over HTTP/2 (TESTs 29 and 30): a front on port 4 speaking HTTP/2
# the way this nginx spells it, to unread_grpc_new on port 3.
sub h2_unread_grpc_front {
    my ($listen, $on) = h2_listen(@_);
    return <<"CONF";
    server {
        listen 127.0.0.1:\$TEST_NGINX_RAND_PORT_4$listen;$on
        server_name api.example;
        grpc_send_timeout 1s;
        location / { migration on; grpc_pass grpc://127.0.0.1:\$TEST_NGINX_RAND_PORT_3; }
    }
CONF
}

sub h2_unread_grpc_checks {
    main::unread_grpc_new(rand_port(3), 200);
    is(main::h2_grpc_stream(), '200 0 2', "call $_: new's 200, then the stream reset (INTERNAL_ERROR)") for 1 .. 3;
    Time::HiRes::sleep(0.5);
    is(main::fallback()->{consecutive_failures}, 0, 'no failure of new');
    my $new = main::status()->{services}[0]{responses}{new};
    is(join(' ', map { $new->{$_} // 0 } qw(2xx 5xx failed aborted)), '0 0 0 3', 'aborted: the client streamed more than new took');
}

# Three GETs whose responses new breaks off: each a 200 cut short.
sub three_cut_short {
    my ($what) = @_;
    for (1 .. 3) {
        my ($status, $bytes) = split ' ', raw('GET');
        Test::More::is($status, 200, "$what $_: a 200");
        Test::More::cmp_ok($bytes, '<', 2000, "$what $_: cut short");
    }
}

add_block_preprocessor(sub {
    my $block = shift;
    $block->{workers} //= ['2'];
    $block->{request} //= ["GET /status\n"];
    $block->{listen_options} //= ['reuseport'];
    $block->{http_config} //= ["    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n"];
    $block->{user_files} //= [[['m.yaml', yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_2')]]];
    $block->{config} //= [<<'CONF'];
    location / {
        migration on;
        proxy_set_header Host $migration_host;
        add_header X-Rule $migration_rule always;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
CONF
    $block->{http_config}[0] .= <<'BACKENDS';
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "old"; } }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location / {
            if (-f $TEST_NGINX_HTML_DIR/new-down) { return 502 "new is down"; }
            return 200 "new";
        }
    }
BACKENDS
});

run_tests();

__DATA__

=== TEST 1: three 502s from new open the breaker; then everything goes to old until the cooldown; a failed trial re-opens it, a good one closes it
--- error_log
[warn]
--- check_eval
is(main::get(), '200 new', 'new serves while healthy');
main::touch('new-down', 1);
is(main::get(), '502 new is down', "failure 1 reaches the client");
is(main::get(), '502 new is down', "failure 2");
is_deeply(main::fallback(), { state => 'closed', consecutive_failures => 2, trips => 0 }, 'two failures counted, still closed');
is(main::get(), '502 new is down', "failure 3");
is_deeply(main::fallback(), { state => 'open', consecutive_failures => 3, trips => 1 }, 'open after exactly 3');
like(error_log_text(), qr/\[warn\].*migration: service "api": fallback opened after 3 consecutive failures of the new cluster \(last: 502\); requests go to old for 1500ms/, 'the opening is logged at warn');
my %seen;
$seen{ main::get() }++ for 1 .. 20;
is_deeply(\%seen, { '200 old' => 20 }, 'during the cooldown all 20 requests go to old, on both workers');
my $r = http_request('GET', '/', [Host => 'api.example']);
is($r->{headers}{'x-rule'}, 'fallback', '$migration_rule is fallback');
is(main::get('X-Canary' => 'on'), '502 new is down', 'a header rule still reaches new, so testers see the failure');
Time::HiRes::sleep(1.6);
is(main::get(), '502 new is down', 'after the cooldown one trial goes to new; it fails');
is(main::get(), '200 old', 'and the breaker is open again');
is_deeply(main::fallback(), { state => 'open', consecutive_failures => 3, trips => 2 }, 're-opened: a second trip');
like(error_log_text(), qr/\[warn\].*fallback half-open after 1500ms: one trial request goes to new/, 'half-open logged');
like(error_log_text(), qr/\[warn\].*fallback re-opened: the trial request to new failed \(502\); requests go to old for 1500ms/, 're-open logged');
main::touch('new-down', 0);
is(main::get(), '200 old', 'new recovered, but the cooldown is not over');
Time::HiRes::sleep(1.6);
is(main::get(), '200 new', 'the trial succeeds');
like(error_log_text(), qr/\[warn\].*fallback closed: the trial request to new succeeded/, 'closing logged');
my %after;
$after{ main::get() }++ for 1 .. 20;
is_deeply(\%after, { '200 new' => 20 }, 'closed: new serves again');
is_deeply(main::fallback(), { state => 'closed', consecutive_failures => 0, trips => 2 }, 'status: closed');
my $doc = JSON::PP::decode_json(http_request('GET', '/status')->{body});
is($doc->{services}[0]{rules}{fallback}, 23, 'the fallback rule counted every diverted request (20 + 1 + 2)');



=== TEST 2: a new cluster that refuses connections trips the breaker too
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- error_log
[warn]
connect() failed (111: Connection refused)
--- check_eval
like(main::get(), qr/^502 /, "connection refused $_") for 1 .. 3;
is(main::get(), '200 old', 'then old');
is(main::fallback()->{state}, 'open', 'open');
like(error_log_text(), qr/fallback opened after 3 consecutive failures of the new cluster \(last: 502\)/, 'logged');
my $text = http_request('GET', '/status?format=prometheus')->{body};
like($text, qr/^migration_fallback_state\{service="api"\} 1$/m, 'Prometheus shows the state as 1');
like($text, qr/^migration_fallback_trips_total\{service="api"\} 1$/m, 'and one trip');



=== TEST 3: statuses not listed are not failures
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_2', statuses => '500') ]]
--- check_eval
main::touch('new-down', 1);
is(main::get(), '502 new is down', "a 502 is not in statuses: [500]") for 1 .. 5;
is_deeply(main::fallback(), { state => 'closed', consecutive_failures => 0, trips => 0 }, 'nothing counted');



=== TEST 4: a success in between resets the count
--- check_eval
main::touch('new-down', 1);
is(main::get(), '502 new is down', "failure $_") for 1 .. 2;
main::touch('new-down', 0);
is(main::get(), '200 new', 'a success');
main::touch('new-down', 1);
is(main::get(), '502 new is down', "failure $_ after the success") for 1 .. 2;
is(main::fallback()->{state}, 'closed', 'two after a success do not open it');
is(main::get(), '502 new is down', 'the third does');
is(main::fallback()->{state}, 'open', 'open');



=== TEST 5: the per-request recipe: a failed request to new is retried on old with $migration_old_*, and still counts for the breaker and in new's responses
--- config
    location / {
        migration on;
        proxy_set_header Host $migration_host;
        proxy_intercept_errors on;
        error_page 502 503 504 = @old;
        proxy_pass http://$migration_backend;
    }
    location @old {
        proxy_set_header Host $migration_old_host;
        add_header X-Retried-On $migration_old_backend always;
        proxy_pass $migration_old_scheme://$migration_old_backend;
    }
    location = /status { migration_status; }
--- error_log
[warn]
--- check_eval
main::touch('new-down', 1);
for my $i (1 .. 3) {
    my $r = http_request('GET', '/', [Host => 'api.example']);
    is("$r->{status} $r->{body}", '200 old', "failure $i is answered by old");
    like($r->{headers}{'x-retried-on'} // '', qr/^127\.0\.0\.1:\d+$/, 'by the recipe');
}
is(main::fallback()->{state}, 'open', 'the breaker counted the failures of new, not the retries');
my $responses = main::status()->{services}[0]{responses};
is_deeply([@{ $responses->{new} }{qw(2xx 5xx)}], [0, 3], "new's responses are its 502s, not the 200s old answered the retries with");
is_deeply($responses->{old}, { map { $_ => 0 } qw(1xx 2xx 3xx 4xx 5xx failed aborted) }, 'and old answered no request routed to it');



=== TEST 6: two workers share one count: failures served by either worker add up
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_2') =~ s/failures: 3/failures: 12/r ]]
--- config
    location / {
        migration on;
        proxy_set_header Host $migration_host;
        add_header X-Pid $pid always;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
--- check_eval
main::touch('new-down', 1);
my %pids;
for my $i (1 .. 11) {
    my $r = http_request('GET', '/', [Host => 'api.example']);
    $pids{ $r->{headers}{'x-pid'} }++;
}
is(scalar keys %pids, 2, 'the 11 failures were served by both workers');
is_deeply(main::fallback(), { state => 'closed', consecutive_failures => 11, trips => 0 }, 'and counted together');
is(main::get(), '502 new is down', 'the 12th failure');
is(main::fallback()->{state}, 'open', 'opens the breaker for both');



=== TEST 7: only routed requests speak for new: failures in a location without `migration on` that reads the variables change nothing
--- config
    location / {
        migration on;
        proxy_set_header Host $migration_host;
        proxy_pass http://$migration_backend;
    }
    location /other {
        # Not routed by the module: it only logs the decision, and proxies elsewhere.
        add_header X-Would-Go $migration_target always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    location = /status { migration_status; }
--- check_eval
main::touch('new-down', 1);
for (1 .. 5) {
    my $r = http_request('GET', '/other', [Host => 'api.example']);
    is("$r->{status} $r->{headers}{'x-would-go'}", '502 new', 'a 502 outside migration on');
}
is_deeply(main::fallback(), { state => 'closed', consecutive_failures => 0, trips => 0 }, 'the breaker did not count them');



=== TEST 8: refused connections count as failures even when statuses does not list 502
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3', statuses => '500') ]]
--- error_log
connect() failed (111: Connection refused)
--- check_eval
like(main::get(), qr/^502 /, "connection refused $_") for 1 .. 2;
is_deeply(main::fallback(), { state => 'closed', consecutive_failures => 2, trips => 0 }, 'two counted, although 502 is not in statuses: [500]');
like(main::get(), qr/^502 /, 'connection refused 3');
is(main::get(), '200 old', 'then old');
is_deeply(main::fallback(), { state => 'open', consecutive_failures => 3, trips => 1 }, 'open after exactly 3');
like(error_log_text(), qr/fallback opened after 3 consecutive failures of the new cluster \(last: 502\)/, 'logged');



=== TEST 9: a new cluster that accepts connections and never answers: each timeout counts, whatever statuses lists
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3', statuses => '500') ]]
--- init
# The kernel completes the handshake (the listen backlog); nobody ever reads.
$main::Silent = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => rand_port(3), Listen => 64, ReuseAddr => 1)
    or die "listen: $!";
--- config
    location / {
        migration on;
        proxy_read_timeout 300ms;
        proxy_connect_timeout 300ms;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
--- error_log
upstream timed out
--- check_eval
like(main::get(), qr/^504 /, "timeout $_") for 1 .. 2;
is_deeply(main::fallback(), { state => 'closed', consecutive_failures => 2, trips => 0 }, 'two counted, although 504 is not in statuses: [500]');
like(main::get(), qr/^504 /, 'timeout 3');
is(main::get(), '200 old', 'then old');
is_deeply(main::fallback(), { state => 'open', consecutive_failures => 3, trips => 1 }, 'open after exactly 3');
like(error_log_text(), qr/fallback opened after 3 consecutive failures of the new cluster \(last: 504\)/, 'logged, with the timeout status');



=== TEST 10: a client's own bad body, refused after nginx connected to new (`proxy_request_buffering off`), is not new's failure: no breaker step, and the response is counted as aborted
--- workers: 1
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    # new reads the whole body before it answers (its request buffering is on).
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; location / { proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1; } }
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- config
    location / {
        migration on;
        proxy_http_version 1.1;
        proxy_request_buffering off;
        client_body_timeout 500ms;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
--- check_eval
my $port = server_port();
my @statuses;
for my $how (qw(malformed malformed slow slow)) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port) or die "connect: $!";
    print $s "POST / HTTP/1.1\r\nHost: api.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n";
    # nginx has connected to new and sent it the first chunk; the rest never comes right.
    Time::HiRes::sleep(0.3);
    print $s "zz\r\n\r\n" if $how eq 'malformed';
    local $/;
    my $response = <$s> // '';
    close $s;
    push @statuses, ($response =~ m{^HTTP/1\.1 (\d+)})[0] // "none ($how)";
}
# A body timeout ends the request without a response (nginx's 408 is only logged).
like("@statuses", qr/^400 400 /, 'the malformed bodies got 400');
is_deeply(main::fallback(), { state => 'closed', consecutive_failures => 0, trips => 0 }, 'no failure of new counted');
my $new = status()->{services}[0]{responses}{new};
is(join(' ', map { $_ // 0 } @$new{qw(aborted failed 4xx)}), '4 0 0', 'the four counted as aborted, not failed');



=== TEST 11: new fails fast and the retry on old streams events: new's latency sample is kept (the stream is old's), and the class is new's 502
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; location / { default_type text/event-stream; return 200 "data: old\n\n"; } }
--- config
    location / {
        migration on;
        proxy_set_header Host $migration_host;
        proxy_intercept_errors on;
        error_page 502 = @old;
        proxy_pass http://$migration_backend;
    }
    location @old { proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_3; }
    location = /status { migration_status; }
--- check_eval
main::touch('new-down', 1);
my $r = http_request('GET', '/', [Host => 'api.example']);
is("$r->{status} $r->{body}", "200 data: old\n\n", 'answered by the retry, an event stream');
like($r->{headers}{'content-type'}, qr{^text/event-stream}, 'of type text/event-stream');
is(main::status()->{services}[0]{responses}{new}{'5xx'}, 1, "new's 502");
like(http_request('GET', '/status?format=prometheus')->{body}, qr/^migration_upstream_response_seconds_count\{service="api",target="new"\} 1$/m, "new's fast failure is a latency sample");



=== TEST 12: under `satisfy any`, a check that passes skips the rest of the access phase, the module's handler included: the request is decided before its content, and new's failures still count
--- error_log
[warn]
--- config
    location / {
        migration on;
        satisfy any;
        allow 127.0.0.1;
        auth_basic "closed";
        auth_basic_user_file /nonexistent;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
--- check_eval
main::touch('new-down', 1);
is(main::get(), '502 new is down', "failure $_") for 1 .. 3;
my $s = main::status()->{services}[0];
is($s->{requests}{new}, 3, 'the three requests were routed');
is($s->{responses}{new}{'5xx'}, 3, "new's 502s");
is($s->{fallback}{state}, 'open', 'and opened the breaker');



=== TEST 13: a client that trickles its body (`proxy_request_buffering off`) until new's own body timeout closes the connection is not new's failure: no breaker step, and the response is aborted
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    # new as an nginx-fronted app: it reads the whole body, within 1 s.
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
        client_body_timeout 1s;
        location / { proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
    }
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- config
    location / {
        migration on;
        proxy_http_version 1.1;
        proxy_request_buffering off;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
--- timeout: 20
--- check_eval
my @statuses;
for (1 .. 3) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port()) or die "connect: $!";
    # 5 of 100 bytes, then nothing (nginx's own client_body_timeout is 60 s).
    print $s "POST / HTTP/1.1\r\nHost: api.example\r\nContent-Length: 100\r\nConnection: close\r\n\r\nhello";
    local $/;
    push @statuses, ((<$s> // '') =~ m{^HTTP/1\.1 (\d+)})[0] // 'none';
}
is("@statuses", '502 502 502', "new closed each connection with the body unfinished: nginx answered 502");
like(error_log_text(), qr/upstream prematurely closed/, 'as nginx logged');
is_deeply(main::fallback(), { state => 'closed', consecutive_failures => 0, trips => 0 }, "a client's unfinished body is not new's failure");
my $new = main::status()->{services}[0]{responses}{new};
is(join(' ', map { $new->{$_} } qw(failed 5xx aborted)), '0 0 3', 'nor a failed or 5xx response of new: aborted');



=== TEST 14: X-Accel-Redirect from a gateway location (without migration on) to an internal location with migration on: the upstream routed there is new's, after the gateway's
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; location / { add_header X-Accel-Redirect /internal/x; return 200 ""; } }
--- config
    location /dl { proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_3; }
    location /internal/ {
        internal;
        migration on;
        proxy_set_header Host $migration_host;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
--- check_eval
my $r = http_request('GET', '/dl', [Host => 'api.example']);
is("$r->{status} $r->{body}", "200 new", 'new answered through X-Accel-Redirect');
main::touch('new-down', 1);
is(http_request('GET', '/dl', [Host => 'api.example'])->{status}, 502, "then new's 502") for 1 .. 2;
my $s = main::status()->{services}[0];
is($s->{requests}{new}, 3, 'routed');
is_deeply([@{ $s->{responses}{new} }{qw(2xx failed 5xx)}], [1, 0, 2], "new's 200 and 502s, not the gateway's answers");
is($s->{fallback}{consecutive_failures}, 2, "two failures of new");



=== TEST 15: routed locations reached through try_files or error_page (`/` without migration on): new's 502s reach the breaker and give latency samples
--- error_log
[warn]
--- config
    location / {
        try_files $uri =404;
        error_page 404 = @app;
    }
    location /named {
        migration on;
        try_files $uri @plain;
    }
    location @app {
        migration on;
        proxy_set_header Host $migration_host;
        proxy_pass http://$migration_backend;
    }
    location @plain {
        proxy_set_header Host $migration_host;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
--- check_eval
main::touch('new-down', 1);
is(http_request('GET', '/x', [Host => 'api.example'])->{status}, 502, "error_page 404 = \@app: failure $_") for 1 .. 2;
is(http_request('GET', '/named/x', [Host => 'api.example'])->{status}, 502, "try_files to a location without migration on: failure 3");
my $s = main::status()->{services}[0];
is($s->{requests}{new}, 3, 'the three were routed');
is($s->{responses}{new}{'5xx'}, 3, "new's 502s");
like(http_request('GET', '/status?format=prometheus')->{body}, qr/^migration_upstream_response_seconds_count\{service="api",target="new"\} 3$/m, 'three latency samples');
is($s->{fallback}{state}, 'open', 'and the three opened the breaker');



=== TEST 16: new stalls in the middle of its body (`proxy_buffering on`): the response nginx cuts short after proxy_read_timeout is a failure of new, not a 2xx; a HEAD to the same new is a success
--- http_config eval
"    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n" . main::stalling_new('$TEST_NGINX_RAND_PORT_3')
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3', statuses => '500') ]]
--- config
    location / {
        migration on;
        proxy_read_timeout 500ms;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
--- error_log
upstream timed out
--- check_eval
is(main::raw('HEAD'), '200 0', 'a HEAD: the header, no body to wait for');
main::three_cut_short('stalled');
is_deeply(main::fallback(), { state => 'open', consecutive_failures => 3, trips => 1 }, 'three broken responses opened the breaker, although statuses lists only 500');
like(error_log_text(), qr/fallback opened after 3 consecutive failures of the new cluster \(last: 502\)/, "logged with nginx's 502");
my $new = main::status()->{services}[0]{responses}{new};
is(join(' ', map { $new->{$_} // 0 } qw(2xx failed)), '1 3', "the HEAD is new's 2xx, the broken responses are failed");
is(main::raw('GET'), '200 3', 'then old answers');



=== TEST 17: new closes its connection in the middle of its body (`proxy_buffering off`, new an nginx whose own upstream stalls): a failure of new, as a whole response is a success, and a client that leaves mid-body is no failure
--- http_config eval
"    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n" . main::stalling_new('$TEST_NGINX_RAND_PORT_4') . <<'NEW'
    # new: an nginx-fronted app whose app stalls; new's own proxy gives up
    # after 300 ms and closes the connection mid-body.
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
        location / { proxy_read_timeout 300ms; proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_4; }
        location = /whole { return 200 "new"; }
        # Streamed as it comes: nginx writes to a client that left, and fails.
        location = /slow { proxy_buffering off; proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_5; }
    }
NEW
    # new's slow but whole answer: 4,000 bytes at 1,600 a second.
    . main::slow_whole_new('$TEST_NGINX_RAND_PORT_5')
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- config
    location / {
        migration on;
        proxy_buffering off;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
--- error_log
upstream prematurely closed connection
--- check_eval
my $whole = http_request('GET', '/whole', [Host => 'api.example']);
is("$whole->{status} $whole->{body}", '200 new', 'a whole response: a success');
is(main::raw_leave('/slow'), 200, 'a client that leaves after the header, while new sends its whole body slowly ...');
Time::HiRes::sleep(1);
is(main::fallback()->{consecutive_failures}, 0, '... is not a failure of new');
main::three_cut_short('broken');
is_deeply(main::fallback(), { state => 'open', consecutive_failures => 3, trips => 1 }, 'three broken responses opened the breaker');
my $new = main::status()->{services}[0]{responses}{new};
is(join(' ', map { $new->{$_} // 0 } qw(2xx failed)), '2 3', 'the two 2xx (the client that left got one), three failed');



=== TEST 18: gRPC errors (an HTTP 200 whose grpc-status says the error) count as the HTTP status the code stands for: UNAVAILABLE is new's 5xx and a breaker failure; DEADLINE_EXCEEDED after the call's own deadline is the client's (nginx >= 1.25.1: `http2 on`)
--- requires
nginx >= 1.25.1
configure --with-http_v2_module
--- http_config eval
"    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n" . main::grpc_servers('http2 on')
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- check_eval
main::grpc_checks();



=== TEST 19: gRPC errors count as the HTTP status the code stands for (nginx < 1.25.1: `listen ... http2`)
--- requires
nginx < 1.25.1
configure --with-http_v2_module
--- http_config eval
"    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n" . main::grpc_servers('listen http2')
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- check_eval
main::grpc_checks();



=== TEST 20: a stream without a declared length (chunked NDJSON) that idles past proxy_read_timeout is not new's failure, buffered or not; one that new closes before its last chunk is, where nginx tells it (buffered; unbuffered, sooner than proxy_read_timeout and 10 s; buffered, a reset sooner than proxy_read_timeout)
--- init
main::streaming_new(rand_port(3));
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- config
    location / {
        migration on;
        proxy_http_version 1.1;
        proxy_read_timeout 300ms;
        proxy_buffering off;
        proxy_pass http://$migration_backend;
    }
    location /buffered/ {
        migration on;
        proxy_http_version 1.1;
        proxy_read_timeout 300ms;
        proxy_pass http://$migration_backend;
    }
    # A read timeout raised for streams.
    location /patient/ {
        migration on;
        proxy_http_version 1.1;
        proxy_read_timeout 60s;
        proxy_buffering off;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
--- error_log
upstream timed out
--- check_eval
my $get = sub { my ($path, @opts) = @_; http_request('GET', $path, [Host => 'api.example'], undef, incomplete_ok => 1, @opts)->{status} };
is($get->("/idle/$_"), 200, "a quiet stream, unbuffered, $_") for 1 .. 3;
is($get->("/buffered/idle/$_"), 200, "a quiet stream, buffered, $_") for 1 .. 3;
my $s = main::status()->{services}[0];
is(join(' ', map { $s->{responses}{new}{$_} // 0 } qw(2xx failed)), '6 0', 'six 2xx of new');
is($s->{fallback}{consecutive_failures}, 0, 'no breaker failure');
is($get->('/patient/long/1', timeout => 20), 200, 'a stream new closes before its last chunk, unbuffered, 10.5 s after it began (less than proxy_read_timeout 60s) ...');
$s = main::status()->{services}[0];
is(join(' ', map { $s->{responses}{new}{$_} // 0 } qw(2xx failed)), '7 0', "... is not read as broken: past 10 s a timer on new's side may have closed it");
is($get->('/patient/cut/1'), 200, 'a stream new closes before its last chunk, unbuffered, at once');
$s = main::status()->{services}[0];
is(join(' ', map { $s->{responses}{new}{$_} // 0 } qw(2xx failed)), '7 1', 'failed');
is($get->('/buffered/cut/1'), 200, 'a stream new closes before its last chunk, buffered');
is($get->('/buffered/reset/1'), 200, 'a stream new resets before its last chunk, buffered, sooner than proxy_read_timeout');
$s = main::status()->{services}[0];
is(join(' ', map { $s->{responses}{new}{$_} // 0 } qw(2xx failed)), '7 3', 'three failed');
is($s->{fallback}{state}, 'open', 'and the breaker open');


=== TEST 21: HTTP/2: a download that new breaks off (a crash mid-body) while the client reads slowly, with flow control, is a failure of new, buffered or not; a client that cancels its stream mid-body is not (nginx >= 1.25.1: `http2 on`)
--- requires
nginx >= 1.25.1
configure --with-http_v2_module
--- http_config eval
"    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n" . main::slow_whole_new('$TEST_NGINX_RAND_PORT_5') . main::h2_break_front('http2 on')
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- check_eval
main::h2_break_checks();



=== TEST 22: HTTP/2 breaks, as TEST 21 (nginx < 1.25.1: `listen ... http2`)
--- requires
nginx < 1.25.1
configure --with-http_v2_module
--- http_config eval
"    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n" . main::slow_whole_new('$TEST_NGINX_RAND_PORT_5') . main::h2_break_front('listen')
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- check_eval
main::h2_break_checks();



=== TEST 23: an upload nginx refuses after new answered (past client_max_body_size, `proxy_request_buffering off`) cuts new's response short: the client's doing, not a failure of new
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- config
    location / {
        migration on;
        client_max_body_size 1k;
        proxy_http_version 1.1;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
--- error_log
client intended to send too large chunked body
--- check_eval
main::early_answer_new(rand_port(3));
for (1 .. 3) {
    my ($status, $bytes) = split ' ', main::upload_too_large();
    is($status, 200, "upload $_: new's 200 went out");
    cmp_ok($bytes, '<', 100000, "upload $_: cut short");
}
Time::HiRes::sleep(0.5);
is(main::fallback()->{consecutive_failures}, 0, 'no failure of new');
my $new = main::status()->{services}[0]{responses}{new};
is(join(' ', map { $new->{$_} // 0 } qw(2xx failed)), '3 0', "new's three 200s");



=== TEST 24: gRPC (never buffered, no declared length): a call whose stream new resets mid-body, sooner than grpc_read_timeout, is a failure of new, unless the call's own deadline may explain it (nginx >= 1.25.1: `http2 on`)
--- requires
nginx >= 1.25.1
configure --with-http_v2_module
--- http_config eval
"    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n" . main::grpc_reset_servers('http2 on')
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- check_eval
main::grpc_reset_checks();



=== TEST 25: gRPC calls new resets mid-body, as TEST 24 (nginx < 1.25.1: `listen ... http2`)
--- requires
nginx < 1.25.1
configure --with-http_v2_module
--- http_config eval
"    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n" . main::grpc_reset_servers('listen')
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- check_eval
main::grpc_reset_checks();



=== TEST 26: a streaming gRPC call whose messages new stops taking after it answered (grpc_pass keeps sending after the header; nginx gives up after grpc_send_timeout and writes 504 over new's 200): the client's stream, not a failure of new; new's own 504 is
--- requires
configure --with-http_v2_module
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- config
    grpc_send_timeout 1s;
    location / { migration on; grpc_pass grpc://127.0.0.1:$TEST_NGINX_RAND_PORT_3; }
    location /own504 { migration on; grpc_pass grpc://127.0.0.1:$TEST_NGINX_RAND_PORT_5; }
    location = /status { migration_status; }
--- error_log
upstream timed out (110: Connection timed out) while sending to client
--- check_eval
main::unread_grpc_new(rand_port(3), 200);
main::unread_grpc_new(rand_port(5), 504);
is(main::grpc_upload("/pkg.Service/Upload"), '200 cut', "call $_: new's 200, then the call cut short") for 1 .. 3;
Time::HiRes::sleep(0.5);
is(main::fallback()->{consecutive_failures}, 0, 'no failure of new');
my $new = main::status()->{services}[0]{responses}{new};
is(join(' ', map { $new->{$_} // 0 } qw(2xx 5xx failed aborted)), '0 0 0 3', 'aborted: the client streamed more than new took');
is(main::grpc_upload("/own504/pkg.Service/Upload"), '504 cut', "new's own 504 at once, then the call cut short");
Time::HiRes::sleep(0.5);
is(main::fallback()->{consecutive_failures}, 1, "new's own 504 is its failure");



=== TEST 27: an HTTP/2 upload nginx refuses after new answered (past client_max_body_size, `proxy_request_buffering off`) cuts new's response short: the client's doing, not a failure of new, as over HTTP/1.1 (TEST 23) (nginx >= 1.25.1: `http2 on`)
--- requires
nginx >= 1.25.1
configure --with-http_v2_module
--- http_config eval
"    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n" . main::h2_upload_front('http2 on')
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- error_log
client intended to send too large chunked body
--- check_eval
main::h2_upload_checks();



=== TEST 28: an HTTP/2 upload refused after new answered, as TEST 27 (nginx < 1.25.1: `listen ... http2`)
--- requires
nginx < 1.25.1
configure --with-http_v2_module
--- http_config eval
"    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n" . main::h2_upload_front('listen')
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- error_log
client intended to send too large chunked body
--- check_eval
main::h2_upload_checks();



=== TEST 29: a streaming gRPC call over HTTP/2 whose messages new stops taking after it answered: the client's stream, as over HTTP/1.1 (TEST 26) (nginx >= 1.25.1: `http2 on`)
--- requires
nginx >= 1.25.1
configure --with-http_v2_module
--- http_config eval
"    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n" . main::h2_unread_grpc_front('http2 on')
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- error_log
upstream timed out (110: Connection timed out) while sending request to upstream
--- check_eval
main::h2_unread_grpc_checks();



=== TEST 30: a streaming gRPC call over HTTP/2 new stops reading, as TEST 29 (nginx < 1.25.1: `listen ... http2`)
--- requires
nginx < 1.25.1
configure --with-http_v2_module
--- http_config eval
"    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n" . main::h2_unread_grpc_front('listen')
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- error_log
upstream timed out (110: Connection timed out) while sending request to upstream
--- check_eval
main::h2_unread_grpc_checks();



=== TEST 31: proxy_pass: an upload new answered at once and then stopped reading (`proxy_request_buffering off`) is no failure of new, however nginx ends it: its send timer, armed while the body waited, may fire after the header (504 over new's 200: aborted), or new's close ends it while the body was still coming (2xx)
--- user_files eval
[[ 'm.yaml', main::yaml_for(old => '$TEST_NGINX_RAND_PORT_1', new => '$TEST_NGINX_RAND_PORT_3') ]]
--- config
    location / {
        migration on;
        proxy_http_version 1.1;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_send_timeout 1s;
        client_max_body_size 10m;
        proxy_pass http://$migration_backend;
    }
    location = /status { migration_status; }
--- check_eval
main::deaf_new(rand_port(3));
is(main::grpc_upload('/upload', 8_000_000, 'application/octet-stream'), '200 cut', "upload $_: new's 200, then its body cut short") for 1 .. 3;
Time::HiRes::sleep(0.5);
is(main::fallback()->{consecutive_failures}, 0, 'no failure of new');
my $new = main::status()->{services}[0]{responses}{new};
is(join(' ', map { $new->{$_} // 0 } qw(5xx failed)), '0 0', 'no 5xx, nothing failed');
is(($new->{'2xx'} // 0) + ($new->{aborted} // 0), 3, "each new's 200 (2xx) or the client's body (aborted)");
