//! The decision order of docs/decision.md, as one function of
//! (compiled configuration, request view, random source).

use crate::breaker::{BreakerCells, Gate, Transition, TrialPermit};
use crate::compiled::{CompiledConfig, CompiledService};
use crate::config::{Strategy, Target, UserKey};
use crate::hash::{murmur2_salted, Threshold};
use crate::ramp::{RampInForce, RampStamp};
use crate::request::RequestView;
pub use crate::trace::{FromCheck, NoTrace, Step, Tracer};

/// What decided a request: the values of `$migration_rule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    Header,
    Cidr,
    UserList,
    UserHash,
    IpHash,
    Weight,
    Disabled,
    /// Decision step 4: the service's fallback breaker is open.
    Fallback,
    None,
}

impl Rule {
    pub const COUNT: usize = 9;

    pub const ALL: [Rule; Rule::COUNT] = [
        Rule::Header,
        Rule::Cidr,
        Rule::UserList,
        Rule::UserHash,
        Rule::IpHash,
        Rule::Weight,
        Rule::Disabled,
        Rule::Fallback,
        Rule::None,
    ];

    /// Position in [`Rule::ALL`], for counter tables.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Header => "header",
            Rule::Cidr => "cidr",
            Rule::UserList => "user_list",
            Rule::UserHash => "user_hash",
            Rule::IpHash => "ip_hash",
            Rule::Weight => "weight",
            Rule::Disabled => "disabled",
            Rule::Fallback => "fallback",
            Rule::None => "none",
        }
    }

    /// Decided by the percentage split (decision step 7): the traffic a ramp
    /// moves, and the only traffic its gate judges.
    #[inline]
    pub fn is_split(self) -> bool {
        matches!(self, Rule::UserHash | Rule::IpHash | Rule::Weight)
    }
}

/// The one decision of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Index of the matched service in [`CompiledConfig::services`].
    pub service: Option<u32>,
    /// `None` exactly when no service matched.
    pub target: Option<Target>,
    pub rule: Rule,
    /// This request is the one trial of a half-open breaker, with its permit:
    /// its outcome closes or re-opens it.
    pub trial: Option<TrialPermit>,
    /// The breaker changed state while deciding (reported to this request only).
    pub transition: Option<Transition>,
    /// The service's percentage in force (basis points): the configured one, or
    /// where its ramp stands. 0 when no service matched.
    pub percentage_bp: u32,
    /// Where the service's ramp stood when the percentage was read: the step
    /// whose window the response may join ([`crate::RampCells::record`]).
    pub ramp: Option<RampStamp>,
}

impl Decision {
    pub const NO_SERVICE: Decision = Decision {
        service: None,
        target: None,
        rule: Rule::None,
        trial: None,
        transition: None,
        percentage_bp: 0,
        ramp: None,
    };

    fn of(service: u32, target: Target, rule: Rule) -> Decision {
        Decision {
            service: Some(service),
            target: Some(target),
            rule,
            trial: None,
            transition: None,
            percentage_bp: 0,
            ramp: None,
        }
    }
}

/// The fallback breakers that decision step 4 consults.
pub trait Breakers {
    /// The breaker of service `index` (an index into [`CompiledConfig::services`]).
    fn breaker(&self, index: u32) -> Option<&BreakerCells>;
    /// Monotonic milliseconds, the clock of every process sharing the breakers.
    fn now_ms(&self) -> u64;
    /// The percentage a service's ramp puts in force, if it has one.
    fn ramp_in_force(&self, _index: u32) -> Option<RampInForce> {
        None
    }
}

/// Every breaker closed: for callers that keep no breaker state.
pub struct NoBreakers;

impl Breakers for NoBreakers {
    fn breaker(&self, _: u32) -> Option<&BreakerCells> {
        None
    }
    fn now_ms(&self) -> u64 {
        0
    }
}

/// How the service of a request is chosen (`migration_service`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceChoice<'a> {
    /// By the request's Host.
    Auto,
    /// This service, whatever the Host.
    Named(&'a str),
    /// The service at this index of [`CompiledConfig::services`], as the caller
    /// found it (an index out of range matches nothing).
    Index(u32),
}

