//! `import-ingress`: ingress-nginx canary Ingresses to a migration.yaml.
//!
//! The import replays what ingress-nginx (controller v1.15.1, the last release)
//! does with a set of Ingresses, step for step, and then writes what the module
//! can do the same way. Line numbers below are of that release's source.
//!
//! 1. Each Ingress's canary annotations are parsed as
//!    `internal/ingress/annotations/canary/main.go` parses them: `canary` with Go's
//!    `strconv.ParseBool` (`True`, `1`, `t` are true), the weights with
//!    `strconv.Atoi` (anything else is 0, or 100 for the total), strings trimmed
//!    line by line (`parser/main.go:231`). A non-canary Ingress with canary
//!    annotations is "configured but not enabled" (`main.go:182`) and routes as a
//!    main Ingress. A string that ingress-nginx's annotation validation refuses
//!    (`parser/validators.go:68`, `:55`) is used as `""` when validation is on and
//!    as written when it is off, so the import cannot know what it did: that
//!    Ingress is an error.
//! 2. Ingresses are ordered by `creationTimestamp`, then `namespace/name`
//!    descending (`store/store.go:1111-1113`).
//! 3. Upstreams are named `namespace-service-port` (`controller/util.go:50`); the
//!    first Ingress to name one makes it, and a canary's is "no server"
//!    (`controller.go:1096`, `:1127`). A path `""` is `/` and a pathType
//!    ImplementationSpecific (or none) is Prefix (`store.go:940-947`). Each host's
//!    server starts with a root location sending to the defaultBackend of the
//!    main Ingress that made it, else to the controller's 404 (`:1335-1381`);
//!    main Ingresses' paths become locations, the first (path, pathType) of a host
//!    winning (`controller.go:807-850`).
//! 4. A canary's path joins the *upstream* of the main location with the same
//!    host, path and pathType (`controller.go:1701`). Every location of that upstream, on any host, then
//!    goes through the canary; only the first canary of an upstream is consulted
//!    (`balancer.lua:205`). A canary path that joins nothing deletes the canary's
//!    backend altogether (`controller.go:1711`), so none of its paths get traffic.
//! 5. A request is decided by `route_to_alternative_balancer`
//!    (`rootfs/etc/nginx/lua/balancer.lua:194`): the header (its name with `-`
//!    read as `_`, so `X_Canary` is the request's `X-Canary`; a value, else a PCRE
//!    pattern searched in the value, where a pattern error sends the request to
//!    main, else `always`/`never`), then the cookie (`always`/`never`), then
//!    `math.random(total) <= weight` with a total below 100 counting as 100.
//!
//! The module routes a whole Host to a service, or a location that names the
//! service with `migration_service`; what cannot be written that way is
//! reported and left out, never guessed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;

use migration_engine::config::escape_controls;
use serde_json::json;
use serde_yaml::{Mapping, Value};

use crate::kyaml::{self, Node};
use crate::{Failed, Format};

const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// A place in an input file.
#[derive(Clone, Debug)]
struct At {
    file: Rc<str>,
    line: usize,
    column: usize,
}

impl At {
    fn of(file: &Rc<str>, node: &Node) -> At {
        At { file: file.clone(), line: node.line, column: node.column }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", escape_controls(&self.file), self.line, self.column)
    }
}

/// A path's type as ingress-nginx compares it: ImplementationSpecific is Prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PathType {
    Exact,
    Prefix,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Port {
    Number(u16),
    Name(String),
}

/// A Service and port an Ingress path sends to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ServiceRef {
    namespace: String,
    name: String,
    port: Port,
}

impl ServiceRef {
    /// ingress-nginx's upstream name (`controller/util.go:50-59`): one per
    /// Service and port, shared by every location that sends there.
    fn upstream(&self) -> String {
        match &self.port {
            Port::Number(n) => format!("{}-{}-{n}", self.namespace, self.name),
            Port::Name(p) => format!("{}-{}-{p}", self.namespace, self.name),
        }
    }

    fn host(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }
}

struct PathRule {
    /// `""` read as `/`, as ingress-nginx stores it.
    path: String,
    path_type: PathType,
    backend: Option<ServiceRef>,
}

struct HostRule {
    /// Lowercase; `""` is ingress-nginx's catch-all server `_`.
    host: String,
    http: bool,
    paths: Vec<PathRule>,
}

/// ingress-nginx's parsed canary (`canary/main.go`, `Config`).
#[derive(Clone, Debug, Default)]
struct Canary {
    weight: i64,
    weight_total: i64,
    header: String,
    header_value: String,
    header_pattern: String,
    cookie: String,
}

struct Ingress {
    namespace: String,
    name: String,
    /// Unix milliseconds.
    created: i64,
    /// Full annotation keys.
    annotations: BTreeMap<String, String>,
    rules: Vec<HostRule>,
    default_backend: Option<ServiceRef>,
    /// `Some` when ingress-nginx enables the canary.
    canary: Option<Canary>,
    /// What parsing the canary annotations learned: (annotation, text).
    parse_notes: Vec<(String, String)>,
}

impl Ingress {
    fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn annotation(&self, name: &str) -> Option<&str> {
        self.annotations.get(&format!("{PREFIX}{name}")).map(String::as_str)
    }
}

// --- Reading -------------------------------------------------------------------

/// Problems of one Ingress, each located.
type Problems = Vec<(At, String)>;

fn dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Kubernetes' DNS-1123 subdomain: names of objects, and hosts.
fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| dns_label(l, 63))
}

/// Kubernetes' DNS-1035 label: Service names.
fn dns_1035(s: &str) -> bool {
    dns_label(s, 63) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Kubernetes' IANA_SVC_NAME: named ports.
fn port_name(s: &str) -> bool {
    dns_label(s, 15) && s.bytes().any(|b| b.is_ascii_lowercase()) && !s.contains("--")
}

struct Reader<'a> {
    file: &'a Rc<str>,
    problems: Problems,
}

