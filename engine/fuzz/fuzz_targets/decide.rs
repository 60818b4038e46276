//! `decide`: one fixed, rich configuration; an arbitrary request (Host, headers,
//! cookies, arguments, client address and its text, all arbitrary bytes) and
//! fallback breakers put in arbitrary states by arbitrary `record`/`gate`/
//! `begin_trial` calls at an arbitrary clock. Nothing a client sends may crash a
//! worker (docs/yaml.md, "Errors"), and every decision keeps the invariants of
//! docs/decision.md.

#![no_main]

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use migration_engine::{
    decide, decide_traced, decide_with, load_str, BreakerCells, BreakerState, Breakers, CompiledConfig, Decision,
    NoBreakers, Outcome, OwnedRequest, Rule, ServiceChoice, Target, Trace, Transition,
};

/// Every kind of rule: wildcard hosts, header rules of every kind (value, few and
/// many values, pattern, present true/false, `from:` in IPv4 and IPv6), ip_rules
/// over both families (and an IPv4-mapped IPv6 network), user_rules, the three
/// strategies, the three kinds of user_key, a disabled service, `fallback:`, and a
/// service with more header names than the stack slots of `header_rule_target`.
const YAML: &str = r#"
version: "fuzz-1"
services:
  - name: api
    hosts: [api.example.com, "*.api.example.com", API.Example.ORG]
    old_host: api.example.com
    old_backend: old.svc:8078
    new_host: api.kong.example.com
    new_backend: api.kong.example.com:443
    migration:
      strategy: user
      percentage: 30
      user_key: header:X-User-ID
      hash_salt: "salt-"
    canary:
      header_rules:
        - header: X-Migration-Target
          value: new
          target: new_cluster
        - header: X-Migration-Target
          value: old
          target: old_cluster
        - header: X-Beta
          values: [yes, "1", "true"]
          target: new
        - header: X-Region
          values: [eu-1, eu-2, eu-3, us-1, us-2, us-3, ap-1, ap-2, ap-3, sa-1]
          target: new
        - header: User-Agent
          pattern: "(?i)^curl/[0-9]+\\.|bot"
          target: old
        - header: X-Canary
          present: true
          target: new
          from: [10.0.0.0/8, "2001:db8::/32", 192.168.1.7]
        - header: X-Legacy-Client
          present: false
          target: old
          from: ["::ffff:172.16.0.0/108"]
        - {cookie: canary, value: always, target: new}
        - {cookie: canary, value: never, target: old}
        - {arg: beta, values: ["1", "yes"], target: new, from: [10.0.0.0/8]}
      ip_rules:
        - cidr: 10.20.0.0/16
          target: new_cluster
        - cidrs: [10.0.0.0/8, "fd00::/8"]
          target: old_cluster
        - cidr: "2001:db8:1::/48"
          target: new
        - cidr: 0.0.0.0/0
          target: old
      user_rules:
        - users: [alice, bob]
          target: new_cluster
        - users: [mallory, alice]
          target: old_cluster
    fallback:
      failures: 3
      statuses: [500, 502, 599, 100]
      cooldown: 500ms

  - name: shop
    hosts: ["*.shop.example.com", "*.example.com", shop.example.net]
    old_host: shop.example.com
    old_backend: https://shop-old.svc:8443
    new_host: shop.new.example.com
    new_backend: shop-upstream
    migration:
      strategy: weight
      percentage: 33.33
    fallback: {}

  - name: legacy
    hosts: [legacy.example.com, "*.legacy.example.com"]
    old_host: legacy.example.com
    old_backend: legacy-old:80
    new_host: legacy.new.example.com
    new_backend: "[::1]:443"
    migration:
      enabled: false
      strategy: user
      percentage: 100
      user_key: cookie:uid
    canary:
      header_rules:
        - header: X-Migration-Target
          value: new
          target: new
      ip_rules:
        - cidr: 0.0.0.0/0
          target: new
        - cidr: "::/0"
          target: new
      user_rules:
        - users: [alice]
          target: new

  - name: by-ip
    hosts: [ip.example.com]
    old_host: ip.example.com
    old_backend: ip-old:80
    new_host: ip.new.example.com
    new_backend: ip-new:443
    migration:
      strategy: ip
      percentage: 50
      user_key: cookie:uid
    canary:
      header_rules:
        - header: Cookie
          pattern: "(^|; )force=new(;|$)"
          target: new
      user_rules:
        - users: [carol, "dave=1"]
          target: new
        - users: [erin]
          target: old
    fallback:
      failures: 1
      statuses: [503]
      cooldown: 100ms

  - name: by-arg
    hosts: [arg.example.com, "*.arg.example.com"]
    old_host: arg.example.com
    old_backend: arg-old:80
    new_host: arg.new.example.com
    new_backend: arg-new:443
    migration:
      strategy: user
      percentage: 100
      user_key: arg:uid
    canary:
      header_rules:
        - {header: h00, value: a, target: old}
        - {header: h01, value: a, target: old}
        - {header: h02, value: a, target: old}
        - {header: h03, value: a, target: old}
        - {header: h04, value: a, target: old}
        - {header: h05, value: a, target: old}
        - {header: h06, value: a, target: old}
        - {header: h07, value: a, target: old}
        - {header: h08, value: a, target: old}
        - {header: h09, value: a, target: old}
        - {header: h10, value: a, target: old}
        - {header: h11, value: a, target: old}
        - {header: h12, value: a, target: old}
        - {header: h13, value: a, target: old}
        - {header: h14, value: a, target: old}
        - {header: h15, value: a, target: old}
        - {header: a-header-name-that-is-longer-than-sixty-four-bytes-to-skip-the-length-filter, present: true, target: new}
        - {header: h16, pattern: "^b+$", target: new, from: ["::/0"]}
      user_rules:
        - users: [zed]
          target: old
    fallback:
      failures: 1000
      cooldown: 24h

  - name: bare
    hosts: [bare.example.com]
    old_host: bare.example.com
    old_backend: bare-old:80
    new_host: bare.new.example.com
    new_backend: bare-new:80
