# strategy: user is nginx's own split_clients (docs/decision.md, the hash):
# with an empty salt a user is on new iff
#     split_clients "$http_x_user_id" $v { P% new; * old; }
# says new, and with hash_salt S iff split_clients "S$http_x_user_id" does.
# Each block asks one nginx for both answers, for thousands of user ids, and
# every single id must agree.
use lib 't/lib';
use Test::MigrationNginx;

# The ids of t/data/split-clients-bounds.tsv: [salt, percentage_bp, position, hash, id].
sub bound_cases {
    my $file = ($ENV{TEST_NGINX_REPO_DIR} // '.') . '/t/data/split-clients-bounds.tsv';
    open my $fh, '<', $file or die "$file: $!";
    my @cases = map { chomp; [split /\t/] } grep { !/^#/ && /\S/ } <$fh>;
    return @cases;
}

sub bound_service { my ($salt, $bp) = @_; ($salt eq '-' ? 'p' : $salt) . $bp }

# One service, one split_clients and one location per (salt, percentage).
sub bound_percentages {
    my %seen;
    return grep { !$seen{"$_->[0] $_->[1]"}++ } main::bound_cases();
}

sub percent_text { my ($bp) = @_; my $p = sprintf '%d.%02d', int($bp / 100), $bp % 100; $p =~ s/\.?0+$//; $p }

sub bounds_http_config {
    my $out = '    migration_config $TEST_NGINX_HTML_DIR/m.yaml;' . "\n";
    for my $c (bound_percentages()) {
        my ($salt, $bp) = @$c;
        next if $bp == 0;    # "0%" in split_clients is a catch-all, not nobody
        my $key = ($salt eq '-' ? '' : $salt) . '$http_x_user_id';
        $out .= sprintf qq{    split_clients "%s" \$split_%s { %s%% new; * old; }\n}, $key, bound_service($salt, $bp), percent_text($bp);
    }
    return $out;
}

sub bounds_config {
    my $out = '';
    for my $c (bound_percentages()) {
        my $name = bound_service(@$c[0, 1]);
        my $split = $c->[1] == 0 ? '-' : "\$split_$name";
        $out .= qq{    location = /b/$name { migration on; migration_service $name; return 200 "\$migration_target \$migration_rule $split\\n"; }\n};
    }
    return $out;
}

sub bounds_yaml {
    my $out = "services:\n";
    for my $c (bound_percentages()) {
        my ($salt, $bp) = @$c;
        my $name = bound_service($salt, $bp);
        my $salted = $salt eq '-' ? '' : ", hash_salt: \"$salt\"";
        $out .= "  - name: $name\n    old_host: $name.example\n    old_backend: old:80\n    new_host: $name.example\n"
              . "    new_backend: new:80\n    migration: {strategy: user, percentage: " . percent_text($bp) . "$salted}\n";
    }
    return $out;
}

plan tests => blocks() * 2;
run_tests();

# Deterministic user ids: "user-N", plus ids of every length 1..64 made of mixed
# characters (letters, digits, punctuation, inner spaces, UTF-8 and raw 8-bit
# bytes), so that every tail length of the hash (len % 4) is exercised.
sub user_ids {
    my @ids = map { "user-$_" } 1 .. 1500;
    my @chars = ('a' .. 'z', 'A' .. 'Z', '0' .. '9', split(//, q{._-@+=:/~!$%&*'()[]{}|?,;}), ' ',
                 "\xc3\xa9", "\xe2\x82\xac", "\xff", "\x80");
    my $x = 20261124;    # a small LCG: the same ids on every run
    my $rand = sub { $x = ($x * 1103515245 + 12345) % 2147483648; $x };
    my %seen = map { $_ => 1 } @ids;
    while (@ids < 2300) {
        my $len = 1 + $rand->() % 64;
        my $id = join '', map { $chars[$rand->() % @chars] } 1 .. $len;
        $id =~ s/^ +| +$//g;    # nginx strips surrounding blanks of a header value
        next if $id eq '' || $seen{$id}++;
        push @ids, $id;
    }
    push @ids, 'alice', 'bob', 'Alice', 'ALICE', '0', '00', 'x' x 1000, '12345678901234567890';
    return @ids;
}

# For each location, sends every id and compares $migration_target with the
# split_clients variable the location returns after it; checks the rule and
# that the size of the new cohort is within 4 sigma of p.
sub parity {
    my ($location, $p) = @_;
    my @ids = user_ids();
    my $res = http_requests_keepalive([ map { ['GET', $location, ['X-User-ID' => $_]] } @ids ]);
    my ($bad, $new) = (0, 0);
    for my $i (0 .. $#ids) {
        my $body = $res->[$i]{body} // '';
        my ($target, $rule, $split) = $body =~ /^(\S*) (\S*) (\S*)\n\z/;
        if (!defined $target || $target eq '' || $target ne $split || $rule ne 'user_hash') {
            my $shown = $ids[$i];
            $shown =~ s/([^\x21-\x7e])/sprintf '\\x%02x', ord $1/ge;
            diag("$location: user id \"$shown\": module says '" . ($target // '?') . "' (rule "
                 . ($rule // '?') . "), split_clients says '" . ($split // '?') . "'; status "
                 . ($res->[$i]{status} // 'none') . ($res->[$i]{error} ? ", $res->[$i]{error}" : ''))
                if $bad < 20;
            $bad++;
        }
        $new++ if ($target // '') eq 'new';
    }
    my $n = @ids;
    is($bad, 0, "$location: all $n user ids agree with split_clients");
    my $sigma = sqrt($n * $p * (1 - $p));
    my $mean = $n * $p;
    ok(abs($new - $mean) <= 4 * $sigma,
       sprintf("%s: new cohort %d of %d is within 4 sigma of %.2f%% (%.0f +- %.0f)",
               $location, $new, $n, 100 * $p, $mean, 4 * $sigma));
    return $res;
}

__DATA__

=== TEST 1: strategy user agrees with split_clients for every user at 20 %, 50 % and 33.33 %
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    split_clients "$http_x_user_id" $split20 { 20% new; * old; }
    split_clients "$http_x_user_id" $split50 { 50% new; * old; }
    split_clients "$http_x_user_id" $split3333 { 33.33% new; * old; }
--- config
    location = /p20 {
        migration on;
        migration_service p20;
        return 200 "$migration_target $migration_rule $split20\n";
    }
    location = /p50 {
        migration on;
        migration_service p50;
        return 200 "$migration_target $migration_rule $split50\n";
    }
    location = /p3333 {
        migration on;
        migration_service p3333;
        return 200 "$migration_target $migration_rule $split3333\n";
    }
--- user_files
>>> m.yaml
services:
  - name: p20
    old_host: p20.example
    old_backend: old:80
    new_host: p20.example
    new_backend: new:80
    migration: {strategy: user, percentage: 20}
  - name: p50
    old_host: p50.example
    old_backend: old:80
    new_host: p50.example
    new_backend: new:80
    migration: {strategy: user, percentage: 50}
  - name: p3333
    old_host: p3333.example
    old_backend: old:80
    new_host: p3333.example
    new_backend: new:80
    migration: {strategy: user, percentage: 33.33}
--- request
GET /p20
--- more_headers
X-User-ID: user-1
--- response_body_like
^(new|old) user_hash \1$
--- timeout: 60
--- check_eval
my $r20 = main::parity('/p20', 0.20);
my $r50 = main::parity('/p50', 0.50);
my $r33 = main::parity('/p3333', 0.3333);
# raising the percentage only moves users from old to new (same salt)
my @moved_back = grep { $r20->[$_]{body} =~ /^new/ && $r33->[$_]{body} !~ /^new/
                        || $r33->[$_]{body} =~ /^new/ && $r50->[$_]{body} !~ /^new/ } 0 .. $#$r20;
is(scalar(@moved_back), 0, "every user on new at 20 % is on new at 33.33 %, and at 50 %");



=== TEST 2: with hash_salt the split is split_clients on salt + user id
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    split_clients "s1$http_x_user_id" $split_salted { 30% new; * old; }
    split_clients "$http_x_user_id" $split_unsalted { 30% new; * old; }
--- config
    location = /salted {
        migration on;
        migration_service salted;
        return 200 "$migration_target $migration_rule $split_salted\n";
    }
    location = /salted-vs-unsalted {
        migration on;
        migration_service salted;
        return 200 "$migration_target $migration_rule $split_unsalted\n";
    }
--- user_files
>>> m.yaml
services:
  - name: salted
    old_host: s.example
    old_backend: old:80
    new_host: s.example
    new_backend: new:80
    migration:
      strategy: user
      percentage: 30
      hash_salt: "s1"
--- request
GET /salted
--- more_headers
X-User-ID: user-1
--- response_body_like
^(new|old) user_hash \1$
--- timeout: 60
--- check_eval
main::parity('/salted', 0.30);
# the salt really changes the cohort: against the unsalted split about
# 2 * 0.3 * 0.7 = 42 % of the ids disagree
my @ids = main::user_ids();
my $cmp = http_requests_keepalive([ map { ['GET', '/salted-vs-unsalted', ['X-User-ID' => $_]] } @ids ]);
my $differ = grep { my ($t, undef, $s) = split ' ', $_->{body} // ''; $t ne $s } @$cmp;
cmp_ok($differ, '>', 0.3 * @ids, "salted and unsalted cohorts differ ($differ of " . scalar(@ids) . " ids)");



=== TEST 3: the same salt puts a user on the same side in every service; user_key cookie hashes the same id
--- http_config
    migration_config $TEST_NGINX_HTML_DIR/m.yaml;
    split_clients "team$cookie_uid" $split_cookie { 40% new; * old; }
--- config
    location = /a {
        migration_service a;
        return 200 "$migration_target $migration_rule $split_cookie\n";
    }
    location = /b {
        migration_service b;
        return 200 "$migration_target $migration_rule $split_cookie\n";
    }
--- user_files
>>> m.yaml
services:
  - name: a
    old_host: a.example
    old_backend: old:80
    new_host: a.example
    new_backend: new:80
    migration: {strategy: user, percentage: 40, hash_salt: team, user_key: "cookie:uid"}
  - name: b
    old_host: b.example
    old_backend: old:80
    new_host: b.example
    new_backend: new:80
    migration: {strategy: user, percentage: 40, hash_salt: team, user_key: "cookie:uid"}
--- request
GET /a
--- more_headers
Cookie: uid=user-1
--- response_body_like
^(new|old) user_hash \1$
--- timeout: 60
--- check_eval
my @ids = map { "user-$_" } 1 .. 1000;
for my $loc ('/a', '/b') {
    my $res = http_requests_keepalive([ map { ['GET', $loc, [Cookie => "x=1; uid=$_"]] } @ids ]);
    my @bad = grep { my ($t, $r, $s) = split ' ', $res->[$_]{body} // ''; $r ne 'user_hash' || $t ne $s } 0 .. $#ids;
    is(scalar(@bad), 0, "$loc: cookie user ids agree with split_clients \"team\$cookie_uid\"")
        or diag("first disagreeing: " . join(', ', map { "$ids[$_] => $res->[$_]{body}" } @bad[0 .. ($#bad < 4 ? $#bad : 4)]));
}



=== TEST 4: user ids whose hash is the bound - 1, the bound and the bound + 1 fall on nginx's side of it
--- http_config eval
main::bounds_http_config()
--- config eval
main::bounds_config()
--- user_files eval
[[ 'm.yaml', main::bounds_yaml() ]]
--- request
GET /b/p2000
--- more_headers
X-User-ID: u0000165QxTL
--- response_body
new user_hash new
--- check_eval
# t/data/split-clients-bounds.tsv (scripts/find-split-bound-keys.py): for each
# percentage, ids hashing to the last value on new, the first on old and the
# next; a threshold off by a single hash value puts one of them on the wrong side.
my ($checked, %sides) = (0);
for my $case (main::bound_cases()) {
    my ($salt, $bp, $position, $hash, $id) = @$case;
    my $name = main::bound_service($salt, $bp);
    my $body = http_request('GET', "/b/$name", ['X-User-ID' => $id])->{body} // '';
    my ($target, $rule, $split) = $body =~ /^(\S+) (\S+) (\S+)\n\z/ or do { fail("$name $id: '$body'"); next };
    # The side the position says, computed from the bound alone: below it is new.
    my $expected = $position eq 'below' ? 'new' : 'old';
    if ($bp == 10000) {
        # 100 % is everyone (docs/decision.md): the one hash split_clients leaves out goes new too.
        is("$target $rule", 'new user_hash', "100 %: hash $hash ($position) goes new");
        is($split, $position eq 'at' ? 'old' : 'new', "100 %: split_clients leaves out only the last hash value, $hash: " . ($position eq 'at' ? 'old' : 'new'));
        next;
    }
    my $what = "$bp bp" . ($salt ne '-' ? " salt $salt" : '') . ", id $id, hash $hash ($position the bound)";
    is("$target $rule", "$expected user_hash", "$what: the module says $expected");
    is($split, $expected, "$what: split_clients says $expected") unless $split eq '-';
    $checked++;
}
cmp_ok($checked, '>=', 20, "$checked ids checked on both sides of 8 bounds");
