//! `migration.ramp` (docs/ramp.md): the steps, how
//! long each lasts, an optional wall-clock start, and the gate each step must
//! pass before the next one. Every value validates itself while it is read, so
//! a bad one is reported at its own line, column and field path.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::values::{duration_ms, Percentage};
use super::{field_error, Validate};

/// A validated ramp.
#[derive(Clone, Debug, PartialEq)]
pub struct Ramp {
    /// Percentages in basis points, strictly increasing, each 1..=10000.
    pub steps: Vec<u32>,
    /// Time spent on each step, in milliseconds.
    pub every_ms: u64,
    /// Step i begins at `start + i × every` (Unix milliseconds), on every replica.
    pub start_ms: Option<i64>,
    pub gate: Option<Gate>,
    pub on_failure: OnFailure,
}

/// What each step must show before the next one begins.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Gate {
    /// Responses of the new side needed before judging.
    pub min_requests: u64,
    /// New's share of 5xx and failed responses, 0..1.
    pub max_error_rate: Option<f64>,
    /// New's error rate minus old's, in points (0.005 is half a point).
    pub max_error_rate_vs_old: Option<f64>,
    /// New's p99 upstream response time, in milliseconds.
    pub max_p99_ms: Option<u64>,
    /// New's p99 over old's.
    pub max_p99_vs_old: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Percentage 0 until the file changes.
    #[default]
    Rollback,
    /// Stay on the failed step until the file changes.
    Hold,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Rollback => "rollback",
            OnFailure::Hold => "hold",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRamp {
    steps: Vec<Percentage>,
    every: Duration,
    start: Option<Timestamp>,
    gate: Option<RawGate>,
    #[serde(default)]
    on_failure: OnFailureValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGate {
    min_requests: Option<u64>,
    max_error_rate: Option<Rate>,
    max_error_rate_vs_old: Option<Rate>,
    max_p99: Option<Duration>,
    max_p99_vs_old: Option<Ratio>,
}

impl Validate for Ramp {
    type Raw = RawRamp;
    fn validate(r: RawRamp) -> Result<Self, String> {
        if r.steps.is_empty() {
            return Err(field_error("steps", "must list at least one percentage"));
        }
        for (i, step) in r.steps.iter().enumerate() {
            if step.0 == 0 {
                return Err(field_error(&format!("steps[{i}]"), "a step must be from 0.01 to 100"));
            }
            if i > 0 && step.0 <= r.steps[i - 1].0 {
                return Err(field_error(
                    &format!("steps[{i}]"),
                    format!(
                        "steps must increase strictly: {} comes after {}",
                        super::values::PercentageText(step.0),
                        super::values::PercentageText(r.steps[i - 1].0)
                    ),
                ));
            }
        }
        if !(100..=30 * 86_400_000).contains(&r.every.0) {
            return Err(field_error("every", "must be from 100ms to 30d"));
        }
        let gate = r.gate.map(|g| Gate {
            min_requests: g.min_requests.unwrap_or(0),
            max_error_rate: g.max_error_rate.map(|r| r.0),
            max_error_rate_vs_old: g.max_error_rate_vs_old.map(|r| r.0),
            max_p99_ms: g.max_p99.map(|d| d.0),
            max_p99_vs_old: g.max_p99_vs_old.map(|r| r.0),
        });
        Ok(Ramp {
            steps: r.steps.into_iter().map(|p| p.0).collect(),
            every_ms: r.every.0,
            start_ms: r.start.map(|t| t.0),
            gate,
            on_failure: r.on_failure.0,
        })
    }
}
super::validated_mapping!(Ramp);

/// A time: `500ms`, `30s`, `10m`, `2h`, `1d` (a bare number is seconds; see
/// [`duration_ms`]), kept in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Duration(pub u64);

impl Duration {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ms = duration_ms(s).and_then(|ms| u64::try_from(ms).ok());
        ms.map(Duration).ok_or_else(|| format!("must be a time such as 500ms, 30s, 10m, 2h or 1d, got {s:?}"))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a time such as 500ms, 30s, 10m, 2h or 1d")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Duration::parse(&v.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A share: `1%` or `0.01`, from 0 to 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate(pub f64);

impl Rate {
    fn check(v: f64, written: &str) -> Result<Rate, String> {
        if !(0.0..=1.0).contains(&v) || v.is_nan() {
            return Err(format!("must be a share from 0 to 1 (or 0% to 100%), got {written}"));
        }
        Ok(Rate(v))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Rate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a share such as 1% or 0.01")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Rate, E> {
                let number = v
                    .strip_suffix('%')
                    .ok_or_else(|| E::custom(format!("must be a share such as 1% or 0.01, got {v:?}")))?;
                let n: f64 = number
                    .trim()
                    .parse()
                    .map_err(|_| E::custom(format!("must be a share such as 1% or 0.01, got {v:?}")))?;
                Rate::check(n / 100.0, v).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Rate, E> {
                Rate::check(v, &v.to_string()).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Rate, E> {
                Rate::check(v as f64, &v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Rate, E> {
                Rate::check(v as f64, &v.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A ratio above 0 (`1.5`: half as much again).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratio(pub f64);

impl<'de> Deserialize<'de> for Ratio {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ratio;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a ratio such as 1.5")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ratio, E> {
                if v > 0.0 && v.is_finite() {
                    Ok(Ratio(v))
                } else {
                    Err(E::custom(format!("must be a ratio above 0, got {v}")))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ratio, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ratio, E> {
                self.visit_f64(v as f64)
            }
        }
        d.deserialize_any(V)
    }
}

/// An RFC 3339 time, `2026-11-30T09:00:00Z` (or with an offset), kept as Unix
/// milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("must be a time such as 2026-11-30T09:00:00Z, got {s:?}");
        let b = s.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't')
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(bad());
        }
        let num = |from: usize, to: usize| -> Result<i64, String> {
            s.get(from..to)
                .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|t| t.parse().ok())
                .ok_or_else(bad)
        };
        let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
        let mut rest = &s[19..];
        let mut millis = 0;
        if let Some(fraction) = rest.strip_prefix('.') {
            let digits = fraction.find(|c: char| !c.is_ascii_digit()).unwrap_or(fraction.len());
            if digits == 0 {
                return Err(bad());
            }
            let first3 = &fraction[..digits.min(3)];
            millis = first3.parse::<i64>().map_err(|_| bad())? * 10i64.pow(3 - first3.len() as u32);
            rest = &fraction[digits..];
        }
        let offset_minutes = match rest {
            "Z" | "z" => 0,
            _ => utc_offset_minutes(rest).ok_or_else(|| {
                format!(
                    "must be a time such as 2026-11-30T09:00:00Z, got {s:?}: its UTC offset {rest:?} must be Z, \
                     +HH:MM or -HH:MM (hours 00 to 23, minutes 00 to 59)"
                )
            })?,
        };
        let days_in_month = [31, if is_leap(year) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month[(month - 1) as usize]
            || hour > 23
            || minute > 59
            || second > 60
        {
            return Err(bad());
        }
        let days = days_from_civil(year, month, day);
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
        Ok(Timestamp(seconds * 1000 + millis))
    }
}

/// RFC 3339's `time-numoffset`, `+HH:MM` or `-HH:MM`, in minutes east of UTC.
/// Each part is exactly two digits: `str::parse` alone would also take a sign
/// (`+-1:00`) and out-of-range values (`+99:99`).
fn utc_offset_minutes(text: &str) -> Option<i64> {
    let &[sign, h1, h2, b':', m1, m2] = text.as_bytes() else { return None };
    let sign = match sign {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let two_digits = |tens: u8, units: u8| {
        (tens.is_ascii_digit() && units.is_ascii_digit()).then(|| i64::from(tens - b'0') * 10 + i64::from(units - b'0'))
    };
    let (hours, minutes) = (two_digits(h1, h2)?, two_digits(m1, m2)?);
    (hours <= 23 && minutes <= 59).then_some(sign * (hours * 60 + minutes))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a time such as 2026-11-30T09:00:00Z")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// `on_failure`.
#[derive(Default)]
struct OnFailureValue(OnFailure);

impl<'de> Deserialize<'de> for OnFailureValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OnFailureValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("rollback or hold")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OnFailureValue, E> {
                match v {
                    "rollback" => Ok(OnFailureValue(OnFailure::Rollback)),
                    "hold" => Ok(OnFailureValue(OnFailure::Hold)),
                    _ => Err(E::custom(format!("must be rollback or hold, got {v:?}"))),
                }
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_read_as_rfc3339() {
        assert_eq!(Timestamp::parse("1970-01-01T00:00:00Z").unwrap().0, 0);
        assert_eq!(Timestamp::parse("2026-11-30T09:00:00Z").unwrap().0, 1_796_029_200_000);
        assert_eq!(Timestamp::parse("2026-11-30T10:00:00+01:00").unwrap().0, 1_796_029_200_000);
        assert_eq!(Timestamp::parse("2026-11-30T09:00:00.25Z").unwrap().0, 1_796_029_200_250);
        assert_eq!(Timestamp::parse("2000-02-29T00:00:00Z").unwrap().0, 951_782_400_000);
        for bad in [
            "2026-11-30",
            "2026-11-30 09:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-30T09:00:00",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
    }

    /// Unix milliseconds computed by Python's datetime, not by this code.
    #[test]
    fn timestamps_against_fixed_vectors() {
        for (text, ms) in [
            ("1969-12-31T23:59:59Z", -1000),
            ("1900-03-01T00:00:00Z", -2_203_891_200_000),
            ("1900-02-28T12:34:56Z", -2_203_932_304_000),
            ("2000-02-29T23:59:59.999Z", 951_868_799_999),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
            ("2100-03-01T00:00:00Z", 4_107_542_400_000),
            ("2026-11-30T09:00:00-08:00", 1_796_058_000_000),
            ("2026-11-30T09:00:00+05:30", 1_796_009_400_000),
            ("2026-12-31t23:59:59.5z", 1_798_761_599_500),
            ("0001-01-01T00:00:00Z", -62_135_596_800_000),
            ("9999-12-31T23:59:59Z", 253_402_300_799_000),
            ("2026-01-01T00:00:00.123456Z", 1_767_225_600_123),
            ("2026-06-30T12:00:00.1+00:00", 1_782_820_800_100),
            ("1600-02-29T00:00:00Z", -11_670_998_400_000),
            ("2026-04-30T00:00:00Z", 1_777_507_200_000),
            // Year 0 (a leap year, proleptic Gregorian): 366 days before 0001-01-01;
            // its January falls in the era before (the y - 399 branch).
            ("0000-01-01T00:00:00Z", -62_167_219_200_000),
            ("0000-03-01T00:00:00Z", -62_162_035_200_000),
            // A leap second is the next day's first second.
            ("2016-12-31T23:59:60Z", 1_483_228_800_000),
        ] {
            assert_eq!(Timestamp::parse(text), Ok(Timestamp(ms)), "{text}");
        }
        for bad in [
            "1900-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-00T00:00:00Z",
            "2026-00-10T00:00:00Z",
            "2026-11-30T24:00:00Z",
            "2026-11-30T23:60:00Z",
            "2026-11-30T23:59:61Z",
            "2026/11-30T09:00:00Z",
            "2026-11/30T09:00:00Z",
            "2026-11-30X09:00:00Z",
            "2026-11-30T09-00:00Z",
            "2026-11-30T09:00-00Z",
            "2026-11-30T09:00:00+0530",
            "2026-11-30T09:00:00+05-30",
            "2026-11-30T09:00:00*05:30",
            "2026-11-30T09:00:00+ab:cd",
            "2026-11-30T09:00:00.Z",
            "2026-11-30T09:00:00.5",
            "2026-1a-30T09:00:00Z",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
    }

    /// RFC 3339's offset is `+HH:MM` or `-HH:MM`, two digits each, hours to 23
    /// and minutes to 59; integer parsing alone took a second sign and any value.
    #[test]
    fn utc_offsets_must_be_two_digit_hours_and_minutes_in_range() {
        assert_eq!(
            Timestamp::parse("2026-11-30T09:00:00+23:59").unwrap().0,
            1_796_029_200_000 - (23 * 60 + 59) * 60_000
        );
        assert_eq!(Timestamp::parse("2026-11-30T09:00:00-00:00").unwrap().0, 1_796_029_200_000);
        for bad in [
            "2026-11-30T09:00:00+99:99",
            "2026-11-30T09:00:00+24:00",
            "2026-11-30T09:00:00+05:60",
            "2026-11-30T09:00:00+-1:00",
            "2026-11-30T09:00:00-+1:00",
            "2026-11-30T09:00:00++1:00",
            "2026-11-30T09:00:00+01:-1",
            "2026-11-30T09:00:00+01:+1",
            "2026-11-30T09:00:00+ 1:00",
            "2026-11-30T09:00:00+1:000",
            "2026-11-30T09:00:00 01:00",
        ] {
            let message = Timestamp::parse(bad).unwrap_err();
            let offset = &bad[19..];
            assert!(
                message.ends_with(&format!(
                    "its UTC offset {offset:?} must be Z, +HH:MM or -HH:MM (hours 00 to 23, minutes 00 to 59)"
                )),
                "{bad}: {message}"
            );
        }
    }

    #[test]
    fn on_failure_names() {
        assert_eq!((OnFailure::Rollback.as_str(), OnFailure::Hold.as_str()), ("rollback", "hold"));
    }

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("30").unwrap().0, 30_000, "seconds without a unit");
        assert_eq!(Duration::parse("30s").unwrap().0, 30_000);
        assert_eq!(Duration::parse("10m").unwrap().0, 600_000);
        assert_eq!(Duration::parse("1d").unwrap().0, 86_400_000);
        assert_eq!(Duration::parse("250ms").unwrap().0, 250);
        assert!(Duration::parse("10 m").is_err());
    }
}
