//! Long-lived requests follow the split (`migration.drain`, docs/drain.md): where
//! a request held open belongs now, and the pace at which the misplaced ones are
//! closed. The nginx side keeps the requests and closes them; what is decided
//! and when is here, without nginx types.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::decide::{decide_with, Breakers, Rule, ServiceChoice};
use crate::ramp::RampInForce;
use crate::request::RequestView;
use crate::{BreakerCells, BreakerState, CompiledConfig, Target};

/// Where a long-lived request of service `index` belongs now: the decision order
/// again, on what the request carried (its headers, id, client address), with
/// the percentage in force and the breaker's state as they are now. `draw` gives
/// the number the request drew (a weight decision keeps it).
///
/// Nothing changes by asking: a breaker that is open or half-open sends the
/// request to old (its one trial belongs to a new request), and no trial permit
/// or transition is taken.
pub fn belongs<R: RequestView>(
    config: &CompiledConfig,
    index: u32,
    request: &R,
    draw: &mut dyn FnMut() -> u32,
    percentage_in_force: Option<u32>,
    breaker: BreakerState,
) -> Option<Target> {
    struct AsNow(Option<u32>);
    impl Breakers for AsNow {
        fn breaker(&self, _: u32) -> Option<&BreakerCells> {
            None
        }
        fn now_ms(&self) -> u64 {
            0
        }
        fn ramp_in_force(&self, _: u32) -> Option<RampInForce> {
            // Asking where a request belongs counts nothing in a ramp's window.
            self.0.map(RampInForce::unstamped)
        }
    }
    let service = config.services.get(index as usize)?;
    let decision = decide_with(config, ServiceChoice::Index(index), request, draw, &AsNow(percentage_in_force));
    let diverted = service.fallback.is_some()
        && breaker != BreakerState::Closed
        && !matches!(decision.rule, Rule::Disabled | Rule::Header);
    if diverted {
        return Some(Target::Old);
    }
    decision.target
}

/// The pace of closes of one service in one nginx instance, shared by its
/// workers (in the zone): one close every `interval_us`, never two at once. A
/// close that comes a little late (the timer's granularity) keeps the grid, so
/// `n` closes spread over `(n - 1) * interval`.
#[derive(Default)]
#[repr(C)]
pub struct DrainPace {
    /// When the next close may happen (microseconds, nginx's monotonic clock).
    next_us: AtomicU64,
}

/// How far behind its grid the pace may catch up. A worker's timer fires about
/// once a millisecond at best, so a rate above 1000/s needs several closes per
/// firing; after a longer pause the grid starts again, with no burst.
pub const CATCH_UP_US: u64 = 5_000;

