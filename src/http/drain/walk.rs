//! Deciding a worker's long-lived requests again, in slices of the event
//! loop: a walk over the list promotes the requests open past `after`, decides
//! the long-lived ones again when what decides the sides moved, and notes the
//! misplaced ones of services with `drain` for `close.rs` to close.

use core::hash::{Hash, Hasher};
use core::ptr;
use std::sync::Arc;

use migration_engine::{RequestView, Target};
use ngx::ffi::{ngx_cycle, ngx_http_request_t, NGX_LOG_INFO};
use ngx::ngx_log_error;

use super::{became_long_lived, copy_variable, set_counted_in, with_counted_cells, Carried, Entry, List, LIST};
use crate::http::decision::RequestDecision;
use crate::http::request::NgxRequestView;
use crate::state::live::LiveConfig;

/// One walk over the list: where the next slice starts, and what it found so far.
pub(super) struct Walk {
    next: usize,
    /// The sides moved since the previous walk: every long-lived request is
    /// decided again.
    moved: bool,
    decided: usize,
    newly_misplaced: usize,
    slices: u32,
    /// Event-loop time of its slices, in all and the longest.
    spent_us: u128,
    longest_us: u128,
    /// (since_ms, index) of the misplaced requests of services with `drain`.
    victims: Vec<(u64, u32)>,
}

/// At most this many requests are decided again in one slice of a walk (about
/// 1 ms of the event loop at 0.3 us each, measured in bench/drain-scale.sh);
/// the next slice follows a millisecond later.
const SLICE: usize = 4096;

/// A slice also ends once it has taken this long: deciding a request again
/// reads the copy of its headers, and a client can send 32 KB of cookies (66 us
/// a decision with a cookie rule and a cookie key, measured), so a count alone
/// would let 4,096 such requests hold the event loop for a quarter of a second.
const SLICE_TIME: std::time::Duration = std::time::Duration::from_millis(1);

/// The clock is read after every this many decisions of a slice (a read costs
/// about as much as a decision of a plain request).
const CLOCK_EVERY: usize = 16;

/// What decides the sides now: the generation, and per service the percentage
/// in force, the breaker's state and `enabled` (part of the generation).
fn world(live: &LiveConfig) -> u64 {
    let mut h = ahash::AHasher::default();
    live.generation.hash(&mut h);
    for slot in live.slots.iter() {
        slot.ramp.percentage_in_force().hash(&mut h);
        (slot.breaker.state() as u8).hash(&mut h);
    }
    h.finish()
}

pub(super) enum Slice {
    /// No request is listed.
    Empty,
    /// The walk goes on at the next firing.
    More,
    /// The walk is over; `pending` holds what it found.
    Done,
}

/// One slice of a walk: promotes the requests open past `after`, decides the
/// long-lived ones again when the sides moved (at most [`SLICE`] of them, for
/// at most about [`SLICE_TIME`]), and
/// notes the misplaced ones of services with `drain`.
pub(super) fn walk_slice(live: &Arc<LiveConfig>, now: u64) -> Slice {
    let started = std::time::Instant::now();
    // Read when a walk begins (every service's cells: not again for each slice).
    let world = if LIST.with(|list| list.borrow().walk.is_none()) { world(live) } else { 0 };
    // Counted in the zone after the list is let go.
    let mut changes: Vec<(u32, *const RequestDecision, Change)> = Vec::new();
    let mut finished = None;
    let empty = LIST.with(|list| {
        let mut list = list.borrow_mut();
        let list = &mut *list;
        if list.entries.len() == list.free.len() {
            // Nothing listed: a burst's memory goes back to the allocator (no
            // request holds an index: each one's cleanup took its own out).
            *list = List { world: list.world, walked_ms: list.walked_ms, ..List::default() };
            return true;
        }
        let walk = list.walk.get_or_insert_with(|| {
            list.walked_ms = now;
            let moved = list.world != world;
            list.world = world;
            Walk {
                next: 0,
                moved,
                decided: 0,
                newly_misplaced: 0,
                slices: 0,
                spent_us: 0,
                longest_us: 0,
                victims: Vec::new(),
            }
        });
        let mut decided_here = 0;
        let mut out_of_time = false;
        while walk.next < list.entries.len() && decided_here < SLICE && !out_of_time {
            let index = walk.next;
            walk.next += 1;
            let Some(e) = &mut list.entries[index] else { continue };
            // SAFETY: a listed request is live: its pool's cleanup takes it out.
            let d = unsafe { &*e.decision };
            // SAFETY: as above.
            let r = unsafe { &mut *e.r };
            if e.closing || ended(r) {
                continue;
            }
            // Still streaming: its response began (a request still waiting for
            // its upstream's answer is a slow one, not a stream).
            let promote = !e.long_lived && r.header_sent() != 0 && now.saturating_sub(e.since_ms) >= e.after_ms;
            if promote {
                e.long_lived = true;
                changes.push((index as u32, d, Change::LongLived));
            }
            let fresh = core::mem::take(&mut e.fresh);
            if e.long_lived && (walk.moved || promote || fresh) {
                decided_here += 1;
                let misplaced =
                    belongs(live, r, d, e.carried.as_deref_mut()).is_some_and(|t| Some(t) != d.decision.target);
                out_of_time = decided_here % CLOCK_EVERY == 0 && started.elapsed() >= SLICE_TIME;
                if misplaced != e.misplaced {
                    e.misplaced = misplaced;
                    walk.newly_misplaced += usize::from(misplaced);
                    changes.push((index as u32, d, if misplaced { Change::Misplaced } else { Change::Placed }));
                }
            }
            if e.long_lived && e.misplaced && drains(live, d) {
                walk.victims.push((e.since_ms, index as u32));
            }
        }
        walk.decided += decided_here;
        walk.slices += 1;
        let spent = started.elapsed().as_micros();
        walk.spent_us += spent;
        walk.longest_us = walk.longest_us.max(spent);
        if walk.next >= list.entries.len() {
            let mut walk = list.walk.take().expect("a walk under way");
            walk.victims.sort_unstable();
            list.pending = walk.victims.iter().map(|&(_, index)| index).collect();
            list.trim();
            let held = list.entries.capacity() * core::mem::size_of::<Option<Entry>>()
                + list.free.capacity() * 4
                + list.pending.capacity() * 4;
            finished = Some((walk, held));
        }
        false
    });
    // In order: a request made long-lived in this slice has its slot before
    // its misplaced count goes there.
    for (index, d, change) in changes {
        // SAFETY: the requests are still listed: nothing ended them since.
        let d = unsafe { &*d };
        let delta = match change {
            Change::LongLived => {
                set_counted_in(index, became_long_lived(d));
                continue;
            }
            Change::Misplaced => 1,
            Change::Placed => u64::MAX,
        };
        let counted_in = LIST.with(|list| list.borrow().entries.get(index as usize)?.as_ref()?.counted_in);
        if let Some(counted_in) = counted_in {
            with_counted_cells(d, counted_in, |cells| cells.add_misplaced(delta));
        }
    }
    if empty {
        return Slice::Empty;
    }
    let Some((walk, held_bytes)) = finished else { return Slice::More };
    if walk.moved && walk.decided > 0 {
        // SAFETY: ngx_cycle is the running cycle; its log lives as long as it.
        let log = unsafe { (*ngx_cycle).log };
        ngx_log_error!(
            NGX_LOG_INFO,
            log,
            "migration: {} long-lived requests decided again in {} us, {} slice(s), the longest {} us \
             ({} newly misplaced; list {} bytes)",
            walk.decided,
            walk.spent_us,
            walk.slices,
            walk.longest_us,
            walk.newly_misplaced,
            held_bytes
        );
    }
    Slice::Done
}

