//! The ramp's position (docs/ramp.md): which step
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
//! Every worker calls [`RampCells::tick`]; a transition is one compare-and-swap
//! of the position word, which holds everything a transition changes (state,
//! the step's percentage, the step's start), so one worker makes it (and logs
//! it) and no worker ever reads a half-made one: a second worker can never
//! advance again from the previous step's start.
//!
//! Three guards keep processes that disagree from moving the ramp:
//! - a worker moves it only while the ramp it was compiled from is the one in
//!   the zone (the zone's fingerprint): a worker still on an older
//!   configuration (after a reload, before its signal; after a `watch=`
//!   publication, before its own compile) never advances a newer ramp;
//! - `enabled: false` freezes it in the zone, whatever a lagging worker
//!   believes, and frozen time does not count toward `every` (without `start`);
//! - a held or rolled-back ramp stays so until the service's migration block or
//!   its backends change (the outcome fingerprint), not on any edit of the file.
//!
//! The cells are in `cells.rs`, their position word in `position.rs`; a step's
//! gate, judged on the step's window of responses, in `gate.rs`.

mod cells;
mod gate;
mod position;

use crate::config::ramp::{OnFailure, Ramp};
use crate::hash::Threshold;

pub use cells::RampCells;
pub use gate::{judge, FailedLimit, GateReport, LIMITS};

/// The percentage a ramp puts in force, as a decision reads it, with the
/// position word it was read from when it comes from the cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RampInForce {
    pub bp: u32,
    pub stamp: Option<RampStamp>,
}

impl RampInForce {
    /// A percentage with no position behind it (a request that drain decides
    /// again, a test): its response joins no step's window.
    pub fn unstamped(bp: u32) -> RampInForce {
        RampInForce { bp, stamp: None }
    }
}

/// Which step of which ramp a decision was made under: the ramp's position word
/// when the decision read the percentage. The request's response joins the
/// step's window only while the word is unchanged ([`RampCells::record`]): one
/// decided under the step before, or under a ramp a publication started again
/// since, is not this step's evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RampStamp(core::num::NonZeroU64);

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
    /// A gate failed with `on_failure: rollback`: 0 % until the migration changes.
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

/// A transition, for its one log line.
#[derive(Clone, Debug, PartialEq)]
pub enum RampEvent {
    /// A step began (the first at `start`, or after the previous one's gate).
    Advanced { step: usize, percentage_bp: u32, done: bool },
    /// A gate failed; the ramp holds or rolls back.
    Failed { step: usize, action: OnFailure, gate: GateReport },
}

/// What a publication did to a service's ramp, for its log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publication {
    /// The service has no ramp.
    None,
    /// A new or changed ramp (or a stopped one whose migration changed) starts
    /// again: the step now in force began with this publication.
    Started,
    /// The ramp in the zone is this one: its position stays.
    Kept,
}

/// What identifies a service's ramp and percentage: a publication that keeps it
/// keeps the ramp's position.
pub fn fingerprint(ramp: &Ramp, percentage_bp: u32) -> u64 {
    crate::config::fnv1a64(format!("{ramp:?}/{percentage_bp}").as_bytes()) | 1
}

/// What identifies a service's migration block (percentage, ramp, strategy, user
/// key, salt, enabled) and its backends and hosts: a held or rolled-back ramp
/// stays so until it changes (a comment, another service's edit or a reload of
/// the same file keep the outcome).
///
/// `sticky` and `drain` are left out: they say how ids are handed out and how
/// open connections move, not who is sent to new. After a rollback an operator
/// raises `drain`'s rate to move connections off the failed cluster faster;
/// that edit must not hand it users again.
pub fn outcome_fingerprint(migration: &crate::config::Migration, endpoints: [&str; 4]) -> u64 {
    // No `..`: a field added to the block must be placed on one side or the other.
    let crate::config::Migration { enabled, strategy, percentage, user_key, hash_salt, ramp, sticky: _, drain: _ } =
        migration;
    let identity = format!("{enabled:?}/{strategy:?}/{percentage:?}/{user_key:?}/{hash_salt:?}/{ramp:?}/{endpoints:?}");
    crate::config::fnv1a64(identity.as_bytes()) | 1
}

