//! The YAML model (docs/yaml.md): reading a plain document or a whole ConfigMap
//! manifest, validating it strictly, and reporting every problem with its file,
//! line, column and field path.
//!
//! Validation happens while the YAML is read: scalars validate themselves
//! (`values/`), and each mapping with cross-field rules is read through
//! [`Validate`], so that serde_yaml locates every error at the node it concerns.
//!
//! The document and its services are read here; the canary's rules in
//! `canary.rs`, the document embedded in a ConfigMap manifest in `configmap.rs`,
//! and a ramp in `ramp.rs`.

mod canary;
mod configmap;
pub mod drain;
mod error;
pub mod ramp;
pub mod sticky;
pub(crate) mod syntax;
pub mod values;

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

pub use canary::{Canary, HeaderMatch, HeaderRule, IpRule, UserRule};
pub use configmap::locate_in_file;
pub use error::{escape_controls, ConfigError};
pub use values::*;

use configmap::unwrap_configmap;

/// A validated configuration file.
#[derive(Clone, Debug)]
pub struct Config {
    /// `version`, or a content hash of the file when it has none.
    pub version: String,
    pub services: Vec<Service>,
}

#[derive(Clone, Debug)]
pub struct Service {
    pub name: ServiceName,
    /// `hosts`, defaulting to `[old_host]`.
    pub hosts: Vec<HostPattern>,
    /// Whether `hosts` was written (errors about a host then point at it).
    pub hosts_given: bool,
    pub old_host: HostValue,
    pub old_backend: Backend,
    pub new_host: HostValue,
    pub new_backend: Backend,
    pub migration: Migration,
    pub canary: Canary,
    pub fallback: Option<Fallback>,
}

#[derive(Clone, Debug)]
pub struct Migration {
    pub enabled: bool,
    pub strategy: Strategy,
    /// With a ramp: its first step.
    pub percentage: Percentage,
    pub user_key: UserKey,
    pub hash_salt: String,
    pub ramp: Option<ramp::Ramp>,
    /// `sticky`: the cookie minted for a client that carries no user id.
    pub sticky: Option<sticky::Sticky>,
    /// `drain`: long-lived requests follow the split.
    pub drain: Option<drain::Drain>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMigration {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    strategy: Strategy,
    percentage: Option<Percentage>,
    #[serde(default)]
    user_key: UserKey,
    #[serde(default)]
    hash_salt: String,
    ramp: Option<ramp::Ramp>,
    sticky: Option<sticky::Sticky>,
    drain: Option<drain::Drain>,
}

impl Validate for Migration {
    type Raw = RawMigration;
    fn validate(r: RawMigration) -> Result<Self, String> {
        let percentage = match (&r.ramp, r.percentage) {
            (Some(ramp), Some(p)) if p.0 != ramp.steps[0] => {
                return Err(field_error(
                    "percentage",
                    format!(
                        "with a ramp, percentage is left out or equal to the first step ({}), got {}",
                        PercentageText(ramp.steps[0]),
                        PercentageText(p.0)
                    ),
                ))
            }
            (Some(ramp), _) => Percentage(ramp.steps[0]),
            (None, p) => p.unwrap_or_default(),
        };
        if r.sticky.is_some() {
            // The minted id goes back as the cookie user_key reads, and only the
            // user hash gives a client the same side for the same id.
            match &r.user_key {
                UserKey::Cookie(name) => {
                    if let Some(c) = name.chars().find(|c| !is_token_char(*c)) {
                        return Err(field_error(
                            "user_key",
                            format!("sticky sends cookie {name:?} back in Set-Cookie, and {c:?} cannot appear in a cookie's name"),
                        ));
                    }
                }
                other => {
                    return Err(field_error(
                        "sticky",
                        format!(
                            "needs user_key: cookie:NAME (the minted id goes back as that cookie), got user_key: {}",
                            other.spec()
                        ),
                    ))
                }
            }
            if r.strategy != Strategy::User {
                return Err(field_error(
                    "sticky",
                    "needs strategy: user (only the user hash keeps an id on one side; weight and ip ignore it)",
                ));
            }
        }
        Ok(Migration {
            enabled: r.enabled,
            strategy: r.strategy,
            percentage,
            user_key: r.user_key,
            hash_salt: r.hash_salt,
            ramp: r.ramp,
            sticky: r.sticky,
            drain: r.drain,
        })
    }
}
validated_mapping!(Migration);

impl Default for Migration {
    fn default() -> Self {
        Migration {
            enabled: true,
            strategy: Strategy::Weight,
            percentage: Percentage(0),
            user_key: UserKey::default(),
            hash_salt: String::new(),
            ramp: None,
            sticky: None,
            drain: None,
        }
    }
}

/// A character of an HTTP token (RFC 9110), what a cookie's name is made of.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn yes() -> bool {
    true
}

/// A mapping read as `Raw` (strict serde derive) and then checked as a whole.
/// Errors raised here are located at the mapping itself.
trait Validate: Sized {
    type Raw: DeserializeOwned;
    fn validate(raw: Self::Raw) -> Result<Self, String>;
}

