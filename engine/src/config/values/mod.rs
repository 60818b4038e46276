//! Scalars that validate themselves while they are read, so that a bad value is
//! reported at its own line, column and field path (serde_yaml locates errors raised
//! inside a visitor at the scalar being visited).

use std::fmt;

use ipnet::IpNet;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

mod duration;

pub use duration::*;

/// Implements `Deserialize` through `visit_str` for a type with
/// `fn parse(&str) -> Result<Self, String>`.
macro_rules! string_value {
    ($ty:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        <$ty>::parse(v).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

/// Implements `Deserialize` through `parse` for a type with
/// `fn parse(&str) -> Result<Self, String>` whose YAML may be a string or a bare
/// number (`max_age: 0`, `after: 5`): the number is parsed as its text.
macro_rules! text_or_number_value {
    ($ty:ident, $expecting:literal) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        $ty::parse(v).map_err(E::custom)
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$ty, E> {
                        $ty::parse(&v.to_string()).map_err(E::custom)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}
pub(crate) use text_or_number_value;

/// `services[].name`: `[A-Za-z0-9._-]+`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceName(pub String);

impl ServiceName {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
            return Err(format!("{s:?} has {c:?}; a service name is made of A-Z a-z 0-9 . _ -"));
        }
        Ok(ServiceName(s.to_owned()))
    }
}
string_value!(ServiceName, "a service name ([A-Za-z0-9._-]+)");

/// A host name as in the Host header, or `*.suffix`; kept lowercase, port dropped.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPattern(pub String);

impl HostPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with('[') {
            return Self::ipv6_literal(s);
        }
        let (wildcard, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let name = strip_port(name).map_err(|e| format!("{s:?}: {e}"))?;
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err(format!("{s:?} is not a host name"));
        }
        if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))) {
            return Err(format!("{s:?} has {c:?}; expected a host name (letters, digits, '.', '-', '_') or *.suffix"));
        }
        if name.split('.').any(str::is_empty) {
            return Err(format!("{s:?} has an empty label"));
        }
        let lower = name.to_ascii_lowercase();
        Ok(HostPattern(if wildcard { format!("*.{lower}") } else { lower }))
    }

    /// `[2001:db8::1]` or `[2001:db8::1]:8080`: kept as nginx keeps such a Host
    /// (brackets, no port), in the address's canonical lowercase form.
    fn ipv6_literal(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IPv6 literal; write it as [2001:db8::1] or [2001:db8::1]:8080");
        let (inside, after) = s[1..].split_once(']').ok_or_else(bad)?;
        if !after.is_empty() {
            let port = after.strip_prefix(':').ok_or_else(bad)?;
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{s:?}: bad port {port:?}"));
            }
        }
        let address: std::net::Ipv6Addr = inside.parse().map_err(|_| bad())?;
        Ok(HostPattern(format!("[{address}]")))
    }

    /// The suffix after `*.`, if this is a wildcard.
    pub fn wildcard_suffix(&self) -> Option<&str> {
        self.0.strip_prefix("*.")
    }
}
string_value!(HostPattern, "a host name or *.suffix");

fn strip_port(s: &str) -> Result<&str, String> {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("bad port {port:?}"));
            }
            Ok(host)
        }
        None => Ok(s),
    }
}

/// `old_host` / `new_host`: the Host header sent upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostValue(pub String);

impl HostValue {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'/') {
            return Err(format!("{s:?} is not a host name (spaces, control characters and '/' are not allowed)"));
        }
        if s.contains('*') {
            return Err(format!(
                "{s:?} is sent upstream as the Host header, so it cannot be a wildcard; list wildcards in `hosts`"
            ));
        }
        Ok(HostValue(s.to_owned()))
    }
}
string_value!(HostValue, "a host name");

/// `old_backend` / `new_backend`: `host:port`, `scheme://host:port` or an upstream name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Without the scheme: what `$migration_backend` gives.
    pub address: String,
    /// `http` or `https`: what `$migration_scheme` gives.
    pub scheme: &'static str,
}

