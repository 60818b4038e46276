//! A ramp's cells in the shared zone, and the state machine that moves them:
//! the position word, one compare-and-swap per transition.

use std::sync::atomic::{AtomicU64, Ordering};

use super::position::Position;
use super::{judge, GateReport, Publication, RampEvent, RampInForce, RampStamp, RampState};
use crate::config::ramp::{OnFailure, Ramp};
use crate::config::Target;
use crate::responses::{ResponseCells, ResponseCounts};

/// A ramp's cells. All zeros: no ramp.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RampCells {
    /// What ramp (and percentage) the position belongs to; 0: none.
    fingerprint: AtomicU64,
    /// The service's migration block and backends the position stands under: a
    /// held or rolled-back ramp starts again only when they change.
    outcome: AtomicU64,
    /// The whole position, one word ([`Position`]): moved by compare-and-swap.
    position: AtomicU64,
    /// Unix ms since `enabled: false` froze the ramp; 0: not frozen.
    frozen_since: AtomicU64,
    /// The current step's responses of the percentage split (decision step 7),
    /// what its gate judges; emptied when a step begins.
    window: ResponseCells,
    /// The last gate's numbers, for the status.
    gate_verdict: AtomicU64,
    gate_numbers: [AtomicU64; 7],
}

const VERDICTS: [&str; 4] = ["", "pass", "fail", "waiting"];

/// When step `step` of a ramp with `start` begins (Unix ms), 0 for a step that
/// began before 1970 (a `start` may be any date from the year 0).
fn step_start(start_ms: i64, step: usize, every_ms: u64) -> u64 {
    let offset = (step as i64).saturating_mul(i64::try_from(every_ms).unwrap_or(i64::MAX));
    start_ms.saturating_add(offset).max(0) as u64
}

/// The index of the step whose percentage is `bp` (steps increase strictly).
fn step_of(ramp: &Ramp, bp: u32) -> Option<usize> {
    ramp.steps.binary_search(&bp).ok()
}

impl RampCells {
    fn position(&self) -> Option<Position> {
        Position::unpack(self.position.load(Ordering::Acquire))
    }

    /// The percentage in force (basis points), when a ramp decides it.
    #[inline]
    pub fn percentage_in_force(&self) -> Option<u32> {
        self.position().map(Position::in_force)
    }

    /// The percentage in force with the word it was read from, one load: what a
    /// decision takes, so that its response can join the window of the step it
    /// was decided under and no other ([`RampCells::record`]).
    #[inline]
    pub fn in_force(&self) -> Option<RampInForce> {
        let word = self.position.load(Ordering::Acquire);
        let bp = Position::unpack(word)?.in_force();
        // A word that unpacks is never 0 (no state has code 0).
        Some(RampInForce { bp, stamp: core::num::NonZeroU64::new(word).map(RampStamp) })
    }

    /// What a process compiled with the ramp of `fingerprint`, for the
    /// migration block and backends of `outcome`, decides with: the percentage
    /// in force whatever the ramp (every process routes by the zone's), but a
    /// stamp only if the ramp in the zone is its own and was published with
    /// the same backends. A worker still on an older configuration (before its
    /// reload signal, or its compile of a `watch=` publication) then never
    /// gives evidence to a ramp it does not have, as it never moves one
    /// ([`RampCells::tick`]); nor, after a change of `new_backend` restarted a
    /// rolled-back ramp (the same ramp, another outcome), does one that still
    /// sends "new" to the backend that failed.
    #[inline]
    pub fn in_force_for(&self, fingerprint: u64, outcome: u64) -> Option<RampInForce> {
        // The word first, as `tick` reads them: a publication stores the
        // fingerprints before the word, so a word read before a restart comes
        // with fingerprints that may be the new ones, whose stamp then fails
        // `record`'s compare.
        let found = self.in_force()?;
        let ours =
            self.fingerprint.load(Ordering::Acquire) == fingerprint && self.outcome.load(Ordering::Acquire) == outcome;
        Some(if ours { found } else { RampInForce { stamp: None, ..found } })
    }

    pub fn state(&self) -> Option<RampState> {
        self.position().map(|p| p.state)
    }

    /// The current step's index in `ramp.steps` (0 for the first), as read by a
    /// process compiled from `ramp`.
    pub fn step(&self, ramp: &Ramp) -> usize {
        self.position().and_then(|p| step_of(ramp, p.step_bp)).unwrap_or(0)
    }

    /// When the current step began (Unix ms; for `scheduled`, when it will).
    pub fn step_started_ms(&self) -> u64 {
        self.position().map_or(0, |p| p.started_ms)
    }

    /// `enabled: false` froze the ramp.
    pub fn frozen(&self) -> bool {
        self.frozen_since.load(Ordering::Acquire) != 0
    }