enum Change {
    LongLived,
    Misplaced,
    Placed,
}

/// Whether what an upgraded request carried holds the `user_key: var:NAME`
/// that the configuration names now; if not (a configuration published after
/// the upgrade named another variable), it is read from the request once, as
/// it is then, and kept (an absent one as empty). Without it every such
/// request would be drawn again, and about half of those on their side closed.
/// false when it cannot be read truthfully: the client sent bytes behind its
/// handshake, and nginx may have read its later bytes over the request's
/// headers and arguments, from which `$http_…`, `$arg_…`, `$cookie_…` and a
/// `map` of them are read.
fn carry_user_variable(live: &LiveConfig, index: usize, r: &mut ngx_http_request_t, carried: &mut Carried) -> bool {
    let Some(name) = live.config.services.get(index).and_then(|s| s.user_variable()) else { return true };
    if RequestView::variable(&carried.request, name.as_bytes()).is_some() {
        return true;
    }
    if !carried.header_bytes_intact {
        return false;
    }
    // SAFETY: `r` is live (listed) for this call.
    let view = unsafe { NgxRequestView::new(r) };
    copy_variable(&view, name, &mut carried.request);
    true
}

/// nginx is done with the request (finalized, lingering or kept alive): it
/// is no long-lived request any more, whatever its pool still holds.
pub(super) fn ended(r: &ngx_http_request_t) -> bool {
    // SAFETY: the request's connection outlives it.
    r.done() != 0 || unsafe { (*r.connection).destroyed() } != 0
}

/// Whether the request's service closes misplaced requests (`drain`), as the
/// configuration is now.
fn drains(live: &LiveConfig, d: &RequestDecision) -> bool {
    d.live_slot().is_some_and(|(now, i)| ptr::eq(&*now, live) && live.config.services[i].drain.is_some())
}

/// Where the request belongs now, from what it carried: copied at its
/// upgrade, else read from the request. None when its service is gone, or
/// when what decides it cannot be known any more (see [`carry_user_variable`]):
/// it stays where it is.
fn belongs(
    live: &LiveConfig,
    r: &mut ngx_http_request_t,
    d: &RequestDecision,
    mut carried: Option<&mut Carried>,
) -> Option<Target> {
    let (_, index) = d.live_slot()?;
    if let Some(carried) = carried.as_deref_mut() {
        if !carry_user_variable(live, index, r, carried) {
            return None;
        }
    }
    let mut draw = || match d.drawn.get() {
        Some(number) => number,
        // Decided without a draw (a header rule, a user list): drawn now, once,
        // and kept, so that it never moves back and forth.
        None => {
            let number = crate::random::draw();
            d.drawn.set(Some(number));
            number
        }
    };
    let slot = &live.slots[index];
    let (percentage, breaker) = (slot.ramp.percentage_in_force(), slot.breaker.state());
    match carried.as_deref() {
        Some(carried) => migration_engine::drain::belongs(
            &live.config,
            index as u32,
            &carried.request,
            &mut draw,
            percentage,
            breaker,
        ),
        None => {
            // SAFETY: `r` is live (listed) for this call.
            let view = unsafe { NgxRequestView::replaying(r, d.minted) };
            migration_engine::drain::belongs(&live.config, index as u32, &view, &mut draw, percentage, breaker)
        }
    }
}
