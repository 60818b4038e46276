//! The service of each of a server block's names, found once per
//! configuration. `migration_service auto` finds a request's service from its
//! Host, and checks that the request's server block names that Host
//! (`served_by_name`): 147 instructions a request (callgrind, 2026-12-06). When
//! every name of the block is exact, a Host it does not name routes nowhere, and
//! a Host it names has the service of that name, which only the configuration
//! decides. Such a block keeps, per name, the service found the first time a
//! request carried it, for the configuration the process routes by (its
//! [`LiveConfig::instance`]); a newer configuration finds them again. A block
//! with a wildcard or a regular expression among its names finds the service
//! every time.
//!
//! Every worker has its own copy of the configuration: nothing is shared.

use core::cell::UnsafeCell;

use migration_engine::compiled::same_bytes;
use ngx::ffi::ngx_http_request_t;
use ngx::http::HttpModuleServerConf;

use crate::conf::server_name::ServerName;
use crate::conf::Module;
use crate::http::request::bytes;
use crate::state::live::LiveConfig;

/// Not found yet for the configuration of [`Found::instance`].
const UNKNOWN: u32 = u32::MAX - 1;

/// What a block of exact names found, for the configuration `instance`: the
/// service of each name (`u32::MAX`: none), in the block's order.
#[derive(Default)]
struct Found {
    instance: u64,
    services: Vec<u32>,
}

/// A server block's services per name (a field of its configuration, `SrvConf`).
#[derive(Default)]
pub struct LastVerdict {
    /// Whether every name of the block is exact (see [`LastVerdict::for_names`]).
    keeps: bool,
    found: UnsafeCell<Found>,
}

impl LastVerdict {
    /// For a block with these names. Nothing is kept for a block with a
    /// wildcard or a regular expression among them, nor for a block without
    /// names (which routes nothing under `migration_service auto`).
    pub fn for_names(names: &[ServerName]) -> LastVerdict {
        let keeps = !names.is_empty() && names.iter().all(|name| matches!(name, ServerName::Exact(_)));
        let services = if keeps { vec![UNKNOWN; names.len()] } else { Vec::new() };
        LastVerdict { keeps, found: UnsafeCell::new(Found { instance: 0, services }) }
    }
}

/// The index of the service for the request's Host in `live` (`u32::MAX`:
/// none), as `find` answers it; in a block of exact names, `find` runs once
/// per name and configuration.
pub fn service_index(r: &ngx_http_request_t, live: &LiveConfig, find: impl FnOnce() -> u32) -> u32 {
    let Some(server) = Module::server_conf(r).filter(|server| server.last_verdict.keeps) else {
        return find();
    };
    // headers_in.server is nginx's validated Host: lowercase, no port. An exact
    // name matches exactly that (as `ServerName::matches` says, whose match over
    // every kind of name cost about 20 instructions a request more here,
    // callgrind); a Host the block does not name is not served by its name,
    // whatever the configuration says.
    let host = bytes(&r.headers_in.server);
    let Some(position) =
        server.names.iter().position(|name| matches!(name, ServerName::Exact(n) if same_bytes(n, host)))
    else {
        return u32::MAX;
    };
    let cell = server.last_verdict.found.get();
    {
        // SAFETY: a worker's copy of the configuration is its own, and only its
        // event loop's thread decides requests (variable getters, phase handlers
        // and the drain timer run there; the compile thread never decides): no
        // other reference to the cell is alive here.
        let found = unsafe { &*cell };
        match found.services.get(position) {
            Some(&index) if index != UNKNOWN && found.instance == live.instance => return index,
            _ => {}
        }
    }
    let index = find();
    // SAFETY: as above; `find` has returned, no other reference is alive.
    let found = unsafe { &mut *cell };
    if found.instance != live.instance {
        found.instance = live.instance;
        found.services.fill(UNKNOWN);
    }
    if let Some(kept) = found.services.get_mut(position) {
        *kept = index;
    }
    index
}
