# Hostile client input (docs/yaml.md, "Errors"): whatever a client sends, no worker
# crashes, the module never answers 500, and every request gets the decision the
# decision order defines, with a 200. Where nginx itself refuses a request
# (a header over large_client_header_buffers, a NUL byte, a bad Host), the
# status is nginx's own 400/414, and the worker goes on serving.
#
# Every block routes by the one service below (made from the block's
# `--- user_key` and `--- percentage`) and answers
#     "$migration_target $migration_rule $migration_service\n"
# so " none \n" means "no service matched". The percentage is 0 or 100 so that
# the split never depends on a hash or a coin: with a user id the rule is
# user_hash, without one it is weight, and the side is fixed.
#
# The workers run under a master (--- master_on), so a crashed worker would be
# logged as "exited on signal" (the harness fails a block on it, and on any
# [alert]/[crit]/[emerg]); every block also checks that nothing reached the log
# at [error] level.
#
# The client is 127.0.0.1 (outside every network of the YAML), or ::1 in the
# blocks that also listen on [::1]. Raw requests are sent by raw() below: the
# bytes go out exactly as written (not UTF-8, no Host, another peer address).
use lib 't/lib';
use Test::MigrationNginx;
use IO::Select;
use IO::Socket::IP;

# The service of every block. Placeholders: @USER_KEY@, @PERCENTAGE@, and
# @ELODIE@: the bytes "\xc3\xa9lodie" (élodie, in UTF-8), a listed user, to show that ids are
# matched as bytes, without any normalisation.
my $YAML = <<'YAML';
services:
  - name: api
    hosts: [localhost, api.example, "*.wild.example"]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:8001
    new_host: api.kong.internal
    new_backend: 127.0.0.1:8002
    migration:
      strategy: user
      percentage: @PERCENTAGE@
      user_key: "@USER_KEY@"
    canary:
      header_rules:
        - header: X-Migration-Target
          value: new
          target: new_cluster
        - header: X-Tenant
          values: [acme, globex]
          target: new_cluster
        - header: X-Build
          pattern: "^2026\\.11\\."
          target: new_cluster
        - header: X-Force-Old
          present: true
          target: old_cluster
        - header: X-Corp-Canary
          value: "1"
          target: new_cluster
          from: [10.0.0.0/8]
      ip_rules:
        - cidrs: [10.0.0.0/8, "2001:db8::/32"]
          target: new_cluster
        - cidrs: [192.168.0.0/16, "fd00::/8"]
          target: old_cluster
      user_rules:
        - users: [alice, bob, "@ELODIE@"]
          target: new_cluster
        - users: [mallory]
          target: old_cluster
YAML

my %REALIP = (
    # the peer (127.0.0.1 or ::1) is a trusted proxy: X-Real-IP is the client
    trusted => "    set_real_ip_from 127.0.0.1;\n    set_real_ip_from ::1;\n    real_ip_header X-Real-IP;\n",
    # only networks our peers are not in are trusted: X-Real-IP must be ignored
    untrusted => "    set_real_ip_from 192.0.2.0/24;\n    set_real_ip_from 2001:db8:ffff::/48;\n    real_ip_header X-Real-IP;\n",
);

sub section {
    my ($block, $name, $default) = @_;
    return $default unless defined $block->{$name};
    my $v = $block->{$name}[0];
    $v =~ s/^\s+|\s+\z//g;
    return $v;
}

add_block_preprocessor(sub {
    my $block = shift;
    my $yaml = $YAML;
    my $key = section($block, 'user_key', 'header:X-User-ID');
    my $pct = section($block, 'percentage', '0');
    $yaml =~ s/\@USER_KEY\@/$key/;
    $yaml =~ s/\@PERCENTAGE\@/$pct/;
    $yaml =~ s/\@ELODIE\@/\xc3\xa9lodie/;
    $block->set_value(user_files => [['m.yaml', $yaml]]);
    $block->set_value(http_config => "    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n")
        unless defined $block->{http_config};
    unless (defined $block->{config}) {
        my $conf = '';
        $conf .= "    listen [::1]:\$TEST_NGINX_SERVER_PORT;\n" if defined $block->{ipv6};
        $conf .= $REALIP{ section($block, 'realip', '') } // '';
        $conf .= <<'CONF';
    location / {
        migration on;
        add_header X-Remote-Addr $remote_addr always;
        add_header X-Cookie-Uid "[$cookie_uid]" always;
        add_header X-Arg-Uid "[$arg_uid]" always;
        return 200 "$migration_target $migration_rule $migration_service\n";
    }
    location /pinned/ {
        migration on;
        migration_service api;
        return 200 "$migration_target $migration_rule $migration_service\n";
    }
CONF
        $block->set_value(config => $conf);
    }
    $block->set_value(master_on => '') unless defined $block->{master_on};
    $block->set_value(no_error_log => "[error]\n[alert]\n[crit]\nexited on signal\npanicked\n")
        unless defined $block->{no_error_log};
});

plan tests => blocks() * 2;
run_tests();

