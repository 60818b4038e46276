//! Long-lived requests follow the split (docs/drain.md). A routed request is
//! long-lived when its response upgraded the connection (101: a WebSocket) or,
//! for a service with `drain`, when its response is still streaming `drain.after` after its
//! decision (server-sent events, gRPC streams, long polling). Each worker keeps
//! its own in a list; its timer looks, every [`TICK_MS`], whether what decides
//! their side moved (the configuration, a percentage in force, a breaker), and
//! then decides each one again from what it carried (`migration_engine::drain::belongs`).
//! Those whose side differs are misplaced: counted always, and with `drain`
//! closed, oldest first, at the pace the service's cells in the zone give every
//! worker of the instance together — an HTTP/1 connection is closed, an HTTP/2
//! stream is reset — so that their clients reconnect and land on the right side.
//!
//! A worker that a reload retired goes on: its timer (cancelable, so that it
//! never keeps the worker from exiting) follows what the new workers publish
//! (`state::watch::follow_zone_while_retired`), and its misplaced requests are
//! closed as any worker's are, until the last of them ends or nginx closes
//! them at `worker_shutdown_timeout`.

use core::cell::RefCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use migration_engine::{OwnedRequest, RequestView};
use ngx::ffi::{
    ngx_add_timer, ngx_current_msec, ngx_cycle, ngx_event_t, ngx_exiting, ngx_http_request_t, ngx_quit, ngx_terminate,
};
use ngx::http::HttpModuleMainConf;

use crate::conf::Module;
use crate::http::decision::RequestDecision;
use crate::http::request::NgxRequestView;
use crate::state::zone::{LongLivedCells, SlotIdentity};

mod close;
mod walk;
use close::close_pending;
use walk::{walk_slice, Slice, Walk};

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
    /// The slot its long-lived +1 (and a misplaced +1) went to: its -1 goes
    /// there too, or nowhere if that slot is gone (None: not counted).
    counted_in: Option<SlotIdentity>,
    /// Closed by the drain, and not gone yet (an HTTP/2 stream whose reset
    /// waits for its queued frames): never closed, or counted, twice.
    closing: bool,
    /// What an upgraded request carried, copied at its 101 (see [`carried`]).
    carried: Option<Box<Carried>>,
}

/// An upgraded request's copy, and whether the request's own header bytes are
/// still what the client sent (see [`carried`]).
struct Carried {
    request: OwnedRequest,
    /// No client bytes were behind the handshake: nginx never reads the
    /// client's later bytes into the header buffer, so a variable read from
    /// the request later ([`carry_user_variable`]) reads what the client sent.
    header_bytes_intact: bool,
}

/// What an upgraded request carried, as its decision reads it, copied when its
/// response upgrades the connection. From then on nginx may read the client's
/// next bytes into the buffer that held the request line and headers (when the
/// client sent bytes right behind its handshake, before the 101), where the
/// request's arguments and headers point: deciding it again from the request
/// would read those bytes (t/43 TEST 12: half of 20 clients that stayed on their
/// side were closed). The request's headers, arguments, Host and client
/// address, the value of `user_key: var:NAME` as its configuration names it
/// (an absent one as empty, which the decision reads as absent), and the id
/// `sticky` minted for it; about what the headers take.
fn carried(r: &mut ngx_http_request_t, d: &RequestDecision) -> Box<Carried> {
    // nginx relays bytes a client sent behind its handshake through the header
    // buffer, and reads its next ones over the buffer's start
    // (ngx_http_upstream_process_upgraded); bytes that come later go to a
    // buffer of their own.
    // SAFETY: a request's header_in is null or its live header buffer.
    let header_bytes_intact = unsafe { r.header_in.as_ref() }.is_none_or(|b| b.last <= b.pos);
    let args = crate::http::request::bytes(&r.args).to_vec();
    // SAFETY: `r` is live for this call (the header filter of its response).
    let view = unsafe { NgxRequestView::new(r) };
    let mut request = OwnedRequest {
        host: view.host().to_vec(),
        headers: view.headers().map(|(name, value)| (name.to_vec(), value.to_vec())).collect(),
        args,
        client: view.client_ip(),
        client_text: view.client_addr_text().to_vec(),
        variables: Vec::new(),
        sticky_id: d.minted.map(|id| id.as_bytes().to_vec()),
    };
    let service = d.decision.service.and_then(|i| d.published.config.services.get(i as usize));
    if let Some(name) = service.and_then(|s| s.user_variable()) {
        copy_variable(&view, name, &mut request);
    }
    Box::new(Carried { request, header_bytes_intact })
}

