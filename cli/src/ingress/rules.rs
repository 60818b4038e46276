//! A canary's header and cookie rules and weight, as the module writes them.

use serde_yaml::{Mapping, Value};

use super::model::{Canary, Ingress, Report};

fn rule(kind: &str, name: &str, matcher: (&str, Value), target: &str) -> Value {
    let mut m = Mapping::new();
    m.insert(kind.into(), name.into());
    m.insert(matcher.0.into(), matcher.1);
    m.insert("target".into(), target.into());
    Value::Mapping(m)
}

const REPEATED: &str = "a request that repeats the header differs: nginx 1.23+ joins the values (\"always, always\"), which ingress-nginx compares whole and so falls through, while the module reads the first value";

/// The header and cookie rules and the weight (basis points) of a canary.
pub(super) fn canary_rules(c: &Ingress, canary: &Canary, report: &mut Report) -> (Vec<Value>, u32) {
    let mut rules = Vec::new();
    for (annotation, note) in &c.parse_notes {
        report.mapped(c, annotation, format!("{note}; the same here"));
    }
    // balancer.lua:232-234: `-` read as `_` in ngx.var["http_" .. name], which nginx
    // matches against request header names lowercased with `-` as `_`.
    let header = canary.header.replace('_', "-");
    let readable = !header.is_empty() && header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !canary.header.is_empty() && !readable {
        report.mapped(
            c,
            "canary-by-header",
            format!("nginx drops request headers whose name has characters other than letters, digits and -, so ingress-nginx never reads {:?}: requests go by cookie and weight, as here without a header rule", canary.header),
        );
    } else if readable {
        let renamed = if header != canary.header {
            format!(" (ingress-nginx reads {:?} as the request header {header}, balancer.lua:232)", canary.header)
        } else {
            String::new()
        };
        if !canary.header_value.is_empty() {
            rules.push(rule("header", &header, ("value", canary.header_value.as_str().into()), "new"));
            report.approximate(
                c,
                "canary-by-header",
                format!("header rule {{header: {header}, value: {:?}, target: new}}{renamed}; other values fall through (balancer.lua:238); {REPEATED}", canary.header_value),
            );
            report.mapped(c, "canary-by-header-value", format!("the value {:?} of that rule", canary.header_value));
            if !canary.header_pattern.is_empty() {
                report.mapped(
                    c,
                    "canary-by-header-pattern",
                    "ignored when canary-by-header-value is set, as in ingress-nginx (balancer.lua:237-242)",
                );
            }
        } else if !canary.header_pattern.is_empty() {
            let p = &canary.header_pattern;
            match pcre2::bytes::RegexBuilder::new().build(p) {
                Err(e) => {
                    rules.push(rule("header", &header, ("present", true.into()), "old"));
                    report.mapped(
                        c,
                        "canary-by-header",
                        format!("PCRE refuses the pattern {p:?} ({e}), so ingress-nginx sends every request that carries {header} to main (balancer.lua:246-249): header rule {{header: {header}, present: true, target: old}}{renamed}; requests without it go by cookie and weight"),
                    );
                }
                Ok(_) => match rust_reads_like_pcre(p).and_then(|()| migration_engine::config::Pattern::parse(p)) {
                    Ok(_) => {
                        rules.push(rule("header", &header, ("pattern", p.as_str().into()), "new"));
                        report.approximate(
                            c,
                            "canary-by-header",
                            format!("header rule {{header: {header}, pattern: {p:?}, target: new}}{renamed}: searched in the value, unanchored, as ngx.re.match does (balancer.lua:243); no match falls through; {REPEATED}"),
                        );
                    }
                    Err(e) => report.approximate(
                        c,
                        "canary-by-header",
                        format!("the pattern {p:?} is PCRE the module's regular expressions cannot express ({e}): a request whose {header} matches it goes to the canary in ingress-nginx (balancer.lua:243-245), and here falls through to cookie and weight; every other request routes the same (no header rule written)"),
                    ),
                },
            }
            report.mapped(c, "canary-by-header-pattern", "see canary-by-header");
        } else {
            rules.push(rule("header", &header, ("value", "always".into()), "new"));
            rules.push(rule("header", &header, ("value", "never".into()), "old"));
            report.approximate(
                c,
                "canary-by-header",
                format!("header rules {header}: always -> new, never -> old{renamed}; other values fall through (balancer.lua:251-254); {REPEATED}"),
            );
        }
    } else {
        for orphan in ["canary-by-header-value", "canary-by-header-pattern"] {
            if c.annotation(orphan).is_some() {
                report.mapped(c, orphan, "no effect without canary-by-header, as in ingress-nginx (balancer.lua:235)");
            }
        }
    }
    if !canary.cookie.is_empty() {
        match migration_engine::config::CookieName::parse(&canary.cookie) {
            Ok(_) => {
                rules.push(rule("cookie", &canary.cookie, ("value", "always".into()), "new"));
                rules.push(rule("cookie", &canary.cookie, ("value", "never".into()), "old"));
                report.mapped(
                    c,
                    "canary-by-cookie",
                    format!("cookie rules {}: always -> new, never -> old; other values fall through (balancer.lua:259-266; both read the first cookie of that name, as $cookie_ does)", canary.cookie),
                );
            }
            Err(e) => report.unmapped(c, "canary-by-cookie", format!("{e}: no cookie rule written, so a request with that cookie set to always or never goes by weight here")),
        }
    }
    // balancer.lua:268-272: a total of 100 or less counts as 100; math.random(total) <= weight.
    let total = if canary.weight_total > 100 { canary.weight_total } else { 100 };
    let weight = canary.weight.clamp(0, total);
    let exact = i128::from(weight) * 10_000;
    let bp = ((exact + i128::from(total) / 2) / i128::from(total)) as u32;
    let percentage = migration_engine::trace::percentage_text(bp);
    let mut how = format!("strategy: weight, percentage: {percentage} (canary-weight {} of {total}: math.random({total}) <= {}, drawn per request, balancer.lua:272)", canary.weight, canary.weight);
    if canary.weight < 0 {
        how.push_str("; a negative weight never matches");
    }
    if c.annotation("canary-weight").is_some() {
        if exact % i128::from(total) == 0 {
            report.mapped(c, "canary-weight", how);
        } else {
            report.approximate(c, "canary-weight", format!("{how}, rounded to 0.01 %"));
        }
    }
    if let Some(t) = c.annotation("canary-weight-total") {
        let note = if canary.weight_total <= 100 { " (100 or less counts as 100, balancer.lua:269)" } else { "" };
        report.mapped(
            c,
            "canary-weight-total",
            format!("the denominator of canary-weight: {total}{note} (written {t:?})"),
        );
    }
    (rules, bp)
}