/// Decides `old` or `new` for one request, with every fallback breaker closed.
///
/// `draw` gives a uniform 32-bit random number; it is called at most once, and only
/// when the percentage split is by weight.
pub fn decide<R: RequestView>(
    config: &CompiledConfig,
    choice: ServiceChoice<'_>,
    request: &R,
    draw: &mut dyn FnMut() -> u32,
) -> Decision {
    decide_with(config, choice, request, draw, &NoBreakers)
}

/// Decides `old` or `new` for one request, consulting the services' fallback
/// breakers at step 4.
pub fn decide_with<R: RequestView, B: Breakers + ?Sized>(
    config: &CompiledConfig,
    choice: ServiceChoice<'_>,
    request: &R,
    draw: &mut dyn FnMut() -> u32,
    breakers: &B,
) -> Decision {
    decide_traced(config, choice, request, draw, breakers, &mut NoTrace)
}

/// The decision order itself (docs/decision.md): every other entry point
/// calls this one function. `tracer` is told each step tried and why it decided
/// or not (`nginx-migration explain`); with [`NoTrace`] every report compiles
/// away (its `ENABLED` is a constant false), so the nginx path pays nothing.
pub fn decide_traced<R: RequestView, B: Breakers + ?Sized, T: Tracer>(
    config: &CompiledConfig,
    choice: ServiceChoice<'_>,
    request: &R,
    draw: &mut dyn FnMut() -> u32,
    breakers: &B,
    tracer: &mut T,
) -> Decision {
    let index = match choice {
        ServiceChoice::Auto => config.service_for_host(request.host()),
        ServiceChoice::Named(name) => config.service_index(name),
        ServiceChoice::Index(index) => (index < config.services.len() as u32).then_some(index),
    };
    if T::ENABLED {
        let name = index.map(|i| config.services[i as usize].name.as_str());
        tracer.step(Step::Service { choice, host: request.host(), found: index.zip(name) });
    }
    let Some(index) = index else {
        return Decision::NO_SERVICE;
    };
    let s = &config.services[index as usize];
    let ramp = breakers.ramp_in_force(index);
    let split = match ramp {
        Some(RampInForce { bp, .. }) if bp != s.percentage_bp => {
            Split { bp, threshold: Threshold::from_basis_points(bp) }
        }
        _ => Split { bp: s.percentage_bp, threshold: s.threshold },
    };
    let mut decision = decide_service(index, s, request, draw, breakers, split, tracer);
    // `enabled: false` sends everything to old: 0 % is in force.
    decision.percentage_bp = if s.enabled { split.bp } else { 0 };
    decision.ramp = ramp.and_then(|r| r.stamp);
    decision
}

/// The percentage split of step 7, as in force for this request.
#[derive(Clone, Copy)]
struct Split {
    bp: u32,
    threshold: Threshold,
}

/// Steps 2 to 7 for the matched service.
fn decide_service<R: RequestView, B: Breakers + ?Sized, T: Tracer>(
    index: u32,
    s: &CompiledService,
    request: &R,
    draw: &mut dyn FnMut() -> u32,
    breakers: &B,
    split: Split,
    tracer: &mut T,
) -> Decision {
    // 2. the rollback switch
    if T::ENABLED {
        tracer.step(Step::Enabled { enabled: s.enabled });
    }
    if !s.enabled {
        return Decision::of(index, Target::Old, Rule::Disabled);
    }
    // 3. header rules, first match wins (the same pass over the headers finds a
    // user id read from a header)
    let pass = header_pass(s, request, tracer);
    if let Some(target) = pass.target {
        return Decision::of(index, target, Rule::Header);
    }
    let user = UserId(pass.user);
    // 4. the fallback breaker
    let Some((policy, cells)) = s.fallback.as_ref().zip(breakers.breaker(index)) else {
        if T::ENABLED {
            tracer.step(Step::Fallback { configured: s.fallback.is_some(), gate: None, trial: None });
        }
        let (target, rule) = decide_by_rules(s, request, user, split, draw, tracer);
        return Decision::of(index, target, rule);
    };
    let now = breakers.now_ms();
    let (gate, transition) = cells.gate(now, policy.cooldown_ms);
    if T::ENABLED {
        tracer.step(Step::Fallback { configured: true, gate: Some(gate), trial: None });
    }
    let mut decision = match gate {
        Gate::Pass => {
            let (target, rule) = decide_by_rules(s, request, user, split, draw, tracer);
            Decision::of(index, target, rule)
        }
        Gate::Divert => Decision::of(index, Target::Old, Rule::Fallback),
        Gate::Probe => {
            let (target, rule) = decide_by_rules(s, request, user, split, draw, tracer);
            let permit = if target == Target::New { cells.begin_trial(now, policy.cooldown_ms) } else { None };
            if T::ENABLED {
                tracer.step(Step::Fallback { configured: true, gate: Some(gate), trial: Some(permit.is_some()) });
            }
            match permit {
                Some(permit) => Decision { trial: Some(permit), ..Decision::of(index, Target::New, rule) },
                None => Decision::of(index, Target::Old, Rule::Fallback),
            }
        }
    };
    decision.transition = transition;
    decision
}

