# strategy: weight is a per-request random draw (docs/decision.md, step 7):
# over many requests the share sent to new is the configured percentage, within
# binomial bounds; 0 % never and 100 % always sends new; and with several
# workers each one draws on its own.
use lib 't/lib';
use Test::MigrationNginx;
use IO::Select;
use IO::Socket::INET;

plan tests => blocks() * 2;
run_tests();

# Sends $n keep-alive requests and returns a list of [target, rule, backend, pid].
sub draws {
    my ($path, $n, @headers) = @_;
    my $res = http_requests_keepalive([ map { ['GET', $path, [@headers]] } 1 .. $n ]);
    my @out;
    for my $r (@$res) {
        my @f = split ' ', $r->{body} // '';
        push @out, [@f[0 .. 3], $r->{status}];
    }
    return @out;
}

# Sends $n requests for $host pipelined on one connection (the harness's
# request-by-request loop would take a minute); returns the count of answers
# per target. Reads while it writes, so neither side's buffers fill up.
sub pipelined {
    my ($n, $host) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port()) or die "connect: $!";
    $s->blocking(0);
    my $one = "GET /t HTTP/1.1\r\nHost: $host\r\n\r\n";
    my $out = $one x ($n - 1) . "GET /t HTTP/1.1\r\nHost: $host\r\nConnection: close\r\n\r\n";
    my ($off, $in, %count) = (0, '');
    my $sel = IO::Select->new($s);
    my $deadline = time + 60;
    while (time < $deadline) {
        my ($r, $w) = IO::Select->select($sel, $off < length $out ? $sel : undef, undef, 1);
        if ($w && @$w) {
            my $wrote = syswrite($s, $out, 65536, $off);
            $off += $wrote if $wrote;
        }
        if ($r && @$r) {
            my $got = sysread($s, $in, 1 << 20, length $in);
            last if defined $got && $got == 0;
            # Count whole responses as they come, and keep only the tail.
            $count{$1}++ while $in =~ /\G.*?\r\n\r\n(old|new) weight \1:80 \d+\n/gcs;
            $in = substr($in, pos($in) // 0);
        }
    }
    close $s;
    return (old => 0, new => 0, %count);
}

