//! The position word of a ramp's cells: everything a transition changes, in one
//! `u64`, so that a transition is one compare-and-swap.

use super::RampState;

/// The position word: `restarts:5 | started_ms:42 | step_bp:14 | state:3`.
/// 42 bits of Unix milliseconds reach the year 2109; a step's percentage is at
/// most 10,000 basis points; the restart count (every publication that starts
/// the ramp again moves it, and a publication without the ramp keeps it) makes
/// a word read before a restart differ from any word after it, so that a tick
/// that read it cannot swap it and a response decided under it joins no later
/// window. The count has 5 bits: a word can come back after 32 restarts, and
/// only with the same step start, which only a ramp with `start` gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) restarts: u64,
    pub(super) started_ms: u64,
    pub(super) step_bp: u32,
    pub(super) state: RampState,
}

const STATE_BITS: u32 = 3;
const BP_BITS: u32 = 14;
const STARTED_BITS: u32 = 42;
const RESTART_BITS: u32 = 64 - STARTED_BITS - BP_BITS - STATE_BITS;
/// Where the restart count begins: the one field a word without a ramp keeps.
const RESTART_SHIFT: u32 = STARTED_BITS + BP_BITS + STATE_BITS;

fn mask(bits: u32) -> u64 {
    (1u64 << bits) - 1
}

impl Position {
    pub(super) fn pack(self) -> u64 {
        Self::no_ramp(self.restarts)
            | (self.started_ms & mask(STARTED_BITS)) << (BP_BITS + STATE_BITS)
            | (u64::from(self.step_bp) & mask(BP_BITS)) << STATE_BITS
            | self.state.code()
    }

    pub(super) fn unpack(word: u64) -> Option<Position> {
        Some(Position {
            state: RampState::from_code(word & mask(STATE_BITS))?,
            step_bp: ((word >> STATE_BITS) & mask(BP_BITS)) as u32,
            started_ms: (word >> (BP_BITS + STATE_BITS)) & mask(STARTED_BITS),
            restarts: Self::restarts_of(word),
        })
    }

    /// The restart count a word holds, a position's or [`Position::no_ramp`]'s.
    pub(super) fn restarts_of(word: u64) -> u64 {
        word >> RESTART_SHIFT
    }

    /// The word of cells without a ramp that keeps the restart count (state
    /// code 0: it unpacks to no position); a position's word adds its other
    /// fields to it.
    pub(super) fn no_ramp(restarts: u64) -> u64 {
        (restarts & mask(RESTART_BITS)) << RESTART_SHIFT
    }

    /// What the decision uses: 0 before `start` and after a rollback.
    pub(super) fn in_force(self) -> u32 {
        match self.state {
            RampState::Scheduled | RampState::RolledBack => 0,
            _ => self.step_bp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_word_round_trips() {
        for (restarts, started_ms, step_bp, state) in [
            (0, 0, 0, RampState::Scheduled),
            (1, 1_796_000_000_123, 100, RampState::Ramping),
            (31, (1 << 42) - 1, 10_000, RampState::RolledBack),
            (7, 4_102_444_800_000, 16_383, RampState::Held),
            (5, 1, 1, RampState::Done),
        ] {
            let p = Position { restarts, started_ms, step_bp, state };
            assert_eq!(Position::unpack(p.pack()), Some(p));
        }
        // The restart count keeps its low bits; zero is no ramp.
        let p = Position { restarts: 33, started_ms: 9, step_bp: 5, state: RampState::Ramping };
        assert_eq!(Position::unpack(p.pack()).map(|p| p.restarts), Some(1));
        assert_eq!(Position::unpack(0), None);
    }
}
