//! The immutable compiled configuration: everything arithmetic or textual is done
//! here, once, so that deciding is a few lookups (the `split_clients` way).
//! One value, built whole from the YAML and swappable whole.

use ahash::{AHashMap, AHashSet};

use crate::cidr::CidrTable;
use crate::config::{self, Backend, Config, HeaderMatch, HostValue, RuleSource, Strategy, Target, UserKey};
use crate::hash::Threshold;

#[derive(Debug)]
pub struct CompiledConfig {
    pub version: String,
    pub services: Vec<CompiledService>,
    exact_hosts: AHashMap<Box<[u8]>, u32>,
    /// `*.example.com` stored as `.example.com`.
    wildcard_hosts: AHashMap<Box<[u8]>, u32>,
    /// Longest wildcard suffix, to skip hopeless probes.
    longest_wildcard: usize,
    /// The exact hosts again, when they are few enough that comparing beats hashing.
    few_exact_hosts: Option<Vec<(Box<[u8]>, u32)>>,
    by_name: AHashMap<Box<str>, u32>,
    /// Some service has `sticky`: without one, a request never looks for an id
    /// to mint.
    pub any_sticky: bool,
    /// Some service has `drain`: without one, no request is kept in the list of
    /// long-lived requests until its response says it is upgraded.
    pub any_drain: bool,
}

/// Where one side of a migration sends a request.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `$migration_host`
    pub host: String,
    /// `$migration_backend`
    pub backend: String,
    /// `$migration_scheme`
    pub scheme: &'static str,
}

#[derive(Debug)]
pub struct CompiledService {
    pub name: String,
    pub old: Endpoint,
    pub new: Endpoint,
    pub enabled: bool,
    pub strategy: Strategy,
    pub percentage_bp: u32,
    pub(crate) threshold: Threshold,
    pub(crate) user_key: UserKey,
    pub(crate) salt: Box<[u8]>,
    pub(crate) headers: HeaderSlots,
    /// Distinct cookie and argument names of `cookie:` / `arg:` rules
    /// (lowercase); their values take the slots after the headers'. Both empty
    /// for a service without such rules, which then pays nothing for them.
    pub(crate) cookies: Vec<Box<[u8]>>,
    pub(crate) args: Vec<Box<[u8]>>,
    pub(crate) header_rules: Vec<CompiledHeaderRule>,
    pub(crate) ip_table: CidrTable,
    /// The networks of each ip rule, as listed: traces say which one matched.
    pub(crate) ip_networks: Vec<Box<[ipnet::IpNet]>>,
    pub(crate) ip_targets: Vec<Target>,
    pub(crate) users: AHashMap<Box<[u8]>, Target>,
    /// `migration.sticky`, when the service has it.
    pub(crate) sticky: Option<crate::sticky::StickyCookie>,
    /// `migration.drain`, when the service has it.
    pub drain: Option<crate::config::drain::Drain>,
    /// `fallback:`, when the service has one.
    pub fallback: Option<FallbackPolicy>,
    /// `migration.ramp`, and what identifies it with the percentage (a
    /// publication that keeps both keeps the ramp's position).
    pub ramp: Option<crate::config::ramp::Ramp>,
    pub ramp_fingerprint: u64,
    /// What identifies the service's migration block and backends: a held or
    /// rolled-back ramp stays so until it changes.
    pub outcome_fingerprint: u64,
}

/// A service's `fallback:`, compiled.
#[derive(Debug)]
pub struct FallbackPolicy {
    pub failures: u32,
    pub cooldown_ms: u64,
    /// Bit `s - 100` for each status of `statuses`.
    failure_statuses: [u64; 8],
}

impl FallbackPolicy {
    fn new(f: &config::Fallback) -> FallbackPolicy {
        let mut failure_statuses = [0u64; 8];
        for &status in &f.statuses {
            let bit = usize::from(status - 100);
            failure_statuses[bit / 64] |= 1 << (bit % 64);
        }
        FallbackPolicy { failures: f.failures, cooldown_ms: f.cooldown_ms, failure_statuses }
    }

    /// Whether an upstream status counts as a failure of the new cluster.
    pub fn is_failure(&self, status: u16) -> bool {
        let Some(bit) = status.checked_sub(100).map(usize::from).filter(|&b| b < 500) else {
            return false;
        };
        self.failure_statuses[bit / 64] & (1 << (bit % 64)) != 0
    }
}

impl CompiledService {
    pub fn endpoint(&self, target: Target) -> &Endpoint {
        match target {
            Target::Old => &self.old,
            Target::New => &self.new,
        }
    }

