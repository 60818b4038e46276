# Sticky ids (docs/yaml.md, migration.sticky): a request that carries no id in
# the service's cookie user_key gets one (22 base64url characters), is decided as
# if it had carried it, and its final response hands it out in exactly one
# Set-Cookie; a request that carries the cookie never gets one. Real clients:
# the harness's HTTP/1.1, curl over TLS and over HTTP/2.
use lib 't/lib';
use Test::MigrationNginx;
use Test::MigrationHelpers qw(murmur2 write_file status);
use JSON::PP ();
use Time::HiRes ();

our $ID = qr/[A-Za-z0-9_-]{22}/;

sub yaml {
    my (%o) = @_;
    my $percentage = $o{percentage} // 30;
    my $enabled = $o{enabled} // 'true';
    my $sticky = $o{sticky} // '{}';
    return <<"YAML";
version: "$percentage-$enabled"
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
    migration:
      enabled: $enabled
      strategy: user
      percentage: $percentage
      user_key: cookie:mig_uid
      sticky: $sticky
    canary:
      header_rules:
        - {header: X-Beta, value: "on", target: new}
YAML
}

# Whether murmur2(id) falls in the new cohort at $percentage (nginx's split_clients rule).
sub cohort {
    my ($id, $percentage) = @_;
    return murmur2($id) < int($percentage * 100 * 0xFFFFFFFF / 10000) ? 'new' : 'old';
}

# The Set-Cookie values of a response.
sub set_cookies {
    my ($res) = @_;
    return map { $_->[1] } grep { lc $_->[0] eq 'set-cookie' } @{ $res->{headers_list} };
}

