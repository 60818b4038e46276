//! The decision order of SPEC "Decision order", as one function of
//! (compiled configuration, request view, random source).

use crate::breaker::{BreakerCells, Gate, Transition};
use crate::compiled::{CompiledConfig, CompiledService};
use crate::config::{Strategy, Target, UserKey};
use crate::hash::{murmur2_salted, Threshold};
use crate::request::RequestView;

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
}

/// The one decision of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Index of the matched service in [`CompiledConfig::services`].
    pub service: Option<u32>,
    /// `None` exactly when no service matched.
    pub target: Option<Target>,
    pub rule: Rule,
    /// This request is the one trial of a half-open breaker: its outcome closes
    /// or re-opens it.
    pub trial: bool,
    /// The breaker changed state while deciding (reported to this request only).
    pub transition: Option<Transition>,
    /// The service's percentage in force (basis points): the configured one, or
    /// where its ramp stands. 0 when no service matched.
    pub percentage_bp: u32,
}

impl Decision {
    pub const NO_SERVICE: Decision =
        Decision { service: None, target: None, rule: Rule::None, trial: false, transition: None, percentage_bp: 0 };

    fn of(service: u32, target: Target, rule: Rule) -> Decision {
        Decision {
            service: Some(service),
            target: Some(target),
            rule,
            trial: false,
            transition: None,
            percentage_bp: 0,
        }
    }
}

/// The fallback breakers that decision step 4 consults.
pub trait Breakers {
    /// The breaker of service `index` (an index into [`CompiledConfig::services`]).
    fn breaker(&self, index: u32) -> Option<&BreakerCells>;
    /// Monotonic milliseconds, the clock of every process sharing the breakers.
    fn now_ms(&self) -> u64;
    /// The percentage a service's ramp puts in force (basis points), if it has one.
    fn percentage_in_force(&self, _index: u32) -> Option<u32> {
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
pub fn decide_with<R: RequestView>(
    config: &CompiledConfig,
    choice: ServiceChoice<'_>,
    request: &R,
    draw: &mut dyn FnMut() -> u32,
    breakers: &dyn Breakers,
) -> Decision {
    let index = match choice {
        ServiceChoice::Auto => config.service_for_host(request.host()),
        ServiceChoice::Named(name) => config.service_index(name),
        ServiceChoice::Index(index) => (index < config.services.len() as u32).then_some(index),
    };
    let Some(index) = index else {
        return Decision::NO_SERVICE;
    };
    let s = &config.services[index as usize];
    let split = match breakers.percentage_in_force(index) {
        Some(bp) if bp != s.percentage_bp => Split { bp, threshold: Threshold::from_basis_points(bp) },
        _ => Split { bp: s.percentage_bp, threshold: s.threshold },
    };
    let mut decision = decide_service(index, s, request, draw, breakers, split);
    decision.percentage_bp = split.bp;
    decision
}

/// The percentage split of step 7, as in force for this request.
#[derive(Clone, Copy)]
struct Split {
    bp: u32,
    threshold: Threshold,
}

/// Steps 2 to 7 for the matched service.
fn decide_service<R: RequestView>(
    index: u32,
    s: &CompiledService,
    request: &R,
    draw: &mut dyn FnMut() -> u32,
    breakers: &dyn Breakers,
    split: Split,
) -> Decision {
    // 2. the rollback switch
    if !s.enabled {
        return Decision::of(index, Target::Old, Rule::Disabled);
    }
    // 3. header rules, first match wins (the same pass over the headers finds a
    // user id read from a header)
    let pass = header_pass(s, request);
    if let Some(target) = pass.target {
        return Decision::of(index, target, Rule::Header);
    }
    let user = UserId(pass.user);
    // 4. the fallback breaker
    let Some((policy, cells)) = s.fallback.as_ref().zip(breakers.breaker(index)) else {
        let (target, rule) = decide_by_rules(s, request, user, split, draw);
        return Decision::of(index, target, rule);
    };
    let now = breakers.now_ms();
    let (gate, transition) = cells.gate(now, policy.cooldown_ms);
    let mut decision = match gate {
        Gate::Pass => {
            let (target, rule) = decide_by_rules(s, request, user, split, draw);
            Decision::of(index, target, rule)
        }
        Gate::Divert => Decision::of(index, Target::Old, Rule::Fallback),
        Gate::Probe => match decide_by_rules(s, request, user, split, draw) {
            (Target::New, rule) if cells.begin_trial(now, policy.cooldown_ms) => {
                Decision { trial: true, ..Decision::of(index, Target::New, rule) }
            }
            _ => Decision::of(index, Target::Old, Rule::Fallback),
        },
    };
    decision.transition = transition;
    decision
}

/// A user id from a header, found by the header pass; ids from cookies,
/// arguments and variables are read only when a step needs one.
#[derive(Clone, Copy)]
struct UserId<'r>(Option<&'r [u8]>);

/// Steps 5 to 7.
fn decide_by_rules<'r, R: RequestView>(
    s: &CompiledService,
    request: &'r R,
    header_user: UserId<'r>,
    split: Split,
    draw: &mut dyn FnMut() -> u32,
) -> (Target, Rule) {
    let client = request.client_ip();
    // 5. ip rules
    if let Some(rule) = client.and_then(|ip| s.ip_table.lookup(ip)) {
        return (s.ip_targets[rule as usize], Rule::Cidr);
    }
    // 6. explicit users
    let user = match &s.user_key {
        _ if !s.needs_user_id() => None,
        UserKey::Header(_) => header_user.0.filter(|v| !v.is_empty()),
        key => user_id(key, request),
    };
    if let Some(&target) = user.and_then(|u| s.users.get(u)) {
        return (target, Rule::UserList);
    }
    // 7. the percentage split
    let (admitted, rule) = match (s.strategy, user) {
        (Strategy::User, Some(user)) => (split.threshold.admits(murmur2_salted(&s.salt, user)), Rule::UserHash),
        (Strategy::Ip, _) => {
            (split.threshold.admits(murmur2_salted(&s.salt, request.client_addr_text())), Rule::IpHash)
        }
        _ => (split.bp > 0 && split.threshold.admits(draw()), Rule::Weight),
    };
    (if admitted { Target::New } else { Target::Old }, rule)
}

