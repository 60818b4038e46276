//! Long-lived requests follow the split (docs/drain.md). A routed request is
//! long-lived when its response upgraded the connection (101: a WebSocket) or,
//! for a service with `drain`, when it is still open `drain.after` after its
//! decision (server-sent events, gRPC streams, long polling). Each worker keeps
//! its own in a list; its timer looks, every [`TICK_MS`], whether what decides
//! their side moved (the configuration, a percentage in force, a breaker), and
//! then decides each one again from what it carried (`migration_engine::drain::belongs`).
//! Those whose side differs are misplaced: counted always, and with `drain`
//! closed, oldest first, at the pace the service's cells in the zone give every
//! worker of the instance together — an HTTP/1 connection is closed, an HTTP/2
//! stream is reset — so that their clients reconnect and land on the right side.
//!
//! A worker that a reload retired stops following the configuration (its timers
//! are cancelled): its long-lived requests stay counted until they end, and
//! nginx closes them at `worker_shutdown_timeout`.

use core::cell::RefCell;
use core::hash::{Hash, Hasher};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use migration_engine::Target;
use ngx::ffi::{
    ngx_add_timer, ngx_current_msec, ngx_cycle, ngx_event_t, ngx_exiting, ngx_http_finalize_request,
    ngx_http_request_t, ngx_http_run_posted_requests, ngx_int_t, ngx_quit, ngx_terminate, NGX_ERROR, NGX_LOG_INFO,
};
use ngx::ngx_log_error;

use crate::http::decision::RequestDecision;
use crate::http::request::NgxRequestView;
use crate::state::live::LiveConfig;

/// How often a worker with long-lived requests looks whether their side moved.
const TICK_MS: u64 = 100;

/// "Not in the list", in [`RequestDecision::tracked`].
pub const UNTRACKED: u32 = u32::MAX;

/// One request of the list.
struct Entry {
    r: *mut ngx_http_request_t,
    decision: *const RequestDecision,
    /// When it was decided (nginx's monotonic milliseconds): oldest first.
    since_ms: u64,
    /// Open this long after `since_ms`, it is long-lived (u64::MAX: only an
    /// upgrade makes it so: its service has no `drain`).
    after_ms: u64,
    long_lived: bool,
    /// It became long-lived by an upgrade since the last look: decided again at
    /// the next, in case the sides moved between its decision and its 101.
    fresh: bool,
    /// It is misplaced now (counted in the zone while long-lived).
    misplaced: bool,
}

#[derive(Default)]
struct List {
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    /// What decided the sides when they were last looked at (see `world`).
    world: u64,
}

thread_local! {
    // A worker's event loop is one thread; the compile thread never comes here.
    static LIST: RefCell<List> = RefCell::new(List::default());
}

/// The worker's timer event (allocated once, when the first request is kept).
static EVENT: AtomicPtr<ngx_event_t> = AtomicPtr::new(ptr::null_mut());

/// Keeps a routed request of a service with `drain` (called once, when it is
/// counted): it becomes long-lived if it is still open after `drain.after`.
pub fn track(r: &mut ngx_http_request_t, d: &RequestDecision) {
    let Some(service) = d.decision.service.and_then(|i| d.published.config.services.get(i as usize)) else {
        return;
    };
    let Some(drain) = service.drain else { return };
    if !ptr::eq(r, r.main) || d.tracked.get() != UNTRACKED {
        return;
    }
    insert(r, d, drain.after_ms, false);
}

/// The response of `r` upgrades its connection (101, from the header filter).
pub fn upgraded_request(r: &mut ngx_http_request_t) {
    let Some(d) = crate::http::decision::existing(r) else { return };
    // SAFETY: the decision lives in the request pool, as long as the request.
    upgraded(r, unsafe { &*d });
}

