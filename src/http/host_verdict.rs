//! The last Host's service, kept per worker. `migration_service auto` finds a
//! request's service from its Host, and checks that the request's server block
//! names that Host (`served_by_name`): about 110 instructions a request
//! (callgrind), for an answer that a keep-alive connection, and most traffic of
//! a server block, repeats request after request. The worker keeps the last
//! answer, keyed by everything it depends on: the configuration it was found in
//! (its address and generation), the server block, and the Host's bytes. A
//! different Host, server block or configuration finds the answer again and
//! keeps that one instead.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ptr;

use ngx::ffi::ngx_http_request_t;
use ngx::http::HttpModuleServerConf;

use crate::conf::Module;
use crate::http::request::bytes;
use crate::state::live::LiveConfig;

/// Longer Hosts are found every time (nginx's names are up to 253 bytes, but
/// real Hosts are rarely over 64).
const HOST_MAX: usize = 64;

struct Verdict {
    config: *const LiveConfig,
    generation: u64,
    server: *const c_void,
    host_len: usize,
    host: [u8; HOST_MAX],
    /// The service's index, or `u32::MAX` for none.
    index: u32,
}

struct LastVerdict(UnsafeCell<Verdict>);

// SAFETY: only the event loop's thread decides requests (variable getters,
// phase handlers and the drain timer run there; the compile thread never
// decides), and a worker has one event loop: the cell is never shared.
unsafe impl Sync for LastVerdict {}

static LAST: LastVerdict = LastVerdict(UnsafeCell::new(Verdict {
    config: ptr::null(),
    generation: 0,
    server: ptr::null(),
    host_len: usize::MAX,
    host: [0; HOST_MAX],
    index: u32::MAX,
}));

/// The index of the service for the request's Host in `live` (`u32::MAX`:
/// none), as `find` answers it; `find` runs only when the last answer's key
/// differs.
pub fn service_index(r: &ngx_http_request_t, live: &LiveConfig, find: impl FnOnce() -> u32) -> u32 {
    // headers_in.server is nginx's validated Host: lowercase, no port.
    let host = bytes(&r.headers_in.server);
    let server = Module::server_conf(r).map_or(ptr::null(), |s| s as *const _ as *const c_void);
    let config = live as *const LiveConfig;
    {
        // SAFETY: see LastVerdict; no other reference to the cell is alive here.
        let last = unsafe { &*LAST.0.get() };
        if last.host_len == host.len()
            && last.generation == live.generation
            && ptr::eq(last.config, config)
            && last.server == server
            && last.host[..host.len()] == *host
        {
            return last.index;
        }
    }
    let index = find();
    if host.len() <= HOST_MAX {
        // SAFETY: see LastVerdict; `find` has returned, no other reference is alive.
        let last = unsafe { &mut *LAST.0.get() };
        last.config = config;
        last.generation = live.generation;
        last.server = server;
        last.host_len = host.len();
        last.host[..host.len()].copy_from_slice(host);
        last.index = index;
    }
    index
}
