//! Static checks for rules that can never decide, printed by `nginx -t` as
//! warnings (the file is still valid). Rules are tried in order and the first
//! match wins (SPEC "Decision order"), so a rule is dead when an earlier rule
//! already matches every request it would:
//!
//! * a header rule on the same source (the same header, cookie or argument;
//!   names are case-insensitive; a header and a cookie of one name are two
//!   sources and never shadow each other) whose match is
//!   a superset: the same `value`, `values` that include every value, an identical
//!   `pattern` or one that matches every value, `present: true`; an earlier rule
//!   with `from:` counts only when each of the later rule's `from:` networks lies
//!   inside one of its networks;
//! * an ip rule network inside an earlier rule's network (same address family);
//! * a user id listed by an earlier user rule.
//!
//! A rule with several entries (`values`, `cidrs`, `users`) is reported whole when
//! every entry is covered by earlier rules, and entry by entry otherwise
//! (`services[0].canary.ip_rules[3].cidrs[1]`); an entry covered by an earlier
//! entry of the same rule is reported as redundant.

use std::fmt;

use ahash::{AHashMap, AHashSet};
use ipnet::IpNet;

use crate::config::{Cidr, Config, HeaderMatch, HeaderRule, RuleSource, UserKey};

/// A problem that does not make the file invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Field path such as `services[0].canary.header_rules[2]`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Everything `nginx -t` warns about in a valid file: shadowed rules, then header
/// names nginx drops by default.
pub fn warnings(config: &Config) -> Vec<Warning> {
    let mut out = shadowed_rules(config);
    out.extend(underscored_headers(config));
    out.extend(idle_gates(config));
    out
}

/// A ramp's gate on a service that sends nothing to new (`enabled: false`) is
/// never judged: the ramp stands still until the service is enabled again.
pub fn idle_gates(config: &Config) -> Vec<Warning> {
    config
        .services
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.migration.enabled && s.migration.ramp.as_ref().is_some_and(|r| r.gate.is_some()))
        .map(|(i, _)| Warning {
            path: format!("services[{i}].migration.ramp.gate"),
            message: "the service is disabled (enabled: false): nothing goes to new, so the gate is never judged and \
                      the ramp stands still until the service is enabled"
                .into(),
        })
        .collect()
}

/// Header names with `_`: nginx ignores such request headers unless the server
/// has `underscores_in_headers on` (default off), so a rule on one never matches
/// and a user id read from one is never found.
pub fn underscored_headers(config: &Config) -> Vec<Warning> {
    const WHY: &str = "nginx ignores request headers whose names contain '_' unless the server has \
                       `underscores_in_headers on`; without it this never matches";
    let mut out = Vec::new();
    for (s, service) in config.services.iter().enumerate() {
        if let UserKey::Header(name) = &service.migration.user_key {
            if name.contains('_') {
                out.push(Warning {
                    path: format!("services[{s}].migration.user_key"),
                    message: format!("header {name:?}: {WHY}"),
                });
            }
        }
        for (r, rule) in service.canary.header_rules.iter().enumerate() {
            // Cookies and arguments with '_' are found: only header names are dropped.
            if let RuleSource::Header(name) = &rule.source {
                if name.contains('_') {
                    out.push(Warning {
                        path: format!("services[{s}].canary.header_rules[{r}].header"),
                        message: format!("header {name:?}: {WHY}"),
                    });
                }
            }
        }
    }
    out
}

/// Every rule, and every entry of a rule, that an earlier rule or entry shadows,
/// in file order.
pub fn shadowed_rules(config: &Config) -> Vec<Warning> {
    let mut out = Vec::new();
    for (s, service) in config.services.iter().enumerate() {
        let canary = &service.canary;
        let base = format!("services[{s}].canary");
        header_rules(&mut out, &format!("{base}.header_rules"), &canary.header_rules);
        let ip: Vec<&[Cidr]> = canary.ip_rules.iter().map(|r| r.cidrs.as_slice()).collect();
        ip_rules(&mut out, &format!("{base}.ip_rules"), &ip);
        let users: Vec<Vec<&str>> =
            canary.user_rules.iter().map(|r| r.users.iter().map(|u| u.0.as_str()).collect()).collect();
        user_rules(&mut out, &format!("{base}.user_rules"), &users);
    }
    out
}

/// Why one entry of a rule (a value, a network, a user) never decides.
enum Cover {
    /// An earlier rule matches every request the entry would.
    Rule { index: usize, detail: String },
    /// An earlier entry of the same rule does.
    Entry { index: usize, detail: String },
}

