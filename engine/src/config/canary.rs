//! `canary:`: the header, ip and user rules, each checked as a whole once read.

use serde::Deserialize;

use super::{field_error, validated_mapping, Validate};
use super::{ArgName, Cidr, CookieName, HeaderName, NonEmpty, Pattern, RuleSource, Target};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    #[serde(default)]
    pub header_rules: Vec<HeaderRule>,
    #[serde(default)]
    pub ip_rules: Vec<IpRule>,
    #[serde(default)]
    pub user_rules: Vec<UserRule>,
}

#[derive(Clone, Debug)]
pub struct HeaderRule {
    /// `header:`, `cookie:` or `arg:` (docs/yaml.md, header rules).
    pub source: RuleSource,
    pub matcher: HeaderMatch,
    pub target: Target,
    /// `from:`: honour the rule only for clients in these networks.
    pub from: Option<Vec<Cidr>>,
}

#[derive(Clone, Debug)]
pub enum HeaderMatch {
    Value(String),
    Values(Vec<String>),
    Pattern(Pattern),
    /// `present: true` matches any value; `present: false` matches an absent header.
    Present(bool),
}

#[derive(Clone, Debug)]
pub struct IpRule {
    pub cidrs: Vec<Cidr>,
    pub target: Target,
}

#[derive(Clone, Debug)]
pub struct UserRule {
    pub users: Vec<NonEmpty>,
    pub target: Target,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeaderRule {
    header: Option<HeaderName>,
    cookie: Option<CookieName>,
    arg: Option<ArgName>,
    value: Option<String>,
    values: Option<Vec<String>>,
    pattern: Option<Pattern>,
    present: Option<bool>,
    target: Target,
    from: Option<Vec<Cidr>>,
}

impl Validate for HeaderRule {
    type Raw = RawHeaderRule;
    fn validate(r: RawHeaderRule) -> Result<Self, String> {
        // Exactly one source; a second one is reported at its own key.
        let given = [
            r.header.map(|h| RuleSource::Header(h.0)),
            r.cookie.map(|c| RuleSource::Cookie(c.0)),
            r.arg.map(|a| RuleSource::Arg(a.0)),
        ];
        let mut given = given.into_iter().flatten();
        let Some(source) = given.next() else {
            return Err("a header rule needs one of header, cookie or arg (what it reads)".into());
        };
        if let Some(second) = given.next() {
            return Err(field_error(
                second.kind(),
                format!("a header rule reads one of header, cookie or arg; this one already reads {source}"),
            ));
        }
        let matcher = match (r.value, r.values, r.pattern, r.present) {
            (Some(v), None, None, None) => HeaderMatch::Value(v),
            (None, Some(vs), None, None) => {
                if vs.is_empty() {
                    return Err(field_error("values", "must list at least one value"));
                }
                HeaderMatch::Values(vs)
            }
            (None, None, Some(p), None) => HeaderMatch::Pattern(p),
            (None, None, None, Some(p)) => HeaderMatch::Present(p),
            (None, None, None, None) => {
                return Err("a header rule needs one of value, values, pattern or present".into())
            }
            _ => return Err("a header rule takes only one of value, values, pattern or present".into()),
        };
        if matches!(&r.from, Some(f) if f.is_empty()) {
            return Err(field_error("from", "must list at least one network (leave it out to allow every client)"));
        }
        Ok(HeaderRule { source, matcher, target: r.target, from: r.from })
    }
}
validated_mapping!(HeaderRule);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIpRule {
    cidr: Option<Cidr>,
    cidrs: Option<Vec<Cidr>>,
    target: Target,
}

impl Validate for IpRule {
    type Raw = RawIpRule;
    fn validate(r: RawIpRule) -> Result<Self, String> {
        let cidrs = match (r.cidr, r.cidrs) {
            (Some(c), None) => vec![c],
            (None, Some(cs)) if !cs.is_empty() => cs,
            (None, Some(_)) => return Err(field_error("cidrs", "must list at least one network")),
            (None, None) => return Err("an ip rule needs cidr or cidrs".into()),
            (Some(_), Some(_)) => return Err("an ip rule takes cidr or cidrs, not both".into()),
        };
        Ok(IpRule { cidrs, target: r.target })
    }
}
validated_mapping!(IpRule);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUserRule {
    users: Vec<NonEmpty>,
    target: Target,
}

impl Validate for UserRule {
    type Raw = RawUserRule;
    fn validate(r: RawUserRule) -> Result<Self, String> {
        if r.users.is_empty() {
            return Err(field_error("users", "must list at least one user id"));
        }
        Ok(UserRule { users: r.users, target: r.target })
    }
}
validated_mapping!(UserRule);
