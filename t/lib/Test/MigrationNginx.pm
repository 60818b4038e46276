package Test::MigrationNginx;

# A small Test::Nginx::Socket-style harness for ngx_http_migration_module.
#
# Test files look like:
#
#   use lib 't/lib';
#   use Test::MigrationNginx;          # or: use Test::MigrationNginx 'no_plan';
#   plan tests => blocks() * 2;        # numbers are accepted but not enforced
#   run_tests();
#   __DATA__
#   === TEST 1: title
#   --- config
#       location /t { return 200 "ok\n"; }
#   --- request
#   GET /t
#   --- response_body
#   ok
#
# See t/README.md, "The harness" (or the POD at the end of this file) for the
# full list of sections, environment variables and helper functions.

use strict;
use warnings;

use Test::Base;    # sets up the block parser (reads main::DATA)
use Test::More ();

use Cwd ();
use Errno ();
use File::Basename ();
use File::Path ();
use File::Spec;
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Socket ();
use Time::HiRes ();

our $VERSION = '0.01';

# --------------------------------------------------------------------------
# exports

our @EXPORT_HARNESS = qw(
    run_tests run_test add_block_preprocessor
    http_request http_requests_keepalive
    server_port servroot html_dir nginx_binary nginx_pid nginx_version nginx_version_cmp
    error_log_text reload_nginx signal_nginx
    current_block current_response free_port rand_port expect_alert
    done_testing note explain subtest
);

# Things Test::Base exports (blocks(), Test::More functions, ...); `plan` is
# replaced by our wrapper below.
our @EXPORT_BASE = grep { !/^\$/ } @Test::Base::EXPORT;

sub import {
    my ($class, @args) = @_;
    my $caller = caller;
    no strict 'refs';
    no warnings 'redefine';
    for my $name (@EXPORT_BASE, @EXPORT_HARNESS) {
        my $src = $name eq 'plan' ? \&_plan
                : defined &{"Test::MigrationNginx::$name"} ? \&{"Test::MigrationNginx::$name"}
                : defined &{"Test::More::$name"} ? \&{"Test::More::$name"}
                : next;
        *{"${caller}::$name"} = $src;
    }
    if (@args) {
        if (@args == 1 && $args[0] eq 'no_plan') {
            _plan('no_plan');
        } elsif (@args % 2 == 0) {
            _plan(@args);
        } else {
            die "Test::MigrationNginx: bad import arguments: @args\n";
        }
    }
}

sub done_testing { Test::More::done_testing(@_) }
sub note         { Test::More::note(@_) }
sub explain      { Test::More::explain(@_) }
sub subtest      { Test::More::subtest(@_) }

# Plan wrapper: test counts depend on the sections present (and on whatever
# check_eval does), so numeric plans are accepted but turned into "no_plan"
# (the final "1..N" is printed at the end; a premature exit still fails).
# skip_all is passed through.
my $Planned = 0;

sub _plan {
    my @args = @_;
    return if $Planned;
    if (@args >= 2 && $args[0] eq 'skip_all') {
        $Planned = 1;
        return Test::More::plan(@args);
    }
    $Planned = 1;
    return Test::More::plan('no_plan');
}

# --------------------------------------------------------------------------
# configuration

my $RepoDir = do {
    my $here = Cwd::abs_path(File::Basename::dirname(__FILE__));  # t/lib/Test
    Cwd::abs_path("$here/../../..");
};

sub _env_default {
    my ($name, $default) = @_;
    return defined $ENV{$name} ? $ENV{$name} : $default;
}

my $NginxBinary = _env_default('TEST_NGINX_BINARY', "$RepoDir/target/nginx/sbin/nginx");
my $ServRoot    = File::Spec->rel2abs(_env_default('TEST_NGINX_SERVROOT', "$RepoDir/t/servroot"));
$ServRoot =~ s{/+$}{};
my $LoadModules = _env_default('TEST_NGINX_LOAD_MODULES',
                               "$RepoDir/target/nginx/modules/ngx_http_migration_module.so");
my $UseValgrind = $ENV{TEST_NGINX_USE_VALGRIND} ? 1 : 0;
my $DefaultTimeout = _env_default('TEST_NGINX_TIMEOUT', 10);
my $DefaultLogLevel = _env_default('TEST_NGINX_LOG_LEVEL', 'info');

# --------------------------------------------------------------------------
# per-block state

my %State;    # port, pid, master, block, timeout, stderr_file, ...

sub server_port     { $State{port} }
sub servroot        { $ServRoot }
sub html_dir        { "$ServRoot/html" }
sub nginx_binary    { $NginxBinary }
sub nginx_pid       { $State{pid} }
sub current_block   { $State{block} }
sub current_response { $State{response} }

sub error_log_text {
    return _slurp("$ServRoot/logs/error.log");
}

sub _slurp {
    my ($file) = @_;
    open my $fh, '<:raw', $file or return '';
    local $/;
    my $s = <$fh>;
    close $fh;
    return defined $s ? $s : '';
}

sub _spew {
    my ($file, $content) = @_;
    my $dir = File::Basename::dirname($file);
    File::Path::make_path($dir) unless -d $dir;
    open my $fh, '>:raw', $file or die "cannot write $file: $!\n";
    if (utf8::is_utf8($content)) { utf8::encode($content) }
    print {$fh} $content;
    close $fh or die "cannot close $file: $!\n";
}

sub _tail {
    my ($text, $n) = @_;
    $n ||= 30;
    my @lines = split /\n/, $text;
    @lines = @lines[-$n .. -1] if @lines > $n;
    return join("\n", @lines);
}

# A loopback port nothing listens on now, and not yet handed out in this block:
# the kernel may give a port just closed again, and two server blocks on one
# port would answer for each other (the second's names reach the first).
sub free_port {
    for (1 .. 100) {
        my $sock = IO::Socket::INET->new(
            LocalAddr => '127.0.0.1',
            LocalPort => 0,
            Proto     => 'tcp',
            Listen    => 1,
            ReuseAddr => 0,
        ) or die "cannot bind a free port: $!\n";
        my $port = $sock->sockport;
        close $sock;
        return $port unless $State{ports_given}{$port}++;
    }
    die "cannot find a loopback port not already given to this block\n";
}

# --------------------------------------------------------------------------
# variable expansion

sub _expand {
    my ($text) = @_;
    return $text unless defined $text && !ref $text;
    $text =~ s{\$(TEST_NGINX_[A-Z0-9_]+)\b}{
        my $name = $1;
        my $v = _var($name);
        defined $v ? $v : "\$$name";
    }ge;
    return $text;
}