/// The response upgraded the connection (101): the request is long-lived now.
pub fn upgraded(r: &mut ngx_http_request_t, d: &RequestDecision) {
    if !ptr::eq(r, r.main) || !d.counted.get() || d.decision.target.is_none() {
        return;
    }
    let index = d.tracked.get();
    if index == UNTRACKED {
        insert(r, d, u64::MAX, true);
        return;
    }
    let promoted = LIST.with(|list| {
        let mut list = list.borrow_mut();
        match list.entries.get_mut(index as usize) {
            Some(Some(e)) if !e.long_lived => {
                e.long_lived = true;
                e.fresh = true;
                true
            }
            _ => false,
        }
    });
    if promoted {
        became_long_lived(d);
    }
}

fn insert(r: &mut ngx_http_request_t, d: &RequestDecision, after_ms: u64, long_lived: bool) {
    // SAFETY: nginx's cached clock, updated by this process's event loop.
    let now = unsafe { ngx_current_msec } as u64;
    let entry = Entry { r, decision: d, since_ms: now, after_ms, long_lived, fresh: long_lived, misplaced: false };
    let index = LIST.with(|list| {
        let mut list = list.borrow_mut();
        match list.free.pop() {
            Some(i) => {
                list.entries[i as usize] = Some(entry);
                i
            }
            None => {
                list.entries.push(Some(entry));
                (list.entries.len() - 1) as u32
            }
        }
    });
    d.tracked.set(index);
    if long_lived {
        became_long_lived(d);
    }
    arm(TICK_MS);
}

/// Counts a request that became long-lived, on the side it was sent to.
fn became_long_lived(d: &RequestDecision) {
    if let (Some((live, index)), Some(target)) = (d.live_slot(), d.decision.target) {
        if let Some(cells) = live.slots[index].long_lived() {
            cells.add_connection(target, 1);
        }
    }
}

/// The request ends (its decision is dropped with its pool): out of the list and
/// of the counts.
pub fn untrack(d: &RequestDecision) {
    let index = d.tracked.replace(UNTRACKED);
    if index == UNTRACKED {
        return;
    }
    let Ok(Some(entry)) = LIST.try_with(|list| {
        let mut list = list.borrow_mut();
        let entry = list.entries.get_mut(index as usize).and_then(Option::take);
        if entry.is_some() {
            list.free.push(index);
        }
        entry
    }) else {
        return;
    };
    if !entry.long_lived {
        return;
    }
    if let (Some((live, slot)), Some(target)) = (d.live_slot(), d.decision.target) {
        if let Some(cells) = live.slots[slot].long_lived() {
            cells.add_connection(target, u64::MAX);
            if entry.misplaced {
                cells.add_misplaced(u64::MAX);
            }
        }
    }
}

fn arm(delay_ms: u64) {
    let mut ev = EVENT.load(Ordering::Relaxed);
    if ev.is_null() {
        // SAFETY: a zeroed event is valid (nginx allocates them zeroed too); it
        // lives as long as the process, in which only this thread touches it.
        ev = Box::into_raw(Box::new(unsafe { core::mem::zeroed::<ngx_event_t>() }));
        // SAFETY: `ev` was just allocated and is not armed; ngx_cycle is this
        // process's cycle, whose log lives as long as it.
        unsafe {
            (*ev).handler = Some(tick);
            (*ev).log = (*ngx_cycle).log;
            // A worker that shuts down does not wait for it.
            (*ev).set_cancelable(1);
        }
        EVENT.store(ev, Ordering::Relaxed);
    }
    // SAFETY: our event, on this process's event loop.
    unsafe {
        if (*ev).timer_set() == 0 || delay_ms < TICK_MS {
            ngx_add_timer(ev, delay_ms.max(1) as _);
        }
    }
}

unsafe extern "C" fn tick(_ev: *mut ngx_event_t) {
    // SAFETY: nginx's process-state flags, only written by its signal handlers.
    if unsafe { ngx_exiting != 0 || ngx_quit != 0 || ngx_terminate != 0 } {
        return;
    }
    let mut next = None;
    crate::guard::quiet("the drain timer", || next = pass());
    if let Some(delay) = next {
        arm(delay);
    }
}

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