"#;

const SERVICES: [&str; 6] = ["api", "shop", "legacy", "by-ip", "by-arg", "bare"];
const LEGACY: u32 = 2;

const HOSTS: [&str; 14] = [
    "api.example.com",
    "x.api.example.com",
    "api.example.org",
    "a.b.shop.example.com",
    "www.example.com",
    "example.com",
    "shop.example.net",
    "legacy.example.com",
    "x.legacy.example.com",
    "ip.example.com",
    "arg.example.com",
    "q.arg.example.com",
    "bare.example.com",
    "[2001:db8::1]",
];

const HEADER_NAMES: [&str; 16] = [
    "x-migration-target",
    "x-user-id",
    "cookie",
    "x-beta",
    "x-region",
    "user-agent",
    "x-canary",
    "x-legacy-client",
    "h00",
    "h07",
    "h15",
    "h16",
    "a-header-name-that-is-longer-than-sixty-four-bytes-to-skip-the-length-filter",
    "host",
    "x-real-ip",
    "",
];

const VALUES: [&str; 16] = [
    "new",
    "old",
    "yes",
    "1",
    "eu-3",
    "sa-1",
    "curl/8.1",
    "Googlebot",
    "a",
    "bbb",
    "alice",
    "bob",
    "mallory",
    "uid=carol; force=new",
    "uid=dave=1",
    "",
];

const ADDRESSES: [&str; 10] = [
    "10.20.1.2",
    "10.1.2.3",
    "192.168.1.7",
    "172.16.5.5",
    "8.8.8.8",
    "2001:db8::1",
    "2001:db8:1::5",
    "fd00::1",
    "::ffff:10.20.0.5",
    "::ffff:172.16.0.1",
];

