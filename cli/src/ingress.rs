//! `import-ingress`: ingress-nginx canary Ingress pairs to a migration.yaml.
//!
//! ingress-nginx (controller `balancer.lua`, `route_to_alternative_balancer`)
//! decides a canary request in this order, and this is what each annotation is
//! mapped to (header rules keep the order; the module's first match wins):
//!
//! 1. `canary-by-header: H`: with `canary-by-header-value: V`, `H == V` → canary,
//!    anything else falls through; else with `canary-by-header-pattern: P`, a
//!    PCRE match of P in H → canary, else fall through; else `always` → canary,
//!    `never` → main (no fall through), anything else falls through.
//! 2. `canary-by-cookie: C`: `always` → canary, `never` → main, else fall through.
//! 3. `canary-weight: W` of `canary-weight-total: T` (default 100; a total of
//!    100 or less counts as 100): `math.random(T) <= W`, drawn per request.
//!
//! The canary gets traffic only for the hosts and paths a main (non-canary)
//! Ingress also serves.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use saphyr_parser::{Event, Parser};
use serde_json::json;
use serde_yaml::Value;

use crate::{Failed, Format};

const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// One step of a path in a YAML document.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Line and column of the node at `path` in document `doc` of a stream.
fn locate(text: &str, doc: usize, path: &[Step]) -> Option<(usize, usize)> {
    enum Frame {
        Map { key: Option<String>, awaiting_key: bool },
        Seq { next: usize },
    }
    let mut docs = 0usize;
    let mut frames: Vec<Frame> = Vec::new();
    let mut at: Vec<Step> = Vec::new();
    let mut in_key = 0usize;
    for item in Parser::new_from_str(text) {
        let (event, span) = item.ok()?;
        match &event {
            Event::DocumentStart(_) => {
                frames.clear();
                at.clear();
            }
            Event::DocumentEnd => docs += 1,
            Event::Scalar(..) | Event::SequenceStart(..) | Event::MappingStart(..) | Event::Alias(_) => {
                let opens = matches!(event, Event::SequenceStart(..) | Event::MappingStart(..));
                let mut is_key = in_key > 0;
                match frames.last_mut() {
                    Some(Frame::Map { key, awaiting_key }) if *awaiting_key && in_key == 0 => {
                        is_key = true;
                        *key = match &event {
                            Event::Scalar(v, ..) => Some(v.to_string()),
                            _ => None,
                        };
                        *awaiting_key = false;
                    }
                    Some(Frame::Map { key, awaiting_key }) if in_key == 0 => {
                        at.push(Step::Key(key.clone().unwrap_or_default()));
                        *awaiting_key = true;
                    }
                    Some(Frame::Seq { next }) if in_key == 0 => {
                        at.push(Step::Index(*next));
                        *next += 1;
                    }
                    _ => {}
                }
                let frame = || {
                    if matches!(event, Event::MappingStart(..)) {
                        Frame::Map { key: None, awaiting_key: true }
                    } else {
                        Frame::Seq { next: 0 }
                    }
                };
                if is_key {
                    if opens {
                        in_key += 1;
                        frames.push(frame());
                    }
                    continue;
                }
                if docs == doc && at == path {
                    return Some((span.start.line(), span.start.col() + 1));
                }
                if opens {
                    frames.push(frame());
                } else {
                    at.pop();
                }
            }
            Event::SequenceEnd | Event::MappingEnd => {
                frames.pop();
                if in_key > 0 {
                    in_key -= 1;
                } else {
                    at.pop();
                }
            }
            _ => {}
        }
    }
    None
}

/// Where an Ingress is: file, document, and its path in the document.
#[derive(Clone, Debug)]
struct Origin {
    file: String,
    doc: usize,
    path: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Backend {
    service: String,
    namespace: String,
    /// A port number, or the name of a named port.
    port: Result<u32, String>,
}

impl Backend {
    fn address(&self) -> String {
        let host = format!("{}.{}.svc.cluster.local", self.service, self.namespace);
        match &self.port {
            Ok(p) => format!("{host}:{p}"),
            Err(_) => host,
        }
    }
}

#[derive(Debug)]
struct Ingress {
    namespace: String,
    name: String,
    annotations: BTreeMap<String, String>,
    /// (host, path, backend)
    paths: Vec<(String, String, Backend)>,
    default_backend: bool,
    origin: Origin,
    text: std::rc::Rc<str>,
}

impl Ingress {
    fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn canary(&self) -> bool {
        self.annotations.get(&format!("{PREFIX}canary")).is_some_and(|v| v == "true")
    }

