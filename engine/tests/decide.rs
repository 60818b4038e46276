//! The decision order (docs/decision.md) exercised through the public API only:
//! YAML in, `decide()` out.

use std::cell::Cell;

mod common;
use common::{admits, nginx_murmur2};
use migration_engine::{decide, load_str, CompiledConfig, Decision, OwnedRequest, Rule, ServiceChoice, Target};

// ---------------------------------------------------------------------------
// helpers

/// One service of the `services:` list. `name` also gives its default host
/// (`NAME.example`, through `old_host`); `body` is YAML at the service's own
/// indentation (each line gets four spaces prepended).
fn service(name: &str, body: &str) -> String {
    let mut s = format!(
        "  - name: {name}\n    old_host: {name}.example\n    old_backend: {name}-old.svc:8078\n    \
         new_host: {name}.kong.example\n    new_backend: {name}.kong.example:443\n"
    );
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        s.push_str("    ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

fn load(services: &[String]) -> CompiledConfig {
    let text = format!("services:\n{}", services.concat());
    load_str("test.yaml", &text).unwrap_or_else(|e| panic!("{e}\n--- the document:\n{text}"))
}

/// A configuration with the single service `api` (host `api.example`).
fn one(body: &str) -> CompiledConfig {
    load(&[service("api", body)])
}

/// A request for `api.example`.
fn req() -> OwnedRequest {
    OwnedRequest::new("api.example")
}

/// Decides with a draw that must not be called.
#[track_caller]
fn run(config: &CompiledConfig, request: &OwnedRequest) -> Decision {
    decide(config, ServiceChoice::Auto, request, &mut || -> u32 { panic!("the random draw must not be used here") })
}

/// Decides with a fixed draw, returning the decision and how often the draw ran.
fn run_drawing(config: &CompiledConfig, request: &OwnedRequest, value: u32) -> (Decision, u32) {
    let calls = Cell::new(0);
    let d = decide(config, ServiceChoice::Auto, request, &mut || {
        calls.set(calls.get() + 1);
        value
    });
    (d, calls.get())
}

#[track_caller]
fn assert_decision(d: Decision, target: Target, rule: Rule) {
    assert_eq!((d.target, d.rule), (Some(target), rule), "{d:?}");
}

/// xorshift32: a deterministic stand-in for the per-request random source.
struct XorShift(u32);

impl XorShift {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

/// The split_clients side of a user id: `hash < percent * 0xffffffff / 10000`
/// as ngx_http_split_clients_module.c computes it, and everyone at 100 %.
fn expected_side(salt: &str, key: &str, percentage_bp: u32) -> Target {
    if admits(percentage_bp, nginx_murmur2(format!("{salt}{key}").as_bytes())) {
        Target::New
    } else {
        Target::Old
    }
}

#[test]
fn the_tests_murmur2_matches_nginx_vectors() {
    for (data, hash) in
        [(&b""[..], 0), (b"a", 2456313694), (b"ab", 446775395), (b"abc", 324500635), (b"abcd", 646393889)]
    {
        assert_eq!(nginx_murmur2(data), hash);
    }
}

/// t/data/split-clients-bounds.tsv (scripts/find-split-bound-keys.py): ids whose
/// hash is a split_clients bound minus one, the bound, and the bound plus one.
/// t/06 checks the same ids against nginx's own split_clients.
const BOUNDS: &str = include_str!("../../t/data/split-clients-bounds.tsv");

#[test]
fn ids_on_either_side_of_each_bound_fall_where_split_clients_puts_them() {
    let mut checked = 0;
    for line in BOUNDS.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let (salt, bp, position, hash, id) = (f[0].trim_start_matches('-'), f[1], f[2], f[3], f[4]);
        assert_eq!(nginx_murmur2(format!("{salt}{id}").as_bytes()).to_string(), hash, "{line}");
        let percentage = format!("{}.{:02}", bp.parse::<u32>().unwrap() / 100, bp.parse::<u32>().unwrap() % 100);
        let c = one(&format!("migration: {{strategy: user, percentage: {percentage}, hash_salt: '{salt}'}}"));
        let expected = match (position, bp) {
            (_, "10000") | ("below", _) => Target::New,
            _ => Target::Old,
        };
        assert_decision(run(&c, &req().header("X-User-ID", id)), expected, Rule::UserHash);
        checked += 1;
    }
    assert_eq!(checked, 25);
}

// ---------------------------------------------------------------------------
// 1. service selection

#[test]
fn no_service_matched_gives_rule_none_and_no_target() {
    let c = one("migration: {percentage: 100}");
    for host in ["other.example", "", "api.example.org", "xapi.example", "example"] {
        let d = run(&c, &OwnedRequest::new(host).header("X-User-ID", "alice").client("10.0.0.1"));
        assert_eq!(d, Decision::NO_SERVICE, "host {host:?}");
        assert_eq!(d.target, None);
        assert_eq!(d.rule, Rule::None);
        assert_eq!(d.service, None);
    }
}

#[test]
fn empty_services_list_matches_nothing() {
    let c = load_str("t.yaml", "services: []\n").unwrap();
    assert_eq!(run(&c, &req()), Decision::NO_SERVICE);
}

#[test]
fn host_matching_ignores_case_port_and_trailing_dot() {
    let c = load(&[service("zero", ""), service("api", "hosts: [api.example, Second.Example]")]);
    for host in [
        "api.example",
        "API.Example",
        "api.example:8080",
        "api.example.",
        "Api.Example.:443",
        "second.example",
        "SECOND.EXAMPLE:80",
    ] {
        let d = run(&c, &OwnedRequest::new(host));
        assert_eq!(d.service, Some(1), "host {host:?}");
        assert_decision(d, Target::Old, Rule::Weight);
    }
    assert_eq!(run(&c, &OwnedRequest::new("zero.example")).service, Some(0));
    assert_eq!(run(&c, &OwnedRequest::new("api.example..")).service, None);
}

#[test]
fn wildcard_matches_subdomains_of_any_depth_but_not_the_bare_suffix() {
    let c = load(&[service("wild", "hosts: ['*.example.com']")]);
    for host in ["a.example.com", "a.b.c.example.com", "A.EXAMPLE.COM.:8443"] {
        assert_eq!(run(&c, &OwnedRequest::new(host)).service, Some(0), "host {host:?}");
    }
    for host in ["example.com", "example.com.", "notexample.com", "a.example.com.org", "com"] {
        assert_eq!(run(&c, &OwnedRequest::new(host)), Decision::NO_SERVICE, "host {host:?}");
    }
}

#[test]
fn exact_host_beats_wildcard_and_longest_wildcard_wins() {
    let c = load(&[
        service("short", "hosts: ['*.example.com']"),
        service("long", "hosts: ['*.b.example.com']"),
        service("exact", "hosts: [x.b.example.com, example.com]"),
    ]);
    let cases = [
        ("a.example.com", Some(0)),
        ("b.example.com", Some(0)),
        ("y.b.example.com", Some(1)),
        ("deep.y.b.example.com", Some(1)),
        ("x.b.example.com", Some(2)),
        ("X.B.Example.COM.", Some(2)),
        ("z.x.b.example.com", Some(1)),
        ("example.com", Some(2)),
        ("example.org", None),
    ];
    for (host, expected) in cases {
        assert_eq!(run(&c, &OwnedRequest::new(host)).service, expected, "host {host:?}");
    }
}

#[test]
fn named_service_ignores_host() {
    let c = load(&[
        service("a", "migration: {percentage: 0}"),
        service("b", "migration: {percentage: 100, strategy: user}"),
    ]);
    let request = OwnedRequest::new("a.example").header("X-User-ID", "alice");
    let named = decide(&c, ServiceChoice::Named("b"), &request, &mut || unreachable!());
    assert_eq!(named.service, Some(1));
    assert_decision(named, Target::New, Rule::UserHash);
    let by_host = run(&c, &request);
    assert_eq!(by_host.service, Some(0));
    assert_decision(by_host, Target::Old, Rule::Weight);
    // A Host that matches nothing does not matter either.
    let nowhere = OwnedRequest::new("unknown.example").header("X-User-ID", "alice");
    assert_eq!(decide(&c, ServiceChoice::Named("b"), &nowhere, &mut || unreachable!()).service, Some(1));
    // An unknown name is no service.
    assert_eq!(decide(&c, ServiceChoice::Named("zzz"), &request, &mut || unreachable!()), Decision::NO_SERVICE);
    assert_eq!(decide(&c, ServiceChoice::Named("B"), &request, &mut || unreachable!()), Decision::NO_SERVICE);
}

// ---------------------------------------------------------------------------
// 2. the rollback switch

#[test]
fn disabled_sends_old_even_when_a_header_rule_would_match() {
    let c = one("migration: {enabled: false, strategy: user, percentage: 100}
canary:
  header_rules:
    - {header: X-Migration-Target, value: new, target: new_cluster}
  ip_rules:
    - {cidr: 0.0.0.0/0, target: new_cluster}
  user_rules:
    - {users: [alice], target: new_cluster}");
    let request = req().header("X-Migration-Target", "new").header("X-User-ID", "alice").client("10.0.0.1");
    let d = run(&c, &request);
    assert_eq!(d.service, Some(0));
    assert_decision(d, Target::Old, Rule::Disabled);
}

// ---------------------------------------------------------------------------
// 3. header rules

#[test]
fn header_value_is_case_sensitive_and_header_name_is_not() {
    let c = one("canary:\n  header_rules:\n    - {header: X-Canary, value: On, target: new_cluster}");
    for name in ["X-Canary", "x-canary", "X-CANARY"] {
        assert_decision(run(&c, &req().header(name, "On")), Target::New, Rule::Header);
    }
    for value in ["on", "ON", "On ", " On", "Onn", ""] {
        assert_decision(run(&c, &req().header("X-Canary", value)), Target::Old, Rule::Weight);
    }
    assert_decision(run(&c, &req().header("X-Canary-2", "On")), Target::Old, Rule::Weight);
}

#[test]
fn header_values_list_matches_any_listed_value() {
    let few = one("canary:\n  header_rules:\n    - {header: X-Env, values: [beta, gamma], target: new}");
    let many_values: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    let many = one(&format!(
        "canary:\n  header_rules:\n    - {{header: X-Env, values: [{}], target: new}}",
        many_values.join(", ")
    ));
    assert_decision(run(&few, &req().header("X-Env", "beta")), Target::New, Rule::Header);
    assert_decision(run(&few, &req().header("x-env", "gamma")), Target::New, Rule::Header);
    assert_decision(run(&few, &req().header("X-Env", "Beta")), Target::Old, Rule::Weight);
    assert_decision(run(&few, &req().header("X-Env", "delta")), Target::Old, Rule::Weight);
    for v in &many_values {
        assert_decision(run(&many, &req().header("X-Env", v)), Target::New, Rule::Header);
    }
    assert_decision(run(&many, &req().header("X-Env", "v20")), Target::Old, Rule::Weight);
    assert_decision(run(&many, &req().header("X-Env", "V1")), Target::Old, Rule::Weight);
}

#[test]
fn header_pattern_is_a_regex_search() {
    let c = one("canary:\n  header_rules:\n    - {header: User-Agent, pattern: 'Canary/[0-9]+', target: new}");
    assert_decision(run(&c, &req().header("User-Agent", "Canary/2")), Target::New, Rule::Header);
    assert_decision(run(&c, &req().header("User-Agent", "Mozilla/5.0 Canary/17 (X11)")), Target::New, Rule::Header);
    assert_decision(run(&c, &req().header("User-Agent", "Canary/x")), Target::Old, Rule::Weight);
    assert_decision(run(&c, &req().header("User-Agent", "canary/2")), Target::Old, Rule::Weight);
    assert_decision(run(&c, &req()), Target::Old, Rule::Weight);
    let anchored = one("canary:\n  header_rules:\n    - {header: X-V, pattern: '^v2$', target: new}");
    assert_decision(run(&anchored, &req().header("X-V", "v2")), Target::New, Rule::Header);
    assert_decision(run(&anchored, &req().header("X-V", "v22")), Target::Old, Rule::Weight);
}

#[test]
fn header_pattern_searches_non_utf8_values() {
    let c = one("canary:\n  header_rules:\n    - {header: X-Tag, pattern: beta, target: new}");
    assert_decision(run(&c, &req().header("X-Tag", b"\xff\xfebeta\x80")), Target::New, Rule::Header);
    assert_decision(run(&c, &req().header("X-Tag", b"\xff\xfe\x80")), Target::Old, Rule::Weight);
    // A pattern on raw bytes.
    let raw = one("canary:\n  header_rules:\n    - {header: X-Tag, pattern: '(?-u:\\xff)', target: new}");
    assert_decision(run(&raw, &req().header("X-Tag", b"a\xffb")), Target::New, Rule::Header);
    // U+00FF is C3 BF in UTF-8, not the byte FF.
    assert_decision(run(&raw, &req().header("X-Tag", "ÿ")), Target::Old, Rule::Weight);
    // As in nginx's PCRE (no UTF flag), `.` is any byte: a value that is not
    // UTF-8 at all still matches.
    let any = one("canary:\n  header_rules:\n    - {header: X-Tag, pattern: '^.+$', target: new}");
    assert_decision(run(&any, &req().header("X-Tag", b"\xc3\x28")), Target::New, Rule::Header);
    assert_decision(run(&any, &req().header("X-Tag", b"caf\xe9")), Target::New, Rule::Header);
    assert_decision(run(&any, &req().header("X-Tag", b"")), Target::Old, Rule::Weight);
}

#[test]
fn header_present_true_matches_any_value_even_empty() {
    let c = one("canary:\n  header_rules:\n    - {header: X-Debug, present: true, target: new}");
    assert_decision(run(&c, &req().header("X-Debug", "1")), Target::New, Rule::Header);
    assert_decision(run(&c, &req().header("X-Debug", "")), Target::New, Rule::Header);
    assert_decision(run(&c, &req().header("X-Other", "1")), Target::Old, Rule::Weight);
    assert_decision(run(&c, &req()), Target::Old, Rule::Weight);
}

#[test]
fn header_present_false_matches_only_an_absent_header() {
    let c = one("migration: {percentage: 100, strategy: ip}\ncanary:\n  header_rules:\n    - {header: X-Legacy-Token, present: false, target: old}");
    assert_decision(run(&c, &req().client("10.0.0.1")), Target::Old, Rule::Header);
    assert_decision(run(&c, &req().header("X-Other", "v").client("10.0.0.1")), Target::Old, Rule::Header);
    assert_decision(run(&c, &req().header("X-Legacy-Token", "t").client("10.0.0.1")), Target::New, Rule::IpHash);
    assert_decision(run(&c, &req().header("x-legacy-token", "").client("10.0.0.1")), Target::New, Rule::IpHash);
}

#[test]
fn first_matching_header_rule_wins() {
    let c = one("canary:
  header_rules:
    - {header: X-A, value: '1', target: old_cluster}
    - {header: X-B, present: true, target: new_cluster}
    - {header: X-A, present: true, target: new_cluster}");
    assert_decision(run(&c, &req().header("X-B", "x").header("X-A", "1")), Target::Old, Rule::Header);
    assert_decision(run(&c, &req().header("X-A", "1")), Target::Old, Rule::Header);
    assert_decision(run(&c, &req().header("X-B", "x")), Target::New, Rule::Header);
    assert_decision(run(&c, &req().header("X-A", "2")), Target::New, Rule::Header);
    assert_decision(run(&c, &req()), Target::Old, Rule::Weight);
}

#[test]
fn header_rule_can_target_the_old_cluster() {
    let c = one("migration: {strategy: user, percentage: 100}
canary:
  header_rules:
    - {header: X-Pin, value: old, target: old_cluster}
    - {header: X-Pin2, value: old, target: old}");
    let user = || req().header("X-User-ID", "alice");
    assert_decision(run(&c, &user()), Target::New, Rule::UserHash);
    assert_decision(run(&c, &user().header("X-Pin", "old")), Target::Old, Rule::Header);
    assert_decision(run(&c, &user().header("X-Pin2", "old")), Target::Old, Rule::Header);
}

#[test]
fn first_occurrence_of_a_repeated_header_is_used() {
    let c = one("canary:\n  header_rules:\n    - {header: X-Canary, value: on, target: new}");
    assert_decision(run(&c, &req().header("X-Canary", "on").header("X-Canary", "off")), Target::New, Rule::Header);
    assert_decision(run(&c, &req().header("X-Canary", "off").header("X-Canary", "on")), Target::Old, Rule::Weight);
    assert_decision(run(&c, &req().header("x-canary", "off").header("X-CANARY", "on")), Target::Old, Rule::Weight);
    // Also for `values`, `pattern` and for the user id.
    let v = one("migration: {strategy: user, percentage: 0}
canary:
  header_rules:
    - {header: X-Env, values: [a, b], target: new}
    - {header: X-Agent, pattern: '^bot', target: new}
  user_rules:
    - {users: [alice], target: new}");
    assert_decision(run(&v, &req().header("X-Env", "c").header("X-Env", "a")), Target::Old, Rule::Weight);
    assert_decision(run(&v, &req().header("X-Agent", "human").header("X-Agent", "bot")), Target::Old, Rule::Weight);
    assert_decision(
        run(&v, &req().header("X-User-ID", "alice").header("X-User-ID", "bob")),
        Target::New,
        Rule::UserList,
    );
    assert_decision(
        run(&v, &req().header("X-User-ID", "bob").header("X-User-ID", "alice")),
        Target::Old,
        Rule::UserHash,
    );
}

#[test]
fn header_rule_from_applies_only_to_clients_in_its_networks() {
    let c = one("canary:
  header_rules:
    - {header: X-Canary, value: on, target: new, from: [10.0.0.0/8, '2001:db8::/32', 192.168.1.7]}");
    let with = |client: &str| req().header("X-Canary", "on").client(client);
    for inside in ["10.1.2.3", "10.255.255.255", "2001:db8::5", "192.168.1.7", "::ffff:10.9.9.9"] {
        assert_decision(run(&c, &with(inside)), Target::New, Rule::Header);
    }
    for outside in ["11.0.0.1", "192.168.1.8", "2001:db9::1", "::1"] {
        assert_decision(run(&c, &with(outside)), Target::Old, Rule::Weight);
    }
    // No client address: a `from:` rule is not honoured.
    assert_decision(run(&c, &req().header("X-Canary", "on")), Target::Old, Rule::Weight);
}

#[test]
fn header_rule_from_skips_to_the_next_rule() {
    let c = one("canary:
  header_rules:
    - {header: X-Canary, present: true, target: new, from: [10.0.0.0/8]}
    - {header: X-Canary, present: true, target: old}
    - {header: X-Other, present: true, target: new}");
    assert_decision(run(&c, &req().header("X-Canary", "1").client("10.0.0.1")), Target::New, Rule::Header);
    assert_decision(run(&c, &req().header("X-Canary", "1").client("172.16.0.1")), Target::Old, Rule::Header);
    assert_decision(run(&c, &req().header("X-Canary", "1")), Target::Old, Rule::Header);
}

#[test]
fn header_rule_beats_ip_rule() {
    let c = one("migration: {percentage: 100}
canary:
  header_rules:
    - {header: X-Stay, value: '1', target: old}
  ip_rules:
    - {cidr: 10.0.0.0/8, target: new}");
    assert_decision(run(&c, &req().header("X-Stay", "1").client("10.1.1.1")), Target::Old, Rule::Header);
    assert_decision(run(&c, &req().header("X-Stay", "2").client("10.1.1.1")), Target::New, Rule::Cidr);
}

#[test]
fn many_distinct_header_names_are_all_seen() {
    // More names than fit the engine's small tables: every rule must still be found.
    let rules: String = (0..40).map(|i| format!("    - {{header: X-H{i}, value: v{i}, target: new}}\n")).collect();
    let c = one(&format!("canary:\n  header_rules:\n{rules}"));
    for i in 0..40 {
        let decoy = if i == 0 { "X-H1" } else { "X-H0" };
        let request = req().header(decoy, "nope").header(&format!("X-H{i}"), format!("v{i}"));
        assert_decision(run(&c, &request), Target::New, Rule::Header);
    }
    assert_decision(run(&c, &req().header("X-H39", "v38")), Target::Old, Rule::Weight);
    // Long header names too.
    let long = "X-".to_string() + &"a".repeat(70);
    let c = one(&format!("canary:\n  header_rules:\n    - {{header: {long}, present: true, target: new}}"));
    assert_decision(run(&c, &req().header(&long.to_uppercase(), "1")), Target::New, Rule::Header);
}

// ---------------------------------------------------------------------------
// 5. ip rules

#[test]
fn cookie_rules_read_the_cookie_as_nginx_does() {
    let c = one("canary:
  header_rules:
    - {cookie: Canary, value: always, target: new_cluster}
    - {cookie: canary, value: never, target: old_cluster}
migration: {percentage: 100}");
    let with_cookie = |v: &str| req().header("Cookie", v);
    assert_decision(run(&c, &with_cookie("a=1; canary=always")), Target::New, Rule::Header);
    assert_decision(run(&c, &with_cookie("CANARY=never")), Target::Old, Rule::Header);
    // The first occurrence, across Cookie headers too.
    assert_decision(run(&c, &with_cookie("canary=never; canary=always")), Target::Old, Rule::Header);
    assert_decision(run(&c, &with_cookie("x=1").header("Cookie", "canary=always")), Target::New, Rule::Header);
    // nginx's quirk: a bare name swallows the next cookie.
    assert_decision(run_drawing(&c, &with_cookie("canary; canary=never"), 0).0, Target::New, Rule::Weight);
    // Anything else falls through; a header named canary is not the cookie.
    assert_decision(run_drawing(&c, &with_cookie("canary=sometimes"), 0).0, Target::New, Rule::Weight);
    assert_decision(run_drawing(&c, &req().header("Canary", "never"), 0).0, Target::New, Rule::Weight);
}

#[test]
fn arg_rules_read_the_argument_as_nginx_does() {
    let c = one("canary:
  header_rules:
    - {arg: beta, values: ['1', 'yes'], target: new_cluster}
    - {arg: Legacy, present: true, target: old_cluster}
    - {header: X-Beta, value: '1', target: new_cluster}");
    assert_decision(run(&c, &req().args("a=2&BETA=yes")), Target::New, Rule::Header);
    assert_decision(run(&c, &req().args("beta=1&beta=0")), Target::New, Rule::Header);
    assert_decision(run(&c, &req().args("beta=0&beta=1&legacy")), Target::Old, Rule::Weight);
    assert_decision(run(&c, &req().args("legacy=")), Target::Old, Rule::Header);
    assert_decision(run(&c, &req().args("xbeta=1")), Target::Old, Rule::Weight);
    assert_decision(run(&c, &req().args("x=1").header("X-Beta", "1")), Target::New, Rule::Header);
}

#[test]
fn cookie_and_arg_rules_keep_from_and_first_match_order() {
    let c = one("canary:
  header_rules:
    - {cookie: canary, value: always, target: new_cluster, from: [10.0.0.0/8]}
    - {arg: canary, value: always, target: old_cluster}
    - {header: X-Canary, value: always, target: new_cluster}");
    let both = || req().header("Cookie", "canary=always").args("canary=always").header("X-Canary", "always");
    assert_decision(run(&c, &both().client("10.1.2.3")), Target::New, Rule::Header);
    assert_decision(run(&c, &both().client("192.0.2.1")), Target::Old, Rule::Header);
    assert_decision(run(&c, &req().header("X-Canary", "always").client("192.0.2.1")), Target::New, Rule::Header);
}

#[test]
fn many_header_cookie_and_arg_names_are_all_seen() {
    // More value slots than the stack holds: the heap path.
    let mut rules = String::from("canary:\n  header_rules:\n");
    for i in 0..10 {
        rules.push_str(&format!("    - {{header: X-H{i}, value: v, target: old_cluster}}\n"));
        rules.push_str(&format!("    - {{cookie: c{i}, value: v, target: old_cluster}}\n"));
        rules.push_str(&format!("    - {{arg: a{i}, value: v, target: old_cluster}}\n"));
    }
    rules.push_str("    - {arg: last, value: v, target: new_cluster}\n");
    let c = one(&rules);
    assert_decision(run(&c, &req().args("a9=v")), Target::Old, Rule::Header);
    assert_decision(run(&c, &req().header("Cookie", "c9=v")), Target::Old, Rule::Header);
    assert_decision(run(&c, &req().header("X-H9", "v")), Target::Old, Rule::Header);
    assert_decision(run(&c, &req().args("a9=w&last=v")), Target::New, Rule::Header);
}

#[test]
fn ip_rules_match_ipv4_and_ipv6_clients() {
    let c = one("canary:
  ip_rules:
    - {cidr: 10.0.0.0/8, target: new}
    - {cidrs: ['2001:db8::/32', 'fd00::1'], target: new_cluster}
    - {cidr: 192.168.0.0/16, target: old}");
    for client in ["10.0.0.0", "10.200.3.4", "2001:db8::", "2001:db8:ffff::1", "fd00::1"] {
        assert_decision(run(&c, &req().client(client)), Target::New, Rule::Cidr);
    }
    assert_decision(run(&c, &req().client("192.168.3.3")), Target::Old, Rule::Cidr);
    for client in ["11.0.0.0", "9.255.255.255", "2001:db9::", "fd00::2", "::1"] {
        assert_decision(run(&c, &req().client(client)), Target::Old, Rule::Weight);
    }
    assert_decision(run(&c, &req()), Target::Old, Rule::Weight);
}

#[test]
fn ip_rules_first_listed_wins_even_over_a_more_specific_later_rule() {
    let c = one("migration: {percentage: 100}
canary:
  ip_rules:
    - {cidr: 10.0.0.0/8, target: old}
    - {cidr: 10.1.0.0/16, target: new}
    - {cidr: 10.1.2.3/32, target: new}
    - {cidrs: ['2001:db8::/32'], target: old}
    - {cidrs: ['2001:db8:1::/48'], target: new}");
    for client in ["10.1.2.3", "10.1.0.1", "10.2.0.1", "2001:db8:1::1"] {
        assert_decision(run(&c, &req().client(client)), Target::Old, Rule::Cidr);
    }
    // And the other way round: the specific rule first owns only its own range.
    let c = one("migration: {percentage: 100}
canary:
  ip_rules:
    - {cidr: 10.1.2.0/24, target: old}
    - {cidr: 10.0.0.0/8, target: new}");
    assert_decision(run(&c, &req().client("10.1.2.200")), Target::Old, Rule::Cidr);
    assert_decision(run(&c, &req().client("10.1.3.0")), Target::New, Rule::Cidr);
    assert_decision(run(&c, &req().client("10.1.1.255")), Target::New, Rule::Cidr);
}

#[test]
fn ipv4_mapped_ipv6_client_matches_an_ipv4_rule() {
    let c = one("canary:\n  ip_rules:\n    - {cidr: 10.0.0.0/8, target: new}");
    assert_decision(run(&c, &req().client("::ffff:10.1.2.3")), Target::New, Rule::Cidr);
    assert_decision(run(&c, &req().client("::ffff:11.1.2.3")), Target::Old, Rule::Weight);
}

#[test]
fn ip_rules_agree_with_a_linear_scan_on_many_nested_networks() {
    // 300 random networks, mostly inside 10.0.0.0/8 so that they nest, targets alternating
    // by rule index; compared with "first listed network that contains the address".
    let mut rng = XorShift(0x9e37_79b9);
    let mut nets: Vec<(u32, u32)> = Vec::new(); // (network, prefix length)
    for _ in 0..300 {
        let len = 8 + rng.next() % 25;
        let addr = if rng.next() % 4 == 0 { rng.next() } else { 0x0A00_0000 | (rng.next() & 0x00FF_FFFF) };
        let mask = u32::MAX << (32 - len);
        nets.push((addr & mask, len));
    }
    let target = |i: usize| if i % 2 == 0 { "new" } else { "old" };
    let rules: String = nets
        .iter()
        .enumerate()
        .map(|(i, (a, l))| format!("    - {{cidr: {}/{l}, target: {}}}\n", std::net::Ipv4Addr::from(*a), target(i)))
        .collect();
    let c = one(&format!("migration: {{strategy: ip, percentage: 0}}\ncanary:\n  ip_rules:\n{rules}"));
    let mut probes: Vec<u32> = nets
        .iter()
        .flat_map(|&(a, l)| {
            let last = a | u32::MAX.checked_shr(l).unwrap_or(0);
            [a, last, a.wrapping_sub(1), last.wrapping_add(1)]
        })
        .collect();
    for _ in 0..5000 {
        probes.push(0x0A00_0000 | (rng.next() & 0x00FF_FFFF));
        probes.push(rng.next());
    }
    for p in probes {
        let ip = std::net::Ipv4Addr::from(p);
        let first = nets.iter().position(|&(a, l)| {
            let mask = u32::MAX.checked_shl(32 - l).unwrap_or(0);
            p & mask == a
        });
        let d = run(&c, &req().client(&ip.to_string()));
        match first {
            Some(i) => assert_decision(d, if i % 2 == 0 { Target::New } else { Target::Old }, Rule::Cidr),
            None => assert_decision(d, Target::Old, Rule::IpHash),
        }
    }
}

// ---------------------------------------------------------------------------
// 6. user rules

#[test]
fn user_rules_read_the_user_id_from_a_header() {
    let c = one(
        "migration: {user_key: 'header:X-User-ID'}\ncanary:\n  user_rules:\n    - {users: [alice, bob], target: new}",
    );
    assert_decision(run(&c, &req().header("x-user-id", "alice")), Target::New, Rule::UserList);
    assert_decision(run(&c, &req().header("X-USER-ID", "bob")), Target::New, Rule::UserList);
    assert_decision(run(&c, &req().header("X-User-ID", "Alice")), Target::Old, Rule::Weight);
    assert_decision(run(&c, &req().header("X-Uid", "alice")), Target::Old, Rule::Weight);
    assert_decision(run(&c, &req().args("X-User-ID=alice")), Target::Old, Rule::Weight);
}

#[test]
fn user_rules_read_the_user_id_from_a_cookie() {
    let c = one("migration: {user_key: 'cookie:uid'}\ncanary:\n  user_rules:\n    - {users: [alice], target: new}");
    assert_decision(run(&c, &req().header("Cookie", "a=1; uid=alice; b=2")), Target::New, Rule::UserList);
    assert_decision(run(&c, &req().header("Cookie", "a=1").header("Cookie", "uid=alice")), Target::New, Rule::UserList);
    assert_decision(run(&c, &req().header("Cookie", "xuid=alice")), Target::Old, Rule::Weight);
    assert_decision(run(&c, &req().header("uid", "alice")), Target::Old, Rule::Weight);
    assert_decision(run(&c, &req().args("uid=alice")), Target::Old, Rule::Weight);
}

#[test]
fn user_rules_read_the_user_id_from_a_query_argument() {
    let c = one("migration: {user_key: 'arg:uid'}\ncanary:\n  user_rules:\n    - {users: [alice], target: new}");
    assert_decision(run(&c, &req().args("uid=alice")), Target::New, Rule::UserList);
    assert_decision(run(&c, &req().args("x=1&uid=alice&y=2")), Target::New, Rule::UserList);
    assert_decision(run(&c, &req().args("xuid=alice")), Target::Old, Rule::Weight);
    assert_decision(run(&c, &req().args("uid=bob&uid=alice")), Target::Old, Rule::Weight);
    assert_decision(run(&c, &req().header("Cookie", "uid=alice")), Target::Old, Rule::Weight);
}

#[test]
fn first_user_rule_listing_a_user_wins() {
    let c = one("migration: {percentage: 100, strategy: user}
canary:
  user_rules:
    - {users: [alice, bob], target: old}
    - {users: [bob, carol], target: new}
    - {users: [carol, dave], target: old}");
    let user = |id: &str| req().header("X-User-ID", id);
    assert_decision(run(&c, &user("alice")), Target::Old, Rule::UserList);
    assert_decision(run(&c, &user("bob")), Target::Old, Rule::UserList);
    assert_decision(run(&c, &user("carol")), Target::New, Rule::UserList);
    assert_decision(run(&c, &user("dave")), Target::Old, Rule::UserList);
    assert_decision(run(&c, &user("erin")), Target::New, Rule::UserHash);
}

#[test]
fn ip_rule_beats_user_rule() {
    let c = one("canary:
  ip_rules:
    - {cidr: 10.0.0.0/8, target: old}
  user_rules:
    - {users: [alice], target: new}");
    assert_decision(run(&c, &req().header("X-User-ID", "alice").client("10.0.0.1")), Target::Old, Rule::Cidr);
    assert_decision(run(&c, &req().header("X-User-ID", "alice").client("11.0.0.1")), Target::New, Rule::UserList);
}

#[test]
fn empty_user_id_counts_as_absent() {
    let header = one("migration: {strategy: user, percentage: 100}");
    let (d, calls) = run_drawing(&header, &req().header("X-User-ID", ""), 0);
    assert_decision(d, Target::New, Rule::Weight);
    assert_eq!(calls, 1);
    // The first occurrence is the user id, even when it is empty.
    let (d, _) = run_drawing(&header, &req().header("X-User-ID", "").header("X-User-ID", "alice"), u32::MAX);
    assert_decision(d, Target::New, Rule::Weight);

    let cookie = one("migration: {strategy: user, percentage: 50, user_key: 'cookie:uid'}");
    let (d, calls) = run_drawing(&cookie, &req().header("Cookie", "uid="), u32::MAX);
    assert_decision(d, Target::Old, Rule::Weight);
    assert_eq!(calls, 1);

    let arg = one("migration: {strategy: user, percentage: 50, user_key: 'arg:uid'}");
    let (d, calls) = run_drawing(&arg, &req().args("uid=&a=1"), 0);
    assert_decision(d, Target::New, Rule::Weight);
    assert_eq!(calls, 1);
}

// ---------------------------------------------------------------------------
// 7. the percentage split

#[test]
fn strategy_user_hashes_salt_and_user_id_like_split_clients() {
    for (salt, bp, pct) in [("", 2000, "20"), ("s1-", 2000, "20"), ("tenant", 3750, "37.5"), ("x", 1, "0.01")] {
        let c = one(&format!("migration: {{strategy: user, percentage: {pct}, hash_salt: '{salt}'}}"));
        let (mut new, mut old) = (0, 0);
        for i in 0..2000 {
            let id = format!("user-{i}");
            let d = run(&c, &req().header("X-User-ID", &id));
            let expected = expected_side(salt, &id, bp);
            assert_decision(d, expected, Rule::UserHash);
            if expected == Target::New {
                new += 1
            } else {
                old += 1
            }
        }
        if bp >= 2000 {
            assert!(new > 0 && old > 0, "salt {salt:?}: {new} new, {old} old");
        }
    }
}

#[test]
fn strategy_user_matches_known_murmur2_values() {
    // ngx_murmur_hash2 is the contract: a hash computed here, by hand-picked
    // thresholds, must put the user on the same side.
    let c = one("migration: {strategy: user, percentage: 50}");
    for id in ["alice", "bob", "carol", "12345", "a", "ab", "abc", "abcd", "abcde"] {
        let h = nginx_murmur2(id.as_bytes());
        let expected = if (h as u64) < 0xFFFF_FFFFu64 * 5000 / 10000 { Target::New } else { Target::Old };
        assert_decision(run(&c, &req().header("X-User-ID", id)), expected, Rule::UserHash);
    }
}

#[test]
fn strategy_user_without_user_id_falls_back_to_weight() {
    let c = one("migration: {strategy: user, percentage: 20}");
    let bound = 858_993_459; // 2000 * 0xffffffff / 10000, split_clients' bound at 20 %
    let (d, calls) = run_drawing(&c, &req(), 0);
    assert_decision(d, Target::New, Rule::Weight);
    assert_eq!(calls, 1);
    let (d, _) = run_drawing(&c, &req(), bound - 1);
    assert_decision(d, Target::New, Rule::Weight);
    let (d, _) = run_drawing(&c, &req(), bound);
    assert_decision(d, Target::Old, Rule::Weight);
    let (d, _) = run_drawing(&c, &req().header("X-Other-User", "alice"), u32::MAX);
    assert_decision(d, Target::Old, Rule::Weight);
}

#[test]
fn strategy_ip_hashes_the_client_address_text() {
    let c = one("migration: {strategy: ip, percentage: 50, hash_salt: 'ip-'}");
    let mut sides = [0, 0];
    let mut rng = XorShift(7);
    let mut clients: Vec<String> = (0..500).map(|_| std::net::Ipv4Addr::from(rng.next()).to_string()).collect();
    clients.extend(["2001:db8::1", "::1", "::ffff:10.1.2.3", "fe80::1:2"].map(String::from));
    for client in &clients {
        let request = req().client(client).header("X-User-ID", "alice");
        let expected = expected_side("ip-", &request.client_addr_text_string(), 5000);
        let d = run(&c, &request);
        assert_decision(d, expected, Rule::IpHash);
        sides[(expected == Target::New) as usize] += 1;
    }
    assert!(sides[0] > 100 && sides[1] > 100, "{sides:?}");
}

#[test]
fn weight_zero_is_always_old_and_never_draws() {
    for body in [
        "migration: {strategy: weight, percentage: 0}",
        "migration: {strategy: user, percentage: 0}",
        "migration: {strategy: ip, percentage: 0}",
        "",
    ] {
        let c = one(body);
        for request in
            [req(), req().header("X-User-ID", "alice"), req().client("10.0.0.1"), req().header("X-User-ID", "")]
        {
            let d = run(&c, &request); // panics if the draw is used
            assert_eq!(d.target, Some(Target::Old), "{body}: {d:?}");
        }
    }
}

#[test]
fn weight_hundred_is_always_new() {
    let c = one("migration: {strategy: weight, percentage: 100}");
    for value in [0, 1, 0x7FFF_FFFF, 0xFFFF_FFFE, u32::MAX] {
        let (d, calls) = run_drawing(&c, &req(), value);
        assert_decision(d, Target::New, Rule::Weight);
        assert_eq!(calls, 1);
    }
    let users = one("migration: {strategy: user, percentage: 100}");
    for i in 0..1000 {
        assert_decision(run(&users, &req().header("X-User-ID", format!("u{i}"))), Target::New, Rule::UserHash);
    }
}

#[test]
fn the_draw_is_called_at_most_once_per_decision() {
    let c = load(&[
        service("w", "migration: {strategy: weight, percentage: 20}"),
        service("u", "migration: {strategy: user, percentage: 20}"),
        service("i", "migration: {strategy: ip, percentage: 20}"),
        service(
            "r",
            "migration: {strategy: weight, percentage: 60}
canary:
  header_rules:
    - {header: X-C, present: true, target: new}
  ip_rules:
    - {cidr: 10.0.0.0/8, target: new}
  user_rules:
    - {users: [alice], target: new}",
        ),
    ]);
    let mut rng = XorShift(12345);
    for host in ["w.example", "u.example", "i.example", "r.example"] {
        for request in [
            OwnedRequest::new(host),
            OwnedRequest::new(host).header("X-User-ID", "bob"),
            OwnedRequest::new(host).header("X-User-ID", "alice"),
            OwnedRequest::new(host).header("X-C", "1"),
            OwnedRequest::new(host).client("10.0.0.1"),
            OwnedRequest::new(host).client("11.0.0.1").header("X-User-ID", "zed"),
        ] {
            let calls = Cell::new(0);
            let d = decide(&c, ServiceChoice::Auto, &request, &mut || {
                calls.set(calls.get() + 1);
                rng.next()
            });
            assert!(calls.get() <= 1, "{host}: {request:?} drew {} times", calls.get());
            if d.rule != Rule::Weight {
                assert_eq!(calls.get(), 0, "{host}: {d:?} drew without a weight split");
            } else {
                assert_eq!(calls.get(), 1, "{host}: a weight split at 20-60% must draw");
            }
        }
    }
}

#[test]
fn raising_the_percentage_only_moves_users_from_old_to_new() {
    let at = |pct: &str| one(&format!("migration: {{strategy: user, percentage: {pct}, hash_salt: rollout}}"));
    let steps = ["0", "5", "20", "20.01", "30", "55.55", "99.99", "100"];
    let configs: Vec<CompiledConfig> = steps.iter().map(|p| at(p)).collect();
    let new_sets: Vec<Vec<bool>> = configs
        .iter()
        .map(|c| {
            (0..5000)
                .map(|i| run(c, &req().header("X-User-ID", format!("id-{i}"))).target == Some(Target::New))
                .collect()
        })
        .collect();
    for w in 0..steps.len() - 1 {
        let (lo, hi) = (&new_sets[w], &new_sets[w + 1]);
        for i in 0..5000 {
            assert!(!lo[i] || hi[i], "id-{i} is new at {}% but old at {}%", steps[w], steps[w + 1]);
        }
    }
    let count = |v: &Vec<bool>| v.iter().filter(|&&b| b).count();
    let (n20, n30) = (count(&new_sets[2]), count(&new_sets[4]));
    assert!(n20 < n30, "20%: {n20}, 30%: {n30}");
    assert_eq!(count(&new_sets[0]), 0);
    assert_eq!(count(&new_sets[7]), 5000);
}

#[test]
fn same_user_lands_on_the_same_side_in_services_sharing_a_salt() {
    let c = load(&[
        service("a", "migration: {strategy: user, percentage: 30, hash_salt: team}"),
        service("b", "migration: {strategy: user, percentage: 30, hash_salt: team, user_key: 'cookie:uid'}"),
    ]);
    let mut new = 0;
    for i in 0..3000 {
        let id = format!("u{i}");
        let a = run(&c, &OwnedRequest::new("a.example").header("X-User-ID", &id));
        let b = run(&c, &OwnedRequest::new("b.example").header("Cookie", format!("uid={id}")));
        assert_eq!((a.service, b.service), (Some(0), Some(1)));
        assert_eq!(a.rule, Rule::UserHash);
        assert_eq!(a.target, b.target, "user {id}");
        new += (a.target == Some(Target::New)) as u32;
    }
    assert!((700..1100).contains(&new), "{new} of 3000 new at 30%");
}

#[test]
fn a_different_salt_changes_the_cohort_of_some_users() {
    let c = load(&[
        service("a", "migration: {strategy: user, percentage: 50, hash_salt: one}"),
        service("b", "migration: {strategy: user, percentage: 50, hash_salt: two}"),
        service("c", "migration: {strategy: user, percentage: 50}"),
    ]);
    let side = |host: &str, id: &str| run(&c, &OwnedRequest::new(host).header("X-User-ID", id)).target;
    let ids: Vec<String> = (0..1000).map(|i| format!("user{i}")).collect();
    let differ_ab = ids.iter().filter(|id| side("a.example", id) != side("b.example", id)).count();
    let differ_ac = ids.iter().filter(|id| side("a.example", id) != side("c.example", id)).count();
    // Independent cohorts at 50% disagree on about half the users.
    assert!((350..650).contains(&differ_ab), "{differ_ab}");
    assert!((350..650).contains(&differ_ac), "{differ_ac}");
}

#[test]
fn weighted_split_accuracy_at_twenty_percent() {
    let c = one("migration: {strategy: weight, percentage: 20}");
    let mut rng = XorShift(0x2545_f491);
    let n = 10_000;
    let new = (0..n)
        .filter(|_| {
            let d = decide(&c, ServiceChoice::Auto, &req(), &mut || rng.next());
            assert_eq!(d.rule, Rule::Weight);
            d.target == Some(Target::New)
        })
        .count();
    // Binomial(10000, 0.2): mean 2000, sigma 40; 4 sigma either side.
    assert!((1840..=2160).contains(&new), "{new} of {n} new at 20%");
}

// ---------------------------------------------------------------------------

/// `$remote_addr` as the test request prints it.
trait ClientText {
    fn client_addr_text_string(&self) -> String;
}

impl ClientText for OwnedRequest {
    fn client_addr_text_string(&self) -> String {
        String::from_utf8(self.client_text.clone()).unwrap()
    }
}

// ---------------------------------------------------------------------------
// 4. fallback

/// One breaker, for service 0, at a settable clock.
struct OneBreaker {
    cells: migration_engine::BreakerCells,
    now: Cell<u64>,
}

impl migration_engine::Breakers for OneBreaker {
    fn breaker(&self, index: u32) -> Option<&migration_engine::BreakerCells> {
        (index == 0).then_some(&self.cells)
    }
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
}

fn tripped(now: u64) -> OneBreaker {
    let b = OneBreaker { cells: Default::default(), now: Cell::new(now) };
    b.cells.record(migration_engine::Outcome::Failure(502), None, 1, now);
    b
}

const FALLBACK_SERVICE: &str = "migration: {percentage: 100}\n\
    fallback: {failures: 1, cooldown: 1s}\n\
    canary:\n  header_rules:\n    - {header: X-Canary, value: \"on\", target: new}\n  \
    user_rules:\n    - {users: [alice], target: old}\n";

fn decide_at(config: &CompiledConfig, request: &OwnedRequest, breakers: &OneBreaker) -> Decision {
    migration_engine::decide_with(config, ServiceChoice::Auto, request, &mut || 0, breakers)
}

#[test]
fn fallback_open_sends_everything_but_header_rules_to_old() {
    let config = one(FALLBACK_SERVICE);
    let b = tripped(1000);
    assert_decision(decide_at(&config, &req(), &b), Target::Old, Rule::Fallback);
    assert_decision(decide_at(&config, &req().header("X-User-ID", "alice"), &b), Target::Old, Rule::Fallback);
    assert_decision(decide_at(&config, &req().header("X-Canary", "on"), &b), Target::New, Rule::Header);
}

#[test]
fn fallback_closed_decides_as_usual() {
    let config = one(FALLBACK_SERVICE);
    let b = OneBreaker { cells: Default::default(), now: Cell::new(0) };
    let d = decide_at(&config, &req(), &b);
    assert_decision(d, Target::New, Rule::Weight);
    assert!(d.trial.is_none() && d.transition.is_none());
}

#[test]
fn after_the_cooldown_one_request_that_would_go_new_is_the_trial() {
    let config = one(FALLBACK_SERVICE);
    let b = tripped(1000);
    b.now.set(1999);
    assert_decision(decide_at(&config, &req(), &b), Target::Old, Rule::Fallback);
    b.now.set(2000);
    // A request bound for old is not a trial, and stays on old.
    let d = decide_at(&config, &req().header("X-User-ID", "alice"), &b);
    assert_decision(d, Target::Old, Rule::Fallback);
    assert_eq!(
        d.transition,
        Some(migration_engine::Transition::HalfOpened),
        "the first request after the cooldown reports it"
    );
    let trial = decide_at(&config, &req(), &b);
    assert_decision(trial, Target::New, Rule::Weight);
    assert!(trial.trial.is_some() && trial.transition.is_none());
    let second = decide_at(&config, &req(), &b);
    assert_decision(second, Target::Old, Rule::Fallback);
    assert!(second.trial.is_none());
}

#[test]
fn a_service_without_fallback_ignores_breakers() {
    let config = one("migration: {percentage: 100}\n");
    let b = tripped(0);
    assert_decision(decide_at(&config, &req(), &b), Target::New, Rule::Weight);
}

#[test]
fn disabled_beats_fallback() {
    let config = one("migration: {enabled: false}\nfallback: {failures: 1}\n");
    assert_decision(decide_at(&config, &req(), &tripped(0)), Target::Old, Rule::Disabled);
}

/// `user_key: var:NAME` reads an nginx variable (an identity the proxy verified,
/// e.g. set by auth_request_set), for user rules and the user split.
#[test]
fn user_key_var_reads_a_variable_not_a_header() {
    let c = one("migration: {strategy: user, percentage: 0, user_key: 'var:jwt_sub'}\ncanary:\n  user_rules:\n    - {users: [alice], target: new}");
    assert_decision(run(&c, &req().variable("jwt_sub", "alice")), Target::New, Rule::UserList);
    assert_decision(run(&c, &req().variable("jwt_sub", "mallory")), Target::Old, Rule::UserHash);
    // A client-supplied header of the same name changes nothing.
    let (d, _) = run_drawing(&c, &req().header("jwt_sub", "alice").header("X-User-ID", "alice"), 0);
    assert_decision(d, Target::Old, Rule::Weight);
    let (d, _) = run_drawing(&c, &req().variable("jwt_sub", ""), 0);
    assert_decision(d, Target::Old, Rule::Weight);
}

/// `CompiledService::user_id` (replay's reading of a logged request) reads the id
/// exactly where the decision does: the header, cookie, argument or variable
/// `user_key` names, an empty value being no id.
#[test]
fn user_id_reads_through_user_key_as_the_decision_does() {
    let cases: [(&str, OwnedRequest, Option<&[u8]>); 9] = [
        ("header:X-User-ID", req().header("X-User-ID", "alice"), Some(b"alice")),
        ("header:X-User-ID", req().header("x-user-id", "bob").header("X-User-ID", "carol"), Some(b"bob")),
        ("header:X-User-ID", req().header("X-User-ID", ""), None),
        ("header:X-User-ID", req().header("X-Other", "alice"), None),
        ("cookie:uid", req().header("Cookie", "a=1; uid=dave; b=2"), Some(b"dave")),
        ("cookie:uid", req().header("Cookie", "uid="), None),
        ("arg:u", req().args("x=1&u=erin&u=frank"), Some(b"erin")),
        ("var:remote_user", req().variable("remote_user", "grace"), Some(b"grace")),
        ("var:remote_user", req(), None),
    ];
    for (key, request, expected) in cases {
        let config = one(&format!("migration: {{strategy: user, percentage: 50, user_key: \"{key}\"}}"));
        assert_eq!(config.services[0].user_id(&request), expected, "user_key {key}");
    }
}

/// Where a ramp has moved the percentage (`Breakers::ramp_in_force`), the
/// split is by that percentage, not the file's.
#[test]
fn the_percentage_in_force_decides_the_split() {
    struct InForce(u32);
    impl migration_engine::Breakers for InForce {
        fn breaker(&self, _: u32) -> Option<&migration_engine::BreakerCells> {
            None
        }
        fn now_ms(&self) -> u64 {
            0
        }
        fn ramp_in_force(&self, _: u32) -> Option<migration_engine::ramp::RampInForce> {
            Some(migration_engine::ramp::RampInForce::unstamped(self.0))
        }
    }
    let config = one("migration: {strategy: user, percentage: 20, user_key: \"header:X-User-ID\"}");
    for bp in [0, 2000, 5000, 10_000] {
        let mut new = 0;
        for i in 0..400 {
            let id = format!("user-{i}");
            let r = req().header("X-User-ID", &id);
            let d = migration_engine::decide_with(&config, ServiceChoice::Auto, &r, &mut || 0, &InForce(bp));
            assert_eq!((d.percentage_bp, d.ramp), (bp, None));
            let expected = if admits(bp, nginx_murmur2(id.as_bytes())) { Target::New } else { Target::Old };
            assert_eq!((d.target, d.rule), (Some(expected), Rule::UserHash), "{id} at {bp}");
            new += usize::from(expected == Target::New);
        }
        assert!(bp == 0 || new > 0, "some users on new at {bp}");
    }
}

/// A decision under a ramp carries the position it read the percentage from
/// (the stamp its response joins a step's window by); one without a ramp none.
#[test]
fn a_decision_carries_the_ramp_position_it_was_decided_under() {
    struct Cells(migration_engine::ramp::RampCells);
    impl migration_engine::Breakers for Cells {
        fn breaker(&self, _: u32) -> Option<&migration_engine::BreakerCells> {
            None
        }
        fn now_ms(&self) -> u64 {
            0
        }
        fn ramp_in_force(&self, _: u32) -> Option<migration_engine::ramp::RampInForce> {
            self.0.in_force()
        }
    }
    let config = one("migration: {strategy: weight, ramp: {steps: [10, 50], every: 1s}}");
    let ramp = config.services[0].ramp.as_ref().expect("a ramp");
    let cells = Cells(migration_engine::ramp::RampCells::default());
    let fingerprint = migration_engine::ramp::fingerprint(ramp, 1000);
    let decide_now =
        |cells: &Cells| migration_engine::decide_with(&config, ServiceChoice::Auto, &req(), &mut || 0, cells);
    assert_eq!(decide_now(&cells).ramp, None, "cells with no ramp published give no stamp");
    cells.0.publish(Some(ramp), fingerprint, 1, true, 0);
    let first = decide_now(&cells);
    assert_eq!((first.percentage_bp, first.rule), (1000, Rule::Weight));
    assert!(first.ramp.is_some());
    assert_eq!(first.ramp, cells.0.in_force().and_then(|f| f.stamp), "the position in the cells");
    assert!(cells.0.tick(ramp, fingerprint, 1000).is_some(), "step 2 begins");
    let second = decide_now(&cells);
    assert_eq!(second.percentage_bp, 5000);
    assert_ne!(second.ramp, first.ramp, "another step, another stamp");
}

/// A Host longer than a DNS name (255 bytes) is no service's, even where a
/// wildcard's suffix would match it; up to 255 bytes it is.
#[test]
fn a_host_over_255_bytes_matches_no_wildcard() {
    let config = one("hosts: [\"*.example.com\"]");
    for (len, found) in [(255, true), (256, false), (300, false)] {
        for upper in [false, true] {
            let label = if upper { "A" } else { "a" }.repeat(len - ".example.com".len());
            let host = format!("{label}.example.com");
            assert_eq!(host.len(), len);
            let d = run(&config, &OwnedRequest::new(&host));
            assert_eq!(d.service.is_some(), found, "{len} bytes, uppercase {upper}");
            assert_eq!(config.service_for_normalized_host(host.to_ascii_lowercase().as_bytes()).is_some(), found);
        }
    }
}
