//! `sticky`'s cookie on the response: a request whose decision minted an id
//! (its service has `sticky` and it carried no id) hands the id out in one
//! `Set-Cookie` on its final response, whatever status it has and however it was
//! made (`return`, a proxied response that sets its own cookies, an
//! `error_page`, HTTP/2), never twice.
//!
//! The same filter sees each upgraded connection (101) go out: a long-lived
//! request (`http::drain`).
//!
//! A header filter, as nginx's userid filter: the first in the chain (our module
//! is loaded after the filter modules), so the header is in `headers_out` before
//! the HTTP/1 or HTTP/2 header filter writes it out.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ngx::ffi::{
    ngx_http_output_header_filter_pt, ngx_http_request_t, ngx_http_top_header_filter, ngx_int_t, ngx_list_push,
    ngx_pnalloc, ngx_str_t, ngx_table_elt_t, NGX_ERROR,
};

use crate::http::decision::existing;

/// The filter after ours, as nginx chained them (set once per configuration read).
static mut NEXT_HEADER_FILTER: ngx_http_output_header_filter_pt = None;

/// Set once this process minted an id: until then (and in every nginx whose
/// configuration has no `sticky`), the filter looks at nothing.
pub(crate) static MINTED_ANY: AtomicBool = AtomicBool::new(false);

/// Puts the filter at the head of the header filter chain (postconfiguration).
///
/// # Safety
/// Called from postconfiguration, while nginx builds the filter chain.
pub unsafe fn register() {
    // SAFETY: postconfiguration runs on nginx's one configuration thread, which
    // owns the chain's head and our copy of it.
    unsafe {
        NEXT_HEADER_FILTER = ngx_http_top_header_filter;
        ngx_http_top_header_filter = Some(header_filter);
    }
}

/// The request whose header the filters after ours are writing now (0: none):
/// a decision made meanwhile (`add_header` reading a variable) comes too late
/// for a cookie. A worker's event loop is one thread.
static PAST_STICKY_FILTER: AtomicUsize = AtomicUsize::new(0);

/// Whether `r`'s header went past this filter already and is being written.
pub(crate) fn past_filter(r: &ngx_http_request_t) -> bool {
    PAST_STICKY_FILTER.load(Ordering::Relaxed) == r as *const _ as usize
}

unsafe extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls header filters with a live request.
    if unsafe { (*r).headers_out.status } == 101 {
        // SAFETY: as above.
        crate::guard::quiet("an upgraded connection", || unsafe { crate::http::drain::upgraded_request(&mut *r) });
    }
    if MINTED_ANY.load(Ordering::Relaxed) {
        // SAFETY: nginx calls header filters with a live request.
        let rc = crate::guard::request(r, "the sticky cookie", || unsafe { add_cookie(r) });
        if rc != 0 {
            return rc;
        }
    }
    let outer = PAST_STICKY_FILTER.swap(r as usize, Ordering::Relaxed);
    // SAFETY: set by `register` before any request; nginx's own header filter
    // ends the chain, so there is always a next one.
    let rc = unsafe {
        match NEXT_HEADER_FILTER {
            Some(next) => next(r),
            None => NGX_ERROR as ngx_int_t,
        }
    };
    PAST_STICKY_FILTER.store(outer, Ordering::Relaxed);
    rc
}

/// Adds the minted id's `Set-Cookie` to the main request's response, once.
unsafe fn add_cookie(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: a live request; its main request is live as long as it is.
    let r = unsafe { &mut *r };
    if !core::ptr::eq(r, r.main) {
        // A subrequest's headers never reach the client.
        return 0;
    }
    let Some(decision) = existing(r) else { return 0 };
    // SAFETY: the decision lives in the request pool, as long as the request.
    let decision = unsafe { &*decision };
    let (Some(id), Some(index)) = (decision.minted, decision.decision.service) else { return 0 };
    if decision.cookie_sent.replace(true) {
        return 0;
    }
    let Some(cookie) = decision.published.config.services.get(index as usize).and_then(|s| s.sticky()) else {
        return 0;
    };
    // `$https`, as nginx sets it: the same in every build of nginx (the
    // connection's `ssl` field exists only where bindgen saw NGX_SSL), and read
    // only for `secure: auto`.
    let tls = cookie.secure_follows_tls() && {
        // SAFETY: `r` is live for this call; the view only reads a variable.
        let view = unsafe { crate::http::request::NgxRequestView::new(&mut *r) };
        migration_engine::RequestView::variable(&view, b"https") == Some(&b"on"[..])
    };
    let value = cookie.header_value(&id, tls);
    // SAFETY: headers_out.headers is the response's header list, in the request
    // pool; the value is copied into that pool, which outlives the response.
    unsafe {
        let header = ngx_list_push(&mut r.headers_out.headers) as *mut ngx_table_elt_t;
        let data = ngx_pnalloc(r.pool, value.len()) as *mut u8;
        if header.is_null() || data.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        core::ptr::copy_nonoverlapping(value.as_ptr(), data, value.len());
        (*header).hash = 1;
        (*header).key = ngx_str_t { len: 10, data: b"Set-Cookie".as_ptr() as *mut u8 };
        (*header).value = ngx_str_t { len: value.len(), data };
        (*header).lowcase_key = core::ptr::null_mut();
        #[cfg(not(ngx_cookie_array))]
        {
            (*header).next = core::ptr::null_mut();
        }
    }
    if let Some((now, index)) = decision.live_slot() {
        now.slots[index].count_minted();
    }
    0
}