/// How a list of rules words its findings.
struct Style<'a> {
    /// `services[0].canary.ip_rules`
    rules: &'a str,
    /// The field holding a rule's entries: `values`, `cidrs`, `users`.
    field: &'a str,
    /// Said once before the details: `same header`.
    lead: &'a str,
}

/// Details quoted in one warning, and entry-by-entry warnings per rule, before
/// the rest is counted instead of listed: a rule of 80,000 users repeated must
/// not print 80,000 lines.
const MAX_LISTED: usize = 10;

impl Style<'_> {
    /// Reports rule `index` given what covers each of its entries.
    fn report(&self, out: &mut Vec<Warning>, index: usize, covers: &[Option<Cover>], tail: impl Fn(usize) -> String) {
        let rule = format!("{}[{index}]", self.rules);
        let earlier: Option<Vec<(usize, &str)>> = covers
            .iter()
            .map(|c| match c {
                Some(Cover::Rule { index, detail }) => Some((*index, detail.as_str())),
                _ => None,
            })
            .collect();
        if let Some(earlier) = earlier.filter(|e| !e.is_empty()) {
            let first = earlier[0].0;
            let why = if earlier.iter().all(|&(i, _)| i == first) {
                let mut seen = AHashSet::new();
                let details: Vec<&str> = earlier.iter().map(|&(_, d)| d).filter(|d| seen.insert(*d)).collect();
                format!(
                    "{}[{first}] already matches every request it would ({}{}{})",
                    self.rules,
                    self.lead_with(", "),
                    listed(&details, ", "),
                    tail(first)
                )
            } else {
                let parts: Vec<String> = earlier
                    .iter()
                    .take(MAX_LISTED + 1)
                    .map(|&(i, d)| format!("{}[{i}]: {d}{}", self.rules, tail(i)))
                    .collect();
                let mut parts = parts;
                if earlier.len() > MAX_LISTED {
                    parts.truncate(MAX_LISTED);
                    parts.push(format!("and {} more", earlier.len() - MAX_LISTED));
                }
                format!(
                    "earlier rules already match every request it would ({}{})",
                    self.lead_with("; "),
                    parts.join("; ")
                )
            };
            out.push(Warning { path: rule, message: format!("never matches: {why}") });
            return;
        }
        let covered = covers.iter().filter(|c| c.is_some()).count();
        for (k, cover) in covers.iter().enumerate().filter(|(_, c)| c.is_some()).take(MAX_LISTED) {
            let path = format!("{rule}.{}[{k}]", self.field);
            let message = match cover {
                None => continue,
                Some(Cover::Rule { index: i, detail }) => format!(
                    "never matches: {}[{i}] already matches every request it would ({}{detail}{})",
                    self.rules,
                    self.lead_with(", "),
                    tail(*i)
                ),
                Some(Cover::Entry { index: m, detail }) => {
                    format!("redundant: {rule}.{}[{m}] already covers it ({detail})", self.field)
                }
            };
            out.push(Warning { path, message });
        }
        if covered > MAX_LISTED {
            out.push(Warning {
                path: format!("{rule}.{}", self.field),
                message: format!(
                    "{} more entries never match or are redundant (the first {MAX_LISTED} are listed)",
                    covered - MAX_LISTED
                ),
            });
        }
    }

    fn lead_with(&self, separator: &str) -> String {
        if self.lead.is_empty() {
            String::new()
        } else {
            format!("{}{separator}", self.lead)
        }
    }
}

/// At most [`MAX_LISTED`] items joined, then how many more.
fn listed(items: &[&str], separator: &str) -> String {
    let mut text = items.iter().take(MAX_LISTED).copied().collect::<Vec<_>>().join(separator);
    if items.len() > MAX_LISTED {
        text.push_str(&format!("{separator}and {} more", items.len() - MAX_LISTED));
    }
    text
}

/// One thing a header rule matches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HeaderEntry<'a> {
    Value(&'a str),
    Pattern(&'a str),
    Present(bool),
}

fn header_entries(m: &HeaderMatch) -> Vec<HeaderEntry<'_>> {
    match m {
        HeaderMatch::Value(v) => vec![HeaderEntry::Value(v)],
        HeaderMatch::Values(vs) => vs.iter().map(|v| HeaderEntry::Value(v)).collect(),
        HeaderMatch::Pattern(p) => vec![HeaderEntry::Pattern(p.0.as_str())],
        HeaderMatch::Present(p) => vec![HeaderEntry::Present(*p)],
    }
}

