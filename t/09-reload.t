# `nginx -s reload` (docs/module.md, migration_config): a good file is published to the
# new workers, a bad one fails the reload and the old workers keep routing, and
# the zone (its generation and counters) outlives the reload. Two workers, and
# `reuseport` so that new connections spread over both.
use lib 't/lib';
use Test::MigrationNginx;
use Test::MigrationHelpers qw(status);

# The api service at a given percentage, plus optional extra YAML lines.
sub yaml_for {
    my (%o) = @_;
    my $pct = $o{percentage} // 0;
    my $y = "version: \"$o{version}\"\n" x !!defined $o{version};
    $y .= "services:\n";
    for my $name (@{ $o{names} || ['api'] }) {
        my $host = $name eq 'api' ? 'api.example' : "$name.example";
        $y .= "  - name: $name\n    old_host: $host\n    old_backend: old:80\n"
            . "    new_host: $host\n    new_backend: new:80\n    migration: {percentage: $pct}\n";
    }
    return $y;
}

sub write_yaml {
    open my $fh, '>', html_dir() . '/m.yaml' or die $!;
    print $fh yaml_for(@_);
    close $fh;
}

# Sends $n requests on new connections; returns { "target rule" => count } and the pids seen.
sub route {
    my ($n, %h) = @_;
    my (%by, %pids);
    for (1 .. $n) {
        my $res = http_request('GET', '/', [Host => 'api.example', %h]);
        my ($pid, $target, $rule) = split ' ', $res->{body} // 'none';
        $by{"$target $rule"}++;
        $pids{$pid}++;
    }
    return (\%by, [sort keys %pids]);
}

add_block_preprocessor(sub {
    my $block = shift;
    $block->{workers} = ['2'];
    $block->{listen_options} = ['reuseport'];
    $block->{config} = [<<'CONF'];
    location / { migration on; return 200 "$pid $migration_target $migration_rule\n"; }
    location = /status { migration_status; }
CONF
});

run_tests();

__DATA__

=== TEST 1: raising the percentage from 0 to 100 and reloading sends everything to new
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 0) ]]
--- check_eval
my ($before, $pids) = main::route(40);
is_deeply($before, { 'old weight' => 40 }, 'at 0 % every request goes to old');
main::write_yaml(percentage => 100);
ok(reload_nginx(), 'reload');
my ($after, $pids_after) = main::route(60);
is_deeply($after, { 'new weight' => 60 }, 'after the reload every request goes to new');
is(scalar @$pids_after, 2, 'both workers answered after the reload');
is(main::status()->{generation}, 2, 'the reload published generation 2');
like(error_log_text(), qr{\[notice\].*migration: published \S+/m\.yaml as generation 2}, 'the publication is logged');



=== TEST 2: a bad file fails the reload with a located error; the old workers keep routing and status keeps the old generation
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 100, version => 'good') ]]
--- expect_alerts
\[emerg\] .*/m\.yaml:8:44: services\[0\]\.migration\.strategy: must be weight, user or ip, got "sticky"
--- check_eval
my $s = main::status();
is($s->{generation}, 1, 'generation 1 at start');
open my $fh, '>', html_dir() . '/m.yaml' or die $!;
print $fh "version: bad\nservices:\n  - name: api\n    old_host: api.example\n    old_backend: old:80\n"
        . "    new_host: api.example\n    new_backend: new:80\n    migration: {percentage: 100, strategy: sticky}\n";
close $fh;
ok(!reload_nginx(), 'the reload is refused');
like(error_log_text(), qr{\[emerg\].*/m\.yaml:8:44: services\[0\]\.migration\.strategy: must be weight, user or ip, got "sticky"},
     'the error names the file, line, column and field');
my ($after, $pids) = main::route(40);
is_deeply($after, { 'new weight' => 40 }, 'the old configuration keeps routing');
$s = main::status();
is($s->{generation}, 1, 'status still shows generation 1');
is($s->{version}, 'good', 'and its version');



=== TEST 3: counters are exact over two workers, split as the responses said, and survive a reload
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
    migration: {percentage: 30}
    canary:
      header_rules:
        - {header: X-Canary, value: "yes", target: new}
        - {header: X-Canary, value: "no", target: old}
