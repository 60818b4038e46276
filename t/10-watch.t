# `migration_config PATH watch=INTERVAL` (docs/module.md, migration_config): a changed
# file is validated and published to every worker within one interval, with no
# reload; a bad change is logged once and the last good configuration stays.
# Two workers, and `reuseport` so that new connections spread over both.
use lib 't/lib';
use Test::MigrationNginx;
use Test::MigrationHelpers qw(write_file status);
use Time::HiRes ();

sub yaml_for {
    my ($pct, $version) = @_;
    return "version: \"$version\"\nservices:\n  - name: api\n    old_host: api.example\n    old_backend: old:80\n"
         . "    new_host: api.example\n    new_backend: new:80\n    migration: {percentage: $pct}\n";
}

# Polls until $n requests on new connections all answer $want from both workers;
# returns the seconds it took, or undef after $limit seconds.
sub seconds_until_all {
    my ($want, $limit, $n) = @_;
    $n ||= 20;
    my $t0 = Time::HiRes::time();
    while (Time::HiRes::time() - $t0 < $limit) {
        my (%answers, %pids);
        for (1 .. $n) {
            my ($pid, $answer) = split ' ', http_request('GET', '/', [Host => 'api.example'])->{body}, 2;
            chomp $answer;
            $answers{$answer}++;
            $pids{$pid}++;
        }
        return Time::HiRes::time() - $t0 if keys %pids == 2 && keys %answers == 1 && exists $answers{$want};
        Time::HiRes::sleep(0.05);
    }
    return undef;
}

add_block_preprocessor(sub {
    my $block = shift;
    $block->{workers} = ['2'];
    $block->{listen_options} = ['reuseport'];
    $block->{http_config} //= ["    migration_config \$TEST_NGINX_HTML_DIR/m.yaml watch=1s;\n"];
    $block->{user_files} //= [[['m.yaml', yaml_for(0, 'v1')]]];
    $block->{config} = [<<'CONF'];
    location / { migration on; return 200 "$pid $migration_target $migration_config_version\n"; }
    location = /status { migration_status; }
CONF
});

run_tests();

__DATA__

=== TEST 1: a changed file routes on every worker within one interval, with no reload
--- check_eval
ok(defined main::seconds_until_all('old v1', 2), 'both workers route by v1');
main::write_file(html_dir() . '/m.yaml', main::yaml_for(100, 'v2'));
my $took = main::seconds_until_all('new v2', 2);
ok(defined $took, 'within 2 s every worker routes by v2') and note(sprintf 'took %.2f s', $took);
my $s = main::status();
is($s->{generation}, 2, 'generation 2');
is($s->{version}, 'v2', 'version v2');
is($s->{services}[0]{percentage}, 100, 'status shows the new percentage');
unlike(error_log_text(), qr/reconfiguring/, 'no reload happened');
my @published = error_log_text() =~ /migration: \S+ changed; published generation 2 \(version v2, 1 services\)/g;
is(scalar @published, 1, 'one worker published it, once');



=== TEST 2: a bad change is logged once, at error level, with its location; the last good configuration stays
--- error_log
[error]
--- check_eval
main::write_file(html_dir() . '/m.yaml', main::yaml_for(150, 'v2'));
Time::HiRes::sleep(3.5);
ok(defined main::seconds_until_all('old v1', 1), 'both workers still route by v1');
my @errors = error_log_text() =~ /\[error\] .*(m\.yaml:8:29: services\[0\]\.migration\.percentage: must be between 0 and 100, got 150; the change is not published, generation 1 \(version v1\) stays)/g;
is(scalar @errors, 1, 'logged once over 3 intervals and 2 workers');
is(main::status()->{generation}, 1, 'status keeps generation 1');
main::write_file(html_dir() . '/m.yaml', main::yaml_for(100, 'v3'));
ok(defined main::seconds_until_all('new v3', 2), 'the next good change is published');
is(main::status()->{generation}, 2, 'as generation 2');



=== TEST 3: an empty file (a ConfigMap volume caught half-written) never wipes the routing
--- error_log
[error]
--- check_eval
main::write_file(html_dir() . '/m.yaml', '');
Time::HiRes::sleep(2.5);
ok(defined main::seconds_until_all('old v1', 1), 'both workers still route by v1');
like(error_log_text(), qr/\[error\] .*m\.yaml: the document is empty; expected a mapping with `services`/, 'the empty file is reported');



