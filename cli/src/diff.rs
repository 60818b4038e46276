//! `diff OLD NEW`: what a change of the file does, service by service, and the
//! share of the user space that moves each way, exact from the `split_clients`
//! thresholds of the two percentages.

use std::collections::HashSet;
use std::path::Path;

use migration_engine::config::{self, Config, HeaderMatch, HeaderRule, IpRule, Service, Strategy, UserKey, UserRule};
use migration_engine::hash::Threshold;
use migration_engine::trace::percentage_text;
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

fn header_rule(r: &HeaderRule) -> String {
    let matcher = match &r.matcher {
        HeaderMatch::Value(v) => format!("value: {v:?}"),
        HeaderMatch::Values(vs) => format!("values: {}", list(vs, |v| format!("{v:?}"))),
        HeaderMatch::Pattern(p) => format!("pattern: {:?}", p.0.as_str()),
        HeaderMatch::Present(p) => format!("present: {p}"),
    };
    let from = r.from.as_ref().map_or(String::new(), |f| format!(", from: {}", list(f, |c| c.0.to_string())));
    cut(format!("{{{}: {}, {matcher}, target: {}{from}}}", r.source.kind(), r.source.name(), r.target.as_str()))
}

fn ip_rule(r: &IpRule) -> String {
    cut(format!("{{cidrs: {}, target: {}}}", list(&r.cidrs, |c| c.0.to_string()), r.target.as_str()))
}

fn user_rule(r: &UserRule) -> String {
    cut(format!("{{users: {}, target: {}}}", list(&r.users, |u| format!("{:?}", u.0)), r.target.as_str()))
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
        new.iter().enumerate().filter(|(_, r)| !old_set.contains(r)).map(|(i, r)| format!("[{i}] {r}")).collect();
    let removed =
        old.iter().enumerate().filter(|(_, r)| !new_set.contains(r)).map(|(i, r)| format!("[{i}] {r}")).collect();
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
            reordered.push(format!("[{from}] -> [{to}] {r}"));
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
    match key {
        UserKey::Header(n) => format!("header:{n}"),
        UserKey::Cookie(n) => format!("cookie:{n}"),
        UserKey::Arg(n) => format!("arg:{n}"),
        UserKey::Var(n) => format!("var:{n}"),
    }
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

/// Field-by-field changes of a service, as `field: old -> new`.
fn field_changes(a: &Service, b: &Service) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |name: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{name}: {x} -> {y}"));
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
    check("fallback", format!("{:?}", a.fallback), format!("{:?}", b.fallback));
    out
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
        let m = moves(s, t);
        let lists = [("header_rules", &hr), ("ip_rules", &ir), ("user_rules", &ur)];
        let unchanged = fields.is_empty()
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