/// Refuses what Rust's regex and PCRE both accept but read differently: set
/// operations in a class (`[a&&b]`, `[a-c--b]`, `[a~~b]` are literals or ranges
/// to PCRE), `\b{...}` word-boundary forms and `(?R)` (PCRE recurses the whole
/// pattern, an error at match time that sends the request to main; Rust sets
/// CRLF mode, an empty group that matches every value).
fn rust_reads_like_pcre(pattern: &str) -> Result<(), String> {
    if pattern.contains("\\b{") {
        return Err("\\b{...} is a word boundary form in Rust and a repetition in PCRE".into());
    }
    let bytes = pattern.as_bytes();
    let (mut depth, mut at) = (0u8, 0usize);
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 1,
            b'[' if depth > 0 => {
                // POSIX `[:alpha:]` means the same to both; any other `[` opens a
                // nested class in Rust and is a literal in PCRE.
                match pattern[at..].strip_prefix("[:").and_then(|rest| rest.find(":]")) {
                    Some(end) => at += end + 3,
                    None => return Err("a [ inside a class is a nested class in Rust and a literal in PCRE".into()),
                }
            }
            b'[' => {
                depth += 1;
                // A `]` right after `[` or `[^` is a literal.
                if bytes.get(at + 1) == Some(&b'^') {
                    at += 1;
                }
                if bytes.get(at + 1) == Some(&b']') {
                    at += 1;
                }
            }
            b']' if depth > 0 => depth = 0,
            b'(' if depth == 0 && pattern[at..].starts_with("(?R)") => {
                return Err("(?R) recurses the whole pattern in PCRE and only sets CRLF mode in Rust".into());
            }
            b'&' | b'-' | b'~' if depth > 0 && bytes.get(at + 1) == Some(&bytes[at]) => {
                return Err(
                    "a doubled &, - or ~ in a class is a set operation in Rust and literal characters in PCRE".into()
                );
            }
            _ => {}
        }
        at += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rust_reads_like_pcre;

    #[test]
    fn patterns_the_two_dialects_read_differently_are_refused() {
        for same in
            ["^(on|yes)$", "[a-z]+", "[]a]", "[^]a-]", "[[:alpha:]]+", "a--b", r"\[x--y\]", "[a-]", r"\(?R)", "[(?R)]"]
        {
            assert!(rust_reads_like_pcre(same).is_ok(), "{same}");
        }
        for differs in ["^[a&&b]$", "^[a-c--b]$", "[a~~b]", "[[a]b]", r"\b{start}x", "(?R)", "a|(?R)b"] {
            assert!(rust_reads_like_pcre(differs).is_err(), "{differs}");
        }
    }
}