impl Reader<'_> {
    fn problem(&mut self, node: &Node, message: String) {
        self.problems.push((At::of(self.file, node), message));
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match node.as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                self.problem(node, format!("{what} must be a string"));
                None
            }
        }
    }

    fn service(&mut self, backend: &Node, namespace: &str) -> Option<ServiceRef> {
        // networking.k8s.io/v1: service.{name, port.{number|name}}; resource: is no Service.
        if let Some(service) = backend.get("service") {
            let name = self.string(service.get("name").unwrap_or(service), "backend.service.name")?;
            let Some(port) = service.get("port") else {
                self.problem(service, "backend.service.port is missing".into());
                return None;
            };
            let port = match (port.get("number"), port.get("name")) {
                (Some(n), None) => self.port_number(n)?,
                (None, Some(p)) => Port::Name(self.string(p, "backend.service.port.name")?),
                _ => {
                    self.problem(port, "backend.service.port needs exactly one of number and name".into());
                    return None;
                }
            };
            return self.service_ref(backend, namespace, name, port);
        }
        // extensions/v1beta1 and networking.k8s.io/v1beta1: serviceName, servicePort.
        let name = backend.get("serviceName")?;
        let name = self.string(name, "backend.serviceName")?;
        let Some(port) = backend.get("servicePort") else {
            self.problem(backend, "backend.servicePort is missing".into());
            return None;
        };
        let port = match port.as_str() {
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => self.port_number(port)?,
            Some(p) => Port::Name(p.to_owned()),
            None => {
                self.problem(port, "backend.servicePort must be a number or a name".into());
                return None;
            }
        };
        self.service_ref(backend, namespace, name, port)
    }

    fn port_number(&mut self, node: &Node) -> Option<Port> {
        match node.as_str().and_then(|s| s.parse::<u16>().ok()).filter(|&n| n > 0) {
            Some(n) => Some(Port::Number(n)),
            None => {
                self.problem(node, "a port number must be between 1 and 65535".into());
                None
            }
        }
    }

    fn service_ref(&mut self, at: &Node, namespace: &str, name: String, port: Port) -> Option<ServiceRef> {
        if !dns_1035(&name) {
            self.problem(at, format!("{:?} is not a Service name (a DNS-1035 label)", name));
            return None;
        }
        if let Port::Name(p) = &port {
            if !port_name(p) {
                self.problem(at, format!("{p:?} is not a port name (an IANA service name)"));
                return None;
            }
        }
        Some(ServiceRef { namespace: namespace.to_owned(), name, port })
    }

    fn ingress(&mut self, node: &Node) -> Option<Ingress> {
        if let Some((key, at)) = node.duplicate_key() {
            self.problem(
                at,
                format!("the key {key:?} is repeated in its mapping; YAML readers disagree on which one counts"),
            );
            return None;
        }
        let Some(meta) = node.get("metadata") else {
            self.problem(node, "an Ingress needs metadata.name".into());
            return None;
        };
        let name = match meta.get("name") {
            Some(n) => self.string(n, "metadata.name")?,
            None => {
                self.problem(meta, "an Ingress needs metadata.name".into());
                return None;
            }
        };
        if !dns_subdomain(&name) {
            self.problem(
                meta.get("name").unwrap_or(meta),
                format!("{name:?} is not an object name (a DNS-1123 subdomain)"),
            );
        }
        let namespace = match meta.get("namespace") {
            Some(n) => self.string(n, "metadata.namespace").unwrap_or_default(),
            None => "default".to_owned(),
        };
        if !dns_label(&namespace, 63) {
            self.problem(
                meta.get("namespace").unwrap_or(meta),
                format!("{namespace:?} is not a namespace (a DNS-1123 label)"),
            );
        }
        // store.go:1105-1113 compares times; a missing one is Go's zero time, the earliest.
        let created = match meta.get("creationTimestamp") {
            None => i64::MIN,
            Some(n) => match n.as_str().map(migration_engine::config::ramp::Timestamp::parse) {
                Some(Ok(t)) => t.0,
                _ => {
                    self.problem(n, "creationTimestamp must be an RFC 3339 time, as the API server writes it".into());
                    i64::MIN
                }
            },
        };
        let mut annotations = BTreeMap::new();
        if let Some(a) = meta.get("annotations") {
            if !matches!(a.value, kyaml::Value::Map(_)) {
                self.problem(a, "metadata.annotations must be a mapping of strings".into());
            }
            for (key, value) in a.pairs() {
                match value.as_str() {
                    Some(v) => {
                        annotations.insert(key.clone(), v.to_owned());
                    }
                    None if value.is_null() => {
                        annotations.insert(key.clone(), String::new());
                    }
                    None => self.problem(value, format!("annotation {key:?} must be a string")),
                }
            }
        }
        // annotations.go:186-188, store.go:949-952: an Ingress with a Critical-risk
        // annotation is dropped whole unless the controller's annotations-risk-level
        // is Critical (its default is High), so what it routed is not known here.
        for critical in CRITICAL {
            let key = format!("{PREFIX}{critical}");
            if annotations.contains_key(&key) {
                let at = meta.get("annotations").and_then(|a| a.get(&key)).unwrap_or(meta);
                self.problem(at, format!("{key} is a Critical-risk annotation: with annotations-risk-level High, the default, ingress-nginx drops this whole Ingress (annotations.go:186, store.go:949), with Critical it routes it; --partial leaves it out as the default does, or take the annotation out of the input to import it"));
            }
        }
        let spec = node.get("spec");
        let mut rules = Vec::new();
        for rule in spec.and_then(|s| s.get("rules")).map(Node::items).unwrap_or_default() {
            let host = match rule.get("host") {
                Some(h) => self.string(h, "host").unwrap_or_default().to_ascii_lowercase(),
                None => String::new(),
            };
            let valid = host.is_empty() || dns_subdomain(host.strip_prefix("*.").unwrap_or(&host));
            if !valid {
                self.problem(rule.get("host").unwrap_or(rule), format!("{host:?} is not a host name"));
            }
            let http = rule.get("http");
            let mut paths = Vec::new();
            for p in http.and_then(|h| h.get("paths")).map(Node::items).unwrap_or_default() {
                let path = match p.get("path") {
                    Some(n) => self.string(n, "path").unwrap_or_default(),
                    None => String::new(),
                };
                if !(path.is_empty() || path.starts_with('/'))
                    || path.chars().any(|c| c.is_control() || c.is_whitespace())
                {
                    self.problem(
                        p.get("path").unwrap_or(p),
                        format!(
                            "{path:?} is not a path: it must start with / and hold no spaces or control characters"
                        ),
                    );
                }
                // store.go:947, k8s/main.go:168-183: no pathType, and
                // ImplementationSpecific, are Prefix before anything is compared.
                let path_type = match p.get("pathType").and_then(Node::as_str) {
                    Some("Exact") => PathType::Exact,
                    Some("Prefix" | "ImplementationSpecific") | None => PathType::Prefix,
                    Some(other) => {
                        self.problem(
                            p.get("pathType").unwrap_or(p),
                            format!("pathType {other:?} is none of Exact, Prefix, ImplementationSpecific"),
                        );
                        PathType::Prefix
                    }
                };
                // store.go:940-944: an empty path is `/` before anything is compared.
                let path = if path.is_empty() { "/".to_owned() } else { path };
                let backend = p.get("backend").and_then(|b| self.service(b, &namespace));
                paths.push(PathRule { path, path_type, backend });
            }
            rules.push(HostRule { host, http: http.is_some(), paths });
        }
        let default_backend = spec
            .and_then(|s| s.get("defaultBackend").or_else(|| s.get("backend")))
            .and_then(|b| self.service(b, &namespace));
        let mut ingress = Ingress {
            namespace,
            name,
            created,
            annotations,
            rules,
            default_backend,
            canary: None,
            parse_notes: Vec::new(),
        };
        let anchor = |key: &str| meta.get("annotations").and_then(|a| a.get(key)).unwrap_or(meta);
        match parse_canary(&mut ingress) {
            Ok(()) => {}
            Err((name, message)) => self.problem(anchor(&format!("{PREFIX}{name}")), message),
        }
        Some(ingress)
    }
}

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
fn parse_canary(i: &mut Ingress) -> Result<(), (String, String)> {
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
    let canary = Canary {
        weight,
        weight_total,
        header: string("canary-by-header", false)?,
        header_value: string("canary-by-header-value", false)?,
        header_pattern: string("canary-by-header-pattern", true)?,
        cookie: string("canary-by-cookie", false)?,
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

/// A file's Ingresses, each read or refused on its own. A file that cannot be
/// read as YAML at all is an error of the whole file.
fn read(path: &std::path::Path, out: &mut Vec<Ingress>, problems: &mut Problems) -> Result<(), Failed> {
    let file: Rc<str> = escape_controls(&path.display().to_string()).into();
    let (bytes, _) =
        migration_engine::source::read_bounded(path, kyaml::MAX_SIZE).map_err(|e| Failed(Some(e.to_string())))?;
    let text = migration_engine::source_from_bytes(&file, bytes).map_err(|e| Failed(Some(e.to_string())))?;
    let docs =
        kyaml::documents(&text).map_err(|e| Failed(Some(format!("{file}:{}:{}: {}", e.line, e.column, e.message))))?;
    let mut reader = Reader { file: &file, problems: Vec::new() };
    for doc in &docs {
        // A repeated key above the Ingresses (`items:` twice) leaves which ones
        // exist to the reader; the whole document is refused.
        let outer = match &doc.value {
            kyaml::Value::Map(pairs) => {
                pairs.iter().enumerate().find(|(n, (k, _))| pairs[..*n].iter().any(|(e, _)| e == k))
            }
            _ => None,
        };
        if let Some((_, (key, at))) = outer {
            reader.problem(
                at,
                format!("the key {key:?} is repeated in its mapping; YAML readers disagree on which one counts"),
            );
            continue;
        }
        let kind = doc.get("kind").and_then(Node::as_str).unwrap_or("");
        let items: Vec<&Node> = match kind {
            "Ingress" => vec![doc],
            "List" | "IngressList" => doc
                .get("items")
                .map(Node::items)
                .unwrap_or_default()
                .iter()
                .filter(|item| item.get("kind").and_then(Node::as_str).is_none_or(|k| k == "Ingress"))
                .collect(),
            _ => Vec::new(),
        };
        for item in items {
            let before = reader.problems.len();
            let ingress = reader.ingress(item);
            if reader.problems.len() == before {
                out.extend(ingress);
            }
        }
    }
    problems.append(&mut reader.problems);
    Ok(())
}

// --- What ingress-nginx builds ---------------------------------------------------

struct Upstream {
    service: ServiceRef,
    /// A canary's upstream: no location of its own (`controller.go:1127`).
    no_server: bool,
    /// The canary Ingress whose traffic shaping policy this upstream carries.
    policy_of: Option<usize>,
    alternatives: Vec<String>,
}

struct Location {
    path: String,
    path_type: PathType,
    /// `None`: the controller's default backend (404).
    upstream: Option<String>,
    ingress: usize,
    /// The root location a server starts with, which a main's `/` Prefix path
    /// takes over (`IsDefBackend`, controller.go:1371-1378, :836-848).
    default: bool,
}

/// Why a canary Ingress's path got no traffic.
enum Dropped {
    NoServer { host: String, path: String },
    SameAsMain { host: String, path: String },
    NoLocation { host: String, path: String, path_type: PathType },
    CatchAll,
}

struct Built {
    upstreams: HashMap<String, Upstream>,
    /// Host ("" for `_`) → locations, in creation order.
    servers: BTreeMap<String, Vec<Location>>,
    /// Canary Ingress → the reasons paths of it joined nothing.
    dropped: BTreeMap<usize, Vec<Dropped>>,
    /// Canary Ingresses whose backend a path that joined nothing deleted.
    deleted: BTreeSet<usize>,
    /// (host, path) → its locations' indices (a path has one per pathType).
    by_path: HashMap<(String, String), Vec<usize>>,
    /// (host, upstream) → the first location that sends there.
    first_to: HashMap<(String, String), usize>,
    /// Paths of main Ingresses whose Service's upstream a canary made first:
    /// (main, host, path, canary). ingress-nginx gives them no location.
    shadowed: Vec<(usize, String, String, usize)>,
}

/// ingress-nginx's order (`store/store.go:1104-1114`).
fn ordered(all: &[Ingress]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&all[a], &all[b]);
        a.created.cmp(&b.created).then_with(|| b.id().cmp(&a.id()))
    });
    order
}

