//! The ramp's position (SPEC "Ramp: a percentage that moves itself"): which step
//! a service is on, since when, and what the decision uses as its percentage, as
//! a state machine over atomics (the nginx layer keeps the cells in its shared
//! zone, so every worker and every reload agrees; tests keep them on the heap).
//! Time is an argument (Unix milliseconds), so it is tested without clocks.
//!
//! ```text
//!   scheduled ──start──▶ ramping ──last step begins──▶ done
//!                           │ a step's gate fails
//!                           ├──on_failure: hold──────▶ held         (that step's percentage)
//!                           └──on_failure: rollback──▶ rolled_back  (0 %)
//! ```
//!
//! Every worker calls [`RampCells::tick`]; a transition is a compare-and-swap
//! of the position word, so one worker makes it (and logs it). A publication
//! ([`RampCells::publish`]) keeps the position when the service's ramp and
//! percentage are unchanged, and starts again at the first step when they
//! changed; a held or rolled-back ramp stays so until the file changes.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::ramp::{OnFailure, Ramp};
use crate::config::Target;
use crate::hash::Threshold;
use crate::responses::{ResponseCells, ResponseCounts};

/// Where a ramp stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RampState {
    /// Before `start`: 0 %.
    Scheduled,
    Ramping,
    /// The last step is in force.
    Done,
    /// A gate failed with `on_failure: hold`: the step's percentage stays.
    Held,
    /// A gate failed with `on_failure: rollback`: 0 % until the file changes.
    RolledBack,
}

impl RampState {
    pub const ALL: [RampState; 5] =
        [RampState::Scheduled, RampState::Ramping, RampState::Done, RampState::Held, RampState::RolledBack];

    pub fn as_str(self) -> &'static str {
        match self {
            RampState::Scheduled => "scheduled",
            RampState::Ramping => "ramping",
            RampState::Done => "done",
            RampState::Held => "held",
            RampState::RolledBack => "rolled_back",
        }
    }

    fn code(self) -> u64 {
        self as u64 + 1
    }

    fn from_code(code: u64) -> Option<RampState> {
        RampState::ALL.get((code as usize).checked_sub(1)?).copied()
    }
}

/// The numbers a gate was judged on, and its verdict.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GateReport {
    /// `pass`, `fail`, or `waiting` (too few responses yet).
    pub verdict: &'static str,
    /// What failed, in words (empty unless the verdict is `fail`).
    pub reason: String,
    pub new_requests: u64,
    pub old_requests: u64,
    pub new_error_rate: f64,
    pub old_error_rate: f64,
    pub new_p99_ms: Option<f64>,
    pub old_p99_ms: Option<f64>,
}

/// A transition, for its one log line.
#[derive(Clone, Debug, PartialEq)]
pub enum RampEvent {
    /// A step began (the first at `start`, or after the previous one's gate).
    Advanced { step: usize, percentage_bp: u32, done: bool },
    /// A gate failed; the ramp holds or rolls back.
    Failed { step: usize, action: OnFailure, gate: GateReport },
}

/// A ramp's cells. All zeros: no ramp.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RampCells {
    /// What ramp (and percentage) the position belongs to; 0: none.
    fingerprint: AtomicU64,
    /// `restarts << 40 | step << 8 | state code`: moved by compare-and-swap.
    position: AtomicU64,
    /// When the current step began (Unix ms).
    step_started_ms: AtomicU64,
    /// The percentage the decision uses, in basis points, plus one; 0: the
    /// configured percentage.
    in_force: AtomicU64,
    /// The content hash of the file under which the ramp held or rolled back.
    stopped_under: AtomicU64,
    /// The responses counted when the current step began: its gate reads the
    /// difference.
    window: ResponseCells,
    /// The last gate's numbers, for the status.
    gate_verdict: AtomicU64,
    gate_numbers: [AtomicU64; 6],
}

/// The position word's parts.
fn pack(restarts: u64, step: usize, state: RampState) -> u64 {
    (restarts & 0xff_ffff) << 40 | (step as u64 & 0xffff_ffff) << 8 | state.code()
}

fn unpack(word: u64) -> (u64, usize, Option<RampState>) {
    (word >> 40, ((word >> 8) & 0xffff_ffff) as usize, RampState::from_code(word & 0xff))
}

