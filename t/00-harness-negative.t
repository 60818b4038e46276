# The harness's own failure checks, each shown to fail: t/negative/*.tfix hold
# blocks that must fail (and control blocks that must pass); they are run here
# through the harness in a child perl, and its TAP is checked line by line.
use strict;
use warnings;
use Test::More;
use Cwd ();
use File::Path ();

my $root = Cwd::abs_path('.');
my $servroot = "$root/t/servroot-negative";
my $nginx = $ENV{TEST_NGINX_BINARY} // "$root/target/nginx/sbin/nginx";
plan skip_all => "no nginx at $nginx" unless -x $nginx;

# Runs a fixture; returns (exit status, {test name => [ok?, ...]} keyed by "TEST n: title - check").
sub run_fixture {
    my ($file, %env) = @_;
    local %ENV = (%ENV, TEST_NGINX_SERVROOT => $servroot, %env);
    my $out = `$^X $file 2>&1`;
    my $status = $? >> 8;
    my %results;
    for my $line (split /\n/, $out) {
        next unless $line =~ /^(not ok|ok) \d+ - (.*)$/;
        push @{ $results{$2} }, $1 eq 'ok';
    }
    return ($status, \%results, $out);
}

# The TAP lines of block $block ("TEST n") whose check contains $check.
sub lines_of {
    my ($results, $block, $check) = @_;
    return map { @{ $results->{$_} } } grep { /^\Q$block\E: .* - .*\Q$check\E/ } keys %$results;
}

my ($status, $r, $out) = run_fixture('t/negative/must-fail.tfix');
isnt($status, 0, 'the fixture run as a whole fails') or diag($out);

my @must_fail = (
    ['TEST 2', 'no [alert]/[crit]/[emerg]/crash', 'an unexpected [alert] fails the block'],
    ['TEST 3', 'no [alert]/[crit]/[emerg]/crash', 'an unexpected [crit] fails the block'],
    ['TEST 4', 'no [alert]/[crit]/[emerg]/crash', 'a crashed worker fails the block although error_log mentions the crash'],
    ['TEST 5', 'no [alert]/[crit]/[emerg]/crash', 'an expected [emerg] does not exempt another [emerg]'],
    ['TEST 6', 'expect_alerts names lines, not whole levels', 'a pattern matching any [emerg] is refused'],
    ['TEST 7', 'the expected alert line', 'an expected line that never appears fails the block'],
    ['TEST 8', 'no_check_alerts is gone', 'no_check_alerts is refused'],
    ['TEST 9', 'every request got a complete response in time', "the block's request timing out fails the block"],
    ['TEST 10', 'every request got a complete response in time', 'a request of check_eval timing out fails the block'],
    ['TEST 11', 'every request got a complete response in time', 'a truncated response fails the block'],
    ['TEST 12', 'check_eval ran at least one assertion', 'a check_eval that asserts nothing fails the block'],
);
for my $case (@must_fail) {
    my ($block, $check, $what) = @$case;
    my @lines = lines_of($r, $block, $check);
    ok(@lines && !grep({ $_ } @lines), $what) or diag("$block, check '$check': " . (@lines ? 'passed' : 'no such check ran'));
}
for my $block ('TEST 1', 'TEST 13') {
    my @lines = lines_of($r, $block, '');
    ok(@lines >= 2 && !grep({ !$_ } @lines), "$block (a control block) passes") or diag($out);
}

# A wrapper that runs the real nginx, passes SIGQUIT on, and exits with status 3.
# In Perl, not sh: perl's waitpid runs the signal handler and waits again when
# a signal interrupts it, whenever the signal lands. A dash wrapper (trap, then
# `wait` twice) was once not done 10 s after the harness's SIGQUIT, on a loaded
# machine (CI, 2026-12-06), and failed the control check instead of the exit
# status check.
File::Path::make_path($servroot);
my $wrapper = "$root/t/servroot-negative-exit3.pl";
open my $fh, '>', $wrapper or die "$wrapper: $!";
print $fh <<"PL";
#!$^X
use strict;
my (\$child, \$quit);
\$SIG{QUIT} = sub { \$quit = 1; kill 'QUIT', \$child if \$child };
\$child = fork() // die "fork: \$!";
exec('$nginx', \@ARGV) or die "exec: \$!" if \$child == 0;
kill 'QUIT', \$child if \$quit;
waitpid(\$child, 0);
exit 3;
PL
close $fh;
chmod 0755, $wrapper;
($status, $r, $out) = run_fixture('t/negative/exit-status.tfix', TEST_NGINX_BINARY => $wrapper);
my @lines = lines_of($r, 'TEST 1', 'nginx shut down cleanly');
ok(@lines && !grep({ $_ } @lines), 'a non-zero exit status at shutdown fails the block') or diag($out);
ok(lines_of($r, 'TEST 1', 'status code ok'), 'while its request passed');
unlink $wrapper;
File::Path::remove_tree($servroot);

done_testing();