=== TEST 4: a Kubernetes ConfigMap mount: the ..data symlink swap is seen
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/cm/migration.yaml watch=1s;
--- user_files eval
[[ 'keep', '' ]]
--- init
my $cm = html_dir() . '/cm';
mkdir $cm; mkdir "$cm/..2026_11_26_01_00_00.1";
main::write_file("$cm/..2026_11_26_01_00_00.1/migration.yaml", main::yaml_for(0, 'v1'));
symlink '..2026_11_26_01_00_00.1', "$cm/..data" or die $!;
symlink '..data/migration.yaml', "$cm/migration.yaml" or die $!;
--- check_eval
my $cm = html_dir() . '/cm';
ok(defined main::seconds_until_all('old v1', 2), 'routes by v1');
# What the kubelet does: write the new data into a new directory, point a new
# symlink at it and rename it over ..data, then remove the old directory.
mkdir "$cm/..2026_11_26_01_05_00.2";
main::write_file("$cm/..2026_11_26_01_05_00.2/migration.yaml", main::yaml_for(100, 'v2'));
symlink '..2026_11_26_01_05_00.2', "$cm/..data_tmp" or die $!;
rename "$cm/..data_tmp", "$cm/..data" or die $!;
unlink "$cm/..2026_11_26_01_00_00.1/migration.yaml"; rmdir "$cm/..2026_11_26_01_00_00.1";
ok(defined main::seconds_until_all('new v2', 2), 'within 2 s every worker routes by the new ConfigMap data');



=== TEST 5: the content decides, not the modification time
--- check_eval
my $path = html_dir() . '/m.yaml';
my @st = stat $path;
my ($before, $after) = (main::yaml_for(0, 'v1'), main::yaml_for(0, 'v2'));
is(length $after, length $before, 'the new content has the same size');
main::write_file($path, $after);
utime $st[8], $st[9], $path or die $!;
my @now = stat $path;
is_deeply([@now[7, 9]], [@st[7, 9]], 'and the file the same size and modification time');
ok(defined main::seconds_until_all('old v2', 3), 'every worker routes by the new content (v2) within one interval');
my $s = main::status();
is($s->{generation}, 2, 'published as generation 2');
is($s->{version}, 'v2', 'version v2');



=== TEST 6: a reload after a watched change reads the file again as usual
--- check_eval
main::write_file(html_dir() . '/m.yaml', main::yaml_for(100, 'v2'));
ok(defined main::seconds_until_all('new v2', 2), 'watch published v2');
ok(reload_nginx(), 'reload');
my $s = main::status();
is($s->{generation}, 3, 'the reload published generation 3');
ok(defined main::seconds_until_all('new v2', 2), 'every worker routes by v2');



=== TEST 7: without watch=, a changed file waits for the reload
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
--- check_eval
main::write_file(html_dir() . '/m.yaml', main::yaml_for(100, 'v2'));
Time::HiRes::sleep(1.5);
ok(defined main::seconds_until_all('old v1', 1), 'still v1 without a reload');
ok(reload_nginx(), 'reload');
ok(defined main::seconds_until_all('new v2', 2), 'v2 after the reload');



=== TEST 8: a file that cannot be read is reported once; the last good configuration stays
--- error_log
[error]
--- check_eval
unlink html_dir() . '/m.yaml' or die $!;
Time::HiRes::sleep(2.5);
ok(defined main::seconds_until_all('old v1', 1), 'both workers still route by v1');
my @errors = error_log_text() =~ /\[error\] .*(migration: watch= cannot read \S+\/m\.yaml: No such file or directory)/g;
is(scalar @errors, 1, 'logged once');
main::write_file(html_dir() . '/m.yaml', main::yaml_for(100, 'v2'));
ok(defined main::seconds_until_all('new v2', 2), 'the file, back, is published');



=== TEST 9: a worker respawned after a crash routes by the newest generation from its first request
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=3s;
--- check_eval
main::write_file(html_dir() . '/m.yaml', main::yaml_for(100, 'v2'));
ok(defined main::seconds_until_all('new v2', 4), 'watch published v2 to both workers');
my %old = map { (split ' ', http_request('GET', '/', [Host => 'api.example'])->{body})[0] => 1 } 1 .. 20;
is(scalar keys %old, 2, 'two workers answered');
my ($victim) = sort keys %old;
my $offset = length error_log_text();
kill 'KILL', $victim or die "kill $victim: $!";
expect_alert(qr/\[alert\] .*worker process $victim exited on signal 9/);
# The event: the master reaps the worker, logs it, and forks its replacement
# right away. The replacement's own watch= tick comes 3 s after it started; it
# must route by v2 before that, from its very first request.
my $t0 = Time::HiRes::time();
my $reaped = 0;
until ($reaped || Time::HiRes::time() - $t0 > 10) {
    $reaped = substr(error_log_text(), $offset) =~ /worker process $victim exited on signal 9/;
    Time::HiRes::sleep(0.01) unless $reaped;
}
ok($reaped, 'the master reaped the killed worker');
my ($first, $pid, $when);
until (defined $first || Time::HiRes::time() - $t0 > 10) {
    my $res = http_request('GET', '/', [Host => 'api.example']);
    my ($p, $answer) = split ' ', $res->{body} // '', 2;
    next unless defined $p && !$old{$p};
    ($first, $pid, $when) = ($answer, $p, Time::HiRes::time() - $t0);
}
ok(defined $pid, 'a respawned worker answered') or return;
chomp $first;
is($first, 'new v2', "the respawned worker $pid answered its first request by v2");
cmp_ok($when, '<', 2.5, sprintf('before its first watch= tick could have caught it up (%.2f s after the crash)', $when));
my %now = map { (split ' ', http_request('GET', '/', [Host => 'api.example'])->{body})[0] => 1 } 1 .. 40;
is_deeply([sort keys %now], [sort grep { $_ != $victim } keys(%old), $pid], 'the survivor and the respawned worker serve');



