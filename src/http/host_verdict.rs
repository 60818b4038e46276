//! The last Host's service, kept per server block. `migration_service auto`
//! finds a request's service from its Host, and checks that the request's
//! server block names that Host (`served_by_name`): about 110 instructions a
//! request (callgrind), for an answer that a server block of one name repeats
//! request after request. Such a block's configuration keeps its last answer
//! (every worker has its own copy of the configuration: nothing is shared),
//! keyed by everything it depends on besides the server block: the
//! configuration it was found in (its address and generation) and the Host's
//! bytes. Another Host, or a newer configuration, finds the answer again and
//! keeps that one instead.

use core::cell::UnsafeCell;
use core::ptr;

use ngx::ffi::ngx_http_request_t;
use ngx::http::HttpModuleServerConf;

use crate::conf::server_name::ServerName;
use crate::conf::Module;
use crate::http::request::bytes;
use crate::state::live::LiveConfig;

/// Longer Hosts are found every time (nginx's names are up to 253 bytes, but
/// real Hosts are rarely over 64).
const HOST_MAX: usize = 64;

struct Verdict {
    config: *const LiveConfig,
    generation: u64,
    host_len: usize,
    host: [u8; HOST_MAX],
    /// The service's index, or `u32::MAX` for none.
    index: u32,
}

/// A server block's last answer (a field of its configuration, `SrvConf`).
#[derive(Default)]
pub struct LastVerdict {
    /// Whether the block keeps its last answer: only a block of one exact name
    /// (see [`LastVerdict::for_names`]).
    keeps: bool,
    last: UnsafeCell<Verdict>,
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict { config: ptr::null(), generation: 0, host_len: usize::MAX, host: [0; HOST_MAX], index: u32::MAX }
    }
}

impl LastVerdict {
    /// A block of one exact name serves nearly only that Host: its last answer
    /// is the next request's. A block of several names, a wildcard or a regular
    /// expression serves several Hosts whose requests interleave: its last
    /// answer would often be for another Host, and each miss costs about 80
    /// instructions more than finding the service without keeping anything (a
    /// compare and a copy; callgrind, two Hosts alternating in one block). Such
    /// a block finds the service every time.
    pub fn for_names(names: &[ServerName]) -> LastVerdict {
        LastVerdict { keeps: matches!(names, [ServerName::Exact(_)]), ..Default::default() }
    }
}

/// The index of the service for the request's Host in `live` (`u32::MAX`:
/// none), as `find` answers it; `find` runs only when the server block's last
/// answer was for another Host or configuration.
pub fn service_index(r: &ngx_http_request_t, live: &LiveConfig, find: impl FnOnce() -> u32) -> u32 {
    let Some(verdict) = Module::server_conf(r).map(|server| &server.last_verdict).filter(|v| v.keeps) else {
        return find();
    };
    let cell = verdict.last.get();
    // headers_in.server is nginx's validated Host: lowercase, no port.
    let host = bytes(&r.headers_in.server);
    let config = live as *const LiveConfig;
    {
        // SAFETY: a worker's copy of the configuration is its own, and only its
        // event loop's thread decides requests (variable getters, phase handlers
        // and the drain timer run there; the compile thread never decides): no
        // other reference to the cell is alive here.
        let last = unsafe { &*cell };
        if last.host_len == host.len()
            && last.generation == live.generation
            && ptr::eq(last.config, config)
            && last.host[..host.len()] == *host
        {
            return last.index;
        }
    }
    let index = find();
    if host.len() <= HOST_MAX {
        // SAFETY: as above; `find` has returned, no other reference is alive.
        let last = unsafe { &mut *cell };
        last.config = config;
        last.generation = live.generation;
        last.host_len = host.len();
        last.host[..host.len()].copy_from_slice(host);
        last.index = index;
    }
    index
}