fn build(all: &[Ingress], order: &[usize]) -> Built {
    let mut upstreams: HashMap<String, Upstream> = HashMap::new();
    // controller.go createUpstreams: the first Ingress to name a Service and port makes its upstream.
    for &k in order {
        let i = &all[k];
        let services = i
            .default_backend
            .iter()
            .chain(i.rules.iter().filter(|r| r.http).flat_map(|r| r.paths.iter().filter_map(|p| p.backend.as_ref())));
        for s in services {
            upstreams.entry(s.upstream()).or_insert_with(|| Upstream {
                service: s.clone(),
                no_server: i.canary.is_some(),
                policy_of: i.canary.is_some().then_some(k),
                alternatives: Vec::new(),
            });
        }
    }
    // createServers (controller.go:1325-1381): the `_` server, and a server per host
    // of a main Ingress, made by the first one to name the host. Its root location
    // sends to that Ingress's defaultBackend, else to the controller's default
    // backend; an Ingress with a defaultBackend and no rules takes `_`'s root.
    let mut servers: BTreeMap<String, Vec<Location>> = BTreeMap::new();
    let root = |upstream: Option<String>, ingress: usize| Location {
        path: "/".into(),
        path_type: PathType::Prefix,
        upstream,
        ingress,
        default: true,
    };
    servers.insert(String::new(), vec![root(None, usize::MAX)]);
    for &k in order.iter().filter(|&&k| all[k].canary.is_none()) {
        let i = &all[k];
        let own_default = i.default_backend.as_ref().map(ServiceRef::upstream);
        if let Some(name) = &own_default {
            let catch_all = &mut servers.get_mut("").expect("made above")[0];
            if i.rules.is_empty() && catch_all.default && catch_all.upstream.is_none() {
                *catch_all = Location { default: false, ..root(Some(name.clone()), k) };
            }
        }
        for r in &i.rules {
            servers.entry(r.host.clone()).or_insert_with(|| vec![root(own_default.clone(), k)]);
        }
    }
    // getBackendServers (controller.go:745-870): every Ingress's paths become
    // locations. The first location of a path decides: same type, it stays (or a
    // default root is taken over); another type, a second one is added.
    let mut first_of_path: HashMap<(String, String), usize> = HashMap::new();
    for (host, locations) in &servers {
        first_of_path.insert((host.clone(), "/".to_owned()), locations.len() - 1);
    }
    let mut shadowed = Vec::new();
    for &k in order {
        for r in all[k].rules.iter().filter(|r| r.http) {
            let host = if servers.contains_key(&r.host) { r.host.clone() } else { String::new() };
            let locations = servers.get_mut(&host).expect("made above");
            for p in &r.paths {
                let Some(service) = &p.backend else { continue };
                let name = service.upstream();
                if upstreams[&name].no_server {
                    if all[k].canary.is_none() {
                        let canary = upstreams[&name].policy_of.unwrap_or(k);
                        shadowed.push((k, r.host.clone(), p.path.clone(), canary));
                    }
                    continue;
                }
                match first_of_path.get(&(host.clone(), p.path.clone())) {
                    Some(&at) if locations[at].path_type == p.path_type => {
                        let loc = &mut locations[at];
                        if loc.default {
                            *loc = Location {
                                path: p.path.clone(),
                                path_type: p.path_type,
                                upstream: Some(name),
                                ingress: k,
                                default: false,
                            };
                        }
                    }
                    first => {
                        if first.is_none() {
                            first_of_path.insert((host.clone(), p.path.clone()), locations.len());
                        }
                        locations.push(Location {
                            path: p.path.clone(),
                            path_type: p.path_type,
                            upstream: Some(name),
                            ingress: k,
                            default: false,
                        });
                    }
                }
            }
        }
    }
    let mut by_path: HashMap<(String, String), Vec<usize>> = HashMap::new();
    let mut first_to: HashMap<(String, String), usize> = HashMap::new();
    for (host, locations) in &servers {
        for (at, l) in locations.iter().enumerate() {
            by_path.entry((host.clone(), l.path.clone())).or_default().push(at);
            if let Some(u) = &l.upstream {
                first_to.entry((host.clone(), u.clone())).or_insert(at);
            }
        }
    }
    let mut built =
        Built { upstreams, servers, by_path, first_to, dropped: BTreeMap::new(), deleted: BTreeSet::new(), shadowed };
    // controller.go:923: canaries merge only when some main Ingress exists.
    if order.iter().any(|&k| all[k].canary.is_none()) {
        for &k in order.iter().filter(|&&k| all[k].canary.is_some()) {
            merge_alternatives(all, k, &mut built);
        }
    }
    built
}