/// A user id from a header, found by the header pass; ids from cookies,
/// arguments and variables are read only when a step needs one.
#[derive(Clone, Copy)]
struct UserId<'r>(Option<&'r [u8]>);

/// Steps 5 to 7.
#[inline(always)]
fn decide_by_rules<'r, R: RequestView, T: Tracer>(
    s: &CompiledService,
    request: &'r R,
    header_user: UserId<'r>,
    split: Split,
    draw: &mut dyn FnMut() -> u32,
    tracer: &mut T,
) -> (Target, Rule) {
    let client = request.client_ip();
    // 5. ip rules
    let hit = client.and_then(|ip| s.ip_table.lookup(ip));
    if T::ENABLED && !s.ip_table.is_empty() {
        let hit = hit.zip(client).map(|(rule, ip)| {
            let net = s.ip_networks[rule as usize].iter().copied().find(|n| crate::cidr::network_contains(n, ip));
            (rule as usize, net, s.ip_targets[rule as usize])
        });
        tracer.step(Step::IpRules { client, hit, rules: s.ip_networks.len() });
    }
    if let Some(rule) = hit {
        return (s.ip_targets[rule as usize], Rule::Cidr);
    }
    // 6. explicit users
    let user = match &s.user_key {
        _ if !s.needs_user_id() => None,
        UserKey::Header(_) => header_user.0.filter(|v| !v.is_empty()),
        // A sticky service's client without an id gets one: decided as the
        // same client coming back with it will be.
        key => user_id(key, request).or_else(|| s.sticky.as_ref().and_then(|_| request.sticky_id())),
    };
    let listed = user.and_then(|u| s.users.get(u)).copied();
    if T::ENABLED && s.needs_user_id() {
        tracer.step(Step::UserList { key: &s.user_key, user, listed, lists: !s.users.is_empty() });
    }
    if let Some(target) = listed {
        return (target, Rule::UserList);
    }
    // 7. the percentage split (as in force: a ramp may have moved it)
    let mut drawn = None;
    let mut key = None;
    let (admitted, rule, hash) = match (s.strategy, user) {
        (Strategy::User, Some(user)) => {
            key = Some(user);
            let hash = murmur2_salted(&s.salt, user);
            (split.threshold.admits(hash), Rule::UserHash, Some(hash))
        }
        (Strategy::Ip, _) => {
            let text = request.client_addr_text();
            key = Some(text);
            let hash = murmur2_salted(&s.salt, text);
            (split.threshold.admits(hash), Rule::IpHash, Some(hash))
        }
        _ => {
            let admitted = split.bp > 0 && {
                let value = draw();
                if T::ENABLED {
                    drawn = Some(value);
                }
                split.threshold.admits(value)
            };
            (admitted, Rule::Weight, None)
        }
    };
    if T::ENABLED {
        tracer.step(Step::Split {
            strategy: s.strategy,
            rule,
            key,
            salt: &s.salt,
            hash,
            draw: drawn,
            percentage_bp: split.bp,
            threshold: split.threshold,
            admitted,
        });
    }
    (if admitted { Target::New } else { Target::Old }, rule)
}

