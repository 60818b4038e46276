//! The canary annotations parsed as ingress-nginx parses them (Go's `strconv`,
//! its annotation validation).

use super::model::{Canary, Ingress};
use super::PREFIX;

/// Go's `strconv.ParseBool`.
fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.Atoi` on a 64-bit platform: an optional sign and digits, nothing else.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The characters ingress-nginx's annotation validation lets through
/// (`parser/validators.go:45`, `:47`, `:55`, `:68`).
fn basic_chars(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~/:".contains(c)
}

/// Parses the canary annotations as `canary/main.go` `Parse` does. An `Err` is
/// a value whose effect depends on the controller's `--enable-annotation-validation`.
pub(super) fn parse_canary(i: &mut Ingress) -> Result<(), (String, String)> {
    let mut notes = Vec::new();
    let enabled = match i.annotation("canary") {
        None => false,
        Some(v) => match go_bool(v) {
            Some(b) => b,
            None => {
                notes.push((
                    "canary".to_owned(),
                    format!("{v:?} is not a Go boolean (strconv.ParseBool: 1, t, T, TRUE, true, True, 0, f, ...): ingress-nginx reads false (parser/main.go:108, canary/main.go:124-129)"),
                ));
                false
            }
        },
    };
    let mut int = |name: &str, default: i64| match i.annotation(name) {
        None => default,
        Some(v) => go_atoi(v).unwrap_or_else(|| {
            notes.push((
                name.to_owned(),
                format!("{v:?} is not a Go integer (strconv.Atoi): ingress-nginx uses {default} (canary/main.go)"),
            ));
            default
        }),
    };
    let weight = int("canary-weight", 0);
    let weight_total = int("canary-weight-total", 100);
    let string = |name: &str, pattern: bool| -> Result<String, (String, String)> {
        let Some(raw) = i.annotation(name) else { return Ok(String::new()) };
        let checked: String = if pattern { raw.to_owned() } else { raw.replace(' ', "") };
        let allowed = |c: char| basic_chars(c) || (pattern && r"^$[](){}*+?|&=\".contains(c));
        if !raw.is_empty() && !checked.chars().all(allowed) {
            return Err((
                name.to_owned(),
                format!(
                    "{PREFIX}{name}: {raw:?} has characters ingress-nginx's annotation validation refuses (parser/validators.go:{}); with validation on (the default) ingress-nginx ignores the value, with it off it uses it, so where this Ingress's requests went depends on the controller's --enable-annotation-validation: write the value ingress-nginx really used",
                    if pattern { 55 } else { 68 }
                ),
            ));
        }
        // parser/main.go:231: each line trimmed.
        Ok(raw.split('\n').map(str::trim).collect::<Vec<_>>().join("\n"))
    };
    // A value the validation refuses matters only on a canary: on an Ingress
    // that is not one, validation on ignores it and validation off makes it
    // "configured but not enabled", which drops the canary annotations
    // (annotations.go:199-201): a main Ingress either way.
    let mut field = |name: &str, pattern: bool| match string(name, pattern) {
        Err((name, message)) if !enabled => {
            notes.push((name, format!("{message}; but this Ingress is no canary (canary is not true), so ingress-nginx routes it as a main Ingress either way")));
            Ok(String::new())
        }
        other => other,
    };
    let canary = Canary {
        weight,
        weight_total,
        header: field("canary-by-header", false)?,
        header_value: field("canary-by-header-value", false)?,
        header_pattern: field("canary-by-header-pattern", true)?,
        cookie: field("canary-by-cookie", false)?,
    };
    i.parse_notes = notes;
    let configured = canary.weight > 0
        || !canary.header.is_empty()
        || !canary.header_value.is_empty()
        || !canary.cookie.is_empty()
        || !canary.header_pattern.is_empty();
    if enabled {
        i.canary = Some(canary);
    } else if configured {
        i.parse_notes.push((
            "canary".to_owned(),
            "canary annotations without canary: true are \"configured but not enabled\" (canary/main.go:182): ingress-nginx routes this Ingress as a main Ingress".to_owned(),
        ));
    }
    Ok(())
}
