//! The fallback breaker of docs/fallback.md: one per service, shared by every
//! worker, as a small state machine over atomics (the nginx layer keeps the
//! cells in its shared zone; tests keep them on the heap).
//!
//! ```text
//!            `failures` consecutive failures                 cooldown elapsed
//!   Closed ─────────────────────────────────▶ Open ─────────────────────────▶ HalfOpen
//!     ▲                                        ▲                                  │
//!     │                 the trial failed       └──────────────────────────────────┤
//!     └────────────────────────────────────────── the trial succeeded ────────────┘
//! ```
//!
//! While Open, every request that header rules do not decide goes to old; in
//! HalfOpen exactly one request at a time (the trial) may go to new. Each call
//! that changes the state returns the [`Transition`], once, to whoever made it,
//! so it is logged once however many workers race.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::report::BreakerState;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;

/// A breaker's shared state. All zeros is a closed breaker, so zeroed shared
/// memory is a valid set of cells.
#[repr(C)]
#[derive(Debug, Default)]
pub struct BreakerCells {
    state: AtomicU64,
    consecutive_failures: AtomicU64,
    trips: AtomicU64,
    /// When the breaker last opened (caller's monotonic milliseconds).
    opened_at_ms: AtomicU64,
    /// When the trial in flight started, plus one (0: no trial in flight).
    trial_started_ms: AtomicU64,
}

/// The one trial permit of a half-open breaker, as the request that took it
/// holds it: the stamp its cells recorded. A trial that outlives a cooldown has
/// its permit taken over (its worker may have died), and the stamp tells the
/// late one apart from the trial in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrialPermit(u64);

/// What decision step 4 may do for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// New is healthy: decide as usual.
    Pass,
    /// New is failing: to old.
    Divert,
    /// Probing: the request may go to new only as the one trial.
    Probe,
}

/// How a request routed to new ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A status of `statuses`, a failed connection or a timeout; carries the status.
    Failure(u16),
    /// No answer from new either way (no upstream, or the client left first).
    Inconclusive,
}

/// A change of state, reported once to the caller that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Closed → Open after this many consecutive failures; the last status.
    Opened { failures: u64, status: u16 },
    /// Open → HalfOpen: the cooldown is over, a trial may go.
    HalfOpened,
    /// HalfOpen → Closed: the trial succeeded.
    Closed,
    /// HalfOpen → Open: the trial failed with this status.
    Reopened { status: u16 },
}