/// One look: promotes the requests open past `after`, decides the long-lived
/// ones again when what decides the sides moved, and closes the misplaced ones
/// the pace allows. Returns when to look again (None: the list is empty).
fn pass() -> Option<u64> {
    let live = crate::state::live::current()?;
    // SAFETY: nginx's cached clock, updated by this process's event loop.
    let now = unsafe { ngx_current_msec } as u64;
    let world = world(&live);
    // Decided again here, counted after the list is let go.
    let mut changes: Vec<(*const RequestDecision, Change)> = Vec::new();
    let mut victims: Vec<(u64, u32, *mut ngx_http_request_t, *const RequestDecision)> = Vec::new();
    let started = std::time::Instant::now();
    let mut decided = 0usize;
    let mut moved = false;
    let (empty, held_bytes) = LIST.with(|list| {
        let mut list = list.borrow_mut();
        moved = list.world != world;
        list.world = world;
        for (index, slot) in list.entries.iter_mut().enumerate() {
            let Some(e) = slot else { continue };
            // SAFETY: a listed request is live: its pool's cleanup takes it out.
            let d = unsafe { &*e.decision };
            // SAFETY: as above.
            let r = unsafe { &mut *e.r };
            let promote = !e.long_lived && now.saturating_sub(e.since_ms) >= e.after_ms && !ended(r);
            if promote {
                e.long_lived = true;
                changes.push((d, Change::LongLived));
            }
            if ended(r) {
                continue;
            }
            let fresh = core::mem::take(&mut e.fresh);
            if !e.long_lived || !(moved || promote || fresh) {
                if e.misplaced && drains(&live, d) {
                    victims.push((e.since_ms, index as u32, e.r, e.decision));
                }
                continue;
            }
            decided += 1;
            let misplaced = belongs(&live, r, d).is_some_and(|t| Some(t) != d.decision.target);
            if misplaced != e.misplaced {
                e.misplaced = misplaced;
                changes.push((d, if misplaced { Change::Misplaced } else { Change::Placed }));
            }
            if misplaced && drains(&live, d) {
                victims.push((e.since_ms, index as u32, e.r, e.decision));
            }
        }
        let held = list.entries.capacity() * core::mem::size_of::<Option<Entry>>() + list.free.capacity() * 4;
        (list.entries.len() == list.free.len(), held)
    });
    if moved && decided > 0 {
        let misplaced = changes.iter().filter(|(_, c)| matches!(c, Change::Misplaced)).count();
        // SAFETY: ngx_cycle is the running cycle; its log lives as long as it.
        let log = unsafe { (*ngx_cycle).log };
        ngx_log_error!(
            NGX_LOG_INFO,
            log,
            "migration: {} long-lived requests decided again in {} us ({} newly misplaced; list {} bytes)",
            decided,
            started.elapsed().as_micros(),
            misplaced,
            held_bytes
        );
    }
    for (d, change) in changes {
        // SAFETY: the requests are still listed: nothing ended them since.
        let d = unsafe { &*d };
        let Some((live, slot)) = d.live_slot() else { continue };
        let Some(cells) = live.slots[slot].long_lived() else { continue };
        match change {
            Change::LongLived => {
                if let Some(target) = d.decision.target {
                    cells.add_connection(target, 1);
                }
            }
            Change::Misplaced => cells.add_misplaced(1),
            Change::Placed => cells.add_misplaced(u64::MAX),
        }
    }
    if empty {
        return None;
    }
    victims.sort_unstable_by_key(|v| (v.0, v.1));
    Some(close(&live, victims).min(TICK_MS))
}

enum Change {
    LongLived,
    Misplaced,
    Placed,
}