impl Backend {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (explicit_scheme, address) = match s.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" => (Some("http"), rest),
                "https" => (Some("https"), rest),
                _ => return Err(format!("{s:?}: scheme must be http or https, got {scheme:?}")),
            },
            None => (None, s),
        };
        if address.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        if let Some(c) =
            address.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '$'))
        {
            return Err(format!("{s:?} has {c:?}; expected host:port, scheme://host:port or an upstream name"));
        }
        if !address.starts_with('[') && address.matches(':').count() > 1 {
            return Err(format!(
                "{s:?}: an IPv6 address is written in brackets, as [2001:db8::1]:8080 (nginx would read a bare one's \
                 last colon as the port's)"
            ));
        }
        let port = match address.rsplit_once(':') {
            // An IPv6 literal's colons are inside brackets.
            Some((host, port)) if !host.ends_with(':') && !port.contains(']') => {
                if port.is_empty()
                    || !port.bytes().all(|b| b.is_ascii_digit())
                    || port.parse::<u32>().map_or(true, |p| p == 0 || p > 65535)
                {
                    return Err(format!("{s:?}: bad port {port:?}"));
                }
                Some(port)
            }
            _ => None,
        };
        let scheme = explicit_scheme.unwrap_or(if port == Some("443") { "https" } else { "http" });
        Ok(Backend { address: address.to_owned(), scheme })
    }
}
string_value!(Backend, "host:port, scheme://host:port or an upstream name");

/// `target`: `new_cluster` | `old_cluster` (`new` | `old` accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Old,
    New,
}

impl Target {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "new_cluster" | "new" => Ok(Target::New),
            "old_cluster" | "old" => Ok(Target::Old),
            _ => Err(format!("must be new_cluster or old_cluster, got {s:?}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Old => "old",
            Target::New => "new",
        }
    }

    /// The other side.
    pub fn other(self) -> Self {
        match self {
            Target::Old => Target::New,
            Target::New => Target::Old,
        }
    }

    /// 0 for old, 1 for new, for counter tables.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}
string_value!(Target, "new_cluster or old_cluster");

/// `migration.strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    Weight,
    User,
    Ip,
}

impl Strategy {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "weight" => Ok(Strategy::Weight),
            "user" => Ok(Strategy::User),
            "ip" => Ok(Strategy::Ip),
            _ => Err(format!("must be weight, user or ip, got {s:?}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Weight => "weight",
            Strategy::User => "user",
            Strategy::Ip => "ip",
        }
    }
}
string_value!(Strategy, "weight, user or ip");

/// `migration.percentage`, in basis points (0..=10000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Percentage(pub u32);

impl Percentage {
    fn from_f64(v: f64) -> Result<Self, String> {
        if !(0.0..=100.0).contains(&v) {
            return Err(format!("must be between 0 and 100, got {v}"));
        }
        // Exact: the number must be the one its two-decimal form reads as (20.15 is,
        // 99.999999999 is not, though it rounds to 100.00).
        let bp = (v * 100.0).round() as u32;
        if format!("{}.{:02}", bp / 100, bp % 100).parse::<f64>() != Ok(v) {
            return Err(format!("at most two decimals are allowed, got {v}"));
        }
        Ok(Percentage(bp))
    }
}

impl<'de> Deserialize<'de> for Percentage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Percentage;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number between 0 and 100")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Percentage, E> {
                if v > 100 {
                    return Err(E::custom(format!("must be between 0 and 100, got {v}")));
                }
                Ok(Percentage(v as u32 * 100))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Percentage, E> {
                if v < 0 {
                    return Err(E::custom(format!("must be between 0 and 100, got {v}")));
                }
                self.visit_u64(v as u64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Percentage, E> {
                Percentage::from_f64(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A percentage in basis points, written as the YAML would: `20`, `12.5`, `0.01`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PercentageText(pub u32);

impl fmt::Display for PercentageText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, fraction) = (self.0 / 100, self.0 % 100);
        match fraction {
            0 => write!(f, "{whole}"),
            _ if fraction % 10 == 0 => write!(f, "{whole}.{}", fraction / 10),
            _ => write!(f, "{whole}.{fraction:02}"),
        }
    }
}

/// Where a user id is read: `header:NAME` | `cookie:NAME` | `arg:NAME` | `var:NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserKey {
    /// Lowercased: header names match case-insensitively.
    Header(String),
    Cookie(String),
    Arg(String),
    /// An nginx variable, lowercased as nginx looks variables up: an identity the
    /// proxy verified (`auth_request_set`, a JWT module, `map`), not one a client
    /// merely claims.
    Var(String),
}