/// `mergeAlternativeBackends` (controller.go:1610-1715) for canary Ingress `k`.
fn merge_alternatives(all: &[Ingress], k: usize, b: &mut Built) {
    let i = &all[k];
    // (host, (path, pathType) or None for defaultBackend, the canary's upstream)
    type Try = (String, Option<(String, PathType)>, String);
    let mut tries: Vec<Try> = Vec::new();
    if let Some(s) = &i.default_backend {
        tries.push((String::new(), None, s.upstream()));
    }
    for r in &i.rules {
        for p in r.paths.iter().filter(|_| r.http) {
            if let Some(s) = &p.backend {
                tries.push((r.host.clone(), Some((p.path.clone(), p.path_type)), s.upstream()));
            }
        }
    }
    for (host, path, alt) in tries {
        if !b.upstreams.contains_key(&alt) {
            continue; // "alternative backend has already been removed"
        }
        let Some(locations) = b.servers.get(&host) else {
            let path = path.map(|p| p.0).unwrap_or_default();
            b.dropped.entry(k).or_default().push(Dropped::NoServer { host, path });
            continue;
        };
        // controller.go:1686-1708, in location order: a location whose upstream is
        // gone is passed over, the first that sends to the canary's own upstream
        // ends the search, and each one of the path and pathType before it joins.
        let same_at = b.first_to.get(&(host.clone(), alt.clone())).copied();
        let candidates: Vec<usize> = match &path {
            None => (0..locations.len()).collect(),
            Some((p, t)) => b
                .by_path
                .get(&(host.clone(), p.clone()))
                .map(|v| v.iter().copied().filter(|&at| locations[at].path_type == *t).collect())
                .unwrap_or_default(),
        };
        let same = same_at.is_some();
        let mut joins = Vec::new();
        for at in candidates.into_iter().filter(|&at| same_at.is_none_or(|s| at < s)) {
            let Some(primary) = locations[at].upstream.as_ref().filter(|u| b.upstreams.contains_key(*u)) else {
                continue;
            };
            if !b.upstreams[primary].no_server {
                joins.push(primary.clone());
            }
        }
        let merged = !joins.is_empty();
        for primary in joins {
            let alternatives = &mut b.upstreams.get_mut(&primary).expect("a location's upstream").alternatives;
            if !alternatives.contains(&alt) {
                alternatives.push(alt.clone());
            }
        }
        let (p, t) = path.clone().unwrap_or((String::new(), PathType::Prefix));
        if same {
            b.dropped.entry(k).or_default().push(Dropped::SameAsMain { host, path: p });
        } else if !merged {
            b.upstreams.remove(&alt);
            b.deleted.insert(k);
            b.dropped.entry(k).or_default().push(match path {
                None => Dropped::CatchAll,
                Some(_) => Dropped::NoLocation { host, path: p, path_type: t },
            });
        }
    }
}

