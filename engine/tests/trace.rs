//! The traced decision (`nginx-migration explain`) is the decision: on random
//! requests, with breakers in random states, `decide_traced` with a `Trace`
//! gives exactly what the untraced `decide_with` gives, and its steps tell the
//! same story (the last step is the one that decided).

use std::net::IpAddr;

use migration_engine::{
    decide_traced, decide_with, load_str, BreakerCells, Breakers, CompiledConfig, Decision, Outcome, OwnedRequest,
    Rule, ServiceChoice, Target, Trace,
};
use proptest::prelude::*;

mod common;
use common::{admits, nginx_murmur2};

const YAML: &str = r#"
services:
  - name: api
    hosts: [api.example.com, "*.api.example.com"]
    old_host: api.example.com
    old_backend: old.svc:8078
    new_host: api.kong.example.com
    new_backend: api.kong.example.com:443
    migration: {strategy: user, percentage: 30, user_key: "header:X-User-ID", hash_salt: "s-"}
    canary:
      header_rules:
        - {header: X-Migration-Target, value: new, target: new}
        - {cookie: canary, value: always, target: new}
        - {cookie: canary, value: never, target: old}
        - {arg: beta, values: ["1", "yes"], target: new, from: [10.0.0.0/8]}
        - {header: User-Agent, pattern: "bot", target: old}
        - {header: X-Canary, present: true, target: new, from: ["2001:db8::/32", 192.168.1.7]}
      ip_rules:
        - {cidr: 10.20.0.0/16, target: new}
        - {cidrs: [10.0.0.0/8, "fd00::/8"], target: old}
      user_rules:
        - {users: [alice, bob], target: new}
        - {users: [mallory], target: old}
    fallback: {failures: 2, cooldown: 100ms}
  - name: shop
    old_host: shop.example.com
    old_backend: shop-old:80
    new_host: shop.new.example.com
    new_backend: shop-new:80
    migration: {strategy: weight, percentage: 33.33}
    fallback: {failures: 1, cooldown: 1s}
  - name: by-ip
    old_host: ip.example.com
    old_backend: ip-old:80
    new_host: ip.new.example.com
    new_backend: ip-new:80
    migration: {strategy: ip, percentage: 50, user_key: "cookie:uid"}
    canary:
      user_rules: [{users: [carol], target: new}]
  - name: off
    old_host: off.example.com
    old_backend: off-old:80
    new_host: off.new.example.com
    new_backend: off-new:80
    migration: {enabled: false, percentage: 100}
  - name: by-arg
    old_host: arg.example.com
    old_backend: arg-old:80
    new_host: arg.new.example.com
    new_backend: arg-new:80
    migration: {strategy: user, percentage: 100, user_key: "arg:uid"}
    canary:
      header_rules:
        - {arg: force, present: false, target: old}
"#;

const HOSTS: &[&str] = &[
    "api.example.com",
    "x.api.example.com",
    "shop.example.com",
    "ip.example.com",
    "off.example.com",
    "arg.example.com",
    "none.example",
];
const NAMES: &[&str] = &["x-migration-target", "user-agent", "x-canary", "x-user-id", "cookie", "accept"];
const VALUES: &[&str] = &[
    "new",
    "old",
    "googlebot",
    "alice",
    "bob",
    "mallory",
    "carol",
    "u-17",
    "canary=always",
    "canary=never; uid=carol",
    "",
];
const ARGS: &[&str] = &["", "beta=1", "beta=yes&uid=zed", "force", "force=1&uid=u-1", "uid=", "BETA=1"];
const CLIENTS: &[&str] =
    &["10.20.1.2", "10.1.2.3", "192.168.1.7", "8.8.8.8", "2001:db8::1", "fd00::1", "::ffff:10.20.0.5"];

fn config() -> CompiledConfig {
    load_str("trace.yaml", YAML).unwrap_or_else(|e| panic!("{e}"))
}

struct At(Vec<BreakerCells>, u64);

impl Breakers for At {
    fn breaker(&self, index: u32) -> Option<&BreakerCells> {
        self.0.get(index as usize)
    }
    fn now_ms(&self) -> u64 {
        self.1
    }
}

