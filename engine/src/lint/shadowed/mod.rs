//! Static checks for rules that can never decide, printed by `nginx -t` as
//! warnings (the file is still valid). Rules are tried in order and the first
//! match wins (docs/decision.md), so a rule is dead when an earlier rule
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
//!
//! Each kind of rule has its file (`headers.rs`, `networks.rs`, `users.rs`);
//! how findings are worded is shared here.

mod headers;
mod networks;
mod users;

use ahash::AHashSet;

use super::Warning;
use crate::config::{Cidr, Config};

/// Every rule, and every entry of a rule, that an earlier rule or entry shadows,
/// in file order.
pub fn shadowed_rules(config: &Config) -> Vec<Warning> {
    let mut out = Vec::new();
    for (s, service) in config.services.iter().enumerate() {
        let canary = &service.canary;
        let base = format!("services[{s}].canary");
        headers::header_rules(&mut out, &format!("{base}.header_rules"), &canary.header_rules);
        let ip: Vec<&[Cidr]> = canary.ip_rules.iter().map(|r| r.cidrs.as_slice()).collect();
        networks::ip_rules(&mut out, &format!("{base}.ip_rules"), &ip);
        let users: Vec<Vec<&str>> =
            canary.user_rules.iter().map(|r| r.users.iter().map(|u| u.0.as_str()).collect()).collect();
        users::user_rules(&mut out, &format!("{base}.user_rules"), &users);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::tests::BASE;

    /// The warnings for BASE with `canary` (indented under `canary:`).
    pub(super) fn lint(canary: &str) -> Vec<String> {
        let indented: String = canary.lines().map(|l| format!("      {l}\n")).collect();
        let config = crate::config::parse("m.yaml", &format!("{BASE}{indented}")).expect("valid test document");
        shadowed_rules(&config).iter().map(Warning::to_string).collect()
    }

    #[track_caller]
    pub(super) fn assert_lint(canary: &str, expected: &[&str]) {
        assert_eq!(lint(canary), expected, "for\n{canary}");
    }

    #[track_caller]
    pub(super) fn assert_clean(canary: &str) {
        assert_lint(canary, &[]);
    }

    pub(super) const H: &str = "services[0].canary.header_rules";
    pub(super) const IP: &str = "services[0].canary.ip_rules";
    pub(super) const U: &str = "services[0].canary.user_rules";

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
        for text in [include_str!("../../../../nginx/configmap.yaml"), include_str!("../../../../nginx/migration.yaml")]
        {
            let config = crate::config::parse("m.yaml", text).unwrap();
            assert_eq!(shadowed_rules(&config), vec![]);
        }
    }
}