const VERDICTS: [&str; 4] = ["", "pass", "fail", "waiting"];

impl RampCells {
    /// The percentage in force (basis points), when a ramp decides it.
    #[inline]
    pub fn percentage_in_force(&self) -> Option<u32> {
        match self.in_force.load(Ordering::Acquire) {
            0 => None,
            n => Some((n - 1) as u32),
        }
    }

    pub fn state(&self) -> Option<RampState> {
        unpack(self.position.load(Ordering::Acquire)).2
    }

    pub fn step(&self) -> usize {
        unpack(self.position.load(Ordering::Acquire)).1
    }

    pub fn step_started_ms(&self) -> u64 {
        self.step_started_ms.load(Ordering::Acquire)
    }

    /// A configuration was published: `ramp` is the service's (None: it has
    /// none), `fingerprint` identifies it with the service's percentage
    /// ([`fingerprint`]), `content_hash` the file's. Called under the zone's lock.
    pub fn publish(
        &self,
        ramp: Option<&Ramp>,
        fingerprint: u64,
        content_hash: u64,
        now_ms: u64,
        counts: &ResponseCounts,
    ) {
        let Some(ramp) = ramp else {
            self.fingerprint.store(0, Ordering::Release);
            self.in_force.store(0, Ordering::Release);
            self.position.store(0, Ordering::Release);
            return;
        };
        let (restarts, _, state) = unpack(self.position.load(Ordering::Acquire));
        let stopped = matches!(state, Some(RampState::Held | RampState::RolledBack));
        let same = self.fingerprint.load(Ordering::Acquire) == fingerprint && state.is_some();
        if same && !(stopped && self.stopped_under.load(Ordering::Acquire) != content_hash) {
            return;
        }
        self.fingerprint.store(fingerprint, Ordering::Release);
        self.window.store(counts);
        self.gate_verdict.store(0, Ordering::Release);
        let (state, started, in_force) = match ramp.start_ms {
            Some(start) if (now_ms as i64) < start => (RampState::Scheduled, start.max(0) as u64, 0),
            Some(start) => {
                // On the wall clock: the step every replica is on now.
                let step = ((now_ms as i64 - start) as u64 / ramp.every_ms).min(ramp.steps.len() as u64 - 1) as usize;
                let state = if step + 1 == ramp.steps.len() { RampState::Done } else { RampState::Ramping };
                self.store_in_force(ramp.steps[step]);
                self.position.store(pack(restarts + 1, step, state), Ordering::Release);
                self.step_started_ms.store(start as u64 + step as u64 * ramp.every_ms, Ordering::Release);
                return;
            }
            None => {
                let state = if ramp.steps.len() == 1 { RampState::Done } else { RampState::Ramping };
                (state, now_ms, ramp.steps[0])
            }
        };
        self.step_started_ms.store(started, Ordering::Release);
        self.store_in_force(in_force);
        self.position.store(pack(restarts + 1, 0, state), Ordering::Release);
    }

    fn store_in_force(&self, bp: u32) {
        self.in_force.store(u64::from(bp) + 1, Ordering::Release);
    }

