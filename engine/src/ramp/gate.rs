//! A step's gate: its limits, judged on the step's window of responses.

use crate::config::ramp::Gate;
use crate::config::Target;
use crate::responses::ResponseCounts;

/// The gate limits, in the order of [`GateReport::failed`]'s bits.
pub const LIMITS: [&str; 4] = ["max_error_rate", "max_error_rate_vs_old", "max_p99", "max_p99_vs_old"];

/// The numbers a gate was judged on, and its verdict.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GateReport {
    /// `pass`, `fail`, or `waiting` (too few responses yet).
    pub verdict: &'static str,
    /// What failed, in words (empty unless the verdict is `fail`).
    pub reason: String,
    /// Which limits failed: bit i for `LIMITS[i]`.
    pub failed: u8,
    pub new_requests: u64,
    pub old_requests: u64,
    pub new_error_rate: f64,
    pub old_error_rate: f64,
    pub new_p99_ms: Option<f64>,
    pub old_p99_ms: Option<f64>,
}

/// One limit a gate failed: its name, the configured value and the measured
/// one (error rates as fractions, p99 in milliseconds, the p99 ratio as a ratio).
#[derive(Clone, Debug, PartialEq)]
pub struct FailedLimit {
    pub limit: &'static str,
    pub value: f64,
    pub measured: f64,
}

impl GateReport {
    /// The limits this report failed, with their values from `gate` and the
    /// measured ones from the report's numbers.
    pub fn failed_limits(&self, gate: &Gate) -> Vec<FailedLimit> {
        let measured = |i: usize| match i {
            0 => self.new_error_rate,
            1 => self.new_error_rate - self.old_error_rate,
            2 => self.new_p99_ms.unwrap_or(0.0),
            _ => match (self.new_p99_ms, self.old_p99_ms) {
                (Some(new), Some(old)) if old > 0.0 => new / old,
                _ => 0.0,
            },
        };
        let value = |i: usize| match i {
            0 => gate.max_error_rate,
            1 => gate.max_error_rate_vs_old,
            2 => gate.max_p99_ms.map(|ms| ms as f64),
            _ => gate.max_p99_vs_old,
        };
        (0..LIMITS.len())
            .filter(|&i| self.failed & (1 << i) != 0)
            .filter_map(|i| Some(FailedLimit { limit: LIMITS[i], value: value(i)?, measured: measured(i) }))
            .collect()
    }
}

/// A step's gate, on that step's window of responses.
pub fn judge(gate: &crate::config::ramp::Gate, window: &ResponseCounts) -> GateReport {
    let p99_ms = |t| window.quantile(t, 0.99).map(|s| s * 1000.0);
    let mut report = GateReport {
        verdict: "pass",
        reason: String::new(),
        failed: 0,
        new_requests: window.total(Target::New),
        old_requests: window.total(Target::Old),
        new_error_rate: window.error_rate(Target::New),
        old_error_rate: window.error_rate(Target::Old),
        new_p99_ms: p99_ms(Target::New),
        old_p99_ms: p99_ms(Target::Old),
    };
    if report.new_requests < gate.min_requests.max(1) && gate.min_requests > 0 {
        report.verdict = "waiting";
        return report;
    }
    let mut failed = Vec::new();
    if let Some(max) = gate.max_error_rate {
        if report.new_error_rate > max {
            report.failed |= 1;
            failed.push(format!("error rate {} above max_error_rate {}", percent(report.new_error_rate), percent(max)));
        }
    }
    if let Some(max) = gate.max_error_rate_vs_old {
        let excess = report.new_error_rate - report.old_error_rate;
        if excess > max {
            report.failed |= 1 << 1;
            failed.push(format!(
                "error rate {} vs old's {}: {} points above, more than max_error_rate_vs_old {}",
                percent(report.new_error_rate),
                percent(report.old_error_rate),
                percent(excess),
                percent(max)
            ));
        }
    }
    if let (Some(max), Some(p99)) = (gate.max_p99_ms, report.new_p99_ms) {
        if p99 > max as f64 {
            report.failed |= 1 << 2;
            failed.push(format!("p99 {p99:.1} ms above max_p99 {max} ms"));
        }
    }
    if let (Some(max), Some(new), Some(old)) = (gate.max_p99_vs_old, report.new_p99_ms, report.old_p99_ms) {
        if old > 0.0 && new / old > max {
            report.failed |= 1 << 3;
            failed.push(format!(
                "p99 {new:.1} ms vs old's {old:.1} ms: {:.2}x, more than max_p99_vs_old {max}",
                new / old
            ));
        }
    }
    if !failed.is_empty() {
        report.verdict = "fail";
        report.reason = failed.join("; ");
    }
    report
}