impl UserKey {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("must be header:NAME, cookie:NAME, arg:NAME or var:NAME, got {s:?}");
        if let Some(name) = s.strip_prefix("var:") {
            let name = name.strip_prefix('$').unwrap_or(name);
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("{s:?}: a variable name is made of letters, digits and '_' (var:jwt_sub)"));
            }
            return Ok(UserKey::Var(name.to_ascii_lowercase()));
        }
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        if name.is_empty() {
            return Err(bad());
        }
        match kind {
            "header" => Ok(UserKey::Header(HeaderName::parse(name)?.0)),
            "cookie" | "arg" => {
                if let Some(c) = name.chars().find(|c| !c.is_ascii_graphic() || matches!(c, ';' | '=' | ',' | '&')) {
                    return Err(format!("{s:?}: {c:?} cannot appear in a {kind} name"));
                }
                Ok(if kind == "cookie" { UserKey::Cookie(name.to_owned()) } else { UserKey::Arg(name.to_owned()) })
            }
            _ => Err(bad()),
        }
    }
}
string_value!(UserKey, "header:NAME, cookie:NAME, arg:NAME or var:NAME");

impl UserKey {
    /// As written in the YAML (`header:` names lowercase).
    pub fn spec(&self) -> String {
        match self {
            UserKey::Header(n) => format!("header:{n}"),
            UserKey::Cookie(n) => format!("cookie:{n}"),
            UserKey::Arg(n) => format!("arg:{n}"),
            UserKey::Var(n) => format!("var:{n}"),
        }
    }
}

impl Default for UserKey {
    fn default() -> Self {
        UserKey::Header("x-user-id".into())
    }
}

/// A request header name (an HTTP token), kept lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HeaderName(pub String);

impl HeaderName {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("header name must not be empty".into());
        }
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if let Some(c) = s.chars().find(|&c| !token(c)) {
            return Err(format!("{s:?} has {c:?}, which cannot appear in a header name"));
        }
        Ok(HeaderName(s.to_ascii_lowercase()))
    }
}
string_value!(HeaderName, "a header name");

/// What a header rule reads (docs/yaml.md, header rules): a request
/// header, a cookie as `$cookie_NAME` reads it, or a query argument as
/// `$arg_NAME` reads it. Names are kept lowercase: all three match
/// case-insensitively in nginx.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RuleSource {
    Header(String),
    Cookie(String),
    Arg(String),
}

impl RuleSource {
    /// The YAML key that names this source: `header`, `cookie` or `arg`.
    pub fn kind(&self) -> &'static str {
        match self {
            RuleSource::Header(_) => "header",
            RuleSource::Cookie(_) => "cookie",
            RuleSource::Arg(_) => "arg",
        }
    }

    /// The lowercase name.
    pub fn name(&self) -> &str {
        match self {
            RuleSource::Header(n) | RuleSource::Cookie(n) | RuleSource::Arg(n) => n,
        }
    }
}

impl fmt::Display for RuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.kind(), self.name())
    }
}

/// A cookie or argument name as `$cookie_NAME` / `$arg_NAME` can look it up:
/// visible ASCII without `;`, `=`, `,` or `&` (which end a name in nginx's
/// parsers), kept lowercase.
fn cookie_or_arg_name(kind: &str, s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err(format!("{kind} name must not be empty"));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic() || matches!(c, ';' | '=' | ',' | '&')) {
        let article = if kind == "arg" { "an" } else { "a" };
        return Err(format!("{s:?} has {c:?}, which cannot appear in {article} {kind} name"));
    }
    Ok(s.to_ascii_lowercase())
}

