//! How both formats write a percentage and a timestamp.

/// A percentage in basis points, printed as a number with no needless zeros:
/// 2000 → `20`, 2050 → `20.5`, 3333 → `33.33`.
pub(super) struct Percentage(pub(super) u32);

impl std::fmt::Display for Percentage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "{whole}"),
            f2 if f2 % 10 == 0 => write!(f, "{whole}.{}", f2 / 10),
            f2 => write!(f, "{whole}.{f2:02}"),
        }
    }
}

/// Unix seconds as an RFC 3339 UTC timestamp (`2026-11-26T01:30:00Z`).
pub fn rfc3339(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_print_without_needless_zeros() {
        let p = |bp| Percentage(bp).to_string();
        assert_eq!([p(0), p(2000), p(2050), p(3333), p(5), p(10000)], ["0", "20", "20.5", "33.33", "0.05", "100"]);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_656_600), "2026-11-26T01:30:00Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        // The century rules (values from Python's datetime): 2100, 2200 and 2300
        // are not leap years, 2400 is; the era's last day is Feb 29 of 2400.
        assert_eq!(rfc3339(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(rfc3339(7_263_216_000), "2200-03-01T00:00:00Z");
        assert_eq!(rfc3339(10_418_846_400), "2300-02-28T12:00:00Z");
        assert_eq!(rfc3339(13_569_465_599), "2399-12-31T23:59:59Z");
        assert_eq!(rfc3339(13_574_563_200), "2400-02-29T00:00:00Z");
        assert_eq!(rfc3339(13_574_649_600), "2400-03-01T00:00:00Z");
    }
}
