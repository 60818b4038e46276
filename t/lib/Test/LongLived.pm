package Test::LongLived;

# Helpers for tests of long-lived connections (WebSockets and server-sent
# events) proxied through nginx: a forking toy backend that upgrades
# WebSockets, streams SSE (/sse..., one event every 200 ms; /sse-quiet..., one
# event and then silence; /sse-flood..., 16 KB events without a pause) and answers plain GETs with its name (after
# 1.5 s for /slow...), and clients
# that open many such connections and watch when each one gets closed.
#
#   use lib 't/lib';
#   use Test::LongLived;
#
#   my $pid   = start_backend(port => $port, name => 'old');
#   my $conns = open_ws_many($nginx_port, '/ws', 40);
#   is(watch_closes($conns, 2), 0, 'all stay open');
#   ... reload / drain ...
#   is(watch_closes($conns, 10), 40, 'all closed');
#   close_all($conns);
#   stop_backend($pid);
#
# Core Perl only, so it runs wherever the test suite runs. Every process it
# forks leaves with POSIX::_exit, never through the test script's END blocks
# (Test::More would print its summary once per child otherwise).

use strict;
use warnings;

use Exporter 'import';
use Digest::SHA ();
use Errno ();
use IO::Select;
use IO::Socket::INET;
use MIME::Base64 ();
use POSIX ();
use Time::HiRes ();

our @EXPORT = qw(
    start_backend stop_backend
    ws_connect sse_connect open_ws_many
    watch_closes close_all
);
our @EXPORT_OK = (@EXPORT, qw(read_until));

use constant WS_GUID => '258EAFA5-E914-47DA-95CA-C5AB0DC11B85';

# pid => 1 for every backend started by this process and not yet stopped;
# the END block below kills what is left when a test dies half-way.
my %Running;
my $Owner = $$;

# --------------------------------------------------------------------------
# backend

# start_backend(port => $port, name => $name): returns the server's pid.
# The socket is bound and listening in the parent before the fork, so a
# client may connect as soon as this returns.
sub start_backend {
    my %arg  = @_;
    my $port = $arg{port} // die "start_backend: port => needed\n";
    my $name = $arg{name} // 'backend';

    my $listen = IO::Socket::INET->new(
        LocalAddr => '127.0.0.1',
        LocalPort => $port,
        Proto     => 'tcp',
        ReuseAddr => 1,
        Listen    => 128,
    ) or die "start_backend: cannot listen on 127.0.0.1:$port: $@\n";

    my $parent = $$;
    my $pid    = fork;
    die "start_backend: fork: $!\n" unless defined $pid;

    if ($pid == 0) {
        # The server leads its own process group: stop_backend kills the
        # group, so the per-connection children go with it.
        POSIX::setpgid(0, 0);
        eval { _server($listen, $name, $parent) };
        POSIX::_exit(0);
    }

    # Set it from both sides, so the group exists whichever runs first.
    POSIX::setpgid($pid, $pid);
    close $listen;
    $Running{$pid} = 1;
    return $pid;
}