--- check_eval
my %seen;
my %pids;
my $n = 0;
my $unmatched = main::status()->{unmatched};
for my $i (1 .. 300) {
    my @h = $i % 5 == 0 ? ('X-Canary' => 'yes') : $i % 7 == 0 ? ('X-Canary' => 'no') : ();
    my $res = http_request('GET', '/', [Host => 'api.example', @h]);
    my ($pid, $target, $rule) = split ' ', $res->{body};
    $seen{$target}{$rule}++;
    $pids{$pid}++;
    $n++;
}
http_request('GET', '/', [Host => 'unknown.example']) for 1 .. 3;
cmp_ok(scalar keys %pids, '==', 2, 'requests reached both workers');
my $s = main::status();
my ($api) = @{ $s->{services} };
is($api->{requests}{old} + $api->{requests}{new}, $n, "status counts exactly $n requests");
is($api->{requests}{$_}, (List::Util::sum0(values %{ $seen{$_} || {} })), "requests to $_ as the responses said") for qw(old new);
is($api->{rules}{header}, 60 + 34, 'header rule count');
is($api->{rules}{weight}, $n - 94, 'weight count');
is($s->{unmatched} - $unmatched, 3, 'requests for no service are counted apart');
my $prom = http_request('GET', '/status?format=prometheus')->{body};
for my $t (qw(old new)) {
    for my $r (qw(header weight)) {
        my $want = $seen{$t}{$r} // 0;
        like($prom, qr/^migration_requests_total\{service="api",target="$t",rule="$r"\} $want$/m, "prometheus $t/$r = $want");
    }
}
ok(reload_nginx(), 'reload with the same file');
$s = main::status();
is($s->{generation}, 2, 'generation 2');
($api) = @{ $s->{services} };
is($api->{requests}{old} + $api->{requests}{new}, $n, 'the counters survived the reload');
http_request('GET', '/', [Host => 'api.example', 'X-Canary' => 'yes']) for 1 .. 10;
($api) = @{ main::status()->{services} };
is($api->{rules}{header}, 104, 'and keep counting after it');



=== TEST 4: a service dropped by a reload and brought back by the next one gets its counters back
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- user_files eval
[[ 'm.yaml', main::yaml_for(names => ['api', 'shop']) ]]
--- check_eval
http_request('GET', '/', [Host => 'shop.example']) for 1 .. 7;
main::write_yaml(names => ['api']);
ok(reload_nginx(), 'reload without shop');
is_deeply([map { $_->{name} } @{ main::status()->{services} }], ['api'], 'status lists only the services of the configuration');
main::write_yaml(names => ['api', 'shop']);
ok(reload_nginx(), 'reload with shop again');
my ($shop) = grep { $_->{name} eq 'shop' } @{ main::status()->{services} };
is($shop->{requests}{old}, 7, "shop's counters are back");



=== TEST 5: a reload that changes the zone's size starts a new zone, as nginx does for its own zones
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=migration:1m;
--- user_files eval
[[ 'm.yaml', main::yaml_for() ]]
--- check_eval
main::route(5);
is(main::status()->{services}[0]{requests}{old}, 5, 'counted');
my $conf = servroot() . '/conf/nginx.conf';
open my $fh, '<', $conf or die $!;
my $text = do { local $/; <$fh> };
close $fh;
$text =~ s/zone=migration:1m/zone=migration:2m/ or die 'no zone in nginx.conf';
open $fh, '>', $conf or die $!;
print $fh $text;
close $fh;
ok(reload_nginx(), 'reload with zone=migration:2m');
my $s = main::status();
is($s->{generation}, 1, 'the new zone starts at generation 1');
is($s->{services}[0]{requests}{old}, 0, 'with fresh counters');



=== TEST 6: a kept zone that has no room left fails the reload; the old configuration keeps routing
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml zone=tiny:32k;
--- user_files eval
[[ 'm.yaml', main::yaml_for(percentage => 100) ]]
--- expect_alerts
\[emerg\] .*(migration: zone "tiny" \(32k\) has no room left for|zone "tiny" is too small for \S+/m\.yaml)
--- check_eval
# Each reload brings more services than the last, all never seen before: the
# running workers still count into the last ones while the new record is
# written, so the zone holds both, until there is no room left. (Names no
# process can use any more are reclaimed: renames alone never fill it, t/15.)
my ($refused, $round) = (0, 0);
while (!$refused && $round < 20) {
    $round++;
    main::write_yaml(percentage => 100, names => ['api', map { "s$round-$_" } 1 .. 6 * $round]);
    $refused = !reload_nginx();
}
ok($refused, "a reload was refused once the zone was full (round $round)");
like(error_log_text(), qr{\[emerg\].*(migration: zone "tiny" \(32k\) has no room left for \S+/m\.yaml: the configuration alone needs \d+k|zone "tiny" is too small for \S+/m\.yaml)},
     'the error says the zone is full and what the configuration needs');
my ($after) = main::route(10);
is_deeply($after, { 'new weight' => 10 }, 'the old configuration keeps routing');
