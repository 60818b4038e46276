# Rule sources beyond headers: a `header_rules` entry may read a cookie
# (`cookie: NAME`) or a query argument (`arg: NAME`) instead of a header, with the
# same matchers and `from:`, and still counts as rule `header`. The value is
# exactly what `$cookie_NAME` / `$arg_NAME` give in the same nginx, quirks included.
use lib 't/lib';
use Test::MigrationNginx;
use Test::MigrationHelpers qw(murmur2);

# Cookie headers (each a list of Cookie header lines) and query strings, with the
# cases nginx's parsers treat specially among them.
our @cookies = (
    ['canary=always'], ['canary=never'], ['a=1; canary=always'], ['canary; canary=always'],
    ['canary;canary=never;canary=always'], ['CANARY=always'], ['canary = always'], ['canary=always;canary=never'],
    ['x=1', 'canary=never'], ['canary', 'canary=always'], ['canary=', 'canary=always'], ['canaryx=always'],
    ['canary=always, canary=never'], ['canary=sometimes'], ['xcanary=always; canary=never'], [],
);
our @args = (
    'beta=1', 'beta=yes', 'BETA=1', 'a=1&beta=1', 'xbeta=1', 'beta=0&beta=1', 'beta=1&beta=0', 'beta',
    'beta=', 'beta=%31', '&beta=yes', 'a=b&Beta=yes&c', '', 'legacy', 'legacy=', 'legacy=1&beta=1',
);

sub ask {
    my ($uri, @headers) = @_;
    my $res = http_request('GET', $uri, [Host => 'api.example', @headers]);
    my ($value, $decision) = split /\|/, $res->{body} // '|', 2;
    chomp $decision;
    return ($value, $decision);
}

run_tests();

__DATA__

=== TEST 1: a cookie rule reads exactly what $cookie_canary reads: always -> new, never -> old, else falls through
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
    migration: {strategy: user, percentage: 0}
    canary:
      header_rules:
        - {cookie: canary, value: always, target: new}
        - {cookie: canary, value: never, target: old}
--- config
    location /c { migration on; return 200 "$cookie_canary|$migration_rule $migration_target\n"; }
--- request
GET /c
--- check_eval
is(scalar @main::cookies, 16, 'sixteen cookie cases');
my %expected = (always => 'header new', never => 'header old');
for my $case (@main::cookies) {
    my ($cookie, $decision) = main::ask('/c', map { (Cookie => $_) } @$case);
    my $want = $expected{$cookie} // 'weight old';
    is($decision, $want, "Cookie: @{[join ' | ', @$case]} -> \$cookie_canary '$cookie', decided '$decision'");
}
my ($none) = main::ask('/c', Cookie => 'canary; canary=always');
is($none, '', 'nginx finds no canary in "canary; canary=always", and neither does the rule');



=== TEST 2: an arg rule reads exactly what $arg_beta reads (values:, present:, first occurrence, no decoding)
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
        - {arg: beta, values: ["1", "yes"], target: new}
        - {arg: legacy, present: true, target: old_cluster}
--- config
    location /a { migration on; return 200 "$arg_beta,$arg_legacy|$migration_rule $migration_target\n"; }
--- request
GET /a
--- check_eval
is(scalar @main::args, 16, 'sixteen query strings');
for my $q (@main::args) {
    my ($values, $decision) = main::ask("/a?$q");
    my ($beta, $legacy) = split /,/, $values, -1;
    # What nginx's own variables say decides what the rule must decide.
    my $want = ($beta eq '1' || $beta eq 'yes') ? 'header new'
             : ($q =~ /(^|&)legacy=/i) ? 'header old' : 'weight old';
    is($decision, $want, "?$q -> \$arg_beta '$beta', \$arg_legacy '$legacy', decided '$decision'");
}



=== TEST 3: cookie and arg rules keep the list's order with header rules, and from: applies to them
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
    migration: {percentage: 100}
    canary:
      header_rules:
        - {cookie: tester, present: true, target: new, from: [10.0.0.0/8]}
        - {arg: canary, value: "off", target: old}
        - {header: X-Canary, value: "off", target: new}
        - {cookie: tester, present: true, target: old}
--- config
    location / { migration on; return 200 "$migration_rule $migration_target\n"; }
--- request
GET /
--- check_eval
my @cases = (
    ['/', [Cookie => 'tester=1', 'X-Real-IP' => '10.1.2.3'], 'header new', 'cookie rule from an allowed network'],
    ['/', [Cookie => 'tester=1', 'X-Real-IP' => '192.0.2.1'], 'header old', 'from: skips to the later cookie rule'],
    ['/?canary=off', [Cookie => 'tester=1', 'X-Real-IP' => '192.0.2.1'], 'header old', 'arg rule before the later cookie rule'],
    ['/?canary=off', ['X-Canary' => 'off'], 'header old', 'arg rule before the header rule'],
    ['/', ['X-Canary' => 'off'], 'header new', 'header rule'],
    ['/', [Canary => 'off', 'X-Real-IP' => '192.0.2.1'], 'weight new', 'a header named like the argument is not the argument'],
);
for my $c (@cases) {
    my ($uri, $headers, $want, $name) = @$c;
    my $res = http_request('GET', $uri, [Host => 'api.example', @$headers]);
    is($res->{body}, "$want\n", $name);
}



=== TEST 4: nginx -t refuses a rule with two sources, at the second one
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
        - header: X-Canary
          cookie: canary
          value: always
          target: new
--- must_die
--- error_log
/html/m.yaml:10:19: services[0].canary.header_rules[0].cookie: a header rule reads one of header, cookie or arg; this one already reads header "x-canary"



=== TEST 5: nginx -t warns about a cookie rule shadowed by an earlier rule on the same cookie, not by a header of that name
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
        - {header: canary, value: always, target: new}
        - {cookie: canary, value: always, target: new}
        - {cookie: Canary, values: [always], target: old}
--- config
    location / { return 200 "ok\n"; }
--- error_log
services[0].canary.header_rules[2]: never matches: services[0].canary.header_rules[1] already matches every request it would (same cookie, value "always")
--- no_error_log
services[0].canary.header_rules[1]: never



=== TEST 6: an auth_request subrequest that reads the decision first decides from the main request: the user id and the arg rules read the main request's query
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
    migration: {strategy: user, percentage: 50, user_key: "arg:user"}
    canary:
      header_rules:
        - {arg: beta, value: "1", target: new}
>>> ok.txt
ok
--- config
    location = /authed {
        auth_request /auth-by-side;
        migration on;
        add_header X-Decision "$migration_rule $migration_target";
        try_files /ok.txt =404;
    }
    # An auth check that wants the user's side: the subrequest decides first.
    location = /auth-by-side {
        internal;
        migration on;
        set $side $migration_target;
        return 204;
    }
--- request
GET /authed
--- check_eval
my $threshold = int(50 * 100 * 0xFFFFFFFF / 10000);
for my $i (1 .. 30) {
    my $res = http_request('GET', "/authed?user=u$i", [Host => 'api.example']);
    my $want = 'user_hash ' . (murmur2("u$i") < $threshold ? 'new' : 'old');
    is($res->{headers}{'x-decision'}, $want, "?user=u$i: $want");
}
my $res = http_request('GET', '/authed?user=u1&beta=1', [Host => 'api.example']);
is($res->{headers}{'x-decision'}, 'header new', '?beta=1: the arg rule');
--- response_body_like: ok

