//! The `migration_status` handler (SPEC "Status"): the published configuration
//! and the zone's counters, as JSON or, with `?format=prometheus`, in the
//! Prometheus text format. Rendering is the engine's (`report.rs`); this file only
//! gathers the snapshot and writes the response.

use migration_engine::{arg_in_query, ServiceReport, StatusReport};
use ngx::core::Status;
use ngx::ffi::{
    ngx_chain_t, ngx_create_temp_buf, ngx_http_discard_request_body, ngx_http_output_filter, ngx_http_request_t,
    ngx_http_send_header, ngx_int_t, ngx_str_t, NGX_HTTP_BAD_REQUEST, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_OK,
};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_string;

use crate::directives::Module;
use crate::publish::{catch_up_later, current, finish};
use crate::publisher;
use crate::request::bytes;

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
    let Some(publication) = main.publication.as_ref() else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    if let Some(ms) = crate::hooks::hold_zone_lock_ms() {
        let _held = publication.zone.lock();
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        ngx::ngx_log_error!(ngx::ffi::NGX_LOG_NOTICE, log, "test hook: process {} holds the zone's lock for {} ms", pid, ms);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    // What this worker routes by; a newer generation is compiled by the
    // publication thread, never here (this is the event loop).
    if publisher::busy() {
        if let Some(done) = publisher::take() {
            finish(main, publication, done, log);
        }
    }
    catch_up_later(&publication.zone);
    let Some(published) = current() else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let services = published
        .config
        .services
        .iter()
        .zip(published.slots.iter())
        .map(|(service, slot)| {
            ServiceReport::new(service, slot.counts(), slot.fallback())
                .with_responses(slot.responses.snapshot())
                .with_ramp(crate::ramp::report(service, slot))
        })
        .collect();
    let report = StatusReport {
        version: &published.config.version,
        generation: published.generation,
        loaded_at: published.loaded_at,
        source: &published.source,
        unmatched: published.zone.unmatched(),
        file: migration_engine::FileState { refused: publication.zone.file_refused() },
        services,
    };
    let body = if prometheus { report.to_prometheus() } else { report.to_json() };
    send(r, if prometheus { PROMETHEUS } else { JSON }, body.as_bytes())
}

/// Sends a complete 200 response with `body`.
fn send(r: &mut ngx_http_request_t, content_type: ngx_str_t, body: &[u8]) -> ngx_int_t {
    r.headers_out.status = NGX_HTTP_OK as usize;
    r.headers_out.content_type = content_type;
    r.headers_out.content_type_len = content_type.len;
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
        (*buf).set_last_buf(if core::ptr::eq(r, r.main) { 1 } else { 0 });
        (*buf).set_last_in_chain(1);
        let mut out = ngx_chain_t { buf, next: core::ptr::null_mut() };
        ngx_http_output_filter(r, &mut out)
    }
}