impl DrainPace {
    /// Takes the right to close one request now; else how long to wait.
    pub fn take(&self, now_us: u64, interval_us: u64) -> Result<(), u64> {
        let mut next = self.next_us.load(Ordering::Relaxed);
        loop {
            if next > now_us {
                if next - now_us <= interval_us {
                    return Err(next - now_us);
                }
                // Due later than the rate allows: the rate was raised since the
                // last close (30/m to 20/s, say). The new rate holds from now.
                match self.next_us.compare_exchange_weak(
                    next,
                    now_us + interval_us,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Err(interval_us),
                    Err(seen) => {
                        next = seen;
                        continue;
                    }
                }
            }
            // Never closed before (zero): the grid starts now.
            let keeps_grid = next != 0 && now_us - next < interval_us.max(CATCH_UP_US);
            let after = if keeps_grid { next + interval_us } else { now_us + interval_us };
            match self.next_us.compare_exchange_weak(next, after, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(seen) => next = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::OwnedRequest as TestRequest;

    fn service(yaml_migration: &str) -> CompiledConfig {
        let yaml = format!(
            "services:\n  - name: s\n    old_host: old.example\n    old_backend: old:80\n    \
             new_host: new.example\n    new_backend: new:80\n    migration:\n{yaml_migration}    \
             fallback:\n      failures: 3\n"
        );
        crate::load_str("t.yaml", &yaml).unwrap()
    }

    #[test]
    fn a_weight_draw_keeps_its_number_and_follows_the_percentage() {
        let config = service("      percentage: 0\n      drain:\n        rate: 20/s\n");
        let request = TestRequest::new("old.example");
        let mut low = || 0x1000_0000u32; // about 6 %
        assert_eq!(belongs(&config, 0, &request, &mut low, None, BreakerState::Closed), Some(Target::Old));
        assert_eq!(belongs(&config, 0, &request, &mut low, Some(1000), BreakerState::Closed), Some(Target::New));
        let mut high = || 0xF000_0000u32; // about 94 %
        assert_eq!(belongs(&config, 0, &request, &mut high, Some(5000), BreakerState::Closed), Some(Target::Old));
    }

    #[test]
    fn an_open_or_half_open_breaker_sends_to_old_but_a_header_rule_stays() {
        let config = service(
            "      percentage: 100\n      drain:\n        rate: 20/s\n    canary:\n      header_rules:\n        \
             - header: X-Pin\n          value: new\n          target: new\n",
        );
        let plain = TestRequest::new("old.example");
        let mut draw = || 0u32;
        for state in [BreakerState::Open, BreakerState::HalfOpen] {
            assert_eq!(belongs(&config, 0, &plain, &mut draw, None, state), Some(Target::Old));
        }
        assert_eq!(belongs(&config, 0, &plain, &mut draw, None, BreakerState::Closed), Some(Target::New));
        let pinned = TestRequest::new("old.example").header("X-Pin", "new");
        assert_eq!(belongs(&config, 0, &pinned, &mut draw, None, BreakerState::Open), Some(Target::New));
    }

    #[test]
    fn closes_are_paced_one_interval_apart_across_workers() {
        let pace = DrainPace::default();
        assert_eq!(pace.take(1_000_000, 50_000), Ok(()));
        assert_eq!(pace.take(1_000_000, 50_000), Err(50_000));
        assert_eq!(pace.take(1_030_000, 50_000), Err(20_000));
        // A timer 3 ms late keeps the grid: the next is due at 1.1 s, not 1.103 s.
        assert_eq!(pace.take(1_053_000, 50_000), Ok(()));
        assert_eq!(pace.take(1_099_000, 50_000), Err(1_000));
        assert_eq!(pace.take(1_100_000, 50_000), Ok(()));
        // After a pause, no burst: one now, the next an interval later.
        assert_eq!(pace.take(9_000_000, 50_000), Ok(()));
        assert_eq!(pace.take(9_000_000, 50_000), Err(50_000));
        // A whole interval late is a pause too (keeping the grid would allow
        // a second close at once).
        assert_eq!(pace.take(9_100_000, 50_000), Ok(()));
        assert_eq!(pace.take(9_100_000, 50_000), Err(50_000));
    }

    #[test]
    fn a_raised_rate_holds_at_once() {
        let pace = DrainPace::default();
        assert_eq!(pace.take(1_000_000, 60_000_000), Ok(()), "1/m: the next in a minute");
        assert_eq!(pace.take(2_000_000, 60_000_000), Err(59_000_000));
        // Raised to 20/s: the next within 50 ms, not 59 s later.
        assert_eq!(pace.take(2_000_000, 50_000), Err(50_000));
        // 50 ms from the raise, not from a moment before it.
        assert_eq!(pace.take(2_010_000, 50_000), Err(40_000));
        assert_eq!(pace.take(2_050_000, 50_000), Ok(()));
        assert_eq!(pace.take(2_050_000, 50_000), Err(50_000));
    }

    #[test]
    fn a_fast_rate_catches_up_within_a_timer_firing_but_never_bursts_after_a_pause() {
        // 10000/s: 100 us apart; a timer that fires 1 ms late closes the ten due.
        let pace = DrainPace::default();
        assert_eq!(pace.take(1_000_000, 100), Ok(()));
        let due = (0..20).filter(|_| pace.take(1_001_000, 100).is_ok()).count();
        assert_eq!(due, 10, "the ten due by 1.001 s (1.0001 .. 1.001)");
        assert_eq!(pace.take(1_001_000, 100), Err(100));
        // Idle for a second: the grid starts again, one close, no catching up.
        assert_eq!(pace.take(2_001_000, 100), Ok(()));
        assert_eq!(pace.take(2_001_000, 100), Err(100));
    }
}
