# The client address the module uses is $remote_addr, so nginx's realip module
# is honoured (docs/decision.md, steps 3, 5 and 7): ip rules, from: on
# header rules and strategy ip all see the address realip restored, but only
# when the request comes from a trusted proxy (set_real_ip_from).
#
# Our test client is always 127.0.0.1.
use lib 't/lib';
use Test::MigrationNginx;
use Test::MigrationHelpers qw(murmur2);

plan tests => blocks() * 2;
run_tests();

# docs/decision.md: new iff murmur2(salt . key) < percentage_bp * 0xFFFFFFFF / 10000
sub expected_side {
    my ($salt, $key, $bp) = @_;
    return murmur2($salt . $key) < int($bp * 0xFFFFFFFF / 10000) ? 'new' : 'old';
}

# Sends X-Real-IP values and checks, for each, that the module's ip_hash decision
# is the one computed from $remote_addr (as nginx printed it), and that nginx's
# own split_clients on the same key agrees.
sub ip_hash_parity {
    my ($salt, $bp, @addrs) = @_;
    my @reqs = map { ['GET', '/t', ['X-Real-IP' => $_]] } @addrs;
    my $res = http_requests_keepalive(\@reqs);
    my ($bad, %n) = (0);
    for my $i (0 .. $#addrs) {
        my $body = $res->[$i]{body} // '';
        my ($addr, $target, $rule, $split) = $body =~ /^(\S+) (\S*) (\S*) (\S*)\n\z/;
        my $want = defined $addr ? expected_side($salt, $addr, $bp) : '?';
        if (!defined $addr || $rule ne 'ip_hash' || $target ne $want || $split ne $want) {
            diag("X-Real-IP $addrs[$i]: got '$body', expected target $want (rule ip_hash, split_clients agreeing)")
                if $bad++ < 10;
        }
        $n{$target // ''}++;
    }
    is($bad, 0, "ip_hash decision = murmur2('$salt' . \$remote_addr) for " . scalar(@addrs) . " addresses");
    ok($n{new} && $n{old}, "both sides seen (new=" . ($n{new} // 0) . " old=" . ($n{old} // 0) . ")");
}

sub addrs {
    my @a;
    for my $i (1 .. 150) {
        push @a, join '.', 10 + $i % 200, ($i * 37) % 256, ($i * 101) % 256, 1 + ($i * 13) % 254;
    }
    for my $i (1 .. 50) {
        push @a, sprintf '2001:db8:%x::%x', $i * 7, $i * 4099;
    }
    # non-canonical spellings: the key is the text nginx prints, not the header
    push @a, '2001:DB8:0:0:0:0:0:1', '2001:0db8::00a0', 'fe80:0:0:0:0:0:0:7', '010.001.002.003';
    return @a;
}

__DATA__

=== TEST 1: behind a trusted proxy, an ip rule matches the address from X-Real-IP (rule cidr)
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- config
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    location /t {
        migration on;
        return 200 "$remote_addr $migration_target $migration_rule\n";
    }
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example, localhost]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:8001
    new_host: api.kong.internal
    new_backend: 127.0.0.1:8002
    canary:
      ip_rules:
        - cidr: 10.0.0.0/8
          target: new_cluster
--- request
GET /t
--- more_headers
X-Real-IP: 10.1.2.3
--- response_body
10.1.2.3 new cidr
--- check_eval
my $r = http_request(GET => '/t');
is($r->{body}, "127.0.0.1 old weight\n", "without X-Real-IP: 127.0.0.1 is outside 10/8");
$r = http_request(GET => '/t', ['X-Real-IP' => '11.1.2.3']);
is($r->{body}, "11.1.2.3 old weight\n", "X-Real-IP outside 10/8");
$r = http_request(GET => '/t', ['X-Real-IP' => '10.255.255.255']);
is($r->{body}, "10.255.255.255 new cidr\n", "last address of 10/8");



=== TEST 2: behind a trusted proxy, a header rule with from: applies to the real client's network
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- config
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    location /t {
        migration on;
        return 200 "$remote_addr $migration_target $migration_rule\n";
    }
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [localhost]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:8001
    new_host: api.kong.internal
    new_backend: 127.0.0.1:8002
    canary:
      header_rules:
        - header: X-Migration-Target
          value: new
          target: new_cluster
          from: [10.0.0.0/8]
--- request
GET /t
--- more_headers
X-Real-IP: 10.1.2.3
X-Migration-Target: new
--- response_body
10.1.2.3 new header
--- check_eval
my $r = http_request(GET => '/t', ['X-Migration-Target' => 'new']);
is($r->{body}, "127.0.0.1 old weight\n", "the same header from 127.0.0.1 itself is not honoured");
$r = http_request(GET => '/t', ['X-Real-IP' => '192.168.1.1', 'X-Migration-Target' => 'new']);
is($r->{body}, "192.168.1.1 old weight\n", "the same header from a client outside 10/8 is not honoured");



=== TEST 3: an IPv6 address from X-Real-IP matches an IPv6 ip rule and from:
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- config
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    location /t {
        migration on;
        return 200 "$remote_addr $migration_target $migration_rule\n";
    }
--- user_files
>>> m.yaml
services:
  - name: v6
    hosts: [localhost]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:8001
    new_host: api.kong.internal
    new_backend: 127.0.0.1:8002
    canary:
      ip_rules:
        - cidr: 10.0.0.0/8
          target: old_cluster
        - cidr: "2001:db8::/32"
          target: new_cluster
  - name: v6-header
    hosts: [h.example]
    old_host: h.legacy.internal
    old_backend: 127.0.0.1:8001
    new_host: h.kong.internal
    new_backend: 127.0.0.1:8002
    canary:
      header_rules:
        - header: X-Canary
          present: true
          target: new_cluster
          from: ["2001:db8::/32"]
--- request
GET /t
--- more_headers
X-Real-IP: 2001:db8::5
--- response_body
2001:db8::5 new cidr
--- check_eval
my $r = http_request(GET => '/t', ['X-Real-IP' => '2001:db8:ffff:ffff::1']);
is($r->{body}, "2001:db8:ffff:ffff::1 new cidr\n", "last /32 block");
$r = http_request(GET => '/t', ['X-Real-IP' => '2001:db9::5']);
is($r->{body}, "2001:db9::5 old weight\n", "2001:db9::5 is outside 2001:db8::/32");
$r = http_request(GET => '/t', ['X-Real-IP' => '::1']);
is($r->{body}, "::1 old weight\n", "::1 is outside");
$r = http_request(GET => '/t', [Host => 'h.example', 'X-Real-IP' => '2001:db8::5', 'X-Canary' => '1']);
is($r->{body}, "2001:db8::5 new header\n", "from: [2001:db8::/32] honours the IPv6 client");
$r = http_request(GET => '/t', [Host => 'h.example', 'X-Real-IP' => '2001:db9::5', 'X-Canary' => '1']);
is($r->{body}, "2001:db9::5 old weight\n", "from: [2001:db8::/32] ignores another IPv6 client");
$r = http_request(GET => '/t', [Host => 'h.example', 'X-Canary' => '1']);
is($r->{body}, "127.0.0.1 old weight\n", "from: [2001:db8::/32] ignores an IPv4 client");



=== TEST 4: X-Real-IP from an untrusted address is ignored: no ip rule, no from: rule
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- config
    set_real_ip_from 192.0.2.1;
    real_ip_header X-Real-IP;
    location /t {
        migration on;
        return 200 "$remote_addr $migration_target $migration_rule\n";
    }
--- user_files
>>> m.yaml
services:
  - name: ip
    hosts: [localhost]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:8001
    new_host: api.kong.internal
    new_backend: 127.0.0.1:8002
    canary:
      ip_rules:
        - cidr: 10.0.0.0/8
          target: new_cluster
  - name: header
    hosts: [h.example]
    old_host: h.legacy.internal
    old_backend: 127.0.0.1:8001
    new_host: h.kong.internal
    new_backend: 127.0.0.1:8002
    canary:
      header_rules:
        - header: X-Migration-Target
          value: new
          target: new_cluster
          from: [10.0.0.0/8]
--- request
GET /t
--- more_headers
X-Real-IP: 10.1.2.3
--- response_body
127.0.0.1 old weight
--- check_eval
my $r = http_request(GET => '/t', [Host => 'h.example', 'X-Real-IP' => '10.1.2.3', 'X-Migration-Target' => 'new']);
is($r->{body}, "127.0.0.1 old weight\n", "a spoofed X-Real-IP does not unlock a from: header rule");
$r = http_request(GET => '/t', ['X-Forwarded-For' => '10.1.2.3', 'X-Real-IP' => '10.1.2.3']);
is($r->{body}, "127.0.0.1 old weight\n", "nor does X-Forwarded-For");



=== TEST 5: real_ip_recursive through X-Forwarded-For: the first untrusted hop is the client
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- config
    set_real_ip_from 127.0.0.1;
    set_real_ip_from 10.0.0.0/8;
    real_ip_header X-Forwarded-For;
    real_ip_recursive on;
    location /t {
        migration on;
        return 200 "$remote_addr $migration_target $migration_rule\n";
    }
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [localhost]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:8001
    new_host: api.kong.internal
    new_backend: 127.0.0.1:8002
    canary:
      ip_rules:
        - cidr: 10.0.0.0/8
          target: old_cluster
        - cidr: 203.0.113.0/24
          target: new_cluster
--- request
GET /t
--- more_headers
X-Forwarded-For: 203.0.113.7, 10.9.9.9
--- response_body
203.0.113.7 new cidr
--- check_eval
my $r = http_request(GET => '/t', ['X-Forwarded-For' => '198.51.100.1, 10.9.9.9']);
is($r->{body}, "198.51.100.1 old weight\n", "client outside both rules");
$r = http_request(GET => '/t', ['X-Forwarded-For' => '10.9.9.9']);
is($r->{body}, "10.9.9.9 old cidr\n", "all hops trusted: the leftmost one");



=== TEST 6: strategy ip with realip hashes $remote_addr (rule ip_hash), exactly like split_clients "$remote_addr"
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    split_clients "$remote_addr" $split_addr { 50% new; * old; }
--- config
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    location /t {
        migration on;
        return 200 "$remote_addr $migration_target $migration_rule $split_addr\n";
    }
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [localhost]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:8001
    new_host: api.kong.internal
    new_backend: 127.0.0.1:8002
    migration:
      strategy: ip
      percentage: 50
--- request
GET /t
--- more_headers
X-Real-IP: 10.1.2.3
--- response_body_like
^10\.1\.2\.3 (new|old) ip_hash \1$
--- check_eval
is($res->{body}, "10.1.2.3 " . main::expected_side('', '10.1.2.3', 5000) . " ip_hash "
   . main::expected_side('', '10.1.2.3', 5000) . "\n", "10.1.2.3 lands where murmur2 says");
main::ip_hash_parity('', 5000, main::addrs());
# the same address always lands on the same side
my @reqs = map { ['GET', '/t', ['X-Real-IP' => '198.51.100.23']] } 1 .. 50;
my %seen = map { $_->{body} => 1 } @{ http_requests_keepalive(\@reqs) };
is(scalar(keys %seen), 1, "one address, one side (50 requests)");



=== TEST 7: strategy ip with a hash_salt hashes salt + $remote_addr
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    split_clients "edge-$remote_addr" $split_addr { 33.33% new; * old; }
--- config
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    location /t {
        migration on;
        return 200 "$remote_addr $migration_target $migration_rule $split_addr\n";
    }
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [localhost]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:8001
    new_host: api.kong.internal
    new_backend: 127.0.0.1:8002
    migration:
      strategy: ip
      percentage: 33.33
      hash_salt: "edge-"
--- request
GET /t
--- more_headers
X-Real-IP: 10.1.2.3
--- response_body_like
^10\.1\.2\.3 (new|old) ip_hash \1$
--- check_eval
main::ip_hash_parity('edge-', 3333, main::addrs());
