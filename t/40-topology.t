# The real topology (docs/operating.md, "The real topology"): old is
# an in-cluster HTTP service, new is another cluster's gateway reached over TLS
# that routes by SNI and Host. The recipe under test:
#
#     upstream old_cluster { server ...; keepalive 8; }
#     upstream new_cluster { server ...; keepalive 8; }       # new_backend: https://new_cluster
#     proxy_http_version 1.1; proxy_set_header Connection "";
#     proxy_set_header Host $migration_host;
#     proxy_ssl_server_name on; proxy_ssl_name $migration_host;
#     proxy_ssl_verify on; proxy_ssl_trusted_certificate ...;
#
# The fake new cluster serves TLS with a certificate made by openssl when the
# block starts (for api.new.example only), and answers with the SNI
# ($ssl_server_name) and Host it saw and its connection number ($connection);
# the fake old cluster answers with Host and connection number. Counting distinct
# connection numbers at the fakes counts the upstream connections nginx opened.
use lib 't/lib';
use Test::MigrationNginx;

sub make_cert {
    my $dir = servroot() . '/conf';
    my $out = `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \\
        -subj /CN=api.new.example -addext subjectAltName=DNS:api.new.example \\
        -keyout $dir/new.key -out $dir/new.crt 2>&1`;
    die "openssl: $out\n" if $?;
}

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(init => 'main::make_cert()') unless defined $block->{init};
    $block->set_value(user_files => <<'YAML') unless defined $block->{user_files};
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.old.example
    old_backend: old_cluster
    new_host: api.new.example
    new_backend: https://new_cluster
    canary:
      header_rules:
        - header: X-Migration-Target
          value: new
          target: new_cluster
YAML
    $block->set_value(http_config => <<'HTTP') unless defined $block->{http_config};
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    upstream old_cluster { server 127.0.0.1:$TEST_NGINX_RAND_PORT_1; keepalive 8; }
    upstream new_cluster { server 127.0.0.1:$TEST_NGINX_RAND_PORT_2; keepalive 8; }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { return 200 "old host=$host conn=$connection\n"; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2 ssl;
        ssl_certificate $TEST_NGINX_SERVROOT/conf/new.crt;
        ssl_certificate_key $TEST_NGINX_SERVROOT/conf/new.key;
        location / { return 200 "new sni=$ssl_server_name host=$host conn=$connection\n"; }
    }
HTTP
    $block->set_value(config => <<'CONF') unless defined $block->{config};
    location / {
        migration on;
        if ($migration_service = "") { return 421; }
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $migration_host;
        proxy_ssl_server_name on;
        proxy_ssl_name $migration_host;
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate $TEST_NGINX_SERVROOT/conf/new.crt;
        proxy_pass $migration_scheme://$migration_backend;
    }
CONF
});

run_tests();

# Sends $n requests on one client connection; returns the distinct upstream
# connection numbers the fake cluster reports, and the bodies that did not match.
sub connections_used {
    my ($n, $headers, $want) = @_;
    my $rs = http_requests_keepalive([map { [GET => "/r$_", $headers] } 1 .. $n]);
    my (%conns, @bad);
    for my $r (@$rs) {
        if (($r->{status} // 0) == 200 && $r->{body} =~ /^\Q$want\E conn=(\d+)$/) {
            $conns{$1}++;
        } else {
            push @bad, ($r->{status} // 'none') . ' ' . ($r->{body} // $r->{error} // '');
        }
    }
    return (scalar(@$rs), \%conns, \@bad);
}

__DATA__

=== TEST 1: new over TLS gets the new host as SNI and as Host; the certificate is verified against that name
--- request
GET /
--- more_headers
Host: api.example
X-Migration-Target: new
--- response_body_like: ^new sni=api\.new\.example host=api\.new\.example conn=\d+$



=== TEST 2: old gets plain HTTP with the old host as Host
--- request
GET /
--- more_headers
Host: api.example
--- response_body_like: ^old host=api\.old\.example conn=\d+$



=== TEST 3: a Host no service claims gets 421, not a proxy_pass to an empty URL
--- request
GET /
--- more_headers
Host: elsewhere.example
--- error_code: 421
--- no_error_log
invalid URL prefix



=== TEST 4: without proxy_ssl_server_name the gateway sees no SNI at all (why the recipe needs it)
--- config
    location / {
        migration on;
        if ($migration_service = "") { return 421; }
        proxy_set_header Host $migration_host;
        proxy_pass $migration_scheme://$migration_backend;
    }
--- request
GET /
--- more_headers
Host: api.example
X-Migration-Target: new
--- response_body_like: ^new sni= host=api\.new\.example conn=\d+$



=== TEST 5: with proxy_ssl_verify, a name the certificate does not hold is refused (the SNI name is the one verified)
--- config
    location / {
        migration on;
        proxy_set_header Host $migration_host;
        proxy_ssl_server_name on;
        proxy_ssl_name wrong.example;
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate $TEST_NGINX_SERVROOT/conf/new.crt;
        proxy_pass $migration_scheme://$migration_backend;
    }
--- request
GET /
--- more_headers
Host: api.example
X-Migration-Target: new
--- error_code: 502
--- error_log
upstream SSL certificate does not match "wrong.example"



=== TEST 6: keepalive: 1,000 requests to each side over upstream{} keepalive open a handful of upstream connections
--- timeout: 60
--- more_headers
Host: api.example
--- check_eval
for my $side (['new', [Host => 'api.example', 'X-Migration-Target' => 'new'], 'new sni=api.new.example host=api.new.example'],
              ['old', [Host => 'api.example'], 'old host=api.old.example']) {
    my ($name, $headers, $want) = @$side;
    my ($n, $conns, $bad) = connections_used(1000, $headers, $want);
    is($n, 1000, "$name: 1000 responses");
    is(scalar(@$bad), 0, "$name: every request answered by the $name cluster with its host (and SNI)")
        or diag(join "\n", @$bad[0 .. ($#$bad > 4 ? 4 : $#$bad)]);
    my $used = scalar keys %$conns;
    note("$name: 1000 requests over $used upstream connection(s)");
    cmp_ok($used, '<=', 4, "$name: at most a handful of upstream connections for 1000 requests (got $used)");
}



=== TEST 7: the contrast: host:port backends (no upstream{}, no keepalive) open a connection per request
--- user_files
>>> m.yaml
services:
  - name: api
    hosts: [api.example]
    old_host: api.old.example
    old_backend: 127.0.0.1:$TEST_NGINX_RAND_PORT_1
    new_host: api.new.example
    new_backend: https://127.0.0.1:$TEST_NGINX_RAND_PORT_2
--- timeout: 30
--- more_headers
Host: api.example
--- check_eval
my ($n, $conns, $bad) = connections_used(100, [Host => 'api.example'], 'old host=api.old.example');
is(scalar(@$bad), 0, 'every request answered by old');
my $used = scalar keys %$conns;
note("100 requests over $used upstream connections without keepalive");
cmp_ok($used, '>=', 90, "without upstream keepalive nearly every request opens its own connection (got $used)");