/// Slots kept on the stack for services with up to this many distinct header,
/// cookie and argument names.
const STACK_SLOTS: usize = 16;

/// What one pass over the request's headers found: the target of the first
/// header rule that matched, and the user id when `user_key` is a header (the
/// first occurrence of each name wins).
struct HeaderPass<'r> {
    target: Option<Target>,
    user: Option<&'r [u8]>,
}

fn header_pass<'r, R: RequestView>(s: &CompiledService, request: &'r R) -> HeaderPass<'r> {
    let slots = s.value_slots();
    if slots == 0 {
        return HeaderPass { target: None, user: None };
    }
    let mut stack: [Option<&[u8]>; STACK_SLOTS] = [None; STACK_SLOTS];
    let mut heap: Vec<Option<&[u8]>>;
    let values: &mut [Option<&[u8]>] = if slots <= STACK_SLOTS {
        &mut stack[..slots]
    } else {
        heap = vec![None; slots];
        &mut heap
    };
    // One pass over the request headers; the first occurrence of a name wins.
    if s.headers.len() > 0 {
        request.for_each_header(|name, value| {
            if let Some(slot) = s.headers.find(name) {
                values[slot].get_or_insert(value);
            }
        });
    }
    let user = s.headers.user_slot().and_then(|slot| values[slot]);
    // Cookies and arguments as `$cookie_NAME` / `$arg_NAME` read them (only for
    // services that have such rules).
    let (cookie_slots, arg_slots) = values[s.headers.len()..].split_at_mut(s.cookies.len());
    for (value, name) in cookie_slots.iter_mut().zip(&s.cookies) {
        *value = request.cookie(name);
    }
    for (value, name) in arg_slots.iter_mut().zip(&s.args) {
        *value = request.arg(name);
    }
    let mut client = None;
    for rule in &s.header_rules {
        if !rule.matcher.matches(values[rule.slot as usize]) {
            continue;
        }
        if let Some(from) = &rule.from {
            let ip = *client.get_or_insert_with(|| request.client_ip());
            if !ip.is_some_and(|ip| from.contains(ip)) {
                continue;
            }
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