/// Slots kept on the stack for services with up to this many distinct header,
/// cookie and argument names.
const STACK_SLOTS: usize = 16;

/// Most services read one to four names: their slots are cleared alone (the
/// 16 of [`STACK_SLOTS`] cost 16 stores a request, callgrind).
const FEW_SLOTS: usize = 4;

/// What one pass over the request's headers found: the target of the first
/// header rule that matched, and the user id when `user_key` is a header (the
/// first occurrence of each name wins).
struct HeaderPass<'r> {
    target: Option<Target>,
    user: Option<&'r [u8]>,
}

fn header_pass<'r, R: RequestView, T: Tracer>(s: &CompiledService, request: &'r R, tracer: &mut T) -> HeaderPass<'r> {
    let slots = s.value_slots();
    if slots == 0 {
        return HeaderPass { target: None, user: None };
    }
    // Each array is cleared only on its own branch.
    let mut few: [Option<&[u8]>; FEW_SLOTS];
    let mut stack: [Option<&[u8]>; STACK_SLOTS];
    let mut heap: Vec<Option<&[u8]>>;
    let values: &mut [Option<&[u8]>] = if slots <= FEW_SLOTS {
        few = [None; FEW_SLOTS];
        &mut few[..slots]
    } else if slots <= STACK_SLOTS {
        stack = [None; STACK_SLOTS];
        &mut stack[..slots]
    } else {
        heap = vec![None; slots];
        &mut heap
    };
    // One pass over the request headers; the first occurrence of a name wins.
    if s.headers.len() > 0 {
        request.for_each_header_in(
            |name| s.headers.find(name),
            |slot, value| {
                values[slot].get_or_insert(value);
            },
        );
    }
    let user = s.headers.user_slot().and_then(|slot| values[slot]);
    // Cookies and arguments as `$cookie_NAME` / `$arg_NAME` read them (only for
    // services that have such rules).
    if slots > s.headers.len() {
        let (cookie_slots, arg_slots) = values[s.headers.len()..].split_at_mut(s.cookies.len());
        for (value, name) in cookie_slots.iter_mut().zip(&s.cookies) {
            *value = request.cookie(name);
        }
        for (value, name) in arg_slots.iter_mut().zip(&s.args) {
            *value = request.arg(name);
        }
    }
    let mut client = None;
    for (index, rule) in s.header_rules.iter().enumerate() {
        let value = values[rule.slot as usize];
        if !rule.matcher.matches(value) {
            if T::ENABLED {
                tracer.step(Step::HeaderRule { index, rule, value, value_matches: false, from: None });
            }
            continue;
        }
        if let Some(from) = &rule.from {
            let ip = *client.get_or_insert_with(|| request.client_ip());
            let inside = ip.is_some_and(|ip| from.contains(ip));
            if T::ENABLED {
                let from = Some(FromCheck { client: ip, inside });
                tracer.step(Step::HeaderRule { index, rule, value, value_matches: true, from });
            }
            if !inside {
                continue;
            }
        } else if T::ENABLED {
            tracer.step(Step::HeaderRule { index, rule, value, value_matches: true, from: None });
        }
        return HeaderPass { target: Some(rule.target), user };
    }
    HeaderPass { target: None, user }
}

/// The user id read through `user_key`; an empty value counts as absent.
pub(crate) fn user_id<'r, R: RequestView>(key: &UserKey, request: &'r R) -> Option<&'r [u8]> {
    let value = match key {
        UserKey::Header(name) => request.header(name.as_bytes()),
        UserKey::Cookie(name) => request.cookie(name.as_bytes()),
        UserKey::Arg(name) => request.arg(name.as_bytes()),
        UserKey::Var(name) => request.variable(name.as_bytes()),
    };
    value.filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::Rule;

    #[test]
    fn only_the_percentage_split_is_the_ramps_traffic() {
        let split: Vec<&str> = Rule::ALL.iter().filter(|r| r.is_split()).map(|r| r.as_str()).collect();
        assert_eq!(split, ["user_hash", "ip_hash", "weight"]);
    }
}
