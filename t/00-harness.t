# Self-test of t/lib/Test/MigrationNginx.pm using only stock nginx features.
# Must pass with and without the migration module loaded.
use lib 't/lib';
use Test::MigrationNginx;

plan tests => blocks() * 2;    # accepted, but counting is dynamic
run_tests();

__DATA__

=== TEST 1: plain return, headers present and absent
--- config
    location /t {
        add_header X-Foo bar;
        add_header X-Dup one;
        add_header X-Dup two;
        return 200 "hello\n";
    }
--- request
GET /t
--- error_code: 200
--- response_headers
X-Foo: bar
X-Dup: one, two
Content-Type: text/plain
!X-Missing
--- response_body
hello
--- no_error_log
[error]



=== TEST 2: non-200 status code and one-line sections
--- config
    location /t { return 403; }
--- request: GET /t
--- error_code: 403
--- response_body_like: 403 Forbidden



=== TEST 3: HTTP/1.0 request
--- config
    location /t { return 200 "$server_protocol $http_host\n"; }
--- request
GET /t HTTP/1.0
--- response_body
HTTP/1.0 localhost



=== TEST 4: repeated request headers are sent as repeated headers
--- requires: nginx >= 1.23.0
--- config
    location /t { return 200 "a=[$http_x_a] host=[$host]\n"; }
--- request
GET /t
--- more_headers
Host: api.example
X-A: a1
X-A: a2
--- response_body
a=[a1, a2] host=[api.example]



=== TEST 5: raw non-UTF-8 header bytes are preserved
--- config
    location /t { return 200 "b=[$http_x_b]\n"; }
--- request
GET /t
--- more_headers
X-B: café
--- check_eval
is($res->{body}, "b=[caf\xe9]\n", "TEST 5 - raw byte echoed back");
is(length($res->{body}), 9, "TEST 5 - byte length");



=== TEST 6: user_files and variable substitution
--- http_config
    map $uri $html_dir_var { default "$TEST_NGINX_HTML_DIR"; }
--- config
    location /files/ { alias $TEST_NGINX_HTML_DIR/sub/; }
    location /vars {
        return 200 "port=$server_port servroot=$TEST_NGINX_SERVROOT html=$html_dir_var\n";
    }
--- user_files
>>> sub/a.txt
file A
served from $TEST_NGINX_HTML_DIR
>>> b.txt
file B
--- request
GET /files/a.txt
--- check_eval
my $html = html_dir();
is($res->{body}, "file A\nserved from $html\n", "TEST 6 - user file content, vars expanded");
my $r = http_request(GET => '/b.txt');
is($r->{status}, 200, "TEST 6 - second file status");
is($r->{body}, "file B\n", "TEST 6 - second file body");
$r = http_request(GET => '/vars');
my ($port, $root) = (server_port(), servroot());
is($r->{body}, "port=$port servroot=$root html=$html\n", "TEST 6 - vars in config");



=== TEST 7: proxy_pass to itself with a request body
--- config
    location /p {
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/back;
        add_header X-Body "$request_body" always;
    }
    location /back {
        return 200 "back: $request_method len=$http_content_length\n";
    }
--- request
POST /p
hello world
--- response_headers
X-Body: hello world
--- response_body
back: POST len=11



=== TEST 8: request_body section
--- config
    location /p {
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/back;
        add_header X-Body "$request_body" always;
    }
    location /back { return 200 "len=$http_content_length\n"; }
--- request
PUT /p
--- request_body
abc
--- response_headers
X-Body: abc
--- response_body
len=3



=== TEST 9: chunked response is decoded (ssi drops Content-Length)
--- config
    location /s { ssi on; }
