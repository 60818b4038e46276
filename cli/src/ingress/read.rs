//! Reading Ingresses from Kubernetes YAML, each one read or refused on its own
//! with located problems.

use std::collections::BTreeMap;
use std::rc::Rc;

use migration_engine::config::escape_controls;

use super::canary::parse_canary;
use super::model::{At, HostRule, Ingress, PathRule, PathType, Port, ServiceRef};
use super::PREFIX;
use crate::kyaml::{self, Node};
use crate::Failed;

/// Problems of one Ingress, each located.
pub(super) type Problems = Vec<(At, String)>;

pub(super) fn dns_label(s: &str, max: usize) -> bool {
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
    /// `--namespace`: the namespace of an Ingress that names none.
    namespace: Option<&'a str>,
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
        // The API server gives an object without one the namespace of the
        // request (kubectl's -n, else its context's): not known here, and the
        // backends' addresses depend on it.
        let namespace = match (meta.get("namespace"), self.namespace) {
            (Some(n), _) => self.string(n, "metadata.namespace").unwrap_or_default(),
            (None, Some(namespace)) => namespace.to_owned(),
            (None, None) => {
                self.problem(meta, "the Ingress names no metadata.namespace, so where its Services are is not known: give the one kubectl apply would use with --namespace NAMESPACE".into());
                "default".to_owned()
            }
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
        // validators.go:253-266 compares the key with the prefix trimmed, and a
        // key without the prefix is compared as it is: a bare
        // `server-snippet` drops the Ingress too.
        for key in CRITICAL.iter().flat_map(|critical| [format!("{PREFIX}{critical}"), (*critical).to_owned()]) {
            if annotations.contains_key(&key) {
                let at = meta.get("annotations").and_then(|a| a.get(&key)).unwrap_or(meta);
                self.problem(at, format!("{key} is a Critical-risk annotation: with annotations-risk-level High, the default, ingress-nginx drops this whole Ingress (annotations.go:186, store.go:949), with Critical it routes it; --partial leaves it out as the default does, or take the annotation out of the input to import it"));
            }
        }
        let spec = node.get("spec");
        // store.go:445-449: with --deep-inspect, the default, an Ingress whose
        // host, path or TLS entry matches one of the inspector's patterns is
        // dropped whole.
        let tls = spec.and_then(|s| s.get("tls")).map(Node::items).unwrap_or_default();
        let inspected = spec
            .and_then(|s| s.get("rules"))
            .map(Node::items)
            .unwrap_or_default()
            .iter()
            .flat_map(|rule| {
                let paths = rule.get("http").and_then(|h| h.get("paths")).map(Node::items).unwrap_or_default();
                rule.get("host").into_iter().chain(paths.iter().filter_map(|p| p.get("path")))
            })
            .chain(tls.iter().flat_map(|t| {
                let hosts = t.get("hosts").map(Node::items).unwrap_or_default();
                t.get("secretName").into_iter().chain(hosts)
            }));
        for value in inspected {
            if let Some(pattern) = value.as_str().and_then(deep_inspection_refuses) {
                self.problem(value, format!("{:?} matches ingress-nginx's deep inspection ({pattern}, inspector/rules.go:25-29): with --deep-inspect, the default, ingress-nginx drops this whole Ingress (store.go:445-449); --partial leaves it out as the default does", value.as_str().unwrap_or_default()));
            }
        }
        let mut rules = Vec::new();
        // Rules without `http`: a canary's stop ingress-nginx (below).
        let mut without_http = Vec::new();
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
            if http.is_none() {
                without_http.push(rule);
            }
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
        // mergeAlternativeBackends reads every rule's http.paths unchecked
        // (controller.go:1659): a canary rule without `http` stops the
        // controller's sync with a nil dereference, whatever else it holds.
        if ingress.canary.is_some() {
            for rule in without_http {
                self.problem(rule, "a canary Ingress's rule without http makes ingress-nginx's controller fail (a nil dereference merging canaries, controller.go:1659) while a main Ingress exists; give the rule its paths, or take it out".into());
            }
        }
        Some(ingress)
    }
}

/// A file's Ingresses, each read or refused on its own. A file that cannot be
/// read as YAML at all is an error of the whole file.
pub(super) fn read(
    path: &std::path::Path,
    namespace: Option<&str>,
    out: &mut Vec<Ingress>,
    problems: &mut Problems,
) -> Result<(), Failed> {
    let file: Rc<str> = escape_controls(&path.display().to_string()).into();
    let (bytes, _) =
        migration_engine::source::read_bounded(path, kyaml::MAX_SIZE).map_err(|e| Failed(Some(e.to_string())))?;
    let text = migration_engine::source_from_bytes(&file, bytes).map_err(|e| Failed(Some(e.to_string())))?;
    let docs =
        kyaml::documents(&text).map_err(|e| Failed(Some(format!("{file}:{}:{}: {}", e.line, e.column, e.message))))?;
    let mut reader = Reader { file: &file, namespace, problems: Vec::new() };
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

/// The pattern of ingress-nginx's inspector (inspector/rules.go:25-29) that
/// `value` matches, if any. Its regular expressions, unanchored, come down to
/// these searches.
fn deep_inspection_refuses(value: &str) -> Option<&'static str> {
    // `(?s)\s*alias\s*.*;` and `root`: the word, then a `;` anywhere after it.
    let then_semicolon = |word: &str| value.find(word).is_some_and(|at| value[at + word.len()..].contains(';'));
    if then_semicolon("alias") {
        return Some("alias ... ;");
    }
    if then_semicolon("root") {
        return Some("root ... ;");
    }
    const FORBIDDEN: &[&str] = &[
        "/etc/passwd",
        "/etc/shadow",
        "/etc/group",
        "/etc/nginx",
        "/etc/ingress-controller",
        "/var/run/secrets",
        "_by_lua",
    ];
    FORBIDDEN.iter().copied().find(|word| value.contains(word))
}

/// The annotations ingress-nginx rates Critical (`parser.AnnotationRiskCritical`).
const CRITICAL: &[&str] =
    &["auth-snippet", "modsecurity-snippet", "server-snippet", "configuration-snippet", "stream-snippet"];

#[cfg(test)]
mod tests {
    use super::deep_inspection_refuses;

    #[test]
    fn the_deep_inspection_s_patterns() {
        for refused in
            ["/alias;", "/a/alias/x;y", "/root;", "/docs/etc/nginx", "/var/run/secrets/x", "/x_by_luaz", "/etc/group"]
        {
            assert!(deep_inspection_refuses(refused).is_some(), "{refused}");
        }
        for kept in ["/a;alias", "/roots", "/aliases", "/etc/", "/by_lua", "/var/run", "/"] {
            assert!(deep_inspection_refuses(kept).is_none(), "{kept}");
        }
    }
}
