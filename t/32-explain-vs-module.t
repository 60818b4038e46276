# `nginx-migration explain` gives the module's answer: for 3,000 random requests
# (hosts, headers, cookies, arguments, client addresses through realip) the
# target and rule that `explain` prints equal $migration_target and
# $migration_rule in nginx (weight decisions are drawn at random per request:
# for them only the rule is compared).
use lib 't/lib';
use Test::MigrationNginx;
use JSON::PP;
use Cwd qw(abs_path);

our $CLI = $ENV{NGINX_MIGRATION} // abs_path('.') . '/target/nginx/bin/nginx-migration';
plan skip_all => "no $CLI (make build)" unless -x $CLI;

our $REQUESTS = $ENV{EXPLAIN_REQUESTS} // 3000;

sub pick { $_[int rand @_] }

# A random request: [host, [header name, value]..., args, client address].
sub random_request {
    my $host = pick('api.example.com', 'API.example.com:8080', 'x.shop.example.com', 'shop.example.com',
                    'ip.example.com', 'off.example.com', 'arg.example.com', 'nowhere.example', 'a.b.shop.example.com');
    my @headers;
    push @headers, ['X-Migration-Target', pick('new', 'old', 'NEW', '')] if rand() < 0.3;
    push @headers, ['X-User-ID', pick('alice', 'bob', 'mallory', '', map { "user-$_" } 1 .. 40)] if rand() < 0.7;
    push @headers, ['X-Canary', pick('1', 'yes')] if rand() < 0.2;
    push @headers, ['User-Agent', pick('curl/8.5.0', 'Googlebot/2.1', 'Mozilla/5.0')] if rand() < 0.5;
    my @cookies;
    push @cookies, 'canary=' . pick('always', 'never', 'maybe') if rand() < 0.3;
    push @cookies, 'uid=' . pick('carol', 'dave', map { "u$_" } 1 .. 30) if rand() < 0.5;
    push @cookies, 'theme=dark' if rand() < 0.3;
    push @headers, ['Cookie', join '; ', @cookies] if @cookies;
    my @args;
    push @args, 'beta=' . pick('1', 'yes', '0') if rand() < 0.3;
    push @args, 'uid=' . pick('zed', map { "q$_" } 1 .. 30) if rand() < 0.5;
    push @args, 'force' if rand() < 0.1;
    my $ip = pick('10.20.1.2', '10.1.2.3', '10.250.0.9', '192.168.1.7', '192.168.9.9', '172.16.5.5', '8.8.8.8',
                  '203.0.113.' . int(rand 255), '2001:db8::1', '2001:db8:1::5', 'fd00::7');
    return { host => $host, headers => \@headers, args => join('&', @args), ip => $ip };
}

sub explain {
    my ($yaml, $r) = @_;
    my @argv = ($CLI, 'explain', $yaml, '--format', 'json', '--host', $r->{host}, '--ip', $r->{ip});
    push @argv, '--header', "$_->[0]: $_->[1]" for @{ $r->{headers} };
    push @argv, '--args', $r->{args} if length $r->{args};
    open my $fh, '-|', @argv or die "explain: $!";
    local $/;
    my $out = <$fh>;
    close $fh;
    return decode_json($out);
}

run_tests();

__DATA__