--- user_files
>>> s/index.html
[<!--# echo var="request_method" -->]
--- request
GET /s/index.html
--- response_headers
Transfer-Encoding: chunked
!Content-Length
--- response_body
[GET]



=== TEST 10: error_log substring and no_error_log
--- config
    location / { root html; }
--- request
GET /missing.txt
--- error_code: 404
--- error_log
No such file or directory
missing.txt
--- no_error_log
[alert]
[warn]



=== TEST 11: error_log eval with a list of regexes and strings
--- config
    location / { root html; }
--- request
GET /nothere.txt
--- error_code: 404
--- error_log eval
[qr/open\(\) "[^"]+nothere\.txt" failed \(2:/, "[error]"]
--- no_error_log eval
qr/\[emerg\]/



=== TEST 12: must_die with an unknown directive
--- config
    no_such_directive;
--- must_die
--- error_log
unknown directive "no_such_directive"



=== TEST 13: must_die in http_config, regex form
--- http_config
    server_names_hash_bucket_size abc;
--- must_die
--- error_log eval
qr/"server_names_hash_bucket_size" directive invalid (?:value|number)/



=== TEST 14: main_config goes outside http
--- main_config
    worker_rlimit_nofile 4096;
    env TEST_HARNESS_DUMMY;
--- config
    location /t { return 200 "ok\n"; }
--- request
GET /t
--- response_body
ok



=== TEST 15: check_eval with http_request and keep-alive requests
--- config
    location /t { return 200 "t $arg_i $http_x_h\n"; }
    location /c { add_header X-C "$http_x_c"; return 204; }
--- request
GET /t?i=0
--- response_body
t 0 
--- check_eval
my $r = http_request('GET', '/t?i=1', ['X-H' => 'one']);
is($r->{status}, 200, 'http_request status');
is($r->{body}, "t 1 one\n", 'http_request body (flat pairs)');
$r = http_request('GET', '/t?i=2', { 'X-H' => 'two' });
is($r->{body}, "t 2 two\n", 'http_request body (hashref)');
$r = http_request('GET', '/c', [['X-C', 'c1'], ['X-C', 'c2']]);
is($r->{status}, 204, 'http_request 204');
SKIP: {
    # Before 1.23, $http_NAME gives the first of repeated headers only.
    my $why = "\$http_x_c joins repeated headers only since nginx 1.23 (this is " . nginx_version() . ")";
    if (nginx_version_cmp('1.23.0') < 0) { diag("skipped: $why"); skip($why, 1) }
    is($r->{headers}{'x-c'}, 'c1, c2', 'repeated request headers (pairs of pairs)');
}
my @reqs = map { ['GET', "/t?i=$_", ['X-H' => "k$_"]] } 1 .. 300;
push @reqs, ['HEAD', '/t?i=head'], ['GET', '/c', ['X-C' => 'x']], ['GET', '/t?i=last'];
my $rs = http_requests_keepalive(\@reqs);
is(scalar(@$rs), 303, 'keepalive: all responses');
my $bad = grep { $rs->[$_ - 1]{body} ne "t $_ k$_\n" } 1 .. 300;
is($bad, 0, 'keepalive: bodies in order');
is($rs->[300]{status}, 200, 'keepalive: HEAD status');
is($rs->[300]{body}, '', 'keepalive: HEAD has no body');
is($rs->[301]{status}, 204, 'keepalive: 204');
is($rs->[302]{body}, "t last \n", 'keepalive: request after 204');
like(error_log_text(), qr/\S/, 'error_log_text() returns the log');
ok(nginx_pid() > 0, 'nginx_pid()');



=== TEST 16: master_on, workers and reload_nginx
--- workers: 2
--- master_on
--- config
    location /t { return 200 "pid ok\n"; }
--- request
GET /t
--- response_body
pid ok
--- check_eval
my $conf = servroot() . '/conf/nginx.conf';
open my $fh, '<', $conf or die $!;
my $text = do { local $/; <$fh> };
close $fh;
$text =~ s/"pid ok\\n"/"reloaded\\n"/ or die "cannot patch $conf";
open $fh, '>', $conf or die $!;
print $fh $text;
close $fh;
ok(reload_nginx(), 'reload_nginx() succeeded');
my $r = http_request(GET => '/t');
is($r->{body}, "reloaded\n", 'new configuration active after reload');
--- error_log
start worker process
reconfiguring



=== TEST 17: skipped block
--- skip: demonstrates --- skip
--- config
    this would not even parse;
--- request
GET /t



=== TEST 18: timeout section and response_body_like multi-line
--- timeout: 3
--- config
    location /t { return 200 "line one\nline two\n"; }
--- request
GET /t
--- response_body_like
^line one
line \w+$



=== TEST 19: failed reload keeps the old configuration
--- master_on
--- config
    location /t { return 200 "old\n"; }
--- request
GET /t
--- response_body
old
--- check_eval
my $conf = servroot() . '/conf/nginx.conf';
open my $fh, '<', $conf or die $!;
my $text = do { local $/; <$fh> };
close $fh;
$text =~ s/return 200/bogus_directive_x; return 200/ or die "cannot patch";
open $fh, '>', $conf or die $!;
print $fh $text;
close $fh;
ok(!reload_nginx(), 'reload_nginx() returns false on a bad config');
is(http_request(GET => '/t')->{body}, "old\n", 'old configuration still serving');
ok(signal_nginx(0), 'signal_nginx(0): master alive');
--- expect_alerts
\[emerg\] .*unknown directive "bogus_directive_x"



=== TEST 20: the ports of a block are all different: a port the kernel gives again is not handed out twice
--- http_config
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "one"; } }
--- config
    location = /t { return 200 "main"; }
--- request
GET /t
--- response_body chomp
main
--- check_eval
my %given = (server_port() => 1, rand_port(1) => 1);
is(scalar keys %given, 2, 'the main port and RAND_PORT_1 differ');
$given{ Test::MigrationNginx::free_port() }++ for 1 .. 300;
is(scalar keys %given, 302, 'three hundred more, none given twice');