#[derive(Arbitrary, Debug)]
enum Choice {
    Auto,
    Named(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Bytes {
    Known(u8),
    /// A known value with arbitrary bytes around it (a port, a dot, junk).
    Around(u8, Vec<u8>, Vec<u8>),
    Raw(Vec<u8>),
}

impl Bytes {
    fn get(&self, known: &[&str]) -> Vec<u8> {
        let pick = |i: u8| known[usize::from(i) % known.len()].as_bytes();
        match self {
            Bytes::Known(i) => pick(*i).to_vec(),
            Bytes::Around(i, before, after) => [before.as_slice(), pick(*i), after.as_slice()].concat(),
            Bytes::Raw(b) => b.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Client {
    None,
    Known(u8),
    V4([u8; 4]),
    V6([u8; 16]),
}

#[derive(Arbitrary, Debug)]
enum ClientText {
    /// As `$remote_addr` prints the address (empty when there is none).
    Canonical,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum OutcomeSpec {
    Success,
    Failure(u16),
    /// A status the service's policy counts as a failure, else a success.
    Status(u16),
    Inconclusive,
}

#[derive(Arbitrary, Debug)]
enum Clock {
    Advance(u16),
    Jump(u64),
}

#[derive(Arbitrary, Debug)]
enum OpKind {
    Record {
        outcome: OutcomeSpec,
        trial: bool,
    },
    Gate,
    BeginTrial,
    /// A full request cycle through decide_with, its outcome recorded as the glue does.
    Request {
        draw: u32,
        outcome: OutcomeSpec,
    },
}

#[derive(Arbitrary, Debug)]
struct Op {
    service: u8,
    clock: Clock,
    kind: OpKind,
}

#[derive(Arbitrary, Debug)]
struct Input {
    choice: Choice,
    host: Bytes,
    headers: Vec<(Bytes, Bytes)>,
    args: Vec<u8>,
    client: Client,
    client_text: ClientText,
    ops: Vec<Op>,
    clock: Clock,
    draw: u32,
}

struct FuzzBreakers {
    cells: Vec<BreakerCells>,
    now: u64,
}

impl Breakers for FuzzBreakers {
    fn breaker(&self, index: u32) -> Option<&BreakerCells> {
        self.cells.get(index as usize)
    }
    fn now_ms(&self) -> u64 {
        self.now
    }
}

impl FuzzBreakers {
    fn tick(&mut self, clock: &Clock) {
        self.now = match *clock {
            Clock::Advance(ms) => self.now.saturating_add(u64::from(ms)),
            Clock::Jump(t) => t,
        };
    }
}

fn config() -> &'static CompiledConfig {
    static CONFIG: OnceLock<CompiledConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let c = load_str("decide.yaml", YAML).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), SERVICES);
        c
    })
}

fn outcome(config: &CompiledConfig, service: usize, spec: &OutcomeSpec) -> Outcome {
    match *spec {
        OutcomeSpec::Success => Outcome::Success,
        OutcomeSpec::Failure(status) => Outcome::Failure(status),
        OutcomeSpec::Status(status) => match &config.services[service].fallback {
            Some(policy) if policy.is_failure(status) => Outcome::Failure(status),
            _ => Outcome::Success,
        },
        OutcomeSpec::Inconclusive => Outcome::Inconclusive,
    }
}

fn request(input: &Input) -> OwnedRequest {
    let client = match input.client {
        Client::None => None,
        Client::Known(i) => Some(ADDRESSES[usize::from(i) % ADDRESSES.len()].parse::<IpAddr>().unwrap()),
        Client::V4(o) => Some(IpAddr::V4(Ipv4Addr::from(o))),
        Client::V6(o) => Some(IpAddr::V6(Ipv6Addr::from(o))),
    };
    let client_text = match &input.client_text {
        ClientText::Canonical => client.map(|ip| ip.to_string().into_bytes()).unwrap_or_default(),
        ClientText::Raw(b) => b.clone(),
    };
    OwnedRequest {
        host: input.host.get(&HOSTS),
        // The glue gives lowercase names (RequestView's contract), bytes as sent.
        headers: input
            .headers
            .iter()
            .map(|(n, v)| (n.get(&HEADER_NAMES).to_ascii_lowercase(), v.get(&VALUES)))
            .collect(),
        args: input.args.clone(),
        client,
        client_text,
        // No user_key: var:NAME in the fuzzed configuration.
        variables: Vec::new(),
        // A request that carries its id, or none: nothing is minted.
        sticky_id: None,
    }
}

/// The invariants of every decision.
fn check(config: &CompiledConfig, d: &Decision, named: Option<u32>) {
    assert_eq!(d.target.is_none(), d.rule == Rule::None, "{d:?}");
    assert_eq!(d.service.is_none(), d.target.is_none(), "{d:?}");
    if matches!(d.rule, Rule::Disabled | Rule::Fallback) {
        assert_eq!(d.target, Some(Target::Old), "{d:?}");
    }
    if d.trial.is_some() {
        assert_eq!(d.target, Some(Target::New), "{d:?}");
        assert_ne!(d.rule, Rule::Header, "{d:?}: header rules never take the trial");
    }
    assert!(matches!(d.transition, None | Some(Transition::HalfOpened)), "{d:?}");
    if let Some(i) = d.service {
        let s = &config.services[i as usize];
        assert_eq!(s.enabled, d.rule != Rule::Disabled, "{d:?}: service {}", s.name);
        if d.rule == Rule::Fallback || d.trial.is_some() || d.transition.is_some() {
            assert!(s.fallback.is_some(), "{d:?}: service {} has no fallback", s.name);
        }
    }
    if d.service == Some(LEGACY) {
        assert_eq!(d.rule, Rule::Disabled, "{d:?}");
    }
    if let Some(n) = named {
        assert_eq!(d.service, Some(n), "{d:?}");
    }
}

fuzz_target!(|input: Input| {
    let config = config();
    let n = config.services.len();
    let mut breakers = FuzzBreakers { cells: (0..n).map(|_| BreakerCells::default()).collect(), now: 0 };
    // The last permit each service's breaker gave (a record with `trial` uses
    // it, taken over or not).
    let mut permits = vec![None; n];

    // Put the breakers in arbitrary states.
    for op in input.ops.iter().take(64) {
        breakers.tick(&op.clock);
        let i = usize::from(op.service) % n;
        let (failures, cooldown) =
            config.services[i].fallback.as_ref().map_or((5, 30_000), |p| (p.failures, p.cooldown_ms));
        let now = breakers.now;
        let cells = &breakers.cells[i];
        match &op.kind {
            OpKind::Record { outcome: spec, trial } => {
                let before = cells.state();
                let permit = if *trial { permits[i] } else { None };
                let t = cells.record(outcome(config, i, spec), permit, failures, now);
                match t {
                    Some(Transition::Opened { .. }) => assert_eq!(before, BreakerState::Closed),
                    Some(Transition::Closed) => assert_eq!(cells.state(), BreakerState::Closed),
                    Some(Transition::Reopened { .. }) => assert_eq!(cells.state(), BreakerState::Open),
                    Some(Transition::HalfOpened) => panic!("record never half-opens"),
                    None => {}
                }
            }
            OpKind::Gate => {
                let _ = cells.gate(now, cooldown);
            }
            OpKind::BeginTrial => {
                if let Some(permit) = cells.begin_trial(now, cooldown) {
                    permits[i] = Some(permit);
                }
            }
            OpKind::Request { draw, outcome: spec } => {
                let d =
                    decide_with(config, ServiceChoice::Named(SERVICES[i]), &request(&input), &mut || *draw, &breakers);
                check(config, &d, Some(i as u32));
                if d.target == Some(Target::New) {
                    let cells = &breakers.cells[i];
                    cells.record(outcome(config, i, spec), d.trial, failures, now);
                }
            }
        }
    }
    breakers.tick(&input.clock);

    let request = request(&input);
    let (choice, named) = match &input.choice {
        Choice::Auto => (ServiceChoice::Auto, None),
        Choice::Named(i) => {
            let i = usize::from(*i) % n;
            (ServiceChoice::Named(SERVICES[i]), Some(i as u32))
        }
        Choice::Raw(name) => (ServiceChoice::Named(name.as_str()), config.service_index(name)),
    };

    // Without breakers: the plain decision.
    let calls = Cell::new(0u32);
    let mut draw = || {
        calls.set(calls.get() + 1);
        input.draw
    };
    let plain = decide(config, choice, &request, &mut draw);
    check(config, &plain, named);
    assert!(calls.get() <= 1, "the draw ran {} times", calls.get());
    assert!(plain.trial.is_none() && plain.transition.is_none() && plain.rule != Rule::Fallback, "{plain:?}");
    if let (Choice::Raw(_), None) = (&input.choice, named) {
        assert_eq!(plain, Decision::NO_SERVICE);
    }
    // The traced decision (`nginx-migration explain`) is the same decision.
    let mut trace = Trace::default();
    let traced = decide_traced(config, choice, &request, &mut || input.draw, &NoBreakers, &mut trace);
    assert_eq!(traced, plain, "{:?}", trace.steps);
    assert_eq!(trace.steps[0].matched, plain.service.is_some());

    // With the breakers in their fuzzed states.
    let state_before = plain.service.map(|i| breakers.cells[i as usize].state());
    calls.set(0);
    let with = decide_with(config, choice, &request, &mut draw, &breakers);
    check(config, &with, named);
    assert!(calls.get() <= 1, "the draw ran {} times", calls.get());
    assert_eq!(plain.service, with.service);
    if matches!(plain.rule, Rule::Header | Rule::Disabled) || state_before == Some(BreakerState::Closed) {
        assert_eq!(plain, with, "breakers only matter at step 4, and a closed one changes nothing");
    }
    if let Some(i) = with.service {
        let s = &config.services[i as usize];
        if s.fallback.is_none() {
            assert_eq!(plain, with, "a service without fallback ignores its breaker");
        }
        let after = breakers.cells[i as usize].state();
        if with.rule == Rule::Fallback || with.trial.is_some() {
            assert_ne!(after, BreakerState::Closed, "{with:?}");
        }
        if with.trial.is_some() {
            assert_eq!(after, BreakerState::HalfOpen, "{with:?}");
            assert_eq!(with.rule, plain.rule, "the trial is decided by the usual rules: {with:?} vs {plain:?}");
            assert_eq!(plain.target, Some(Target::New));
        }
        if with.transition == Some(Transition::HalfOpened) {
            assert_eq!(state_before, Some(BreakerState::Open));
        }
    }
});
