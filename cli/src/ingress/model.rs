//! The types of the import: Ingresses as read, the report and the services
//! written.

use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use migration_engine::config::escape_controls;
use serde_json::json;
use serde_yaml::Value;

use super::PREFIX;
use crate::kyaml::Node;

/// A place in an input file.
#[derive(Clone, Debug)]
pub(super) struct At {
    pub(super) file: Rc<str>,
    pub(super) line: usize,
    pub(super) column: usize,
}

impl At {
    pub(super) fn of(file: &Rc<str>, node: &Node) -> At {
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
pub(super) enum PathType {
    Exact,
    Prefix,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Port {
    Number(u16),
    Name(String),
}

/// A Service and port an Ingress path sends to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct ServiceRef {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) port: Port,
}

impl ServiceRef {
    /// ingress-nginx's upstream name (`controller/util.go:50-59`): one per
    /// Service and port, shared by every location that sends there.
    pub(super) fn upstream(&self) -> String {
        match &self.port {
            Port::Number(n) => format!("{}-{}-{n}", self.namespace, self.name),
            Port::Name(p) => format!("{}-{}-{p}", self.namespace, self.name),
        }
    }

    pub(super) fn host(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }
}

pub(super) struct PathRule {
    /// `""` read as `/`, as ingress-nginx stores it.
    pub(super) path: String,
    pub(super) path_type: PathType,
    pub(super) backend: Option<ServiceRef>,
}

pub(super) struct HostRule {
    /// Lowercase; `""` is ingress-nginx's catch-all server `_`.
    pub(super) host: String,
    pub(super) http: bool,
    pub(super) paths: Vec<PathRule>,
}

/// ingress-nginx's parsed canary (`canary/main.go`, `Config`).
#[derive(Clone, Debug, Default)]
pub(super) struct Canary {
    pub(super) weight: i64,
    pub(super) weight_total: i64,
    pub(super) header: String,
    pub(super) header_value: String,
    pub(super) header_pattern: String,
    pub(super) cookie: String,
}

pub(super) struct Ingress {
    pub(super) namespace: String,
    pub(super) name: String,
    /// Unix milliseconds.
    pub(super) created: i64,
    /// Full annotation keys.
    pub(super) annotations: BTreeMap<String, String>,
    pub(super) rules: Vec<HostRule>,
    pub(super) default_backend: Option<ServiceRef>,
    /// `Some` when ingress-nginx enables the canary.
    pub(super) canary: Option<Canary>,
    /// What parsing the canary annotations learned: (annotation, text).
    pub(super) parse_notes: Vec<(String, String)>,
}

impl Ingress {
    pub(super) fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub(super) fn annotation(&self, name: &str) -> Option<&str> {
        self.annotations.get(&format!("{PREFIX}{name}")).map(String::as_str)
    }

    /// The Services its paths send to (of rules with `http`), in order.
    pub(super) fn path_backends(&self) -> impl Iterator<Item = &ServiceRef> {
        self.rules.iter().filter(|r| r.http).flat_map(|r| r.paths.iter().filter_map(|p| p.backend.as_ref()))
    }
}

/// What each annotation became. Every text is escaped: Ingresses are written by
/// tenants, and a terminal must not run what they wrote.
#[derive(Default)]
pub(super) struct Report {
    pub(super) mapped: Vec<serde_json::Value>,
    pub(super) approximate: Vec<serde_json::Value>,
    pub(super) unmapped: Vec<serde_json::Value>,
    pub(super) errors: Vec<String>,
}

impl Report {
    pub(super) fn entry(ingress: &Ingress, annotation: &str, key: &str, text: &str) -> serde_json::Value {
        json!({"ingress": escape_controls(&ingress.id()), "annotation": escape_controls(annotation), key: escape_controls(text)})
    }
    pub(super) fn mapped(&mut self, ingress: &Ingress, annotation: &str, how: impl AsRef<str>) {
        self.mapped.push(Report::entry(ingress, annotation, "how", how.as_ref()));
    }
    pub(super) fn approximate(&mut self, ingress: &Ingress, annotation: &str, how: impl AsRef<str>) {
        self.approximate.push(Report::entry(ingress, annotation, "how", how.as_ref()));
    }
    pub(super) fn unmapped(&mut self, ingress: &Ingress, annotation: &str, why: impl AsRef<str>) {
        self.unmapped.push(Report::entry(ingress, annotation, "why", why.as_ref()));
    }
}

/// A service of the output.
pub(super) struct Service {
    pub(super) name: String,
    pub(super) host: String,
    pub(super) by_location: bool,
    pub(super) old: String,
    pub(super) new: String,
    /// Shared by the services of every host a canary joins: one copy of a
    /// huge annotation value, not one per host.
    pub(super) rules: Rc<Vec<Value>>,
    pub(super) percentage_bp: u32,
}