    /// Moves the ramp on if its clock says so; every worker calls it now and
    /// then, one of them makes each transition and gets its event. `enabled:
    /// false` freezes the ramp. `counts` are the service's responses now.
    pub fn tick(
        &self,
        ramp: &Ramp,
        enabled: bool,
        now_ms: u64,
        counts: &ResponseCounts,
        content_hash: u64,
    ) -> Option<RampEvent> {
        let word = self.position.load(Ordering::Acquire);
        let (restarts, step, state) = unpack(word);
        if !enabled || !matches!(state, Some(RampState::Scheduled | RampState::Ramping)) {
            return None;
        }
        let last = ramp.steps.len() - 1;
        let started = self.step_started_ms.load(Ordering::Acquire);
        // The step that should be in force now, by the clock alone.
        let due = match ramp.start_ms {
            Some(start) if (now_ms as i64) < start => return None,
            Some(start) => (((now_ms as i64 - start) as u64 / ramp.every_ms) as usize).min(last),
            None if state == Some(RampState::Scheduled) => 0,
            None if now_ms >= started.saturating_add(ramp.every_ms) => (step + 1).min(last),
            None => step,
        };
        if state == Some(RampState::Scheduled) {
            // The wall-clock start has come: its step begins, with no gate to judge.
            return self.advance(
                word,
                restarts,
                due,
                ramp,
                counts,
                ramp.start_ms.map_or(now_ms, |s| s as u64 + due as u64 * ramp.every_ms),
            );
        }
        if due <= step {
            return None;
        }
        // The current step is over: its gate decides.
        if let Some(gate) = &ramp.gate {
            let window = counts.since(&self.window.snapshot());
            let report = judge(gate, &window);
            if report.verdict == "waiting" {
                self.remember(&report);
                if ramp.start_ms.is_none() {
                    // Without a start, low traffic waits instead of failing.
                    return None;
                }
                // On the wall clock, a step whose gate could not be judged still begins on time.
            } else if report.verdict == "fail" {
                let (state, in_force) = match ramp.on_failure {
                    OnFailure::Hold => (RampState::Held, ramp.steps[step]),
                    OnFailure::Rollback => (RampState::RolledBack, 0),
                };
                if self
                    .position
                    .compare_exchange(word, pack(restarts, step, state), Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    return None;
                }
                self.stopped_under.store(content_hash, Ordering::Release);
                self.store_in_force(in_force);
                self.remember(&report);
                return Some(RampEvent::Failed { step, action: ramp.on_failure, gate: report });
            } else {
                self.remember(&report);
            }
        }
        let begins = match ramp.start_ms {
            Some(start) => start as u64 + due as u64 * ramp.every_ms,
            None => now_ms,
        };
        self.advance(word, restarts, due, ramp, counts, begins)
    }

    fn advance(
        &self,
        word: u64,
        restarts: u64,
        step: usize,
        ramp: &Ramp,
        counts: &ResponseCounts,
        begins: u64,
    ) -> Option<RampEvent> {
        let done = step + 1 == ramp.steps.len();
        let state = if done { RampState::Done } else { RampState::Ramping };
        self.position.compare_exchange(word, pack(restarts, step, state), Ordering::AcqRel, Ordering::Acquire).ok()?;
        self.window.store(counts);
        self.step_started_ms.store(begins, Ordering::Release);
        self.store_in_force(ramp.steps[step]);
        Some(RampEvent::Advanced { step, percentage_bp: ramp.steps[step], done })
    }

    fn remember(&self, report: &GateReport) {
        let verdict = VERDICTS.iter().position(|&v| v == report.verdict).unwrap_or(0) as u64;
        let ms = |v: Option<f64>| v.map_or(u64::MAX, |ms| (ms * 1000.0) as u64);
        let numbers = [
            report.new_requests,
            report.old_requests,
            (report.new_error_rate * 1e9) as u64,
            (report.old_error_rate * 1e9) as u64,
            ms(report.new_p99_ms),
            ms(report.old_p99_ms),
        ];
        for (cell, n) in self.gate_numbers.iter().zip(numbers) {
            cell.store(n, Ordering::Relaxed);
        }
        self.gate_verdict.store(verdict, Ordering::Release);
    }

    /// The last gate judged (None before the first).
    pub fn last_gate(&self) -> Option<GateReport> {
        let verdict =
            VERDICTS.get(self.gate_verdict.load(Ordering::Acquire) as usize).copied().filter(|v| !v.is_empty())?;
        let n: Vec<u64> = self.gate_numbers.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let ms = |v: u64| (v != u64::MAX).then(|| v as f64 / 1000.0);
        Some(GateReport {
            verdict,
            reason: String::new(),
            new_requests: n[0],
            old_requests: n[1],
            new_error_rate: n[2] as f64 / 1e9,
            old_error_rate: n[3] as f64 / 1e9,
            new_p99_ms: ms(n[4]),
            old_p99_ms: ms(n[5]),
        })
    }
}

/// What identifies a service's ramp and percentage: a publication that keeps it
/// keeps the ramp's position.
pub fn fingerprint(ramp: &Ramp, percentage_bp: u32) -> u64 {
    crate::config::fnv1a64(format!("{ramp:?}/{percentage_bp}").as_bytes()) | 1
}

