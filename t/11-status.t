# `migration_status` (docs/status.md): the JSON document, the Prometheus text
# format (checked by the Prometheus project's own Python parser), and how the
# handler answers what it does not serve.
use lib 't/lib';
use Test::MigrationNginx;
use JSON::PP ();
use POSIX ();
use IO::Socket::INET ();
use Socket ();
use Time::HiRes ();

our $YAML = <<'YAML';
version: "2026-11-26.1"
services:
  - name: api
    hosts: [api.example]
    old_host: api.old.example
    old_backend: old:80
    new_host: api.new.example
    new_backend: new:443
    migration: {percentage: 33.33, strategy: user, user_key: "header:X-User-ID"}
    canary:
      header_rules:
        - {header: X-Canary, value: "on", target: new}
      ip_rules:
        - {cidr: 10.0.0.0/8, target: new}
      user_rules:
        - {users: [alice], target: new}
        - {users: [mallory], target: old}
  - name: shop.v2
    old_host: shop.example
    old_backend: old:80
    new_host: shop.new.example
    new_backend: new:80
    migration: {enabled: false}
YAML

# The Python check: parse the exposition with prometheus_client's parser and
# print "family type" then "sample{labels} value" lines, sorted, for Perl to compare.
our $PARSE = <<'PY';
import sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    out.append("family %s %s" % (family.name, family.type))
    for s in family.samples:
        labels = ",".join("%s=%s" % kv for kv in sorted(s.labels.items()))
        out.append("sample %s{%s} %g" % (s.name, labels, s.value))
print("\n".join(sorted(out)))
PY

sub prometheus_parse {
    my ($text) = @_;
    my $py = '/usr/bin/python3';
    -x $py or die "$py is missing (make deps installs python3-prometheus-client)\n";
    my $in = servroot() . '/prom.txt';
    open my $fh, '>', $in or die $!;
    print $fh $text;
    close $fh;
    my $out = `$py -c '$PARSE' < '$in' 2>&1`;
    return ($? == 0, $out);
}

add_block_preprocessor(sub {
    my $block = shift;
    $block->{user_files} //= [">>> m.yaml\n$YAML"];
    $block->{http_config} //= ["    migration_config \$TEST_NGINX_HTML_DIR/m.yaml;\n    real_ip_header X-Real-IP;\n    set_real_ip_from 127.0.0.1;\n"];
    $block->{config} //= [<<'CONF'];
    location / { migration on; return 200 "$migration_target $migration_rule\n"; }
    location = /migration/status { migration_status; allow 127.0.0.1; deny all; }
CONF
});

run_tests();

__DATA__

