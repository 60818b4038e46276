//! `diff OLD NEW`: what a change of the file does, service by service, and the
//! share of the user space that moves each way, exact from the `split_clients`
//! thresholds of the two percentages.

use std::collections::HashSet;
use std::path::Path;

use migration_engine::config::ramp::{Gate, OnFailure, Ramp};
use migration_engine::config::{
    self, Config, Fallback, HeaderMatch, HeaderRule, IpRule, Service, Strategy, UserKey, UserRule,
};
use migration_engine::hash::Threshold;
use migration_engine::ramp::{Publication, RampCells, RampState};
use migration_engine::trace::percentage_text;
use migration_engine::{CompiledConfig, CompiledService};
use serde_json::{json, Value};

use crate::{Failed, Format};

fn parse(path: &Path) -> Result<Config, Failed> {
    let file = path.display().to_string();
    migration_engine::read_source(path, migration_engine::source::DEFAULT_MAX_SIZE)
        .and_then(|text| config::parse(&file, &text))
        .map_err(|e| Failed(Some(e.to_string())))
}

fn cut(text: String) -> String {
    if text.chars().count() <= 160 {
        return text;
    }
    let mut short: String = text.chars().take(160).collect();
    short.push('…');
    short
}

fn list<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(", "))
}

/// A rule as text, whole: two rules are the same rule when their texts are
/// equal, so the text must not be cut (a list of users or networks that differs
/// only past what a line shows is still a change). [`cut`] is for display.
fn header_rule(r: &HeaderRule) -> String {
    let matcher = match &r.matcher {
        HeaderMatch::Value(v) => format!("value: {v:?}"),
        HeaderMatch::Values(vs) => format!("values: {}", list(vs, |v| format!("{v:?}"))),
        HeaderMatch::Pattern(p) => format!("pattern: {:?}", p.0.as_str()),
        HeaderMatch::Present(p) => format!("present: {p}"),
    };
    let from = r.from.as_ref().map_or(String::new(), |f| format!(", from: {}", list(f, |c| c.0.to_string())));
    format!("{{{}: {}, {matcher}, target: {}{from}}}", r.source.kind(), r.source.name(), r.target.as_str())
}

fn ip_rule(r: &IpRule) -> String {
    format!("{{cidrs: {}, target: {}}}", list(&r.cidrs, |c| c.0.to_string()), r.target.as_str())
}

fn user_rule(r: &UserRule) -> String {
    format!("{{users: {}, target: {}}}", list(&r.users, |u| format!("{:?}", u.0)), r.target.as_str())
}

/// Added, removed and reordered entries between two lists of rules (as text).
#[derive(Default)]
struct ListDiff {
    added: Vec<String>,
    removed: Vec<String>,
    reordered: Vec<String>,
}

fn diff_lists(old: &[String], new: &[String]) -> ListDiff {
    let old_set: HashSet<&String> = old.iter().collect();
    let new_set: HashSet<&String> = new.iter().collect();
    let added =
        new.iter().enumerate().filter(|(_, r)| !old_set.contains(r)).map(|(i, r)| cut(format!("[{i}] {r}"))).collect();
    let removed =
        old.iter().enumerate().filter(|(_, r)| !new_set.contains(r)).map(|(i, r)| cut(format!("[{i}] {r}"))).collect();
    // Rules in both whose relative order changed: those outside a longest
    // common subsequence of the two orders (first match wins, so order matters).
    let a: Vec<&String> = old.iter().filter(|r| new_set.contains(r)).collect();
    let b: Vec<&String> = new.iter().filter(|r| old_set.contains(r)).collect();
    let mut reordered = Vec::new();
    if a != b && a.len() * b.len() <= 4_000_000 {
        let (n, m) = (a.len(), b.len());
        let mut lcs = vec![vec![0u32; m + 1]; n + 1];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
            }
        }
        let (mut i, mut j) = (0, 0);
        let mut kept = HashSet::new();
        while i < n && j < m {
            if a[i] == b[j] {
                kept.insert(j);
                i += 1;
                j += 1;
            } else if lcs[i + 1][j] >= lcs[i][j + 1] {
                i += 1;
            } else {
                j += 1;
            }
        }
        for (j, r) in b.iter().enumerate().filter(|(j, _)| !kept.contains(j)) {
            let from = old.iter().position(|o| o == *r).unwrap_or(0);
            let to = new.iter().position(|o| o == *r).unwrap_or(0);
            let _ = j;
            reordered.push(cut(format!("[{from}] -> [{to}] {r}")));
        }
    } else if a != b {
        reordered.push(format!("{} rules changed order (too many to align)", a.len()));
    }
    ListDiff { added, removed, reordered }
}

