package Test::MigrationHelpers;

# Perl helpers that more than one t/*.t file needs, kept here once instead of
# copied into each file. A test file imports the ones it uses, after the
# harness:
#
#   use lib 't/lib';
#   use Test::MigrationNginx;
#   use Test::MigrationHelpers qw(murmur2 write_file status);
#
# They land in package main, so `main::status()` and friends work from the
# blocks' check_eval code as before.

use strict;
use warnings;

use Exporter 'import';
use JSON::PP ();

our @EXPORT_OK = qw(mul32 murmur2 write_file touch status fallback nginx_run stalling_new);

# nginx's ngx_murmur_hash2, in 32-bit arithmetic: the oracle for splits
# (split_clients, user_hash, ip_hash).
sub mul32 {
    my ($a, $b) = @_;
    return (($a * ($b & 0xffff)) + ((($a * ($b >> 16)) & 0xffff) << 16)) & 0xffffffff;
}

sub murmur2 {
    my @d = unpack 'C*', shift;
    my $len = @d;
    my $h = $len & 0xffffffff;
    my $i = 0;
    while ($len - $i >= 4) {
        my $k = $d[$i] | ($d[$i + 1] << 8) | ($d[$i + 2] << 16) | ($d[$i + 3] << 24);
        $k = mul32($k, 0x5bd1e995);
        $k ^= $k >> 24;
        $k = mul32($k, 0x5bd1e995);
        $h = mul32($h, 0x5bd1e995);
        $h ^= $k;
        $i += 4;
    }
    my $rest = $len - $i;
    if ($rest >= 3) { $h ^= $d[$i + 2] << 16 }
    if ($rest >= 2) { $h ^= $d[$i + 1] << 8 }
    if ($rest >= 1) { $h ^= $d[$i]; $h = mul32($h, 0x5bd1e995) }
    $h ^= $h >> 13;
    $h = mul32($h, 0x5bd1e995);
    $h ^= $h >> 15;
    return $h;
}

# write_file($path, $text): written next to the file and renamed over it, as
# editors and kubectl do: a reader (a watch= worker) never sees half a file.
sub write_file {
    my ($path, $text) = @_;
    open my $fh, '>', "$path.tmp" or die $!;
    print $fh $text;
    close $fh;
    rename "$path.tmp", $path or die $!;
}

# touch($name, $on): creates html/$name (empty) when $on, removes it
# otherwise: a flag a block's `if (-f ...)` reads (a backend that fails).
sub touch {
    my ($name, $on) = @_;
    my $f = Test::MigrationNginx::html_dir() . "/$name";
    if ($on) { open my $fh, '>', $f or die $!; close $fh } else { unlink $f }
}

# The test server's /status (a `location = /status { migration_status; }`),
# decoded.
sub status { JSON::PP::decode_json(Test::MigrationNginx::http_request('GET', '/status')->{body}) }

# The first service's fallback breaker, as /status shows it.
sub fallback { status()->{services}[0]{fallback} }

# nginx_run(@args): runs the binary under test on the block's configuration
# as an operator would (`nginx_run('-t')`, `nginx_run('-s', 'reload')`);
# returns its exit code and what it printed (stdout and stderr).
sub nginx_run {
    my (@args) = @_;
    my $cmd = join ' ', map { "'$_'" } Test::MigrationNginx::nginx_binary(), '-p', Test::MigrationNginx::servroot() . '/',
        '-e', 'logs/error.log', '-c', 'conf/nginx.conf', @args;
    my $text = `$cmd 2>&1`;
    return ($? >> 8, $text);
}


# stalling_new($port): a server block for nginx.conf, a new cluster whose
# responses break off: the header and the body's first bytes at once, then a
# byte a second (`limit_rate`) of the 2,000 it announces.
sub stalling_new {
    my ($port) = @_;
    my $body = 'x' x 2000;
    return <<"CONF";
    server {
        listen 127.0.0.1:$port;
        location / { limit_rate_after 500; limit_rate 1; return 200 "$body"; }
    }
CONF
}

1;