/// Breakers in a state given by a recipe of failures per service (0: closed;
/// otherwise opened at 0 ms), asked at `now`: the same recipe twice gives two
/// equal, independent sets.
fn breakers(config: &CompiledConfig, failures: &[u8], trial_taken: bool, now: u64) -> At {
    let cells = config
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let cells = BreakerCells::default();
            let limit = s.fallback.as_ref().map_or(5, |p| p.failures);
            for _ in 0..failures.get(i).copied().unwrap_or(0) {
                cells.record(Outcome::Failure(502), None, limit, 0);
            }
            if trial_taken {
                let cooldown = s.fallback.as_ref().map_or(30_000, |p| p.cooldown_ms);
                let _ = cells.gate(cooldown, cooldown);
                let _ = cells.begin_trial(cooldown, cooldown);
            }
            cells
        })
        .collect();
    At(cells, now)
}

prop_compose! {
    fn request()(
        host in 0..HOSTS.len(),
        port in proptest::option::of(1u16..),
        headers in proptest::collection::vec((0..NAMES.len(), 0..VALUES.len()), 0..5),
        args in 0..ARGS.len(),
        client in proptest::option::of(prop_oneof![
            (0..CLIENTS.len()).prop_map(|i| CLIENTS[i].parse::<IpAddr>().unwrap()),
            any::<[u8; 4]>().prop_map(IpAddr::from),
        ]),
    ) -> OwnedRequest {
        let host = match port { Some(p) => format!("{}:{p}", HOSTS[host]), None => HOSTS[host].to_owned() };
        let mut r = OwnedRequest::new(&host).args(ARGS[args]);
        for (n, v) in headers {
            r = r.header(NAMES[n], VALUES[v]);
        }
        if let Some(ip) = client {
            r = r.client(&ip.to_string());
        }
        r
    }
}

/// The step whose name a decision's rule gives (`header` → `header_rules[N]`).
fn deciding_step(rule: Rule) -> &'static str {
    match rule {
        Rule::Header => "header_rules[",
        Rule::Cidr => "ip_rules",
        Rule::UserList => "user_rules",
        Rule::Disabled => "enabled",
        Rule::Fallback => "fallback",
        Rule::None => "service",
        Rule::UserHash => "user_hash",
        Rule::IpHash => "ip_hash",
        Rule::Weight => "weight",
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn traced_and_untraced_decisions_agree(
        request in request(),
        named in proptest::option::of(0usize..6),
        draw in any::<u32>(),
        failures in proptest::collection::vec(0u8..3, 5),
        trial_taken in any::<bool>(),
        now in prop_oneof![Just(0u64), Just(50), Just(100), Just(5_000)],
    ) {
        let config = config();
        let names = ["api", "shop", "by-ip", "off", "by-arg", "nope"];
        let choice = named.map_or(ServiceChoice::Auto, |i| ServiceChoice::Named(names[i]));
        let plain_breakers = breakers(&config, &failures, trial_taken, now);
        let traced_breakers = breakers(&config, &failures, trial_taken, now);
        let plain: Decision = decide_with(&config, choice, &request, &mut || draw, &plain_breakers);
        let mut trace = Trace::default();
        let traced = decide_traced(&config, choice, &request, &mut || draw, &traced_breakers, &mut trace);
        prop_assert_eq!(plain, traced);
        // The breakers were moved the same way.
        for (a, b) in plain_breakers.0.iter().zip(&traced_breakers.0) {
            prop_assert_eq!(a.state(), b.state());
        }
        // The trace tells the same story: it starts with the service, and the
        // step that decided is the last one (the fallback may speak after the
        // split it overrode, or before it when open).
        let steps = &trace.steps;
        prop_assert_eq!(steps[0].step.as_str(), "service");
        prop_assert_eq!(steps[0].matched, plain.service.is_some());
        let last = steps.last().unwrap();
        prop_assert!(last.step.starts_with(deciding_step(plain.rule)) || plain.rule == Rule::Fallback || plain.trial.is_some(),
            "{:?} ends with {:?}", plain, last);
        if plain.rule == Rule::Fallback {
            prop_assert!(steps.iter().any(|s| s.step == "fallback" && s.matched), "{:?}", steps);
        }
        if plain.service.is_some() && plain.rule != Rule::Fallback && plain.trial.is_none() {
            prop_assert!(last.matched, "{:?}", last);
            let decisive = steps[1..].iter().filter(|s| s.matched).count();
            prop_assert_eq!(decisive, 1, "{:?}", steps);
        }
        if plain.rule == Rule::Header {
            prop_assert!(last.why.ends_with(&format!("-> {}", plain.target.unwrap().as_str())), "{}", last.why);
        }
        if let (Rule::UserHash | Rule::IpHash, Some(target)) = (plain.rule, plain.target) {
            prop_assert!(last.why.ends_with(&format!("-> {}", target.as_str())), "{}", last.why);
        }
        let _ = Target::Old;
    }
}