# The port $TEST_NGINX_RAND_PORT_<n> stands for in this block.
sub rand_port {
    my ($n) = @_;
    return _var("TEST_NGINX_RAND_PORT_$n");
}

sub _var {
    my ($name) = @_;
    return $State{port}         if $name eq 'TEST_NGINX_SERVER_PORT' || $name eq 'TEST_NGINX_PORT';
    return "$ServRoot/html"     if $name eq 'TEST_NGINX_HTML_DIR';
    return $ServRoot            if $name eq 'TEST_NGINX_SERVROOT';
    return $RepoDir             if $name eq 'TEST_NGINX_REPO_DIR';
    if ($name =~ /^TEST_NGINX_RAND_PORT_(\d+)$/) {
        return $State{rand_ports}{$1} ||= free_port();
    }
    return $ENV{$name} if defined $ENV{$name};
    return undef;
}

# --------------------------------------------------------------------------
# block helpers

sub _sec {
    my ($block, $name) = @_;
    return undef unless exists $block->{$name};
    my @v = @{ $block->{$name} };
    return wantarray ? @v : $v[0];
}

sub _has { exists $_[0]->{$_[1]} }

sub _name { my $b = shift; my $n = $b->name; $n = 'block ' . $b->seq_num unless defined $n && length $n; $n }

# --------------------------------------------------------------------------
# run_tests

my $RunningBlock = 0;

# As in Test::Nginx: subs that see every block before it runs, typically to give
# sections a file's blocks share (`$block->set_value(config => ...)` unless
# `defined $block->config`), so each block keeps only what is its own.
my @BlockPreprocessors;

sub add_block_preprocessor { push @BlockPreprocessors, @_ }

sub run_tests {
    _plan('no_plan') unless $Planned;
    my @blocks = Test::Base::blocks();
    for my $block (@blocks) {
        $_->($block) for @BlockPreprocessors;
        run_test($block);
    }
}

sub run_test {
    my ($block) = @_;
    my $name = _name($block);

    if (_has($block, 'requires')) {
        if (my $why = _unmet_requirement(_sec($block, 'requires'))) {
            # Never silent: the reason goes to prove's output as well as the TAP skip.
            Test::More::diag("skipped $name: $why");
            SKIP: { Test::More::skip("$name: $why", 1) }
            return;
        }
    }

    if (_has($block, 'skip')) {
        my $reason = _sec($block, 'skip');
        $reason = 'skipped' unless defined $reason && $reason =~ /\S/;
        $reason =~ s/\s+\z//;
        SKIP: { Test::More::skip("$name: $reason", 1) }
        return;
    }

    %State = (block => $block);
    my $timeout = _sec($block, 'timeout');
    $timeout = $DefaultTimeout unless defined $timeout && $timeout =~ /\S/;
    $timeout =~ s/\s+//g;
    $State{timeout} = $timeout;
    $State{port}    = free_port();

    eval { _prepare_servroot($block); 1 } or do {
        my $err = $@;
        Test::More::fail("$name - prepare servroot");
        Test::More::diag($err);
        return;
    };

    if (_has($block, 'init')) {
        my $init = _sec($block, 'init');
        my $sub = ref $init eq 'CODE' ? $init
            : eval "package main; no strict 'vars'; sub { my (\$block) = \@_;\n#line 1 \"init of $name\"\n$init\n}";
        my $ok = $sub && eval { $sub->($block); 1 };
        unless ($ok) {
            Test::More::fail("$name - init");
            Test::More::diag($@);
            %State = ();
            return;
        }
    }

    if (_has($block, 'must_die')) {
        _run_must_die($block);
        %State = ();
        return;
    }

    my $started = _start_nginx($block);
    unless ($started) {
        _stop_nginx();
        %State = ();
        return;
    }

    my $ok = eval {
        _run_request_checks($block);
        _run_check_eval($block);
        1;
    };
    my $err = $@;

    my $stop_info = _stop_nginx();
    unless ($ok) {
        Test::More::fail("$name - harness error");
        Test::More::diag($err);
    }

    _check_requests_complete($block);
    _check_nginx_exit($block, $stop_info);
    _check_error_log($block, error_log_text());
    _check_valgrind($block);
    %State = ();
}

# --------------------------------------------------------------------------
# --- requires: what a block needs of the nginx under test (TEST_NGINX_BINARY
# may be another build than the vendored one: a distribution's, the official
# image's). One requirement per line:
#   nginx >= 1.23.0        the nginx version (also >, <, <=, ==)
#   configure --with-X     a string in `nginx -V`'s configure arguments
#   root                   the tests run as root
# An unmet requirement skips the block with the reason printed.

my $NginxV;

sub _nginx_V {
    return $NginxV if defined $NginxV;
    my $out = `"$NginxBinary" -V 2>&1`;
    $NginxV = defined $out ? $out : '';
    return $NginxV;
}