# ---------------------------------------------------------------------------
# helpers

# raw($bytes, $peer): sends exactly $bytes on a new connection to the test
# server at $peer (127.0.0.1 by default, or ::1) and returns
# {status, headers => {lc name => value}, body, error}.
sub raw {
    my ($bytes, $peer) = @_;
    $peer //= '127.0.0.1';
    my $s = IO::Socket::IP->new(PeerHost => $peer, PeerPort => server_port(), Timeout => 10)
        or return { error => "cannot connect to [$peer]:" . server_port() . ": $@" };
    binmode $s;
    $s->autoflush(1);
    local $SIG{PIPE} = 'IGNORE';
    my $off = 0;
    while ($off < length $bytes) {
        my $n = syswrite($s, $bytes, length($bytes) - $off, $off);
        last unless defined $n;    # nginx may answer (400) and close first
        $off += $n;
    }
    my $data = '';
    my $sel = IO::Select->new($s);
    while ($sel->can_read(10)) {
        my $n = sysread($s, $data, 65536, length $data);
        last unless $n;
    }
    close $s;
    my ($head, $body) = split /\r\n\r\n/, $data, 2;
    my %r = (raw => $data);
    return { %r, error => 'no response' } unless defined $head && length $head;
    my ($status_line, @lines) = split /\r\n/, $head;
    ($r{status}) = $status_line =~ m{^HTTP/\d\.\d (\d{3})};
    for (@lines) {
        my ($n, $v) = /^([^:]+):\s*(.*)$/ or next;
        $r{headers}{ lc $n } = $v;
    }
    $body //= '';
    if (defined(my $len = $r{headers}{'content-length'})) { $body = substr($body, 0, $len) }
    $r{body} = $body;
    return \%r;
}