#[test]
fn a_trace_names_the_rule_value_network_and_hash() {
    let config = config();
    let r = OwnedRequest::new("api.example.com").header("Cookie", "canary=never").client("10.1.2.3");
    let mut trace = Trace::default();
    let d = decide_traced(&config, ServiceChoice::Auto, &r, &mut || 0, &migration_engine::NoBreakers, &mut trace);
    assert_eq!((d.target, d.rule), (Some(Target::Old), Rule::Header));
    let lines: Vec<String> =
        trace.steps.iter().map(|s| format!("{} {} {}", s.step, if s.matched { "yes" } else { "no" }, s.why)).collect();
    assert_eq!(
        lines,
        [
            "service yes Host \"api.example.com\" is served by service api",
            "enabled no migration.enabled is true",
            "header_rules[0] no no header \"x-migration-target\"; the rule wants value \"new\"",
            "header_rules[1] no cookie \"canary\" is \"never\"; the rule wants value \"always\"",
            "header_rules[2] yes cookie \"canary\" is \"never\", matches value \"never\" -> old",
        ]
    );

    let r = OwnedRequest::new("api.example.com").header("X-User-ID", "u-17").client("10.20.3.4");
    let mut trace = Trace::default();
    decide_traced(&config, ServiceChoice::Auto, &r, &mut || 0, &migration_engine::NoBreakers, &mut trace);
    let last = trace.steps.last().unwrap();
    assert_eq!(
        (last.step.as_str(), last.why.as_str()),
        ("ip_rules", "client 10.20.3.4 is in ip_rules[0] (10.20.0.0/16), the first listed rule that holds it -> new")
    );
    // A rule of several networks names the one that holds the client (an
    // IPv4-mapped IPv6 client is held by the IPv4 network).
    for (client, network) in [("fd00::1", "fd00::/8"), ("10.9.9.9", "10.0.0.0/8"), ("::ffff:10.9.9.9", "10.0.0.0/8")] {
        let r = OwnedRequest::new("api.example.com").header("X-User-ID", "u-17").client(client);
        let mut trace = Trace::default();
        decide_traced(&config, ServiceChoice::Auto, &r, &mut || 0, &migration_engine::NoBreakers, &mut trace);
        assert_eq!(
            trace.steps.last().unwrap().why,
            format!("client {client} is in ip_rules[1] ({network}), the first listed rule that holds it -> old"),
            "client {client}"
        );
    }

    let r = OwnedRequest::new("api.example.com").header("X-User-ID", "u-17").client("8.8.8.8");
    let mut trace = Trace::default();
    let d = decide_traced(&config, ServiceChoice::Auto, &r, &mut || 0, &migration_engine::NoBreakers, &mut trace);
    let hash = nginx_murmur2(b"s-u-17");
    // split_clients' bound at 30 %: 3000 * 0xffffffff / 10000.
    let bound = (3000u64 * 0xffff_ffff / 10_000) as u32;
    let side = if admits(3000, hash) { "new" } else { "old" };
    let cmp = if admits(3000, hash) { "<" } else { ">=" };
    assert_eq!(d.target.unwrap().as_str(), side);
    assert_eq!(
        trace.steps.last().unwrap().why,
        format!("strategy user: murmur2 of user id \"u-17\" salted \"s-\" = {hash:#010x} {cmp} threshold {bound:#010x} for 30 % -> {side}")
    );
}

