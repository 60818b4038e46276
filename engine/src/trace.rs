//! Traces of the decision: what [`crate::decide::decide_traced`] reports, step by
//! step, when asked (`nginx-migration explain`). The decision order lives in
//! `decide.rs` only; this module holds the words.
//!
//! A [`Tracer`] whose `ENABLED` is false (the module's [`NoTrace`]) makes every
//! `if T::ENABLED { .. }` in the decision dead code: nothing is built, nothing
//! is called, and the request path of nginx is the untraced one.

use std::fmt;
use std::net::IpAddr;

use crate::breaker::Gate;
use crate::compiled::CompiledHeaderRule;
use crate::config::{RuleSource, Strategy, Target, UserKey};
use crate::decide::{Rule, ServiceChoice};
use crate::hash::Threshold;

/// Receives the steps of one decision, in decision order.
pub trait Tracer {
    /// False: the decision reports nothing, and costs nothing more.
    const ENABLED: bool;
    fn step(&mut self, step: Step<'_>);
}

/// The tracer of the request path: reports nothing.
pub struct NoTrace;

impl Tracer for NoTrace {
    const ENABLED: bool = false;
    #[inline(always)]
    fn step(&mut self, _: Step<'_>) {}
}

/// The client address check of a header rule's `from:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FromCheck {
    pub client: Option<IpAddr>,
    pub inside: bool,
}

/// One step of the decision order, as the decision saw it.
#[derive(Clone, Copy, Debug)]
pub enum Step<'a> {
    /// Step 1: which service the request belongs to.
    Service { choice: ServiceChoice<'a>, host: &'a [u8], found: Option<(u32, &'a str)> },
    /// Step 2: the rollback switch.
    Enabled { enabled: bool },
    /// Step 3: one header rule (a header, cookie or argument), tried in order.
    HeaderRule {
        index: usize,
        rule: &'a CompiledHeaderRule,
        /// The first occurrence of the header, cookie or argument.
        value: Option<&'a [u8]>,
        value_matches: bool,
        /// Checked only when the value matched and the rule has `from:`.
        from: Option<FromCheck>,
    },
    /// Step 4: the fallback breaker: `gate` is None when the service has no breaker
    /// (or no breaker state is kept); `trial` says, for a half-open breaker,
    /// whether this request took the trial.
    Fallback { configured: bool, gate: Option<Gate>, trial: Option<bool> },
    /// Step 5: the ip rules (one table lookup): the first listed rule whose networks
    /// hold the client, and the network that does.
    IpRules { client: Option<IpAddr>, hit: Option<(usize, Option<ipnet::IpNet>, Target)>, rules: usize },
    /// Step 6: the user id read through `user_key`, and the user rules.
    UserList { key: &'a UserKey, user: Option<&'a [u8]>, listed: Option<Target>, lists: bool },
    /// Step 7: the percentage split.
    Split {
        strategy: Strategy,
        rule: Rule,
        /// The hashed key (user id, or client address text), when hashed.
        key: Option<&'a [u8]>,
        salt: &'a [u8],
        hash: Option<u32>,
        /// The random draw of a weight decision (none at 0 %).
        draw: Option<u32>,
        percentage_bp: u32,
        threshold: Threshold,
        admitted: bool,
    },
}

impl Step<'_> {
    /// The step's name: `service`, `enabled`, `header_rules[N]`, `fallback`,
    /// `ip_rules`, `user_rules`, or the split's rule (`user_hash`, `ip_hash`,
    /// `weight`).
    pub fn name(&self) -> String {
        match self {
            Step::Service { .. } => "service".into(),
            Step::Enabled { .. } => "enabled".into(),
            Step::HeaderRule { index, .. } => format!("header_rules[{index}]"),
            Step::Fallback { .. } => "fallback".into(),
            Step::IpRules { .. } => "ip_rules".into(),
            Step::UserList { .. } => "user_rules".into(),
            Step::Split { rule, .. } => rule.as_str().into(),
        }
    }

    /// Whether this step decided (for `service`: whether a service matched).
    pub fn matched(&self) -> bool {
        match *self {
            Step::Service { found, .. } => found.is_some(),
            Step::Enabled { enabled } => !enabled,
            Step::HeaderRule { value_matches, from, .. } => value_matches && from.is_none_or(|f| f.inside),
            Step::Fallback { gate, trial, .. } => {
                matches!((gate, trial), (Some(Gate::Divert), _) | (Some(Gate::Probe), Some(false)))
            }
            Step::IpRules { hit, .. } => hit.is_some(),
            Step::UserList { listed, .. } => listed.is_some(),
            Step::Split { .. } => true,
        }
    }
}

/// Bytes as a quoted string, escaped where not printable ASCII, cut after 64.
pub(crate) fn quoted(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes.iter().take(64) {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    if bytes.len() > 64 {
        out.push('…');
    }
    out
}

fn ip_rules(n: usize) -> String {
    if n == 1 {
        "the ip rule".to_owned()
    } else {
        format!("the {n} ip rules")
    }
}

fn client_text(client: Option<IpAddr>) -> String {
    client.map_or_else(|| "no client address".to_owned(), |ip| format!("client {ip}"))
}

/// A percentage in basis points as written in the YAML (`20`, `12.5`, `0.01`).
pub fn percentage_text(bp: u32) -> String {
    let text = format!("{}.{:02}", bp / 100, bp % 100);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Why the step decided or not, in one line.
impl fmt::Display for Step<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Step::Service { choice, host, found } => match (choice, found) {
                (ServiceChoice::Auto, Some((_, name))) => {
                    write!(f, "Host {} is served by service {name}", quoted(host))
                }
                (ServiceChoice::Auto, None) => write!(f, "no service lists Host {} in its hosts", quoted(host)),
                (ServiceChoice::Named(n), Some(_)) => write!(f, "migration_service {n}"),
                (ServiceChoice::Named(n), None) => write!(f, "no service named {n:?}"),
                (ServiceChoice::Index(_), Some((_, name))) => write!(f, "service {name}"),
                (ServiceChoice::Index(i), None) => write!(f, "no service at index {i}"),
            },
            Step::Enabled { enabled: true } => f.write_str("migration.enabled is true"),
            Step::Enabled { enabled: false } => {
                f.write_str("migration.enabled is false: everything goes to old (rollback switch)")
            }
            Step::HeaderRule { rule, value, value_matches, from, .. } => {
                let read = match value {
                    Some(v) => format!("{} is {}", rule.source(), quoted(v)),
                    None => format!("no {}", rule.source()),
                };
                let wants = rule.describe_match();
                let target = rule.target().as_str();
                match (value_matches, from) {
                    (false, _) => write!(f, "{read}; the rule wants {wants}"),
                    (true, None) => write!(f, "{read}, matches {wants} -> {target}"),
                    (true, Some(FromCheck { client, inside: true })) => {
                        write!(f, "{read}, matches {wants}, and {} is in from: -> {target}", client_text(client))
                    }
                    (true, Some(FromCheck { client: None, .. })) => {
                        write!(f, "{read}, matches {wants}, but the request has no client address for from:")
                    }
                    (true, Some(FromCheck { client, inside: false })) => {
                        write!(f, "{read}, matches {wants}, but {} is not in from:", client_text(client))
                    }
                }
            }
            Step::Fallback { configured: false, .. } => f.write_str("no fallback: configured"),
            Step::Fallback { gate: None, .. } => f.write_str("fallback breaker closed"),
            Step::Fallback { gate: Some(gate), trial, .. } => match (gate, trial) {
                (Gate::Pass, _) => f.write_str("fallback breaker closed"),
                (Gate::Divert, _) => f.write_str("fallback breaker open (new is failing): -> old"),
                (Gate::Probe, None) => {
                    f.write_str("fallback breaker half-open: a request bound for new may be the trial")
                }
                (Gate::Probe, Some(true)) => {
                    f.write_str("fallback breaker half-open: this request is the trial -> new")
                }
                (Gate::Probe, Some(false)) => {
                    f.write_str("fallback breaker half-open: not the trial (or bound for old) -> old")
                }
            },
            Step::IpRules { client, hit, rules } => match (client, hit) {
                (None, _) => write!(f, "no client address; {} not tried", ip_rules(rules)),
                (Some(ip), Some((rule, net, target))) => {
                    let net = net.map_or_else(String::new, |n| format!(" ({n})"));
                    write!(
                        f,
                        "client {ip} is in ip_rules[{rule}]{net}, the first listed rule that holds it -> {}",
                        target.as_str()
                    )
                }
                (Some(ip), None) => write!(f, "client {ip} is in no network of {}", ip_rules(rules)),
            },
            Step::UserList { key, user, listed, lists } => {
                let source = match key {
                    UserKey::Header(n) => format!("header {n:?}"),
                    UserKey::Cookie(n) => format!("cookie {n:?}"),
                    UserKey::Arg(n) => format!("arg {n:?}"),
                    UserKey::Var(n) => format!("variable ${n}"),
                };
                match (user, listed) {
                    (None, _) => write!(f, "no user id (user_key {source} is absent or empty)"),
                    (Some(u), Some(t)) => {
                        write!(f, "user id {} (user_key {source}) is listed -> {}", quoted(u), t.as_str())
                    }
                    (Some(u), None) if lists => {
                        write!(f, "user id {} (user_key {source}) is in no user rule", quoted(u))
                    }
                    (Some(u), None) => write!(f, "user id {} (user_key {source}); no user rules", quoted(u)),
                }
            }
            Step::Split { strategy, rule, key, salt, hash, draw, percentage_bp, threshold, admitted } => {
                let percentage = percentage_text(percentage_bp);
                let target = if admitted { "new" } else { "old" };
                let bound = if percentage_bp >= 10_000 {
                    "every hash (100 %)".to_owned()
                } else {
                    format!("{:#010x}", threshold.bound())
                };
                match (rule, hash) {
                    (Rule::UserHash | Rule::IpHash, Some(hash)) => {
                        let what = if rule == Rule::UserHash { "user id" } else { "client address" };
                        let salt = if salt.is_empty() { String::new() } else { format!(" salted {}", quoted(salt)) };
                        let cmp = if admitted { "<" } else { ">=" };
                        write!(
                            f,
                            "strategy {}: murmur2 of {what} {}{salt} = {hash:#010x} {cmp} threshold {bound} for {percentage} % -> {target}",
                            strategy.as_str(),
                            quoted(key.unwrap_or_default()),
                        )
                    }
                    _ => {
                        let why = match strategy {
                            Strategy::User => " (strategy user without a user id)",
                            _ => "",
                        };
                        match draw {
                            Some(d) => write!(
                                f,
                                "random draw{why}: new with probability {percentage} %; this draw {d:#010x} -> {target}"
                            ),
                            None => write!(f, "random draw{why}: new with probability 0 % -> old"),
                        }
                    }
                }
            }
        }
    }
}