// --- The report ------------------------------------------------------------------

/// What each annotation became. Every text is escaped: Ingresses are written by
/// tenants, and a terminal must not run what they wrote.
#[derive(Default)]
struct Report {
    mapped: Vec<serde_json::Value>,
    approximate: Vec<serde_json::Value>,
    unmapped: Vec<serde_json::Value>,
    errors: Vec<String>,
}

impl Report {
    fn entry(ingress: &Ingress, annotation: &str, key: &str, text: &str) -> serde_json::Value {
        json!({"ingress": escape_controls(&ingress.id()), "annotation": escape_controls(annotation), key: escape_controls(text)})
    }
    fn mapped(&mut self, ingress: &Ingress, annotation: &str, how: impl AsRef<str>) {
        self.mapped.push(Report::entry(ingress, annotation, "how", how.as_ref()));
    }
    fn approximate(&mut self, ingress: &Ingress, annotation: &str, how: impl AsRef<str>) {
        self.approximate.push(Report::entry(ingress, annotation, "how", how.as_ref()));
    }
    fn unmapped(&mut self, ingress: &Ingress, annotation: &str, why: impl AsRef<str>) {
        self.unmapped.push(Report::entry(ingress, annotation, "why", why.as_ref()));
    }
}

// --- What the module gets ----------------------------------------------------------

/// A service of the output.
struct Service {
    name: String,
    host: String,
    by_location: bool,
    old: String,
    new: String,
    rules: Vec<Value>,
    percentage_bp: u32,
}

fn rule(kind: &str, name: &str, matcher: (&str, Value), target: &str) -> Value {
    let mut m = Mapping::new();
    m.insert(kind.into(), name.into());
    m.insert(matcher.0.into(), matcher.1);
    m.insert("target".into(), target.into());
    Value::Mapping(m)
}

const REPEATED: &str = "a request that repeats the header differs: nginx 1.23+ joins the values (\"always, always\"), which ingress-nginx compares whole and so falls through, while the module reads the first value";