impl BreakerCells {
    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    pub fn consecutive_failures(&self) -> u64 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Times the breaker opened (re-openings after a failed trial included).
    pub fn trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    /// Decision step 4 for a request at `now_ms`; moves Open to HalfOpen once the
    /// cooldown is over.
    pub fn gate(&self, now_ms: u64, cooldown_ms: u64) -> (Gate, Option<Transition>) {
        match self.state.load(Ordering::Acquire) {
            CLOSED => (Gate::Pass, None),
            OPEN => {
                let opened = self.opened_at_ms.load(Ordering::Acquire);
                if now_ms.saturating_sub(opened) < cooldown_ms {
                    return (Gate::Divert, None);
                }
                let moved = self.state.compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire).is_ok();
                (Gate::Probe, moved.then_some(Transition::HalfOpened))
            }
            _ => (Gate::Probe, None),
        }
    }

    /// Takes the one trial permit of a half-open breaker. A permit whose request
    /// never reported (its worker died) is taken over after a cooldown.
    pub fn begin_trial(&self, now_ms: u64, cooldown_ms: u64) -> Option<TrialPermit> {
        let started = self.trial_started_ms.load(Ordering::Acquire);
        let stale = started != 0 && now_ms.saturating_sub(started - 1) >= cooldown_ms;
        if started != 0 && !stale {
            return None;
        }
        // Saturating: at the very end of the clock a permit still reads as taken
        // (a wrapped 0 would read as free and let every request be a trial).
        // Cooldowns are at least 100 ms, so a permit taken over gets another stamp.
        let taken = now_ms.saturating_add(1);
        self.trial_started_ms
            .compare_exchange(started, taken, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then_some(TrialPermit(taken))
    }

    /// Records how a request routed to new ended. `trial` is the trial permit it
    /// took, if it took one. Outside a trial only a closed breaker counts
    /// outcomes: while open, the requests that still reach new (header rules)
    /// change nothing. A trial whose permit was taken over (it outlived a
    /// cooldown) no longer speaks for the breaker: its late outcome counts as an
    /// ordinary request's, and never undoes what the trial after it decided.
    pub fn record(
        &self,
        outcome: Outcome,
        trial: Option<TrialPermit>,
        failures_to_open: u32,
        now_ms: u64,
    ) -> Option<Transition> {
        if let Some(TrialPermit(stamp)) = trial.filter(|p| self.trial_started_ms.load(Ordering::Acquire) == p.0) {
            // Only a half-open breaker gives permits, and only the holder's
            // outcome moves it on: the state is still half-open here.
            let moved =
                |to: u64| self.state.compare_exchange(HALF_OPEN, to, Ordering::AcqRel, Ordering::Acquire).is_ok();
            let transition = match outcome {
                Outcome::Success => {
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                    moved(CLOSED).then_some(Transition::Closed)
                }
                Outcome::Failure(status) => {
                    self.opened_at_ms.store(now_ms, Ordering::Release);
                    let moved = moved(OPEN);
                    if moved {
                        self.trips.fetch_add(1, Ordering::Relaxed);
                    }
                    moved.then_some(Transition::Reopened { status })
                }
                Outcome::Inconclusive => None,
            };
            // Given back after the state moved: no request sees a free permit
            // of a breaker that is no longer half-open.
            let _ = self.trial_started_ms.compare_exchange(stamp, 0, Ordering::AcqRel, Ordering::Acquire);
            return transition;
        }
        if self.state.load(Ordering::Acquire) != CLOSED {
            return None;
        }
        match outcome {
            Outcome::Success => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                None
            }
            Outcome::Failure(status) => {
                let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
                if failures < u64::from(failures_to_open) {
                    return None;
                }
                // Whoever moves the state reports the trip; the opening time is
                // written first so that no reader sees Open with an old time.
                self.opened_at_ms.store(now_ms, Ordering::Release);
                self.state.compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire).ok()?;
                self.trips.fetch_add(1, Ordering::Relaxed);
                Some(Transition::Opened { failures, status })
            }
            Outcome::Inconclusive => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn opens_after_exactly_n_consecutive_failures() {
        let b = BreakerCells::default();
        for _ in 0..4 {
            assert_eq!(b.record(Outcome::Failure(502), None, 5, 10), None);
        }
        assert_eq!(b.consecutive_failures(), 4);
        assert_eq!(b.record(Outcome::Failure(503), None, 5, 10), Some(Transition::Opened { failures: 5, status: 503 }));
        assert_eq!((b.state(), b.trips()), (BreakerState::Open, 1));
        assert_eq!(b.gate(10, 1000), (Gate::Divert, None));
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = BreakerCells::default();
        for _ in 0..4 {
            b.record(Outcome::Failure(502), None, 5, 0);
        }
        b.record(Outcome::Success, None, 5, 0);
        for _ in 0..4 {
            assert_eq!(b.record(Outcome::Failure(502), None, 5, 0), None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.record(Outcome::Inconclusive, None, 5, 0), None);
        assert_eq!(b.consecutive_failures(), 4, "an inconclusive outcome neither resets nor counts");
    }

    #[test]
    fn cooldown_then_one_trial_at_a_time_then_closed() {
        let b = BreakerCells::default();
        b.record(Outcome::Failure(502), None, 1, 1000);
        assert_eq!(b.gate(1999, 1000), (Gate::Divert, None), "still cooling down");
        assert_eq!(b.gate(2000, 1000), (Gate::Probe, Some(Transition::HalfOpened)));
        assert_eq!(b.gate(2001, 1000), (Gate::Probe, None), "reported once");
        let permit = b.begin_trial(2001, 1000);
        assert!(permit.is_some());
        assert!(b.begin_trial(2002, 1000).is_none(), "one trial at a time");
        assert_eq!(b.record(Outcome::Failure(502), None, 1, 2003), None, "outcomes outside the trial change nothing");
        assert_eq!(b.record(Outcome::Success, permit, 1, 2004), Some(Transition::Closed));
        assert_eq!((b.state(), b.consecutive_failures(), b.trips()), (BreakerState::Closed, 0, 1));
        assert_eq!(b.gate(2005, 1000), (Gate::Pass, None));
    }

    #[test]
    fn a_failed_trial_reopens_for_another_cooldown() {
        let b = BreakerCells::default();
        b.record(Outcome::Failure(504), None, 1, 0);
        b.gate(100, 100);
        let permit = b.begin_trial(100, 100);
        assert!(permit.is_some());
        assert_eq!(b.record(Outcome::Failure(502), permit, 1, 150), Some(Transition::Reopened { status: 502 }));
        assert_eq!((b.state(), b.trips()), (BreakerState::Open, 2));
        assert_eq!(b.gate(249, 100), (Gate::Divert, None));
        assert_eq!(b.gate(250, 100).0, Gate::Probe);
    }

    #[test]
    fn an_inconclusive_trial_frees_the_permit() {
        let b = BreakerCells::default();
        b.record(Outcome::Failure(502), None, 1, 0);
        b.gate(100, 100);
        let permit = b.begin_trial(100, 100);
        assert!(permit.is_some());
        assert_eq!(b.record(Outcome::Inconclusive, permit, 1, 120), None);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let permit = b.begin_trial(121, 100);
        assert!(permit.is_some());
    }

    #[test]
    fn a_lost_trial_is_taken_over_after_a_cooldown() {
        let b = BreakerCells::default();
        b.record(Outcome::Failure(502), None, 1, 0);
        b.gate(100, 100);
        let permit = b.begin_trial(100, 100);
        assert!(permit.is_some());
        assert!(b.begin_trial(199, 100).is_none());
        let permit = b.begin_trial(200, 100);
        assert!(permit.is_some());
    }

    #[test]
    fn a_trial_taken_over_no_longer_speaks_for_the_breaker() {
        let open = || {
            let b = BreakerCells::default();
            b.record(Outcome::Failure(502), None, 1, 0);
            assert_eq!(b.gate(100, 100).0, Gate::Probe);
            b
        };
        // A slow trial outlives the cooldown; the next one closes the breaker.
        let b = open();
        let slow = b.begin_trial(100, 100);
        let next = b.begin_trial(200, 100);
        assert!(slow.is_some() && next.is_some() && slow != next, "taken over after a cooldown");
        assert_eq!(b.record(Outcome::Success, next, 1, 210), Some(Transition::Closed));
        // The slow one fails late: one failure of a closed breaker, not a re-opening.
        assert_eq!(b.record(Outcome::Failure(503), slow, 2, 220), None);
        assert_eq!((b.state(), b.trips(), b.consecutive_failures()), (BreakerState::Closed, 1, 1));

        // The next trial fails and re-opens it: the slow one's late success closes nothing.
        let b = open();
        let slow = b.begin_trial(100, 100);
        let next = b.begin_trial(200, 100);
        assert_eq!(b.record(Outcome::Failure(502), next, 1, 210), Some(Transition::Reopened { status: 502 }));
        assert_eq!(b.record(Outcome::Success, slow, 1, 220), None);
        assert_eq!(b.state(), BreakerState::Open);

        // The next trial is in flight: the slow one's late inconclusive end does not free its permit.
        let b = open();
        let slow = b.begin_trial(100, 100);
        let next = b.begin_trial(200, 100);
        assert_eq!(b.record(Outcome::Inconclusive, slow, 1, 210), None);
        assert_eq!(b.begin_trial(220, 100), None, "still one trial at a time");
        assert_eq!(b.record(Outcome::Success, next, 1, 230), Some(Transition::Closed));
    }

    /// Found by `cargo fuzz run decide` (engine/fuzz): `begin_trial` at the last
    /// millisecond of the clock overflowed `now_ms + 1` and panicked.
    #[test]
    fn a_trial_at_the_end_of_the_clock_does_not_overflow() {
        let b = BreakerCells::default();
        let permit = b.begin_trial(u64::MAX, 100);
        assert!(permit.is_some(), "no panic, and the permit is free");
        assert!(b.begin_trial(u64::MAX, 100).is_none(), "still one trial at a time");
        let b = BreakerCells::default();
        b.record(Outcome::Failure(502), None, 1, 0);
        assert_eq!(b.gate(u64::MAX, 100), (Gate::Probe, Some(Transition::HalfOpened)));
        let permit = b.begin_trial(u64::MAX, 100);
        assert!(permit.is_some());
        assert!(b.begin_trial(u64::MAX, 100).is_none());
        assert_eq!(b.record(Outcome::Success, permit, 1, u64::MAX), Some(Transition::Closed));
        let permit = b.begin_trial(u64::MAX, 100);
        assert!(permit.is_some(), "the permit was given back");
    }

    #[test]
    fn racing_threads_trip_it_once_and_share_one_trial() {
        let b = Arc::new(BreakerCells::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    (0..1000).filter_map(|_| b.record(Outcome::Failure(502), None, 100, 5)).count()
                })
            })
            .collect();
        let opened: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!((opened, b.trips()), (1, 1));
        assert_eq!(b.gate(10_000, 1000).0, Gate::Probe);
        let permits: usize = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..1000).filter(|_| b.begin_trial(10_001, 1000).is_some()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(permits, 1);
    }
}