# stop_backend($pid): SIGTERM to the server, which kills the connections it
# forked and reaps them before it exits (so no zombie is left for an init
# that may never reap it), then reap the server. Should it not be gone in
# 5 s, SIGKILL to its whole process group.
sub stop_backend {
    my ($pid) = @_;
    return unless $pid;
    local $?;    # waitpid must not change the test script's exit status
    kill 'TERM', $pid;
    my $deadline = Time::HiRes::time() + 5;
    my $r = 0;
    while (Time::HiRes::time() < $deadline) {
        $r = waitpid $pid, POSIX::WNOHANG();
        last if $r != 0;
        Time::HiRes::sleep(0.01);
    }
    if ($r == 0) {
        kill 'KILL', -$pid;
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
    delete $Running{$pid};
    return 1;
}

END {
    if ($$ == $Owner) {
        local $?;
        stop_backend($_) for keys %Running;
    }
}

# Close every inherited descriptor but the ones kept: a client socket the
# test script holds must not stay open in the backend, or closing it on the
# client side would never reach the server as EOF.
sub _close_fds {
    my %keep = map { $_ => 1 } 0, 1, 2, @_;
    my @fds;
    if (opendir my $dh, '/proc/self/fd') {
        @fds = grep { /^\d+$/ } readdir $dh;
        closedir $dh;
    } else {
        @fds = 3 .. 1023;
    }
    POSIX::close($_) for grep { !$keep{$_} } @fds;
}

sub _server {
    my ($listen, $name, $parent) = @_;

    _close_fds(fileno $listen);
    $SIG{PIPE} = 'IGNORE';    # a write to a gone peer fails, never kills
    $SIG{CHLD} = 'IGNORE';    # connection children are reaped by the kernel
    $SIG{$_}   = 'DEFAULT' for qw(INT HUP);
    $SIG{TERM} = \&_server_exit;

    my $sel = IO::Select->new($listen);
    while (1) {
        # The test script died without its END block (SIGKILL): do not
        # outlive it.
        _server_exit() if getppid() != $parent;
        next unless $sel->can_read(1);
        my $c = $listen->accept or next;
        my $pid = fork;
        if (!defined $pid) {
            close $c;
            next;
        }
        if ($pid == 0) {
            $SIG{TERM} = 'DEFAULT';
            my $server = getppid();
            close $listen;
            eval { _connection($c, $name, $server) };
            POSIX::_exit(0);
        }
        close $c;
    }
}

# Kill every connection child (they share the server's process group) and
# wait for them: with SIGCHLD ignored, wait() returns only once all children
# are gone, and the kernel has reaped them.
sub _server_exit {
    $SIG{TERM} = 'IGNORE';
    kill 'TERM', -$$;
    1 while waitpid(-1, 0) > 0 || $! == Errno::EINTR;
    POSIX::_exit(0);
}

sub _connection {
    my ($c, $name, $server) = @_;
    binmode $c;

    # Request header, up to the blank line.
    my $buf      = '';
    my $sel      = IO::Select->new($c);
    my $deadline = Time::HiRes::time() + 10;
    while (index($buf, "\r\n\r\n") < 0) {
        my $left = $deadline - Time::HiRes::time();
        return if $left <= 0 || length $buf > 65536;
        next unless $sel->can_read($left);
        my $n = sysread $c, $buf, 16384, length $buf;
        return unless $n;
    }
    my ($head) = split /\r\n\r\n/, $buf, 2;
    my ($line, @lines) = split /\r\n/, $head;
    my (undef, $path) = split / /, $line // '';
    $path //= '/';
    my %h;
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*?)\s*$/ or next;
        $h{lc $k} = $v;
    }

    if (($h{upgrade} // '') =~ /^websocket$/i && defined $h{'sec-websocket-key'}) {
        # /ws-slow...: the 101 after 0.5 s (a client's bytes arrive before it).
        Time::HiRes::sleep(0.5) if $path =~ m{^/ws-slow};
        my $accept = MIME::Base64::encode_base64(
            Digest::SHA::sha1($h{'sec-websocket-key'} . WS_GUID), '');
        _write_all($c, "HTTP/1.1 101 Switching Protocols\r\n"
            . "Upgrade: websocket\r\n"
            . "Connection: Upgrade\r\n"
            . "Sec-WebSocket-Accept: $accept\r\n"
            . "X-Backend: $name\r\n\r\n"
            . _ws_frame($name)) or return;
        # Hold it open until the peer closes; discard whatever it sends.
        while (1) {
            return if getppid() != $server;
            next unless $sel->can_read(1);
            my $n = sysread $c, my $junk, 65536;
            return unless $n;    # EOF or error: close our side too
        }
    }

    # A slow answer: its header only after 1.5 s (an upstream still working,
    # not a stream).
    Time::HiRes::sleep(1.5) if $path =~ m{^/slow};

    # /sse-quiet...: one event, then nothing until the peer closes (an idle
    # stream); /sse-flood...: 16 KB events as fast as they are taken (a
    # client that stops reading fills every buffer on the way); /sse...: an
    # event every 200 ms.
    my $every = $path =~ m{^/sse-quiet} ? 3600 : $path =~ m{^/sse-flood} ? 0 : 0.2;
    my $event = $path =~ m{^/sse-flood} ? 'x' x 16384 : $name;
    if ($path =~ m{^/sse}) {
        _write_all($c, "HTTP/1.1 200 OK\r\n"
            . "Content-Type: text/event-stream\r\n"
            . "Cache-Control: no-cache\r\n"
            . "X-Backend: $name\r\n"
            . "Connection: close\r\n\r\n") or return;
        while (1) {
            _write_all($c, "data: $event\n\n") or return;
            return if getppid() != $server;
            # Wait, but notice a peer that closed meanwhile.
            my $until = Time::HiRes::time() + $every;
            while ((my $left = $until - Time::HiRes::time()) > 0) {
                next unless $sel->can_read($left);
                my $n = sysread $c, my $junk, 65536;
                return unless $n;
            }
        }
    }

    _write_all($c, "HTTP/1.1 200 OK\r\n"
        . "Content-Length: " . length($name) . "\r\n"
        . "Connection: close\r\n"
        . "X-Backend: $name\r\n\r\n$name");
    close $c;
}

