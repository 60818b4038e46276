//! A borrowed, zero-copy view of an nginx request for the decision engine.

use core::slice;
use core::sync::atomic::{AtomicBool, Ordering};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use core::marker::PhantomData;
use migration_engine::{arg_in_query, cookie_in_header, RequestView, StickyId};

use ngx::ffi::{
    ngx_hash_key, ngx_http_get_variable, ngx_http_request_t, ngx_str_t, ngx_table_elt_t, ngx_variable_value_t,
    sockaddr_in, sockaddr_in6,
};
use ngx::http::HttpModuleServerConf;

use crate::conf::Module;

pub struct NgxRequestView<'r> {
    /// A raw pointer, not a reference: reading a variable (`user_key: var:NAME`)
    /// lets nginx write the request's variable cache.
    r: *mut ngx_http_request_t,
    _request: PhantomData<&'r mut ngx_http_request_t>,
    /// Whether the decision may have `sticky` mint an id for the request.
    mints: bool,
    /// The id minted, once the decision asked (None inside: the kernel gave no
    /// random bytes).
    minted: core::cell::OnceCell<Option<StickyId>>,
}

/// The values of the entries of `list` named `name` (any case), in order: a
/// header or trailer as nginx keeps them.
pub(crate) fn list_values<'a>(list: &'a ngx::ffi::ngx_list_t, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    Headers { part: Some(&list.part), index: 0 }
        .filter(move |h| bytes(&h.key).eq_ignore_ascii_case(name))
        .map(|h| bytes(&h.value))
}

/// The value of the first entry of `list` named `name` (any case).
pub(crate) fn list_value<'a>(list: &'a ngx::ffi::ngx_list_t, name: &'a [u8]) -> Option<&'a [u8]> {
    list_values(list, name).next()
}

impl<'r> NgxRequestView<'r> {
    /// # Safety
    /// `r` must be a live request whose connection is live, for the view's lifetime.
    pub unsafe fn new(r: &'r mut ngx_http_request_t) -> Self {
        NgxRequestView { r, _request: PhantomData, mints: false, minted: core::cell::OnceCell::new() }
    }

    /// A view for the request's decision: a `sticky` service's request that
    /// carries no id gets one, from the kernel's random source, when the
    /// decision asks.
    ///
    /// # Safety
    /// As [`NgxRequestView::new`].
    pub unsafe fn minting(r: &'r mut ngx_http_request_t) -> Self {
        NgxRequestView { r, _request: PhantomData, mints: true, minted: core::cell::OnceCell::new() }
    }

    /// A view that decides the request again as it was decided: the id minted
    /// for it then (it carried none) is the id it has.
    ///
    /// # Safety
    /// As [`NgxRequestView::new`].
    pub unsafe fn replaying(r: &'r mut ngx_http_request_t, minted: Option<StickyId>) -> Self {
        let view =
            NgxRequestView { r, _request: PhantomData, mints: minted.is_some(), minted: core::cell::OnceCell::new() };
        let _ = view.minted.set(minted);
        view
    }

    /// The id minted for the request, if the decision asked for one.
    pub fn minted(&self) -> Option<StickyId> {
        self.minted.get().copied().flatten()
    }

    fn request(&self) -> &ngx_http_request_t {
        // SAFETY: the request is live for the view's lifetime (see `new`); nothing
        // writes it while this short-lived reference is in use.
        unsafe { &*self.r }
    }
}

/// The data of the request pool's cleanup entry whose handler is `handler` and
/// which `ours` recognises (by a tag of its own): how a request finds what it
/// keeps in its pool when no module context can hold it (nginx clears module
/// contexts on an internal redirect).
pub(crate) fn pool_cleanup<T>(
    r: &ngx_http_request_t,
    handler: unsafe extern "C" fn(*mut core::ffi::c_void),
    ours: impl Fn(&T) -> bool,
) -> Option<*mut T> {
    // SAFETY: r->pool->cleanup is a null-terminated list of live cleanups.
    let mut cln = unsafe { (*r.pool).cleanup };
    while !cln.is_null() {
        // SAFETY: as above.
        let c = unsafe { &*cln };
        // SAFETY: a cleanup with `handler` carries a T (each handler drops its own type).
        if c.handler.is_some_and(|h| core::ptr::fn_addr_eq(h, handler)) && ours(unsafe { &*(c.data as *const T) }) {
            return Some(c.data as *mut T);
        }
        cln = c.next;
    }
    None
}

pub(crate) fn bytes(s: &ngx_str_t) -> &[u8] {
    // One test, not two: an empty string with data is an empty slice too (a
    // header pass calls this for every header).
    if s.data.is_null() {
        return &[];
    }
    // SAFETY: an ngx_str_t of a live request with data points at `len` readable
    // bytes in the request's (or connection's) pool, which outlive the view.
    unsafe { slice::from_raw_parts(s.data, s.len) }
}