/// A service without ip rules or user lists traces no step for them, and says
/// "no user rules" rather than "in no user rule".
#[test]
fn a_trace_has_no_steps_for_rules_a_service_does_not_have() {
    let text = "services:
  - name: plain
    old_host: plain.example.com
    old_backend: old:80
    new_host: plain.example.com
    new_backend: new:80
    migration: {strategy: weight, percentage: 50}
  - name: users
    old_host: users.example.com
    old_backend: old:80
    new_host: users.example.com
    new_backend: new:80
    migration: {strategy: user, percentage: 50, user_key: \"header:X-User-ID\"}
";
    let config = migration_engine::load_str("t.yaml", text).unwrap();
    let steps = |host: &str| {
        let r = OwnedRequest::new(host).header("X-User-ID", "zed").client("10.1.1.1");
        let mut trace = Trace::default();
        decide_traced(&config, ServiceChoice::Auto, &r, &mut || 0, &migration_engine::NoBreakers, &mut trace);
        trace.steps.iter().map(|s| (s.step.clone(), s.why.clone())).collect::<Vec<_>>()
    };
    let names = |steps: &[(String, String)]| steps.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&steps("plain.example.com")), ["service", "enabled", "fallback", "weight"]);
    let users = steps("users.example.com");
    assert_eq!(names(&users), ["service", "enabled", "fallback", "user_rules", "user_hash"]);
    assert_eq!(users[3].1, "user id \"zed\" (user_key header \"x-user-id\"); no user rules");
}

/// The wording of the steps: values quoted with escapes and cut at 64 bytes,
/// rule counts, value lists, no client address, a user-strategy draw.
#[test]
fn trace_wording_quotes_escapes_and_counts() {
    let config = migration_engine::load_str("t.yaml", YAML).unwrap();
    let why = |r: &OwnedRequest, step: &str| {
        let mut trace = Trace::default();
        decide_traced(&config, ServiceChoice::Auto, r, &mut || 0, &migration_engine::NoBreakers, &mut trace);
        trace
            .steps
            .iter()
            .find(|s| s.step == step)
            .map(|s| s.why.clone())
            .unwrap_or_else(|| panic!("no {step} in {trace:?}"))
    };
    let host = || OwnedRequest::new("api.example.com");
    // A quote, a backslash and a byte outside printable ASCII, escaped.
    let r = host().header("X-Migration-Target", b"a\"b\\c\x7f".as_slice());
    assert_eq!(
        why(&r, "header_rules[0]"),
        r#"header "x-migration-target" is "a\"b\\c\x7f"; the rule wants value "new""#
    );
    // Cut after 64 bytes, and only then.
    let r = host().header("X-Migration-Target", "v".repeat(64));
    assert_eq!(
        why(&r, "header_rules[0]"),
        format!("header \"x-migration-target\" is \"{}\"; the rule wants value \"new\"", "v".repeat(64))
    );
    let r = host().header("X-Migration-Target", "v".repeat(65));
    assert_eq!(
        why(&r, "header_rules[0]"),
        format!("header \"x-migration-target\" is \"{}\"…; the rule wants value \"new\"", "v".repeat(64))
    );
    // A short value list has no ellipsis.
    assert!(why(&host(), "header_rules[3]").contains(r#"values ["1", "yes"]"#), "{}", why(&host(), "header_rules[3]"));
    // from: with a client inside, outside, and without a client address.
    let r = host().args("beta=1").client("8.8.8.8");
    assert_eq!(
        why(&r, "header_rules[3]"),
        "arg \"beta\" is \"1\", matches values [\"1\", \"yes\"], but client 8.8.8.8 is not in from:"
    );
    let r = host().args("beta=1").client("10.1.1.1");
    assert_eq!(
        why(&r, "header_rules[3]"),
        "arg \"beta\" is \"1\", matches values [\"1\", \"yes\"], and client 10.1.1.1 is in from: -> new"
    );
    let r = host().args("beta=1");
    assert_eq!(
        why(&r, "header_rules[3]"),
        "arg \"beta\" is \"1\", matches values [\"1\", \"yes\"], but the request has no client address for from:"
    );
    // No client address: the ip rules are not tried, and their number is said.
    assert_eq!(why(&host(), "ip_rules"), "no client address; the 2 ip rules not tried");
    // A user id in no list of a service that has lists.
    let r = host().header("X-User-ID", "zed").client("8.8.8.8");
    assert_eq!(why(&r, "user_rules"), "user id \"zed\" (user_key header \"x-user-id\") is in no user rule");
    // Strategy user without a user id: a random draw, saying why.
    let r = host().client("8.8.8.8");
    let draw = why(&r, "weight");
    assert!(draw.starts_with("random draw (strategy user without a user id): new with probability 30 %"), "{draw}");
}