/// How many of the 2^32 hash values a percentage admits (everyone at 100 %).
fn cohort(bp: u32) -> u64 {
    if bp >= 10_000 {
        1 << 32
    } else {
        u64::from(Threshold::from_basis_points(bp).bound())
    }
}

fn key_text(key: &UserKey) -> String {
    key.spec()
}

/// The share of users (or, for weight, of requests) that the percentage split
/// moves each way, and how it is known.
struct Moves {
    up: f64,
    down: f64,
    exact: bool,
    note: String,
}

fn moves(old: &Service, new: &Service) -> Moves {
    let bp = |s: &Service| if s.migration.enabled { s.migration.percentage.0 } else { 0 };
    let (p, q) = (bp(old), bp(new));
    let share = |bp: u32| cohort(bp) as f64 / (1u64 << 32) as f64;
    let (f, g) = (share(p), share(q));
    let (so, sn) = (old.migration.strategy, new.migration.strategy);
    let same_hash = so == sn
        && so != Strategy::Weight
        && old.migration.hash_salt == new.migration.hash_salt
        && (so == Strategy::Ip || old.migration.user_key == new.migration.user_key);
    let (pt, qt) = (percentage_text(p), percentage_text(q));
    if p == q && (same_hash || (so == sn && so == Strategy::Weight)) {
        return Moves { up: 0.0, down: 0.0, exact: true, note: "the split is unchanged".into() };
    }
    if same_hash {
        let (a, b) = (cohort(p), cohort(q));
        let up = b.saturating_sub(a) as f64 / (1u64 << 32) as f64;
        let down = a.saturating_sub(b) as f64 / (1u64 << 32) as f64;
        let what = if so == Strategy::User { "users" } else { "client addresses" };
        return Moves {
            up,
            down,
            exact: true,
            note: format!(
                "strategy {}: {pt} % -> {qt} %: the hash threshold moves from {} to {} of 2^32 hash values, so exactly these shares of {what} move, and only {}",
                so.as_str(),
                a,
                b,
                if b >= a { "old -> new" } else { "new -> old" }
            ),
        };
    }
    if so == Strategy::Weight && sn == Strategy::Weight {
        return Moves {
            up: (g - f).max(0.0),
            down: (f - g).max(0.0),
            exact: true,
            note: format!(
                "strategy weight: every request is drawn anew ({pt} % -> {qt} % of requests to new); no user sticks to a side"
            ),
        };
    }
    // The hash changes (salt, key, strategy) or one side draws per request:
    // the two cohorts are independent.
    let why = if so != sn {
        format!("strategy {} -> {}", so.as_str(), sn.as_str())
    } else if old.migration.hash_salt != new.migration.hash_salt {
        "hash_salt changed".to_owned()
    } else {
        format!("user_key {} -> {}", key_text(&old.migration.user_key), key_text(&new.migration.user_key))
    };
    let up = (1.0 - f) * g;
    let down = f * (1.0 - g);
    Moves {
        up,
        down,
        exact: false,
        note: format!(
            "{why}: the cohorts are drawn anew, independently of the old ones, so about {:.2} % of everyone changes side ({pt} % -> {qt} %)",
            100.0 * (up + down)
        ),
    }
}