/// `cookie:` of a header rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CookieName(pub String);

impl CookieName {
    pub fn parse(s: &str) -> Result<Self, String> {
        cookie_or_arg_name("cookie", s).map(CookieName)
    }
}
string_value!(CookieName, "a cookie name");

/// `arg:` of a header rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ArgName(pub String);

impl ArgName {
    pub fn parse(s: &str) -> Result<Self, String> {
        cookie_or_arg_name("arg", s).map(ArgName)
    }
}
string_value!(ArgName, "an argument name");

/// A network: `a.b.c.d/len`, `ipv6/len`, or a single address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let net: IpNet = match s.parse() {
            Ok(net) => net,
            Err(_) => match s.parse::<std::net::IpAddr>() {
                Ok(addr) => IpNet::from(addr),
                Err(_) => return Err(format!("{s:?} is not a CIDR (a.b.c.d/len, ipv6/len or an address)")),
            },
        };
        if net.trunc() != net {
            return Err(format!("{s:?} has host bits set; did you mean {}?", net.trunc()));
        }
        // Clients with IPv4-mapped addresses are matched as IPv4, so an
        // IPv4-mapped network is kept as the IPv4 network it denotes.
        if let IpNet::V6(v6) = net {
            if let (Some(v4), true) = (v6.network().to_ipv4_mapped(), v6.prefix_len() >= 96) {
                let v4net = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).expect("prefix <= 32");
                return Ok(Cidr(IpNet::V4(v4net)));
            }
        }
        Ok(Cidr(net))
    }
}
string_value!(Cidr, "a CIDR such as 10.0.0.0/8 or 2001:db8::/32");

/// `pattern`: a regex searched in the header value (bytes, so values that are not
/// UTF-8 still match).
#[derive(Clone, Debug)]
pub struct Pattern(pub regex::bytes::Regex);

impl Pattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        // Bytes, not Unicode: `.` matches any byte and `\w` is ASCII, as in nginx's
        // PCRE without the UTF flag, so values that are not UTF-8 match too.
        regex::bytes::RegexBuilder::new(s)
            .unicode(false)
            .size_limit(1 << 20)
            .build()
            .map(Pattern)
            .map_err(|e| format!("bad regex: {}", one_line(&e.to_string())))
    }
}
string_value!(Pattern, "a regular expression");

fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// A non-empty string (user ids, header values in `values:`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NonEmpty(pub String);

impl NonEmpty {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(NonEmpty(s.to_owned()))
    }
}
string_value!(NonEmpty, "a non-empty string");

#[cfg(test)]
mod tests {
    use super::PercentageText;

    #[test]
    fn percentages_are_written_as_the_yaml_would() {
        for (bp, text) in [
            (2000, "20"),
            (1250, "12.5"),
            (1, "0.01"),
            (10, "0.1"),
            (3333, "33.33"),
            (10_000, "100"),
            (0, "0"),
            (505, "5.05"),
        ] {
            assert_eq!(PercentageText(bp).to_string(), text, "{bp}");
        }
    }

    use super::*;

    #[test]
    fn backend_schemes() {
        assert_eq!(Backend::parse("a.svc:8078").unwrap(), Backend { address: "a.svc:8078".into(), scheme: "http" });
        assert_eq!(Backend::parse("a.example:443").unwrap().scheme, "https");
        assert_eq!(
            Backend::parse("https://a.example:8443").unwrap(),
            Backend { address: "a.example:8443".into(), scheme: "https" }
        );
        assert_eq!(Backend::parse("http://a:443").unwrap().scheme, "http");
        assert_eq!(Backend::parse("my_upstream").unwrap().scheme, "http");
        assert_eq!(Backend::parse("[::1]:443").unwrap().scheme, "https");
        for bare in ["2001:db8::1", "::1", "2001:db8::a:80", "https://2001:db8::1:443"] {
            let e = Backend::parse(bare).unwrap_err();
            assert!(e.contains("an IPv6 address is written in brackets"), "{bare}: {e}");
        }
        assert!(Backend::parse("ftp://a:1").is_err());
        assert!(Backend::parse("a:99999").is_err());
        assert!(Backend::parse("a:1/path").is_err());
        assert!(Backend::parse("").is_err());
    }

