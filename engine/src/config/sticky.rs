//! `migration.sticky` (docs/yaml.md): the cookie a client without a user id is
//! given, so that its next requests hash the same id and land on the same side.
//! Its attributes are checked here; that the service reads ids from that cookie
//! (`user_key: cookie:NAME`, `strategy: user`) is checked with the rest of
//! `migration`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::values::{duration_ms, text_or_number_value};
use super::{validated_mapping, Validate};

/// The longest `max_age`: browsers cap a cookie's lifetime at 400 days (RFC
/// 6265bis), so a longer one would only look longer.
const MAX_AGE_LIMIT_S: u64 = 400 * 86_400;

/// `migration.sticky`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sticky {
    /// `Max-Age` in seconds; 0 makes a session cookie (no `Max-Age`).
    pub max_age_s: u64,
    pub path: String,
    pub domain: Option<String>,
    pub secure: Secure,
    pub same_site: SameSite,
    pub http_only: bool,
}

/// `sticky.secure`: `auto` marks the cookie `Secure` when the request came over TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secure {
    Auto,
    Always,
    Never,
}

/// `sticky.same_site`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

impl SameSite {
    /// As the attribute is written.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    max_age: Option<MaxAge>,
    path: Option<CookiePath>,
    domain: Option<CookieDomain>,
    secure: Option<Secure>,
    same_site: Option<SameSite>,
    http_only: Option<bool>,
}

impl Validate for Sticky {
    type Raw = RawSticky;
    fn validate(r: RawSticky) -> Result<Self, String> {
        let secure = r.secure.unwrap_or(Secure::Auto);
        let same_site = r.same_site.unwrap_or(SameSite::Lax);
        if same_site == SameSite::None && secure != Secure::Always {
            // Browsers drop a SameSite=None cookie that is not Secure; `auto` would
            // hand plain-HTTP clients a cookie they throw away, and they would
            // never stay on one side.
            return Err(super::field_error(
                "same_site",
                "none needs secure: true (browsers refuse a SameSite=None cookie without Secure)",
            ));
        }
        Ok(Sticky {
            max_age_s: r.max_age.map_or(30 * 86_400, |m| m.0),
            path: r.path.map_or_else(|| "/".to_owned(), |p| p.0),
            domain: r.domain.map(|d| d.0),
            secure,
            same_site,
            http_only: r.http_only.unwrap_or(true),
        })
    }
}
validated_mapping!(Sticky);

/// `sticky.max_age`: a time in whole seconds (`30d`, `12h`, `0`), at most 400d.
struct MaxAge(u64);

impl MaxAge {
    fn parse(s: &str) -> Result<Self, String> {
        let ms = duration_ms(s).ok_or_else(|| format!("must be a time such as 30d, 12h or 0, got {s:?}"))?;
        if ms % 1000 != 0 {
            return Err(format!("must be whole seconds (a cookie's Max-Age is), got {s:?}"));
        }
        let seconds = ms / 1000;
        if seconds > u128::from(MAX_AGE_LIMIT_S) {
            return Err(format!("must be at most 400d (browsers cap a cookie's lifetime there), got {s:?}"));
        }
        Ok(MaxAge(seconds as u64))
    }
}

/// `sticky.path`: starts with `/`; no `;`, space or control character.
struct CookiePath(String);

impl CookiePath {
    fn parse(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!("must start with '/', got {s:?}"));
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic() || *c == ';') {
            return Err(format!("{s:?}: {c:?} cannot appear in a cookie's path"));
        }
        Ok(CookiePath(s.to_owned()))
    }
}

/// `sticky.domain`: a host name (letters, digits, `-`, `.`), kept lowercase; a
/// leading dot, which browsers ignore, is dropped.
struct CookieDomain(String);

impl CookieDomain {
    fn parse(s: &str) -> Result<Self, String> {
        let name = s.strip_prefix('.').unwrap_or(s);
        if name.is_empty() {
            return Err("must be a domain such as example.com".into());
        }
        if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))) {
            return Err(format!("{s:?} has {c:?}; a cookie's domain is a host name such as example.com"));
        }
        if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
            return Err(format!("{s:?} is not a host name such as example.com"));
        }
        Ok(CookieDomain(name.to_ascii_lowercase()))
    }
}

text_or_number_value!(MaxAge, "a time such as 30d, 12h or 0");
text_or_number_value!(CookiePath, "a path such as /");
text_or_number_value!(CookieDomain, "a domain such as example.com");

impl<'de> Deserialize<'de> for Secure {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Secure;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("auto, true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Secure, E> {
                Ok(if v { Secure::Always } else { Secure::Never })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secure, E> {
                match v {
                    "auto" => Ok(Secure::Auto),
                    "true" => Ok(Secure::Always),
                    "false" => Ok(Secure::Never),
                    _ => Err(E::custom(format!("must be auto, true or false, got {v:?}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for SameSite {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SameSite;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("lax, strict or none")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SameSite, E> {
                match v.to_ascii_lowercase().as_str() {
                    "lax" => Ok(SameSite::Lax),
                    "strict" => Ok(SameSite::Strict),
                    "none" => Ok(SameSite::None),
                    _ => Err(E::custom(format!("must be lax, strict or none, got {v:?}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}