/// The header and cookie rules and the weight (basis points) of a canary.
fn canary_rules(c: &Ingress, canary: &Canary, report: &mut Report) -> (Vec<Value>, u32) {
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
/// to PCRE) and `\b{...}` word-boundary forms.
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

/// The annotations ingress-nginx rates Critical (`parser.AnnotationRiskCritical`).
const CRITICAL: &[&str] =
    &["auth-snippet", "modsecurity-snippet", "server-snippet", "configuration-snippet", "stream-snippet"];

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
/// The annotations a canary Ingress keeps (annotations.md, "Canary").
const KEPT_ON_CANARY: &[&str] = &["load-balance", "upstream-hash-by"];

/// Annotations other than the canary's own, reported once per Ingress.
fn other_annotations(i: &Ingress, report: &mut Report) {
    for (key, value) in &i.annotations {
        let Some(name) = key.strip_prefix(PREFIX) else { continue };
        if CANARY.contains(&name) || name == "backend-protocol" {
            continue;
        }
        if AFFINITY.contains(&name) {
            let cookie = i.annotation("session-cookie-name").unwrap_or("INGRESSCOOKIE");
            report.unmapped(
                i,
                name,
                format!("session affinity ({value:?}): in ingress-nginx the affinity cookie {cookie} keeps a client on the side, main or canary, that its first request was sent to (balancer.lua:195-221; affinity-canary-behavior: sticky, the default), while strategy: weight draws every request anew. For clients that stay on one side, use strategy: user with user_key: cookie:{cookie} (a cookie your clients already carry) or header:X-User-ID"),
            );
        } else if i.canary.is_some() && !KEPT_ON_CANARY.contains(&name) {
            report.unmapped(i, name, format!("ingress-nginx ignores it on a canary Ingress ({value:?}): the main Ingress's annotations apply to both sides"));
        } else {
            report.unmapped(i, name, format!("not a canary annotation ({value:?}): keep its effect in nginx.conf; this tool maps only the canary"));
        }
    }
}

/// The scheme ingress-nginx proxies a location with (`backend-protocol`).
fn scheme(main: &Ingress) -> Result<&'static str, String> {
    match main.annotation("backend-protocol").map(|p| p.trim().to_ascii_uppercase()) {
        Some(p) if p == "HTTPS" => Ok("https"),
        Some(p) if ["GRPC", "GRPCS", "FCGI", "AUTO_HTTP"].contains(&p.as_str()) => Err(p),
        _ => Ok("http"),
    }
}

fn service_name(parts: &[&str]) -> String {
    parts
        .join("-")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .collect()
}

fn path_type_name(t: PathType) -> &'static str {
    match t {
        PathType::Exact => "Exact",
        PathType::Prefix => "Prefix",
    }
}