    /// Whether a decision for this service may depend on the client address
    /// (`from:` networks, ip rules, strategy ip).
    pub fn uses_client_address(&self) -> bool {
        !self.ip_table.is_empty() || self.strategy == Strategy::Ip || self.header_rules.iter().any(|r| r.from.is_some())
    }

    pub(crate) fn needs_user_id(&self) -> bool {
        !self.users.is_empty() || self.strategy == Strategy::User
    }

    /// Value slots of the header rules: headers, then cookies, then arguments.
    #[inline]
    pub(crate) fn value_slots(&self) -> usize {
        self.headers.len() + self.cookies.len() + self.args.len()
    }

    /// The user id of a request, read through `user_key` as the decision reads
    /// it (an empty value counts as absent).
    pub fn user_id<'r, R: crate::RequestView>(&self, request: &'r R) -> Option<&'r [u8]> {
        crate::decide::user_id(&self.user_key, request)
    }

    /// The nginx variable `user_key: var:NAME` reads (lowercase), if it is one.
    pub fn user_variable(&self) -> Option<&str> {
        match &self.user_key {
            UserKey::Var(name) => Some(name),
            _ => None,
        }
    }

    /// The percentage's `split_clients` threshold.
    pub fn threshold(&self) -> Threshold {
        self.threshold
    }
}

/// The distinct header names a service's rules look at (and the header of its
/// user id), each given a slot, so one pass over the request's headers finds
/// every value the decision needs.
#[derive(Debug, Default)]
pub(crate) struct HeaderSlots {
    names: Vec<Box<[u8]>>,
    /// The slot of `user_key: header:NAME`, when the service reads a user id.
    user: Option<u32>,
    /// Bit `n` set when some name is `n` bytes long (names under 64 bytes).
    lengths: u64,
    /// Used instead of a linear scan when there are many names.
    index: Option<AHashMap<Box<[u8]>, u32>>,
}

const LINEAR_SLOTS: usize = 8;

impl HeaderSlots {
    fn slot_for(&mut self, lowercase_name: &str) -> u32 {
        let name = lowercase_name.as_bytes();
        if let Some(i) = self.names.iter().position(|n| &**n == name) {
            return i as u32;
        }
        self.names.push(name.into());
        self.lengths |= 1u64.checked_shl(name.len() as u32).unwrap_or(0);
        (self.names.len() - 1) as u32
    }

    fn finish(&mut self) {
        if self.names.len() > LINEAR_SLOTS {
            self.index = Some(self.names.iter().enumerate().map(|(i, n)| (n.clone(), i as u32)).collect());
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    #[inline]
    pub(crate) fn user_slot(&self) -> Option<usize> {
        self.user.map(|slot| slot as usize)
    }

    #[inline(always)]
    pub(crate) fn find(&self, lowercase_name: &[u8]) -> Option<usize> {
        let len = lowercase_name.len();
        if len < 64 && self.lengths & (1u64 << len) == 0 {
            return None;
        }
        match &self.index {
            Some(index) => index.get(lowercase_name).map(|&i| i as usize),
            None => self.names.iter().position(|n| same_bytes(n, lowercase_name)),
        }
    }
}

/// One `header_rules` entry, compiled.
#[derive(Debug)]
pub struct CompiledHeaderRule {
    /// Index of the rule's value among the service's value slots.
    pub(crate) slot: u32,
    /// What the rule reads, as configured (for traces).
    pub(crate) source: RuleSource,
    pub(crate) matcher: Matcher,
    pub(crate) target: Target,
    pub(crate) from: Option<CidrTable>,
}

#[derive(Debug)]
pub(crate) enum Matcher {
    Value(Box<[u8]>),
    Few(Vec<Box<[u8]>>),
    Many(AHashSet<Box<[u8]>>),
    Pattern(regex::bytes::Regex),
    Present(bool),
}

/// Distinct names of one kind of source, each with its index.
fn slot_in(names: &mut Vec<Box<[u8]>>, name: &str) -> u32 {
    let name = name.as_bytes();
    match names.iter().position(|n| &**n == name) {
        Some(i) => i as u32,
        None => {
            names.push(name.into());
            (names.len() - 1) as u32
        }
    }
}

impl Matcher {
    #[inline(always)]
    pub fn matches(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (Matcher::Present(wanted), v) => v.is_some() == *wanted,
            (_, None) => false,
            (Matcher::Value(expected), Some(v)) => same_bytes(expected, v),
            (Matcher::Few(set), Some(v)) => set.iter().any(|e| same_bytes(e, v)),
            (Matcher::Many(set), Some(v)) => set.contains(v),
            (Matcher::Pattern(re), Some(v)) => pattern_matches(re, v),
        }
    }
}

/// Out of line: the regex crate reads a thread-local at each match, and inlined
/// into the header pass that read was hoisted to run at every request, whether
/// or not a pattern is tried (callgrind: 13 instructions a request).
#[inline(never)]
fn pattern_matches(re: &regex::bytes::Regex, value: &[u8]) -> bool {
    re.is_match(value)
}

/// `a == b`, inline for the short strings header names, values and hosts are:
/// the slice comparison calls `memcmp` through the PLT (about 20 instructions
/// for a 9-byte header name, callgrind), these are 8-byte words compared in
/// place.
#[inline(always)]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    match n {
        0 => true,
        1..=7 => a.iter().zip(b).all(|(x, y)| x == y),
        // Words at 0, 8, ... and one ending at the last byte (it may overlap).
        8..=32 => {
            let mut at = 0;
            while at + 8 < n {
                if word(a, at) != word(b, at) {
                    return false;
                }
                at += 8;
            }
            word(a, n - 8) == word(b, n - 8)
        }
        _ => a == b,
    }
}

