//! Closing the misplaced long-lived requests of a worker's list, at the pace
//! of their services, as nginx ends a request whose client is gone (an HTTP/1
//! connection closed, an HTTP/2 stream reset and its reset sent at once).

use core::ptr;

use migration_engine::Target;
use ngx::ffi::{
    ngx_current_msec, ngx_cycle, ngx_http_core_loc_conf_t, ngx_http_core_module, ngx_http_finalize_request,
    ngx_http_request_t, ngx_http_run_posted_requests, ngx_int_t, NGX_ERROR, NGX_LOG_INFO,
};
use ngx::ngx_log_error;

use super::walk::ended;
use super::{LIST, TICK_MS};
use crate::state::live::LiveConfig;

/// Closes the pending misplaced requests (oldest first) that the services'
/// paces allow now; returns when the next one may go (ms; TICK_MS if none waits).
pub(super) fn close_pending(live: &LiveConfig) -> u64 {
    // SAFETY: nginx's cached clock, updated by this process's event loop.
    let now_us = unsafe { ngx_current_msec } as u64 * 1000;
    let mut wait_ms = TICK_MS;
    // Services whose pace said "not yet" in this firing: their later requests wait too.
    let mut held: Vec<usize> = Vec::new();
    let mut position = 0;
    loop {
        // Each one looked up again: closing one ends requests (and may free
        // entries) that the list then no longer holds.
        let next = LIST.with(|list| {
            let list = list.borrow();
            loop {
                let &index = list.pending.get(position)?;
                position += 1;
                let Some(Some(e)) = list.entries.get(index as usize) else { continue };
                // SAFETY: a listed request is live: its pool's cleanup takes it out.
                if !e.long_lived || !e.misplaced || e.closing || ended(unsafe { &*e.r }) {
                    continue;
                }
                return Some((index, e.r, e.decision));
            }
        });
        let Some((index, r, d)) = next else { break };
        // SAFETY: listed, so live.
        let d = unsafe { &*d };
        let Some((now, slot)) = d.live_slot() else { continue };
        // As `drains`, on the slot already found: the configuration this pass
        // read, and a service that has `drain` in it.
        if held.contains(&slot) || !ptr::eq(&*now, live) {
            continue;
        }
        let Some(drain) = now.config.services[slot].drain else { continue };
        let Some(target) = d.decision.target else { continue };
        // SAFETY: listed, so live; its main request lives as long as it.
        let busy = unsafe { (*(*r).main).blocked() != 0 || (*(*r).main).count() >= 0xfffe || has_post_action(r) };
        if busy {
            // A thread or aio holds it: looked at again at the next firing. A
            // `post_action` would take the request over instead of ending it:
            // such a location's requests are counted, never closed.
            continue;
        }
        let Some(cells) = now.slots[slot].long_lived() else { continue };
        match cells.pace.take(now_us, drain.interval_us) {
            Ok(()) => {
                cells.count_drained(target);
                d.drained.set(true);
                LIST.with(|list| {
                    if let Some(Some(e)) = list.borrow_mut().entries.get_mut(index as usize) {
                        e.closing = true;
                    }
                });
                // SAFETY: listed, so live, and no handler of it runs now (a timer).
                unsafe { terminate(r, &now.config.services[slot].name, target) };
            }
            Err(wait_us) => {
                held.push(slot);
                wait_ms = wait_ms.min(wait_us.div_ceil(1000));
            }
        }
    }
    LIST.with(|list| {
        let mut list = list.borrow_mut();
        let list = &mut *list;
        let entries = &list.entries;
        list.pending.retain(|&i| entries.get(i as usize).is_some_and(|e| e.as_ref().is_some_and(|e| e.misplaced)));
    });
    wait_ms
}

/// Whether the request's location has `post_action` (nginx runs it instead of
/// ending a request finalized with an error).
///
/// # Safety
/// `r` is a live request.
unsafe fn has_post_action(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: (caller) a live request's loc_conf holds the core module's location
    // configuration at its ctx_index, as nginx's ngx_http_get_module_loc_conf reads it.
    unsafe {
        let clcf = *(*r).loc_conf.add(ngx_http_core_module.ctx_index) as *const ngx_http_core_loc_conf_t;
        !clcf.is_null() && (*clcf).post_action.len != 0
    }
}

/// Ends a misplaced long-lived request as nginx ends one whose client is gone.
///
/// # Safety
/// `r` is a live request of this worker, and none of its handlers is running
/// (called from a timer, between events).
unsafe fn terminate(r: *mut ngx_http_request_t, service: &str, target: Target) {
    // SAFETY: (caller) `r` is live and not inside any of its own handlers. It is ended as nginx ends a
    // request whose client is gone (terminate: its cleanups, the upstream's
    // among them, then close): an HTTP/1 connection closed, an HTTP/2 stream
    // reset. The reference taken first keeps the request alive through the
    // upstream's cleanup, which finalizes it too (with NGX_DONE: a keepalive or
    // a close that would free it under terminate); the terminate handler sets
    // the count to 1 and closes it. Its pool's cleanup takes it out of the list.
    unsafe {
        let c = (*r).connection;
        let main = (*r).main;
        ngx_log_error!(
            NGX_LOG_INFO,
            (*c).log,
            "migration: service \"{}\": closing a long-lived request on {} that belongs on {} now (drain)",
            service,
            target.as_str(),
            target.other().as_str()
        );
        let h2 = http2_connection(r);
        (*main).set_count((*main).count() + 1);
        ngx_http_finalize_request(r, NGX_ERROR as ngx_int_t);
        ngx_http_run_posted_requests(c);
        flush_http2(h2);
    }
}