=== TEST 1: explain agrees with the module on 3,000 random requests
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example.com]
    old_host: api.example.com
    old_backend: api-old:80
    new_host: api.new.example.com
    new_backend: api-new:80
    migration: {strategy: user, percentage: 35, hash_salt: "api-"}
    canary:
      header_rules:
        - {header: X-Migration-Target, value: new, target: new}
        - {header: X-Migration-Target, value: old, target: old}
        - {cookie: canary, value: always, target: new}
        - {cookie: canary, value: never, target: old}
        - {header: User-Agent, pattern: "(?i)bot", target: old}
        - {header: X-Canary, values: ["1", "yes"], target: new, from: [10.0.0.0/8, "2001:db8::/32"]}
      ip_rules:
        - {cidr: 10.20.0.0/16, target: new}
        - {cidrs: [10.0.0.0/8, "fd00::/8"], target: old}
      user_rules:
        - {users: [alice, bob], target: new}
        - {users: [mallory], target: old}
  - name: shop
    hosts: ["*.shop.example.com", shop.example.com]
    old_host: shop.example.com
    old_backend: shop-old:80
    new_host: shop.new.example.com
    new_backend: shop-new:80
    migration: {strategy: weight, percentage: 40}
    canary:
      header_rules:
        - {arg: beta, values: ["1", "yes"], target: new}
      ip_rules:
        - {cidr: 192.168.0.0/16, target: new}
  - name: by-ip
    old_host: ip.example.com
    old_backend: ip-old:80
    new_host: ip.new.example.com
    new_backend: ip-new:80
    migration: {strategy: ip, percentage: 50, user_key: "cookie:uid"}
    canary:
      user_rules:
        - {users: [carol], target: new}
        - {users: [dave], target: old}
  - name: off
    old_host: off.example.com
    old_backend: off-old:80
    new_host: off.new.example.com
    new_backend: off-new:80
    migration: {enabled: false, percentage: 100}
    canary:
      header_rules:
        - {header: X-Migration-Target, value: new, target: new}
  - name: by-arg
    old_host: arg.example.com
    old_backend: arg-old:80
    new_host: arg.new.example.com
    new_backend: arg-new:80
    migration: {strategy: user, percentage: 60, user_key: "arg:uid"}
    canary:
      header_rules:
        - {arg: force, present: true, target: old}
--- config
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    location / { migration on; return 200 "$migration_target|$migration_rule\n"; }
--- request
GET /
--- timeout: 60
--- check_eval
srand(20261127);
my $yaml = html_dir() . '/m.yaml';
my @requests = map { main::random_request() } 1 .. $main::REQUESTS;
my @batch = map {
    my $r = $_;
    ['GET', '/' . (length $r->{args} ? "?$r->{args}" : ''),
     [Host => $r->{host}, 'X-Real-IP' => $r->{ip}, map { ($_->[0] => $_->[1]) } @{ $r->{headers} }]]
} @requests;
my $responses = http_requests_keepalive(\@batch, timeout => 60);
my ($same, $weight, $differ, %rules) = (0, 0, 0);
for my $i (0 .. $#requests) {
    my ($target, $rule) = split /\|/, $responses->[$i]{body} // '', 2;
    chomp $rule;
    my $e = main::explain($yaml, $requests[$i]);
    my $etarget = $e->{target} // '';
    $rules{$rule}++;
    if ($rule eq 'weight' && $e->{rule} eq 'weight') {
        $weight++;
    } elsif ($e->{rule} eq $rule && $etarget eq $target) {
        $same++;
    } else {
        $differ++;
        diag("request $i: module $target/$rule, explain $etarget/$e->{rule}: " . encode_json($requests[$i])) if $differ <= 10;
    }
}
is($differ, 0, "explain = module: $same requests with target and rule equal, $weight weight decisions with the rule equal, $differ different");
note(join ', ', map { "$_ $rules{$_}" } sort keys %rules);
cmp_ok(scalar(keys %rules), '>=', 8, 'every rule occurred: ' . join(' ', sort keys %rules));
is($same + $weight, scalar @requests, 'every request compared');



=== TEST 2: what import-ingress writes routes in nginx as ingress-nginx routed the same Ingresses
The Ingresses hold cases ingress-nginx reads its own way (balancer.lua,
canary/main.go, controller.go): a header name with `_`, `canary: "True"` with a
weight of `abc`, a pattern PCRE refuses, and a canary on `/` of a Service that
`/b` also uses. Each request's target is where ingress-nginx sends
it (main = old), and explain must say the same.
--- user_files
>>> ingress.yaml
apiVersion: v1
kind: List
items:
- {apiVersion: networking.k8s.io/v1, kind: Ingress, metadata: {name: a, namespace: t},
   spec: {rules: [{host: a.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]}}]}}
- {apiVersion: networking.k8s.io/v1, kind: Ingress,
   metadata: {name: a-canary, namespace: t, annotations: {nginx.ingress.kubernetes.io/canary: "true", nginx.ingress.kubernetes.io/canary-by-header: X_Canary}},
   spec: {rules: [{host: a.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a2, port: {number: 80}}}}]}}]}}
- {apiVersion: networking.k8s.io/v1, kind: Ingress, metadata: {name: b, namespace: t},
   spec: {rules: [{host: b.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: b, port: {number: 80}}}}]}}]}}