=== TEST 10: a refused change is visible in the status and in Prometheus until a good one is published or the file is back to the published content
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=200ms;
--- check_eval
my $m = html_dir() . '/m.yaml';
my $good = main::yaml_for(0, 'v1');
is(main::status()->{file}{state}, 'ok', 'a published file is ok');
like(http_request('GET', '/status?format=prometheus')->{body}, qr/^migration_config_file_refused\{source="[^"]*m\.yaml"\} 0$/m, 'Prometheus: 0');
main::write_file($m, $good =~ s/percentage: 0/percentage: 120/r);
my $deadline = Time::HiRes::time() + 3;
Time::HiRes::sleep(0.05) until main::status()->{file}{state} eq 'refused' || Time::HiRes::time() > $deadline;
my $file = main::status()->{file};
is($file->{state}, 'refused', 'the typo is refused, and the status says so');
like($file->{error}, qr/m\.yaml:8:\d+: services\[0\]\.migration\.percentage: must be between 0 and 100, got 120/, 'with the located error');
like($file->{since}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, 'and since when');
like(http_request('GET', '/status?format=prometheus')->{body}, qr/^migration_config_file_refused\{source="[^"]*m\.yaml"\} 1$/m, 'Prometheus: 1');
is(main::status()->{version}, 'v1', 'v1 still routes');
main::write_file($m, $good);
$deadline = Time::HiRes::time() + 3;
Time::HiRes::sleep(0.05) until main::status()->{file}{state} eq 'ok' || Time::HiRes::time() > $deadline;
is_deeply(main::status()->{file}, {state => 'ok', error => undef, since => undef}, 'back to the published content: ok again');
main::write_file($m, "services: [\n");
$deadline = Time::HiRes::time() + 3;
Time::HiRes::sleep(0.05) until main::status()->{file}{state} eq 'refused' || Time::HiRes::time() > $deadline;
is(main::status()->{file}{state}, 'refused', 'refused again');
main::write_file($m, main::yaml_for(100, 'v2'));
$deadline = Time::HiRes::time() + 3;
Time::HiRes::sleep(0.05) until main::status()->{version} eq 'v2' || Time::HiRes::time() > $deadline;
is(main::status()->{file}{state}, 'ok', 'a good change published: ok');



=== TEST 11: last_good=: the module keeps the last published file; a bad file on disk no longer blocks a reload, which runs on that copy (refusal at error, state refused)
--- master_on
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml watch=200ms last_good=$TEST_NGINX_HTML_DIR/last-good.yaml;
--- check_eval
my ($m, $copy) = (html_dir() . '/m.yaml', html_dir() . '/last-good.yaml');
my $read = sub { open my $fh, '<', $_[0] or return ''; local $/; <$fh> };
is($read->($copy), main::yaml_for(0, 'v1'), 'the published file is kept at last_good at start');
main::write_file($m, main::yaml_for(100, 'v2'));
my $deadline = Time::HiRes::time() + 3;
Time::HiRes::sleep(0.05) until $read->($copy) eq main::yaml_for(100, 'v2') || Time::HiRes::time() > $deadline;
is($read->($copy), main::yaml_for(100, 'v2'), 'and every watch= publication updates it');
main::write_file($m, "services:\n  - name: [broken\n");
ok(reload_nginx(), 'a reload with the bad file on disk succeeds');
like(error_log_text(), qr/\[error\] .*m\.yaml:3:1: .*; nginx runs on the last good configuration .*last-good\.yaml \(version v2\) instead/, 'the refusal is logged at error');
$deadline = Time::HiRes::time() + 3;
Time::HiRes::sleep(0.05) until main::status()->{file}{state} eq 'refused' || Time::HiRes::time() > $deadline;
my $s = main::status();
is($s->{file}{state}, 'refused', 'the status says the file is refused');
is($s->{version}, 'v2', 'v2 routes');
is($read->($copy), main::yaml_for(100, 'v2'), 'the copy is not overwritten by its own reload');



=== TEST 12: last_good=: nginx starts on the copy when the file is refused at start
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml last_good=$TEST_NGINX_HTML_DIR/last-good.yaml;
--- user_files eval
[[ 'm.yaml', "services:\n  - name: api\n    percentage: oops\n" ], [ 'last-good.yaml', main::yaml_for(100, 'kept') ]]
--- check_eval
like(error_log_text(), qr/\[error\] .*m\.yaml:\d+:\d+: .*; nginx runs on the last good configuration .*last-good\.yaml \(version kept\) instead/, 'started on the copy, the refusal at error');
my $s = main::status();
is($s->{version}, 'kept', 'the copy routes');
is($s->{file}{state}, 'refused', 'and the file is refused');
like(http_request('GET', '/', [Host => 'api.example'])->{body}, qr/ new kept$/, 'requests are routed by it');