# One request as a client would send it: (target, rule, user id, [Set-Cookie values]).
sub visit {
    my (@headers) = @_;
    my $res = http_request('GET', '/', [Host => 'api.example', @headers]);
    my ($target, $rule, $id) = split ' ', $res->{body} // '';
    return ($target, $rule, $id // '', [set_cookies($res)]);
}

# Waits until the status shows $version (watch= published it).
sub published {
    my ($version) = @_;
    my $deadline = Time::HiRes::time() + 5;
    my $seen = '';
    until ($seen eq $version || Time::HiRes::time() > $deadline) {
        Time::HiRes::sleep(0.05);
        $seen = eval { status()->{version} } // '';
    }
    return $seen eq $version;
}

# curl over HTTP/2 (prior knowledge) to the port: one Set-Cookie, with the id the decision used.
sub check_http2 {
    my ($port) = @_;
    my $out = `curl -s -D - --max-time 10 --http2-prior-knowledge --resolve api.example:$port:127.0.0.1 http://api.example:$port/ 2>&1`;
    Test::More::like($out, qr{^HTTP/2 200}m, 'HTTP/2');
    my @cookies = $out =~ /^set-cookie: (.*?)\r?$/mig;
    Test::More::is(scalar @cookies, 1, 'one Set-Cookie over HTTP/2');
    my ($id) = $out =~ /^\S+ user_hash ($ID)$/m;
    Test::More::like($cookies[0] // '', qr/^mig_uid=\Q$id\E;/, 'with the id the decision used');
}

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(user_files => ">>> m.yaml\n" . main::yaml()) unless defined $block->{user_files};
    $block->set_value(http_config => "    migration_config \$TEST_NGINX_HTML_DIR/m.yaml watch=100ms;\n")
        unless defined $block->{http_config};
    $block->set_value(config => <<'CONF') unless defined $block->{config};
    location / { migration on; return 200 "$migration_target $migration_rule $migration_user_id\n"; }
    location = /fail { migration on; return 503 "failing $migration_user_id\n"; }
    location = /missing { migration on; error_page 404 /err; try_files /nothing-here =404; }
    location = /err { return 404 "err $migration_user_id\n"; }
    location = /proxied { migration on; proxy_pass http://127.0.0.1:$server_port/backend; }
    location = /backend { add_header Set-Cookie "session=abc; Path=/"; return 200 "backend\n"; }
    location = /status { migration_status; }
CONF
});

run_tests();

__DATA__

=== TEST 1: a client without an id gets one: 22 base64url characters, hashed as if it had carried it, in exactly one Set-Cookie with the default attributes
--- request
GET /
--- more_headers
Host: api.example
--- check_eval
my ($target, $rule, $id, $cookies) = main::visit();
like($id, qr/^$main::ID$/, "\$migration_user_id is a minted id ($id)");
is($rule, 'user_hash', 'decided by the user hash');
is($target, main::cohort($id, 30), 'on the side murmur2(id) gives at 30 %');
is(scalar @$cookies, 1, 'exactly one Set-Cookie');
is($cookies->[0], "mig_uid=$id; Max-Age=2592000; Path=/; HttpOnly; SameSite=Lax", 'with the defaults (30d, /, HttpOnly, Lax; no Secure over plain HTTP)');
my ($again, $again_rule, $again_id, $again_cookies) = main::visit(Cookie => "mig_uid=$id");
is("$again $again_rule $again_id", "$target user_hash $id", 'coming back with it: the same side, the same id');
is(scalar @$again_cookies, 0, 'and no Set-Cookie');
my %ids;
$ids{ (main::visit())[2] }++ for 1 .. 50;
is(scalar keys %ids, 50, 'fifty clients, fifty different ids');
my (undef, undef, $empty_id, $empty_cookies) = main::visit(Cookie => 'mig_uid=');
like($empty_id, qr/^$main::ID$/, 'an empty cookie counts as none: a new id');
is(scalar @$empty_cookies, 1, 'handed out');
my (undef, undef, $other_id, $other_cookies) = main::visit(Cookie => 'theme=dark; mig_uidx=1');
ok($other_id =~ /^$main::ID$/ && @$other_cookies == 1, 'other cookies are not the id');



=== TEST 2: a header rule still decides first; the client gets its id all the same, and keeps it for later
--- request
GET /
--- more_headers
Host: api.example
--- check_eval
my ($target, $rule, $id, $cookies) = main::visit('X-Beta' => 'on');
is("$target $rule", 'new header', 'X-Beta: on decides new (header)');
like($id, qr/^$main::ID$/, 'an id is minted');
is(scalar @$cookies, 1, 'and handed out');
my ($later, $later_rule, $later_id) = main::visit(Cookie => "mig_uid=$id");
is("$later $later_rule $later_id", main::cohort($id, 30) . " user_hash $id", 'without the header, its id decides');



=== TEST 3: every final response carries the cookie once: 5xx from return, an error_page after an internal redirect (one id), a proxied response that sets its own cookie
--- request
GET /
--- more_headers
Host: api.example
--- check_eval
my $got = http_request('GET', '/fail', [Host => 'api.example']);
is($got->{status}, 503, 'the status is 503');
my @c = main::set_cookies($got);
is(scalar @c, 1, 'one Set-Cookie on a 503');
my ($id) = $got->{body} =~ /failing ($main::ID)/;
like($c[0], qr/^mig_uid=$id;/, 'the id the decision used');

$got = http_request('GET', '/missing', [Host => 'api.example']);
is($got->{status}, 404, 'the error_page answers');
@c = main::set_cookies($got);
is(scalar @c, 1, 'one Set-Cookie after the internal redirect');
($id) = $got->{body} =~ /err ($main::ID)/;
ok($id, "the error page reads the id decided before the redirect ($id)");
like($c[0], qr/^mig_uid=$id;/, 'and the cookie hands out that same id');

$got = http_request('GET', '/proxied', [Host => 'api.example']);
is($got->{body}, "backend\n", 'proxied');
@c = sort(main::set_cookies($got));
is(scalar @c, 2, "the upstream's cookie and ours: @c");
is($c[1], 'session=abc; Path=/', "the upstream's is passed on as it was");
like($c[0], qr/^mig_uid=$main::ID; Max-Age=2592000; Path=\/; HttpOnly; SameSite=Lax$/, 'ours once');

$got = http_request('GET', '/fail', [Host => 'api.example', Cookie => 'mig_uid=known']);
is(scalar main::set_cookies($got), 0, 'a client with its cookie gets none, whatever the status');
is($got->{body}, "failing known\n", 'and $migration_user_id is the id it carried');



=== TEST 4: the attributes as configured: no Max-Age for 0, Domain, Secure, SameSite=Strict, no HttpOnly
--- user_files eval
">>> m.yaml\n" . main::yaml(sticky => '{max_age: 0, path: /shop, domain: .Example.COM, secure: true, same_site: strict, http_only: false}')
--- request
GET /
--- more_headers
Host: api.example
--- check_eval
my (undef, undef, $id, $cookies) = main::visit();
is_deeply($cookies, ["mig_uid=$id; Path=/shop; Domain=example.com; Secure; SameSite=Strict"], 'a session cookie for /shop on example.com, Secure, Strict, readable by scripts');



=== TEST 5: secure: auto marks the cookie Secure over TLS only
--- requires
configure --with-http_ssl_module
--- init
my $dir = servroot() . '/conf';
my $out = `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=api.example -keyout $dir/api.key -out $dir/api.crt 2>&1`;
die "openssl: $out\n" if $?;
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl;
        server_name ~.;
        ssl_certificate $TEST_NGINX_SERVROOT/conf/api.crt;
        ssl_certificate_key $TEST_NGINX_SERVROOT/conf/api.key;
        location / { migration on; return 200 "$migration_target $migration_rule $migration_user_id\n"; }
    }