# Checks the share of new among @d (from draws) against p with 4-sigma bounds;
# every answer must be a 200 with rule weight and a backend that matches the target.
sub share_ok {
    my ($label, $p, @d) = @_;
    my $n = @d;
    my @broken = grep { ($_->[4] // 0) != 200 || ($_->[1] // '') ne 'weight'
                        || !defined $_->[2] || $_->[2] ne ($_->[0] // '') . ':80' } @d;
    is(scalar(@broken), 0, "$label: every one of $n answers is a weight decision whose backend matches its target")
        or diag(explain($broken[0]));
    my $new = grep { ($_->[0] // '') eq 'new' } @d;
    my $mean = $n * $p;
    my $sigma = sqrt($n * $p * (1 - $p));
    if ($sigma == 0) {
        is($new, $mean, "$label: $new of $n sent new (exactly $mean expected)");
    } else {
        ok(abs($new - $mean) <= 4 * $sigma,
           sprintf("%s: %d of %d sent new, within %.0f +- %.0f (4 sigma)", $label, $new, $n, $mean, 4 * $sigma));
    }
    return $new;
}

__DATA__

=== TEST 1: weight 20 % sends 20 % of 10,000 requests new (within 4 sigma)
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- config
    keepalive_requests 100000;
    location /t {
        migration on;
        return 200 "$migration_target $migration_rule $migration_backend $pid\n";
    }
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: localhost
    old_backend: old:80
    new_host: localhost
    new_backend: new:80
    migration:
      strategy: weight
      percentage: 20
--- request
GET /t
--- response_body_like
^(new|old) weight \1:80 \d+$
--- timeout: 60
--- check_eval
my @d = main::draws('/t', 10_000);
main::share_ok('20 %', 0.20, @d);
# the draws are not stuck in runs: count switches between old and new; for
# independent draws it is 2p(1-p)(n-1) = 3200 +- about 4*sqrt(n*...) (loose bound)
my $switches = grep { $d[$_][0] ne $d[$_ - 1][0] } 1 .. $#d;
ok($switches > 2800 && $switches < 3600, "old/new switches look independent ($switches, about 3200 expected)");



=== TEST 2: weight 20 % for requests with a user id (strategy weight ignores it)
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- config
    keepalive_requests 100000;
    location /t {
        migration on;
        return 200 "$migration_target $migration_rule $migration_backend $pid\n";
    }
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: localhost
    old_backend: old:80
    new_host: localhost
    new_backend: new:80
    migration:
      percentage: 20
--- request
GET /t
--- timeout: 60
--- check_eval
my @d = main::draws('/t', 10_000, 'X-User-ID' => 'alice');
main::share_ok('20 %, same user every time', 0.20, @d);



=== TEST 3: strategy user falls back to the weight for requests without a user id
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- config
    keepalive_requests 100000;
    location /t {
        migration on;
        return 200 "$migration_target $migration_rule $migration_backend $pid\n";
    }
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: localhost
    old_backend: old:80
    new_host: localhost
    new_backend: new:80
    migration:
      strategy: user
      percentage: 20
--- request
GET /t
--- timeout: 60
--- check_eval
my @d = main::draws('/t', 5_000);
main::share_ok('20 %, strategy user, no user id', 0.20, @d);



=== TEST 4: weight 0 % never sends new and 100 % always does
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- config
    keepalive_requests 1000000;
    location /t {
        migration on;
        return 200 "$migration_target $migration_rule $migration_backend $pid\n";
    }
--- user_files
>>> m.yaml
services:
  - name: none
    old_host: none.example
    old_backend: old:80
    new_host: none.example
    new_backend: new:80
    migration: {strategy: weight, percentage: 0}
  - name: all
    old_host: all.example
    old_backend: old:80
    new_host: all.example
    new_backend: new:80
    migration: {strategy: weight, percentage: 100}
  - name: tiny
    old_host: tiny.example
    old_backend: old:80
    new_host: tiny.example
    new_backend: new:80
    migration: {strategy: weight, percentage: 0.01}
  - name: almost
    old_host: almost.example
    old_backend: old:80
    new_host: almost.example
    new_backend: new:80
    migration: {strategy: weight, percentage: 99.99}
--- request
GET /t
--- more_headers
Host: all.example
--- response_body_like
^new weight new:80 \d+$
--- timeout: 60
--- check_eval
main::share_ok('0 %',   0, main::draws('/t', 1_000, Host => 'none.example'));
main::share_ok('100 %', 1, main::draws('/t', 1_000, Host => 'all.example'));
# 0.01 % and 99.99 %, both ways: 150,000 pipelined requests expect 15 on the
# rare side (Poisson). Between 1 and 40: a rounding to 0 % or 100 % (none at
# all, P = 3e-7 if right) fails, and so does a threshold 3x too large
# (P(more than 40) = 1e-8 if right).
my ($n, $rare) = (150_000, {});
for my $case (['tiny.example', 'new', '0.01 %'], ['almost.example', 'old', '99.99 %']) {
    my ($host, $side, $label) = @$case;
    my %count = main::pipelined($n, $host);
    is($count{old} + $count{new}, $n, "$label: $n answers, every one a weight decision") or diag(explain(\%count));
    my $k = $count{$side};
    ok($k >= 1 && $k <= 40, "$label: $k of $n sent $side (15 expected; between 1 and 40)");
}



=== TEST 5: with 2 workers each worker draws on its own, and the share stays within bounds
--- workers: 2
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- config
    keepalive_requests 20;
    location /t {
        migration on;
        return 200 "$migration_target $migration_rule $migration_backend $pid\n";
    }
--- user_files
>>> m.yaml
services:
  - name: api
    old_host: localhost
    old_backend: old:80
    new_host: localhost
    new_backend: new:80
    migration:
      strategy: weight
      percentage: 20
--- request
GET /t
--- timeout: 60
--- check_eval
my @d = main::draws('/t', 10_000);
main::share_ok('2 workers, all requests', 0.20, @d);
my %by_pid;
push @{ $by_pid{$_->[3]} }, $_ for @d;
my @pids = sort { @{ $by_pid{$b} } <=> @{ $by_pid{$a} } } keys %by_pid;
note("requests per worker: " . join(', ', map { "$_: " . scalar(@{ $by_pid{$_} }) } @pids));
for my $pid (@pids) {
    my @mine = @{ $by_pid{$pid} };
    next if @mine < 500;
    main::share_ok("worker $pid alone", 0.20, @mine);
}
SKIP: {
    skip "the kernel gave one worker fewer than 500 requests", 1
        unless @pids >= 2 && @{ $by_pid{$pids[1]} } >= 500;
    # Workers seeded alike would draw the same sequence: compare the first 500
    # draws of the two workers. Independent draws agree about 68 % of the time.
    my ($a, $b) = map { [ map { $_->[0] } @{ $by_pid{$_} }[0 .. 499] ] } @pids[0, 1];
    my $same = grep { $a->[$_] eq $b->[$_] } 0 .. 499;
    ok($same < 450, "the two workers draw different sequences ($same of 500 draws equal, about 340 expected)");
}