    /// A configuration was published: `ramp` is the service's (None: it has
    /// none), `fingerprint` identifies it with the service's percentage
    /// ([`fingerprint`]), `outcome` the service's migration block and backends
    /// ([`outcome_fingerprint`]). Called under the zone's lock, by one process.
    pub fn publish(
        &self,
        ramp: Option<&Ramp>,
        fingerprint: u64,
        outcome: u64,
        enabled: bool,
        now_ms: u64,
    ) -> Publication {
        let Some(ramp) = ramp else {
            self.fingerprint.store(0, Ordering::Release);
            // No ramp, but the restart count stays: a ramp published again later
            // must not give back a word that a request decided before still holds.
            let restarts = Position::restarts_of(self.position.load(Ordering::Acquire));
            self.position.store(Position::no_ramp(restarts), Ordering::Release);
            self.frozen_since.store(0, Ordering::Release);
            return Publication::None;
        };
        let old = self.position();
        let stopped = matches!(old.map(|p| p.state), Some(RampState::Held | RampState::RolledBack));
        let same = old.is_some() && self.fingerprint.load(Ordering::Acquire) == fingerprint;
        if same && !(stopped && self.outcome.load(Ordering::Acquire) != outcome) {
            self.outcome.store(outcome, Ordering::Release);
            self.freeze_or_thaw(ramp, enabled, now_ms);
            return Publication::Kept;
        }
        let restarts = Position::restarts_of(self.position.load(Ordering::Acquire)) + 1;
        self.fingerprint.store(fingerprint, Ordering::Release);
        self.outcome.store(outcome, Ordering::Release);
        self.gate_verdict.store(0, Ordering::Release);
        self.frozen_since.store(if enabled { 0 } else { now_ms.max(1) }, Ordering::Release);
        let last = ramp.steps.len() - 1;
        let position = match ramp.start_ms {
            Some(start) if (now_ms as i64) < start => Position {
                restarts,
                started_ms: start.max(0) as u64,
                step_bp: ramp.steps[0],
                state: RampState::Scheduled,
            },
            Some(start) => {
                // On the wall clock: the step every replica is on now.
                let step = (((now_ms as i64 - start) as u64 / ramp.every_ms).min(last as u64)) as usize;
                Position {
                    restarts,
                    started_ms: step_start(start, step, ramp.every_ms),
                    step_bp: ramp.steps[step],
                    state: if step == last { RampState::Done } else { RampState::Ramping },
                }
            }
            None => Position {
                restarts,
                started_ms: now_ms,
                step_bp: ramp.steps[0],
                state: if last == 0 { RampState::Done } else { RampState::Ramping },
            },
        };
        self.position.store(position.pack(), Ordering::Release);
        // Emptied after the word moved, as a transition does: a response
        // decided under the word before can no longer pass `record`'s compare
        // into the new window (one that passed it just before is counted in
        // the window it was decided for, then emptied with it).
        self.window.store(&ResponseCounts::default());
        Publication::Started
    }

    /// `enabled: false` freezes the ramp where it is; `enabled: true` thaws it,
    /// and without `start` the frozen time does not count toward `every` (the
    /// step's start moves forward by it). With `start` the wall clock rules.
    fn freeze_or_thaw(&self, ramp: &Ramp, enabled: bool, now_ms: u64) {
        let since = self.frozen_since.load(Ordering::Acquire);
        match (enabled, since) {
            (false, 0) => self.frozen_since.store(now_ms.max(1), Ordering::Release),
            (true, since) if since != 0 => {
                if ramp.start_ms.is_none() {
                    // No tick moves a frozen ramp, so the word is ours to rewrite;
                    // a new restart count voids any tick that read it before.
                    if let Some(p) = self.position() {
                        let thawed = Position {
                            restarts: p.restarts + 1,
                            started_ms: p.started_ms + now_ms.saturating_sub(since),
                            ..p
                        };
                        self.position.store(thawed.pack(), Ordering::Release);
                    }
                }
                self.frozen_since.store(0, Ordering::Release);
            }
            _ => {}
        }
    }

