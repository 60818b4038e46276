# `nginx-migration check` prints nginx -t's own messages, byte for byte: for every
# YAML file of the configuration tests (t/01, t/30) and every input of the fuzz
# regressions and seed corpus, the errors (`[emerg] ...`) and the warnings
# (`[warn] migration: ...`) that nginx -t prints about the file are exactly the
# lines `check` prints (nginx -t's ` in nginx.conf:N` left out), and `check`
# exits 1 exactly when nginx -t refuses the file.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp qw(tempdir);
use Cwd qw(abs_path);

my $repo = abs_path('.');
my $nginx = $ENV{TEST_NGINX_BINARY} // "$repo/target/nginx/sbin/nginx";
# The same nginx and module as the rest of t/ (make test also runs t/ on an
# official-image build and on Debian's nginx).
my @modules = split ' ', ($ENV{TEST_NGINX_LOAD_MODULES} // "$repo/target/nginx/modules/ngx_http_migration_module.so");
my $load = join '', map { "load_module $_;\n" } @modules;
my $cli = $ENV{NGINX_MIGRATION} // "$repo/target/nginx/bin/nginx-migration";
plan skip_all => "no $cli (make build)" unless -x $cli;

sub slurp { my ($f) = @_; open my $fh, '<:raw', $f or die "$f: $!"; local $/; <$fh> }
sub spew { my ($f, $c) = @_; open my $fh, '>:raw', $f or die "$f: $!"; print $fh $c; close $fh }

# (name, content) of every YAML file the configuration tests feed migration_config.
my @inputs;
for my $t ('t/01-config.t', 't/30-cookie-arg-rules.t') {
    my $text = slurp($t);
    my ($data) = $text =~ /^__DATA__\n(.*)\z/ms;
    for my $block (split /^(?==== TEST)/m, $data) {
        my ($title) = $block =~ /^=== (TEST \d+)/ or next;
        my ($files) = $block =~ /^--- user_files\n(.*?)(?=^--- |\z)/ms or next;
        my ($conf_name) = $block =~ m{migration_config \$TEST_NGINX_HTML_DIR/(\S+?);} or next;
        my %files;
        my $cur;
        for my $line (split /^/, $files) {
            if ($line =~ /^>>>\s*(\S+)\s*$/) { $cur = $1; $files{$cur} = ''; next }
            $files{$cur} .= $line if defined $cur;
        }
        next unless exists $files{$conf_name};
        (my $content = $files{$conf_name}) =~ s/\n+\z/\n/;
        push @inputs, ["$t $title", $content];
    }
}
for my $f (sort glob('engine/fuzz/corpus/config/*')) {
    push @inputs, [$f, slurp($f)];
}
# engine/tests/fuzz_regressions.rs
push @inputs, ['fuzz regression: a tagged ConfigMap data key', "kind: ConfigMap\ndata:\n ! s.yaml:"];
cmp_ok(scalar @inputs, '>=', 40, scalar(@inputs) . ' files to compare');

my $dir = tempdir(CLEANUP => 1);
mkdir "$dir/logs";
my ($errors, $warnings) = (0, 0);
for my $case (@inputs) {
    my ($name, $content) = @$case;
    my $yaml = "$dir/m.yaml";
    spew($yaml, $content);
    spew("$dir/nginx.conf", "${load}error_log stderr notice;\nevents {}\nhttp {\n    migration_config $yaml;\n}\n");
    my $out = `'$nginx' -t -p '$dir/' -c '$dir/nginx.conf' 2>&1`;
    my $nginx_failed = $? != 0;
    # The messages about the file: [emerg] FILE..., [warn] migration: FILE: ...
    my @want;
    for my $line (split /\n/, $out) {
        # `nginx: [emerg] MESSAGE in FILE:LINE`, or once error_log is read (as
        # Debian's nginx does) `DATE TIME [emerg] PID#TID: MESSAGE in FILE:LINE`.
        next unless $line =~ /^(?:nginx: |\S+ \S+ )\[(emerg|warn)\] (?:\d+#\d+: )?(.*) in \Q$dir\E\/nginx\.conf:\d+$/;
        my $message = "[$1] $2";
        push @want, $message if $message =~ /^\[emerg\] \Q$yaml\E|^\[warn\] migration: \Q$yaml\E: /;
    }
    my $cli_out = `'$cli' check '$yaml' 2>&1`;
    my $cli_status = $? >> 8;
    my @got = map { /^nginx-migration: (\[(?:emerg|warn)\] .*)$/ ? $1 : () } split /\n/, $cli_out;
    is_deeply(\@got, \@want, "$name: the same messages as nginx -t") or diag("nginx -t:\n$out\ncheck:\n$cli_out");
    # nginx -t fails because of the file exactly when it prints an [emerg] about
    # it (an nginx built with other default paths may fail for its own reasons).
    my $bad = grep { /^\[emerg\]/ } @want;
    is($cli_status, $bad ? 1 : 0, "$name: check exits " . ($bad ? 1 : 0) . ($bad ? ' as nginx -t refuses the file' : ' as nginx -t accepts the file'));
    ok($nginx_failed, "$name: and nginx -t failed") if $bad;
    $errors += grep { /^\[emerg\]/ } @want;
    $warnings += grep { /^\[warn\]/ } @want;
}
cmp_ok($errors, '>=', 25, "$errors error messages compared");
cmp_ok($warnings, '>=', 1, "$warnings warning messages compared");

# --format json: one list with the fixed keys, warnings located too.
spew("$dir/w.yaml", "services:\n  - name: api\n    old_host: api.example\n    old_backend: old:80\n    new_host: api.example\n    new_backend: new:80\n    canary:\n      ip_rules:\n        - {cidr: 10.0.0.0/8, target: new}\n        - {cidr: 10.1.0.0/16, target: old}\n");
my $json = `'$cli' check --format json '$dir/w.yaml'`;
is($? >> 8, 0, 'warnings alone pass');
like($json, qr/"severity": "warning"/, 'a warning in JSON');
like($json, qr/"line": 10,\s*"message": "never matches: .*",\s*"path": "services\[0\]\.canary\.ip_rules\[1\]"/s, 'located at its rule')
    or diag($json);
`'$cli' check --strict '$dir/w.yaml'`;
is($? >> 8, 1, '--strict: warnings fail');
`'$cli' check`;
is($? >> 8, 2, 'no FILE is a usage error');

done_testing();