/// What the module can do of what ingress-nginx built.
fn plan(all: &[Ingress], order: &[usize], built: &Built, report: &mut Report) -> Vec<Service> {
    for (&k, dropped) in &built.dropped {
        let c = &all[k];
        for d in dropped {
            let why = match d {
                Dropped::NoServer { host, path } => format!(
                    "no main Ingress serves host {:?} (path {path:?}): ingress-nginx cannot merge the canary there (controller.go:1680) and sends it nothing",
                    if host.is_empty() { "_" } else { host }
                ),
                Dropped::SameAsMain { host, path } => format!(
                    "host {host:?} path {path:?}: the canary's Service is the main location's own (controller.go:1694): nothing to split"
                ),
                Dropped::NoLocation { host, path, path_type } => format!(
                    "host {host:?}: no main Ingress has a location with path {path:?} and pathType {} (paths and pathTypes must be equal, controller.go:1701), so ingress-nginx deletes this canary's backend (controller.go:1711) and none of its paths get traffic",
                    path_type_name(*path_type)
                ),
                Dropped::CatchAll => "its defaultBackend merges with no location of the catch-all server, so ingress-nginx deletes this canary's backend (controller.go:1648)".to_owned(),
            };
            report.unmapped(c, "canary", why);
        }
    }
    for (main, host, path, canary) in &built.shadowed {
        report.unmapped(
            &all[*main],
            "spec.rules",
            format!(
                "host {host:?} path {path:?}: its Service's upstream was made first by the canary {} (Ingresses in order of creationTimestamp, then namespace/name descending), so ingress-nginx serves no location there (controller.go:807) and answers with its default backend (404); the module cannot answer 404 for a service, so requests there route as nginx.conf says",
                all[*canary].id()
            ),
        );
    }
    let mut services = Vec::new();
    let mut used_names = BTreeSet::new();
    // (Ingress, what) already told in the report.
    let mut told: BTreeSet<(usize, &str)> = BTreeSet::new();
    // Upstream → host → its locations there, in order: found once, not per upstream.
    let mut located: HashMap<&str, BTreeMap<&str, Vec<&Location>>> = HashMap::new();
    for (host, locations) in &built.servers {
        for l in locations {
            let Some(u) = &l.upstream else { continue };
            if built.upstreams.contains_key(u) {
                located.entry(u).or_default().entry(host).or_default().push(l);
            } else if l.ingress != usize::MAX {
                report.unmapped(
                    &all[l.ingress],
                    "spec.rules",
                    format!("host {:?} path {:?}: its upstream {u} was deleted by a canary whose defaultBackend names the same Service and joins nothing (controller.go:1648), so ingress-nginx answers 503 there; requests there route as nginx.conf says", if host.is_empty() { "_" } else { host }, l.path),
                );
            }
        }
    }
    let mut names: Vec<&String> = built.upstreams.keys().collect();
    names.sort();
    for primary in names {
        let u = &built.upstreams[primary];
        if u.no_server || u.alternatives.is_empty() {
            continue;
        }
        for later in &u.alternatives[1..] {
            if let Some(k) = built.upstreams.get(later).and_then(|a| a.policy_of) {
                let first = built.upstreams.get(&u.alternatives[0]).and_then(|a| a.policy_of).map(|f| all[f].id());
                report.unmapped(
                    &all[k],
                    "canary",
                    format!(
                        "the upstream {primary} already has the canary {} first (Ingresses in order of creationTimestamp, then namespace/name descending, store.go:1111); ingress-nginx consults only the first (balancer.lua:205)",
                        first.unwrap_or_else(|| u.alternatives[0].clone())
                    ),
                );
            }
        }
        let Some(alt) = built.upstreams.get(&u.alternatives[0]) else { continue };
        let Some(k) = alt.policy_of else { continue };
        let c = &all[k];
        let canary = c.canary.as_ref().expect("a policy is a canary's");
        // balancer.lua:195-197: with session affinity on the main Ingress, a request
        // that holds a valid affinity cookie stays where it is before any rule is asked.
        let hosts = located.get(primary.as_str()).cloned().unwrap_or_default();
        // controller.go:875-897: the upstream's affinity comes from any main
        // Ingress with a location on it; only `cookie` makes a balancer sticky.
        let affinity = hosts
            .values()
            .flatten()
            .map(|l| &all[l.ingress])
            .find(|main| main.annotation("affinity").is_some_and(|a| a.trim() == "cookie"));
        let (rules, bp) = {
            let mut scratch = Report::default();
            let out = canary_rules(c, canary, &mut scratch);
            if told.insert((k, "annotations")) {
                if let Some(main) = affinity {
                    let cookie = main.annotation("session-cookie-name").unwrap_or("INGRESSCOOKIE");
                    let except = format!("; a request that holds a valid {cookie} cookie of {} differs: ingress-nginx keeps it on the side the cookie names before asking any rule (balancer.lua:195-221)", main.id());
                    for v in &mut scratch.approximate {
                        v["how"] = escape_controls(&format!("{}{except}", v["how"].as_str().unwrap_or(""))).into();
                    }
                    for mut v in std::mem::take(&mut scratch.mapped) {
                        let rule = v["annotation"]
                            .as_str()
                            .is_some_and(|a| a.starts_with("canary-by") || a.starts_with("canary-weight"));
                        if rule {
                            v["how"] = escape_controls(&format!("{}{except}", v["how"].as_str().unwrap_or(""))).into();
                            scratch.approximate.push(v);
                        } else {
                            scratch.mapped.push(v);
                        }
                    }
                }
                report.mapped.append(&mut scratch.mapped);
                report.approximate.append(&mut scratch.approximate);
                report.unmapped.append(&mut scratch.unmapped);
                other_annotations(c, report);
            }
            out
        };
        // Every location of this upstream, on any host, goes through the canary.
        for (host, mine) in &hosts {
            let host = &host.to_string();
            let Some(first) = mine.first() else { continue };
            let main = &all[first.ingress];
            for l in mine {
                if told.insert((l.ingress, "annotations")) {
                    other_annotations(&all[l.ingress], report);
                }
            }
            if host.is_empty() {
                report.unmapped(c, "canary", format!("rules without a host (and defaultBackend) of {} are served by ingress-nginx's catch-all server _, for every Host no Ingress names; the module routes by Host, so the canary is not mapped there", main.id()));
                continue;
            }
            if host.starts_with("*.") {
                report.unmapped(c, "canary", format!("host {host:?} is a wildcard: ingress-nginx sends each request's own Host upstream, while old_host and new_host are one name; write this service by hand with hosts: [{host:?}] and proxy_set_header Host $host"));
                continue;
            }
            let named: Vec<String> = [(&u.service, "old", main), (&alt.service, "new", c)]
                .into_iter()
                .filter_map(|(s, side, i)| match &s.port {
                    Port::Name(p) => Some(format!(
                        "{side}: Service {} of {} names its port {p:?}, whose number only the Service knows",
                        s.name,
                        i.id()
                    )),
                    Port::Number(_) => None,
                })
                .collect();
            if !named.is_empty() {
                report.unmapped(c, "canary", format!("host {host}: {}; nginx needs host:port, so no service is written: import again after writing the port's number in the Ingress, or write the service by hand", named.join("; ")));
                continue;
            }
            let scheme = match scheme(main) {
                Ok(s) => s,
                Err(p) => {
                    report.unmapped(
                        main,
                        "backend-protocol",
                        format!(
                            "{p}: the module proxies HTTP and HTTPS only, so no service is written for host {host}"
                        ),
                    );
                    continue;
                }
            };
            let address = |s: &ServiceRef| {
                let Port::Number(n) = s.port else { unreachable!("named ports are left out above") };
                if scheme == "https" {
                    format!("https://{}:{n}", s.host())
                } else {
                    format!("{}:{n}", s.host())
                }
            };
            if scheme == "https" && told.insert((first.ingress, "backend-protocol")) {
                report.mapped(main, "backend-protocol", "HTTPS: old_backend and new_backend are https:// (ingress-nginx proxies the canary with the main Ingress's protocol); proxy_ssl_verify and the other proxy-ssl-* settings stay in nginx.conf (ingress-nginx does not verify by default)");
            }
            // Whole: every location of the host, its root included, sends here. A
            // root that answers 404 or sends elsewhere makes it by location.
            let whole = built.servers[host.as_str()].len() == mine.len();
            let mut name = service_name(&[&main.namespace, &main.name]);
            if used_names.contains(&name) {
                name = service_name(&[&main.namespace, &main.name, host]);
            }
            let base = name.clone();
            let mut n = 2;
            while used_names.contains(&name) {
                name = format!("{base}-{n}");
                n += 1;
            }
            used_names.insert(name.clone());
            if !whole {
                let blocks: Vec<String> = mine
                    .iter()
                    .map(|l| {
                        let exact = if l.path_type == PathType::Exact { "= " } else { "" };
                        format!("location {exact}{} {{ migration on; migration_service {name}; proxy_set_header Host $migration_host; proxy_pass $migration_scheme://$migration_backend; }}", l.path)
                    })
                    .collect();
                let paths: Vec<&str> = mine.iter().map(|l| l.path.as_str()).collect();
                report.approximate(
                    c,
                    "canary",
                    format!(
                        "host {host}: the canary rides on the upstream {primary}, which serves paths {} of this host (ingress-nginx canaries every location of that upstream, controller.go:1601), while other paths of it send elsewhere; the module routes whole Hosts, so this service is routed only by locations that name it: {}",
                        paths.join(", "),
                        blocks.join(" ")
                    ),
                );
            }
            report.mapped(
                c,
                "canary",
                format!(
                    "service {name}: host {host}, old {} ({}), new {} ({})",
                    address(&u.service),
                    main.id(),
                    address(&alt.service),
                    c.id()
                ),
            );
            services.push(Service {
                name,
                host: host.clone(),
                by_location: !whole,
                old: address(&u.service),
                new: address(&alt.service),
                rules: rules.clone(),
                percentage_bp: bp,
            });
        }
    }
    // Canary Ingresses that reached no upstream still have their annotations told.
    for &k in order {
        let i = &all[k];
        if let Some(canary) = i.canary.as_ref().filter(|_| !told.contains(&(k, "annotations"))) {
            let mut scratch = Report::default();
            canary_rules(i, canary, &mut scratch);
            report.unmapped.extend(scratch.mapped.into_iter().chain(scratch.approximate).chain(scratch.unmapped).map(|mut v| {
                let how = v["how"].take();
                let why = if how.is_null() { v["why"].take() } else { how };
                json!({"ingress": v["ingress"], "annotation": v["annotation"], "why": format!("{} (this canary gets no traffic, see its canary line)", why.as_str().unwrap_or(""))})
            }));
            other_annotations(i, report);
        } else if i.canary.is_none() && !i.parse_notes.is_empty() {
            for (annotation, note) in &i.parse_notes {
                report.unmapped(i, annotation, note);
            }
        }
    }
    services
}