- {apiVersion: networking.k8s.io/v1, kind: Ingress,
   metadata: {name: b-canary, namespace: t, annotations: {nginx.ingress.kubernetes.io/canary: "true", nginx.ingress.kubernetes.io/canary-by-header: X-Canary,
     nginx.ingress.kubernetes.io/canary-by-header-pattern: "[][**da?$&*", nginx.ingress.kubernetes.io/canary-by-cookie: canary, nginx.ingress.kubernetes.io/canary-weight: "100"}},
   spec: {rules: [{host: b.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: b2, port: {number: 80}}}}]}}]}}
- {apiVersion: networking.k8s.io/v1, kind: Ingress, metadata: {name: c, namespace: t},
   spec: {rules: [{host: c.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: c, port: {number: 80}}}}]}}]}}
- {apiVersion: networking.k8s.io/v1, kind: Ingress,
   metadata: {name: c-canary, namespace: t, annotations: {nginx.ingress.kubernetes.io/canary: "True", nginx.ingress.kubernetes.io/canary-weight: abc, nginx.ingress.kubernetes.io/canary-by-header: X-Beta}},
   spec: {rules: [{host: c.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: c2, port: {number: 80}}}}]}}]}}
- {apiVersion: networking.k8s.io/v1, kind: Ingress, metadata: {name: d, namespace: t},
   spec: {rules: [{host: d.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: d, port: {number: 80}}}},
                                                       {path: /b, pathType: Prefix, backend: {service: {name: d, port: {number: 80}}}}]}}]}}
- {apiVersion: networking.k8s.io/v1, kind: Ingress,
   metadata: {name: d-canary, namespace: t, annotations: {nginx.ingress.kubernetes.io/canary: "true", nginx.ingress.kubernetes.io/canary-by-header: X-Canary}},
   spec: {rules: [{host: d.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: d2, port: {number: 80}}}}]}}]}}
--- init
my $dir = html_dir();
system("$main::CLI import-ingress $dir/ingress.yaml > $dir/m.yaml 2> $dir/report.txt") == 0
    or die "import-ingress failed: " . `cat $dir/report.txt`;
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- config
    location / { migration on; return 200 "$migration_target|$migration_rule\n"; }
--- request
GET /
--- check_eval
my $yaml = html_dir() . '/m.yaml';
# [host, path, [headers], where ingress-nginx sends it]
my @cases = (
    ['a.example.com', '/', ['X-Canary' => 'always'], 'new'],   # balancer.lua:232-234: X_Canary is read as X-Canary
    ['a.example.com', '/', ['X-Canary' => 'never'], 'old'],
    ['a.example.com', '/', [], 'old'],
    ['b.example.com', '/', ['X-Canary' => 'always', 'Cookie' => 'canary=always'], 'old'],   # balancer.lua:246-249
    ['b.example.com', '/', ['Cookie' => 'canary=never'], 'old'],
    ['b.example.com', '/', [], 'new'],                          # weight 100
    ['c.example.com', '/', ['X-Beta' => 'always'], 'new'],      # canary "True" (strconv.ParseBool)
    ['c.example.com', '/', [], 'old'],                          # weight abc is 0 (canary/main.go:137)
    ['d.example.com', '/b', ['X-Canary' => 'always'], 'new'],   # controller.go:1601: /b shares the canaried upstream
    ['d.example.com', '/', ['X-Canary' => 'never'], 'old'],
);
my $responses = http_requests_keepalive([map { ['GET', $_->[1], [Host => $_->[0], @{ $_->[2] }]] } @cases], timeout => 10);
for my $i (0 .. $#cases) {
    my ($host, $path, $headers, $expected) = @{ $cases[$i] };
    my ($target) = split /\|/, $responses->[$i]{body} // '';
    my %h = @$headers;
    my @hdr = map { [$_, $h{$_}] } grep { $_ ne 'Cookie' } keys %h;
    push @hdr, ['Cookie', $h{Cookie}] if exists $h{Cookie};
    my $e = main::explain($yaml, { host => $host, headers => \@hdr, args => '', ip => '127.0.0.1' });
    is($target, $expected, "nginx: $host$path " . join(' ', @$headers) . " -> $expected");
    is($e->{target} // '', $expected, "explain: $host$path -> $expected");
}