sub _write_all {
    my ($c, $data) = @_;
    while (length $data) {
        my $n = syswrite $c, $data;
        if (!defined $n) {
            next if $! == Errno::EINTR;
            return 0;
        }
        substr($data, 0, $n) = '';
    }
    return 1;
}

# One unmasked, final text frame (RFC 6455 5.2).
sub _ws_frame {
    my ($payload) = @_;
    my $len = length $payload;
    return "\x81" . chr($len) . $payload if $len < 126;
    return "\x81\x7e" . pack('n', $len) . $payload if $len < 65536;
    return "\x81\x7f" . pack('Q>', $len) . $payload;
}

# Decode one frame from the front of $$buf; returns the payload and removes
# the frame, or undef (buffer untouched) while it is incomplete.
sub _ws_unframe {
    my ($buf) = @_;
    return undef if length $$buf < 2;
    my ($b0, $b1) = unpack 'CC', $$buf;
    my $masked = $b1 & 0x80;
    my $len    = $b1 & 0x7f;
    my $off    = 2;
    if ($len == 126) {
        return undef if length $$buf < 4;
        $len = unpack 'n', substr($$buf, 2, 2);
        $off = 4;
    } elsif ($len == 127) {
        return undef if length $$buf < 10;
        $len = unpack 'Q>', substr($$buf, 2, 8);
        $off = 10;
    }
    my $mask = '';
    if ($masked) {
        return undef if length $$buf < $off + 4;
        $mask = substr $$buf, $off, 4;
        $off += 4;
    }
    return undef if length $$buf < $off + $len;
    my $payload = substr $$buf, $off, $len;
    if ($masked) {
        my @m = unpack 'C4', $mask;
        my @p = unpack 'C*', $payload;
        $p[$_] ^= $m[$_ % 4] for 0 .. $#p;
        $payload = pack 'C*', @p;
    }
    substr($$buf, 0, $off + $len) = '';
    return $payload;
}

# --------------------------------------------------------------------------
# clients