sub _version_cmp {
    my ($x, $y) = @_;
    my @x = split /\./, $x;
    my @y = split /\./, $y;
    while (@x || @y) {
        my $c = (shift(@x) // 0) <=> (shift(@y) // 0);
        return $c if $c;
    }
    return 0;
}

# The version of the nginx under test ("1.22.1"), and how it compares with another.
sub nginx_version { my ($have) = _nginx_V() =~ m{nginx version: nginx/(\d+(?:\.\d+)*)}; $have }
sub nginx_version_cmp { _version_cmp(nginx_version() // 0, $_[0]) }

sub _unmet_requirement {
    my ($spec) = @_;
    my $v = _nginx_V();
    my ($have) = $v =~ m{nginx version: nginx/(\d+(?:\.\d+)*)};
    for my $line (split /\n/, $spec // '') {
        $line =~ s/^\s+|\s+$//g;
        next unless length $line;
        if ($line =~ /^nginx\s*(>=|<=|==|>|<)\s*(\d+(?:\.\d+)*)$/) {
            my ($op, $want) = ($1, $2);
            return "cannot tell the version of $NginxBinary" unless defined $have;
            my $c = _version_cmp($have, $want);
            my $ok = $op eq '>=' ? $c >= 0 : $op eq '<=' ? $c <= 0 : $op eq '==' ? $c == 0
                   : $op eq '>' ? $c > 0 : $c < 0;
            return "needs nginx $op $want, this nginx is $have" unless $ok;
        } elsif ($line eq 'root') {
            return "needs to run as root (to set the worker user)" unless $> == 0;
        } elsif ($line =~ /^configure\s+(\S+)$/) {
            my $flag = $1;
            my ($args) = $v =~ /^configure arguments:(.*)$/m;
            return "needs an nginx configured with $flag" unless defined $args && $args =~ /(?:^|\s)\Q$flag\E(?:\s|=|$)/;
        } else {
            die "--- requires: cannot read '$line' (nginx OP VERSION | configure --with-... | root)\n";
        }
    }
    return undef;
}

# --------------------------------------------------------------------------
# servroot / nginx.conf

sub _safe_wipe {
    my ($dir) = @_;
    return unless -e $dir;
    my $base = File::Basename::basename($dir);
    unless ($base =~ /servroot/ || -f "$dir/conf/nginx.conf") {
        die "refusing to wipe $dir: it does not look like a servroot "
          . "(name must contain 'servroot' or it must hold conf/nginx.conf)\n";
    }
    File::Path::remove_tree($dir, { error => \my $errs });
    die "cannot remove $dir\n" if -e $dir;
}

sub _prepare_servroot {
    my ($block) = @_;
    _safe_wipe($ServRoot);
    for my $d (qw(conf html logs), qw(client_body_temp proxy_temp fastcgi_temp uwsgi_temp scgi_temp)) {
        File::Path::make_path("$ServRoot/$d");
    }

    if (_has($block, 'user_files')) {
        my @files = _parse_user_files(_sec($block, 'user_files'));
        for my $f (@files) {
            my ($rel, $content) = @$f;
            die "bad user_files name '$rel'\n" if $rel =~ m{(^|/)\.\.(/|$)} || $rel =~ m{^/};
            _spew("$ServRoot/html/$rel", _expand($content));
        }
    }

    _spew("$ServRoot/conf/nginx.conf", _build_conf($block));
}

sub _parse_user_files {
    my ($spec) = @_;
    return () unless defined $spec;
    if (ref $spec eq 'ARRAY') {    # --- user_files eval  [[name, content], ...]
        return map { ref $_ eq 'ARRAY' ? $_ : die "user_files eval: expected [name, content] pairs\n" } @$spec;
    }
    my @files;
    my $cur;
    for my $line (split /^/, $spec) {
        if ($line =~ /^>>>\s*(\S+)\s*$/) {
            $cur = [$1, ''];
            push @files, $cur;
            next;
        }
        if (!$cur) {
            next if $line =~ /^\s*$/;
            die "user_files: content before the first '>>> name' line\n";
        }
        $cur->[1] .= $line;
    }
    return @files;
}

sub _master_on {
    my ($block) = @_;
    return 1 if _has($block, 'master_on');
    my $w = _sec($block, 'workers');
    return 1 if defined $w && $w =~ /(\d+)/ && $1 > 1;
    return 0;
}

sub _build_conf {
    my ($block) = @_;
    my $master = _master_on($block);
    my $workers = _sec($block, 'workers');
    $workers = 1 unless defined $workers && $workers =~ /\S/;
    $workers =~ s/\s+//g;
    my $level = _sec($block, 'error_log_level');
    $level = $DefaultLogLevel unless defined $level && $level =~ /\S/;
    $level =~ s/\s+//g;

    my $main = _expand(_sec($block, 'main_config') // '');
    my $http = _expand(_sec($block, 'http_config') // '');
    my $conf = _expand(_sec($block, 'config') // '');

    my @modules = grep { length } split /\s+/, $LoadModules;
    my $load = join '', map { "load_module $_;\n" } @modules;
    my $user = ($> == 0 && $main !~ /^\s*user\s/m) ? "user root;\n" : '';
    my $port = $State{port};
    my $listen = _sec($block, 'listen_options') // '';
    $listen =~ s/\s+/ /g;
    $listen =~ s/^ | $//g;
    $listen = " $listen" if length $listen;

    return <<"EOF";
# generated by Test::MigrationNginx for: ${\ _name($block)}
daemon off;
master_process @{[ $master ? 'on' : 'off' ]};
worker_processes $workers;
error_log logs/error.log $level;
pid logs/nginx.pid;
$user$load
$main

events {
    worker_connections 1024;
}

http {
    access_log logs/access.log;
    client_body_temp_path $ServRoot/client_body_temp;
    proxy_temp_path $ServRoot/proxy_temp;
    fastcgi_temp_path $ServRoot/fastcgi_temp;
    uwsgi_temp_path $ServRoot/uwsgi_temp;
    scgi_temp_path $ServRoot/scgi_temp;
    default_type text/plain;

$http

    server {
        listen 127.0.0.1:$port$listen;
        server_name localhost ~.;

$conf
    }
}
EOF
}

# --------------------------------------------------------------------------
# starting / stopping nginx

sub _nginx_cmd {
    my (@extra) = @_;
    # -e: messages written while nginx reads its configuration (before the
    # configured error_log is open) go to the block's error.log, whatever error log
    # path the binary was built with (Debian's nginx: stderr; the official image's:
    # /var/log/nginx/error.log), as they do with the vendored build's default.
    my @cmd = ($NginxBinary, '-p', "$ServRoot/", '-e', 'logs/error.log', '-c', 'conf/nginx.conf', @extra);
    if ($UseValgrind) {
        my @vg = ('valgrind', '--tool=memcheck', '--error-exitcode=66', '--leak-check=no',
                  '--num-callers=40', "--log-file=$ServRoot/valgrind.%p.log");
        my $supp = "$RepoDir/t/valgrind.suppress";
        push @vg, "--suppressions=$supp" if -f $supp;
        push @vg, split /\s+/, $ENV{TEST_NGINX_VALGRIND_OPTS} if $ENV{TEST_NGINX_VALGRIND_OPTS};
        unshift @cmd, @vg;
    }
    return @cmd;
}

sub _spawn {
    my ($stderr_file, @cmd) = @_;
    my $pid = fork();
    die "fork failed: $!\n" unless defined $pid;
    if ($pid == 0) {
        POSIX::setpgid(0, 0);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $stderr_file;
        open STDERR, '>>', $stderr_file;
        { no warnings "exec"; exec { $cmd[0] } @cmd; }
        print STDERR "exec $cmd[0] failed: $!\n";
        POSIX::_exit(127);
    }
    return $pid;
}

sub _diag_startup {
    my ($msg) = @_;
    Test::More::diag($msg);
    my $stderr = _slurp($State{stderr_file} // "$ServRoot/logs/stderr.log");
    my $elog   = error_log_text();
    Test::More::diag("---- nginx stderr (tail) ----\n" . _tail($stderr, 30)) if length $stderr;
    Test::More::diag("---- error.log (tail) ----\n" . _tail($elog, 30)) if length $elog;
    Test::More::diag("---- command: " . join(' ', _nginx_cmd()));
}

sub _port_open {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 1);
    return 0 unless $s;
    close $s;
    return 1;
}

sub _start_nginx {
    my ($block) = @_;
    my $name = _name($block);
    unless (-x $NginxBinary) {
        Test::More::fail("$name - nginx started");
        Test::More::diag("nginx binary $NginxBinary is not executable (set TEST_NGINX_BINARY)");
        return 0;
    }
    $State{stderr_file} = "$ServRoot/logs/stderr.log";
    $State{master} = _master_on($block);
    my $pid = _spawn($State{stderr_file}, _nginx_cmd());
    $State{pid} = $pid;

    my $limit = $UseValgrind ? 30 : 5;
    my $deadline = Time::HiRes::time() + $limit;
    while (1) {
        my $r = waitpid($pid, POSIX::WNOHANG());
        if ($r == $pid) {
            my $st = $?;
            delete $State{pid};
            Test::More::fail("$name - nginx started");
            _diag_startup("nginx exited prematurely (" . _status_str($st) . ")");
            return 0;
        }
        last if _port_open($State{port});
        if (Time::HiRes::time() > $deadline) {
            Test::More::fail("$name - nginx started");
            _diag_startup("nginx did not accept connections on 127.0.0.1:$State{port} within ${limit}s");
            return 0;
        }
        Time::HiRes::sleep(0.05);
    }
    return 1;
}

sub _status_str {
    my ($st) = @_;
    return 'not started' unless defined $st;
    return 'killed by signal ' . ($st & 127) . (($st & 128) ? ' (core dumped)' : '') if $st & 127;
    return 'exit code ' . ($st >> 8);
}

# Returns { died_early => status|undef, status => $?, killed => bool }
sub _stop_nginx {
    my $pid = $State{pid};
    return {} unless $pid;
    my %info;
    my $r = waitpid($pid, POSIX::WNOHANG());
    if ($r == $pid) {
        $info{died_early} = $?;
        $info{status} = $?;
    } else {
        kill 'QUIT', $pid;
        # Generous: a healthy nginx exits in milliseconds, and a loaded
        # two-core CI machine once took more than 3 s to schedule the exit.
        my $grace = $UseValgrind ? 20 : 10;
        my $deadline = Time::HiRes::time() + $grace;
        my $poke = Time::HiRes::time() + 0.5;
        while (1) {
            $r = waitpid($pid, POSIX::WNOHANG());
            if ($r == $pid) { $info{status} = $?; last }
            if ($r < 0) { last }
            # nginx's single-process loop looks at the quit flag only after
            # epoll_wait returns; a signal that lands just before it blocks (a
            # window valgrind widens) leaves it asleep with no timer. A
            # connection wakes it, as it would any nginx.
            if (!$State{master} && Time::HiRes::time() > $poke) {
                my ($s) = _connect($State{port}, 1);
                close $s if $s;
                $poke = Time::HiRes::time() + 0.5;
            }
            if (Time::HiRes::time() > $deadline) {
                kill 'KILL', -$pid;
                kill 'KILL', $pid;
                waitpid($pid, 0);
                $info{status} = $?;
                $info{killed} = 1;
                last;
            }
            Time::HiRes::sleep(0.02);
        }
    }
    # leftover workers (e.g. master was killed): same process group
    kill 'KILL', -$pid;
    delete $State{pid};
    return \%info;
}

sub _check_nginx_exit {
    my ($block, $info) = @_;
    my $name = _name($block);
    if (defined $info->{died_early}) {
        Test::More::fail("$name - nginx still running after the checks");
        Test::More::diag("nginx exited before shutdown (" . _status_str($info->{died_early}) . ")");
        Test::More::diag("---- error.log (tail) ----\n" . _tail(error_log_text(), 30));
    } elsif ($info->{killed}) {
        Test::More::fail("$name - nginx shut down on SIGQUIT");
        Test::More::diag("nginx did not exit within the grace period; killed with SIGKILL");
    } elsif (defined $info->{status} && $info->{status} != 0) {
        # A crash, or an exit status nginx only gives when something went wrong
        # (valgrind's --error-exitcode included).
        Test::More::fail("$name - nginx shut down cleanly");
        Test::More::diag("nginx " . _status_str($info->{status}) . " at shutdown");
        Test::More::diag("---- error.log (tail) ----\n" . _tail(error_log_text(), 20));
    }
}

sub reload_nginx {
    my (%opts) = @_;
    my $pid = $State{pid} or die "reload_nginx: nginx is not running\n";
    # nginx's single-process mode does not reconfigure reliably (fds get mixed up)
    die "reload_nginx: needs master_process on (add --- master_on to the block)\n"
        unless $State{master};
    my $timeout = $opts{timeout} || ($UseValgrind ? 30 : 0) || $State{timeout} || 10;
    my $off = length error_log_text();
    my $want = _sec($State{block}, 'workers');
    $want = (defined $want && $want =~ /(\d+)/) ? $1 : 1;
    kill 'HUP', $pid or die "reload_nginx: kill HUP $pid: $!\n";
    my $deadline = Time::HiRes::time() + $timeout;
    while (Time::HiRes::time() < $deadline) {
        Time::HiRes::sleep(0.05);
        my $new = substr(error_log_text(), $off);
        # a failed reload logs [emerg]; nginx keeps running with the old config
        return 0 if $new =~ /\[emerg\]/;
        {
            my $started = () = $new =~ /start worker process/g;
            my $shut    = () = $new =~ /gracefully shutting down/g;
            if ($started >= $want && $shut >= 1) {
                Time::HiRes::sleep(0.1);
                return 1;
            }
        }
    }
    die "reload_nginx: no new configuration generation within ${timeout}s\n";
}

sub signal_nginx {
    my ($sig) = @_;
    my $pid = $State{pid} or die "signal_nginx: nginx is not running\n";
    return kill $sig, $pid;
}

# --------------------------------------------------------------------------
# must_die

sub _run_must_die {
    my ($block) = @_;
    my $name = _name($block);
    unless (-x $NginxBinary) {
        Test::More::fail("$name - nginx failed to start");
        Test::More::diag("nginx binary $NginxBinary is not executable (set TEST_NGINX_BINARY)");
        return;
    }
    my $stderr_file = "$ServRoot/logs/stderr.log";
    $State{stderr_file} = $stderr_file;
    my $pid = _spawn($stderr_file, _nginx_cmd('-t'));
    my $t_deadline = Time::HiRes::time() + ($UseValgrind ? 60 : 20);
    my $st;
    while (1) {
        my $r = waitpid($pid, POSIX::WNOHANG());
        if ($r == $pid) { $st = $?; last }
        if (Time::HiRes::time() > $t_deadline) { kill 'KILL', -$pid; waitpid($pid, 0); $st = $?; last }
        Time::HiRes::sleep(0.02);
    }
    my $died = $st != 0;
    unless ($died) {
        # `nginx -t` passed: some failures only show up at real start-up
        # (e.g. in init_process); start for real and see whether it dies.
        $State{master} = _master_on($block);
        $State{pid} = _spawn($stderr_file, _nginx_cmd());
        my $limit = $UseValgrind ? 30 : 3;
        my $deadline = Time::HiRes::time() + $limit;
        while (Time::HiRes::time() < $deadline) {
            my $r = waitpid($State{pid}, POSIX::WNOHANG());
            if ($r == $State{pid}) { $died = 1; delete $State{pid}; last }
            Time::HiRes::sleep(0.05);
        }
        _stop_nginx() if $State{pid};
    }
    Test::More::ok($died, "$name - nginx failed to start")
        or _diag_startup("nginx started although the block has --- must_die");
    my $text = _slurp($stderr_file) . error_log_text();
    _check_error_log($block, $text, 1);
}

# --------------------------------------------------------------------------
# error log checks

sub _patterns {
    my ($block, $sec) = @_;
    return () unless _has($block, $sec);
    my @v = _sec($block, $sec);
    my @pats;
    for my $v (@v) {
        next unless defined $v;
        if (ref $v eq 'ARRAY') {
            push @pats, @$v;
        } elsif (ref $v) {
            push @pats, $v;
        } else {
            for my $line (split /\n/, $v) {
                $line =~ s/\s+\z//;
                next unless length $line;
                push @pats, _expand($line);
            }
        }
    }
    return @pats;
}

sub _match {
    my ($text, $pat) = @_;
    return ref $pat eq 'Regexp' ? ($text =~ $pat) : (index($text, $pat) >= 0);
}

sub _pat_str {
    my ($pat) = @_;
    return ref $pat eq 'Regexp' ? "$pat" : "\"$pat\"";
}

# Lines of each level that say nothing in particular: a pattern in expect_alerts
# that matches one of them would exempt every line of its level.
our @BroadProbes = (
    '2026/01/01 00:00:00 [alert] 4242#4242: *42 zq',
    '2026/01/01 00:00:00 [crit] 4242#4242: *42 zq',
    '2026/01/01 00:00:00 [emerg] 4242#4242: zq',
    'nginx: [emerg] zq',
    '2026/01/01 00:00:00 [alert] 4241#4241: worker process 4242 exited on signal 77',
    '2026/01/01 00:00:00 [alert] 4241#4241: cache manager process 4242 exited on signal 77 (core dumped)',
);

sub _check_error_log {
    my ($block, $text, $must_die) = @_;
    my $name = _name($block);
    my @want = _patterns($block, 'error_log');
    my @dont = _patterns($block, 'no_error_log');

    for my $pat (@want) {
        Test::More::ok(_match($text, $pat), "$name - error log has " . _pat_str($pat))
            or Test::More::diag("---- error log (tail) ----\n" . _tail($text, 40));
    }
    for my $pat (@dont) {
        my $ok = !_match($text, $pat);
        Test::More::ok($ok, "$name - error log does not have " . _pat_str($pat));
        unless ($ok) {
            my @lines = grep { _match($_, $pat) } split /\n/, $text;
            Test::More::diag("matching lines:\n" . join("\n", @lines[0 .. ($#lines > 9 ? 9 : $#lines)]));
        }
    }

    if (_has($block, 'no_check_alerts')) {
        Test::More::fail("$name - no_check_alerts is gone");
        Test::More::diag("name the lines the block expects in --- expect_alerts (a regex per line) instead");
    }

    # The health check: every [alert], [crit] and [emerg] line and every crashed
    # process fails the block, unless the block names that very line in
    # expect_alerts (or with expect_alert() at run time). A must_die block
    # expects nginx to refuse its configuration: its [emerg] lines are the point.
    my @expected = (_alert_patterns($block), @{ $State{expect_alerts} || [] });
    my @broad = grep { my $p = $_; grep { $_ =~ $p } @BroadProbes } @expected;
    if (@broad) {
        Test::More::fail("$name - expect_alerts names lines, not whole levels");
        Test::More::diag("too broad (it matches any line of its level): " . join(', ', map { "$_" } @broad));
        @expected = grep { my $p = $_; !grep { $_ == $p } @broad } @expected;
    }
    my @levels = $must_die ? ('[alert]', '[crit]', 'exited on signal') : ('[alert]', '[crit]', '[emerg]', 'exited on signal');
    my @health = grep { my $l = $_; grep { index($l, $_) >= 0 } @levels } split /\n/, $text;
    my @bad = grep { my $l = $_; !grep { $l =~ $_ } @expected } @health;
    Test::More::ok(!@bad, "$name - no [alert]/[crit]/[emerg]/crash in error log but those expected")
        or Test::More::diag("unexpected lines:\n" . join("\n", @bad[0 .. ($#bad > 9 ? 9 : $#bad)]));
    for my $p (@expected) {
        my $seen = grep { $_ =~ $p } @health;
        Test::More::ok($seen, "$name - the expected alert line $p appeared")
            or Test::More::diag("---- error log (tail) ----\n" . _tail($text, 20));
    }
}

# expect_alerts: a regex per line (plain lines), or `eval` giving qr// or a list of them.
sub _alert_patterns {
    my ($block) = @_;
    return () unless _has($block, 'expect_alerts');
    my @pats;
    for my $v (_sec($block, 'expect_alerts')) {
        next unless defined $v;
        if (ref $v eq 'ARRAY') { push @pats, map { ref $_ eq 'Regexp' ? $_ : qr/$_/ } @$v; next }
        if (ref $v eq 'Regexp') { push @pats, $v; next }
        for my $line (split /\n/, $v) {
            $line =~ s/^\s+|\s+\z//g;
            next unless length $line;
            $line = _expand($line);
            push @pats, qr/$line/;
        }
    }
    return @pats;
}

# Names, from check_eval, an alert line only known at run time (a pid, a port).
sub expect_alert {
    my (@pats) = @_;
    die "expect_alert: outside a block\n" unless $State{block};
    push @{ $State{expect_alerts} }, map { ref $_ eq 'Regexp' ? $_ : qr/$_/ } @pats;
    return 1;
}

sub _check_valgrind {
    my ($block) = @_;
    return unless $UseValgrind;
    my $name = _name($block);
    opendir my $dh, $ServRoot or return;
    my @logs = sort grep { /^valgrind\..*\.log$/ } readdir $dh;
    closedir $dh;
    my @bad;
    for my $l (@logs) {
        my $t = _slurp("$ServRoot/$l");
        push @bad, [$l, $t] if $t =~ /ERROR SUMMARY: [1-9]/;
    }
    if (!@bad) {
        Test::More::pass("$name - valgrind clean");
        return;
    }
    my $msg = join "\n", map { "---- $_->[0] ----\n" . _tail($_->[1], 80) } @bad;
    if ($ENV{TEST_NGINX_VALGRIND_WARN_ONLY}) {
        Test::More::diag("$name - valgrind reported errors (warn only)\n$msg");
    } else {
        Test::More::fail("$name - valgrind clean");
        Test::More::diag($msg);
    }
}

# --------------------------------------------------------------------------
# request / response checks

sub _parse_header_lines {
    my ($text) = @_;
    my @h;
    return \@h unless defined $text;
    if (ref $text eq 'ARRAY') { return [ map { ref $_ ? @$_ : $_ } @$text ] }
    for my $line (split /\r?\n/, $text) {
        next unless length $line;
        my ($n, $v) = $line =~ /^([^:]+?):[ \t]*(.*)$/s
            or die "bad header line in more_headers: '$line'\n";
        push @h, $n, $v;
    }
    return \@h;
}

sub _build_request {
    my ($method, $path, $proto, $headers, $body, $keepalive) = @_;
    $proto ||= 'HTTP/1.1';
    my @h = @$headers;
    my %seen;
    for (my $i = 0; $i < @h; $i += 2) { $seen{lc $h[$i]} = 1 }
    my $req = "$method $path $proto\r\n";
    if ($proto ne 'HTTP/0.9') {
        $req .= "Host: localhost\r\n" unless $seen{host};
        $req .= ($keepalive ? "Connection: keep-alive\r\n" : "Connection: close\r\n")
            unless $seen{connection};
        for (my $i = 0; $i < @h; $i += 2) {
            $req .= "$h[$i]: $h[$i+1]\r\n";
        }
        if (defined $body && !$seen{'content-length'} && !$seen{'transfer-encoding'}) {
            $req .= "Content-Length: " . length($body) . "\r\n";
        }
        $req .= "\r\n";
    } else {
        $req = "$method $path\r\n";
    }
    $req .= $body if defined $body;
    utf8::encode($req) if utf8::is_utf8($req);
    return $req;
}

sub _normalize_headers_arg {
    my ($h) = @_;
    return [] unless defined $h;
    if (ref $h eq 'HASH') {
        return [ map { my $k = $_; ref $h->{$k} eq 'ARRAY' ? (map { ($k, $_) } @{$h->{$k}}) : ($k, $h->{$k}) } sort keys %$h ];
    }
    if (ref $h eq 'ARRAY') {
        return [ map { ref $_ eq 'ARRAY' ? @$_ : $_ } @$h ];
    }
    return _parse_header_lines($h);
}

sub _connect {
    my ($port, $timeout) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => $timeout)
        or return (undef, "cannot connect to 127.0.0.1:$port: $!");
    binmode $s;
    $s->autoflush(1);
    return ($s);
}

sub _send_all {
    my ($s, $data, $deadline) = @_;
    my $sel = IO::Select->new($s);
    my $off = 0;
    while ($off < length $data) {
        my $left = $deadline - Time::HiRes::time();
        return "timeout while sending the request" if $left <= 0;
        next unless $sel->can_write($left);
        my $n = syswrite($s, $data, length($data) - $off, $off);
        if (!defined $n) {
            next if $!{EINTR} || $!{EAGAIN};
            return "send error: $!";
        }
        $off += $n;
    }
    return undef;
}

# read until EOF (or deadline); returns ($data, $error)
sub _read_all {
    my ($s, $deadline) = @_;
    my $sel = IO::Select->new($s);
    my $buf = '';
    while (1) {
        my $left = $deadline - Time::HiRes::time();
        return ($buf, "timeout while reading the response") if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($s, $buf, 65536, length $buf);
        if (!defined $n) {
            next if $!{EINTR} || $!{EAGAIN};
            return ($buf, undef) if $!{ECONNRESET} && length $buf;
            return ($buf, "read error: $!");
        }
        last if $n == 0;
    }
    return ($buf, undef);
}

# Parse one response from the front of $$bufref. Returns a response hashref
# and removes the consumed bytes, or undef if more data is needed.
# With $eof true, a truncated response is returned with {error}.
sub _parse_response {
    my ($bufref, $eof, $method) = @_;
    my $hend = index($$bufref, "\r\n\r\n");
    my $sep = 4;
    if ($hend < 0) {
        my $alt = index($$bufref, "\n\n");
        if ($alt >= 0) { $hend = $alt; $sep = 2 }
    }
    if ($hend < 0) {
        return undef unless $eof;
        my $raw = $$bufref;
        $$bufref = '';
        return { status => undef, headers => {}, headers_list => [], body => undef, raw => $raw,
                 error => length $raw ? "incomplete response header" : "empty response" };
    }
    my $head = substr($$bufref, 0, $hend);
    my @lines = split /\r?\n/, $head;
    my $status_line = shift @lines // '';
    my %res = (status_line => $status_line, headers => {}, headers_list => []);
    if ($status_line =~ m{^(HTTP/\d\.\d)\s+(\d{3})(?:\s+(.*))?$}) {
        @res{qw(protocol status reason)} = ($1, $2 + 0, $3 // '');
    } else {
        $res{status} = undef;
        $res{error} = "bad status line: $status_line";
    }
    for my $l (@lines) {
        my ($n, $v) = $l =~ /^([^:]+):[ \t]*(.*?)[ \t]*$/ or next;
        push @{ $res{headers_list} }, [$n, $v];
        my $k = lc $n;
        $res{headers}{$k} = exists $res{headers}{$k} ? "$res{headers}{$k}, $v" : $v;
    }
    my $pos = $hend + $sep;
    my $te = lc($res{headers}{'transfer-encoding'} // '');
    my $cl = $res{headers}{'content-length'};
    my $no_body = (defined $method && uc $method eq 'HEAD')
        || (defined $res{status} && ($res{status} == 204 || $res{status} == 304 || $res{status} < 200));
    my $body = '';
    if ($no_body) {
        # nothing
    } elsif ($te =~ /chunked/) {
        my $p = $pos;
        my $complete = 0;
        while (1) {
            my $le = index($$bufref, "\n", $p);
            last if $le < 0;
            my $szline = substr($$bufref, $p, $le - $p);
            $szline =~ s/\r$//;
            $szline =~ s/;.*//;
            unless ($szline =~ /^\s*([0-9a-fA-F]+)\s*$/) {
                $res{error} = "bad chunk size line: '$szline'";
                $complete = 1;
                last;
            }
            my $size = hex $1;
            $p = $le + 1;
            if ($size == 0) {
                # trailers until empty line
                while (1) {
                    my $te2 = index($$bufref, "\n", $p);
                    last if $te2 < 0;
                    my $tl = substr($$bufref, $p, $te2 - $p);
                    $p = $te2 + 1;
                    if ($tl =~ /^\r?$/) { $complete = 1; last }
                }
                last;
            }
            last if length($$bufref) < $p + $size + 1;
            $body .= substr($$bufref, $p, $size);
            $p += $size;
            if (substr($$bufref, $p, 2) eq "\r\n") { $p += 2 }
            elsif (substr($$bufref, $p, 1) eq "\n") { $p += 1 }
            elsif (length($$bufref) < $p + 2) { last }
            else { $res{error} = "missing CRLF after chunk"; $complete = 1; last }
        }
        if (!$complete) {
            return undef unless $eof;
            $res{error} //= "truncated chunked body";
            $p = length $$bufref;
        }
        $pos = $p;
    } elsif (defined $cl && $cl =~ /^\s*(\d+)/) {
        my $len = $1;
        if (length($$bufref) - $pos < $len) {
            return undef unless $eof;
            $res{error} = "truncated body (" . (length($$bufref) - $pos) . " of $len bytes)";
            $len = length($$bufref) - $pos;
        }
        $body = substr($$bufref, $pos, $len);
        $pos += $len;
    } else {
        return undef unless $eof;    # close-delimited
        $body = substr($$bufref, $pos);
        $pos = length $$bufref;
    }
    $res{body} = $body;
    $res{raw} = substr($$bufref, 0, $pos);
    substr($$bufref, 0, $pos, '');
    return \%res;
}

sub _do_request_raw {
    my ($raw, $timeout, $method) = @_;
    my $port = $State{port} or die "no running nginx (http_request outside a block?)\n";
    $timeout ||= $State{timeout} || $DefaultTimeout;
    my $deadline = Time::HiRes::time() + $timeout;
    my ($s, $err) = _connect($port, $timeout);
    return { status => undef, headers => {}, headers_list => [], body => undef, error => $err } unless $s;
    if (my $e = _send_all($s, $raw, $deadline)) {
        # nginx may answer (e.g. 400/413) and close before we are done
        my ($data) = _read_all($s, $deadline);
        close $s;
        if (length $data) {
            my $r = _parse_response(\$data, 1, $method);
            return $r if $r;
        }
        return { status => undef, headers => {}, headers_list => [], body => undef, error => $e };
    }
    my ($data, $rerr) = _read_all($s, $deadline);
    close $s;
    my $copy = $data;
    my $res = _parse_response(\$copy, 1, $method);
    $res->{raw_all} = $data;
    if ($rerr) {
        $res->{error} = $res->{error} ? "$rerr; $res->{error}" : $rerr;
    }
    return $res;
}

sub http_request {
    my ($method, $path, $headers, $body, %opts) = @_;
    $method ||= 'GET';
    $path //= '/';
    my $h = _normalize_headers_arg($headers);
    my $raw = _build_request($method, $path, $opts{protocol}, $h, $body, 0);
    my $res = _do_request_raw($raw, $opts{timeout}, $method);
    _note_request_problem($res, "http_request $method $path", %opts);
    return $res;
}

# One keep-alive connection for many requests: [[method, path, \@headers, body], ...]
# Returns an arrayref of response hashrefs (same shape as http_request).
# Reconnects transparently when nginx closes the connection.
sub http_requests_keepalive {
    my ($list, %opts) = @_;
    my $port = $State{port} or die "no running nginx (http_requests_keepalive outside a block?)\n";
    my $timeout = $opts{timeout} || $State{timeout} || $DefaultTimeout;
    my @out;
    my ($s, $buf);
    my $sel;
    for my $item (@$list) {
        my ($method, $path, $headers, $body) = @$item;
        $method ||= 'GET';
        my $raw = _build_request($method, $path, 'HTTP/1.1', _normalize_headers_arg($headers), $body, 1);
        my $attempts = 0;
      RETRY:
        $attempts++;
        my $deadline = Time::HiRes::time() + $timeout;
        unless ($s) {
            my $err;
            ($s, $err) = _connect($port, $timeout);
            unless ($s) {
                push @out, { status => undef, headers => {}, headers_list => [], body => undef, error => $err };
                next;
            }
            $buf = '';
            $sel = IO::Select->new($s);
        }
        if (my $e = _send_all($s, $raw, $deadline)) {
            close $s; undef $s;
            goto RETRY if $attempts < 2;
            push @out, { status => undef, headers => {}, headers_list => [], body => undef, error => $e };
            next;
        }
        my $res;
        my $eof = 0;
        while (1) {
            $res = _parse_response(\$buf, $eof, $method);
            last if $res;
            my $left = $deadline - Time::HiRes::time();
            if ($left <= 0) {
                $res = { status => undef, headers => {}, headers_list => [], body => undef,
                         error => "timeout while reading the response" };
                last;
            }
            next unless $sel->can_read($left);
            my $n = sysread($s, $buf, 65536, length $buf);
            if (!defined $n) {
                next if $!{EINTR} || $!{EAGAIN};
                $eof = 1;
            } elsif ($n == 0) {
                $eof = 1;
            }
            if ($eof && !length $buf) {
                # server closed an idle keep-alive connection: retry once
                close $s; undef $s;
                goto RETRY if $attempts < 2;
                $res = { status => undef, headers => {}, headers_list => [], body => undef,
                         error => "connection closed without a response" };
                last;
            }
        }
        push @out, $res;
        my $conn = lc($res->{headers}{connection} // '');
        if (!$s || $eof || $conn =~ /close/ || !defined $res->{status}
            || (($res->{protocol} // '') eq 'HTTP/1.0' && $conn !~ /keep-alive/)) {
            close $s if $s;
            undef $s;
        }
    }
    close $s if $s;
    for my $i (0 .. $#out) {
        _note_request_problem($out[$i], "http_requests_keepalive, request " . ($i + 1) . " ($list->[$i][0] $list->[$i][1])", %opts);
    }
    return \@out;
}

sub _block_request {
    my ($block) = @_;
    if (_has($block, 'raw_request')) {
        my $raw = _sec($block, 'raw_request');
        $raw = join '', @$raw if ref $raw eq 'ARRAY';
        $raw = _expand($raw);
        utf8::encode($raw) if utf8::is_utf8($raw);
        my ($method) = $raw =~ /^(\S+)/;
        return ($raw, $method);
    }
    my $req = _sec($block, 'request');
    $req = 'GET /' unless defined $req && $req =~ /\S/;
    $req = _expand($req);
    my ($line, $rest) = split /\n/, $req, 2;
    $line =~ s/\r$//;
    $line =~ s/^\s+|\s+$//g;
    my ($method, $path, $proto) = split /\s+/, $line, 3;
    $path //= '/';
    my $body;
    if (defined $rest && length $rest) { $body = $rest; chomp $body }
    if (_has($block, 'request_body')) {
        $body = _sec($block, 'request_body');
        $body = _expand($body);
        chomp $body unless _has($block, 'request_body_keep_newline');
    }
    my $mh = _sec($block, 'more_headers');
    $mh = _expand($mh) if defined $mh && !ref $mh;
    my $headers = _parse_header_lines($mh);
    return (_build_request($method, $path, $proto, $headers, $body, 0), $method);
}

sub _run_request_checks {
    my ($block) = @_;
    my $name = _name($block);
    my ($raw, $method) = _block_request($block);
    my $res = _do_request_raw($raw, $State{timeout}, $method);
    $State{response} = $res;

    if ($res->{error}) {
        Test::More::diag("$name - request problem: $res->{error}");
    }
    _note_request_problem($res, "the block's request");

    my $code = _sec($block, 'error_code');
    $code = 200 unless defined $code && $code =~ /\S/;
    $code =~ s/\s+//g;
    Test::More::is($res->{status}, $code, "$name - status code ok")
        or Test::More::diag("raw response (first 2000 bytes):\n"
                            . substr($res->{raw_all} // $res->{raw} // '', 0, 2000));

    if (_has($block, 'response_headers')) {
        my $spec = _sec($block, 'response_headers');
        my @items;
        if (ref $spec eq 'HASH') {
            @items = map { [$_, $spec->{$_}] } sort keys %$spec;
        } elsif (ref $spec eq 'ARRAY') {
            @items = map { ref $_ ? $_ : [$_] } @$spec;
        } else {
            for my $line (split /\n/, _expand($spec)) {
                $line =~ s/\s+\z//;
                next unless length $line;
                if ($line =~ /^!\s*(\S+?):?$/) { push @items, ["!$1"]; next }
                my ($n, $v) = $line =~ /^([^:]+?):[ \t]*(.*)$/ or die "bad response_headers line '$line'\n";
                push @items, [$n, $v];
            }
        }
        for my $it (@items) {
            my ($n, $v) = @$it;
            if ($n =~ /^!(.*)/) {
                my $h = $1;
                Test::More::ok(!exists $res->{headers}{lc $h}, "$name - header $h absent")
                    or Test::More::diag("got $h: $res->{headers}{lc $h}");
            } elsif (!defined $v) {
                Test::More::ok(!exists $res->{headers}{lc $n}, "$name - header $n absent");
            } else {
                Test::More::is($res->{headers}{lc $n}, $v, "$name - header $n ok");
            }
        }
    }

    if (_has($block, 'response_headers_like')) {
        for my $line (split /\n/, _expand(_sec($block, 'response_headers_like'))) {
            $line =~ s/\s+\z//;
            next unless length $line;
            my ($n, $v) = $line =~ /^([^:]+?):[ \t]*(.*)$/ or die "bad response_headers_like line '$line'\n";
            Test::More::like($res->{headers}{lc $n} // '', qr/$v/, "$name - header $n like /$v/");
        }
    }

    if (_has($block, 'response_body')) {
        my $want = _sec($block, 'response_body');
        $want = _expand($want) unless ref $want;
        Test::More::is($res->{body}, $want, "$name - response body ok");
    }

    if (_has($block, 'response_body_like')) {
        my $pat = _sec($block, 'response_body_like');
        unless (ref $pat eq 'Regexp') {
            $pat = _expand($pat);
            chomp $pat;
            $pat = qr/$pat/s;
        }
        Test::More::like($res->{body} // '', $pat, "$name - response body like");
    }
}

sub _run_check_eval {
    my ($block) = @_;
    return unless _has($block, 'check_eval');
    my $name = _name($block);
    my $code = _sec($block, 'check_eval');
    my $sub;
    if (ref $code eq 'CODE') {
        $sub = $code;
    } else {
        my $line = 1;
        $sub = eval "package main; no strict 'vars'; sub { my (\$block, \$res) = \@_;\n#line $line \"check_eval of $name\"\n$code\n}";
        unless ($sub) {
            Test::More::fail("$name - check_eval compiles");
            Test::More::diag($@);
            return;
        }
    }
    my $before = Test::More->builder->current_test;
    my $ok = eval { $sub->($block, $State{response}); 1 };
    unless ($ok) {
        Test::More::fail("$name - check_eval died");
        Test::More::diag($@);
        return;
    }
    # A check_eval that asserts nothing (a loop over an empty list, a return
    # before its checks) would otherwise pass silently.
    if (Test::More->builder->current_test == $before) {
        Test::More::fail("$name - check_eval ran at least one assertion");
        Test::More::diag("check_eval returned without running a single test");
    }
}

# Requests that timed out or whose response was cut short fail the block, in
# check_eval as in the block's own request, unless the caller said it expects
# that (option `incomplete_ok`).
sub _note_request_problem {
    my ($res, $what, %opts) = @_;
    return unless $res->{error} && !$opts{incomplete_ok};
    return unless $res->{error} =~ /timeout|truncated|incomplete|missing CRLF|bad chunk/;
    push @{ $State{request_problems} }, "$what: $res->{error}";
}

sub _check_requests_complete {
    my ($block) = @_;
    my @problems = @{ $State{request_problems} || [] };
    return unless @problems;
    Test::More::fail(_name($block) . " - every request got a complete response in time");
    Test::More::diag(join "\n", @problems[0 .. ($#problems > 9 ? 9 : $#problems)]);
}

# --------------------------------------------------------------------------
# cleanup on interruption

sub _emergency_stop {
    if ($State{pid}) {
        kill 'KILL', -$State{pid};
        kill 'KILL', $State{pid};
        waitpid($State{pid}, 0);
        delete $State{pid};
    }
}

$SIG{INT}  = sub { _emergency_stop(); exit 130 };
$SIG{TERM} = sub { _emergency_stop(); exit 143 };

END {
    my $st = $?;
    _emergency_stop();
    $? = $st;
}

1;

__END__

=head1 NAME

Test::MigrationNginx - Test::Nginx::Socket-like harness for the migration module

=head1 SEE ALSO

t/README.md ("The harness")

=cut
