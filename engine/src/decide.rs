//! The decision order of SPEC "Decision order", as one function of
//! (compiled configuration, request view, random source).

use crate::compiled::{CompiledConfig, CompiledService};
use crate::config::{Strategy, Target, UserKey};
use crate::hash::murmur2_salted;
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
    /// Decision step 4; produced once the shared fallback state exists.
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
}

impl Decision {
    pub const NO_SERVICE: Decision = Decision { service: None, target: None, rule: Rule::None };

    fn of(service: u32, target: Target, rule: Rule) -> Decision {
        Decision { service: Some(service), target: Some(target), rule }
    }
}

/// How the service of a request is chosen (`migration_service`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceChoice<'a> {
    /// By the request's Host.
    Auto,
    /// This service, whatever the Host.
    Named(&'a str),
}

/// Decides `old` or `new` for one request.
///
/// `draw` gives a uniform 32-bit random number; it is called at most once, and only
/// when the percentage split is by weight.
pub fn decide<R: RequestView>(
    config: &CompiledConfig,
    choice: ServiceChoice<'_>,
    request: &R,
    draw: &mut dyn FnMut() -> u32,
) -> Decision {
    let index = match choice {
        ServiceChoice::Auto => config.service_for_host(request.host()),
        ServiceChoice::Named(name) => config.service_index(name),
    };
    let Some(index) = index else {
        return Decision::NO_SERVICE;
    };
    let service = &config.services[index as usize];
    let (target, rule) = decide_for_service(service, request, draw);
    Decision::of(index, target, rule)
}

fn decide_for_service<R: RequestView>(
    s: &CompiledService,
    request: &R,
    draw: &mut dyn FnMut() -> u32,
) -> (Target, Rule) {
    // 2. the rollback switch
    if !s.enabled {
        return (Target::Old, Rule::Disabled);
    }
    // 3. header rules, first match wins
    if let Some(target) = header_rule_target(s, request) {
        return (target, Rule::Header);
    }
    // 4. (fallback: decided by the shared breaker state, not part of this build)
    let client = request.client_ip();
    // 5. ip rules
    if let Some(rule) = client.and_then(|ip| s.ip_table.lookup(ip)) {
        return (s.ip_targets[rule as usize], Rule::Cidr);
    }
    // 6. explicit users
    let user = if s.needs_user_id() { user_id(&s.user_key, request) } else { None };
    if let Some(&target) = user.and_then(|u| s.users.get(u)) {
        return (target, Rule::UserList);
    }
    // 7. the percentage split
    let (admitted, rule) = match (s.strategy, user) {
        (Strategy::User, Some(user)) => (s.threshold.admits(murmur2_salted(&s.salt, user)), Rule::UserHash),
        (Strategy::Ip, _) => {
            (s.threshold.admits(murmur2_salted(&s.salt, request.client_addr_text())), Rule::IpHash)
        }
        _ => (s.percentage_bp > 0 && s.threshold.admits(draw()), Rule::Weight),
    };
    (if admitted { Target::New } else { Target::Old }, rule)
}

/// Slots kept on the stack for services with up to this many distinct header names.
const STACK_SLOTS: usize = 16;

fn header_rule_target<R: RequestView>(s: &CompiledService, request: &R) -> Option<Target> {
    if s.header_rules.is_empty() {
        return None;
    }
    let mut stack: [Option<&[u8]>; STACK_SLOTS] = [None; STACK_SLOTS];
    let mut heap: Vec<Option<&[u8]>>;
    let values: &mut [Option<&[u8]>] = if s.headers.len() <= STACK_SLOTS {
        &mut stack[..s.headers.len()]
    } else {
        heap = vec![None; s.headers.len()];
        &mut heap
    };
    // One pass over the request headers; the first occurrence of a name wins.
    for (name, value) in request.headers() {
        if let Some(slot) = s.headers.find(name) {
            values[slot].get_or_insert(value);
        }
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
        return Some(rule.target);
    }
    None
}

/// The user id read through `user_key`; an empty value counts as absent.
fn user_id<'r, R: RequestView>(key: &UserKey, request: &'r R) -> Option<&'r [u8]> {
    let value = match key {
        UserKey::Header(name) => request.header(name.as_bytes()),
        UserKey::Cookie(name) => request.cookie(name.as_bytes()),
        UserKey::Arg(name) => request.arg(name.as_bytes()),
    };
    value.filter(|v| !v.is_empty())
}