# request_bytes($path, [name => value, ...], %opt): a GET with Host: localhost
# (unless a Host is given, or no_host => 1) and Connection: close.
sub request_bytes {
    my ($path, $headers, %o) = @_;
    my @h = @{ $headers || [] };
    my $has_host = grep { $_ % 2 == 0 && lc $h[$_] eq 'host' } 0 .. $#h;
    my $req = "GET $path " . ($o{proto} // 'HTTP/1.1') . "\r\n";
    $req .= "Host: localhost\r\n" unless $has_host || $o{no_host};
    $req .= "Connection: close\r\n";
    for (my $i = 0; $i < @h; $i += 2) { $req .= "$h[$i]: $h[$i + 1]\r\n" }
    return "$req\r\n";
}

# decides([label, path, [headers], expected body, %opt], ...)
# opt: status (default 200), peer, raw (exact request bytes), proto, no_host,
#      like (regex for the body instead of an exact body),
#      headers => {name => value} expected response headers.
sub decides {
    for my $c (@_) {
        my ($label, $path, $headers, $want, %o) = @$c;
        my $bytes = $o{raw} // request_bytes($path, $headers, %o);
        my $r = raw($bytes, $o{peer});
        my $status = $o{status} // 200;
        is($r->{status}, $status, "$label: status $status")
            or diag($r->{error} // substr($r->{raw} // '', 0, 600));
        if (defined $o{like}) {
            like($r->{body} // '', $o{like}, "$label: body");
        } elsif (defined $want) {
            is($r->{body}, $want, "$label: decision");
        }
        for my $h (sort keys %{ $o{headers} || {} }) {
            is($r->{headers}{ lc $h }, $o{headers}{$h}, "$label: $h");
        }
    }
}

# n headers: hdrs(name => [values])
sub repeat { my ($name, @values) = @_; return map { ($name, $_) } @values }

__DATA__

=== TEST 1: very long header values and an 8000-byte user id (within large_client_header_buffers 4 8k) are plain values
--- percentage: 100
--- request
GET /
--- more_headers eval
"X-User-ID: " . ('u' x 8000)
--- response_body
new user_hash api
--- check_eval
my $long = 'x' x 7990;
main::decides(
    ['8000-byte id starting with a listed user', '/', ['X-User-ID' => 'alice' . ('x' x 7995)], "new user_hash api\n"],
    ['listed user next to a 7000-byte header',   '/', ['X-Padding' => 'p' x 7000, 'X-User-ID' => 'alice'], "new user_list api\n"],
    ['three 7000-byte headers and a listed user','/', ['X-P1' => 'p' x 7000, 'X-P2' => 'q' x 7000, 'X-P3' => 'r' x 7000,
                                                       'X-User-ID' => 'mallory'], "old user_list api\n"],
    ['value: 7998 bytes of "new" repeated',      '/', ['X-Migration-Target' => 'new' x 2666], "new weight api\n"],
    ['values: 8000 bytes of "acme" repeated',    '/', ['X-Tenant' => 'acme' x 2000], "new weight api\n"],
    ['pattern: matches a 7998-byte value',       '/', ['X-Build' => "2026.11.$long"], "new header api\n"],
    ['pattern: anchored, 7998 bytes before it',  '/', ['X-Build' => "${long}2026.11."], "new weight api\n"],
    ['present: 8000-byte value',                 '/', ['X-Force-Old' => 'o' x 8000], "old header api\n"],
    ['from: 8000-byte value is not "1"',         '/', ['X-Corp-Canary' => '1' x 8000], "new weight api\n"],
    ['long rule header and long user id',        '/', ['X-Build' => "2026.11.$long", 'X-User-ID' => 'u' x 8000], "new header api\n"],
);



=== TEST 2: a header, cookie or URI over nginx's limits gets nginx's own 400 or 414, and the worker goes on serving
--- user_key: cookie:uid
--- request
GET /
--- more_headers eval
"X-User-ID: " . ('u' x 9000)
--- error_code: 400
--- response_body_like: Request Header Or Cookie Too Large
--- error_log
client sent too long header line
--- check_eval
main::decides(
    ['9000-byte cookie',            '/', [Cookie => 'uid=' . ('c' x 9000)], undef, status => 400,
        like => qr/Request Header Or Cookie Too Large/],
    ['five 7000-byte headers',      '/', [map { ("X-P$_" => 'p' x 7000) } 1 .. 5], undef, status => 400,
        like => qr/Request Header Or Cookie Too Large/],
    ['9000-byte query string',      '/?uid=' . ('a' x 9000), [], undef, status => 414],
    ['the worker still decides',    '/', [Cookie => 'uid=alice'], "new user_list api\n"],
    ['8000-byte cookie is a value', '/', [Cookie => 'uid=' . ('c' x 8000)], "old user_hash api\n"],
);



=== TEST 3: the first of 100 X-User-ID headers decides
--- request
GET /
--- more_headers eval
CORE::join "\n", "X-User-ID: alice", map { "X-User-ID: mallory-$_" } 1 .. 99
--- response_body
new user_list api
--- check_eval
main::decides(
    ['mallory, then 99 alice',              '/', ['X-User-ID' => 'mallory', main::repeat('X-User-ID', ('alice') x 99)], "old user_list api\n"],
    ['unlisted, then 99 alice',             '/', ['X-User-ID' => 'zed', main::repeat('X-User-ID', ('alice') x 99)], "old user_hash api\n"],
    ['empty first: absent, not the next',   '/', ['X-User-ID' => '', main::repeat('X-User-ID', ('alice') x 99)], "old weight api\n"],
    ['names in any case: x-user-id first',  '/', ['x-user-id' => 'mallory', main::repeat('X-USER-ID', ('alice') x 99)], "old user_list api\n"],
    ['100 distinct unlisted ids',           '/', [main::repeat('X-User-ID', map { "u$_" } 1 .. 100)], "old user_hash api\n"],
);



=== TEST 4: the first of 100 repeated rule headers decides
--- request
GET /
--- more_headers eval
CORE::join "\n", "X-Migration-Target: new", map { "X-Migration-Target: old" } 1 .. 99
--- response_body
new header api
--- check_eval
main::decides(
    ['value: old first, then 99 new',     '/', [main::repeat('X-Migration-Target', 'old', ('new') x 99)], "old weight api\n"],
    ['values: umbrella, then 99 acme',    '/', [main::repeat('X-Tenant', 'umbrella', ('acme') x 99)], "old weight api\n"],
    ['values: globex, then 99 umbrella',  '/', [main::repeat('X-Tenant', 'globex', ('umbrella') x 99)], "new header api\n"],
    ['pattern: v1 first, then 99 matches','/', [main::repeat('X-Build', 'v1', ('2026.11.1') x 99)], "old weight api\n"],
    ['present: 100 X-Force-Old',          '/', [main::repeat('X-Force-Old', map { "o$_" } 1 .. 100)], "old header api\n"],
    ['from: 100 X-Corp-Canary: 1 from 127.0.0.1', '/', [main::repeat('X-Corp-Canary', ('1') x 100)], "old weight api\n"],
    ['rule order: X-Migration-Target before X-Force-Old', '/',
        [main::repeat('X-Force-Old', ('x') x 100), main::repeat('X-Migration-Target', ('new') x 100)], "new header api\n"],
    ['300 other headers, the rule header last', '/',
        [(map { ("X-Noise-$_" => 'n') } 1 .. 300), 'X-Migration-Target' => 'new'], "new header api\n"],
    ['100 of every rule header, none matching first', '/',
        [main::repeat('X-Migration-Target', 'no', ('new') x 99), main::repeat('X-Tenant', 'no', ('acme') x 99),
         main::repeat('X-Build', 'no', ('2026.11.1') x 99), main::repeat('X-Corp-Canary', ('1') x 100),
         main::repeat('X-User-ID', 'alice', ('mallory') x 99)], "new user_list api\n"],
);



=== TEST 5: an empty X-User-ID counts as absent (the split falls back to weight); an empty rule header is a present, empty value
--- percentage: 100
--- request
GET /
--- more_headers
X-User-ID:
--- response_body
new weight api
--- check_eval
main::decides(
    ['X-User-ID of spaces (nginx trims them)', '/', ['X-User-ID' => '    '], "new weight api\n"],
    ['empty X-User-ID, then alice',      '/', ['X-User-ID' => '', 'X-User-ID' => 'alice'], "new weight api\n"],
    ['mallory (sanity)',                 '/', ['X-User-ID' => 'mallory'], "old user_list api\n"],
    ['an unlisted id (sanity)',          '/', ['X-User-ID' => 'zed'], "new user_hash api\n"],
    ['empty X-Migration-Target',         '/', ['X-Migration-Target' => ''], "new weight api\n"],
    ['empty X-Tenant',                   '/', ['X-Tenant' => ''], "new weight api\n"],
    ['empty X-Build',                    '/', ['X-Build' => ''], "new weight api\n"],
    ['empty X-Force-Old: present',       '/', ['X-Force-Old' => ''], "old header api\n"],
    ['empty X-Corp-Canary',              '/', ['X-Corp-Canary' => ''], "new weight api\n"],
    ['X-Tenant with spaces around acme (trimmed by nginx)', '/', ['X-Tenant' => '  acme  '], "new header api\n"],
);



=== TEST 6: an empty cookie:uid counts as absent
--- user_key: cookie:uid
--- percentage: 100
--- request
GET /
--- more_headers
Cookie: uid=
--- response_body
new weight api
--- check_eval
main::decides(
    ['uid= then uid=alice: the first, empty', '/', [Cookie => 'uid=; uid=alice'], "new weight api\n"],
    ['uid= ; a=1',                    '/', [Cookie => 'uid= ; a=1'], "new weight api\n"],
    ['empty Cookie header',           '/', [Cookie => ''], "new weight api\n"],
    ['uid="" (two quotes, a value)',  '/', [Cookie => 'uid=""'], "new user_hash api\n"],
    ['uid=mallory (sanity)',          '/', [Cookie => 'uid=mallory'], "old user_list api\n"],
);



=== TEST 7: an empty arg:uid counts as absent
--- user_key: arg:uid
--- percentage: 100
--- request
GET /?uid=
--- response_body
new weight api
--- check_eval
main::decides(
    ['?uid=&uid=alice: the first, empty', '/?uid=&uid=alice', [], "new weight api\n"],
    ['?',                 '/?',            [], "new weight api\n"],
    ['?&&&',              '/?&&&',         [], "new weight api\n"],
    ['?uid=mallory (sanity)', '/?uid=mallory', [], "old user_list api\n"],
);



=== TEST 8: bytes that are not UTF-8 in headers are values, matched as bytes
--- raw_request eval
"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-User-ID: \xff\xfe\r\n\r\n"
--- response_body
old user_hash api
--- check_eval
main::decides(
    ['id with \\xff inside',           '/', ['X-User-ID' => "al\xffice"], "old user_hash api\n"],
    ['id with an overlong NUL',        '/', ['X-User-ID' => "alice\xc0\x80"], "old user_hash api\n"],
    ['id with a truncated sequence',   '/', ['X-User-ID' => "\xe2\x82"], "old user_hash api\n"],
    ['listed UTF-8 id (NFC bytes)',    '/', ['X-User-ID' => "\xc3\xa9lodie"], "new user_list api\n"],
    ['same id decomposed (NFD): other bytes', '/', ['X-User-ID' => "e\xcc\x81lodie"], "old user_hash api\n"],
    ['same id in Latin-1',             '/', ['X-User-ID' => "\xe9lodie"], "old user_hash api\n"],
    ['value: overlong "new"',          '/', ['X-Migration-Target' => "\xc1\xae\xc1\xa5\xc1\xb7"], "old weight api\n"],
    ['values: acme + \\xa0 (not trimmed)', '/', ['X-Tenant' => "acme\xa0"], "old weight api\n"],
    ['values: not UTF-8, then alice',  '/', ['X-Tenant' => "\xff\xfe", 'X-User-ID' => 'alice'], "new user_list api\n"],
    ['pattern: matches before \\xff\\xfe', '/', ['X-Build' => "2026.11.\xff\xfe"], "new header api\n"],
    ['pattern: \\xff before the anchor', '/', ['X-Build' => "\xff2026.11.1"], "old weight api\n"],
    ['present: \\xff',                 '/', ['X-Force-Old' => "\xff"], "old header api\n"],
    # nginx drops header lines whose name is not a token (ignore_invalid_headers on)
    ['name not UTF-8: ignored by nginx', '/', ["X-\xff\xfe" => '1', 'X-User-ID' => 'alice'], "new user_list api\n"],
    ['X-User-ID\\xff: not X-User-ID',  '/', ["X-User-ID\xff" => 'alice'], "old weight api\n"],
    # a NUL byte is refused by nginx before any decision
    ['NUL in a value: nginx 400',      '/', ['X-User-ID' => "al\0ice"], undef, status => 400],
    ['the worker still decides',       '/', ['X-User-ID' => 'alice'], "new user_list api\n"],
);



=== TEST 9: bytes that are not UTF-8 in cookies are values, matched as bytes
--- user_key: cookie:uid
--- raw_request eval
"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nCookie: uid=\xff\xfe\r\n\r\n"
--- response_body
old user_hash api
--- check_eval
main::decides(
    ['a cookie named \\xff\\xfe, then uid=alice', '/', [Cookie => "\xff\xfe=1; uid=alice"], "new user_list api\n",
        headers => {'X-Cookie-Uid' => '[alice]'}],
    ['uid=al\\xffice',           '/', [Cookie => "uid=al\xffice"], "old user_hash api\n"],
    ['uid=alice\\xc0\\x80',      '/', [Cookie => "uid=alice\xc0\x80"], "old user_hash api\n"],
    ['\\xffuid=alice: another name', '/', [Cookie => "\xffuid=alice"], "old weight api\n", headers => {'X-Cookie-Uid' => '[]'}],
    ['uid=élodie in UTF-8',       '/', [Cookie => "uid=\xc3\xa9lodie"], "new user_list api\n"],
    ['uid=élodie in Latin-1',     '/', [Cookie => "uid=\xe9lodie"], "old user_hash api\n"],
);



=== TEST 10: bytes that are not UTF-8 in the query string and the path are values, matched as raw bytes
--- user_key: arg:uid
--- raw_request eval
"GET /?uid=\xff\xfe HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
--- response_body
old user_hash api
--- check_eval
main::decides(
    ['an arg named \\xff\\xfe, then uid=alice', "/?\xff\xfe=1&uid=alice", [], "new user_list api\n",
        headers => {'X-Arg-Uid' => '[alice]'}],
    ['path not UTF-8',                "/\xff\xfe/x?uid=alice", [], "new user_list api\n"],
    ['uid=élodie in UTF-8',           "/?uid=\xc3\xa9lodie", [], "new user_list api\n"],
    ['uid=élodie percent-encoded: not decoded', '/?uid=%C3%A9lodie', [], "old user_hash api\n",
        headers => {'X-Arg-Uid' => '[%C3%A9lodie]'}],
    ['uid with an overlong dot',      "/?uid=al\xc0\xaece", [], "old user_hash api\n"],
);



=== TEST 11: malformed Cookie headers read like $cookie_uid (nginx's parser), an empty or missing uid is absent
--- user_key: cookie:uid
--- request
GET /
--- more_headers
Cookie: uid=;uid=alice
--- response_headers
X-Cookie-Uid: []
--- response_body
old weight api
--- check_eval
my @c = (
    # [cookie header value(s), expected decision, expected $cookie_uid]
    ['uid',                    "old weight api\n",    '[]'],
    ['=x',                     "old weight api\n",    '[]'],
    [';;;',                    "old weight api\n",    '[]'],
    [';;;=;uid=alice',         "new user_list api\n", '[alice]'],
    ['uid="alice"',            "old user_hash api\n", '["alice"]'],
    ['uid = alice',            "new user_list api\n", '[alice]'],
    ['UID=alice',              "new user_list api\n", '[alice]'],
    ['uidx=alice',             "old weight api\n",    '[]'],
    ['xuid=mallory; uid=alice',"new user_list api\n", '[alice]'],
    ['a=uid=mallory; uid=alice',"new user_list api\n",'[alice]'],
    ['a=1,uid=alice',          "new user_list api\n", '[alice]'],
    ['uid=alice,bob',          "old user_hash api\n", '[alice,bob]'],
    ['uid==alice',             "old user_hash api\n", '[=alice]'],
    ['uid=alice; uid=mallory', "new user_list api\n", '[alice]'],
    [' ; ; uid=alice ;',       "old user_hash api\n", '[alice ]'],
    ['pad=' . ('x' x 4000) . '; uid=alice', "new user_list api\n", '[alice]'],
);
for my $c (@c) {
    my $label = length $c->[0] > 40 ? 'Cookie: ' . length($c->[0]) . ' bytes, uid=alice last' : "Cookie: $c->[0]";
    main::decides([$label, '/', [Cookie => $c->[0]], $c->[1], headers => {'X-Cookie-Uid' => $c->[2]}]);
}
main::decides(
    ['a 4000-byte uid',                      '/', [Cookie => 'uid=' . ('y' x 4000)], "old user_hash api\n"],
    ['two Cookie headers: a=1, uid=alice',   '/', [Cookie => 'a=1', Cookie => 'uid=alice'], "new user_list api\n",
        headers => {'X-Cookie-Uid' => '[alice]'}],
    ['two Cookie headers: mallory first',    '/', [Cookie => 'uid=mallory', Cookie => 'uid=alice'], "old user_list api\n",
        headers => {'X-Cookie-Uid' => '[mallory]'}],
    ['two Cookie headers: empty uid first',  '/', [Cookie => 'uid=', Cookie => 'uid=alice'], "old weight api\n",
        headers => {'X-Cookie-Uid' => '[]'}],
    ['100 Cookie headers, uid=alice last',   '/', [(map { (Cookie => "c$_=$_") } 1 .. 99), Cookie => 'uid=alice'],
        "new user_list api\n"],
    ['two 4000-byte Cookie headers',         '/', [Cookie => 'a=' . ('x' x 4000), Cookie => 'b=' . ('y' x 4000) . '; uid=bob'],
        "new user_list api\n"],
);



=== TEST 12: malformed query strings read like $arg_uid (raw bytes, not percent-decoded)
--- user_key: arg:uid
--- request
GET /?=&&uid=alice&
--- response_headers
X-Arg-Uid: [alice]
--- response_body
new user_list api
--- check_eval
my @c = (
    # [path, expected decision, expected $arg_uid]
    ['/?uid',                    "old weight api\n",    '[]'],
    ['/?uid=%zz',                "old user_hash api\n", '[%zz]'],
    ['/?uid=al%69ce',            "old user_hash api\n", '[al%69ce]'],
    ['/?uid=%61lice',            "old user_hash api\n", '[%61lice]'],
    ['/?uid=alice%00',           "old user_hash api\n", '[alice%00]'],
    ['/?UID=alice',              "new user_list api\n", '[alice]'],
    ['/?uid=&uid=alice',         "old weight api\n",    '[]'],
    ['/?uid=alice&uid=mallory',  "new user_list api\n", '[alice]'],
    ['/?xuid=mallory&uid=alice', "new user_list api\n", '[alice]'],
    ['/?uid=alice=x',            "old user_hash api\n", '[alice=x]'],
    ['/?uid=a+b',                "old user_hash api\n", '[a+b]'],
    ['/?uid=alice;x=1',          "old user_hash api\n", '[alice;x=1]'],
    ['/??uid=alice',             "old weight api\n",    '[]'],
    ['/?&uid=alice',             "new user_list api\n", '[alice]'],
    ['/x;uid=alice',             "old weight api\n",    '[]'],
    ['/%3Fuid=alice',            "old weight api\n",    '[]'],
    ['/?uid=' . ('z' x 7000),    "old user_hash api\n", '[' . ('z' x 7000) . ']'],
);
for my $c (@c) {
    my $label = length $c->[0] > 60 ? 'GET /?uid= and 7000 bytes' : "GET $c->[0]";
    main::decides([$label, $c->[0], [], $c->[1], headers => {'X-Arg-Uid' => $c->[2]}]);
}



=== TEST 13: IPv6 clients: a direct ::1 peer, and IPv6 and IPv4-mapped addresses from a trusted X-Real-IP
--- ipv6
--- realip: trusted
--- request
GET /
--- more_headers
X-Real-IP: 2001:db8::1
--- response_headers
X-Remote-Addr: 2001:db8::1
--- response_body
new cidr api
--- check_eval
my $v6 = '::1';
main::decides(
    ['peer ::1, no X-Real-IP',               '/', [], "old weight api\n", peer => $v6, headers => {'X-Remote-Addr' => '::1'}],
    ['peer ::1, X-Real-IP 2001:db8::1',      '/', ['X-Real-IP' => '2001:db8::1'], "new cidr api\n", peer => $v6],
    ['peer ::1, X-Real-IP fd00::1',          '/', ['X-Real-IP' => 'fd00::1'], "old cidr api\n", peer => $v6],
    ['peer ::1, X-Real-IP ::ffff:10.1.2.3',  '/', ['X-Real-IP' => '::ffff:10.1.2.3'], "new cidr api\n", peer => $v6],
    ['X-Real-IP ::ffff:10.1.2.3 (mapped)',   '/', ['X-Real-IP' => '::ffff:10.1.2.3'], "new cidr api\n",
        headers => {'X-Remote-Addr' => '::ffff:10.1.2.3'}],
    ['X-Real-IP ::ffff:192.168.1.1',         '/', ['X-Real-IP' => '::ffff:192.168.1.1'], "old cidr api\n"],
    ['X-Real-IP 2001:DB8:0:0:0:0:0:1',       '/', ['X-Real-IP' => '2001:DB8:0:0:0:0:0:1'], "new cidr api\n"],
    ['X-Real-IP 2001:db9::1',                '/', ['X-Real-IP' => '2001:db9::1'], "old weight api\n"],
    ['X-Real-IP ::',                         '/', ['X-Real-IP' => '::'], "old weight api\n", headers => {'X-Remote-Addr' => '::'}],
    ['from: 10/8 honours a mapped client',   '/', ['X-Real-IP' => '::ffff:10.1.2.3', 'X-Corp-Canary' => '1'], "new header api\n"],
    ['from: 10/8 ignores 2001:db8::1 (then cidr)', '/', ['X-Real-IP' => '2001:db8::1', 'X-Corp-Canary' => '1'], "new cidr api\n"],
    ['from: 10/8 ignores 2001:db9::1',       '/', ['X-Real-IP' => '2001:db9::1', 'X-Corp-Canary' => '1'], "old weight api\n"],
    ['from: 10/8 honours 10.1.2.3',          '/', ['X-Real-IP' => '10.1.2.3', 'X-Corp-Canary' => '1'], "new header api\n"],
    ['cidr before user_rules (mapped)',      '/', ['X-Real-IP' => '::ffff:192.168.1.1', 'X-User-ID' => 'alice'], "old cidr api\n"],
    # realip ignores what it cannot parse: the peer stays the client
    ['X-Real-IP not-an-ip',                  '/', ['X-Real-IP' => 'not-an-ip'], "old weight api\n", headers => {'X-Remote-Addr' => '127.0.0.1'}],
    ['X-Real-IP 999.1.2.3',                  '/', ['X-Real-IP' => '999.1.2.3'], "old weight api\n", headers => {'X-Remote-Addr' => '127.0.0.1'}],
    # a list: realip takes its last address, as for X-Forwarded-For
    ['X-Real-IP a list: the last address',   '/', ['X-Real-IP' => '10.1.2.3, 192.168.1.1'], "old cidr api\n", headers => {'X-Remote-Addr' => '192.168.1.1'}],
    ['X-Real-IP 2001:db8::1%eth0',           '/', ['X-Real-IP' => '2001:db8::1%eth0'], "old weight api\n", headers => {'X-Remote-Addr' => '127.0.0.1'}],
    ['X-Real-IP not UTF-8',                  '/', ['X-Real-IP' => "10.1.2.\xff"], "old weight api\n", headers => {'X-Remote-Addr' => '127.0.0.1'}],
    ['X-Real-IP empty',                      '/', ['X-Real-IP' => ''], "old weight api\n", headers => {'X-Remote-Addr' => '127.0.0.1'}],
    ['X-Real-IP 8000 bytes',                 '/', ['X-Real-IP' => '1' x 8000], "old weight api\n", headers => {'X-Remote-Addr' => '127.0.0.1'}],
);



=== TEST 14: a spoofed X-Real-IP from an untrusted peer (IPv4 or IPv6) unlocks no from: rule and no ip rule
--- ipv6
--- realip: untrusted
--- request
GET /
--- more_headers
X-Real-IP: 10.1.2.3
X-Corp-Canary: 1
--- response_headers
X-Remote-Addr: 127.0.0.1
--- response_body
old weight api
--- check_eval
my $v6 = '::1';
main::decides(
    ['X-Real-IP 10.1.2.3',                  '/', ['X-Real-IP' => '10.1.2.3'], "old weight api\n"],
    ['X-Real-IP 192.168.1.1',               '/', ['X-Real-IP' => '192.168.1.1'], "old weight api\n"],
    ['X-Real-IP ::ffff:10.1.2.3 + canary',  '/', ['X-Real-IP' => '::ffff:10.1.2.3', 'X-Corp-Canary' => '1'], "old weight api\n"],
    ['X-Real-IP 2001:db8::1',               '/', ['X-Real-IP' => '2001:db8::1'], "old weight api\n"],
    ['X-Real-IP in the trusted network',    '/', ['X-Real-IP' => '192.0.2.7', 'X-Corp-Canary' => '1'], "old weight api\n"],
    ['X-Forwarded-For 10.1.2.3 + canary',   '/', ['X-Forwarded-For' => '10.1.2.3', 'X-Corp-Canary' => '1'], "old weight api\n"],
    ['100 X-Real-IP 10.1.2.3 + canary',     '/', [main::repeat('X-Real-IP', ('10.1.2.3') x 100), 'X-Corp-Canary' => '1'], "old weight api\n"],
    ['peer ::1, X-Real-IP 10.1.2.3 + canary', '/', ['X-Real-IP' => '10.1.2.3', 'X-Corp-Canary' => '1'], "old weight api\n",
        peer => $v6, headers => {'X-Remote-Addr' => '::1'}],
    ['peer ::1, X-Real-IP 2001:db8::1',     '/', ['X-Real-IP' => '2001:db8::1'], "old weight api\n",
        peer => $v6, headers => {'X-Remote-Addr' => '::1'}],
    ['peer ::1, X-Real-IP fd00::1',         '/', ['X-Real-IP' => 'fd00::1'], "old weight api\n", peer => $v6],
    ['the user list still applies',         '/', ['X-Real-IP' => '192.168.1.1', 'X-User-ID' => 'alice'], "new user_list api\n"],
);



=== TEST 15: the Host: port, trailing dot and case are ignored; unknown, over-long or absent Hosts match no service; bad Hosts get nginx's 400
--- request
GET /
--- more_headers
Host: API.EXAMPLE.:8080
--- response_body
old weight api
--- check_eval
my $label63 = 'a' x 63;
my $host250 = join('.', ($label63) x 3) . '.x.wild.example';     # 207 bytes
my $host300 = join('.', ($label63) x 4) . '.wild.example';       # 268 bytes
main::decides(
    ['api.example',                 '/', [Host => 'api.example'], "old weight api\n"],
    ['Api.Example',                 '/', [Host => 'Api.Example'], "old weight api\n"],
    ['api.example.',                '/', [Host => 'api.example.'], "old weight api\n"],
    ['api.example:80',              '/', [Host => 'api.example:80'], "old weight api\n"],
    ['api.example:not-a-port',      '/', [Host => 'api.example:not-a-port'], "old weight api\n"],
    ['localhost:1',                 '/', [Host => 'localhost:1'], "old weight api\n"],
    ['x.WILD.example (wildcard)',   '/', [Host => 'x.WILD.example'], "old weight api\n"],
    ['a.b.c.wild.example.:443',     '/', [Host => 'a.b.c.wild.example.:443'], "old weight api\n"],
    ['\\xff\\xfe.wild.example',     '/', [Host => "\xff\xfe.wild.example"], "old weight api\n"],
    ['a 207-byte host under the wildcard', '/', [Host => $host250], "old weight api\n"],
    # an empty first label: matched by the wildcard, as nginx's own server_name *.wild.example matches it
    ['.wild.example',               '/', [Host => '.wild.example'], "old weight api\n"],
    ['.api.example',                '/', [Host => '.api.example'], " none \n"],
    ['wild.example itself',         '/', [Host => 'wild.example'], " none \n"],
    ['other.example',               '/', [Host => 'other.example'], " none \n"],
    ['127.0.0.1',                   '/', [Host => '127.0.0.1'], " none \n"],
    ['[::1]:8080',                  '/', [Host => '[::1]:8080'], " none \n"],
    ['\\xff\\xfe',                  '/', [Host => "\xff\xfe"], " none \n"],
    # hosts longer than a DNS name (255 bytes) match no service, even under a wildcard
    ['a 268-byte host under the wildcard', '/', [Host => $host300], " none \n"],
    ['an 8000-byte host',           '/', [Host => ('h' x 7988) . '.wild.example'], " none \n"],
    ['an 8000-byte host, pinned service', '/pinned/', [Host => ('h' x 7988) . '.wild.example'], "old weight api\n"],
    # the absolute URI's host is the request's host (nginx's headers_in.server)
    ['absolute URI other.example, Host api.example', 'http://other.example/', [Host => 'api.example'], " none \n"],
    ['absolute URI api.example, Host other.example', 'http://api.example/', [Host => 'other.example'], "old weight api\n"],
    # nginx's own refusals
    ['api.example..',               '/', [Host => 'api.example..'], undef, status => 400],
    ['api.example/x',               '/', [Host => 'api.example/x'], undef, status => 400],
    ['empty Host',                  '/', [Host => ''], undef, status => 400],
    ['two Host headers',            '/', [Host => 'api.example', Host => 'other.example'], undef, status => 400],
    ['HTTP/1.1 without Host',       '/', [], undef, status => 400, no_host => 1],
    # HTTP/1.0 without Host: no service by Host, the pinned service still decides
    ['HTTP/1.0 without Host',       '/', [], " none \n", no_host => 1, proto => 'HTTP/1.0'],
    ['HTTP/1.0 without Host, pinned','/pinned/', [], "old weight api\n", no_host => 1, proto => 'HTTP/1.0'],
    ['HTTP/1.0 absolute URI, no Host', 'http://API.example./', [], "old weight api\n", no_host => 1, proto => 'HTTP/1.0'],
    ['the worker still decides',    '/', [Host => 'api.example', 'X-User-ID' => 'alice'], "new user_list api\n"],
);



=== TEST 16: hostile requests on one keep-alive connection: each gets its own decision
--- request
GET /
--- response_body
old weight api
--- check_eval
my @kinds = (
    [['X-User-ID' => 'alice'],                       "new user_list api\n"],
    [['X-User-ID' => ''],                            "old weight api\n"],
    [['X-User-ID' => "\xff\xfe"],                    "old user_hash api\n"],
    [['X-Force-Old' => ''],                          "old header api\n"],
    [[main::repeat('X-User-ID', 'mallory', ('alice') x 99)], "old user_list api\n"],
    [['X-Build' => '2026.11.' . ('9' x 4000)],       "new header api\n"],
    [['Host' => 'other.example', 'X-User-ID' => 'alice'], " none \n"],
    [['X-Real-IP' => '10.1.2.3', 'X-Corp-Canary' => '1'], "old weight api\n"],
    [[],                                             "old weight api\n"],
);
my @reqs = map { my $k = $kinds[$_ % @kinds]; ['GET', '/', $k->[0]] } 0 .. 269;
my $all = http_requests_keepalive(\@reqs);
my $bad = 0;
for my $i (0 .. $#reqs) {
    my $want = $kinds[$i % @kinds][1];
    my $r = $all->[$i];
    next if ($r->{status} // 0) == 200 && ($r->{body} // '') eq $want;
    diag("request $i: got " . ($r->{status} // 'no status') . " '" . ($r->{body} // '') . "', expected '$want'")
        if $bad++ < 10;
}
is($bad, 0, "270 requests on keep-alive connections, 9 kinds in turn: every decision is its own");