--- request
GET /
--- more_headers
Host: api.example
--- check_eval
my $tls_port = rand_port(1);
my $out = `curl -sk -D - --max-time 10 --resolve api.example:$tls_port:127.0.0.1 https://api.example:$tls_port/ 2>&1`;
my @cookies = $out =~ /^set-cookie: (.*?)\r?$/mig;
is(scalar @cookies, 1, 'one Set-Cookie over TLS');
like($cookies[0] // '', qr/^mig_uid=$main::ID; Max-Age=2592000; Path=\/; Secure; HttpOnly; SameSite=Lax$/, 'Secure over TLS (auto)');
my (undef, undef, undef, $plain) = main::visit();
unlike($plain->[0], qr/Secure/, 'not over plain HTTP');



=== TEST 6: HTTP/2 gets one Set-Cookie too (nginx >= 1.25.1: `http2 on`)
--- requires
nginx >= 1.25.1
configure --with-http_v2_module
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        http2 on;
        server_name ~.;
        location / { migration on; return 200 "$migration_target $migration_rule $migration_user_id\n"; }
    }
--- request
GET /
--- more_headers
Host: api.example
--- check_eval
main::check_http2(rand_port(2));



=== TEST 7: HTTP/2 gets one Set-Cookie too (nginx < 1.25.1: `listen ... http2`)
--- requires
nginx < 1.25.1
configure --with-http_v2_module
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2 http2;
        server_name ~.;
        location / { migration on; return 200 "$migration_target $migration_rule $migration_user_id\n"; }
    }
--- request
GET /
--- more_headers
Host: api.example
--- check_eval
main::check_http2(rand_port(2));



=== TEST 8: 1,000 fresh clients at 30 % land within 4 points of 30 %, each stays on its side; a raise moves clients only old -> new; a rollback sends all back; the same ones return when it resumes
--- timeout: 120
--- request
GET /
--- more_headers
Host: api.example
--- check_eval
my (%side, $stayed, $matches, @samples);
# The ids are random: a sample of 1,000 falls outside 30 +- 4 % with odds of
# about 1 in 170 (2.8 standard deviations), so a second sample is drawn then;
# both outside has odds below 1 in 25,000. A bias fails both.
for my $sample (1, 2) {
    (%side, $matches) = ();
    for (1 .. 1000) {
        my ($target, undef, $id) = main::visit();
        $side{$id} = $target;
        $matches++ if $target eq main::cohort($id, 30);
    }
    push @samples, scalar grep { $_ eq 'new' } values %side;
    last if $samples[-1] >= 260 && $samples[-1] <= 340;
}
is($matches, 1000, 'every client lands where murmur2 of its id says');
is(scalar keys %side, 1000, 'a thousand different ids');
ok($samples[-1] >= 260 && $samples[-1] <= 340, "@samples of 1,000 on new at 30 %");
for my $id (keys %side) {
    my ($target, undef, undef, $cookies) = main::visit(Cookie => "mig_uid=$id");
    $stayed++ if $target eq $side{$id} && !@$cookies;
}
is($stayed, 1000, 'each comes back to its side, with no new cookie');

