//! Times, nginx-style: `500ms`, `30s`, `10m`, `2h`, `1d`. One parser reads every
//! duration field (`migration.ramp.every`, `migration.ramp.gate.max_p99`,
//! `fallback.cooldown`), so that a unit valid in one is valid in all; what a field
//! allows beyond that (its range) is checked at the field.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A time in milliseconds: digits and a unit, `ms`, `s`, `m`, `h` or `d` (none
/// is seconds); None when `s` is not one. No time overflows: the result is wide
/// enough for any number of days, and each field checks its own range.
pub(crate) fn duration_ms(s: &str) -> Option<u128> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let n: u64 = number.parse().ok()?;
    let unit_ms: u128 = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(u128::from(n) * unit_ms)
}

/// `fallback.cooldown`: a time ([`duration_ms`]), from 100ms to 24h, kept in
/// milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cooldown(pub u64);

impl Cooldown {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ms = duration_ms(s).ok_or_else(|| format!("must be a time such as 30s, 500ms or 2m, got {s:?}"))?;
        match ms {
            100..=86_400_000 => Ok(Cooldown(ms as u64)),
            _ => Err(format!("must be from 100ms to 24h, got {s:?}")),
        }
    }
}

impl<'de> Deserialize<'de> for Cooldown {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cooldown;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a time such as 30s, 500ms or 2m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Cooldown, E> {
                Cooldown::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cooldown, E> {
                Cooldown::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cooldown, E> {
                Err(E::custom(format!("must be from 100ms to 24h, got {v}")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ramp::Duration;

    #[test]
    fn times_in_every_unit() {
        for (text, ms) in [
            ("250ms", 250),
            ("30", 30_000),
            ("30s", 30_000),
            ("10m", 600_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("0", 0),
            ("007s", 7_000),
        ] {
            assert_eq!(duration_ms(text), Some(ms), "{text}");
        }
        assert_eq!(duration_ms(&format!("{}d", u64::MAX)), Some(u128::from(u64::MAX) * 86_400_000), "no overflow");
        for text in [
            "",
            "s",
            "soon",
            "1.5s",
            "10 m",
            " 1s",
            "1s ",
            "1w",
            "1D",
            "1Ms",
            "-1s",
            "+1s",
            "1ms2",
            "18446744073709551616",
        ] {
            assert_eq!(duration_ms(text), None, "{text}");
        }
    }

    /// `d` is a unit of every duration field, `fallback.cooldown` included (it
    /// was refused there before the fields shared one parser); the cooldown keeps
    /// its own range.
    #[test]
    fn a_cooldown_may_be_written_in_days() {
        assert_eq!(Cooldown::parse("1d"), Ok(Cooldown(86_400_000)));
        assert_eq!(Cooldown::parse("2d"), Err("must be from 100ms to 24h, got \"2d\"".to_owned()));
        assert_eq!(Cooldown::parse("1h"), Ok(Cooldown(3_600_000)));
    }

    /// Both duration types accept what the parser reads (within their range) and
    /// refuse what it does not, each naming the units it takes.
    #[test]
    fn both_duration_types_read_the_same_times() {
        for text in ["100ms", "250ms", "30", "45s", "2m", "1h", "1d"] {
            let ms = duration_ms(text).unwrap() as u64;
            assert_eq!(Cooldown::parse(text), Ok(Cooldown(ms)), "{text}");
            assert_eq!(Duration::parse(text), Ok(Duration(ms)), "{text}");
        }
        for text in ["soon", "1.5s", "1w", "1D", "-1s", "10 m", ""] {
            assert_eq!(Cooldown::parse(text), Err(format!("must be a time such as 30s, 500ms or 2m, got {text:?}")));
            assert_eq!(
                Duration::parse(text),
                Err(format!("must be a time such as 500ms, 30s, 10m, 2h or 1d, got {text:?}"))
            );
        }
    }
}
