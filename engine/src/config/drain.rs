//! `migration.drain` (docs/yaml.md, docs/drain.md): long-lived requests — an
//! upgraded connection (WebSocket), or a response still streaming after `after` —
//! follow the split: when what decides their side changes, the misplaced ones
//! are closed, at most `rate` a second per nginx instance, so that their clients
//! reconnect to the right side.

use serde::Deserialize;

use super::values::{duration_ms, text_or_number_value};
use super::{validated_mapping, Validate};

/// `migration.drain`, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drain {
    /// Microseconds between two closes, in one nginx instance (`rate`).
    pub interval_us: u64,
    /// `rate` as written: so many per second, or per minute.
    pub rate: (u32, RateUnit),
    /// A response still streaming this long after the decision is long-lived.
    pub after_ms: u64,
}

/// The unit of `drain.rate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateUnit {
    PerSecond,
    PerMinute,
}

impl Drain {
    /// `rate` as the YAML writes it (`20/s`, `30/m`).
    pub fn rate_text(&self) -> String {
        let (n, unit) = self.rate;
        format!("{n}/{}", if unit == RateUnit::PerSecond { "s" } else { "m" })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrain {
    rate: Option<Rate>,
    after: Option<After>,
}

impl Validate for Drain {
    type Raw = RawDrain;
    fn validate(r: RawDrain) -> Result<Self, String> {
        let Some(rate) = r.rate else {
            // Closing is the point of `drain`: how fast is the operator's call,
            // never a default that might close thousands of sockets at once.
            return Err("missing field `rate` (how many misplaced connections to close per second, e.g. 20/s)".into());
        };
        Ok(Drain { interval_us: rate.0, rate: (rate.1, rate.2), after_ms: r.after.map_or(5_000, |a| a.0) })
    }
}
validated_mapping!(Drain);

/// `drain.rate`: `N/s` or `N/m`, from 1/m to 10000/s; kept as the time between
/// two closes.
struct Rate(u64, u32, RateUnit);

impl Rate {
    fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("must be a rate such as 20/s or 30/m, got {s:?}");
        let (number, unit) = s.split_once('/').ok_or_else(bad)?;
        let n: u64 = number.trim().parse().map_err(|_| bad())?;
        let (per_us, unit): (u64, _) = match unit.trim() {
            "s" => (1_000_000, RateUnit::PerSecond),
            "m" => (60_000_000, RateUnit::PerMinute),
            _ => return Err(bad()),
        };
        if n == 0 || (per_us == 1_000_000 && n > 10_000) || (per_us == 60_000_000 && n > 600_000) {
            return Err(format!("must be from 1/m to 10000/s, got {s:?}"));
        }
        Ok(Rate(per_us / n, n as u32, unit))
    }
}

/// `drain.after`: a time ([`duration_ms`]) from 100ms to 24h.
struct After(u64);

impl After {
    fn parse(s: &str) -> Result<Self, String> {
        let ms = duration_ms(s).ok_or_else(|| format!("must be a time such as 5s, 500ms or 1m, got {s:?}"))?;
        match ms {
            100..=86_400_000 => Ok(After(ms as u64)),
            _ => Err(format!("must be from 100ms to 24h, got {s:?}")),
        }
    }
}

text_or_number_value!(Rate, "a rate such as 20/s");
text_or_number_value!(After, "a time such as 5s");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_per_second_and_minute() {
        assert_eq!(Rate::parse("20/s").unwrap().0, 50_000);
        assert_eq!(Rate::parse("1/s").unwrap().0, 1_000_000);
        assert_eq!(Rate::parse("30/m").unwrap().0, 2_000_000);
        assert_eq!(Rate::parse("10000/s").unwrap().0, 100);
        for bad in ["0/s", "20", "20/h", "x/s", "10001/s", "-1/s", "/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn after_from_100ms_to_a_day() {
        assert_eq!(After::parse("5s").unwrap().0, 5_000);
        assert_eq!(After::parse("100ms").unwrap().0, 100);
        assert_eq!(After::parse("24h").unwrap().0, 86_400_000);
        for bad in ["50ms", "25h", "soon", "0"] {
            assert!(After::parse(bad).is_err(), "{bad}");
        }
    }
}