/// The migration.yaml, written by a serializer: no text of an Ingress can end a
/// line or open a key.
fn render(services: &[Service], files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|f| escape_controls(&f.display().to_string())).collect();
    let mut list = Vec::new();
    for s in services {
        let mut m = Mapping::new();
        m.insert("name".into(), s.name.clone().into());
        let hosts = if s.by_location { format!("{}.by-location.invalid", s.name) } else { s.host.clone() };
        m.insert("hosts".into(), Value::Sequence(vec![hosts.into()]));
        m.insert("old_host".into(), s.host.clone().into());
        m.insert("old_backend".into(), s.old.clone().into());
        m.insert("new_host".into(), s.host.clone().into());
        m.insert("new_backend".into(), s.new.clone().into());
        let mut migration = Mapping::new();
        migration.insert("strategy".into(), "weight".into());
        let percentage: Value =
            serde_yaml::from_str(&migration_engine::trace::percentage_text(s.percentage_bp)).expect("a number");
        migration.insert("percentage".into(), percentage);
        m.insert("migration".into(), Value::Mapping(migration));
        if !s.rules.is_empty() {
            let mut canary = Mapping::new();
            canary.insert("header_rules".into(), Value::Sequence(s.rules.clone()));
            m.insert("canary".into(), Value::Mapping(canary));
        }
        list.push(Value::Mapping(m));
    }
    let mut doc = Mapping::new();
    doc.insert("services".into(), Value::Sequence(list));
    format!(
        "# Generated by nginx-migration import-ingress from {}.\n\
         # old = the main Ingress's backend, new = the canary's; ingress-nginx's order: header, cookie, weight.\n\
         # A service whose hosts end in .by-location.invalid is routed only by locations that name it\n\
         # (migration_service NAME): see the report.\n{}",
        names.join(", "),
        serde_yaml::to_string(&doc).expect("a YAML document")
    )
}

pub fn run(files: &[PathBuf], partial: bool, format: Format) -> Result<(), Failed> {
    let mut all = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        read(f, &mut all, &mut problems)?;
    }
    // An object is one namespace/name: a second one is an error of its own.
    let mut seen = BTreeSet::new();
    let mut duplicate = Vec::new();
    for (k, i) in all.iter().enumerate() {
        if !seen.insert(i.id()) {
            duplicate.push(k);
        }
    }
    for k in duplicate.into_iter().rev() {
        let i = all.remove(k);
        problems.push((
            At { file: "".into(), line: 0, column: 0 },
            format!("the Ingress {} is given twice; an object has one namespace/name", escape_controls(&i.id())),
        ));
    }
    let order = ordered(&all);
    let built = build(&all, &order);
    let mut report = Report::default();
    let services = plan(&all, &order, &built, &mut report);
    report.errors = problems
        .iter()
        .map(|(at, m)| if at.line == 0 { escape_controls(m) } else { format!("{at}: {}", escape_controls(m)) })
        .collect();
    let yaml = render(&services, files);
    // Whatever the import believes, what it prints must load: check it as nginx would.
    if let Err(e) = migration_engine::load_str_checked("import-ingress output", &yaml) {
        return Err(Failed(Some(format!("internal error: the generated YAML does not load ({e}); nothing printed"))));
    }
    // What nginx and `check` read is bounded; so is what the import writes.
    if yaml.len() as u64 > migration_engine::source::DEFAULT_MAX_SIZE {
        return Err(Failed(Some(format!(
            "the generated YAML would be {} bytes, more than the {} bytes a configuration may have (max_size=); nothing printed: look for Ingresses with huge annotation values",
            yaml.len(),
            migration_engine::source::DEFAULT_MAX_SIZE
        ))));
    }
    if report.errors.is_empty() || partial {
        print!("{yaml}");
    }
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
            if !report.errors.is_empty() {
                let what = if partial {
                    "the YAML above leaves these Ingresses out"
                } else {
                    "nothing printed; --partial prints the rest"
                };
                eprintln!(
                    "nginx-migration: {} bad Ingress{}: {what}",
                    report.errors.len(),
                    if report.errors.len() == 1 { "" } else { "es" }
                );
            }
        }
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(Failed(None))
    }
}

#[cfg(test)]
mod tests {
    use super::rust_reads_like_pcre;

    #[test]
    fn patterns_the_two_dialects_read_differently_are_refused() {
        for same in ["^(on|yes)$", "[a-z]+", "[]a]", "[^]a-]", "[[:alpha:]]+", "a--b", r"\[x--y\]", "[a-]"] {
            assert!(rust_reads_like_pcre(same).is_ok(), "{same}");
        }
        for differs in ["^[a&&b]$", "^[a-c--b]$", "[a~~b]", "[[a]b]", r"\b{start}x"] {
            assert!(rust_reads_like_pcre(differs).is_err(), "{differs}");
        }
    }
}