    #[test]
    fn host_patterns() {
        assert_eq!(HostPattern::parse("API.Example:8080").unwrap().0, "api.example");
        assert_eq!(HostPattern::parse("*.Example.com").unwrap().0, "*.example.com");
        assert!(HostPattern::parse("a b").is_err());
        assert!(HostPattern::parse("a..b").is_err());
        assert!(HostPattern::parse("*.").is_err());
        assert!(HostPattern::parse("a:").is_err());
    }

    #[test]
    fn cidrs() {
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().0.to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("10.1.2.3").unwrap().0.to_string(), "10.1.2.3/32");
        assert_eq!(Cidr::parse("2001:db8::/32").unwrap().0.to_string(), "2001:db8::/32");
        assert!(Cidr::parse("10.0.0.1/8").unwrap_err().contains("did you mean 10.0.0.0/8"));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert_eq!(Cidr::parse("::ffff:10.0.0.0/104").unwrap().0.to_string(), "10.0.0.0/8");
        assert!(Cidr::parse("300.0.0.0/8").is_err());
    }

    #[test]
    fn user_keys() {
        assert_eq!(UserKey::parse("header:X-User-ID").unwrap(), UserKey::Header("x-user-id".into()));
        assert_eq!(UserKey::parse("cookie:uid").unwrap(), UserKey::Cookie("uid".into()));
        assert_eq!(UserKey::parse("arg:u").unwrap(), UserKey::Arg("u".into()));
        assert_eq!(UserKey::parse("var:JWT_Sub").unwrap(), UserKey::Var("jwt_sub".into()));
        assert_eq!(UserKey::parse("var:$user_id").unwrap(), UserKey::Var("user_id".into()));
        for bad in ["header:", "uid", "query:u", "cookie:a;b", "header:a b", "var:", "var:a-b", "var:$"] {
            assert!(UserKey::parse(bad).is_err(), "{bad}");
        }
    }
}

/// `fallback.failures`: how many consecutive failures trip the breaker, 1 to 1000.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureCount(pub u32);

impl<'de> Deserialize<'de> for FailureCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FailureCount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number from 1 to 1000")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FailureCount, E> {
                match v {
                    1..=1000 => Ok(FailureCount(v as u32)),
                    _ => Err(E::custom(format!("must be from 1 to 1000, got {v}"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FailureCount, E> {
                Err(E::custom(format!("must be from 1 to 1000, got {v}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// An upstream status counted as a failure by `fallback.statuses`: 100 to 599.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HttpStatus(pub u16);

impl<'de> Deserialize<'de> for HttpStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HttpStatus;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an HTTP status from 100 to 599")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HttpStatus, E> {
                match v {
                    100..=599 => Ok(HttpStatus(v as u16)),
                    _ => Err(E::custom(format!("must be an HTTP status from 100 to 599, got {v}"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HttpStatus, E> {
                Err(E::custom(format!("must be an HTTP status from 100 to 599, got {v}")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod pattern_tests {
    use super::*;

    /// nginx's PCRE runs without the UTF flag: `.` is any byte.
    #[test]
    fn patterns_match_bytes_that_are_not_utf8() {
        let p = Pattern::parse("^.+$").unwrap();
        assert!(p.0.is_match(b"caf\xe9"));
        assert!(Pattern::parse("^caf.$").unwrap().0.is_match(b"caf\xe9"));
        assert!(!Pattern::parse(r"^\w+$").unwrap().0.is_match("café".as_bytes()), "\\w is ASCII, as in PCRE");
        assert!(Pattern::parse("é").unwrap().0.is_match("café".as_bytes()), "a UTF-8 literal still matches");
    }
}