    /// Moves the ramp on if its clock says so; every worker calls it now and
    /// then, one of them makes each transition and gets its event. Only a
    /// process whose ramp is the zone's (`fingerprint`) moves it, and not while
    /// `enabled: false` froze it.
    pub fn tick(&self, ramp: &Ramp, fingerprint: u64, now_ms: u64) -> Option<RampEvent> {
        // The word first: a publication stores the fingerprint before the word,
        // so a word read before a restart fails the swap, and one read after it
        // comes with the new fingerprint.
        let word = self.position.load(Ordering::Acquire);
        let pos = Position::unpack(word)?;
        if self.frozen() || self.fingerprint.load(Ordering::Acquire) != fingerprint {
            return None;
        }
        if !matches!(pos.state, RampState::Scheduled | RampState::Ramping) {
            return None;
        }
        let step = step_of(ramp, pos.step_bp)?;
        let last = ramp.steps.len() - 1;
        // The step that should be in force now, by the clock alone.
        let due = match ramp.start_ms {
            Some(start) if (now_ms as i64) < start => return None,
            Some(start) => (((now_ms as i64 - start) as u64 / ramp.every_ms) as usize).min(last),
            None if pos.state == RampState::Scheduled => 0,
            None if now_ms >= pos.started_ms.saturating_add(ramp.every_ms) => (step + 1).min(last),
            None => step,
        };
        let begins = |due: usize| ramp.start_ms.map_or(now_ms, |s| step_start(s, due, ramp.every_ms));
        if pos.state == RampState::Scheduled {
            // The wall-clock start has come: its step begins, with no gate to judge.
            return self.advance(word, pos, due, ramp, begins(due));
        }
        if due <= step {
            return None;
        }
        // The current step is over: its gate decides.
        if let Some(gate) = &ramp.gate {
            let report = judge(gate, &self.window.snapshot());
            if report.verdict == "waiting" {
                // Only while the word is the one judged: a worker that read it a
                // moment before another's transition must not overwrite that
                // transition's verdict with its older one.
                if self.position.load(Ordering::Acquire) == word {
                    self.remember(&report);
                }
                // Without a start, low traffic waits instead of failing.
                ramp.start_ms?;
                // On the wall clock, a step whose gate could not be judged still begins on time.
            } else if report.verdict == "fail" {
                let state = match ramp.on_failure {
                    OnFailure::Hold => RampState::Held,
                    OnFailure::Rollback => RampState::RolledBack,
                };
                let stopped = Position { state, ..pos };
                self.position.compare_exchange(word, stopped.pack(), Ordering::AcqRel, Ordering::Acquire).ok()?;
                self.remember(&report);
                return Some(RampEvent::Failed { step, action: ramp.on_failure, gate: report });
            } else {
                let event = self.advance(word, pos, due, ramp, begins(due));
                if event.is_some() {
                    // The verdict of the transition this worker made.
                    self.remember(&report);
                }
                return event;
            }
        }
        self.advance(word, pos, due, ramp, begins(due))
    }

    /// Counts one response the percentage split decided (decision step 7) in the
    /// current step's window, if the ramp still stands where the decision read
    /// it (`stamp`): a request decided under the step before, or under a ramp a
    /// publication started again since, ends in no window. Header, CIDR and
    /// user-list traffic never comes here. Returns whether it counted.
    ///
    /// A response whose stamp was read just before a transition's swap and that
    /// is counted just after the swap emptied the window still lands in the new
    /// step's window: at most one per worker at that instant.
    #[inline]
    pub fn record(&self, stamp: RampStamp, target: Target, class: usize, upstream_us: Option<u64>) -> bool {
        if self.position.load(Ordering::Acquire) != stamp.0.get() {
            return false;
        }
        self.window.record(target, class, upstream_us);
        true
    }

    /// The current step's window, as its gate would judge it now.
    pub fn window(&self) -> ResponseCounts {
        self.window.snapshot()
    }