/// Copies the request's variable `name` into `into`; an absent one as empty,
/// which the decision reads as absent (and which is not read again).
fn copy_variable(view: &NgxRequestView<'_>, name: &str, into: &mut OwnedRequest) {
    let value = view.variable(name.as_bytes()).map(<[u8]>::to_vec).unwrap_or_default();
    into.variables.push((name.as_bytes().to_vec(), value));
}

#[derive(Default)]
struct List {
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    /// What decided the sides when they were last looked at (see `world`).
    world: u64,
    /// A walk over the entries in progress, split into slices.
    walk: Option<Walk>,
    /// When the last walk began (nginx's milliseconds).
    walked_ms: u64,
    /// The misplaced long-lived requests of services with `drain`, oldest
    /// first, as the last walk found them: what the timer closes between walks
    /// (each checked again before it is closed).
    pending: Vec<u32>,
}

impl List {
    /// Drops the free entries at the end of the list and gives back the memory
    /// a burst left (a list sized for 10,000 requests would otherwise stay so
    /// for the worker's life). Entries in the middle stay: requests hold their
    /// indices. The free indices are ordered so that the lowest are reused
    /// first, which lets the tail free up again.
    fn trim(&mut self) {
        let used = self.entries.iter().rposition(Option::is_some).map_or(0, |last| last + 1);
        if used < self.entries.len() {
            self.entries.truncate(used);
            self.free.retain(|&index| (index as usize) < used);
            self.free.sort_unstable_by(|a, b| b.cmp(a));
        }
        if self.entries.capacity() > 2 * used + TRIM_SLACK {
            self.entries.shrink_to_fit();
        }
        for v in [&mut self.free, &mut self.pending] {
            if v.capacity() > 2 * v.len() + TRIM_SLACK {
                v.shrink_to_fit();
            }
        }
    }
}

/// Room a list keeps beyond twice what it holds, so that a steady load does not
/// reallocate at every walk.
const TRIM_SLACK: usize = 16;

thread_local! {
    // A worker's event loop is one thread; the compile thread never comes here.
    static LIST: RefCell<List> = RefCell::new(List::default());
}

/// The worker's timer event (allocated once, when the first request is kept).
static EVENT: AtomicPtr<ngx_event_t> = AtomicPtr::new(ptr::null_mut());

/// Keeps a routed request of a service with `drain` (called once, when it is
/// counted): it becomes long-lived if its response is still streaming after `drain.after`.
pub fn track(r: &mut ngx_http_request_t, d: &RequestDecision) {
    let Some(service) = d.decision.service.and_then(|i| d.published.config.services.get(i as usize)) else {
        return;
    };
    let Some(drain) = service.drain else { return };
    if !ptr::eq(r, r.main) || d.tracked.get() != UNTRACKED {
        return;
    }
    insert(r, d, drain.after_ms, false, None);
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
    let carried = carried(r, d);
    let index = d.tracked.get();
    if index == UNTRACKED {
        insert(r, d, u64::MAX, true, Some(carried));
        return;
    }
    let promoted = LIST.with(|list| {
        let mut list = list.borrow_mut();
        let Some(Some(e)) = list.entries.get_mut(index as usize) else { return false };
        e.carried = Some(carried);
        if e.long_lived {
            return false;
        }
        e.long_lived = true;
        e.fresh = true;
        true
    });
    if promoted {
        set_counted_in(index, became_long_lived(d));
    }
}

fn insert(
    r: &mut ngx_http_request_t,
    d: &RequestDecision,
    after_ms: u64,
    long_lived: bool,
    carried: Option<Box<Carried>>,
) {
    // SAFETY: nginx's cached clock, updated by this process's event loop.
    let now = unsafe { ngx_current_msec } as u64;
    let entry = Entry {
        r,
        decision: d,
        since_ms: now,
        after_ms,
        long_lived,
        fresh: long_lived,
        misplaced: false,
        closing: false,
        counted_in: if long_lived { became_long_lived(d) } else { None },
        carried,
    };
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
    arm(TICK_MS);
}

/// Counts a request that became long-lived, on the side it was sent to, in
/// its service's slot; returns which slot that was.
fn became_long_lived(d: &RequestDecision) -> Option<SlotIdentity> {
    let (Some((live, index)), Some(target)) = (d.live_slot(), d.decision.target) else {
        return None;
    };
    let slot = &live.slots[index];
    let identity = slot.identity()?;
    slot.long_lived()?.add_connection(target, 1);
    Some(identity)
}

fn set_counted_in(index: u32, counted_in: Option<SlotIdentity>) {
    LIST.with(|list| {
        if let Some(Some(e)) = list.borrow_mut().entries.get_mut(index as usize) {
            e.counted_in = counted_in;
        }
    });
}