write_file(html_dir() . '/m.yaml', main::yaml(percentage => 60));
ok(main::published('60-true'), 'raised to 60 %');
my (%at60, $wrong_way);
for my $id (keys %side) {
    my ($target) = main::visit(Cookie => "mig_uid=$id");
    $at60{$id} = $target;
    $wrong_way++ if $side{$id} eq 'new' && $target ne 'new';
}
is($wrong_way // 0, 0, 'no client moved new -> old');
my $moved = grep { $side{$_} eq 'old' && $at60{$_} eq 'new' } keys %side;
ok($moved > 200, "$moved clients moved old -> new");

write_file(html_dir() . '/m.yaml', main::yaml(percentage => 60, enabled => 'false'));
ok(main::published('60-false'), 'rolled back');
my $on_old = grep { (main::visit(Cookie => "mig_uid=$_"))[0] eq 'old' } keys %side;
is($on_old, 1000, 'every client on old');

write_file(html_dir() . '/m.yaml', main::yaml(percentage => 60));
ok(main::published('60-true'), 'resumed');
my $same = grep { (main::visit(Cookie => "mig_uid=$_"))[0] eq $at60{$_} } keys %side;
is($same, 1000, 'the same clients return to new');



=== TEST 9: the status counts the ids handed out per service (sticky_minted), and Prometheus as migration_sticky_minted_total
--- request
GET /
--- more_headers
Host: api.example
--- check_eval
my $before = status()->{services}[0]{sticky_minted};
main::visit() for 1 .. 7;
main::visit(Cookie => 'mig_uid=known') for 1 .. 3;
is(status()->{services}[0]{sticky_minted} - $before, 7, 'seven ids handed out, none to clients that had one');
my $prom = http_request('GET', '/status?format=prometheus')->{body};
like($prom, qr/^# TYPE migration_sticky_minted_total counter$/m, 'a counter');
like($prom, qr/^migration_sticky_minted_total\{service="api"\} \d+$/m, 'per service');



=== TEST 10: without sticky, nothing is minted: no Set-Cookie, and $migration_user_id is the id the request carried
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
    migration: {strategy: user, percentage: 30, user_key: cookie:mig_uid}
--- request
GET /
--- more_headers
Host: api.example
--- check_eval
my ($target, $rule, $id, $cookies) = main::visit();
is("$rule '$id'", "weight ''", 'no id: drawn by weight, $migration_user_id empty');
is(scalar @$cookies, 0, 'no Set-Cookie');
($target, $rule, $id) = main::visit(Cookie => 'mig_uid=alice');
is("$target $rule $id", main::cohort('alice', 30) . ' user_hash alice', 'the id it carried');
ok(!exists status()->{services}[0]{sticky_minted}, 'no sticky_minted key for a service without sticky');



=== TEST 11: a sticky that cannot work fails nginx -t with the located error
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: api.example
    old_backend: old:80
    new_host: api.example
    new_backend: new:80
    migration:
      strategy: user
      user_key: header:X-User-ID
      sticky: {same_site: lax}
--- must_die
--- error_log eval
qr/m\.yaml:10:15: services\[0\]\.migration\.sticky: needs user_key: cookie:NAME \(the minted id goes back as that cookie\), got user_key: header:x-user-id/



=== TEST 12: a decision made once the response header is going out mints nothing (no cookie could follow): an access_log format, add_header
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    log_format ids "uid=[$migration_user_id] rule=$migration_rule";
--- config
    location = /late { access_log logs/ids.log ids; return 200 "static\n"; }
    location = /header { add_header X-Uid "[$migration_user_id]" always; return 200 "header\n"; }
    location = /status { migration_status; }
--- request
GET /late
--- more_headers
Host: api.example
--- check_eval
my $late = http_request('GET', '/late', [Host => 'api.example']);
is(scalar main::set_cookies($late), 0, 'decided in the log phase: no Set-Cookie');
my $header = http_request('GET', '/header', [Host => 'api.example']);
is(scalar main::set_cookies($header), 0, 'decided by add_header, after the cookie filter: no Set-Cookie');
is($header->{headers}{'x-uid'}, '[]', 'and no id in $migration_user_id');
open my $log, '<', servroot() . '/logs/ids.log' or die $!;
my @lines = <$log>;
is(scalar(grep { /^uid=\[\] rule=weight$/ } @lines), scalar(@lines), "no id in the access log either (@{[scalar @lines]} lines)");
is(status()->{services}[0]{sticky_minted}, 0, 'none counted');