/// The entries of an `ngx_list_t` of table elements, part after part.
struct Headers<'a> {
    part: Option<&'a ngx::ffi::ngx_list_part_t>,
    index: usize,
}

impl<'a> Iterator for Headers<'a> {
    type Item = &'a ngx_table_elt_t;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let part = self.part?;
            if self.index < part.nelts {
                // SAFETY: the part holds `nelts` initialised ngx_table_elt_t.
                let h = unsafe { &*(part.elts as *const ngx_table_elt_t).add(self.index) };
                self.index += 1;
                // nginx marks a removed header with hash 0.
                if h.hash == 0 {
                    continue;
                }
                return Some(h);
            }
            // SAFETY: `next` is null or the next part of the same list.
            self.part = unsafe { part.next.as_ref() };
            self.index = 0;
        }
    }
}

impl<'r> NgxRequestView<'r> {
    /// Every entry of the request's header list, in order, but those nginx
    /// marked removed (hash 0) or that have no lowercase name. Each caller
    /// makes the name's slice itself: made here, it cost 8 instructions a
    /// request more with 2 headers and 36 with 9 (callgrind).
    #[inline]
    fn each_header_elt<'a>(&'a self, mut f: impl FnMut(&'a ngx_table_elt_t)) {
        let mut part = Some(&self.request().headers_in.headers.part);
        while let Some(p) = part {
            let elts: &[ngx_table_elt_t] = if p.nelts == 0 {
                &[]
            } else {
                // SAFETY: a list part holds `nelts` initialised ngx_table_elt_t.
                unsafe { slice::from_raw_parts(p.elts as *const _, p.nelts) }
            };
            for h in elts {
                if h.hash != 0 && !h.lowcase_key.is_null() {
                    f(h);
                }
            }
            // SAFETY: `next` is null or the next part of the same list.
            part = unsafe { p.next.as_ref() };
        }
    }

    /// The request's Cookie headers, in the order they came: nginx 1.23 and later
    /// chain them (`headers_in.cookie`).
    #[cfg(not(ngx_cookie_array))]
    fn cookie_headers(&self) -> impl Iterator<Item = &ngx_table_elt_t> + '_ {
        let mut h = self.request().headers_in.cookie;
        core::iter::from_fn(move || {
            // SAFETY: headers_in.cookie is a null-terminated chain of live headers.
            let elt = unsafe { h.as_ref()? };
            h = elt.next;
            Some(elt)
        })
    }

    /// The same before nginx 1.23 (e.g. Debian 12's 1.22): an array of pointers,
    /// `headers_in.cookies`.
    #[cfg(ngx_cookie_array)]
    fn cookie_headers(&self) -> impl Iterator<Item = &ngx_table_elt_t> + '_ {
        let cookies = &self.request().headers_in.cookies;
        let elts: &[*mut ngx_table_elt_t] = if cookies.elts.is_null() || cookies.nelts == 0 {
            &[]
        } else {
            // SAFETY: an initialised ngx_array_t of `nelts` pointers to live headers
            // (nginx initialises it for every request before reading headers).
            unsafe { slice::from_raw_parts(cookies.elts as *const *mut ngx_table_elt_t, cookies.nelts) }
        };
        // SAFETY: each entry points at a header of the request, as long-lived as it.
        elts.iter().filter_map(|&h| unsafe { h.as_ref() })
    }
}

/// Set while the module reads an nginx variable for a decision (`user_key:
/// var:`). A variable whose value reads one of the module's target variables
/// (a `map` of `$migration_target`; the name itself is refused with the
/// configuration) would start another decision inside this one, and another
/// inside that, about 100 deep until nginx's own cycle guard stopped it, each
/// one counted: the module's getters give no value meanwhile
/// (`http::variables`).
pub(crate) static READING_USER_VARIABLE: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The value slots of the module's variables that gave no value during the
    /// read: nginx keeps a variable's value for the rest of the request, so
    /// each is emptied again when the read ends, and a later read of
    /// `$migration_target` finds the decision.
    static HIDDEN: core::cell::RefCell<Vec<*mut ngx_variable_value_t>> =
        const { core::cell::RefCell::new(Vec::new()) };
}

/// Notes a value slot that gave no value while [`READING_USER_VARIABLE`] was set.
pub(crate) fn hidden_while_reading(v: *mut ngx_variable_value_t) {
    HIDDEN.with(|hidden| hidden.borrow_mut().push(v));
}

/// Sets [`READING_USER_VARIABLE`] for its life, and clears it however the read
/// ends (a panic is caught at the entry point, and must not leave it set).
struct ReadingUserVariable {
    outer: bool,
}

impl ReadingUserVariable {
    fn enter() -> Self {
        ReadingUserVariable { outer: READING_USER_VARIABLE.swap(true, Ordering::Relaxed) }
    }
}