    fn advance(&self, word: u64, pos: Position, step: usize, ramp: &Ramp, begins: u64) -> Option<RampEvent> {
        let done = step + 1 == ramp.steps.len();
        let state = if done { RampState::Done } else { RampState::Ramping };
        let next = Position { restarts: pos.restarts, started_ms: begins, step_bp: ramp.steps[step], state };
        self.position.compare_exchange(word, next.pack(), Ordering::AcqRel, Ordering::Acquire).ok()?;
        // The new step's window starts empty. A response recorded between the swap
        // and this store is lost to both windows: a handful among a step's, never
        // a wrong verdict's worth.
        self.window.store(&ResponseCounts::default());
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
            u64::from(report.failed),
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
            failed: n[6] as u8,
            new_requests: n[0],
            old_requests: n[1],
            new_error_rate: n[2] as f64 / 1e9,
            old_error_rate: n[3] as f64 / 1e9,
            new_p99_ms: ms(n[4]),
            old_p99_ms: ms(n[5]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ramp::Gate;
    use crate::ramp::tests::counts;
    use crate::ramp::{fingerprint, FailedLimit};

    fn ramp(steps: &[u32], every_ms: u64, gate: Option<Gate>, on_failure: OnFailure, start_ms: Option<i64>) -> Ramp {
        Ramp { steps: steps.to_vec(), every_ms, start_ms, gate, on_failure }
    }

    /// The fingerprint a ramp is published with in these tests.
    fn fp(r: &Ramp) -> u64 {
        fingerprint(r, r.steps[0])
    }

    #[test]
    fn walks_its_steps_on_time_and_stops_at_the_last() {
        let r = ramp(&[100, 1000, 5000, 10000], 1000, None, OnFailure::Rollback, None);
        let cells = RampCells::default();
        cells.publish(Some(&r), fingerprint(&r, 100), 7, true, 10_000);
        assert_eq!(
            (cells.state(), cells.step(&r), cells.percentage_in_force()),
            (Some(RampState::Ramping), 0, Some(100))
        );
        assert_eq!(cells.tick(&r, fp(&r), 10_999), None, "not yet");
        assert_eq!(
            cells.tick(&r, fp(&r), 11_000),
            Some(RampEvent::Advanced { step: 1, percentage_bp: 1000, done: false })
        );
        assert_eq!(cells.tick(&r, fp(&r), 11_001), None, "once");
        assert_eq!(cells.tick(&r, fp(&r) ^ 2, 12_000), None, "a process compiled from another ramp");
        assert!(cells.tick(&r, fp(&r), 12_000).is_some());
        assert_eq!(
            cells.tick(&r, fp(&r), 13_000),
            Some(RampEvent::Advanced { step: 3, percentage_bp: 10000, done: true })
        );
        assert_eq!(cells.state(), Some(RampState::Done));
        assert_eq!(cells.tick(&r, fp(&r), 99_000), None);
    }

    #[test]
    fn a_failing_gate_rolls_back_or_holds_and_low_traffic_waits() {
        let gate = Gate { min_requests: 10, max_error_rate: Some(0.01), ..Gate::default() };
        let r = ramp(&[100, 1000], 1000, Some(gate.clone()), OnFailure::Rollback, None);
        let cells = RampCells::default();
        cells.publish(Some(&r), fingerprint(&r, 100), 7, true, 0);
        cells.window.store(&counts(5, 0, 50, 0));
        assert_eq!(cells.tick(&r, fp(&r), 1000), None, "5 responses of 10: the step waits");
        assert_eq!(cells.last_gate().unwrap().verdict, "waiting");
        cells.window.store(&counts(18, 2, 50, 0));
        let failed = cells.tick(&r, fp(&r), 1500).unwrap();
        let RampEvent::Failed { step: 0, action: OnFailure::Rollback, gate: report } = failed else {
            panic!("{failed:?}")
        };
        assert_eq!((report.new_requests, report.verdict), (20, "fail"));
        assert!(report.reason.starts_with("error rate 10.00% above max_error_rate 1.00%"), "{}", report.reason);
        assert_eq!((cells.state(), cells.percentage_in_force()), (Some(RampState::RolledBack), Some(0)));
        // The same migration block and backends keep the rollback (any other edit of
        // the file, a comment, a reload); a changed one starts again.
        cells.publish(Some(&r), fingerprint(&r, 100), 7, true, 2000);
        assert_eq!(cells.state(), Some(RampState::RolledBack));
        cells.publish(Some(&r), fingerprint(&r, 100), 8, true, 2000);
        assert_eq!((cells.state(), cells.percentage_in_force()), (Some(RampState::Ramping), Some(100)));
        // A worker not yet on the new backends (the same ramp, the old outcome)
        // still sends "new" to the one that failed: no evidence for the new start.
        let stale = cells.in_force_for(fp(&r), 7).expect("a ramp");
        assert_eq!((stale.bp, stale.stamp), (100, None));
        let fresh = cells.in_force_for(fp(&r), 8).expect("a ramp");
        assert_eq!(fresh.stamp, cells.in_force().and_then(|f| f.stamp), "the worker on them gives evidence");
        let hold = ramp(&[100, 1000], 1000, Some(gate), OnFailure::Hold, None);
        let cells = RampCells::default();
        cells.publish(Some(&hold), fingerprint(&hold, 100), 7, true, 0);
        assert!(matches!(
            {
                cells.window.store(&counts(0, 20, 0, 0));
                cells.tick(&hold, fp(&hold), 1000)
            },
            Some(RampEvent::Failed { action: OnFailure::Hold, .. })
        ));
        assert_eq!((cells.state(), cells.percentage_in_force()), (Some(RampState::Held), Some(100)));
    }

    #[test]
    fn the_last_gate_is_kept_with_its_numbers() {
        let cells = RampCells::default();
        assert_eq!(cells.last_gate(), None, "none judged yet");
        for report in [
            GateReport {
                verdict: "fail",
                reason: String::new(),
                failed: 0b1001,
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
        a.publish(Some(&r), fingerprint(&r, 100), 1, true, 1_000);
        assert_eq!((a.state(), a.percentage_in_force()), (Some(RampState::Scheduled), Some(0)), "0 % before start");
        assert!(a.tick(&r, fp(&r), 5_000).is_some());
        assert!(a.tick(&r, fp(&r), 6_500).is_some());
        // b starts late, at 6.5 s: it joins at step 1, as a is.
        b.publish(Some(&r), fingerprint(&r, 100), 1, true, 6_500);
        assert_eq!((a.step(&r), b.step(&r)), (1, 1));
        assert_eq!(a.percentage_in_force(), b.percentage_in_force());
        assert_eq!(a.step_started_ms(), b.step_started_ms());
    }

    #[test]
    fn with_start_a_publication_puts_the_ramp_on_the_wall_clock_step() {
        let r = ramp(&[100, 1000, 5000], 1000, None, OnFailure::Rollback, Some(5_000));
        // (now, state, step, percentage in force, the step's start)
        for (now, state, step, in_force, started) in [
            (4_999, RampState::Scheduled, 0, 0, 5_000),
            (5_000, RampState::Ramping, 0, 100, 5_000),
            (6_500, RampState::Ramping, 1, 1000, 6_000),
            (7_000, RampState::Done, 2, 5000, 7_000),
            (60_000, RampState::Done, 2, 5000, 7_000),
        ] {
            let cells = RampCells::default();
            cells.publish(Some(&r), fingerprint(&r, 100), 1, true, now);
            assert_eq!(
                (cells.state(), cells.step(&r), cells.percentage_in_force(), cells.step_started_ms()),
                (Some(state), step, Some(in_force), started),
                "published at {now}"
            );
        }
        // Without start, the first step begins at the publication.
        let cells = RampCells::default();
        let r = ramp(&[100, 1000], 1000, None, OnFailure::Rollback, None);
        cells.publish(Some(&r), fingerprint(&r, 100), 1, true, 1_234);
        assert_eq!((cells.step(&r), cells.step_started_ms()), (0, 1_234));
    }

    #[test]
    fn on_the_wall_clock_ticks_wait_for_start_then_jump_to_the_due_step() {
        let r = ramp(&[100, 1000, 5000, 10_000], 1000, None, OnFailure::Rollback, Some(5_000));
        let cells = RampCells::default();
        cells.publish(Some(&r), fingerprint(&r, 100), 1, true, 1_000);
        assert!(cells.tick(&r, fp(&r), 4_999).is_none(), "nothing before start");
        assert_eq!((cells.state(), cells.percentage_in_force()), (Some(RampState::Scheduled), Some(0)));
        // No tick ran since start: the first one, at 7.5 s, puts it on step 2 at
        // once, as begun at 7 s.
        let event = cells.tick(&r, fp(&r), 7_500);
        assert!(matches!(event, Some(RampEvent::Advanced { step: 2, percentage_bp: 5000, done: false })), "{event:?}");
        assert_eq!((cells.state(), cells.step(&r), cells.step_started_ms()), (Some(RampState::Ramping), 2, 7_000));
        let event = cells.tick(&r, fp(&r), 8_200);
        assert!(matches!(event, Some(RampEvent::Advanced { step: 3, percentage_bp: 10_000, done: true })), "{event:?}");
        assert_eq!((cells.state(), cells.step_started_ms()), (Some(RampState::Done), 8_000));
        // A tick long after the last step's time, from an earlier step: the last step.
        let late = RampCells::default();
        late.publish(Some(&r), fingerprint(&r, 100), 1, true, 5_500);
        let event = late.tick(&r, fp(&r), 60_000);
        assert!(matches!(event, Some(RampEvent::Advanced { step: 3, percentage_bp: 10_000, done: true })), "{event:?}");
        assert_eq!(late.step_started_ms(), 8_000);
    }

    #[test]
    fn every_restart_changes_the_position_word() {
        for start in [None, Some(0)] {
            let cells = RampCells::default();
            let a = ramp(&[100, 1000], 1000, None, OnFailure::Rollback, start);
            cells.publish(Some(&a), fingerprint(&a, 100), 1, true, 0);
            let first = cells.position().unwrap();
            // The same step again, at the same time: one restart later, so that a
            // tick that read the first word cannot swap it.
            let b = ramp(&[100, 2000], 1000, None, OnFailure::Rollback, start);
            cells.publish(Some(&b), fingerprint(&b, 100), 2, true, 0);
            let second = cells.position().unwrap();
            assert_eq!(second, Position { restarts: first.restarts + 1, ..first }, "start {start:?}");
        }
    }

    #[test]
    fn a_changed_ramp_or_percentage_starts_again_and_no_ramp_clears_it() {
        let r = ramp(&[100, 1000], 1000, None, OnFailure::Rollback, None);
        let cells = RampCells::default();
        cells.publish(Some(&r), fingerprint(&r, 100), 1, true, 0);
        cells.tick(&r, fp(&r), 1000);
        assert_eq!(cells.step(&r), 1);
        cells.publish(Some(&r), fingerprint(&r, 100), 2, true, 1500);
        assert_eq!(cells.step(&r), 1, "the same ramp keeps its step over another file");
        let other = ramp(&[200, 1000], 1000, None, OnFailure::Rollback, None);
        cells.publish(Some(&other), fingerprint(&other, 200), 3, true, 1500);
        assert_eq!((cells.step(&other), cells.percentage_in_force()), (0, Some(200)));
        cells.publish(None, 0, 4, true, 1500);
        assert_eq!((cells.state(), cells.percentage_in_force()), (None, None));
    }

    #[test]
    fn a_process_compiled_from_another_ramp_never_moves_the_zones() {
        let old = ramp(&[100, 5000, 10_000], 1000, None, OnFailure::Rollback, None);
        let new = ramp(&[100, 200], 30 * 86_400_000, None, OnFailure::Rollback, None);
        let cells = RampCells::default();
        cells.publish(Some(&old), fp(&old), 1, true, 0);
        // A reload publishes the new ramp; a worker of the old configuration ticks
        // long after its own `every`: nothing moves.
        assert_eq!(cells.publish(Some(&new), fp(&new), 2, true, 500), Publication::Started);
        for now in [1_000, 2_000, 60_000] {
            assert_eq!(cells.tick(&old, fp(&old), now), None, "at {now}");
        }
        assert_eq!((cells.state(), cells.percentage_in_force()), (Some(RampState::Ramping), Some(100)));
        // A worker of the new configuration moves it on its own clock.
        assert_eq!(cells.tick(&new, fp(&new), 60_000), None, "30 days per step");
        assert!(cells.tick(&new, fp(&new), 500 + 30 * 86_400_000).is_some());
        assert_eq!(cells.percentage_in_force(), Some(200));
    }

    /// Many workers tick at once on a shared clock: every step begins once, in
    /// order, and none is skipped (a transition is one word: no worker can read a
    /// step with the previous step's start).
    #[test]
    fn concurrent_ticks_make_each_transition_once_and_skip_none() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Mutex;
        let steps: Vec<u32> = (1..=40).map(|i| i * 250).collect();
        let r = ramp(&steps, 100, None, OnFailure::Rollback, None);
        let cells = RampCells::default();
        cells.publish(Some(&r), fp(&r), 1, true, 0);
        let clock = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let events = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let now = clock.load(Ordering::Relaxed);
                        if let Some(RampEvent::Advanced { step, .. }) = cells.tick(&r, fp(&r), now) {
                            events.lock().unwrap().push(step);
                        }
                    }
                });
            }
            // The clock runs 250 ms per real millisecond or so: steps are due in
            // bursts, with many workers reading the same word.
            for _ in 0..4_000 {
                clock.fetch_add(7, Ordering::Relaxed);
                std::thread::yield_now();
            }
            clock.store(u64::MAX / 4, Ordering::Relaxed);
            while cells.state() != Some(RampState::Done) {
                std::thread::yield_now();
            }
            stop.store(true, Ordering::Relaxed);
        });
        // Sorted: two workers may push their steps in another order than their
        // compare-and-swaps made them; that each step began once, and none was
        // skipped, is the property.
        let mut events = events.into_inner().unwrap();
        events.sort_unstable();
        assert_eq!(events, (1..40).collect::<Vec<usize>>());
    }

    #[test]
    fn a_stopped_ramp_stays_until_its_migration_or_backends_change() {
        let gate = Gate { max_error_rate: Some(0.01), ..Gate::default() };
        for action in [OnFailure::Rollback, OnFailure::Hold] {
            let r = ramp(&[100, 1000], 1000, Some(gate.clone()), action, None);
            let cells = RampCells::default();
            cells.publish(Some(&r), fp(&r), 11, true, 0);
            cells.window.store(&counts(0, 9, 9, 0));
            assert!(matches!(cells.tick(&r, fp(&r), 1000), Some(RampEvent::Failed { .. })));
            let stopped = (cells.state(), cells.percentage_in_force());
            // Publications of the same migration: a comment, another service, a reload.
            for now in [2_000, 3_000, 4_000] {
                assert_eq!(cells.publish(Some(&r), fp(&r), 11, true, now), Publication::Kept);
                assert_eq!((cells.state(), cells.percentage_in_force()), stopped, "{action:?}");
            }
            // The migration block or a backend changed: the ramp starts again.
            assert_eq!(cells.publish(Some(&r), fp(&r), 12, true, 5_000), Publication::Started);
            assert_eq!((cells.state(), cells.percentage_in_force()), (Some(RampState::Ramping), Some(100)));
        }
        // A ramp still moving keeps its position when only the outcome changes.
        let r = ramp(&[100, 1000, 2000], 1000, None, OnFailure::Rollback, None);
        let cells = RampCells::default();
        cells.publish(Some(&r), fp(&r), 1, true, 0);
        cells.tick(&r, fp(&r), 1000);
        assert_eq!(cells.publish(Some(&r), fp(&r), 2, true, 1_500), Publication::Kept);
        assert_eq!(cells.percentage_in_force(), Some(1000));
    }

    #[test]
    fn enabled_false_freezes_the_clock_without_start() {
        let r = ramp(&[100, 1000, 2000], 1000, None, OnFailure::Rollback, None);
        let cells = RampCells::default();
        cells.publish(Some(&r), fp(&r), 1, true, 0);
        // Published again enabled (another service's edit): no thaw, nothing moves.
        let word = cells.position.load(Ordering::Acquire);
        assert_eq!(cells.publish(Some(&r), fp(&r), 2, true, 300), Publication::Kept);
        assert_eq!(cells.position.load(Ordering::Acquire), word, "a ramp that was not frozen keeps its word");
        // Frozen at 600 ms into step 0, for 8.8 s.
        assert_eq!(cells.publish(Some(&r), fp(&r), 2, false, 600), Publication::Kept);
        assert!(cells.frozen());
        for now in [1_000, 5_000, 9_399] {
            assert_eq!(cells.tick(&r, fp(&r), now), None, "frozen at {now}");
        }
        cells.publish(Some(&r), fp(&r), 3, true, 9_400);
        assert!(!cells.frozen());
        assert_eq!(cells.step_started_ms(), 8_800, "the step's start moved by the 8.8 s frozen");
        assert_eq!(cells.tick(&r, fp(&r), 9_799), None, "400 ms of the step were left");
        assert!(cells.tick(&r, fp(&r), 9_800).is_some());
        // A ramp published while disabled starts frozen.
        let cells = RampCells::default();
        cells.publish(Some(&r), fp(&r), 1, false, 10);
        assert_eq!(cells.tick(&r, fp(&r), 50_000), None);
        cells.publish(Some(&r), fp(&r), 2, true, 60_000);
        assert_eq!((cells.step(&r), cells.step_started_ms()), (0, 60_000));
    }

    #[test]
    fn a_thaw_changes_the_word_even_in_the_millisecond_of_its_freeze() {
        // The step's start does not move (nothing was frozen long): only the
        // restart count tells a word read before the thaw from the word after.
        let r = ramp(&[100, 1000], 1000, None, OnFailure::Rollback, None);
        let cells = RampCells::default();
        cells.publish(Some(&r), fp(&r), 1, true, 0);
        cells.publish(Some(&r), fp(&r), 2, false, 500);
        let before = cells.position.load(Ordering::Acquire);
        cells.publish(Some(&r), fp(&r), 3, true, 500);
        let after = cells.position.load(Ordering::Acquire);
        assert_ne!(before, after);
        assert_eq!(Position::unpack(after).unwrap().restarts, Position::unpack(before).unwrap().restarts + 1);
    }

    #[test]
    fn enabled_false_with_start_stops_transitions_and_the_wall_clock_rules_after() {
        let r = ramp(&[100, 1000, 2000], 1000, None, OnFailure::Rollback, Some(0));
        let cells = RampCells::default();
        cells.publish(Some(&r), fp(&r), 1, true, 100);
        cells.publish(Some(&r), fp(&r), 2, false, 200);
        assert_eq!(cells.tick(&r, fp(&r), 1_500), None, "frozen");
        cells.publish(Some(&r), fp(&r), 3, true, 1_500);
        assert!(cells.tick(&r, fp(&r), 1_500).is_some());
        assert_eq!((cells.step(&r), cells.step_started_ms()), (1, 1_000), "on the wall clock's step");
    }

    #[test]
    fn a_failed_gate_names_its_limits_values_and_measures() {
        let gate = Gate { max_error_rate: Some(0.01), max_p99_ms: Some(800), ..Gate::default() };
        let mut window = counts(90, 10, 100, 0);
        window.buckets[1][0] = 100;
        let report = judge(&gate, &window);
        assert_eq!((report.verdict, report.failed), ("fail", 1));
        assert_eq!(
            report.failed_limits(&gate),
            vec![FailedLimit { limit: "max_error_rate", value: 0.01, measured: 0.1 }]
        );
        let cells = RampCells::default();
        cells.remember(&report);
        assert_eq!(cells.last_gate().unwrap().failed, 1, "kept in the zone");
    }

    /// What a decision made now would carry.
    fn stamp(cells: &RampCells) -> RampStamp {
        cells.in_force().and_then(|f| f.stamp).expect("a ramp's cells give a stamp")
    }

    #[test]
    fn each_step_is_judged_on_its_own_window_of_split_responses() {
        let gate = Gate { min_requests: 2, max_error_rate: Some(0.5), ..Gate::default() };
        let r = ramp(&[100, 1000, 2000], 1000, Some(gate), OnFailure::Rollback, None);
        let cells = RampCells::default();
        cells.publish(Some(&r), fp(&r), 1, true, 0);
        cells.record(stamp(&cells), Target::New, 1, Some(1_000));
        cells.record(stamp(&cells), Target::New, 1, Some(1_000));
        cells.record(stamp(&cells), Target::Old, 4, Some(1_000));
        let before = cells.window();
        assert_eq!(
            (before.total(Target::New), before.total(Target::Old)),
            (2, 1),
            "step 0's window, as its gate reads it"
        );
        assert!(matches!(cells.tick(&r, fp(&r), 1000), Some(RampEvent::Advanced { step: 1, .. })));
        assert_eq!(cells.window(), ResponseCounts::default(), "a step begins with an empty window");
        // Step 1: only failures. Step 0's successes do not dilute them.
        cells.record(stamp(&cells), Target::New, 4, None);
        cells.record(stamp(&cells), Target::New, crate::responses::FAILED, None);
        assert!(matches!(cells.tick(&r, fp(&r), 2000), Some(RampEvent::Failed { step: 1, .. })));
        // A restart empties it too.
        cells.record(stamp(&cells), Target::New, 1, None);
        cells.publish(Some(&r), fp(&r), 2, true, 3000);
        assert_eq!(cells.window(), ResponseCounts::default());
    }

    #[test]
    fn a_response_counts_only_in_the_window_of_the_step_it_was_decided_under() {
        let gate = Gate { min_requests: 2, max_error_rate: Some(0.5), ..Gate::default() };
        let r = ramp(&[100, 1000, 2000], 1000, Some(gate), OnFailure::Rollback, None);
        let cells = RampCells::default();
        cells.publish(Some(&r), fp(&r), 1, true, 0);
        let step_0 = stamp(&cells);
        assert_eq!(cells.in_force().map(|f| f.bp), Some(100), "the stamp comes with the step's percentage");
        assert!(cells.record(step_0, Target::New, 1, Some(1_000)));
        assert!(cells.record(step_0, Target::New, 1, Some(1_000)));
        // Three slow failures decided under step 0 end after step 1 began.
        assert!(matches!(cells.tick(&r, fp(&r), 1000), Some(RampEvent::Advanced { step: 1, .. })));
        for _ in 0..3 {
            assert!(!cells.record(step_0, Target::New, crate::responses::FAILED, None), "not step 1's evidence");
        }
        assert_eq!(cells.window(), ResponseCounts::default());
        assert_eq!(cells.tick(&r, fp(&r), 2000), None, "step 1 has no response of its own: it waits");
        assert!(cells.record(stamp(&cells), Target::New, 1, None));
        assert!(cells.record(stamp(&cells), Target::New, 1, None));
        assert!(matches!(cells.tick(&r, fp(&r), 2000), Some(RampEvent::Advanced { step: 2, .. })));
        // A publication that starts the ramp again voids the stamps read before it,
        // even on the same step; one that keeps the ramp keeps them.
        let kept = stamp(&cells);
        assert_eq!(cells.publish(Some(&r), fp(&r), 2, true, 2500), Publication::Kept);
        assert!(cells.record(kept, Target::New, 1, None), "a publication that keeps the ramp keeps its stamps");
        let other = ramp(&[100, 1000, 2000], 2000, None, OnFailure::Rollback, None);
        assert_eq!(cells.publish(Some(&other), fp(&other), 3, true, 3000), Publication::Started);
        assert!(!cells.record(kept, Target::New, 1, None), "decided under the previous ramp");
        assert!(cells.record(stamp(&cells), Target::New, 1, None));
        // Without a ramp no stamp is given, and an old one counts nowhere.
        let last = stamp(&cells);
        cells.publish(None, 0, 0, true, 4000);
        assert_eq!(cells.in_force(), None);
        assert!(!cells.record(last, Target::New, 1, None));
    }

    #[test]
    fn a_stamp_read_before_the_ramp_was_removed_counts_in_no_window_when_it_comes_back() {
        // With `start`, the same step begins at the same time whenever it is
        // published: only the restart count tells the two publications apart.
        let r = ramp(&[100, 1000], 10_000, None, OnFailure::Rollback, Some(0));
        let cells = RampCells::default();
        assert_eq!(cells.publish(Some(&r), fp(&r), 1, true, 1_000), Publication::Started);
        let before = stamp(&cells);
        assert_eq!(cells.publish(None, 0, 0, true, 2_000), Publication::None);
        assert_eq!(cells.in_force(), None, "no ramp");
        assert_eq!(cells.publish(Some(&r), fp(&r), 1, true, 3_000), Publication::Started);
        assert_eq!(cells.step_started_ms(), 0, "the same step, begun at the same time");
        assert_ne!(Some(before), cells.in_force().and_then(|f| f.stamp));
        assert!(!cells.record(before, Target::New, 1, None), "decided under the ramp before its removal");
    }

    #[test]
    fn a_start_before_1970_begins_its_steps_at_0_without_overflow() {
        // A start of 1969-12-31T23:59:59.999Z, one step a millisecond.
        let r = ramp(&[983, 10_000], 1, None, OnFailure::Rollback, Some(-1));
        let cells = RampCells::default();
        assert_eq!(cells.publish(Some(&r), fp(&r), 1, true, 0), Publication::Started);
        assert_eq!((cells.state(), cells.step(&r), cells.step_started_ms()), (Some(RampState::Done), 1, 0));
        let far = ramp(&[983, 5_000, 10_000], 1_000, None, OnFailure::Rollback, Some(-62_167_219_200_000));
        let cells = RampCells::default();
        cells.publish(Some(&far), fp(&far), 1, true, 1_000);
        assert_eq!((cells.state(), cells.step_started_ms()), (Some(RampState::Done), 0));
        assert_eq!(step_start(-1, 1, 1), 0);
        assert_eq!(step_start(1_000, 2, 500), 2_000);
        assert_eq!(step_start(0, 2, u64::MAX), i64::MAX as u64, "saturates");
    }

    #[test]
    fn a_process_on_another_ramp_decides_with_the_zone_s_percentage_but_gives_no_stamp() {
        let r = ramp(&[100, 1000], 1000, None, OnFailure::Rollback, None);
        let cells = RampCells::default();
        cells.publish(Some(&r), fp(&r), 1, true, 0);
        let ours = cells.in_force_for(fp(&r), 1).expect("a ramp");
        assert_eq!((ours.bp, ours.stamp), (100, cells.in_force().and_then(|f| f.stamp)));
        for (other, outcome) in [(0, 1), (fp(&r) ^ 2, 1), (fp(&r), 3)] {
            let theirs = cells.in_force_for(other, outcome).expect("a ramp");
            assert_eq!((theirs.bp, theirs.stamp), (100, None), "fingerprint {other}, outcome {outcome}");
        }
        cells.publish(None, 0, 0, true, 1);
        assert_eq!(cells.in_force_for(0, 0), None, "no ramp: nothing in force");
    }
}
