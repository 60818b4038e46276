# The module reads requests the way nginx does (docs/decision.md): a user id
# from `cookie:NAME` is exactly what `$cookie_NAME` gives, cookie quirks
# included; `pattern` matches bytes as nginx's PCRE does; an IPv6 literal Host
# finds its service.
use lib 't/lib';
use Test::MigrationNginx;

# Cookie headers (each a list of Cookie header lines), the cases nginx's parser
# treats specially among them.
our @cookies = (
    ['uid=alice'], ['uid=bob'], ['a=1; uid=alice'], ['uid; uid=alice'], ['uid;uid=alice;uid=bob'],
    ['uid x; uid=alice'], ['uidx; uid=alice'], ['uid,uid=alice'], ['uid ;uid=alice'], ['a=1; uid'],
    ['UID=alice'], ['uid = alice'], ['uid=alice;uid=bob'], ['x=1', 'uid=bob'], ['uid', 'uid=alice'],
    ['uid=', 'uid=bob'], [';;uid=alice'], ['uid=alice, uid=bob'], ['uid=alice ; b=2'], ['u=1; id=2'],
);

sub cookie_case {
    my ($lines) = @_;
    my $res = http_request('GET', '/c', [Host => 'api.example', map { (Cookie => $_) } @$lines]);
    my ($cookie, $decision) = split /\|/, $res->{body} // '|', 2;
    chomp $decision;
    return ($cookie, $decision);
}

run_tests();

__DATA__

=== TEST 1: user_key cookie:uid reads exactly what $cookie_uid reads, for every cookie quirk
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
    migration: {strategy: user, percentage: 0, user_key: "cookie:uid"}
    canary:
      user_rules:
        - {users: [alice], target: new}
        - {users: [bob], target: old}
--- config
    location /c { migration on; return 200 "$cookie_uid|$migration_rule $migration_target\n"; }
--- request
GET /c
--- check_eval
is(scalar @main::cookies, 20, 'twenty cookie cases');
my %expected = (alice => 'user_list new', bob => 'user_list old');
for my $case (@main::cookies) {
    my ($cookie, $decision) = main::cookie_case($case);
    my $want = $expected{$cookie} // ($cookie eq '' ? 'weight old' : 'user_hash old');
    is($decision, $want, "Cookie: @{[join ' | ', @$case]} -> \$cookie_uid '$cookie', decided '$decision'");
}
my ($none) = main::cookie_case(['uid; uid=alice']);
is($none, '', 'nginx finds no uid in "uid; uid=alice" (the ; after a bare name is consumed)');
my ($bob) = main::cookie_case(['uid;uid=alice;uid=bob']);
is($bob, 'bob', 'and bob in "uid;uid=alice;uid=bob"');



=== TEST 2: a pattern matches header bytes that are not UTF-8, as nginx's PCRE would
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
    canary:
      header_rules:
        - {header: X-Name, pattern: '^caf.$', target: new}
--- config
    location / { migration on; return 200 "$migration_rule $migration_target\n"; }
--- more_headers eval
"Host: api.example\r\nX-Name: caf\xe9"
--- response_body
header new



=== TEST 3: an IPv6 literal in hosts matches a Host of [address]:port
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: v6
    hosts: ["[2001:DB8::1]"]
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
--- config
    location / { migration on; return 200 "$migration_service $migration_rule $migration_target\n"; }
--- more_headers
Host: [2001:db8::1]:8080
--- response_body
v6 weight old