    fn annotation(&self, name: &str) -> Option<&str> {
        self.annotations.get(&format!("{PREFIX}{name}")).map(String::as_str)
    }

    /// `file:line:column` of an annotation's value.
    fn locate_annotation(&self, name: &str) -> String {
        let mut path = self.origin.path.clone();
        path.extend([
            Step::Key("metadata".into()),
            Step::Key("annotations".into()),
            Step::Key(format!("{PREFIX}{name}")),
        ]);
        match locate(&self.text, self.origin.doc, &path) {
            Some((l, c)) => format!("{}:{l}:{c}", self.origin.file),
            None => self.origin.file.clone(),
        }
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn backend(v: &Value, namespace: &str) -> Option<Backend> {
    // networking.k8s.io/v1: backend.service.{name, port.{number|name}}
    if let Some(service) = v.get("service") {
        let name = service.get("name")?.as_str()?.to_owned();
        let port = service.get("port")?;
        let port = match (port.get("number").and_then(Value::as_u64), port.get("name").and_then(Value::as_str)) {
            (Some(n), _) => Ok(n as u32),
            (None, Some(name)) => Err(name.to_owned()),
            _ => return None,
        };
        return Some(Backend { service: name, namespace: namespace.to_owned(), port });
    }
    // extensions/v1beta1, networking.k8s.io/v1beta1: serviceName, servicePort
    let name = v.get("serviceName")?.as_str()?.to_owned();
    let port = match v.get("servicePort")? {
        Value::Number(n) => Ok(n.as_u64()? as u32),
        Value::String(s) => s.parse().map_err(|_| s.clone()),
        _ => return None,
    };
    Some(Backend { service: name, namespace: namespace.to_owned(), port })
}

fn ingress(v: &Value, origin: Origin, text: std::rc::Rc<str>) -> Ingress {
    let meta = v.get("metadata");
    let get = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str).map(str::to_owned);
    let namespace = get("namespace").unwrap_or_else(|| "default".into());
    let annotations = meta
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_mapping)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.as_str()?.to_owned(), scalar(v)?))).collect())
        .unwrap_or_default();
    let spec = v.get("spec");
    let mut paths = Vec::new();
    for rule in spec.and_then(|s| s.get("rules")).and_then(Value::as_sequence).into_iter().flatten() {
        let host = rule.get("host").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
        for p in rule.get("http").and_then(|h| h.get("paths")).and_then(Value::as_sequence).into_iter().flatten() {
            let path = p.get("path").and_then(Value::as_str).unwrap_or("/").to_owned();
            if let Some(b) = p.get("backend").and_then(|b| backend(b, &namespace)) {
                paths.push((host.clone(), path, b));
            }
        }
    }
    let default_backend = spec.is_some_and(|s| s.get("defaultBackend").is_some() || s.get("backend").is_some());
    Ingress { namespace, name: get("name").unwrap_or_default(), annotations, paths, default_backend, origin, text }
}