/// How an earlier rule's match covers an entry, in words (the earlier rule is
/// known to cover it).
fn cover_detail(earlier: &HeaderMatch, entry: HeaderEntry<'_>) -> String {
    use HeaderEntry as E;
    match (earlier, entry) {
        (HeaderMatch::Present(p), _) => format!("present: {p}"),
        (HeaderMatch::Pattern(p), E::Value(v)) => format!("pattern {:?} matches {v:?}", p.0.as_str()),
        (_, E::Pattern(q)) => format!("pattern {q:?}"),
        (_, E::Value(v)) => format!("value {v:?}"),
        (_, E::Present(p)) => format!("present: {p}"),
    }
}

/// Whether every client a later rule's `from:` admits is admitted by the earlier
/// rule's `from:` (no `from:` admits every client).
fn from_covers(earlier: Option<&[Cidr]>, later: Option<&[Cidr]>) -> bool {
    match (earlier, later) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => l.iter().all(|l| e.iter().any(|e| e.0.contains(&l.0))),
    }
}

/// Pattern-against-value checks one service's header rules may spend: beyond
/// it, shadowing by patterns is no longer looked for (and a warning says so).
const PATTERN_BUDGET: usize = 200_000;

/// The earlier rules on one header name, indexed by what they match.
#[derive(Default)]
struct HeaderIndex<'a> {
    /// Rules (in order) whose `value`/`values` hold the value.
    values: AHashMap<&'a str, Vec<usize>>,
    /// Rules with `present: true` / `present: false`.
    present: [Vec<usize>; 2],
    /// Rules with a pattern, and the rules per pattern text.
    patterns: Vec<usize>,
    pattern_texts: AHashMap<&'a str, Vec<usize>>,
}

fn header_rules(out: &mut Vec<Warning>, path: &str, rules: &[HeaderRule]) {
    let tail = |i: usize| {
        if rules[i].from.is_some() {
            ", and its from: contains this rule's".to_owned()
        } else {
            String::new()
        }
    };
    // Rules on different sources (a header and a cookie of the same name, say)
    // never shadow each other: each source has its own index.
    let mut by_header: AHashMap<&RuleSource, HeaderIndex<'_>> = AHashMap::new();
    let mut budget = PATTERN_BUDGET;
    let mut out_of_budget = false;
    for (j, rule) in rules.iter().enumerate() {
        let lead = match rule.source {
            RuleSource::Header(_) => "same header",
            RuleSource::Cookie(_) => "same cookie",
            RuleSource::Arg(_) => "same arg",
        };
        let style = Style { rules: path, field: "values", lead };
        let index = by_header.entry(&rule.source).or_default();
        // The first earlier rule of `candidates` whose from: contains this rule's.
        let first = |candidates: Option<&Vec<usize>>| -> Option<usize> {
            candidates?.iter().copied().find(|&i| from_covers(rules[i].from.as_deref(), rule.from.as_deref()))
        };
        let entries = header_entries(&rule.matcher);
        let mut seen_in_rule: AHashMap<&str, usize> = AHashMap::new();
        let covers: Vec<Option<Cover>> = entries
            .iter()
            .enumerate()
            .map(|(k, &entry)| {
                let earliest = match entry {
                    HeaderEntry::Present(p) => first(Some(&index.present[usize::from(p)])),
                    HeaderEntry::Pattern(q) => {
                        [first(Some(&index.present[1])), first(index.pattern_texts.get(q))].into_iter().flatten().min()
                    }
                    HeaderEntry::Value(v) => {
                        let by_value = [first(Some(&index.present[1])), first(index.values.get(v))];
                        let mut best = by_value.into_iter().flatten().min();
                        for &i in &index.patterns {
                            if best.is_some_and(|b| b < i) {
                                break;
                            }
                            if budget == 0 {
                                out_of_budget = true;
                                break;
                            }
                            budget -= 1;
                            let HeaderMatch::Pattern(p) = &rules[i].matcher else { continue };
                            if p.0.is_match(v.as_bytes()) && from_covers(rules[i].from.as_deref(), rule.from.as_deref())
                            {
                                best = Some(i);
                                break;
                            }
                        }
                        best
                    }
                };
                if let Some(i) = earliest {
                    return Some(Cover::Rule { index: i, detail: cover_detail(&rules[i].matcher, entry) });
                }
                let HeaderEntry::Value(v) = entry else { return None };
                match seen_in_rule.get(v) {
                    Some(&m) => Some(Cover::Entry { index: m, detail: format!("value {v:?}") }),
                    None => {
                        seen_in_rule.insert(v, k);
                        None
                    }
                }
            })
            .collect();
        style.report(out, j, &covers, tail);
        // Rule j is an earlier rule from now on.
        let index = by_header.get_mut(&rule.source).expect("indexed above");
        match &rule.matcher {
            HeaderMatch::Value(v) => index.values.entry(v.as_str()).or_default().push(j),
            HeaderMatch::Values(vs) => {
                let mut once = AHashSet::new();
                for v in vs.iter().filter(|v| once.insert(v.as_str())) {
                    index.values.entry(v.as_str()).or_default().push(j);
                }
            }
            HeaderMatch::Pattern(p) => {
                index.patterns.push(j);
                index.pattern_texts.entry(p.0.as_str()).or_default().push(j);
            }
            HeaderMatch::Present(p) => index.present[usize::from(*p)].push(j),
        }
    }
    if out_of_budget {
        out.push(Warning {
            path: path.to_owned(),
            message: format!(
                "too many patterns and values to check every pair for shadowing; the first {PATTERN_BUDGET} were checked"
            ),
        });
    }
}