impl CompiledConfig {
    pub fn compile(config: Config) -> CompiledConfig {
        let mut exact_hosts: AHashMap<Box<[u8]>, u32> = AHashMap::new();
        let mut wildcard_hosts = AHashMap::new();
        let mut by_name = AHashMap::new();
        let mut longest_wildcard = 0;
        let mut services = Vec::with_capacity(config.services.len());
        for (index, service) in config.services.into_iter().enumerate() {
            let index = index as u32;
            for host in &service.hosts {
                match host.wildcard_suffix() {
                    Some(suffix) => {
                        let key: Box<[u8]> = format!(".{suffix}").into_bytes().into();
                        longest_wildcard = longest_wildcard.max(key.len());
                        wildcard_hosts.insert(key, index);
                    }
                    None => {
                        exact_hosts.insert(host.0.as_bytes().into(), index);
                    }
                }
            }
            by_name.insert(service.name.0.as_str().into(), index);
            services.push(compile_service(service));
        }
        let few_exact_hosts =
            (exact_hosts.len() <= FEW_HOSTS).then(|| exact_hosts.iter().map(|(name, &i)| (name.clone(), i)).collect());
        CompiledConfig {
            any_sticky: services.iter().any(|s| s.sticky.is_some()),
            any_drain: services.iter().any(|s| s.drain.is_some()),
            version: config.version,
            services,
            exact_hosts,
            wildcard_hosts,
            longest_wildcard,
            few_exact_hosts,
            by_name,
        }
    }

    /// Every host a service claims: (service index, the host or a wildcard's
    /// `.suffix`, whether it is a wildcard), in no particular order.
    pub fn hosts(&self) -> impl Iterator<Item = (u32, &[u8], bool)> + '_ {
        let exact = self.exact_hosts.iter().map(|(host, &i)| (i, &host[..], false));
        exact.chain(self.wildcard_hosts.iter().map(|(suffix, &i)| (i, &suffix[..], true)))
    }

    /// The service named `name`.
    pub fn service_index(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The service whose `hosts` match a Host header: exact names first, then the
    /// longest `*.suffix`; case-insensitive, port and trailing dot ignored.
    pub fn service_for_host(&self, host: &[u8]) -> Option<u32> {
        let host = strip_port(host);
        let host = host.strip_suffix(b".").unwrap_or(host);
        if host.is_empty() || host.len() > 255 {
            return None;
        }
        if !host.iter().any(u8::is_ascii_uppercase) {
            return self.service_for_normalized_host(host);
        }
        let mut buf = [0u8; 255];
        let lower = &mut buf[..host.len()];
        lower.copy_from_slice(host);
        lower.make_ascii_lowercase();
        self.service_for_normalized_host(lower)
    }

    /// [`Self::service_for_host`] for a Host already lowercase, without port and
    /// trailing dot: nginx's validated `headers_in.server` is exactly that.
    #[inline]
    pub fn service_for_normalized_host(&self, host: &[u8]) -> Option<u32> {
        if host.is_empty() || host.len() > 255 {
            return None;
        }
        // A few exact names: compared directly (the length first), no hashing.
        let exact = match &self.few_exact_hosts {
            Some(few) => few.iter().find(|(name, _)| **name == *host).map(|&(_, i)| i),
            None => self.exact_hosts.get(host).copied(),
        };
        if exact.is_some() {
            return exact;
        }
        if self.wildcard_hosts.is_empty() {
            return None;
        }
        let lower = host;
        // Longest suffix first: ".b.example.com" before ".example.com".
        for (pos, _) in lower.iter().enumerate().filter(|(_, &c)| c == b'.') {
            let suffix = &lower[pos..];
            if suffix.len() > self.longest_wildcard {
                continue;
            }
            if let Some(&i) = self.wildcard_hosts.get(suffix) {
                return Some(i);
            }
        }
        None
    }
}

