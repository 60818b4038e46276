//! Header rules (on a header, a cookie or an argument) shadowed by earlier ones.

use ahash::{AHashMap, AHashSet};

use super::{Cover, Style};
use crate::config::{Cidr, HeaderMatch, HeaderRule, RuleSource};
use crate::lint::Warning;

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

pub(super) fn header_rules(out: &mut Vec<Warning>, path: &str, rules: &[HeaderRule]) {
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

#[cfg(test)]
mod tests {
    use crate::lint::shadowed::tests::{assert_clean, assert_lint, H};

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
}