fn network_covers(outer: &Cidr, network: &Cidr) -> String {
    if outer == network {
        format!("same network {}", network.0)
    } else {
        format!("{} inside {}", network.0, outer.0)
    }
}

/// Every network that contains `net` (itself included): its prefixes.
fn enclosing(net: &Cidr) -> impl Iterator<Item = IpNet> + '_ {
    (0..=net.0.prefix_len()).filter_map(move |len| IpNet::new(net.0.network(), len).ok().map(|n| n.trunc()))
}

fn ip_rules(out: &mut Vec<Warning>, path: &str, rules: &[&[Cidr]]) {
    let style = Style { rules: path, field: "cidrs", lead: "" };
    // Each network seen so far, with the first (rule, entry) that listed it: a
    // network is covered by whatever is found among its prefixes, so a lookup is
    // at most 33 (IPv4) or 129 (IPv6) probes, whatever the number of networks.
    let mut seen: AHashMap<IpNet, (usize, usize)> = AHashMap::new();
    for (j, cidrs) in rules.iter().enumerate() {
        let covers: Vec<Option<Cover>> = cidrs
            .iter()
            .enumerate()
            .map(|(k, net)| {
                let first = enclosing(net).filter_map(|prefix| seen.get(&prefix).copied()).min();
                seen.entry(net.0).or_insert((j, k));
                let (i, m) = first?;
                let detail = network_covers(&rules[i][m], net);
                Some(if i < j { Cover::Rule { index: i, detail } } else { Cover::Entry { index: m, detail } })
            })
            .collect();
        style.report(out, j, &covers, |_| String::new());
    }
}