=== TEST 1: the JSON document has the fields of docs/status.md, and counts every rule
--- request
GET /migration/status
--- response_headers
Content-Type: application/json
--- check_eval
my @sent = (
    [[Host => 'api.example', 'X-Canary' => 'on'], 'new header'],
    [[Host => 'api.example', 'X-Real-IP' => '10.1.2.3'], 'new cidr'],
    [[Host => 'api.example', 'X-User-ID' => 'alice'], 'new user_list'],
    [[Host => 'api.example', 'X-User-ID' => 'mallory'], 'old user_list'],
    [[Host => 'api.example', 'X-User-ID' => 'u1'], undef],
    [[Host => 'api.example'], undef],    # no user id: a weighted draw
    [[Host => 'shop.example'], 'old disabled'],
    [[Host => 'nobody.example'], ' none'],
);
for my $s (@sent) {
    my $body = http_request('GET', '/', $s->[0])->{body};
    is($body, "$s->[1]\n", "request routed $s->[1]") if defined $s->[1];
}
my $doc = JSON::PP::decode_json(http_request('GET', '/migration/status')->{body});
is_deeply([sort keys %$doc], [qw(file generation loaded_at services source unmatched version)], 'top-level fields');
is_deeply($doc->{file}, {state => 'ok', error => undef, since => undef}, 'the file is ok');
is($doc->{version}, '2026-11-26.1', 'version');
is($doc->{generation}, 1, 'generation');
like($doc->{loaded_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, 'loaded_at is an RFC 3339 UTC time');
like($doc->{source}, qr{/html/m\.yaml$}, 'source is the file');
is($doc->{unmatched}, 1, 'unmatched: nobody.example');
my ($api, $shop) = @{ $doc->{services} };
is_deeply([sort keys %$api], [qw(configured_percentage connections enabled fallback latency_p50_ms latency_p99_ms name percentage requests responses rules strategy)], 'service fields');
is_deeply($api->{connections}, { old => 0, new => 0, misplaced => 0, drained => 0 }, 'no long-lived requests yet');
is($api->{name}, 'api', 'name');
ok($api->{enabled}, 'enabled');
is($api->{strategy}, 'user', 'strategy');
is($api->{percentage}, 33.33, 'percentage keeps its two decimals');
is($api->{requests}{old} + $api->{requests}{new}, 6, 'six api requests');
is_deeply($api->{rules}, { header => 1, cidr => 1, user_list => 2, user_hash => 1, ip_hash => 0, weight => 1,
                           disabled => 0, fallback => 0 }, 'every rule, counted');
is_deeply($api->{fallback}, { state => 'closed', consecutive_failures => 0, trips => 0 }, 'fallback');
is($shop->{name}, 'shop.v2', 'second service');
ok(!$shop->{enabled}, 'disabled');
is_deeply($shop->{requests}, { old => 1, new => 0 }, 'its one request went to old');
is($shop->{rules}{disabled}, 1, 'by the disabled rule');



=== TEST 2: the Prometheus text format parses with prometheus_client, with HELP, TYPE and every series
--- request
GET /migration/status?format=prometheus
--- response_headers
Content-Type: text/plain; version=0.0.4; charset=utf-8
--- check_eval
http_request('GET', '/', [Host => 'api.example', 'X-Canary' => 'on']) for 1 .. 3;
http_request('GET', '/', [Host => 'shop.example']) for 1 .. 2;
my $text = http_request('GET', '/migration/status?format=prometheus')->{body};
my ($ok, $parsed) = main::prometheus_parse($text);
ok($ok, 'prometheus_client parses the exposition') or diag($parsed);
my %lines = map { $_ => 1 } split /\n/, $parsed;
for my $family (['migration_requests', 'counter'], ['migration_unmatched_requests', 'counter'], ['migration_fallback_state', 'gauge'],
                ['migration_config_generation', 'gauge'], ['migration_config_info', 'gauge'], ['migration_percentage', 'gauge'],
                ['migration_enabled', 'gauge'], ['migration_fallback_trips', 'counter'],
                ['migration_config_loaded_timestamp_seconds', 'gauge']) {
    ok($lines{"family $family->[0] $family->[1]"}, "family $family->[0] is a $family->[1]");
}
ok($lines{'sample migration_requests_total{rule=header,service=api,target=new} 3'}, 'header requests to new');
ok($lines{'sample migration_requests_total{rule=disabled,service=shop.v2,target=old} 2'}, 'disabled requests to old');
ok($lines{'sample migration_requests_total{rule=weight,service=api,target=old} 0'}, 'series exist before their first request');
ok($lines{'sample migration_fallback_state{service=api} 0'}, 'fallback state');
ok($lines{'sample migration_config_generation{} 1'}, 'generation');
ok($lines{'sample migration_config_info{source=' . html_dir() . '/m.yaml,version=2026-11-26.1} 1'}, 'config info');
ok($lines{'sample migration_percentage{service=api} 33.33'}, 'percentage');
my $series = () = $text =~ /^migration_requests_total\{/mg;
is($series, 28, '14 possible target/rule series per service');
like($text, qr/\A# HELP migration_requests_total .+\n# TYPE migration_requests_total counter\n/, 'starts with HELP and TYPE');



=== TEST 3: label values with quotes and backslashes are escaped
--- user_files
>>> m.yaml
version: "quote \" back \\ end"
services: []
--- request
GET /migration/status?format=prometheus
--- response_body_like
migration_config_info\{version="quote \\" back \\\\ end",source="[^"]+"\} 1
--- check_eval
my ($ok, $parsed) = main::prometheus_parse(http_request('GET', '/migration/status?format=prometheus')->{body});
ok($ok, 'parses') or diag($parsed);
my $doc = JSON::PP::decode_json(http_request('GET', '/migration/status')->{body});
is($doc->{version}, "quote \" back \\ end", 'the JSON string round-trips');



=== TEST 4: HEAD gets the headers only, and a keep-alive connection goes on with the next request
--- request
HEAD /migration/status
--- response_headers
Content-Type: application/json
--- response_body
--- check_eval
# A body written after a HEAD's headers would be read as the start of the next
# response on the same connection.
my $answers = http_requests_keepalive([['HEAD', '/migration/status'], ['GET', '/migration/status'], ['HEAD', '/migration/status?format=prometheus'], ['GET', '/migration/status?format=prometheus']]);
is(scalar(@$answers), 4, 'four answers');
is($answers->[1]{status}, 200, 'the GET after a HEAD is answered');
like($answers->[1]{body} // '', qr/\A\{"version":/, 'with the JSON document from its first byte');
is($answers->[3]{status}, 200, 'the GET after a Prometheus HEAD is answered');
like($answers->[3]{body} // '', qr/\A# HELP /, 'with the exposition from its first byte');



=== TEST 5: other methods are refused with 405
--- request
POST /migration/status
--- error_code: 405



=== TEST 6: an unknown format is a 400
--- request
GET /migration/status?format=xml
--- error_code: 400



=== TEST 7: ?format=json is the default's explicit name
--- request
GET /migration/status?x=1&format=json
--- response_body_like
^\{"version":"2026-11-26\.1","generation":1,



=== TEST 8: the location's access rules apply as to any handler
--- request
GET /migration/status
--- more_headers
X-Real-IP: 192.0.2.1
--- error_code: 403



=== TEST 9: an empty configuration still has a status
--- user_files
>>> m.yaml
services: []
--- request
GET /migration/status
--- response_body_like
^\{"version":"[0-9a-f]{16}","generation":1,"loaded_at":"[^"]+","source":"[^"]+/m\.yaml","unmatched":\d+,"file":\{"state":"ok","error":null,"since":null\},"services":\[\]\}$



=== TEST 10: only requests routed in a location with `migration on` are counted
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    # An http-level log format reads the variables of every request, routed or not.
    log_format m '$migration_service $migration_target $migration_rule';
    access_log logs/m.log m;
--- config
    location / { migration on; return 200 "$migration_target $migration_rule\n"; }
    location /peek { return 200 "$migration_target $migration_rule\n"; }
    location /peek-then-route { set $t $migration_target; rewrite ^ / last; }
    location = /migration/status { migration_status; }
--- request
GET /migration/status
--- check_eval
http_request('GET', '/', [Host => 'shop.example']) for 1 .. 3;
is(http_request('GET', '/peek', [Host => 'shop.example'])->{body}, "old disabled\n", 'variables decide outside migration on');
http_request('GET', '/peek-then-route', [Host => 'shop.example']);
my $doc = JSON::PP::decode_json(http_request('GET', '/migration/status')->{body});
my ($shop) = grep { $_->{name} eq 'shop.v2' } @{ $doc->{services} };
is($shop->{requests}{old}, 4, 'the 3 routed requests and the one decided elsewhere then routed; not the peek, not the log');



=== TEST 11: every status value, JSON and Prometheus, equals a tally of the answers this test received: every rule (ip_hash, disabled and fallback included), every gauge
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    real_ip_header X-Real-IP;
    set_real_ip_from 127.0.0.1;
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "old"; } }
--- user_files eval
[[ 'm.yaml', <<'YAML' ]]
version: "tally-1"
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
    migration: {strategy: user, percentage: 50}
    canary:
      header_rules:
        - {header: X-Canary, value: "on", target: new}
        - {header: X-Canary, value: "off", target: old}
      ip_rules:
        - {cidr: 10.0.0.0/8, target: new}
        - {cidr: 192.168.0.0/16, target: old}
      user_rules:
        - {users: [alice], target: new}
        - {users: [mallory], target: old}
  - name: by-ip
    old_host: ip.example
    old_backend: old:80
    new_host: ip.example
    new_backend: new:80
    migration: {strategy: ip, percentage: 33.33}
  - name: off
    old_host: off.example
    old_backend: old:80
    new_host: off.example
    new_backend: new:80
    migration: {enabled: false, percentage: 12.5}
  - name: fb
    old_host: fb.example
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: fb.example
    new_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_2
    migration: {percentage: 100}
    fallback: {failures: 2, cooldown: 1h}
YAML
--- config
    location / {
        migration on;
        add_header X-Decision "$migration_service/$migration_target/$migration_rule" always;
        return 200 "$migration_service $migration_target $migration_rule\n";
    }
    location /fb {
        migration on;
        add_header X-Decision "$migration_service/$migration_target/$migration_rule" always;
        proxy_pass http://$migration_backend;
    }
    location = /migration/status { migration_status; }
--- request
GET /migration/status
--- error_log
connect() failed (111: Connection refused)
--- check_eval
my $t0 = time;
my (%tally, %class, %proxied, $unmatched);
my $send = sub {
    my ($path, @headers) = @_;
    my $r = http_request('GET', $path, [@headers]);
    my ($service, $target, $rule) = ($r->{headers}{'x-decision'} // '') =~ m{^(.*)/(.*)/(.*)$} or return fail("no decision in @headers");
    if ($rule eq 'none') { $unmatched++; return }
    $tally{$service}{$target}{$rule}++;
    # /fb proxies: its 502s are the refused new cluster (no upstream response).
    my $failed = $path eq '/fb' && $r->{status} == 502;
    $class{$service}{$target}{ $failed ? 'failed' : int($r->{status} / 100) . 'xx' }++;
    $proxied{$service}{$target}++ if $path eq '/fb';
};
my @requests = (
    (['/', Host => 'api.example', 'X-Canary' => 'on']) x 3,
    (['/', Host => 'api.example', 'X-Canary' => 'off']) x 2,
    (['/', Host => 'api.example', 'X-Real-IP' => '10.9.8.7']) x 4,
    (['/', Host => 'api.example', 'X-Real-IP' => '192.168.1.1']) x 1,
    (['/', Host => 'api.example', 'X-User-ID' => 'alice']) x 2,
    (['/', Host => 'api.example', 'X-User-ID' => 'mallory']) x 3,
    (map { ['/', Host => 'api.example', 'X-User-ID' => "user-$_"] } 1 .. 30),
    (['/', Host => 'api.example']) x 30,
    (map { ['/', Host => 'ip.example', 'X-Real-IP' => "172.16.$_.9"] } 1 .. 30),
    (['/', Host => 'off.example', 'X-Canary' => 'on']) x 5,
    (['/fb', Host => 'fb.example']) x 6,
    (['/', Host => 'nobody.example']) x 4,
);
$send->(@$_) for @requests;
my @rules = qw(header cidr user_list user_hash ip_hash weight disabled fallback);
# What the tally must hold for the test to mean anything: each rule seen, on both
# sides where a rule can send both ways.
for my $need (['api', 'new', 'header'], ['api', 'old', 'header'], ['api', 'new', 'cidr'], ['api', 'old', 'cidr'],
              ['api', 'new', 'user_list'], ['api', 'old', 'user_list'], ['api', 'new', 'user_hash'], ['api', 'old', 'user_hash'],
              ['api', 'new', 'weight'], ['api', 'old', 'weight'], ['by-ip', 'new', 'ip_hash'], ['by-ip', 'old', 'ip_hash'],
              ['off', 'old', 'disabled'], ['fb', 'new', 'weight'], ['fb', 'old', 'fallback']) {
    ok($tally{$need->[0]}{$need->[1]}{$need->[2]}, "the answers include $need->[0] $need->[1] $need->[2]");
}
is($unmatched, 4, 'four answers matched no service');
my $n = 0; $n += $_ for map { values %$_ } map { values %$_ } values %tally;
is($n + $unmatched, scalar @requests, 'every request answered with a decision');

my @classes = qw(1xx 2xx 3xx 4xx 5xx failed aborted);
# [enabled, strategy, percentage in force, the file's percentage]: a disabled
# service sends nothing to new, so 0 % is in force.
my %want = (api => [1, 'user', 50, 50], 'by-ip' => [1, 'ip', 33.33, 33.33], off => [0, 'weight', 0, 12.5], fb => [1, 'weight', 100, 100]);
my %trips = (fb => 1);
my $doc = JSON::PP::decode_json(http_request('GET', '/migration/status')->{body});
is($doc->{version}, 'tally-1', 'JSON version');
is($doc->{generation}, 1, 'JSON generation');
is($doc->{unmatched}, $unmatched, 'JSON unmatched');
is_deeply([map { $_->{name} } @{ $doc->{services} }], [qw(api by-ip off fb)], 'JSON services, in order');
for my $s (@{ $doc->{services} }) {
    my $name = $s->{name};
    my $t = $tally{$name} // {};
    for my $target (qw(old new)) {
        my $sum = 0; $sum += $_ for values %{ $t->{$target} // {} };
        is($s->{requests}{$target}, $sum, "JSON $name requests.$target");
    }
    is_deeply($s->{rules}, { map { my $r = $_; ($r => ($t->{old}{$r} // 0) + ($t->{new}{$r} // 0)) } @rules }, "JSON $name rules");
    is(($s->{enabled} ? 1 : 0) . " $s->{strategy} $s->{percentage} $s->{configured_percentage}", join(' ', @{ $want{$name} }),
       "JSON $name enabled, strategy, percentage in force, configured_percentage");
    is_deeply($s->{fallback}, { state => $name eq 'fb' ? 'open' : 'closed', consecutive_failures => $name eq 'fb' ? 2 : 0,
                                trips => $trips{$name} // 0 }, "JSON $name fallback");
    is_deeply($s->{responses}, { map { my $t = $_; ($t => { map { ($_ => $class{$name}{$t}{$_} // 0) } @classes }) } qw(old new) },
              "JSON $name responses by class");
    for my $target (qw(old new)) {
        is(defined $s->{latency_p50_ms}{$target} ? 'a time' : 'null', $proxied{$name}{$target} ? 'a time' : 'null',
           "JSON $name latency_p50_ms.$target: " . ($proxied{$name}{$target} ? 'upstream responses had times' : 'no upstream, no time'));
    }
}

my $text = http_request('GET', '/migration/status?format=prometheus')->{body};
my %sample;
for my $line (split /\n/, $text) {
    next if $line =~ /^#/;
    my ($series, $value) = $line =~ /^(\S+) (\S+)$/ or do { fail("Prometheus line '$line'"); next };
    $sample{$series} = $value;
}
my %expect;
for my $name (sort keys %want) {
    for my $target (qw(old new)) {
        for my $rule (@rules) {
            next if $target eq 'new' && ($rule eq 'disabled' || $rule eq 'fallback');
            $expect{qq{migration_requests_total{service="$name",target="$target",rule="$rule"}}} = $tally{$name}{$target}{$rule} // 0;
        }
    }
    for my $target (qw(old new)) {
        $expect{qq{migration_responses_total{service="$name",target="$target",class="$_"}}} = $class{$name}{$target}{$_} // 0
            for @classes;
    }
    $expect{qq{migration_percentage{service="$name"}}} = $want{$name}[2];
    $expect{qq{migration_configured_percentage{service="$name"}}} = $want{$name}[3];
    $expect{qq{migration_enabled{service="$name"}}} = $want{$name}[0];
    $expect{qq{migration_fallback_state{service="$name"}}} = $name eq 'fb' ? 1 : 0;
    $expect{qq{migration_fallback_trips_total{service="$name"}}} = $trips{$name} // 0;
    # No long-lived requests in this test (t/43-drain.t counts them).
    $expect{qq{migration_connections{service="$name",target="$_"}}} = 0 for qw(old new);
    $expect{qq{migration_connections_drained_total{service="$name",target="$_"}}} = 0 for qw(old new);
    $expect{qq{migration_connections_misplaced{service="$name"}}} = 0;
}
$expect{'migration_unmatched_requests_total'} = $unmatched;
$expect{'migration_config_generation'} = 1;
$expect{'migration_config_info{version="tally-1",source="' . html_dir() . '/m.yaml"}'} = 1;
$expect{'migration_config_file_refused{source="' . html_dir() . '/m.yaml"}'} = 0;
# The histogram: its times are the machine's, but every upstream attempt is in
# it (the proxied requests, none of the others), in buckets that only grow.
for my $name (sort keys %want) {
    for my $target (qw(old new)) {
        my $series = qq{service="$name",target="$target"};
        my @buckets = map { delete $sample{qq{migration_upstream_response_seconds_bucket{$series,le="$_"}}} }
            qw(0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf);
        my $count = delete $sample{"migration_upstream_response_seconds_count{$series}"};
        my $sum = delete $sample{"migration_upstream_response_seconds_sum{$series}"};
        my $n = $proxied{$name}{$target} // 0;
        is("$count $buckets[-1]", "$n $n", "histogram $name $target: $n upstream responses, all under +Inf");
        ok(!grep({ !defined $buckets[$_] || $_ && $buckets[$_] < $buckets[$_ - 1] } 0 .. $#buckets) && $sum >= 0,
           "histogram $name $target: every bucket, growing; a sum");
    }
}
my $loaded = delete $sample{migration_config_loaded_timestamp_seconds};
ok(defined $loaded && $loaded >= $t0 - 60 && $loaded <= time, "loaded_timestamp_seconds is the start ($loaded)");
my ($y, $mo, $d, $h, $mi, $se) = $doc->{loaded_at} =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)Z$/;
is(POSIX::mktime($se, $mi, $h, $d, $mo - 1, $y - 1900) - POSIX::mktime(gmtime 0), $loaded, 'and JSON loaded_at says the same time');
is_deeply(\%sample, \%expect, 'every Prometheus sample, and no other, has the tallied value');



=== TEST 12: `migration on` at http and server level holds in every location below, until a location says off
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    migration on;
--- config
    migration_service shop.v2;
    location / { return 200 "$migration_target $migration_rule\n"; }
    location /off { migration off; return 200 "$migration_target $migration_rule\n"; }
    location = /migration/status { migration off; migration_status; }
--- request
GET /
--- response_body
old disabled
--- check_eval
http_request('GET', '/') for 1 .. 2;                 # inherited from http, through the server
http_request('GET', '/off') for 1 .. 4;              # decided for the variable, not routed
my $doc = JSON::PP::decode_json(http_request('GET', '/migration/status')->{body});
my ($shop) = grep { $_->{name} eq 'shop.v2' } @{ $doc->{services} };
is($shop->{requests}{old}, 3, 'the three requests of the location that inherits migration on are counted; off is not');



=== TEST 13: ?service=NAME limits either format to one service; an unknown name is a 404
--- user_files
>>> m.yaml
services:
  - {name: api, old_host: api.example, old_backend: "old:80", new_host: api.example, new_backend: "new:80"}
  - {name: shop.v2, old_host: shop.example, old_backend: "old:80", new_host: shop.example, new_backend: "new:80"}
--- request
GET /migration/status?service=shop.v2
--- response_body_like
"services":\[\{"name":"shop\.v2",
--- check_eval
my $doc = JSON::PP::decode_json(http_request('GET', '/migration/status?service=shop.v2')->{body});
is_deeply([map { $_->{name} } @{ $doc->{services} }], ['shop.v2'], 'JSON: the one service');
my $text = http_request('GET', '/migration/status?format=prometheus&service=api')->{body};
like($text, qr/^migration_enabled\{service="api"\} 1$/m, 'Prometheus: its series');
unlike($text, qr/service="shop\.v2"/, 'and no other service\'s');
like($text, qr/^migration_config_generation 1$/m, 'with the configuration\'s own families');
my ($ok, $parsed) = main::prometheus_parse($text);
ok($ok, 'prometheus_client parses it') or diag($parsed);
is(http_request('GET', '/migration/status?service=nope')->{status}, 404, 'an unknown service: 404');



=== TEST 14: 10,000 services: the body comes in bounded pieces as the client reads; eight scrapers that never read keep the worker's memory bounded, and the body is whole for one that reads
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=big:64m;
--- user_files eval
[[ 'm.yaml', "version: \"big\"\nservices:\n" . CORE::join('', map { "  - {name: s$_, old_host: s$_.example, old_backend: \"old:80\", new_host: s$_.example, new_backend: \"new:80\", migration: {percentage: 10}}\n" } 1 .. 10000) ]]
--- timeout: 60
--- request
GET /migration/status?service=s1
--- response_body_like
"name":"s1"
--- check_eval
my $rss = sub {
    # This block runs without a master: the one nginx process is its worker.
    open my $st, '<', "/proc/" . nginx_pid() . "/status" or return 0;
    local $/; my ($kb) = <$st> =~ /^VmRSS:\s+(\d+) kB/m; return $kb * 1024;
};
my $scrape = http_request('GET', '/migration/status?format=prometheus');
is($scrape->{status}, 200, 'a whole scrape');
like($scrape->{headers}{'transfer-encoding'} // '', qr/chunked/, 'sent in pieces (chunked)');
my $lines = () = $scrape->{body} =~ /^migration_enabled\{/mg;
is($lines, 10000, 'every service\'s series');
like($scrape->{body}, qr/migration_config_file_refused\{source="[^"]+"\} 0\n\z/, 'to the last family');
my $json = JSON::PP::decode_json(http_request('GET', '/migration/status')->{body});
is(scalar @{ $json->{services} }, 10000, 'the JSON document is whole too');
my $before = $rss->();
my @idle;
for (1 .. 8) {
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port()) or die $!;
    setsockopt($c, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), 4096);
    print $c "GET /migration/status?format=prometheus HTTP/1.1\r\nHost: x\r\n\r\n";
    push @idle, $c;
}
Time::HiRes::sleep(2);
my $grown = $rss->() - $before;
cmp_ok($grown, '<', 32 * 1024 * 1024, sprintf('eight scrapers that never read grew the worker by %.1f MB (the whole body is about 40 MB each)', $grown / 1048576));
is(http_request('GET', '/migration/status?service=s9999')->{status}, 200, 'the worker serves others meanwhile');
close $_ for @idle;



=== TEST 15: under limit_rate the status keeps the write filter's pace (the rate's own timer), not send_timeout per piece
--- user_files eval
[[ 'm.yaml', "services:\n" . CORE::join('', map { "  - {name: s$_, old_host: s$_.example, old_backend: \"old:80\", new_host: s$_.example, new_backend: \"new:80\"}\n" } 1 .. 600) ]]
--- config
    location = /limited { limit_rate 1m; send_timeout 20s; migration_status; }
--- timeout: 40
--- request
GET /limited?service=s1
--- response_body_like
"name":"s1"
--- check_eval
my $t0 = Time::HiRes::time();
my $limited = http_request('GET', '/limited');
my $took = Time::HiRes::time() - $t0;
is($limited->{status}, 200, 'the whole document');
is(scalar @{ JSON::PP::decode_json($limited->{body})->{services} }, 600, 'every service');
cmp_ok($took, '<', 10, sprintf('%d KB at 1 MB/s took %.1f s (a piece per send_timeout would take over a minute)', length($limited->{body}) / 1024, $took));



=== TEST 16: a request answered without being routed (nginx refused its header, deny, a header timeout, a body too large) is not counted, though the access log or add_header ... always reads its target
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    log_format m '$status $migration_service $migration_target $migration_rule';
    access_log logs/m.log m;
    client_header_timeout 1s;
--- config
    migration on;
    migration_service api;
    location / { return 200 "$migration_target $migration_rule\n"; }
    location /private { deny all; }
    location /private-h { deny all; add_header X-Migration "$migration_target $migration_rule" always; }
    location /upload { client_max_body_size 10; add_header X-Migration "$migration_target $migration_rule" always; return 200; }
    location = /migration/status { migration off; migration_status; }
--- request
GET /
--- more_headers
X-User-ID: alice
--- response_body
new user_list
--- check_eval
sub raw {
    my ($bytes) = @_;
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port()) or die $!;
    print $c $bytes;
    local $/;
    return <$c> // '';
}
like(raw("GET / HTTP/1.1\r\nHost: a.example\r\nX-User-ID: u1\r\nHost: b.example\r\n\r\n"), qr{^HTTP/1\.1 400 }, 'a duplicate Host: 400');
like(raw("GET / HTTP/1.1\r\nHost: a.example\r\nX-User-ID: u2\r\nContent-Length: x\r\n\r\n"), qr{^HTTP/1\.1 400 }, 'a bad Content-Length: 400');
is(raw("GET / HTTP/1.1\r\nHost: a.example\r\nX-User-ID: u3\r\n"), '', 'a header never finished: closed after client_header_timeout (408)');
is(http_request('GET', '/private', ['X-User-ID' => "u$_"])->{status}, 403, 'deny: 403') for 4 .. 9;
for my $i (1 .. 3) {
    my $denied = http_request('GET', '/private-h', ['X-User-ID' => "d$i"]);
    is($denied->{status}, 403, 'deny, with add_header always: 403');
    like($denied->{headers}{'x-migration'} // '', qr/^(old|new) user_hash$/, 'whose header names the target it would have had');
    is(http_request('POST', '/upload', ['X-User-ID' => "b$i"], 'x' x 100)->{status}, 413, 'a body too large: 413');
}
my $doc = JSON::PP::decode_json(http_request('GET', '/migration/status')->{body});
my ($api) = grep { $_->{name} eq 'api' } @{ $doc->{services} };
is_deeply($api->{requests}, {old => 0, new => 1}, 'only the routed request counts');
is_deeply([map { $api->{responses}{$_}{'4xx'} // 0 } qw(old new)], [0, 0], 'no 4xx is a response of either side');
my @logged = do { open my $fh, '<', servroot() . '/logs/m.log' or die $!; grep { !/^200 / } <$fh> };
is(scalar(grep { /^(400|408|403|413) api (old|new) user_hash$/ } @logged), 15, 'the access log still names the target each would have had') or diag(@logged);