/// Up to this many exact hosts are compared one by one rather than hashed.
const FEW_HOSTS: usize = 8;

fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        // [v6]:port
        return match host.iter().position(|&c| c == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&c| c == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

fn endpoint(host: HostValue, backend: Backend) -> Endpoint {
    Endpoint { host: host.0, backend: backend.address, scheme: backend.scheme }
}

const FEW_VALUES: usize = 8;

fn compile_service(s: config::Service) -> CompiledService {
    let mut headers = HeaderSlots::default();
    let mut cookies = Vec::new();
    let mut args = Vec::new();
    // Slots are numbered per kind first; cookies and arguments move after the
    // headers once the number of headers is known.
    let mut header_rules: Vec<(u8, CompiledHeaderRule)> = s
        .canary
        .header_rules
        .into_iter()
        .map(|rule| {
            let (kind, slot) = match &rule.source {
                RuleSource::Header(name) => (0, headers.slot_for(name)),
                RuleSource::Cookie(name) => (1, slot_in(&mut cookies, name)),
                RuleSource::Arg(name) => (2, slot_in(&mut args, name)),
            };
            let compiled = CompiledHeaderRule {
                slot,
                matcher: match rule.matcher {
                    HeaderMatch::Value(v) => Matcher::Value(v.into_bytes().into()),
                    HeaderMatch::Values(vs) if vs.len() <= FEW_VALUES => {
                        Matcher::Few(vs.into_iter().map(|v| v.into_bytes().into()).collect())
                    }
                    HeaderMatch::Values(vs) => Matcher::Many(vs.into_iter().map(|v| v.into_bytes().into()).collect()),
                    HeaderMatch::Pattern(p) => Matcher::Pattern(p.0),
                    HeaderMatch::Present(p) => Matcher::Present(p),
                },
                target: rule.target,
                from: rule.from.map(|nets| CidrTable::new(nets.into_iter().map(|c| (c.0, 0)))),
                source: rule.source,
            };
            (kind, compiled)
        })
        .collect();
    let needs_user_id = !s.canary.user_rules.is_empty() || s.migration.strategy == Strategy::User;
    if let (UserKey::Header(name), true) = (&s.migration.user_key, needs_user_id) {
        headers.user = Some(headers.slot_for(name));
    }
    headers.finish();
    for (kind, rule) in &mut header_rules {
        rule.slot += match kind {
            0 => 0,
            1 => headers.len() as u32,
            _ => (headers.len() + cookies.len()) as u32,
        };
    }
    let header_rules = header_rules.into_iter().map(|(_, rule)| rule).collect();
    let ip_networks = s.canary.ip_rules.iter().map(|r| r.cidrs.iter().map(|c| c.0).collect()).collect();

    let ip_targets: Vec<Target> = s.canary.ip_rules.iter().map(|r| r.target).collect();
    let ip_table = CidrTable::new(
        s.canary.ip_rules.iter().enumerate().flat_map(|(i, r)| r.cidrs.iter().map(move |c| (c.0, i as u32))),
    );

    // First match wins: a user listed by two rules keeps the first rule's target.
    let mut users = AHashMap::new();
    for rule in &s.canary.user_rules {
        for user in &rule.users {
            users.entry(user.0.as_bytes().into()).or_insert(rule.target);
        }
    }

    let fallback = s.fallback.as_ref().map(FallbackPolicy::new);
    let ramp_fingerprint =
        s.migration.ramp.as_ref().map_or(0, |r| crate::ramp::fingerprint(r, s.migration.percentage.0));
    let outcome_fingerprint = crate::ramp::outcome_fingerprint(
        &s.migration,
        [&s.old_host.0, &format!("{:?}", s.old_backend), &s.new_host.0, &format!("{:?}", s.new_backend)],
    );
    let sticky = s.migration.sticky.as_ref().and_then(|st| crate::sticky::StickyCookie::new(st, &s.migration.user_key));
    CompiledService {
        fallback,
        sticky,
        drain: s.migration.drain,
        ramp: s.migration.ramp.clone(),
        ramp_fingerprint,
        outcome_fingerprint,
        name: s.name.0,
        old: endpoint(s.old_host, s.old_backend),
        new: endpoint(s.new_host, s.new_backend),
        enabled: s.migration.enabled,
        strategy: s.migration.strategy,
        percentage_bp: s.migration.percentage.0,
        threshold: Threshold::from_basis_points(s.migration.percentage.0),
        user_key: s.migration.user_key,
        salt: s.migration.hash_salt.into_bytes().into(),
        headers,
        cookies,
        args,
        header_rules,
        ip_networks,
        ip_table,
        ip_targets,
        users,
    }
}

#[cfg(test)]
mod tests {
    use super::{same_bytes, Matcher, FEW_HOSTS, FEW_VALUES, LINEAR_SLOTS};

    /// One service `api` (on `hosts`) with `header_rules`.
    fn compiled(hosts: &[String], header_rules: &[String]) -> super::CompiledConfig {
        let hosts = hosts.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", ");
        let rules: String = header_rules.iter().map(|r| format!("        - {r}\n")).collect();
        let yaml = format!(
            "services:\n  - name: api\n    hosts: [{hosts}]\n    old_host: o.example\n    old_backend: o:80\n    \
             new_host: n.example\n    new_backend: n:80\n    canary:\n      header_rules:\n{rules}"
        );
        crate::load_str("m.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    fn hosts(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("h{i}.example")).collect()
    }

    // The structures below are speed choices (bench/README.md): each lookup
    // finds the same answer either way, so only these tests notice one lost.

    #[test]
    fn header_names_get_a_hash_index_only_above_the_linear_limit() {
        for n in [1, LINEAR_SLOTS, LINEAR_SLOTS + 1] {
            let rules: Vec<String> = (0..n).map(|i| format!("{{header: X-H{i}, value: v, target: new}}")).collect();
            let config = compiled(&hosts(1), &rules);
            let slots = &config.services[0].headers;
            assert_eq!(slots.len(), n);
            assert_eq!(slots.index.is_some(), n > LINEAR_SLOTS, "{n} header names");
            for i in 0..n {
                assert_eq!(slots.find(format!("x-h{i}").as_bytes()), Some(i), "{n} header names, x-h{i}");
            }
        }
    }

    #[test]
    fn a_value_list_is_a_linear_list_up_to_few_values_and_a_set_above() {
        for n in [2, FEW_VALUES, FEW_VALUES + 1] {
            let values: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
            let rule = format!("{{header: X-H, values: [{}], target: new}}", values.join(", "));
            let config = compiled(&hosts(1), &[rule]);
            let matcher = &config.services[0].header_rules[0].matcher;
            match matcher {
                Matcher::Few(list) => assert!(n <= FEW_VALUES && list.len() == n, "{n} values: a list"),
                Matcher::Many(set) => assert!(n > FEW_VALUES && set.len() == n, "{n} values: a set"),
                _ => panic!("{n} values: neither a list nor a set"),
            }
            assert!(values.iter().all(|v| matcher.matches(Some(v.as_bytes()))), "{n} values");
            assert!(!matcher.matches(Some(b"v")), "{n} values");
        }
    }

    #[test]
    fn exact_hosts_are_also_a_short_list_up_to_few_hosts() {
        for n in [1, FEW_HOSTS, FEW_HOSTS + 1] {
            let config = compiled(&hosts(n), &[]);
            assert_eq!(config.few_exact_hosts.is_some(), n <= FEW_HOSTS, "{n} hosts");
            for host in hosts(n) {
                assert_eq!(config.service_for_normalized_host(host.as_bytes()), Some(0), "{n} hosts, {host}");
            }
        }
    }

    #[test]
    fn same_bytes_agrees_with_slice_equality_at_every_length_and_position() {
        for n in 0..=40usize {
            let a: Vec<u8> = (0..n as u8).map(|i| b'a' + i % 26).collect();
            assert!(same_bytes(&a, &a.clone()), "length {n}");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!same_bytes(&a, &b), "length {n}, differing at {at}");
            }
            let mut longer = a.clone();
            longer.push(b'x');
            assert!(!same_bytes(&a, &longer) && !same_bytes(&longer, &a), "lengths {n} and {}", n + 1);
        }
    }
}