/// Field-by-field changes of a service, as `field: old -> new`: every field
/// that changes where a request goes (names and `hosts_given` do not).
fn field_changes(a: &Service, b: &Service) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |name: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{name}: {} -> {}", cut(x), cut(y)));
        }
    };
    check("hosts", list(&a.hosts, |h| h.0.clone()), list(&b.hosts, |h| h.0.clone()));
    check("old_host", a.old_host.0.clone(), b.old_host.0.clone());
    check(
        "old_backend",
        format!("{}://{}", a.old_backend.scheme, a.old_backend.address),
        format!("{}://{}", b.old_backend.scheme, b.old_backend.address),
    );
    check("new_host", a.new_host.0.clone(), b.new_host.0.clone());
    check(
        "new_backend",
        format!("{}://{}", a.new_backend.scheme, a.new_backend.address),
        format!("{}://{}", b.new_backend.scheme, b.new_backend.address),
    );
    check("migration.enabled", a.migration.enabled.to_string(), b.migration.enabled.to_string());
    check("migration.strategy", a.migration.strategy.as_str().into(), b.migration.strategy.as_str().into());
    check("migration.percentage", percentage_text(a.migration.percentage.0), percentage_text(b.migration.percentage.0));
    check("migration.user_key", key_text(&a.migration.user_key), key_text(&b.migration.user_key));
    check("migration.hash_salt", format!("{:?}", a.migration.hash_salt), format!("{:?}", b.migration.hash_salt));
    check("migration.sticky", sticky_text(a.migration.sticky.as_ref()), sticky_text(b.migration.sticky.as_ref()));
    check("migration.drain", drain_text(a.migration.drain.as_ref()), drain_text(b.migration.drain.as_ref()));
    match (&a.migration.ramp, &b.migration.ramp) {
        (Some(x), Some(y)) => {
            check("migration.ramp.steps", steps_text(x), steps_text(y));
            check("migration.ramp.every", duration_text(x.every_ms), duration_text(y.every_ms));
            let start = |r: &Ramp| r.start_ms.map_or("none".to_owned(), time_text);
            check("migration.ramp.start", start(x), start(y));
            match (&x.gate, &y.gate) {
                (Some(g), Some(h)) => {
                    for ((limit, old), (_, new)) in gate_limits(g).into_iter().zip(gate_limits(h)) {
                        let text = |v: Option<String>| v.unwrap_or_else(|| "none".to_owned());
                        check(&format!("migration.ramp.gate.{limit}"), text(old), text(new));
                    }
                }
                (g, h) => check("migration.ramp.gate", gate_text(g.as_ref()), gate_text(h.as_ref())),
            }
            check("migration.ramp.on_failure", x.on_failure.as_str().into(), y.on_failure.as_str().into());
        }
        (x, y) => check("migration.ramp", ramp_text(x.as_ref()), ramp_text(y.as_ref())),
    }
    check("fallback", fallback_text(a.fallback.as_ref()), fallback_text(b.fallback.as_ref()));
    out
}

/// `sticky` as the cookie's attributes (what a client without an id is sent).
fn sticky_text(s: Option<&migration_engine::config::sticky::Sticky>) -> String {
    let Some(s) = s else { return "none".to_owned() };
    format!(
        "max_age {}s, path {}, domain {}, secure {:?}, same_site {}, http_only {}",
        s.max_age_s,
        s.path,
        s.domain.as_deref().unwrap_or("none"),
        s.secure,
        s.same_site.as_str(),
        s.http_only
    )
}

/// `drain` as the YAML writes it: what happens to long-lived connections on a change.
fn drain_text(d: Option<&migration_engine::config::drain::Drain>) -> String {
    let Some(d) = d else { return "none".to_owned() };
    format!("rate {}, after {}", d.rate_text(), duration_text(d.after_ms))
}

fn steps_text(r: &Ramp) -> String {
    list(&r.steps, |bp| percentage_text(*bp))
}

