# Every rule kind of docs/decision.md, end to end: the decision is made by
# the module and carried out by a real
#     proxy_pass $migration_scheme://$migration_backend;
# to two fake clusters served by the same test nginx, which answer
# "old $host" / "new $host". So each answer shows both which cluster got the
# request and the Host it was sent with ($migration_host). The rule that decided
# comes back in X-Migration-Rule.
#
# The client is always 127.0.0.1: inside 127.0.0.0/8, outside 10.0.0.0/8.
use lib 't/lib';
use Test::MigrationNginx;

# Every block proxies to the two fake clusters below unless it says otherwise.
add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(http_config => <<'HTTP') unless defined $block->{http_config};
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "old $host\n"; } }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; location / { return 200 "new $host\n"; } }
HTTP
    $block->set_value(config => <<'CONF') unless defined $block->{config};
    location / {
        migration on;
        proxy_set_header Host $migration_host;
        proxy_pass $migration_scheme://$migration_backend;
        add_header X-Migration-Rule $migration_rule always;
    }
CONF
});

plan tests => blocks() * 2;
run_tests();

# routes([label, path, [headers], expected body, expected rule], ...)
# sends each request on its own connection and checks the upstream's answer and
# $migration_rule.
sub routes {
    for my $c (@_) {
        my ($label, $path, $headers, $body, $rule) = @$c;
        my $r = http_request(GET => $path, $headers);
        is($r->{status}, 200, "$label: status")
            or diag($r->{error} // substr($r->{raw_all} // '', 0, 500));
        is($r->{body}, $body, "$label: answered by the expected cluster with the expected Host");
        is($r->{headers}{'x-migration-rule'}, $rule, "$label: \$migration_rule");
    }
}

__DATA__

=== TEST 1: a header rule's value sends the request to the new cluster, with new_host
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    canary:
      header_rules:
        - header: X-Migration-Target
          value: new
          target: new_cluster
--- request
GET /orders/42
--- more_headers
Host: api.example
X-Migration-Target: new
--- response_headers
X-Migration-Rule: header
--- response_body
new api.kong.internal
--- check_eval
main::routes(
    ['without the header', '/orders/42', [Host => 'api.example'], "old api.legacy.internal\n", 'weight'],
);
--- no_error_log
[error]



=== TEST 2: a header value matches exactly and case-sensitively; the header name is case-insensitive
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    canary:
      header_rules:
        - header: X-Migration-Target
          value: new
          target: new_cluster
--- request
GET /
--- more_headers
Host: api.example
x-migration-target: new
--- response_headers
X-Migration-Rule: header
--- response_body
new api.kong.internal
--- check_eval
main::routes(
    ['name in upper case',   '/', [Host => 'api.example', 'X-MIGRATION-TARGET' => 'new'],   "new api.kong.internal\n",   'header'],
    ['value "New"',          '/', [Host => 'api.example', 'X-Migration-Target' => 'New'],   "old api.legacy.internal\n", 'weight'],
    ['value "NEW"',          '/', [Host => 'api.example', 'X-Migration-Target' => 'NEW'],   "old api.legacy.internal\n", 'weight'],
    ['value "newer"',        '/', [Host => 'api.example', 'X-Migration-Target' => 'newer'], "old api.legacy.internal\n", 'weight'],
    ['value "ne" (prefix)',  '/', [Host => 'api.example', 'X-Migration-Target' => 'ne'],    "old api.legacy.internal\n", 'weight'],
    ['value "renew"',        '/', [Host => 'api.example', 'X-Migration-Target' => 'renew'], "old api.legacy.internal\n", 'weight'],
    ['first occurrence is used (new, old)', '/',
        [Host => 'api.example', 'X-Migration-Target' => 'new', 'X-Migration-Target' => 'old'], "new api.kong.internal\n", 'header'],
    ['first occurrence is used (old, new)', '/',
        [Host => 'api.example', 'X-Migration-Target' => 'old', 'X-Migration-Target' => 'new'], "old api.legacy.internal\n", 'weight'],
);



=== TEST 3: a header rule with values matches any one of them, exactly
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    canary:
      header_rules:
        - header: X-Tenant
          values: [acme, globex, "initech corp"]
          target: new_cluster
--- request
GET /
--- more_headers
Host: api.example
X-Tenant: globex
--- response_headers
X-Migration-Rule: header
--- response_body
new api.kong.internal
--- check_eval
main::routes(
    ['acme',           '/', [Host => 'api.example', 'X-Tenant' => 'acme'],         "new api.kong.internal\n",   'header'],
    ['initech corp',   '/', [Host => 'api.example', 'X-Tenant' => 'initech corp'], "new api.kong.internal\n",   'header'],
    ['Acme (case)',    '/', [Host => 'api.example', 'X-Tenant' => 'Acme'],         "old api.legacy.internal\n", 'weight'],
    ['umbrella',       '/', [Host => 'api.example', 'X-Tenant' => 'umbrella'],     "old api.legacy.internal\n", 'weight'],
    ['acme,globex',    '/', [Host => 'api.example', 'X-Tenant' => 'acme,globex'],  "old api.legacy.internal\n", 'weight'],
    ['initech (part)', '/', [Host => 'api.example', 'X-Tenant' => 'initech'],      "old api.legacy.internal\n", 'weight'],
);



=== TEST 4: a header rule's pattern is a regex searched in the value
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    canary:
      header_rules:
        - header: User-Agent
          pattern: "^MobileApp/(4|5)\\."
          target: new_cluster
        - header: X-Build
          pattern: "canary"
          target: new_cluster
--- request
GET /
--- more_headers
Host: api.example
User-Agent: MobileApp/5.2.1 (iOS)
--- response_headers
X-Migration-Rule: header
--- response_body
new api.kong.internal
--- check_eval
main::routes(
    ['MobileApp/4.0',            '/', [Host => 'api.example', 'User-Agent' => 'MobileApp/4.0'],            "new api.kong.internal\n",   'header'],
    ['MobileApp/3.9 no match',   '/', [Host => 'api.example', 'User-Agent' => 'MobileApp/3.9'],            "old api.legacy.internal\n", 'weight'],
    ['anchored: x MobileApp/5.', '/', [Host => 'api.example', 'User-Agent' => 'x MobileApp/5.0'],          "old api.legacy.internal\n", 'weight'],
    ['MobileApp/55 (dot needed)','/', [Host => 'api.example', 'User-Agent' => 'MobileApp/55'],             "old api.legacy.internal\n", 'weight'],
    ['unanchored: searched',     '/', [Host => 'api.example', 'X-Build' => 'build-7-canary-b'],            "new api.kong.internal\n",   'header'],
    ['regex is case-sensitive',  '/', [Host => 'api.example', 'X-Build' => 'CANARY'],                      "old api.legacy.internal\n", 'weight'],
);



=== TEST 5: present: true matches any value of the header, and nothing when it is absent
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    canary:
      header_rules:
        - header: X-Beta-Tester
          present: true
          target: new_cluster
--- request
GET /
--- more_headers
Host: api.example
X-Beta-Tester: 1
--- response_headers
X-Migration-Rule: header
--- response_body
new api.kong.internal
--- check_eval
main::routes(
    ['any value: "no"',  '/', [Host => 'api.example', 'x-beta-tester' => 'no'],      "new api.kong.internal\n",   'header'],
    ['any value: long',  '/', [Host => 'api.example', 'X-Beta-Tester' => 'x' x 300], "new api.kong.internal\n",   'header'],
    ['absent',           '/', [Host => 'api.example'],                               "old api.legacy.internal\n", 'weight'],
    ['another header',   '/', [Host => 'api.example', 'X-Beta-Testers' => '1'],      "old api.legacy.internal\n", 'weight'],
);



=== TEST 6: the first matching header rule wins
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      percentage: 50
    canary:
      header_rules:
        - header: X-Pin-Old
          present: true
          target: old_cluster
        - header: X-Canary
          value: stuck
          target: old_cluster
        - header: X-Canary
          present: true
          target: new_cluster
--- request
GET /
--- more_headers
Host: api.example
X-Canary: yes
X-Pin-Old: 1
--- response_headers
X-Migration-Rule: header
--- response_body
old api.legacy.internal
--- check_eval
main::routes(
    ['only the later rule matches', '/', [Host => 'api.example', 'X-Canary' => 'yes'],   "new api.kong.internal\n",   'header'],
    ['two rules on one header: the first', '/', [Host => 'api.example', 'X-Canary' => 'stuck'], "old api.legacy.internal\n", 'header'],
    ['headers sent in the other order', '/', [Host => 'api.example', 'X-Pin-Old' => '1', 'X-Canary' => 'yes'], "old api.legacy.internal\n", 'header'],
) for 1 .. 5;    # percentage 50: a rule that did not decide would show up as "weight"



=== TEST 7: a header rule with target old_cluster beats the weight
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      percentage: 100
    canary:
      header_rules:
        - header: X-Migration-Target
          value: old
          target: old_cluster
--- request
GET /
--- more_headers
Host: api.example
X-Migration-Target: old
--- response_headers
X-Migration-Rule: header
--- response_body
old api.legacy.internal
--- check_eval
main::routes(
    ['without the header the weight sends it new', '/', [Host => 'api.example'], "new api.kong.internal\n", 'weight'],
);



=== TEST 8: from: honours a header rule only for clients in those networks, else the next rule applies
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    canary:
      header_rules:
        - header: X-Office
          value: "1"
          target: new_cluster
          from: [10.0.0.0/8]
        - header: X-Loopback
          value: "1"
          target: new_cluster
          from: [192.0.2.0/24, 127.0.0.0/8, "::1/128"]
        - header: X-Office
          value: "1"
          target: old_cluster
          from: [127.0.0.1/32]
        - header: X-Office
          value: "2"
          target: new_cluster
          from: [10.0.0.0/8, 172.16.0.0/12]
--- request
GET /
--- more_headers
Host: api.example
X-Loopback: 1
--- response_headers
X-Migration-Rule: header
--- response_body
new api.kong.internal
--- check_eval
main::routes(
    ['10/8-only rule skipped, the next match decides', '/', [Host => 'api.example', 'X-Office' => '1'], "old api.legacy.internal\n", 'header'],
    ['10/8-only rule skipped, nothing else matches',    '/', [Host => 'api.example', 'X-Office' => '2'], "old api.legacy.internal\n", 'weight'],
);



=== TEST 9: an ip rule routes the client's address (rule cidr)
--- user_files
>>> m.yaml
services:
  - name: loopback
    hosts: [lo.example]
    old_host: lo.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: lo.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    canary:
      ip_rules:
        - cidr: 127.0.0.1/32
          target: new_cluster
  - name: office
    hosts: [office.example]
    old_host: office.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: office.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    canary:
      ip_rules:
        - cidr: 10.0.0.0/8
          target: new_cluster
        - cidrs: ["2001:db8::/32", 192.168.0.0/16]
          target: new_cluster
--- request
GET /
--- more_headers
Host: lo.example
--- response_headers
X-Migration-Rule: cidr
--- response_body
new lo.kong.internal
--- check_eval
main::routes(
    ['127.0.0.1 is outside every network of the rules', '/', [Host => 'office.example'], "old office.legacy.internal\n", 'weight'],
);



=== TEST 10: ip rules: the first listed rule wins, not the most specific
--- user_files
>>> m.yaml
services:
  - name: wide-first
    hosts: [a.example]
    old_host: a.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: a.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      percentage: 100
    canary:
      ip_rules:
        - cidrs: [10.0.0.0/8, 127.0.0.0/8]
          target: old_cluster
        - cidr: 127.0.0.1/32
          target: new_cluster
  - name: narrow-first
    hosts: [b.example]
    old_host: b.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: b.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    canary:
      ip_rules:
        - cidr: 10.0.0.0/8
          target: old_cluster
        - cidr: 127.0.0.1/32
          target: new
        - cidr: 127.0.0.0/8
          target: old
--- request
GET /
--- more_headers
Host: a.example
--- response_headers
X-Migration-Rule: cidr
--- response_body
old a.legacy.internal
--- check_eval
main::routes(
    ['127.0.0.1/32 listed before 127.0.0.0/8', '/', [Host => 'b.example'], "new b.kong.internal\n", 'cidr'],
);



=== TEST 11: decision order: header rule, then ip rule, then user rule, then the split
--- user_files
>>> m.yaml
services:
  - name: ordered
    hosts: [ordered.example]
    old_host: ordered.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: ordered.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      strategy: user
      percentage: 100
    canary:
      header_rules:
        - header: X-Canary
          value: "yes"
          target: new_cluster
      ip_rules:
        - cidr: 127.0.0.0/8
          target: old_cluster
      user_rules:
        - users: [alice]
          target: new_cluster
  - name: users-before-split
    hosts: [users.example]
    old_host: users.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: users.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      strategy: user
      percentage: 100
    canary:
      ip_rules:
        - cidr: 10.0.0.0/8
          target: new_cluster
      user_rules:
        - users: [alice]
          target: old_cluster
--- request
GET /
--- more_headers
Host: ordered.example
X-Canary: yes
X-User-ID: alice
--- response_headers
X-Migration-Rule: header
--- response_body
new ordered.kong.internal
--- check_eval
main::routes(
    ['ip rule beats user rule',      '/', [Host => 'ordered.example', 'X-User-ID' => 'alice'], "old ordered.legacy.internal\n", 'cidr'],
    ['ip rule beats the user split', '/', [Host => 'ordered.example', 'X-User-ID' => 'zed'],   "old ordered.legacy.internal\n", 'cidr'],
    ['user rule beats the user split', '/', [Host => 'users.example', 'X-User-ID' => 'alice'], "old users.legacy.internal\n", 'user_list'],
    ['others: the user split',       '/', [Host => 'users.example', 'X-User-ID' => 'zed'],     "new users.kong.internal\n",   'user_hash'],
);



=== TEST 12: user rules read the user id from the X-User-ID header by default
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    canary:
      user_rules:
        - users: [alice, bob]
          target: new_cluster
        - users: [mallory]
          target: old_cluster
  - name: api-full
    hosts: [full.example]
    old_host: full.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: full.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      percentage: 100
    canary:
      user_rules:
        - users: [mallory]
          target: old_cluster
--- request
GET /
--- more_headers
Host: api.example
X-User-ID: alice
--- response_headers
X-Migration-Rule: user_list
--- response_body
new api.kong.internal
--- check_eval
main::routes(
    ['bob',                         '/', [Host => 'api.example', 'x-user-id' => 'bob'],     "new api.kong.internal\n",    'user_list'],
    ['Alice is not alice',          '/', [Host => 'api.example', 'X-User-ID' => 'Alice'],   "old api.legacy.internal\n",  'weight'],
    ['carol is in no list',         '/', [Host => 'api.example', 'X-User-ID' => 'carol'],   "old api.legacy.internal\n",  'weight'],
    ['no user id',                  '/', [Host => 'api.example'],                           "old api.legacy.internal\n",  'weight'],
    ['old_cluster user list at 100%', '/', [Host => 'full.example', 'X-User-ID' => 'mallory'], "old full.legacy.internal\n", 'user_list'],
    ['others at 100%',              '/', [Host => 'full.example', 'X-User-ID' => 'carol'],  "new full.kong.internal\n",   'weight'],
);



=== TEST 13: user_key cookie:NAME reads the user id from the Cookie header
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      user_key: cookie:uid
    canary:
      user_rules:
        - users: [alice]
          target: new_cluster
--- request
GET /
--- more_headers
Host: api.example
Cookie: a=1; uid=alice
--- response_headers
X-Migration-Rule: user_list
--- response_body
new api.kong.internal
--- check_eval
main::routes(
    ['only cookie',            '/', [Host => 'api.example', Cookie => 'uid=alice'],            "new api.kong.internal\n",   'user_list'],
    ['second Cookie header',   '/', [Host => 'api.example', Cookie => 'a=1', Cookie => 'uid=alice'], "new api.kong.internal\n", 'user_list'],
    ['other user',             '/', [Host => 'api.example', Cookie => 'a=1; uid=carol'],       "old api.legacy.internal\n", 'weight'],
    ['xuid is another cookie', '/', [Host => 'api.example', Cookie => 'xuid=alice'],           "old api.legacy.internal\n", 'weight'],
    ['header is not the key',  '/', [Host => 'api.example', 'X-User-ID' => 'alice'],          "old api.legacy.internal\n", 'weight'],
    ['empty cookie is absent', '/', [Host => 'api.example', Cookie => 'uid=; a=alice'],        "old api.legacy.internal\n", 'weight'],
);



=== TEST 14: user_key arg:NAME reads the user id from the query string
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      user_key: arg:uid
    canary:
      user_rules:
        - users: [bob]
          target: new_cluster
--- request
GET /search?uid=bob
--- more_headers
Host: api.example
--- response_headers
X-Migration-Rule: user_list
--- response_body
new api.kong.internal
--- check_eval
main::routes(
    ['among other args',     '/search?q=x&uid=bob&page=2', [Host => 'api.example'],                  "new api.kong.internal\n",   'user_list'],
    ['other user',           '/search?uid=carol',          [Host => 'api.example'],                  "old api.legacy.internal\n", 'weight'],
    ['xuid is another arg',  '/search?xuid=bob',           [Host => 'api.example'],                  "old api.legacy.internal\n", 'weight'],
    ['empty arg is absent',  '/search?uid=&bob',           [Host => 'api.example'],                  "old api.legacy.internal\n", 'weight'],
    ['header is not the key','/search',                    [Host => 'api.example', 'X-User-ID' => 'bob'], "old api.legacy.internal\n", 'weight'],
);



=== TEST 15: strategy user: 100 % puts every user on new, 0 % on old (rule user_hash); no user id falls back to the weight
--- user_files
>>> m.yaml
services:
  - name: all-users
    hosts: [u100.example]
    old_host: u100.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: u100.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      strategy: user
      percentage: 100
  - name: no-users
    hosts: [u0.example]
    old_host: u0.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: u0.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      strategy: user
      percentage: 0
--- request
GET /
--- more_headers
Host: u100.example
X-User-ID: alice
--- response_headers
X-Migration-Rule: user_hash
--- response_body
new u100.kong.internal
--- check_eval
my @cases;
for my $u (qw(bob carol user-1 user-2 0 x), 'a b') {
    push @cases, ["100 %: $u", '/', [Host => 'u100.example', 'X-User-ID' => $u], "new u100.kong.internal\n", 'user_hash'];
    push @cases, ["0 %: $u",   '/', [Host => 'u0.example',   'X-User-ID' => $u], "old u0.legacy.internal\n", 'user_hash'];
}
push @cases,
    ['100 %, no user id', '/', [Host => 'u100.example'],                    "new u100.kong.internal\n", 'weight'],
    ['100 %, empty id',   '/', [Host => 'u100.example', 'X-User-ID' => ''], "new u100.kong.internal\n", 'weight'],
    ['0 %, no user id',   '/', [Host => 'u0.example'],                      "old u0.legacy.internal\n", 'weight'];
main::routes(@cases);



=== TEST 16: strategy ip hashes the client address (rule ip_hash)
--- user_files
>>> m.yaml
services:
  - name: all-clients
    hosts: [ip100.example]
    old_host: ip100.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: ip100.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      strategy: ip
      percentage: 100
  - name: no-clients
    hosts: [ip0.example]
    old_host: ip0.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: ip0.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      strategy: ip
      percentage: 0
--- request
GET /
--- more_headers
Host: ip100.example
--- response_headers
X-Migration-Rule: ip_hash
--- response_body
new ip100.kong.internal
--- check_eval
main::routes(
    ['0 %',                   '/', [Host => 'ip0.example'],                         "old ip0.legacy.internal\n", 'ip_hash'],
    ['a user id changes nothing', '/', [Host => 'ip100.example', 'X-User-ID' => 'u'], "new ip100.kong.internal\n", 'ip_hash'],
);



=== TEST 17: strategy weight: 100 % sends every request new, 0 % every request old
--- user_files
>>> m.yaml
services:
  - name: w100
    hosts: [w100.example]
    old_host: w100.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: w100.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      strategy: weight
      percentage: 100
  - name: w0
    hosts: [w0.example]
    old_host: w0.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: w0.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      strategy: weight
      percentage: 0
  - name: defaults
    hosts: [default.example]
    old_host: default.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: default.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
--- request
GET /
--- more_headers
Host: w100.example
--- response_headers
X-Migration-Rule: weight
--- response_body
new w100.kong.internal
--- check_eval
main::routes(map { (
    ["100 % #$_",            '/', [Host => 'w100.example', 'X-User-ID' => "u$_"], "new w100.kong.internal\n",    'weight'],
    ["0 % #$_",              '/', [Host => 'w0.example',   'X-User-ID' => "u$_"], "old w0.legacy.internal\n",    'weight'],
    ["no migration: key #$_", '/', [Host => 'default.example'],                  "old default.legacy.internal\n", 'weight'],
) } 1 .. 10);



=== TEST 18: enabled: false sends everything to old (rule disabled), whatever the rules say
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      enabled: false
      strategy: user
      percentage: 100
    canary:
      header_rules:
        - header: X-Migration-Target
          value: new
          target: new_cluster
      ip_rules:
        - cidr: 127.0.0.0/8
          target: new_cluster
      user_rules:
        - users: [alice]
          target: new_cluster
--- request
GET /
--- more_headers
Host: api.example
X-Migration-Target: new
--- response_headers
X-Migration-Rule: disabled
--- response_body
old api.legacy.internal
--- check_eval
main::routes(
    ['listed user',   '/', [Host => 'api.example', 'X-User-ID' => 'alice'], "old api.legacy.internal\n", 'disabled'],
    ['hashed user',   '/', [Host => 'api.example', 'X-User-ID' => 'zed'],   "old api.legacy.internal\n", 'disabled'],
    ['nothing',       '/', [Host => 'api.example'],                         "old api.legacy.internal\n", 'disabled'],
);



=== TEST 19: a request whose Host matches no service gets rule none and empty variables
--- config
    location / {
        migration on;
        proxy_set_header Host $migration_host;
        proxy_pass $migration_scheme://$migration_backend;
        add_header X-Migration-Rule $migration_rule always;
    }
    location /decision {
        migration on;
        return 200 "[$migration_target][$migration_backend][$migration_host][$migration_scheme][$migration_service][$migration_rule]\n";
    }
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      percentage: 100
--- request
GET /decision
--- more_headers
Host: unknown.example
--- response_body
[][][][][][none]
--- check_eval
for my $host ('api.legacy.internal', 'api.kong.internal', 'api.example.org', 'xapi.example', 'localhost') {
    my $r = http_request(GET => '/decision', [Host => $host]);
    is($r->{body}, "[][][][][][none]\n", "Host $host matches no service");
}
main::routes(['the matched service still proxies', '/', [Host => 'api.example'], "new api.kong.internal\n", 'weight']);



=== TEST 20: services are matched by hosts (case, port, wildcards) and the upstream gets old_host/new_host
--- config
    location / {
        migration on;
        proxy_set_header Host $migration_host;
        proxy_pass $migration_scheme://$migration_backend;
        add_header X-Migration-Rule $migration_rule always;
        add_header X-Migration-Service $migration_service always;
    }
--- user_files
>>> m.yaml
services:
  - name: shop
    hosts: [shop.example, "*.shop.example"]
    old_host: shop.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: shop.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      percentage: 0
  - name: pay
    old_host: pay.example
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: pay.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      percentage: 100
--- request
GET /cart
--- more_headers
Host: EU.Shop.Example:8080
--- response_headers
X-Migration-Rule: weight
X-Migration-Service: shop
--- response_body
old shop.legacy.internal
--- check_eval
main::routes(
    ['exact host',                   '/', [Host => 'shop.example'],          "old shop.legacy.internal\n", 'weight'],
    ['deeper subdomain of wildcard', '/', [Host => 'a.b.shop.example'],      "old shop.legacy.internal\n", 'weight'],
    ['hosts defaults to old_host',   '/', [Host => 'pay.example'],           "new pay.kong.internal\n",    'weight'],
    ['PAY.EXAMPLE:443',              '/', [Host => 'PAY.EXAMPLE:443'],       "new pay.kong.internal\n",    'weight'],
);
my $r = http_request(GET => '/', [Host => 'pay.example']);
is($r->{headers}{'x-migration-service'}, 'pay', 'pay.example is service pay');



=== TEST 21: migration_service NAME routes by that service whatever the Host
--- config
    location / {
        migration on;
        proxy_set_header Host $migration_host;
        proxy_pass $migration_scheme://$migration_backend;
        add_header X-Migration-Rule $migration_rule always;
        add_header X-Migration-Service $migration_service always;
    }
    location /pinned/ {
        migration on;
        migration_service pay;
        proxy_set_header Host $migration_host;
        proxy_pass $migration_scheme://$migration_backend;
        add_header X-Migration-Rule $migration_rule always;
        add_header X-Migration-Service $migration_service always;
    }
--- user_files
>>> m.yaml
services:
  - name: shop
    hosts: [shop.example]
    old_host: shop.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: shop.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      percentage: 0
  - name: pay
    hosts: [pay.example]
    old_host: pay.legacy.internal
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: pay.kong.internal
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration:
      percentage: 0
    canary:
      header_rules:
        - header: X-Migration-Target
          value: new
          target: new_cluster
--- request
GET /pinned/x
--- more_headers
Host: shop.example
X-Migration-Target: new
--- response_headers
X-Migration-Rule: header
X-Migration-Service: pay
--- response_body
new pay.kong.internal
--- check_eval
main::routes(
    ['unknown Host, pinned',        '/pinned/x', [Host => 'nothing.example'],                              "old pay.legacy.internal\n",  'weight'],
    ['unknown Host, pinned, header','/pinned/x', [Host => 'nothing.example', 'X-Migration-Target' => 'new'], "new pay.kong.internal\n", 'header'],
    ['same request, auto location', '/x',        [Host => 'shop.example', 'X-Migration-Target' => 'new'],  "old shop.legacy.internal\n", 'weight'],
);
my $r = http_request(GET => '/pinned/x', [Host => 'localhost']);
is($r->{headers}{'x-migration-service'}, 'pay', 'pinned location: $migration_service is pay');