# Connect, send $request, read the response header. Returns the connection
# hash, or {error => ...}. Bytes read past the header stay in {rbuf}.
sub _http_open {
    my ($port, $request, $timeout, $then) = @_;
    my $opened = Time::HiRes::time();
    my $sock = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1',
        PeerPort => $port,
        Proto    => 'tcp',
        Timeout  => $timeout,
    ) or return { error => "connect 127.0.0.1:$port: " . ($@ || $!) };
    binmode $sock;
    _write_all($sock, $request)
        or return { error => "send to 127.0.0.1:$port: $!" };
    if (defined $then) {
        Time::HiRes::sleep(0.1);
        _write_all($sock, $then) or return { error => "send to 127.0.0.1:$port: $!" };
    }

    my $buf      = '';
    my $sel      = IO::Select->new($sock);
    my $deadline = Time::HiRes::time() + $timeout;
    while (index($buf, "\r\n\r\n") < 0) {
        my $left = $deadline - Time::HiRes::time();
        if ($left <= 0) {
            close $sock;
            return { error => "timeout reading the response header from port $port" };
        }
        next unless $sel->can_read($left);
        my $n = sysread $sock, $buf, 16384, length $buf;
        if (!defined $n) {
            next if $! == Errno::EINTR;
            my $e = "$!";
            close $sock;
            return { error => "read from port $port: $e" };
        }
        if ($n == 0) {
            close $sock;
            return { error => "port $port closed before the response header"
                      . (length $buf ? " (got: $buf)" : '') };
        }
    }
    my ($head, $rest) = split /\r\n\r\n/, $buf, 2;
    my ($line, @lines) = split /\r\n/, $head;
    my ($status) = ($line // '') =~ m{^HTTP/\d\.\d\s+(\d{3})}
        or do { close $sock; return { error => "bad status line: " . ($line // '') } };
    my %h;
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*?)\s*$/ or next;
        $k = lc $k;
        $h{$k} = exists $h{$k} ? "$h{$k}, $v" : $v;
    }
    return {
        sock      => $sock,
        status    => $status + 0,
        headers   => \%h,
        backend   => $h{'x-backend'},
        rbuf      => $rest // '',
        opened_at => $opened,
    };
}

sub _extra_headers {
    my ($opt) = @_;
    my $s = '';
    for my $p (@{ $opt->{headers} // [] }) {
        $s .= "$p->[0]: $p->[1]\r\n";
    }
    return $s;
}

# ws_connect($port, $path, host => ..., headers => [[name, value], ...],
# timeout => 5, preread => BYTES, then => BYTES): the WebSocket handshake;
# first_message is the payload of the first frame when it arrives within 1 s.
# `preread` bytes follow the handshake in the same write, as a client that does
# not wait for the 101 sends its first frame; `then` bytes follow 0.1 s later,
# before the 101 (see /ws-slow... on the backend).
sub ws_connect {
    my ($port, $path, %opt) = @_;
    my $timeout = $opt{timeout} // 5;
    my $key = MIME::Base64::encode_base64(
        pack('C16', map { int rand 256 } 1 .. 16), '');
    my $req = "GET $path HTTP/1.1\r\n"
        . "Host: " . ($opt{host} // 'localhost') . "\r\n"
        . "Upgrade: websocket\r\n"
        . "Connection: Upgrade\r\n"
        . "Sec-WebSocket-Version: 13\r\n"
        . "Sec-WebSocket-Key: $key\r\n"
        . _extra_headers(\%opt)
        . "\r\n"
        . ($opt{preread} // '');
    my $conn = _http_open($port, $req, $timeout, $opt{then});
    return $conn if $conn->{error};
    $conn->{ws_key} = $key;
    return $conn unless $conn->{status} == 101;

    my $sel      = IO::Select->new($conn->{sock});
    my $deadline = Time::HiRes::time() + 1;
    while (1) {
        my $msg = _ws_unframe(\$conn->{rbuf});
        if (defined $msg) {
            $conn->{first_message} = $msg;
            last;
        }
        my $left = $deadline - Time::HiRes::time();
        last if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread $conn->{sock}, $conn->{rbuf}, 16384, length $conn->{rbuf};
        next if !defined $n && $! == Errno::EINTR;
        if (!$n) {
            # Closed right after the upgrade: say so, the caller decides.
            $conn->{closed_at} = Time::HiRes::time();
            close $conn->{sock};
            last;
        }
    }
    return $conn;
}

# sse_connect($port, $path, %opt): a plain GET with Accept:
# text/event-stream; returns after the response header. The body is left on
# the socket (and in {rbuf}) for watch_closes or read_until; a chunked body
# is not decoded.
sub sse_connect {
    my ($port, $path, %opt) = @_;
    my $req = "GET $path HTTP/1.1\r\n"
        . "Host: " . ($opt{host} // 'localhost') . "\r\n"
        . "Accept: text/event-stream\r\n"
        . _extra_headers(\%opt)
        . "\r\n";
    return _http_open($port, $req, $opt{timeout} // 5);
}

# open_ws_many($port, $path, $n, headers => [...], each => sub { my $i = shift;
# return ([name, value], ...) }, ...): $n ws_connect calls; failed ones are
# in the list too, as {error => ...}.
sub open_ws_many {
    my ($port, $path, $n, %opt) = @_;
    my @conns;
    for my $i (0 .. $n - 1) {
        my %o = %opt;
        delete $o{each};
        my @h = @{ $opt{headers} // [] };
        push @h, $opt{each}->($i) if $opt{each};
        $o{headers} = \@h;
        push @conns, ws_connect($port, $path, %o);
    }
    return \@conns;
}

sub _open { my ($c) = @_; return $c->{sock} && !$c->{closed_at} && defined fileno $c->{sock} }

# read_until($conn, qr/.../, $seconds): read into $conn->{rbuf} until it
# matches; true on a match. EOF sets closed_at, as in watch_closes.
sub read_until {
    my ($conn, $re, $seconds) = @_;
    my $deadline = Time::HiRes::time() + ($seconds // 5);
    while ($conn->{rbuf} !~ $re) {
        return 0 unless _open($conn);
        my $left = $deadline - Time::HiRes::time();
        return 0 if $left <= 0;
        next unless IO::Select->new($conn->{sock})->can_read($left);
        my $n = sysread $conn->{sock}, $conn->{rbuf}, 16384, length $conn->{rbuf};
        next if !defined $n && $! == Errno::EINTR;
        if (!$n) {
            $conn->{closed_at} = Time::HiRes::time();
            close $conn->{sock};
        }
    }
    return 1;
}

# watch_closes(\@conns, $seconds): read and discard until $seconds pass or
# every connection is closed; sets closed_at on each that reads EOF or an
# error (ECONNRESET) and closes it. Returns how many closed in this call.
sub watch_closes {
    my ($conns, $seconds) = @_;
    my %by_fd;
    for my $c (@$conns) {
        next unless ref $c eq 'HASH' && _open($c);
        $by_fd{ fileno $c->{sock} } = $c;
    }
    my $sel = IO::Select->new(map { $_->{sock} } values %by_fd);
    my $closed   = 0;
    my $deadline = Time::HiRes::time() + $seconds;
    while ($sel->count) {
        my $left = $deadline - Time::HiRes::time();
        last if $left <= 0;
        for my $fh ($sel->can_read($left)) {
            my $n = sysread $fh, my $junk, 65536;
            next if !defined $n && ($! == Errno::EINTR || $! == Errno::EAGAIN);
            next if $n;
            my $c = $by_fd{ fileno $fh };
            $c->{closed_at} = Time::HiRes::time();
            $sel->remove($fh);
            close $fh;
            $closed++;
        }
    }
    return $closed;
}

# close_all(\@conns): the client side closes whatever is still open.
sub close_all {
    my ($conns) = @_;
    for my $c (@$conns) {
        next unless ref $c eq 'HASH' && $c->{sock};
        close $c->{sock} if defined fileno $c->{sock};
    }
    return;
}

1;