/// The threshold of a percentage in force, for the decision.
#[inline]
pub fn threshold(bp: u32) -> Threshold {
    Threshold::from_basis_points(bp)
}

#[cfg(test)]
mod tests {
    use crate::responses::ResponseCounts;

    pub(super) fn counts(new_ok: u64, new_err: u64, old_ok: u64, old_err: u64) -> ResponseCounts {
        let mut c = ResponseCounts::default();
        c.classes[1][1] = new_ok;
        c.classes[1][4] = new_err;
        c.classes[0][1] = old_ok;
        c.classes[0][4] = old_err;
        c
    }

    /// Fingerprints are odd (0 is "none" in the zone) and tell apart what they
    /// identify: another percentage, migration block or backend.
    #[test]
    fn fingerprints_are_odd_and_differ_with_what_they_identify() {
        let config = crate::config::parse(
            "m.yaml",
            "services:\n  - {name: a, old_host: a, old_backend: \"o:1\", new_host: a, new_backend: \"n:1\", migration: {percentage: 5, ramp: {steps: [5, 50, 100], every: 10m}}}\n  - {name: b, old_host: b, old_backend: \"o:1\", new_host: b, new_backend: \"n:1\", migration: {percentage: 7, strategy: user}}\n",
        )
        .unwrap();
        let (a, b) = (&config.services[0], &config.services[1]);
        let ramp = a.migration.ramp.as_ref().unwrap();
        let mut seen = std::collections::HashSet::new();
        for bp in [500, 5000, 10000, 1, 2, 3] {
            let f = super::fingerprint(ramp, bp);
            assert_eq!(f & 1, 1, "odd: {f:#x}");
            assert!(seen.insert(f), "the percentage {bp} has a fingerprint of its own");
        }
        let endpoints = ["a", "o:1", "a", "n:1"];
        let mut seen = std::collections::HashSet::new();
        for (migration, endpoints) in [
            (&a.migration, endpoints),
            (&b.migration, endpoints),
            (&a.migration, ["a", "o:2", "a", "n:1"]),
            (&a.migration, ["a", "o:1", "a", "n:2"]),
            (&b.migration, ["b", "o:1", "b", "n:1"]),
        ] {
            let f = super::outcome_fingerprint(migration, endpoints);
            assert_eq!(f & 1, 1, "odd: {f:#x}");
            assert!(seen.insert(f), "{endpoints:?} has a fingerprint of its own");
        }
        assert_eq!(
            super::outcome_fingerprint(&a.migration, endpoints),
            super::outcome_fingerprint(&a.migration, endpoints),
            "the same block, the same fingerprint"
        );
    }

    #[test]
    fn a_rollback_outlives_edits_of_sticky_and_drain_but_not_of_the_split() {
        let service = |migration: &str| {
            let yaml = format!(
                "services:\n  - {{name: a, old_host: a, old_backend: \"o:1\", new_host: a, new_backend: \"n:1\", migration: {{strategy: user, user_key: \"cookie:uid\", percentage: 5, ramp: {{steps: [5, 50], every: 10m}}{migration}}}}}\n"
            );
            let config = crate::config::parse("m.yaml", &yaml).unwrap();
            super::outcome_fingerprint(&config.services[0].migration, ["a", "o:1", "a", "n:1"])
        };
        let before = service("");
        for kept in
            [", sticky: {}", ", sticky: {max_age: 1d}", ", drain: {rate: 50/s}", ", drain: {rate: 5/s, after: 1m}"]
        {
            assert_eq!(service(kept), before, "{kept}: the rollback stays");
        }
        for changed in [", hash_salt: s2", ", enabled: false"] {
            assert_ne!(service(changed), before, "{changed}: the ramp starts again");
        }
    }
}