/// A step's gate, on that step's window of responses.
pub fn judge(gate: &crate::config::ramp::Gate, window: &ResponseCounts) -> GateReport {
    let p99_ms = |t| window.quantile(t, 0.99).map(|s| s * 1000.0);
    let mut report = GateReport {
        verdict: "pass",
        reason: String::new(),
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
            failed.push(format!("error rate {} above max_error_rate {}", percent(report.new_error_rate), percent(max)));
        }
    }
    if let Some(max) = gate.max_error_rate_vs_old {
        let excess = report.new_error_rate - report.old_error_rate;
        if excess > max {
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
            failed.push(format!("p99 {p99:.1} ms above max_p99 {max} ms"));
        }
    }
    if let (Some(max), Some(new), Some(old)) = (gate.max_p99_vs_old, report.new_p99_ms, report.old_p99_ms) {
        if old > 0.0 && new / old > max {
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

/// The threshold of a percentage in force, for the decision.
#[inline]
pub fn threshold(bp: u32) -> Threshold {
    Threshold::from_basis_points(bp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ramp::Gate;

    fn ramp(steps: &[u32], every_ms: u64, gate: Option<Gate>, on_failure: OnFailure, start_ms: Option<i64>) -> Ramp {
        Ramp { steps: steps.to_vec(), every_ms, start_ms, gate, on_failure }
    }

    fn counts(new_ok: u64, new_err: u64, old_ok: u64, old_err: u64) -> ResponseCounts {
        let mut c = ResponseCounts::default();
        c.classes[1][1] = new_ok;
        c.classes[1][4] = new_err;
        c.classes[0][1] = old_ok;
        c.classes[0][4] = old_err;
        c
    }

    #[test]
    fn walks_its_steps_on_time_and_stops_at_the_last() {
        let r = ramp(&[100, 1000, 5000, 10000], 1000, None, OnFailure::Rollback, None);
        let cells = RampCells::default();
        let zero = ResponseCounts::default();
        cells.publish(Some(&r), fingerprint(&r, 100), 7, 10_000, &zero);
        assert_eq!(
            (cells.state(), cells.step(), cells.percentage_in_force()),
            (Some(RampState::Ramping), 0, Some(100))
        );
        assert_eq!(cells.tick(&r, true, 10_999, &zero, 7), None, "not yet");
        assert_eq!(
            cells.tick(&r, true, 11_000, &zero, 7),
            Some(RampEvent::Advanced { step: 1, percentage_bp: 1000, done: false })
        );
        assert_eq!(cells.tick(&r, true, 11_001, &zero, 7), None, "once");
        assert_eq!(cells.tick(&r, false, 12_000, &zero, 7), None, "enabled: false freezes it");
        assert!(cells.tick(&r, true, 12_000, &zero, 7).is_some());
        assert_eq!(
            cells.tick(&r, true, 13_000, &zero, 7),
            Some(RampEvent::Advanced { step: 3, percentage_bp: 10000, done: true })
        );
        assert_eq!(cells.state(), Some(RampState::Done));
        assert_eq!(cells.tick(&r, true, 99_000, &zero, 7), None);
    }

    #[test]
    fn a_failing_gate_rolls_back_or_holds_and_low_traffic_waits() {
        let gate = Gate { min_requests: 10, max_error_rate: Some(0.01), ..Gate::default() };
        let r = ramp(&[100, 1000], 1000, Some(gate.clone()), OnFailure::Rollback, None);
        let cells = RampCells::default();
        cells.publish(Some(&r), fingerprint(&r, 100), 7, 0, &ResponseCounts::default());
        assert_eq!(cells.tick(&r, true, 1000, &counts(5, 0, 50, 0), 7), None, "5 responses of 10: the step waits");
        assert_eq!(cells.last_gate().unwrap().verdict, "waiting");
        let failed = cells.tick(&r, true, 1500, &counts(18, 2, 50, 0), 7).unwrap();
        let RampEvent::Failed { step: 0, action: OnFailure::Rollback, gate: report } = failed else {
            panic!("{failed:?}")
        };
        assert_eq!((report.new_requests, report.verdict), (20, "fail"));
        assert!(report.reason.starts_with("error rate 10.00% above max_error_rate 1.00%"), "{}", report.reason);
        assert_eq!((cells.state(), cells.percentage_in_force()), (Some(RampState::RolledBack), Some(0)));
        // Republishing the same file keeps the rollback; another file starts again.
        cells.publish(Some(&r), fingerprint(&r, 100), 7, 2000, &ResponseCounts::default());
        assert_eq!(cells.state(), Some(RampState::RolledBack));
        cells.publish(Some(&r), fingerprint(&r, 100), 8, 2000, &ResponseCounts::default());
        assert_eq!((cells.state(), cells.percentage_in_force()), (Some(RampState::Ramping), Some(100)));
        let hold = ramp(&[100, 1000], 1000, Some(gate), OnFailure::Hold, None);
        let cells = RampCells::default();
        cells.publish(Some(&hold), fingerprint(&hold, 100), 7, 0, &ResponseCounts::default());
        assert!(matches!(
            cells.tick(&hold, true, 1000, &counts(0, 20, 0, 0), 7),
            Some(RampEvent::Failed { action: OnFailure::Hold, .. })
        ));
        assert_eq!((cells.state(), cells.percentage_in_force()), (Some(RampState::Held), Some(100)));
    }

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
    fn the_last_gate_is_kept_with_its_numbers() {
        let cells = RampCells::default();
        assert_eq!(cells.last_gate(), None, "none judged yet");
        for report in [
            GateReport {
                verdict: "fail",
                reason: String::new(),
                new_requests: 57,
                old_requests: 443,
                new_error_rate: 0.125,
                old_error_rate: 0.0025,
                new_p99_ms: Some(49.75),
                old_p99_ms: Some(4.95),
            },
            GateReport { verdict: "waiting", new_requests: 3, ..GateReport::default() },
        ] {
            cells.remember(&report);
            assert_eq!(cells.last_gate(), Some(report));
        }
    }

    #[test]
    fn the_wall_clock_puts_every_replica_on_the_same_step() {
        let r = ramp(&[100, 1000, 5000], 1000, None, OnFailure::Rollback, Some(5_000));
        let a = RampCells::default();
        let b = RampCells::default();
        let zero = ResponseCounts::default();
        a.publish(Some(&r), fingerprint(&r, 100), 1, 1_000, &zero);
        assert_eq!((a.state(), a.percentage_in_force()), (Some(RampState::Scheduled), Some(0)), "0 % before start");
        assert!(a.tick(&r, true, 5_000, &zero, 1).is_some());
        assert!(a.tick(&r, true, 6_500, &zero, 1).is_some());
        // b starts late, at 6.5 s: it joins at step 1, as a is.
        b.publish(Some(&r), fingerprint(&r, 100), 1, 6_500, &zero);
        assert_eq!((a.step(), b.step()), (1, 1));
        assert_eq!(a.percentage_in_force(), b.percentage_in_force());
        assert_eq!(a.step_started_ms(), b.step_started_ms());
    }

    #[test]
    fn the_position_word_round_trips() {
        for (restarts, step, state) in [
            (0, 0, RampState::Scheduled),
            (1, 3, RampState::Ramping),
            (0xff_ffff, 0xffff_ffff, RampState::RolledBack),
            (77, 12, RampState::Held),
            (5, 1, RampState::Done),
        ] {
            assert_eq!(unpack(pack(restarts, step, state)), (restarts, step, Some(state)));
        }
        // The restart count keeps its low 24 bits.
        assert_eq!(unpack(pack(0x100_0002, 7, RampState::Ramping)), (2, 7, Some(RampState::Ramping)));
    }

    #[test]
    fn with_start_a_publication_puts_the_ramp_on_the_wall_clock_step() {
        let r = ramp(&[100, 1000, 5000], 1000, None, OnFailure::Rollback, Some(5_000));
        let zero = ResponseCounts::default();
        // (now, state, step, percentage in force, the step's start)
        for (now, state, step, in_force, started) in [
            (4_999, RampState::Scheduled, 0, 0, 5_000),
            (5_000, RampState::Ramping, 0, 100, 5_000),
            (6_500, RampState::Ramping, 1, 1000, 6_000),
            (7_000, RampState::Done, 2, 5000, 7_000),
            (60_000, RampState::Done, 2, 5000, 7_000),
        ] {
            let cells = RampCells::default();
            cells.publish(Some(&r), fingerprint(&r, 100), 1, now, &zero);
            assert_eq!(
                (cells.state(), cells.step(), cells.percentage_in_force(), cells.step_started_ms()),
                (Some(state), step, Some(in_force), started),
                "published at {now}"
            );
        }
        // Without start, the first step begins at the publication.
        let cells = RampCells::default();
        let r = ramp(&[100, 1000], 1000, None, OnFailure::Rollback, None);
        cells.publish(Some(&r), fingerprint(&r, 100), 1, 1_234, &zero);
        assert_eq!((cells.step(), cells.step_started_ms()), (0, 1_234));
    }

    #[test]
    fn on_the_wall_clock_ticks_wait_for_start_then_jump_to_the_due_step() {
        let r = ramp(&[100, 1000, 5000, 10_000], 1000, None, OnFailure::Rollback, Some(5_000));
        let zero = ResponseCounts::default();
        let cells = RampCells::default();
        cells.publish(Some(&r), fingerprint(&r, 100), 1, 1_000, &zero);
        assert!(cells.tick(&r, true, 4_999, &zero, 1).is_none(), "nothing before start");
        assert_eq!((cells.state(), cells.percentage_in_force()), (Some(RampState::Scheduled), Some(0)));
        // No tick ran since start: the first one, at 7.5 s, puts it on step 2 at
        // once, as begun at 7 s.
        let event = cells.tick(&r, true, 7_500, &zero, 1);
        assert!(matches!(event, Some(RampEvent::Advanced { step: 2, percentage_bp: 5000, done: false })), "{event:?}");
        assert_eq!((cells.state(), cells.step(), cells.step_started_ms()), (Some(RampState::Ramping), 2, 7_000));
        let event = cells.tick(&r, true, 8_200, &zero, 1);
        assert!(matches!(event, Some(RampEvent::Advanced { step: 3, percentage_bp: 10_000, done: true })), "{event:?}");
        assert_eq!((cells.state(), cells.step_started_ms()), (Some(RampState::Done), 8_000));
        // A tick long after the last step's time, from an earlier step: the last step.
        let late = RampCells::default();
        late.publish(Some(&r), fingerprint(&r, 100), 1, 5_500, &zero);
        let event = late.tick(&r, true, 60_000, &zero, 1);
        assert!(matches!(event, Some(RampEvent::Advanced { step: 3, percentage_bp: 10_000, done: true })), "{event:?}");
        assert_eq!(late.step_started_ms(), 8_000);
    }

    #[test]
    fn every_restart_changes_the_position_word() {
        let zero = ResponseCounts::default();
        for start in [None, Some(0)] {
            let cells = RampCells::default();
            let a = ramp(&[100, 1000], 1000, None, OnFailure::Rollback, start);
            cells.publish(Some(&a), fingerprint(&a, 100), 1, 0, &zero);
            let first = cells.position.load(Ordering::Acquire);
            // Another ramp, again at step 0: one restart later, so that a tick that
            // read the first word cannot swap it.
            let b = ramp(&[200, 1000], 1000, None, OnFailure::Rollback, start);
            cells.publish(Some(&b), fingerprint(&b, 200), 2, 0, &zero);
            let second = cells.position.load(Ordering::Acquire);
            assert_eq!((unpack(second).1, unpack(second).2), (unpack(first).1, unpack(first).2), "start {start:?}");
            assert_eq!(unpack(second).0, unpack(first).0 + 1, "start {start:?}");
        }
    }

    #[test]
    fn a_changed_ramp_or_percentage_starts_again_and_no_ramp_clears_it() {
        let r = ramp(&[100, 1000], 1000, None, OnFailure::Rollback, None);
        let cells = RampCells::default();
        let zero = ResponseCounts::default();
        cells.publish(Some(&r), fingerprint(&r, 100), 1, 0, &zero);
        cells.tick(&r, true, 1000, &zero, 1);
        assert_eq!(cells.step(), 1);
        cells.publish(Some(&r), fingerprint(&r, 100), 2, 1500, &zero);
        assert_eq!(cells.step(), 1, "the same ramp keeps its step over another file");
        let other = ramp(&[200, 1000], 1000, None, OnFailure::Rollback, None);
        cells.publish(Some(&other), fingerprint(&other, 200), 3, 1500, &zero);
        assert_eq!((cells.step(), cells.percentage_in_force()), (0, Some(200)));
        cells.publish(None, 0, 4, 1500, &zero);
        assert_eq!((cells.state(), cells.percentage_in_force()), (None, None));
    }
}