/// Marks a message raised for one field of a mapping after the whole mapping was
/// read (an empty list, a duplicate across services): [`parse`] moves the error
/// from the mapping to that field's own line, column and path.
const FIELD_MARK: char = '\u{1}';

/// An error of field `field` (`hosts`, `hosts[2]`) of the mapping being validated.
fn field_error(field: &str, message: impl fmt::Display) -> String {
    format!("{FIELD_MARK}{field}{FIELD_MARK}{message}")
}

pub(crate) struct ValidatingVisitor<T>(pub(crate) PhantomData<T>);

impl<'de, T: Validate> Visitor<'de> for ValidatingVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        let raw = T::Raw::deserialize(de::value::MapAccessDeserializer::new(map))?;
        T::validate(raw).map_err(de::Error::custom)
    }
}

macro_rules! validated_mapping {
    ($ty:ty) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_map($crate::config::ValidatingVisitor(std::marker::PhantomData))
            }
        }
    };
}
pub(crate) use validated_mapping;

/// `fallback:` (docs/fallback.md): send new-bound traffic to old while the new
/// cluster fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// Consecutive failures that open the breaker.
    pub failures: u32,
    /// Upstream statuses that count as failures (connect errors and timeouts
    /// always do), sorted, no repeats.
    pub statuses: Vec<u16>,
    /// How long the breaker stays open before a trial request, in milliseconds.
    pub cooldown_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFallback {
    failures: Option<FailureCount>,
    statuses: Option<Vec<HttpStatus>>,
    cooldown: Option<Cooldown>,
}

impl Validate for Fallback {
    type Raw = RawFallback;
    fn validate(r: RawFallback) -> Result<Self, String> {
        let mut statuses: Vec<u16> = match r.statuses {
            Some(s) if s.is_empty() => {
                return Err(field_error(
                    "statuses",
                    "must list at least one status (connect errors and timeouts count anyway)",
                ))
            }
            Some(s) => s.into_iter().map(|s| s.0).collect(),
            None => vec![502, 503, 504],
        };
        statuses.sort_unstable();
        statuses.dedup();
        Ok(Fallback {
            failures: r.failures.map_or(5, |f| f.0),
            statuses,
            cooldown_ms: r.cooldown.map_or(30_000, |c| c.0),
        })
    }
}
validated_mapping!(Fallback);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: ServiceName,
    hosts: Option<Vec<HostPattern>>,
    old_host: HostValue,
    old_backend: Backend,
    new_host: HostValue,
    new_backend: Backend,
    #[serde(default)]
    migration: Migration,
    #[serde(default)]
    canary: Canary,
    fallback: Option<Fallback>,
}

impl Validate for Service {
    type Raw = RawService;
    fn validate(r: RawService) -> Result<Self, String> {
        let hosts_given = r.hosts.is_some();
        let hosts = match r.hosts {
            Some(h) if h.is_empty() => {
                return Err(field_error("hosts", "must list at least one host (leave it out to use old_host)"))
            }
            Some(h) => h,
            None => vec![HostPattern::parse(&r.old_host.0)
                .map_err(|e| field_error("old_host", format!("cannot be matched against Host: {e}")))?],
        };
        Ok(Service {
            hosts_given,
            name: r.name,
            hosts,
            old_host: r.old_host,
            old_backend: r.old_backend,
            new_host: r.new_host,
            new_backend: r.new_backend,
            migration: r.migration,
            canary: r.canary,
            fallback: r.fallback,
        })
    }
}

const EMPTY_SERVICES: &str = "has no value; write `services: []` to route nothing (an empty value is refused so that \
     a file caught half-written never wipes the routing)";

/// The services list, checked across services: names are unique and no host
/// pattern belongs to two services. Each service is read through a seed that
/// remembers what came before, so a duplicate is reported at the service that
/// repeats it.
struct ServiceList(Vec<Service>);

impl<'de> Deserialize<'de> for ServiceList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = ServiceList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of services")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ServiceList, A::Error> {
                let mut seen = Seen::default();
                let mut services = Vec::new();
                while let Some(service) =
                    seq.next_element_seed(ServiceSeed { seen: &mut seen, index: services.len() })?
                {
                    services.push(service);
                }
                Ok(ServiceList(services))
            }
            // `services:` with nothing after it: serde_yaml would read it as an
            // empty list, which is exactly a ConfigMap caught half-written.
            fn visit_unit<E: de::Error>(self) -> Result<ServiceList, E> {
                Err(E::custom(EMPTY_SERVICES))
            }
            fn visit_none<E: de::Error>(self) -> Result<ServiceList, E> {
                Err(E::custom(EMPTY_SERVICES))
            }
        }
        d.deserialize_any(ListVisitor)
    }
}

#[derive(Default)]
struct Seen {
    names: HashMap<String, usize>,
    hosts: HashMap<String, usize>,
}