/// Every Ingress of a file: single objects, `kind: List` (`items`), several documents.
fn read(path: &PathBuf) -> Result<Vec<Ingress>, Failed> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Failed(Some(format!("{file}: cannot read the file: {e}"))))?;
    let text: std::rc::Rc<str> = migration_engine::source_from_bytes(&file, bytes)?.into();
    let mut out = Vec::new();
    for (doc, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde::Deserialize::deserialize(de).map_err(|e: serde_yaml::Error| {
            let at = e.location().map_or(String::new(), |l| format!(":{}:{}", l.line(), l.column()));
            Failed(Some(format!("{file}{at}: not valid YAML: {e}")))
        })?;
        let value: Value = value;
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        let origin = |path: Vec<Step>| Origin { file: file.clone(), doc, path };
        match kind {
            "Ingress" => out.push(ingress(&value, origin(Vec::new()), text.clone())),
            "List" | "IngressList" => {
                for (i, item) in value.get("items").and_then(Value::as_sequence).into_iter().flatten().enumerate() {
                    if item.get("kind").and_then(Value::as_str).is_none_or(|k| k == "Ingress") {
                        let path = vec![Step::Key("items".into()), Step::Index(i)];
                        out.push(ingress(item, origin(path), text.clone()));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The report: what each annotation became.
#[derive(Default)]
struct Report {
    mapped: Vec<serde_json::Value>,
    approximate: Vec<serde_json::Value>,
    unmapped: Vec<serde_json::Value>,
    errors: Vec<String>,
}

impl Report {
    fn mapped(&mut self, ingress: &Ingress, annotation: &str, how: String) {
        self.mapped.push(json!({"ingress": ingress.id(), "annotation": annotation, "how": how}));
    }
    fn approximate(&mut self, ingress: &Ingress, annotation: &str, how: String) {
        self.approximate.push(json!({"ingress": ingress.id(), "annotation": annotation, "how": how}));
    }
    fn unmapped(&mut self, ingress: &Ingress, annotation: &str, why: String) {
        self.unmapped.push(json!({"ingress": ingress.id(), "annotation": annotation, "why": why}));
    }
}

/// A header rule of the output, in YAML flow style.
struct RuleOut {
    kind: &'static str,
    name: String,
    matcher: String,
    target: &'static str,
}

struct ServiceOut {
    name: String,
    host: String,
    hosts_by_location: bool,
    old: Backend,
    new: Backend,
    rules: Vec<RuleOut>,
    percentage_bp: u32,
    comments: Vec<String>,
}

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

fn service_name(parts: &[&str]) -> String {
    let raw = parts.join("-");
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).collect()
}

/// The header and cookie rules and the weight of one canary Ingress.
fn canary_rules(c: &Ingress, report: &mut Report) -> (Vec<RuleOut>, u32) {
    let mut rules = Vec::new();
    let header = c.annotation("canary-by-header").filter(|h| !h.is_empty());
    let value = c.annotation("canary-by-header-value").filter(|v| !v.is_empty());
    let pattern = c.annotation("canary-by-header-pattern").filter(|p| !p.is_empty());
    match header {
        Some(h) => {
            if let Err(e) = migration_engine::config::HeaderName::parse(h) {
                report
                    .errors
                    .push(format!("{}: {PREFIX}canary-by-header: {e}", c.locate_annotation("canary-by-header")));
            } else if let Some(v) = value {
                rules.push(RuleOut {
                    kind: "header",
                    name: h.into(),
                    matcher: format!("value: {}", q(v)),
                    target: "new",
                });
                report.mapped(
                    c,
                    "canary-by-header",
                    format!("header rule {{header: {h}, value: {v:?}, target: new}}; other values fall through"),
                );
                report.mapped(c, "canary-by-header-value", format!("the value {v:?} of that rule"));
                if pattern.is_some() {
                    report.unmapped(
                        c,
                        "canary-by-header-pattern",
                        "ignored, as ingress-nginx ignores it when canary-by-header-value is set".into(),
                    );
                }
            } else if let Some(p) = pattern {
                match migration_engine::config::Pattern::parse(p) {
                    Ok(_) => {
                        rules.push(RuleOut { kind: "header", name: h.into(), matcher: format!("pattern: {}", q(p)), target: "new" });
                        report.mapped(c, "canary-by-header", format!("header rule {{header: {h}, pattern: {p:?}, target: new}}; no match falls through"));
                        report.approximate(
                            c,
                            "canary-by-header-pattern",
                            "searched in the value as ingress-nginx's PCRE does, in Rust regex syntax (no look-around or backreferences; `.` is a byte)".into(),
                        );
                    }
                    Err(e) => report.errors.push(format!(
                        "{}: {PREFIX}canary-by-header-pattern: {e} (ingress-nginx would log the error and send every request to the main backend; refused here)",
                        c.locate_annotation("canary-by-header-pattern")
                    )),
                }
            } else {
                rules.push(RuleOut {
                    kind: "header",
                    name: h.into(),
                    matcher: "value: \"always\"".into(),
                    target: "new",
                });
                rules.push(RuleOut {
                    kind: "header",
                    name: h.into(),
                    matcher: "value: \"never\"".into(),
                    target: "old",
                });
                report.mapped(
                    c,
                    "canary-by-header",
                    format!("header rules {h}: always -> new, never -> old; other values fall through"),
                );
            }
        }
        None => {
            for orphan in ["canary-by-header-value", "canary-by-header-pattern"] {
                if c.annotation(orphan).is_some() {
                    report.unmapped(c, orphan, "has no effect without canary-by-header (as in ingress-nginx)".into());
                }
            }
        }
    }
    if let Some(cookie) = c.annotation("canary-by-cookie").filter(|v| !v.is_empty()) {
        if let Err(e) = migration_engine::config::CookieName::parse(cookie) {
            report.errors.push(format!("{}: {PREFIX}canary-by-cookie: {e}", c.locate_annotation("canary-by-cookie")));
        } else {
            rules.push(RuleOut {
                kind: "cookie",
                name: cookie.into(),
                matcher: "value: \"always\"".into(),
                target: "new",
            });
            rules.push(RuleOut {
                kind: "cookie",
                name: cookie.into(),
                matcher: "value: \"never\"".into(),
                target: "old",
            });
            report.mapped(
                c,
                "canary-by-cookie",
                format!("cookie rules {cookie}: always -> new, never -> old; other values fall through"),
            );
        }
    }
    let number = |name: &str| -> Option<Result<u64, String>> {
        let v = c.annotation(name)?;
        Some(
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("{}: {PREFIX}{name}: {v:?} is not a whole number", c.locate_annotation(name))),
        )
    };
    let weight = match number("canary-weight") {
        Some(Ok(w)) => w,
        Some(Err(e)) => {
            report.errors.push(e);
            0
        }
        None => 0,
    };
    let total = match number("canary-weight-total") {
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            report.errors.push(e);
            100
        }
        None => 100,
    };
    // balancer.lua: a total of 100 or less counts as 100; math.random(total) <= weight.
    let total = total.max(100);
    let exact_bp = weight.min(total) * 10_000;
    let bp = ((exact_bp + total / 2) / total) as u32;
    let percentage = migration_engine::trace::percentage_text(bp);
    let how =
        format!("strategy: weight, percentage: {percentage} (canary-weight {weight} of {total}, drawn per request)");
    match (c.annotation("canary-weight").is_some(), exact_bp % total == 0) {
        (true, true) => report.mapped(c, "canary-weight", how),
        (true, false) => report.approximate(c, "canary-weight", format!("{how}, rounded to 0.01 %")),
        (false, _) => {}
    }
    if let Some(t) = c.annotation("canary-weight-total") {
        let note = if t.trim().parse::<u64>().is_ok_and(|t| t < 100) {
            " (below 100 counts as 100, as in ingress-nginx)"
        } else {
            ""
        };
        report.mapped(c, "canary-weight-total", format!("the denominator of canary-weight: {total}{note}"));
    }
    (rules, bp)
}

const AFFINITY: &[&str] = &[
    "affinity",
    "affinity-mode",
    "affinity-canary-behavior",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-max-age",
    "session-cookie-expires",
    "session-cookie-samesite",
    "session-cookie-secure",
    "session-cookie-change-on-failure",
    "session-cookie-domain",
    "session-cookie-conditional-samesite-none",
];
const CANARY: &[&str] = &[
    "canary",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "canary-weight",
    "canary-weight-total",
];

/// Annotations other than the canary's own, reported once per Ingress.
fn other_annotations(i: &Ingress, report: &mut Report) {
    for (key, value) in &i.annotations {
        let Some(name) = key.strip_prefix(PREFIX) else { continue };
        if CANARY.contains(&name) {
            continue;
        }
        if AFFINITY.contains(&name) {
            let cookie = i.annotation("session-cookie-name").unwrap_or("INGRESSCOOKIE");
            report.unmapped(
                i,
                name,
                format!(
                    "session affinity ({value}) pins a client to a pod, not to a side; for users that stay on one side, use strategy: user with user_key: cookie:{cookie} (or header:X-User-ID), which ingress-nginx's weight never had"
                ),
            );
        } else {
            report.unmapped(i, name, format!("not a canary annotation ({value:?}): keep its effect in nginx.conf; this tool maps only the canary"));
        }
    }
}

fn render(services: &[ServiceOut], files: &[PathBuf]) -> String {
    let mut y = String::new();
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let _ = writeln!(y, "# Generated by nginx-migration import-ingress from {}.", names.join(", "));
    let _ = writeln!(
        y,
        "# old = the main Ingress's backend, new = the canary's; ingress-nginx's order: header, cookie, weight."
    );
    if services.is_empty() {
        y.push_str("services: []\n");
        return y;
    }
    y.push_str("services:\n");
    for s in services {
        for c in &s.comments {
            let _ = writeln!(y, "  # {c}");
        }
        let _ = writeln!(y, "  - name: {}", s.name);
        if s.hosts_by_location {
            let _ = writeln!(
                y,
                "    hosts: [{}]   # routed only by `migration_service {}` locations",
                q(&format!("{}.by-location.invalid", s.name)),
                s.name
            );
        } else {
            let _ = writeln!(y, "    hosts: [{}]", q(&s.host));
        }
        let _ = writeln!(y, "    old_host: {}", q(&s.host));
        let _ = writeln!(y, "    old_backend: {}", q(&s.old.address()));
        let _ = writeln!(y, "    new_host: {}", q(&s.host));
        let _ = writeln!(y, "    new_backend: {}", q(&s.new.address()));
        let _ = writeln!(y, "    migration:");
        let _ = writeln!(y, "      strategy: weight");
        let _ = writeln!(y, "      percentage: {}", migration_engine::trace::percentage_text(s.percentage_bp));
        if !s.rules.is_empty() {
            let _ = writeln!(y, "    canary:");
            let _ = writeln!(y, "      header_rules:");
            for r in &s.rules {
                let _ = writeln!(y, "        - {{{}: {}, {}, target: {}}}", r.kind, q(&r.name), r.matcher, r.target);
            }
        }
    }
    y
}

pub fn run(files: &[PathBuf], format: Format) -> Result<(), Failed> {
    let mut all = Vec::new();
    for f in files {
        all.extend(read(f)?);
    }
    let mut report = Report::default();
    // Main Ingresses by (host, path): what ingress-nginx attaches a canary to.
    let mut mains: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (k, i) in all.iter().enumerate().filter(|(_, i)| !i.canary()) {
        for (host, path, _) in &i.paths {
            mains.entry((host.clone(), path.clone())).or_insert(k);
        }
    }
    let mut services: Vec<ServiceOut> = Vec::new();
    let mut used_names = BTreeSet::new();
    let mut claimed: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut reported = BTreeSet::new();
    for (ci, c) in all.iter().enumerate().filter(|(_, i)| i.canary()) {
        let (rules, bp) = canary_rules(c, &mut report);
        if c.default_backend {
            report.unmapped(
                c,
                "canary",
                "spec.defaultBackend of a canary Ingress is not mapped: the module routes by Host".into(),
            );
        }
        // (main, host) -> [(path, old, new)]
        let mut pairs: BTreeMap<(usize, String), Vec<(String, Backend, Backend)>> = BTreeMap::new();
        for (host, path, new) in &c.paths {
            if host.is_empty() {
                report.unmapped(c, "canary", format!("path {path} has no host: the module routes by Host"));
                continue;
            }
            let Some(&m) = mains.get(&(host.clone(), path.clone())) else {
                report.unmapped(
                    c,
                    "canary",
                    format!(
                        "no main Ingress serves host {host} path {path}: ingress-nginx sends this canary nothing there"
                    ),
                );
                continue;
            };
            if let Some(other) = claimed.get(&(host.clone(), path.clone())) {
                report.unmapped(c, "canary", format!("host {host} path {path} already has the canary {other}: ingress-nginx uses one canary per host and path"));
                continue;
            }
            claimed.insert((host.clone(), path.clone()), c.id());
            let old = all[m]
                .paths
                .iter()
                .find(|(h, p, _)| h == host && p == path)
                .map(|(_, _, b)| b.clone())
                .expect("indexed");
            pairs.entry((m, host.clone())).or_default().push((path.clone(), old, new.clone()));
        }
        for ((m, host), entries) in pairs {
            let main = &all[m];
            if reported.insert(m) {
                other_annotations(main, &mut report);
            }
            // One service per distinct (old, new) pair of backends on this host.
            let mut by_backends: BTreeMap<(Backend, Backend), Vec<String>> = BTreeMap::new();
            for (path, old, new) in entries {
                by_backends.entry((old, new)).or_default().push(path);
            }
            let main_paths: BTreeSet<&String> =
                main.paths.iter().filter(|(h, _, _)| *h == host).map(|(_, p, _)| p).collect();
            let whole_host =
                by_backends.len() == 1 && by_backends.values().next().is_some_and(|p| p.len() == main_paths.len());
            for (k, ((old, new), paths)) in by_backends.into_iter().enumerate() {
                let mut name = service_name(&[&main.namespace, &main.name]);
                if used_names.contains(&name) {
                    name = service_name(&[&main.namespace, &main.name, &host]);
                }
                let base = name.clone();
                let mut n = 2;
                while used_names.contains(&name) {
                    name = format!("{base}-{n}");
                    n += 1;
                }
                used_names.insert(name.clone());
                let hosts_by_location = k > 0;
                let mut comments = Vec::new();
                for (b, side) in [(&old, "old"), (&new, "new")] {
                    if let Err(port) = &b.port {
                        let ingress = if side == "old" { main } else { c };
                        report.unmapped(
                            ingress,
                            "spec.rules",
                            format!("service {} uses the named port {port:?}: write its number in {side}_backend of {name} (the module needs host:port)", b.service),
                        );
                        comments.push(format!("FIXME: {side}_backend: the named port {port:?} needs its number"));
                    }
                }
                if !whole_host {
                    let locations: Vec<String> = paths
                        .iter()
                        .map(|p| format!("location {p} {{ migration on; migration_service {name}; proxy_set_header Host $migration_host; proxy_pass $migration_scheme://$migration_backend; }}"))
                        .collect();
                    report.approximate(
                        c,
                        "canary",
                        format!(
                            "host {host}: the canary covers paths {} of {} the main Ingress serves; the module routes by Host, so route only these locations: {}",
                            paths.join(", "),
                            main_paths.len(),
                            locations.join(" ")
                        ),
                    );
                    comments.push(format!("only paths {} of {host}: see the report", paths.join(", ")));
                }
                report.mapped(
                    c,
                    "canary",
                    format!(
                        "service {name}: host {host}, old {} ({}), new {} ({})",
                        old.address(),
                        main.id(),
                        new.address(),
                        c.id()
                    ),
                );
                services.push(ServiceOut {
                    name,
                    host: host.clone(),
                    hosts_by_location,
                    old,
                    new,
                    rules: rules
                        .iter()
                        .map(|r| RuleOut {
                            kind: r.kind,
                            name: r.name.clone(),
                            matcher: r.matcher.clone(),
                            target: r.target,
                        })
                        .collect(),
                    percentage_bp: bp,
                    comments,
                });
            }
        }
        let _ = ci;
        other_annotations(c, &mut report);
    }
    print!("{}", render(&services, files));
    match format {
        Format::Json => {
            let doc = json!({"mapped": report.mapped, "approximate": report.approximate, "unmapped": report.unmapped, "errors": report.errors});
            eprintln!("{}", serde_json::to_string_pretty(&doc).expect("JSON"));
        }
        Format::Text => {
            let line = |v: &serde_json::Value, key: &str| {
                let annotation = v["annotation"].as_str().unwrap_or("");
                let prefix = if annotation.starts_with("spec") { "" } else { PREFIX };
                format!(
                    "{}: {prefix}{annotation}: {}",
                    v["ingress"].as_str().unwrap_or(""),
                    v[key].as_str().unwrap_or("")
                )
            };
            for v in &report.mapped {
                eprintln!("mapped       {}", line(v, "how"));
            }
            for v in &report.approximate {
                eprintln!("approximate  {}", line(v, "how"));
            }
            for v in &report.unmapped {
                eprintln!("not mapped   {}", line(v, "why"));
            }
            for e in &report.errors {
                eprintln!("nginx-migration: {e}");
            }
        }
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(Failed(None))
    }
}