fn user_rules(out: &mut Vec<Warning>, path: &str, rules: &[Vec<&str>]) {
    let style = Style { rules: path, field: "users", lead: "" };
    let mut seen: AHashMap<&str, (usize, usize)> = AHashMap::new();
    for (j, users) in rules.iter().enumerate() {
        let covers: Vec<Option<Cover>> = users
            .iter()
            .enumerate()
            .map(|(k, &user)| {
                let (i, m) = *seen.entry(user).or_insert((j, k));
                let detail = format!("user {user:?}");
                match (i < j, m < k) {
                    (true, _) => Some(Cover::Rule { index: i, detail }),
                    (false, true) => Some(Cover::Entry { index: m, detail }),
                    (false, false) => None,
                }
            })
            .collect();
        style.report(out, j, &covers, |_| String::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "\
services:
  - name: api
    old_host: api.example
    old_backend: old.svc:8078
    new_host: api.kong.example
    new_backend: api.kong.example:443
    canary:
";

    /// The warnings for BASE with `canary` (indented under `canary:`).
    fn lint(canary: &str) -> Vec<String> {
        let indented: String = canary.lines().map(|l| format!("      {l}\n")).collect();
        let config = crate::config::parse("m.yaml", &format!("{BASE}{indented}")).expect("valid test document");
        shadowed_rules(&config).iter().map(Warning::to_string).collect()
    }

    #[track_caller]
    fn assert_lint(canary: &str, expected: &[&str]) {
        assert_eq!(lint(canary), expected, "for\n{canary}");
    }

    #[track_caller]
    fn assert_clean(canary: &str) {
        assert_lint(canary, &[]);
    }

    const H: &str = "services[0].canary.header_rules";
    const IP: &str = "services[0].canary.ip_rules";
    const U: &str = "services[0].canary.user_rules";

    #[test]
    fn a_gate_on_a_disabled_service_is_warned() {
        let text = format!("{BASE}      user_rules: []\n    migration:\n      enabled: false\n      ramp: {{steps: [1, 100], every: 1h, gate: {{max_error_rate: 1%}}}}\n");
        let config = crate::config::parse("m.yaml", &text).unwrap();
        let found: Vec<String> = warnings(&config).iter().map(Warning::to_string).collect();
        assert_eq!(found, ["services[0].migration.ramp.gate: the service is disabled (enabled: false): nothing goes to new, so the gate is never judged and the ramp stands still until the service is enabled"]);
        // Enabled with a gate, or disabled without one (or without a ramp): nothing to say.
        for migration in [
            "enabled: true\n      ramp: {steps: [1, 100], every: 1h, gate: {max_error_rate: 1%}}",
            "enabled: false\n      ramp: {steps: [1, 100], every: 1h}",
            "enabled: false",
        ] {
            let text = format!("{BASE}      user_rules: []\n    migration:\n      {migration}\n");
            let config = crate::config::parse("m.yaml", &text).unwrap();
            assert!(warnings(&config).is_empty(), "{migration}: {:?}", warnings(&config));
        }
    }

    #[test]
    fn header_names_with_underscores_are_warned() {
        let text = format!(
            "{BASE}      header_rules:\n        - {{header: X_Canary, value: a, target: new}}\n        - {{header: X-Ok, value: a, target: new}}\n    migration: {{user_key: 'header:X_User'}}\n"
        );
        let config = crate::config::parse("m.yaml", &text).unwrap();
        let found: Vec<String> = warnings(&config).iter().map(Warning::to_string).collect();
        assert_eq!(found, [
            "services[0].migration.user_key: header \"x_user\": nginx ignores request headers whose names contain '_' unless the server has `underscores_in_headers on`; without it this never matches",
            "services[0].canary.header_rules[0].header: header \"x_canary\": nginx ignores request headers whose names contain '_' unless the server has `underscores_in_headers on`; without it this never matches",
        ]);
    }

    #[test]
    fn repeated_header_value() {
        assert_lint(
            "header_rules:
  - {header: X-Canary, value: new, target: new_cluster}
  - {header: X-Other, value: new, target: new_cluster}
  - {header: x-canary, value: new, target: old_cluster}",
            &[&format!(
                "{H}[2]: never matches: {H}[0] already matches every request it would (same header, value \"new\")"
            )],
        );
    }

    #[test]
    fn near_misses_between_header_rules() {
        // Different header, different value, case-sensitive values, a broader rule
        // after a narrower one, present: false after present: true.
        assert_clean(
            "header_rules:
  - {header: X-Canary, value: new, target: new_cluster}
  - {header: X-Beta, value: new, target: new_cluster}
  - {header: X-Canary, value: New, target: new_cluster}
  - {header: X-Canary, values: [old, other], target: new_cluster}
  - {header: X-Canary, pattern: '^n', target: new_cluster}
  - {header: X-Canary, present: true, target: new_cluster}
  - {header: X-Canary, present: false, target: old_cluster}",
        );
    }

    #[test]
    fn values_inside_earlier_values_or_value() {
        assert_lint(
            "header_rules:
  - {header: X-Canary, values: [a, b, c], target: new_cluster}
  - {header: X-Canary, values: [c, a], target: old_cluster}
  - {header: X-Canary, value: b, target: old_cluster}
  - {header: X-Beta, value: x, target: new_cluster}
  - {header: X-Beta, values: [x], target: old_cluster}",
            &[
                &format!("{H}[1]: never matches: {H}[0] already matches every request it would (same header, value \"c\", value \"a\")"),
                &format!("{H}[2]: never matches: {H}[0] already matches every request it would (same header, value \"b\")"),
                &format!("{H}[4]: never matches: {H}[3] already matches every request it would (same header, value \"x\")"),
            ],
        );
    }

    #[test]
    fn values_partly_covered_are_reported_entry_by_entry() {
        assert_lint(
            "header_rules:
  - {header: X-Canary, value: a, target: new_cluster}
  - {header: X-Canary, values: [z, a, z], target: old_cluster}",
            &[
                &format!("{H}[1].values[1]: never matches: {H}[0] already matches every request it would (same header, value \"a\")"),
                &format!("{H}[1].values[2]: redundant: {H}[1].values[0] already covers it (value \"z\")"),
            ],
        );
    }

    #[test]
    fn values_covered_by_several_earlier_rules() {
        assert_lint(
            "header_rules:
  - {header: X-Canary, value: a, target: new_cluster}
  - {header: X-Canary, value: b, target: new_cluster}
  - {header: X-Canary, values: [a, b], target: old_cluster}",
            &[&format!(
                "{H}[2]: never matches: earlier rules already match every request it would \
                 (same header; {H}[0]: value \"a\"; {H}[1]: value \"b\")"
            )],
        );
    }

    #[test]
    fn present_true_shadows_every_matcher_but_absence() {
        let why = format!("never matches: {H}[0] already matches every request it would (same header, present: true)");
        assert_lint(
            "header_rules:
  - {header: X-Canary, present: true, target: new_cluster}
  - {header: X-Canary, value: a, target: old_cluster}
  - {header: X-Canary, values: [a, b], target: old_cluster}
  - {header: X-Canary, pattern: '^a', target: old_cluster}
  - {header: X-Canary, present: true, target: old_cluster}
  - {header: X-Canary, present: false, target: old_cluster}
  - {header: X-Canary, present: false, target: new_cluster}",
            &[
                &format!("{H}[1]: {why}"),
                &format!("{H}[2]: {why}"),
                &format!("{H}[3]: {why}"),
                &format!("{H}[4]: {why}"),
                &format!("{H}[6]: never matches: {H}[5] already matches every request it would (same header, present: false)"),
            ],
        );
    }

    #[test]
    fn identical_patterns_and_patterns_that_match_a_later_value() {
        assert_lint(
            "header_rules:
  - {header: X-Canary, pattern: '^beta-', target: new_cluster}
  - {header: X-Canary, pattern: '^beta-', target: old_cluster}
  - {header: X-Canary, pattern: '^beta', target: old_cluster}
  - {header: X-Canary, value: beta-1, target: old_cluster}
  - {header: X-Canary, value: alpha-1, target: old_cluster}",
            &[
                &format!("{H}[1]: never matches: {H}[0] already matches every request it would (same header, pattern \"^beta-\")"),
                &format!(
                    "{H}[3]: never matches: {H}[0] already matches every request it would \
                     (same header, pattern \"^beta-\" matches \"beta-1\")"
                ),
            ],
        );
    }

    #[test]
    fn from_on_the_earlier_rule_must_contain_the_later_rules_from() {
        let why = |i: usize| {
            format!(
                "never matches: {H}[{i}] already matches every request it would \
                 (same header, value \"new\", and its from: contains this rule's)"
            )
        };
        assert_lint(
            "header_rules:
  - {header: X-Canary, value: new, target: new_cluster, from: [10.0.0.0/8, 192.168.0.0/16]}
  - {header: X-Canary, value: new, target: old_cluster, from: [10.1.0.0/16, 11.0.0.0/8]}
  - {header: X-Canary, value: new, target: old_cluster, from: [2001:db8::/32]}
  - {header: X-Canary, value: new, target: old_cluster, from: [10.1.0.0/16, 192.168.1.7]}
  - {header: X-Canary, value: new, target: old_cluster, from: [10.0.0.0/8]}
  - {header: X-Canary, value: new, target: old_cluster, from: [0.0.0.0/0]}
  - {header: X-Canary, value: new, target: old_cluster}",
            &[&format!("{H}[3]: {}", why(0)), &format!("{H}[4]: {}", why(0))],
        );
    }

    #[test]
    fn a_rule_without_from_shadows_rules_with_from() {
        assert_lint(
            "header_rules:
  - {header: X-Canary, value: new, target: new_cluster, from: [10.0.0.0/8]}
  - {header: X-Canary, value: new, target: old_cluster}
  - {header: X-Canary, value: new, target: old_cluster, from: [172.16.0.0/12]}",
            &[&format!(
                "{H}[2]: never matches: {H}[1] already matches every request it would (same header, value \"new\")"
            )],
        );
    }

    #[test]
    fn cookie_and_arg_rules_shadow_only_rules_on_the_same_source() {
        assert_lint(
            "header_rules:
  - {cookie: canary, value: always, target: new_cluster}
  - {header: canary, value: always, target: new_cluster}
  - {arg: canary, value: always, target: new_cluster}
  - {header: Cookie, value: always, target: new_cluster}
  - {cookie: CANARY, value: always, target: old_cluster}
  - {arg: Canary, values: [always, never], target: old_cluster}
  - {cookie: canary, present: true, target: new_cluster}
  - {cookie: canary_id, value: x, target: new_cluster}
  - {cookie: canary, pattern: '^n', target: new_cluster}",
            &[
                &format!("{H}[4]: never matches: {H}[0] already matches every request it would (same cookie, value \"always\")"),
                &format!("{H}[5].values[0]: never matches: {H}[2] already matches every request it would (same arg, value \"always\")"),
                &format!("{H}[8]: never matches: {H}[6] already matches every request it would (same cookie, present: true)"),
            ],
        );
    }

    #[test]
    fn underscores_are_warned_for_headers_only() {
        let text = format!(
            "{BASE}      header_rules:\n        - {{cookie: session_id, present: true, target: new}}\n        - {{arg: user_id, present: true, target: new}}\n"
        );
        let config = crate::config::parse("m.yaml", &text).unwrap();
        assert_eq!(warnings(&config), vec![]);
    }

    #[test]
    fn network_inside_an_earlier_network() {
        assert_lint(
            "ip_rules:
  - {cidr: 10.0.0.0/8, target: new_cluster}
  - {cidr: 10.1.0.0/16, target: old_cluster}
  - {cidr: 10.0.0.0/8, target: old_cluster}",
            &[
                &format!("{IP}[1]: never matches: {IP}[0] already matches every request it would (10.1.0.0/16 inside 10.0.0.0/8)"),
                &format!("{IP}[2]: never matches: {IP}[0] already matches every request it would (same network 10.0.0.0/8)"),
            ],
        );
    }

    #[test]
    fn networks_that_overlap_without_being_inside_or_differ_in_family() {
        assert_clean(
            "ip_rules:
  - {cidr: 10.1.0.0/16, target: new_cluster}
  - {cidr: 10.0.0.0/8, target: old_cluster}
  - {cidr: 0.0.0.0/1, target: old_cluster}
  - {cidr: 2001:db8:1::/48, target: new_cluster}
  - {cidr: 2001:db8::/32, target: old_cluster}
  - {cidr: '::/0', target: old_cluster}
  - {cidr: 0.0.0.0/0, target: old_cluster}",
        );
        assert_clean(
            "ip_rules:
  - {cidr: 0.0.0.0/0, target: new_cluster}
  - {cidrs: ['::1', '2001:db8::/32', '::/0'], target: old_cluster}",
        );
    }

    #[test]
    fn ipv4_mapped_networks_are_ipv4() {
        assert_lint(
            "ip_rules:
  - {cidr: '::ffff:10.0.0.0/104', target: new_cluster}
  - {cidr: 10.9.0.0/16, target: old_cluster}",
            &[&format!("{IP}[1]: never matches: {IP}[0] already matches every request it would (10.9.0.0/16 inside 10.0.0.0/8)")],
        );
    }

    #[test]
    fn cidrs_list_whole_and_partial() {
        assert_lint(
            "ip_rules:
  - {cidrs: [10.0.0.0/8, 172.16.0.0/12], target: new_cluster}
  - {cidrs: [10.1.0.0/16, 172.16.5.0/24], target: old_cluster}
  - {cidr: 192.168.0.0/16, target: old_cluster}
  - {cidrs: [10.2.0.0/16, 192.168.1.0/24], target: old_cluster}
  - {cidrs: [1.0.0.0/8, 10.3.0.0/16, 1.2.0.0/16, 1.0.0.0/8, 2001:db8::/32], target: old_cluster}",
            &[
                &format!(
                    "{IP}[1]: never matches: {IP}[0] already matches every request it would \
                     (10.1.0.0/16 inside 10.0.0.0/8, 172.16.5.0/24 inside 172.16.0.0/12)"
                ),
                &format!(
                    "{IP}[3]: never matches: earlier rules already match every request it would \
                     ({IP}[0]: 10.2.0.0/16 inside 10.0.0.0/8; {IP}[2]: 192.168.1.0/24 inside 192.168.0.0/16)"
                ),
                &format!("{IP}[4].cidrs[1]: never matches: {IP}[0] already matches every request it would (10.3.0.0/16 inside 10.0.0.0/8)"),
                &format!("{IP}[4].cidrs[2]: redundant: {IP}[4].cidrs[0] already covers it (1.2.0.0/16 inside 1.0.0.0/8)"),
                &format!("{IP}[4].cidrs[3]: redundant: {IP}[4].cidrs[0] already covers it (same network 1.0.0.0/8)"),
            ],
        );
    }

    #[test]
    fn long_lists_are_counted_not_listed() {
        let users: Vec<String> = (0..25).map(|i| format!("u{i}")).collect();
        let list = users.join(", ");
        let found =
            lint(&format!("user_rules:\n  - {{users: [{list}], target: new}}\n  - {{users: [{list}], target: old}}"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].ends_with("\"u9\", and 15 more)"), "{}", found[0]);
        let twice: Vec<String> = (0..25).map(|_| "same".to_owned()).collect();
        let found = lint(&format!("user_rules:\n  - {{users: [{}], target: new}}", twice.join(", ")));
        assert_eq!(found.len(), MAX_LISTED + 1, "{found:?}");
        assert_eq!(
            found[MAX_LISTED],
            format!("{U}[0].users: 14 more entries never match or are redundant (the first 10 are listed)")
        );
    }

    #[test]
    fn many_networks_find_the_first_listed_cover() {
        // 10.0.0.0/8 then 512 /24s inside it, then a /16 listed after them.
        let mut nets = vec!["10.0.0.0/8".to_owned()];
        nets.extend((0..512).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)));
        let found = lint(&format!(
            "ip_rules:\n  - {{cidr: 192.168.0.0/16, target: new}}\n  - {{cidrs: [{}], target: new}}\n  - {{cidr: 10.1.0.0/16, target: old}}",
            nets.join(", ")
        ));
        assert_eq!(found.len(), MAX_LISTED + 2, "{found:?}");
        assert_eq!(
            found[0],
            format!("{IP}[1].cidrs[1]: redundant: {IP}[1].cidrs[0] already covers it (10.0.0.0/24 inside 10.0.0.0/8)")
        );
        assert_eq!(
            found[MAX_LISTED + 1],
            format!("{IP}[2]: never matches: {IP}[1] already matches every request it would (10.1.0.0/16 inside 10.0.0.0/8)")
        );
    }

    #[test]
    fn users_listed_twice() {
        assert_lint(
            "user_rules:
  - {users: [alice, bob], target: new_cluster}
  - {users: [bob], target: old_cluster}
  - {users: [carol, alice, carol, Alice], target: old_cluster}
  - {users: [alice, bob], target: old_cluster}
  - {users: [carol, dave], target: old_cluster}",
            &[
                &format!("{U}[1]: never matches: {U}[0] already matches every request it would (user \"bob\")"),
                &format!("{U}[2].users[1]: never matches: {U}[0] already matches every request it would (user \"alice\")"),
                &format!("{U}[2].users[2]: redundant: {U}[2].users[0] already covers it (user \"carol\")"),
                &format!("{U}[3]: never matches: {U}[0] already matches every request it would (user \"alice\", user \"bob\")"),
                &format!("{U}[4].users[0]: never matches: {U}[2] already matches every request it would (user \"carol\")"),
            ],
        );
    }

    #[test]
    fn distinct_users_are_clean() {
        assert_clean(
            "user_rules:
  - {users: [alice, bob], target: new_cluster}
  - {users: [Alice, bobby, carol], target: old_cluster}",
        );
    }

    #[test]
    fn paths_name_the_service_and_services_are_independent() {
        let text = format!(
            "{BASE}      ip_rules: [{{cidr: 10.0.0.0/8, target: new_cluster}}]
  - name: web
    old_host: web.example
    old_backend: old.svc:8078
    new_host: web.example
    new_backend: new.svc:443
    canary:
      ip_rules: [{{cidr: 10.1.0.0/16, target: new_cluster}}]
      user_rules:
        - {{users: [u1], target: new_cluster}}
        - {{users: [u1], target: old_cluster}}
"
        );
        let config = crate::config::parse("m.yaml", &text).unwrap();
        let warnings = shadowed_rules(&config);
        assert_eq!(
            warnings,
            vec![Warning {
                path: "services[1].canary.user_rules[1]".into(),
                message: "never matches: services[1].canary.user_rules[0] already matches every request it would (user \"u1\")"
                    .into(),
            }]
        );
    }

    #[test]
    fn shipped_configurations_are_clean() {
        for text in [include_str!("../../nginx/configmap.yaml"), include_str!("../../nginx/migration.yaml")] {
            let config = crate::config::parse("m.yaml", text).unwrap();
            assert_eq!(shadowed_rules(&config), vec![]);
        }
    }
}