/// One step of a trace, owned: what `explain` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracedStep {
    pub step: String,
    pub matched: bool,
    pub why: String,
}

/// Collects the steps of a decision.
#[derive(Default, Debug)]
pub struct Trace {
    pub steps: Vec<TracedStep>,
}

impl Tracer for Trace {
    const ENABLED: bool = true;
    fn step(&mut self, step: Step<'_>) {
        self.steps.push(TracedStep { step: step.name(), matched: step.matched(), why: step.to_string() });
    }
}

impl CompiledHeaderRule {
    /// What the rule reads.
    pub fn source(&self) -> &RuleSource {
        &self.source
    }

    pub fn target(&self) -> Target {
        self.target
    }

    /// The rule's matcher in words: `value "new"`, `values ["a", "b"]`,
    /// `pattern "^b"`, `present: true`.
    pub fn describe_match(&self) -> String {
        use crate::compiled::Matcher;
        let list = |values: &mut dyn Iterator<Item = &[u8]>| {
            let mut shown: Vec<String> = values.take(8).map(quoted).collect();
            if shown.len() == 8 {
                shown.push("…".into());
            }
            format!("values [{}]", shown.join(", "))
        };
        match &self.matcher {
            Matcher::Value(v) => format!("value {}", quoted(v)),
            Matcher::Few(vs) => list(&mut vs.iter().map(|v| &**v)),
            Matcher::Many(vs) => {
                let mut sorted: Vec<&[u8]> = vs.iter().map(|v| &**v).collect();
                sorted.sort_unstable();
                list(&mut sorted.into_iter())
            }
            Matcher::Pattern(re) => format!("pattern {}", quoted(re.as_str().as_bytes())),
            Matcher::Present(p) => format!("present: {p}"),
        }
    }
}