impl Drop for ReadingUserVariable {
    fn drop(&mut self) {
        READING_USER_VARIABLE.store(self.outer, Ordering::Relaxed);
        if self.outer {
            return;
        }
        HIDDEN.with(|hidden| {
            for v in hidden.borrow_mut().drain(..) {
                // SAFETY: each is a value slot of the request whose variable was
                // read (its `variables` array, in its pool), noted during this
                // read, which that request outlives.
                unsafe {
                    (*v).set_valid(0);
                    (*v).set_not_found(0);
                }
            }
        });
    }
}

impl RequestView for NgxRequestView<'_> {
    fn sticky_id(&self) -> Option<&[u8]> {
        if !self.mints {
            return None;
        }
        self.minted.get_or_init(crate::random::sticky_id).as_ref().map(StickyId::as_bytes)
    }

    fn host(&self) -> &[u8] {
        // headers_in.server: the Host header (or the absolute URI's host), already
        // validated by nginx, lowercased and without its port.
        bytes(&self.request().headers_in.server)
    }

    fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        Headers { part: Some(&self.request().headers_in.headers.part), index: 0 }.map(|h| {
            let name = if h.lowcase_key.is_null() {
                &[][..]
            } else {
                // SAFETY: lowcase_key holds key.len lowercase bytes for request headers.
                unsafe { slice::from_raw_parts(h.lowcase_key, h.key.len) }
            };
            (name, bytes(&h.value))
        })
    }

    #[inline]
    fn for_each_header<'a>(&'a self, mut visit: impl FnMut(&'a [u8], &'a [u8])) {
        self.each_header_elt(|h| {
            // SAFETY: lowcase_key holds key.len lowercase bytes for request headers.
            let name = unsafe { slice::from_raw_parts(h.lowcase_key, h.key.len) };
            visit(name, bytes(&h.value));
        });
    }

    #[inline]
    fn for_each_header_in<'a>(
        &'a self,
        mut slot_of: impl FnMut(&[u8]) -> Option<usize>,
        mut visit: impl FnMut(usize, &'a [u8]),
    ) {
        self.each_header_elt(|h| {
            // SAFETY: lowcase_key holds key.len lowercase bytes for request headers.
            let name = unsafe { slice::from_raw_parts(h.lowcase_key, h.key.len) };
            // Only a header the decision reads has its value looked at.
            if let Some(slot) = slot_of(name) {
                visit(slot, bytes(&h.value));
            }
        });
    }

    fn cookie(&self, name: &[u8]) -> Option<&[u8]> {
        self.cookie_headers().find_map(|h| cookie_in_header(bytes(&h.value), name))
    }

    fn arg(&self, name: &[u8]) -> Option<&[u8]> {
        arg_in_query(bytes(&self.request().args), name)
    }

    fn variable(&self, lowercase_name: &[u8]) -> Option<&[u8]> {
        let _reading = ReadingUserVariable::enter();
        let mut name = ngx_str_t { len: lowercase_name.len(), data: lowercase_name.as_ptr() as *mut u8 };
        // SAFETY: `r` is live and not otherwise borrowed during the call; nginx
        // only reads the name, and may cache the value in the request's pool.
        let value = unsafe {
            let key = ngx_hash_key(name.data, name.len);
            ngx_http_get_variable(self.r, &mut name, key).as_ref()?
        };
        if value.valid() == 0 || value.not_found() != 0 || value.data.is_null() {
            return None;
        }
        // SAFETY: a valid variable value points at `len` bytes in the request pool.
        Some(unsafe { slice::from_raw_parts(value.data, value.len() as usize) })
    }

    fn client_ip(&self) -> Option<IpAddr> {
        // SAFETY: the request's connection is live; its sockaddr (replaced by realip
        // when configured) is valid for `socklen` bytes.
        unsafe {
            let c = &*self.request().connection;
            let sa = c.sockaddr;
            if sa.is_null() {
                return None;
            }
            match (*sa).sa_family as i32 {
                libc::AF_INET => {
                    let sin = &*(sa as *const sockaddr_in);
                    Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(sa as *const sockaddr_in6);
                    Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.__in6_u.__u6_addr8)))
                }
                _ => None,
            }
        }
    }

    fn client_addr_text(&self) -> &[u8] {
        // SAFETY: the request's connection is live.
        bytes(unsafe { &(*self.request().connection).addr_text })
    }
}

/// Whether the request's server block names the request's Host in its
/// `server_name` (the Host is `headers_in.server`: the Host header, an absolute
/// URI's host or HTTP/2's `:authority`). A server block that does not is serving
/// the request only as the default server of its address. `migration_service
/// auto` routes a request only to the service of a Host its server block names,
/// so that a Host sent to the wrong server block never reaches the service of
/// another block (whose own access rules it would bypass).
pub fn served_by_name(r: &ngx_http_request_t) -> bool {
    let host = bytes(&r.headers_in.server);
    !host.is_empty() && Module::server_conf(r).is_some_and(|server| server.names.iter().any(|name| name.matches(host)))
}