/// `f` of the cells of the slot a long-lived request was counted in: its
/// service's slot in the configuration the process routes by, when that is
/// still the same slot (nearly always); else, under the zone's lock, that slot
/// if it still exists (the service was removed or renamed while the request
/// was open: its slot stays in the zone, and comes back with the name), or
/// nothing (the slot was freed, and its counts with it).
fn with_counted_cells(d: &RequestDecision, counted_in: SlotIdentity, f: impl FnOnce(&LongLivedCells)) {
    if let Some((live, index)) = d.live_slot() {
        let slot = &live.slots[index];
        if slot.identity() == Some(counted_in) {
            if let Some(cells) = slot.long_lived() {
                f(cells);
            }
            return;
        }
    }
    let (Some(live), Some(index)) = (crate::state::live::current(), d.decision.service) else { return };
    let Some(service) = d.published.config.services.get(index as usize) else { return };
    let locked = live.zone.lock();
    if let Some(cells) = locked.long_lived_of(&service.name, counted_in) {
        f(cells);
    }
}

/// Whether the request is long-lived now (upgraded, or open past its service's
/// `drain.after`): its upstream time is its whole life, no response time.
pub fn is_long_lived(d: &RequestDecision) -> bool {
    let index = d.tracked.get();
    index != UNTRACKED
        && LIST
            .try_with(|list| {
                let list = list.borrow();
                list.entries.get(index as usize).is_some_and(|e| e.as_ref().is_some_and(|e| e.long_lived))
            })
            .unwrap_or(false)
}

/// The request ends (its decision is dropped with its pool): out of the list and
/// of the counts.
#[inline(always)]
pub fn untrack(d: &RequestDecision) {
    let index = d.tracked.replace(UNTRACKED);
    if index != UNTRACKED {
        untrack_listed(d, index);
    }
}

/// Out of line: a request is listed only under `drain`, and the end of every
/// other request should not carry the list's code (callgrind: 4 instructions a
/// request fewer without `drain`, 3 more with it).
#[inline(never)]
fn untrack_listed(d: &RequestDecision, index: u32) {
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
    if entry.closing {
        // SAFETY: the request is ending (its pool's cleanups run before the
        // pool's memory goes), so it and its stream are still readable.
        unsafe { close::send_reset_now(entry.r) };
    }
    if let (Some(counted_in), Some(target)) = (entry.counted_in, d.decision.target) {
        with_counted_cells(d, counted_in, |cells| {
            cells.add_connection(target, u64::MAX);
            if entry.misplaced {
                cells.add_misplaced(u64::MAX);
            }
        });
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
            // nginx's debug log names a timer by its data's fd, as for its own
            // shutdown event.
            (*ev).data = ngx_cycle as *mut core::ffi::c_void;
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
    let (terminating, retired) = unsafe { (ngx_terminate != 0, ngx_exiting != 0 || ngx_quit != 0) };
    if terminating {
        return;
    }
    // A panic (logged by the guard) must not stop the timer for good.
    let mut next = Some(TICK_MS);
    crate::guard::quiet("the drain timer", || {
        // A retired worker's requests follow what its successors publish. The
        // timer is cancelable: it never keeps the worker from exiting.
        if let Some(live) = crate::state::live::current() {
            if retired {
                // SAFETY: ngx_cycle is this process's cycle, which outlives its timers.
                let cycle = unsafe { &*ngx_cycle };
                let variables = Module::main_conf(cycle).and_then(|main| main.variables.as_deref());
                crate::state::watch::follow_zone_while_retired(&live.zone, variables, cycle.log);
            }
            if !crate::state::watch::routes_by_newest(&live.zone) {
                return;
            }
        }
        next = pass()
    });
    if let Some(delay) = next {
        arm(delay);
    }
}

/// One firing of the worker's timer: a slice of a walk when one is due or
/// under way (every [`TICK_MS`]), else the closes the pace allows now. Returns
/// when to look again (None: the list is empty).
fn pass() -> Option<u64> {
    let live = crate::state::live::current()?;
    // SAFETY: nginx's cached clock, updated by this process's event loop.
    let now = unsafe { ngx_current_msec } as u64;
    let walking = LIST.with(|list| {
        let list = list.borrow();
        list.walk.is_some() || now.saturating_sub(list.walked_ms) >= TICK_MS || list.pending.is_empty()
    });
    if walking {
        match walk_slice(&live, now) {
            Slice::Empty => return None,
            Slice::More => return Some(1),
            Slice::Done => {}
        }
    }
    let wait = close_pending(&live);
    let to_walk = LIST.with(|list| (list.borrow().walked_ms + TICK_MS).saturating_sub(now));
    Some(wait.min(to_walk).max(1))
}