struct ServiceSeed<'a> {
    seen: &'a mut Seen,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for ServiceSeed<'_> {
    type Value = Service;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Service, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ServiceSeed<'_> {
    type Value = Service;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a service mapping")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Service, A::Error> {
        let service: Service = ValidatingVisitor(PhantomData).visit_map(map)?;
        let name = &service.name.0;
        if let Some(first) = self.seen.names.insert(name.clone(), self.index) {
            self.seen.names.insert(name.clone(), first);
            return Err(de::Error::custom(field_error(
                "name",
                format!("duplicate service name {name:?} (first used by services[{first}])"),
            )));
        }
        for (k, host) in service.hosts.iter().enumerate() {
            match self.seen.hosts.get(&host.0) {
                Some(&other) if other != self.index => {
                    let field = if service.hosts_given { format!("hosts[{k}]") } else { "old_host".to_owned() };
                    return Err(de::Error::custom(field_error(
                        &field,
                        format!(
                            "host {:?} is already routed by services[{other}]; a host belongs to one service",
                            host.0
                        ),
                    )));
                }
                _ => {
                    self.seen.hosts.insert(host.0.clone(), self.index);
                }
            }
        }
        Ok(service)
    }
}

/// `version:` as written. A number is accepted; its text is taken from the file
/// afterwards (`1.10` must not become "1.1"), so the visitor only marks it.
enum Version {
    Text(String),
    Number(String),
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Version;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a version string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Version, E> {
                if v.is_empty() || v.chars().any(char::is_control) {
                    return Err(E::custom("must be a non-empty single-line string"));
                }
                Ok(Version::Text(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Version, E> {
                Ok(Version::Number(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Version, E> {
                Ok(Version::Number(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Version, E> {
                Ok(Version::Number(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    version: Option<Version>,
    services: ServiceList,
}

/// Parses and validates a configuration. `file` names it in error messages.
///
/// The text is read twice: a linear first pass ([`syntax`]) refuses anchors,
/// aliases and deep nesting and says whether this is a ConfigMap, then serde_yaml
/// reads the document once, straight into the typed model.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let content_version = format!("{:016x}", fnv1a64(text.as_bytes()));
    let outline = first_pass(file, text, None)?;
    let embedded = if outline.configmap { Some(unwrap_configmap(file, text)?) } else { None };
    let (label, body, offset) = match &embedded {
        Some(embedded) => (embedded.label.as_str(), embedded.text.as_str(), embedded.offset),
        None => (file, text, None),
    };
    let outline = if embedded.is_some() { first_pass(label, body, offset)? } else { outline };
    if outline.empty {
        return Err(ConfigError::new(
            label,
            None,
            "",
            "the document is empty; expected a mapping with `services` (`services: []` routes nothing)",
        ));
    }
    let shift = |location: Option<(usize, usize)>| match (location, offset) {
        (Some((line, column)), Some((line_offset, indent))) => Some((line + line_offset, column + indent)),
        (location, _) => location,
    };
    let raw: RawDocument = serde_yaml::from_str(body).map_err(|e| {
        let mut err = ConfigError::from_yaml(label, &e);
        if let Some((field, message)) =
            err.message.strip_prefix(FIELD_MARK).and_then(|rest| rest.split_once(FIELD_MARK))
        {
            let path = if err.path.is_empty() { field.to_owned() } else { format!("{}.{field}", err.path) };
            err.location = syntax::locate(body, &path).or(err.location);
            err.message = message.to_owned();
            err.path = path;
        }
        err.location = shift(err.location);
        err
    })?;
    let version = match raw.version {
        None => content_version,
        Some(Version::Text(v)) => v,
        Some(Version::Number(v)) => syntax::plain_scalar(body, "version").unwrap_or(v),
    };
    Ok(Config { version, services: raw.services.0 })
}

/// The first pass over a document (or the document embedded in a ConfigMap, whose
/// positions `offset` maps back to the manifest's).
fn first_pass(label: &str, text: &str, offset: Option<(usize, usize)>) -> Result<syntax::Outline, ConfigError> {
    syntax::outline(text).map_err(|refusal| {
        // Not YAML by the first pass's reading: serde_yaml words the error as
        // nginx -t always has, unless it reads the text after all.
        if let syntax::Refusal::Syntax(_) = refusal {
            if let Err(e) = serde_yaml::from_str::<de::IgnoredAny>(text) {
                let mut err = ConfigError::from_yaml(label, &e);
                if let (Some((line, column)), Some((line_offset, indent))) = (err.location, offset) {
                    err.location = Some((line + line_offset, column + indent));
                }
                return err;
            }
        }
        let (location, message) = syntax::describe(&refusal);
        let location = match (location, offset) {
            (Some((line, column)), Some((line_offset, indent))) => Some((line + line_offset, column + indent)),
            (location, _) => location,
        };
        ConfigError::new(label, location, "", message)
    })
}

/// FNV-1a, 64-bit: the content hash that stands in for a missing `version`, and
/// by which a watched file is known to have changed.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests;