/// Milliseconds in the largest unit that says them exactly, as the YAML writes them.
fn duration_text(ms: u64) -> String {
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms > 0 && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Unix milliseconds as RFC 3339 UTC, with milliseconds when there are some.
fn time_text(ms: i64) -> String {
    if ms < 0 {
        return format!("{ms} ms from 1970-01-01T00:00:00Z");
    }
    let text = migration_engine::report::rfc3339(ms as u64 / 1000);
    match ms % 1000 {
        0 => text,
        millis => format!("{}.{millis:03}Z", text.trim_end_matches('Z')),
    }
}

/// A share (0.01) as the YAML's percent (`1%`).
fn share_text(share: f64) -> String {
    // Twelve decimals: two limits that differ must not print alike (the module's
    // ramp fingerprint tells 0.01 from 0.0100000001 apart, and restarts the ramp).
    let text = format!("{:.12}", share * 100.0);
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

/// The limits of a gate, named as in the YAML, with their values (None: not set).
fn gate_limits(g: &Gate) -> [(&'static str, Option<String>); 5] {
    [
        ("min_requests", Some(g.min_requests.to_string())),
        ("max_error_rate", g.max_error_rate.map(share_text)),
        ("max_error_rate_vs_old", g.max_error_rate_vs_old.map(share_text)),
        ("max_p99", g.max_p99_ms.map(duration_text)),
        ("max_p99_vs_old", g.max_p99_vs_old.map(|r| r.to_string())),
    ]
}

fn gate_text(g: Option<&Gate>) -> String {
    let Some(g) = g else { return "none".to_owned() };
    let set: Vec<String> = gate_limits(g)
        .into_iter()
        .filter(|(limit, _)| *limit != "min_requests" || g.min_requests > 0)
        .filter_map(|(limit, value)| Some(format!("{limit}: {}", value?)))
        .collect();
    format!("{{{}}}", set.join(", "))
}

fn ramp_text(r: Option<&Ramp>) -> String {
    let Some(r) = r else { return "none".to_owned() };
    let mut text = format!("{{steps: {}, every: {}", steps_text(r), duration_text(r.every_ms));
    if let Some(start) = r.start_ms {
        text.push_str(&format!(", start: {}", time_text(start)));
    }
    if r.gate.is_some() {
        text.push_str(&format!(", gate: {}", gate_text(r.gate.as_ref())));
    }
    if r.on_failure != OnFailure::default() {
        text.push_str(&format!(", on_failure: {}", r.on_failure.as_str()));
    }
    text.push('}');
    text
}

fn fallback_text(f: Option<&Fallback>) -> String {
    let Some(f) = f else { return "none".to_owned() };
    format!(
        "{{failures: {}, statuses: {}, cooldown: {}}}",
        f.failures,
        list(&f.statuses, u16::to_string),
        duration_text(f.cooldown_ms)
    )
}

fn compiled_service<'c>(config: &'c CompiledConfig, name: &str) -> Option<&'c CompiledService> {
    config.services.iter().find(|s| s.name == name)
}

/// What publishing the new file does to a service's ramp.
struct RampEffect {
    /// `starts`, `restarts`, `keeps_position` or `ends`.
    effect: &'static str,
    /// Where a ramp that (re)starts stands: step index, step count, percentage
    /// in force, state.
    position: Option<(usize, usize, u32, RampState)>,
    /// A held or rolled-back ramp starts again though a moving one is kept.
    stopped_restarts: bool,
    note: String,
}

/// Decided by the module's own code: both configurations compiled (their ramp
/// and outcome fingerprints), the old one published into fresh ramp cells at
/// `now_ms` and then the new one, as a reload or a `watch=` publication does.
fn ramp_effect(old: &CompiledService, new: &CompiledService, now_ms: u64) -> Option<RampEffect> {
    if old.ramp.is_none() && new.ramp.is_none() {
        return None;
    }
    let cells = RampCells::default();
    cells.publish(old.ramp.as_ref(), old.ramp_fingerprint, old.outcome_fingerprint, old.enabled, now_ms);
    let publication =
        cells.publish(new.ramp.as_ref(), new.ramp_fingerprint, new.outcome_fingerprint, new.enabled, now_ms);
    let freezing = match (old.enabled, new.enabled) {
        (true, false) => "; enabled: false freezes it where it stands",
        (false, true) => "; enabled: true thaws it (without start, the frozen time does not count toward every)",
        _ => "",
    };
    Some(match (publication, new.ramp.as_ref()) {
        (Publication::Started, Some(ramp)) => {
            let effect = if old.ramp.is_some() { "restarts" } else { "starts" };
            let (position, at) = position_after_start(&cells, ramp);
            let mut note = format!("{effect} {at}");
            let bp = position.2;
            if let Some(last) = old.ramp.as_ref().and_then(|r| r.steps.last()).filter(|&&last| last > bp) {
                note.push_str(&format!(
                    ", wherever it stood: a ramp that had reached {} % drops to {} %",
                    percentage_text(*last),
                    percentage_text(bp)
                ));
            }
            note.push_str(freezing);
            RampEffect { effect, position: Some(position), stopped_restarts: false, note }
        }
        (Publication::Kept, Some(ramp)) => {
            let stopped_restarts = old.outcome_fingerprint != new.outcome_fingerprint;
            let mut note = "keeps its position".to_owned();
            if stopped_restarts {
                // Where a restart lands: the same publication into cells that hold no position.
                let fresh = RampCells::default();
                fresh.publish(Some(ramp), new.ramp_fingerprint, new.outcome_fingerprint, new.enabled, now_ms);
                let (_, at) = position_after_start(&fresh, ramp);
                note.push_str(&format!(
                    " (a held or rolled-back ramp starts again {at}: its migration block or backends change)"
                ));
            }
            note.push_str(freezing);
            RampEffect { effect: "keeps_position", position: None, stopped_restarts, note }
        }
        _ => RampEffect {
            effect: "ends",
            position: None,
            stopped_restarts: false,
            note: format!(
                "ends: the file's percentage, {} %, is in force from the publication",
                percentage_text(new.percentage_bp)
            ),
        },
    })
}

/// Where a ramp stands right after a publication started it (step index, step
/// count, percentage in force, state), and that in words.
fn position_after_start(cells: &RampCells, ramp: &Ramp) -> ((usize, usize, u32, RampState), String) {
    let step = cells.step(ramp);
    let state = cells.state().unwrap_or(RampState::Ramping);
    let bp = cells.percentage_in_force().unwrap_or(0);
    let steps = ramp.steps.len();
    let words = match (state, ramp.start_ms) {
        (RampState::Scheduled, Some(start)) => format!(
            "scheduled: 0 % until {}, then step 1 of {steps} ({} %)",
            time_text(start),
            percentage_text(ramp.steps[0])
        ),
        (_, Some(_)) => format!(
            "at step {} of {steps} ({} %), on the wall clock (start + {step} × every)",
            step + 1,
            percentage_text(bp)
        ),
        (_, None) => format!("at step {} of {steps} ({} %)", step + 1, percentage_text(bp)),
    };
    ((step, steps, bp, state), words)
}

/// Users listed by user_rules whose listed target changes (first rule wins).
fn listed_users(a: &Service, b: &Service) -> Vec<String> {
    let first = |s: &Service| {
        let mut m = std::collections::BTreeMap::new();
        for r in &s.canary.user_rules {
            for u in &r.users {
                m.entry(u.0.clone()).or_insert(r.target.as_str());
            }
        }
        m
    };
    let (x, y) = (first(a), first(b));
    let mut out = Vec::new();
    for (u, t) in &x {
        match y.get(u) {
            None => out.push(format!("{u:?}: listed {t} -> not listed")),
            Some(s) if s != t => out.push(format!("{u:?}: {t} -> {s}")),
            _ => {}
        }
    }
    for (u, t) in &y {
        if !x.contains_key(u) {
            out.push(format!("{u:?}: not listed -> {t}"));
        }
    }
    out
}

pub fn run(old: &Path, new: &Path, format: Format) -> Result<(), Failed> {
    let a = parse(old)?;
    let b = parse(new)?;
    let (compiled_a, compiled_b) = (CompiledConfig::compile(a.clone()), CompiledConfig::compile(b.clone()));
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let names = |c: &Config| c.services.iter().map(|s| s.name.0.clone()).collect::<Vec<_>>();
    let (an, bn) = (names(&a), names(&b));
    let added: Vec<&String> = bn.iter().filter(|n| !an.contains(n)).collect();
    let removed: Vec<&String> = an.iter().filter(|n| !bn.contains(n)).collect();
    let mut services = serde_json::Map::new();
    let mut text = Vec::new();
    if a.version != b.version {
        text.push(format!("version: {} -> {}", a.version, b.version));
    }
    for n in &added {
        text.push(format!("+ service {n} (added)"));
    }
    for n in &removed {
        text.push(format!("- service {n} (removed: its Hosts route nowhere)"));
    }
    for s in &a.services {
        let Some(t) = b.services.iter().find(|t| t.name == s.name) else { continue };
        let fields = field_changes(s, t);
        let hr = diff_lists(
            &s.canary.header_rules.iter().map(header_rule).collect::<Vec<_>>(),
            &t.canary.header_rules.iter().map(header_rule).collect::<Vec<_>>(),
        );
        let ir = diff_lists(
            &s.canary.ip_rules.iter().map(ip_rule).collect::<Vec<_>>(),
            &t.canary.ip_rules.iter().map(ip_rule).collect::<Vec<_>>(),
        );
        let ur = diff_lists(
            &s.canary.user_rules.iter().map(user_rule).collect::<Vec<_>>(),
            &t.canary.user_rules.iter().map(user_rule).collect::<Vec<_>>(),
        );
        let users = listed_users(s, t);
        let mut m = moves(s, t);
        let ramp = compiled_service(&compiled_a, &s.name.0)
            .zip(compiled_service(&compiled_b, &s.name.0))
            .and_then(|(x, y)| ramp_effect(x, y, now_ms));
        if ramp.is_some() {
            m.note.push_str(
                "; these shares compare the files' percentages (a ramp's first step): the ramp line says what is in force",
            );
        }
        let ramp_json = ramp.as_ref().map(|r| {
            let position = r.position;
            json!({
                "effect": r.effect,
                "step": position.map(|(step, ..)| step + 1),
                "steps": position.map(|(_, steps, ..)| steps),
                "percentage": position.map(|(_, _, bp, _)| f64::from(bp) / 100.0),
                "state": position.map(|(.., state)| state.as_str()),
                "held_or_rolled_back_restarts": r.stopped_restarts,
                "note": r.note,
            })
        });
        let lists = [("header_rules", &hr), ("ip_rules", &ir), ("user_rules", &ur)];
        // A publication that moves the ramp is a change, whatever the fields say.
        let ramp_moves = ramp.as_ref().is_some_and(|r| r.effect != "keeps_position" || r.stopped_restarts);
        let unchanged = fields.is_empty()
            && !ramp_moves
            && lists.iter().all(|(_, d)| d.added.is_empty() && d.removed.is_empty() && d.reordered.is_empty());
        let mut rules_json = serde_json::Map::new();
        for (name, d) in lists {
            rules_json
                .insert(name.to_owned(), json!({"added": d.added, "removed": d.removed, "reordered": d.reordered}));
        }
        services.insert(
            s.name.0.clone(),
            json!({
                "changed": !unchanged,
                "fields": fields,
                "rules": rules_json,
                "listed_users": users,
                "moves": {"old_to_new": m.up, "new_to_old": m.down, "exact": m.exact, "note": m.note},
                "ramp": ramp_json,
            }),
        );
        if unchanged {
            continue;
        }
        text.push(format!("service {}:", s.name.0));
        for f in &fields {
            text.push(format!("  {f}"));
        }
        for (name, d) in lists {
            for r in &d.added {
                text.push(format!("  {name}: + {r}"));
            }
            for r in &d.removed {
                text.push(format!("  {name}: - {r}"));
            }
            for r in &d.reordered {
                text.push(format!("  {name}: moved {r}"));
            }
        }
        for u in users.iter().take(20) {
            text.push(format!("  user_rules: {u}"));
        }
        if users.len() > 20 {
            text.push(format!("  user_rules: and {} more listed users change", users.len() - 20));
        }
        if let Some(r) = &ramp {
            text.push(format!("  ramp: {}", r.note));
        }
        text.push(format!(
            "  split: old -> new {:.4} %, new -> old {:.4} % ({})",
            100.0 * m.up,
            100.0 * m.down,
            m.note
        ));
    }
    match format {
        Format::Json => {
            let doc: Value = json!({
                "version": {"old": a.version, "new": b.version},
                "added": added,
                "removed": removed,
                "services": services,
            });
            println!("{}", serde_json::to_string_pretty(&doc).expect("JSON"));
        }
        Format::Text => {
            if text.is_empty() {
                println!("no changes");
            }
            for line in text {
                println!("{line}");
            }
        }
    }
    Ok(())
}
