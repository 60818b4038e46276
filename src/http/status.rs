//! The `migration_status` handler (docs/status.md): the published configuration
//! and the zone's counters, as JSON or, with `?format=prometheus`, in the
//! Prometheus text format. Rendering is the engine's (`report/`); this file only
//! gathers the snapshot and writes the response.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::sync::Arc;

use migration_engine::report::Pieces;
use migration_engine::{arg_in_query, ServiceReport, StatusReport};
use ngx::core::{Status, NGX_CONF_OK};
use ngx::ffi::{
    ngx_add_timer, ngx_buf_t, ngx_chain_t, ngx_command_t, ngx_conf_t, ngx_create_temp_buf, ngx_del_timer,
    ngx_handle_write_event, ngx_http_discard_request_body, ngx_http_finalize_request, ngx_http_output_filter,
    ngx_http_request_t, ngx_http_send_header, ngx_int_t, ngx_pcalloc, ngx_pool_cleanup_add, ngx_post_event,
    ngx_posted_next_events, ngx_str_t, NGX_HTTP_BAD_REQUEST, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_NOT_FOUND, NGX_HTTP_OK, NGX_HTTP_REQUEST_TIME_OUT,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_string;

use crate::conf::{LocConf, Module};
use crate::http::request::bytes;
use crate::state::compile_thread;
use crate::state::cycle::CycleZone;
use crate::state::live::{catch_up_later, current, LiveConfig};
use crate::state::watch::finish;

pub extern "C" fn set_migration_status(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::guard::conf(cf, "migration_status", || set_migration_status_body(cf, cmd, conf))
}

fn set_migration_status_body(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes this module's location configuration and a valid cf.
    let loc = unsafe { &mut *(conf as *mut LocConf) };
    if loc.status {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    loc.status = true;
    // SAFETY: cf is valid inside a location block.
    let clcf = NgxHttpCoreModule::location_conf_mut(unsafe { &*cf }).expect("http core location conf");
    clcf.handler = Some(status_handler);
    NGX_CONF_OK
}

const JSON: ngx_str_t = ngx_string!("application/json");
/// The content type Prometheus asks for the text format.
const PROMETHEUS: ngx_str_t = ngx_string!("text/plain; version=0.0.4; charset=utf-8");

pub unsafe extern "C" fn status_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request.
    crate::guard::request(r, "the status handler", || unsafe { status_handler_body(r) })
}

unsafe fn status_handler_body(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request.
    let r = unsafe { &mut *r };
    if r.method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as usize == 0 {
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    // SAFETY: as above.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != Status::NGX_OK.into() {
        return rc;
    }
    let prometheus = match arg_in_query(bytes(&r.args), b"format") {
        None | Some(b"json") => false,
        Some(b"prometheus") => true,
        Some(_) => return NGX_HTTP_BAD_REQUEST as ngx_int_t,
    };
    let main = Module::main_conf(&*r).expect("http main conf");
    // SAFETY: the connection's log is live with the request.
    let log = unsafe { (*r.connection).log };
    let Some(cycle_zone) = CycleZone::of(&main.cycle_zone) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    if let Some(ms) = crate::test_hooks::hold_zone_lock_ms() {
        let _held = cycle_zone.zone.lock();
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        ngx::ngx_log_error!(
            ngx::ffi::NGX_LOG_NOTICE,
            log,
            "test hook: process {} holds the zone's lock for {} ms",
            pid,
            ms
        );
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    // What this worker routes by; a newer generation is compiled by the
    // compile thread, never here (this is the event loop).
    if compile_thread::busy() {
        if let Some(done) = compile_thread::take() {
            finish(main, cycle_zone, done, log);
        }
    }
    catch_up_later(&cycle_zone.zone);
    let Some(published) = current() else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let only = match arg_in_query(bytes(&r.args), b"service") {
        None => None,
        Some(name) => {
            // Service names are [A-Za-z0-9._-]+: nothing in them is escaped.
            match core::str::from_utf8(name).ok().and_then(|n| published.config.service_index(n)) {
                Some(index) => Some(index as usize),
                None => return NGX_HTTP_NOT_FOUND as ngx_int_t,
            }
        }
    };
    let stream = StatusStream {
        tag: TAG,
        file: migration_engine::FileState { refused: cycle_zone.zone.file_refused() },
        unmatched: published.zone.unmatched(),
        published,
        pieces: Pieces::default(),
        prometheus,
        only,
        piece: String::new(),
        buf: ptr::null_mut(),
        yield_next: false,
    };
    r.headers_out.status = NGX_HTTP_OK as usize;
    let content_type = if prometheus { PROMETHEUS } else { JSON };
    r.headers_out.content_type = content_type;
    r.headers_out.content_type_len = content_type.len;
    // Unknown: the body is made as the client reads it (chunked over HTTP/1.1).
    r.headers_out.content_length_n = -1;
    if !ptr::eq(r, r.main) {
        // A subrequest (SSI): the whole body at once, as its parent expects it.
        let mut body = String::new();
        let mut stream = stream;
        while stream.next_piece(&mut body) {}
        return send(r, &body);
    }
    // SAFETY: a live request in its content handler.
    let rc = unsafe { ngx_http_send_header(r) };
    if rc == Status::NGX_ERROR.into() || rc > Status::NGX_OK.into() || r.header_only() != 0 {
        return rc;
    }
    // SAFETY: the request pool outlives the request; the stream is dropped by
    // its cleanup when the pool is destroyed.
    let placed = unsafe {
        let cln = ngx_pool_cleanup_add(r.pool, core::mem::size_of::<StatusStream>());
        if cln.is_null() || (*cln).data.is_null() {
            return Status::NGX_ERROR.into();
        }
        ptr::write((*cln).data as *mut StatusStream, stream);
        (*cln).handler = Some(drop_status_stream);
        (*cln).data as *mut StatusStream
    };
    // SAFETY: the request pool; the buffer struct is reused for every piece.
    let buf = unsafe { ngx_pcalloc(r.pool, core::mem::size_of::<ngx_buf_t>()) } as *mut ngx_buf_t;
    if buf.is_null() {
        return Status::NGX_ERROR.into();
    }
    // SAFETY: `placed` was just written and lives with the pool.
    unsafe { (*placed).buf = buf };
    // The request lives on past this handler (NGX_DONE) until the last piece.
    // SAFETY: r->main is the live main request (this one).
    unsafe { (*r.main).set_count((*r.main).count() + 1) };
    r.write_event_handler = Some(status_write);
    // A client that leaves (a FIN, an HTTP/2 RST_STREAM) is noticed at once, as
    // nginx's own writer does, not at send_timeout.
    r.read_event_handler = Some(if r.discard_body() != 0 {
        ngx::ffi::ngx_http_discarded_request_body_handler
    } else {
        ngx::ffi::ngx_http_test_reading
    });
    pump(r);
    Status::NGX_DONE.into()
}

/// A piece of the body stays under this many bytes (plus one service's lines):
/// a 10,000-service scrape is written in pieces of this size, one per turn of
/// the event loop, and a reader that does not read holds one piece, not the body.
const PIECE_BYTES: usize = 32 * 1024;

const TAG: u64 = u64::from_be_bytes(*b"migstatu");

/// A status body being written, kept in the request pool.
struct StatusStream {
    tag: u64,
    /// The configuration described, as it was when the request came (its
    /// strings); counters are read through the configuration routed by now.
    published: Arc<LiveConfig>,
    file: migration_engine::FileState,
    unmatched: u64,
    pieces: Pieces,
    prometheus: bool,
    /// `?service=NAME`: the one service shown.
    only: Option<usize>,
    /// The piece being written: reused, as nginx is handed it only once the
    /// previous one was sent.
    piece: String,
    buf: *mut ngx_buf_t,
    /// A piece was just handed over: let the event loop run before the next.
    yield_next: bool,
}

unsafe extern "C" fn drop_status_stream(data: *mut c_void) {
    // SAFETY: `data` is the StatusStream written by the handler, dropped once
    // when the request pool is destroyed.
    crate::guard::quiet("the status's cleanup", || unsafe { ptr::drop_in_place(data as *mut StatusStream) });
}

impl StatusStream {
    /// Appends the next piece to `out`; false once the body is whole.
    fn next_piece(&mut self, out: &mut String) -> bool {
        let published = &self.published;
        let head = StatusReport {
            version: &published.config.version,
            generation: published.generation,
            loaded_at: published.loaded_at,
            source: &published.source,
            unmatched: self.unmatched,
            file: self.file.clone(),
            services: Vec::new(),
        };
        let count = if self.only.is_some() { 1 } else { published.config.services.len() };
        let only = self.only;
        // Counters through the configuration routed by now (the zone's slots of
        // an older one may have been reclaimed since this request came): looked
        // up once a piece, the event loop cannot swap it within one.
        let now = crate::state::live::current();
        let service = |i: usize| {
            let index = only.unwrap_or(i);
            let service = published.config.services.get(index)?;
            let now = now.as_ref()?;
            let slot = if Arc::ptr_eq(now, published) {
                now.slots.get(index)?
            } else {
                now.slots.get(now.config.service_index(&service.name)? as usize)?
            };
            Some(
                ServiceReport::new(service, slot.counts(), slot.fallback())
                    .with_responses(slot.responses())
                    .with_sticky_minted(slot.sticky_minted())
                    .with_connections(slot.connections())
                    .with_ramp(crate::state::ramp_timer::report(service, slot)),
            )
        };
        if self.prometheus {
            self.pieces.next_prometheus(&head, count, service, PIECE_BYTES, out)
        } else {
            self.pieces.next_json(&head, count, service, PIECE_BYTES, out)
        }
    }
}

/// The status request's stream, from its pool's cleanups.
fn stream_of(r: &ngx_http_request_t) -> Option<*mut StatusStream> {
    crate::http::request::pool_cleanup::<StatusStream>(r, drop_status_stream, |s| s.tag == TAG)
}

unsafe extern "C" fn status_write(r: *mut ngx_http_request_t) {
    let finished = core::cell::Cell::new(false);
    // SAFETY: nginx calls write event handlers with a live request.
    crate::guard::quiet("the status's writer", || {
        // SAFETY: as above.
        pump(unsafe { &mut *r });
        finished.set(true);
    });
    if !finished.get() {
        // A panic (logged): the request must still end, or its connection leaks.
        // SAFETY: the request is live; this handler keeps it alive (count).
        unsafe { ngx_http_finalize_request(r, Status::NGX_ERROR.into()) };
    }
}

/// Output the socket did not take yet: the filters (the write filter when the
/// socket is full) say so with `buffered`. A short header nginx holds back in
/// `r->out` (postpone_output) is not pending: it leaves with the next piece,
/// which is always flushed.
fn pending(r: &ngx_http_request_t) -> bool {
    // SAFETY: the connection outlives its requests.
    r.buffered() != 0 || unsafe { (*r.connection).buffered() } != 0
}

/// Writes the next piece when the previous one is gone, and waits (for the
/// socket, or one turn of the event loop) before the one after.
fn pump(r: &mut ngx_http_request_t) {
    // SAFETY: the connection and its write event outlive the request.
    let wev = unsafe { (*r.connection).write };
    let finalize = |r: &mut ngx_http_request_t, rc: ngx_int_t| {
        // SAFETY: a live request that this handler keeps alive (count).
        unsafe { ngx_http_finalize_request(r, rc) }
    };
    // SAFETY: as above.
    if unsafe { (*wev).timedout() } != 0 {
        // SAFETY: as above.
        unsafe { (*r.connection).set_timedout(1) };
        return finalize(r, NGX_HTTP_REQUEST_TIME_OUT as ngx_int_t);
    }
    let clcf = NgxHttpCoreModule::location_conf(&*r).expect("http core location conf");
    // SAFETY: as above.
    if unsafe { (*wev).delayed() } != 0 {
        // limit_rate holds the output back: its own timer wakes us (nginx's
        // request handler clears `delayed` then), not send_timeout.
        // SAFETY: the connection's write event.
        if unsafe { ngx_handle_write_event(wev, clcf.send_lowat) } != Status::NGX_OK.into() {
            return finalize(r, Status::NGX_ERROR.into());
        }
        return;
    }
    // SAFETY: as above.
    if unsafe { (*wev).timer_set() } != 0 {
        // SAFETY: an armed timer of this event.
        unsafe { ngx_del_timer(wev) };
    }
    let Some(stream) = stream_of(r) else {
        return finalize(r, Status::NGX_ERROR.into());
    };
    // SAFETY: the stream lives in the request pool, apart from `r`, until the
    // pool is destroyed; the event loop is single-threaded.
    let stream = unsafe { &mut *stream };
    loop {
        if pending(r) {
            // SAFETY: a live request; a null chain flushes what is buffered.
            if unsafe { ngx_http_output_filter(r, ptr::null_mut()) } == Status::NGX_ERROR.into() {
                return finalize(r, Status::NGX_ERROR.into());
            }
            if pending(r) {
                // SAFETY: the connection's write event; nginx re-arms it. A delayed
                // event (limit_rate) keeps the write filter's own timer.
                unsafe {
                    if (*wev).delayed() == 0 {
                        ngx_add_timer(wev, clcf.send_timeout);
                    }
                    if ngx_handle_write_event(wev, clcf.send_lowat) != Status::NGX_OK.into() {
                        return finalize(r, Status::NGX_ERROR.into());
                    }
                }
                return;
            }
        }
        if stream.yield_next {
            // One piece per turn of the event loop: whatever else is ready runs
            // before the next. The "next" queue (nginx 1.17.5) is taken after the
            // next wait for events; an event re-posted to ngx_posted_events would
            // run again in the same pass, before anything else.
            stream.yield_next = false;
            // SAFETY: the connection's write event and nginx's queue of events for
            // the next turn.
            unsafe { ngx_post_event(wev, ptr::addr_of_mut!(ngx_posted_next_events)) };
            return;
        }
        let mut piece = core::mem::take(&mut stream.piece);
        piece.clear();
        let more = stream.next_piece(&mut piece);
        stream.piece = piece;
        let buf = stream.buf;
        // SAFETY: `buf` is ours, in the request pool; it points at the piece's
        // bytes, which stay put until the next piece, made only once this one
        // was sent (`pending`).
        let rc = unsafe {
            ptr::write(buf, core::mem::zeroed());
            let bytes = stream.piece.as_ptr() as *mut u8;
            (*buf).start = bytes;
            (*buf).pos = bytes;
            (*buf).last = bytes.add(stream.piece.len());
            (*buf).end = (*buf).last;
            // An empty piece (no service in a part) is a flush or the end only:
            // nginx refuses a zero-size buffer that claims to hold bytes.
            (*buf).set_memory(u32::from(!stream.piece.is_empty()));
            (*buf).set_last_buf(u32::from(!more));
            (*buf).set_last_in_chain(1);
            (*buf).set_flush(1);
            let mut out = ngx_chain_t { buf, next: ptr::null_mut() };
            ngx_http_output_filter(r, &mut out)
        };
        if !more || rc == Status::NGX_ERROR.into() {
            return finalize(r, rc);
        }
        stream.yield_next = true;
    }
}

/// Sends a complete body at once (a subrequest), the header already set.
fn send(r: &mut ngx_http_request_t, body: &str) -> ngx_int_t {
    r.headers_out.content_length_n = body.len() as i64;
    // SAFETY: a live request in its content handler.
    let rc = unsafe { ngx_http_send_header(r) };
    if rc == Status::NGX_ERROR.into() || rc > Status::NGX_OK.into() || r.header_only() != 0 {
        return rc;
    }
    // SAFETY: the buffer comes from the request pool, sized for the body, which is
    // copied into it before it is passed on.
    unsafe {
        let buf = ngx_create_temp_buf(r.pool, body.len().max(1));
        if buf.is_null() {
            return Status::NGX_ERROR.into();
        }
        core::ptr::copy_nonoverlapping(body.as_ptr(), (*buf).last, body.len());
        (*buf).last = (*buf).last.add(body.len());
        (*buf).set_last_in_chain(1);
        let mut out = ngx_chain_t { buf, next: core::ptr::null_mut() };
        ngx_http_output_filter(r, &mut out)
    }
}