/// nginx is done with the request (finalized, lingering or kept alive): it
/// is no long-lived request any more, whatever its pool still holds.
fn ended(r: &ngx_http_request_t) -> bool {
    // SAFETY: the request's connection outlives it.
    r.done() != 0 || unsafe { (*r.connection).destroyed() } != 0
}

/// Whether the request's service closes misplaced requests (`drain`), as the
/// configuration is now.
fn drains(live: &LiveConfig, d: &RequestDecision) -> bool {
    d.live_slot().is_some_and(|(now, i)| ptr::eq(&*now, live) && live.config.services[i].drain.is_some())
}

/// Where the request belongs now (None: its service is gone).
fn belongs(live: &LiveConfig, r: &mut ngx_http_request_t, d: &RequestDecision) -> Option<Target> {
    let (_, index) = d.live_slot()?;
    // SAFETY: `r` is live (listed) for this call.
    let view = unsafe { NgxRequestView::replaying(r, d.minted) };
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
    migration_engine::drain::belongs(
        &live.config,
        index as u32,
        &view,
        &mut draw,
        slot.ramp.percentage_in_force(),
        slot.breaker.state(),
    )
}

/// Closes the misplaced requests `victims` (oldest first) that the services'
/// paces allow now; returns when the next one may go (ms; TICK_MS if none waits).
fn close(live: &LiveConfig, victims: Vec<(u64, u32, *mut ngx_http_request_t, *const RequestDecision)>) -> u64 {
    // SAFETY: nginx's cached clock, updated by this process's event loop.
    let now_us = unsafe { ngx_current_msec } as u64 * 1000;
    let mut wait_ms = TICK_MS;
    let mut closed = 0usize;
    for (_, index, r, d) in victims {
        // Still listed: closing an earlier one ended nothing else, but be sure.
        let listed = LIST.with(|list| {
            list.borrow().entries.get(index as usize).is_some_and(|e| e.as_ref().is_some_and(|e| e.r == r))
        });
        if !listed {
            continue;
        }
        // SAFETY: listed, so live.
        let d = unsafe { &*d };
        let Some((now, slot)) = d.live_slot() else { continue };
        let Some(drain) = now.config.services[slot].drain else { continue };
        let Some(target) = d.decision.target else { continue };
        // SAFETY: listed, so live; its main request lives as long as it.
        let busy = unsafe { (*(*r).main).blocked() != 0 || (*(*r).main).count() >= 0xfffe };
        if busy {
            // A thread or aio holds it: looked at again at the next tick.
            continue;
        }
        let Some(cells) = now.slots[slot].long_lived() else { continue };
        match cells.pace.take(now_us, drain.interval_us) {
            Ok(()) => {
                cells.count_drained(target);
                closed += 1;
                // SAFETY: `r` is a live request of this worker, not inside any
                // of its own handlers now (a timer runs between events). It is
                // ended as nginx ends a request whose client is gone
                // (terminate: its cleanups, the upstream's among them, then
                // close), an HTTP/1 connection closed, an HTTP/2 stream reset.
                // The reference taken first keeps the request alive through the
                // upstream's cleanup, which finalizes it too (with NGX_DONE: a
                // keepalive or a close that would free it under terminate); the
                // terminate handler sets the count to 1 and closes it. Its
                // pool's cleanup takes it out of the list.
                unsafe {
                    let c = (*r).connection;
                    let main = (*r).main;
                    ngx_log_error!(
                        NGX_LOG_INFO,
                        (*c).log,
                        "migration: service \"{}\": closing a long-lived request on {} that belongs on {} now (drain)",
                        now.config.services[slot].name,
                        target.as_str(),
                        target.other().as_str()
                    );
                    (*main).set_count((*main).count() + 1);
                    ngx_http_finalize_request(r, NGX_ERROR as ngx_int_t);
                    ngx_http_run_posted_requests(c);
                }
            }
            Err(wait_us) => wait_ms = wait_ms.min(wait_us.div_ceil(1000)),
        }
    }
    let _ = (live, closed);
    wait_ms
}