fn percent(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ramp::tests::counts;

    #[test]
    fn errors_compared_with_old_and_p99s() {
        let gate = Gate { max_error_rate_vs_old: Some(0.005), ..Gate::default() };
        let same = counts(90, 10, 90, 10);
        assert_eq!(judge(&gate, &same).verdict, "pass", "both sides failing alike");
        assert_eq!(judge(&gate, &counts(80, 20, 90, 10)).verdict, "fail");
        let mut slow = ResponseCounts::default();
        slow.buckets[1][8] = 100; // new: (1, 2.5] s
        slow.buckets[0][3] = 100; // old: (25, 50] ms
        let p99 = Gate { max_p99_ms: Some(800), ..Gate::default() };
        assert_eq!(judge(&p99, &slow).verdict, "fail");
        let ratio = Gate { max_p99_vs_old: Some(1.5), ..Gate::default() };
        let report = judge(&ratio, &slow);
        assert_eq!(report.verdict, "fail");
        assert!(report.reason.contains("more than max_p99_vs_old 1.5"), "{}", report.reason);
    }

    #[test]
    fn gates_at_their_edges() {
        // No min_requests: even an empty window is judged (and passes).
        assert_eq!(judge(&Gate::default(), &ResponseCounts::default()).verdict, "pass");
        // Exactly min_requests new responses: judged, not waiting.
        let gate = Gate { min_requests: 100, ..Gate::default() };
        assert_eq!(judge(&gate, &counts(99, 0, 0, 0)).verdict, "waiting");
        assert_eq!(judge(&gate, &counts(100, 0, 0, 0)).verdict, "pass");
        // An error rate equal to its maximum passes; above fails.
        let rate = Gate { max_error_rate: Some(0.25), ..Gate::default() };
        assert_eq!(judge(&rate, &counts(75, 25, 0, 0)).verdict, "pass");
        assert_eq!(judge(&rate, &counts(74, 26, 0, 0)).verdict, "fail");
        let vs_old = Gate { max_error_rate_vs_old: Some(0.25), ..Gate::default() };
        assert_eq!(judge(&vs_old, &counts(50, 50, 75, 25)).verdict, "pass", "exactly 25 points above old");
        // p99 against old's: 1.2x passes a 1.5 limit.
        let mut close = ResponseCounts::default();
        close.buckets[1][2] = 100; // new: (10, 25] ms
        close.buckets[0][2] = 50; // old: (10, 25] ms, and
        close.buckets[0][3] = 50; // (25, 50] ms
        let ratio = Gate { max_p99_vs_old: Some(1.5), ..Gate::default() };
        let report = judge(&ratio, &close);
        let (new, old) = (report.new_p99_ms.unwrap(), report.old_p99_ms.unwrap());
        assert!((new - 24.85).abs() < 1e-9 && (old - 49.5).abs() < 1e-9, "{new} {old}");
        assert_eq!(report.verdict, "pass", "new below old");
        // A ratio exactly at its limit passes (the limit set to the very ratio).
        let at_limit = Gate { max_p99_vs_old: Some(new / old), ..Gate::default() };
        assert_eq!(judge(&at_limit, &close).verdict, "pass");
        // A p99 exactly at max_p99 passes: 195 responses in (0, 5 ms] and 5 in
        // (5, 10 ms] put the 99th percentile at 8 ms exactly.
        let mut eight = ResponseCounts::default();
        eight.buckets[1][0] = 195;
        eight.buckets[1][1] = 5;
        assert_eq!(judge(&Gate::default(), &eight).new_p99_ms, Some(8.0));
        assert_eq!(judge(&Gate { max_p99_ms: Some(8), ..Gate::default() }, &eight).verdict, "pass");
        assert_eq!(judge(&Gate { max_p99_ms: Some(7), ..Gate::default() }, &eight).verdict, "fail");
    }

    #[test]
    fn each_failed_limit_has_its_own_bit_and_is_named_with_its_numbers() {
        // new: 20 % errors, p99 in (1, 2.5] s; old: 10 % errors, p99 in (25, 50] ms.
        let mut both = counts(80, 20, 90, 10);
        both.buckets[1][8] = 100;
        both.buckets[0][3] = 100;
        let cases = [
            (Gate { max_error_rate: Some(0.1), ..Gate::default() }, 0, 0.1),
            (Gate { max_error_rate_vs_old: Some(0.05), ..Gate::default() }, 1, 0.05),
            (Gate { max_p99_ms: Some(800), ..Gate::default() }, 2, 800.0),
            (Gate { max_p99_vs_old: Some(1.5), ..Gate::default() }, 3, 1.5),
        ];
        for (gate, bit, value) in cases {
            let report = judge(&gate, &both);
            assert_eq!((report.verdict, report.failed), ("fail", 1 << bit), "{}", LIMITS[bit]);
            let limits = report.failed_limits(&gate);
            assert_eq!(limits.len(), 1, "{}", LIMITS[bit]);
            assert_eq!((limits[0].limit, limits[0].value), (LIMITS[bit], value));
            let (new_p99, old_p99) = (report.new_p99_ms.unwrap(), report.old_p99_ms.unwrap());
            let measured = [0.2, 0.1, new_p99, new_p99 / old_p99][bit];
            assert!((limits[0].measured - measured).abs() < 1e-9, "{}: {}", LIMITS[bit], limits[0].measured);
        }
        let report = judge(&Gate { max_error_rate_vs_old: Some(0.05), ..Gate::default() }, &both);
        let vs_old = report.failed_limits(&Gate { max_error_rate_vs_old: Some(0.05), ..Gate::default() });
        assert!((vs_old[0].measured - 0.1).abs() < 1e-9, "20 % against 10 %: {}", vs_old[0].measured);
    }

    #[test]
    fn a_p99_ratio_over_an_old_p99_of_zero_is_measured_as_zero() {
        // The ramp timer lists the failed limits of the report it remembered,
        // whose p99s were kept in whole microseconds: an old p99 read back as
        // 0 gives a measured ratio of 0 in the log line, never infinity.
        let gate = Gate { max_p99_vs_old: Some(1.5), ..Gate::default() };
        let report = GateReport {
            verdict: "fail",
            reason: String::new(),
            failed: 1 << 3,
            new_requests: 100,
            old_requests: 100,
            new_error_rate: 0.0,
            old_error_rate: 0.0,
            new_p99_ms: Some(10.0),
            old_p99_ms: Some(0.0),
        };
        let limits = report.failed_limits(&gate);
        assert_eq!(limits.len(), 1);
        assert_eq!((limits[0].limit, limits[0].value, limits[0].measured), (LIMITS[3], 1.5, 0.0));
    }
}