/// The client connection an HTTP/2 stream runs on (null for HTTP/1, or when
/// it cannot be told for sure).
///
/// The module is also built as an nginx addon against `--with-compat` alone
/// (the image's Dockerfile), where bindgen sees no HTTP/2 structures, while
/// `r->stream` is always there. So the two pointers are read by position:
/// `ngx_http_v2_stream_t` begins with `request` then `connection` (its HTTP/2
/// connection), and `ngx_http_v2_connection_t` with `connection`, in every
/// nginx with HTTP/2 (1.9.5 to 1.29); where bindgen sees the structures the
/// build checks those places (below). The result is used only if it is one of
/// this worker's connections and has the stream's descriptor (a stream's fake
/// connection is a copy of its client connection).
///
/// # Safety
/// `r` is a live request.
unsafe fn http2_connection(r: *mut ngx_http_request_t) -> *mut ngx::ffi::ngx_connection_t {
    use ngx::ffi::ngx_connection_t;
    // SAFETY: (caller) `r` is live; a non-null `stream` is its live HTTP/2
    // stream, whose first two fields are pointers, and whose connection is live
    // with it and begins with a pointer; the result is checked against the
    // cycle's connection table before anything reads it.
    unsafe {
        let stream = (*r).stream as *const *mut core::ffi::c_void;
        if stream.is_null() {
            return ptr::null_mut();
        }
        let h2c = *stream.add(1) as *const *mut ngx_connection_t;
        if h2c.is_null() {
            return ptr::null_mut();
        }
        let c = *h2c;
        let cycle = ngx_cycle;
        let first = (*cycle).connections;
        let size = core::mem::size_of::<ngx_connection_t>();
        let offset = (c as usize).wrapping_sub(first as usize);
        if first.is_null() || offset >= (*cycle).connection_n * size || offset % size != 0 {
            return ptr::null_mut();
        }
        if (*c).fd != (*(*r).connection).fd {
            return ptr::null_mut();
        }
        c
    }
}

/// Sends the RST_STREAM of an HTTP/2 stream the drain closed, as its request
/// ends. When the drain closed it while frames of it were still queued (a
/// client that reads slowly), nginx deferred the close: it queues the reset
/// only when the last of those frames is out, and then nothing writes on the
/// connection until its next write (t/43 TEST 14: the reset never came while
/// the connection's other stream was quiet). The request's end is that
/// moment: its pool's cleanup calls this.
///
/// # Safety
/// `r` is a request of this worker whose pool's cleanups are running, or a
/// live one.
pub(super) unsafe fn send_reset_now(r: *mut ngx_http_request_t) {
    // SAFETY: (caller) the request, its stream and its fake connection are in
    // its pool, whose memory is freed only after its cleanups ran;
    // `http2_connection` checks what it finds against the cycle's connections.
    unsafe { flush_http2(http2_connection(r)) }
}

// Where bindgen sees the HTTP/2 structures, the places `http2_connection` reads.
#[cfg(ngx_feature = "http_v2")]
const _: () = {
    assert!(core::mem::offset_of!(ngx::ffi::ngx_http_v2_stream_s, request) == 0);
    assert!(core::mem::offset_of!(ngx::ffi::ngx_http_v2_stream_s, connection) == core::mem::size_of::<usize>());
    assert!(core::mem::offset_of!(ngx::ffi::ngx_http_v2_connection_s, connection) == 0);
};

/// Sends what a reset stream left queued on its HTTP/2 connection now. nginx
/// queues the stream's RST_STREAM and sends the connection's queue at its next
/// write; while other streams of the connection are open and quiet (an idle
/// event stream), that can be minutes, and the client would not know that its
/// stream ended. Posting the connection's write event sends the queue at the
/// end of this turn of the event loop, as nginx's own write handler does.
///
/// # Safety
/// `c` is null, or what `http2_connection` found earlier in the same event
/// handler (the drain's timer, or the cleanup of a request's pool): one of the
/// cycle's connections, never freed, only reused, and none is accepted within
/// another event's handler.
unsafe fn flush_http2(c: *mut ngx::ffi::ngx_connection_t) {
    // SAFETY: (caller) `c` points into the cycle's connections; a closed one has
    // fd -1 and no events to post.
    unsafe {
        if c.is_null() || (*c).fd == -1 || (*c).destroyed() != 0 || (*c).error() != 0 || (*c).write.is_null() {
            return;
        }
        ngx::ffi::ngx_post_event((*c).write, ptr::addr_of_mut!(ngx::ffi::ngx_posted_events));
    }
}
