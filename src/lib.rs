//! ngx_http_migration_module: routes each request to the old or the new cluster of
//! a service, by the rules of a YAML file (docs/ is the reference: directives,
//! variables, the YAML, the decision order, status; docs/architecture.md maps
//! this code).
//!
//! This crate is the thin nginx layer over the `migration-engine` crate and the
//! only place for `unsafe`. This file is the module table; the rest is in three
//! folders, each reading only those before it:
//!
//! * `conf/`: what nginx.conf says (directive structs and handlers, parameters,
//!   server names, the `nginx -s` signaller, configuration-time warnings);
//! * `state/`: what outlives a request (the zone and its process table, the live
//!   configuration, admission, publication on reload and on `watch=`, the compile
//!   thread, the ramp timer);
//! * `http/`: the request path (the decision a request keeps, the phase
//!   handlers, the request view, the variables, the status handler).
//!
//! Beside them: `guard` (no panic crosses into nginx), `random` (the weighted
//! draw) and `test_hooks` (fault injection, test builds only).

use core::ptr::{self, addr_of, addr_of_mut};

use ngx::ffi::{
    ngx_command_t, ngx_http_module_t, ngx_module_t, ngx_uint_t, NGX_CONF_1MORE, NGX_CONF_FLAG, NGX_CONF_NOARGS,
    NGX_CONF_TAKE12, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET,
    NGX_HTTP_MODULE, NGX_HTTP_SRV_CONF,
};
use ngx::ngx_string;

mod conf;
mod guard;
mod http;
mod random;
mod state;
mod test_hooks;

use conf::Module;

/// The directives (each handler lives with what it configures).
pub static mut COMMANDS: [ngx_command_t; 5] = [
    ngx_command_t {
        name: ngx_string!("migration_config"),
        // PATH and up to four parameters (zone=, watch=, max_size=, last_good=).
        // TAKE123 counted PATH among its three; 1MORE leaves the count to the
        // handler, which refuses a repeated parameter by name (so no sixth).
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE) as ngx_uint_t,
        set: Some(state::load::set_migration_config),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("migration"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_FLAG) as ngx_uint_t,
        set: Some(conf::directives::set_migration),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("migration_service"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE12) as ngx_uint_t,
        set: Some(conf::directives::set_migration_service),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("migration_status"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS) as ngx_uint_t,
        set: Some(http::status::set_migration_status),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t::empty(),
];

static NGX_HTTP_MIGRATION_MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(http::variables::add_variables),
    postconfiguration: Some(http::postconfiguration::register_handlers),
    create_main_conf: Some(conf::create_main_conf),
    init_main_conf: None,
    create_srv_conf: Some(conf::create_srv_conf),
    merge_srv_conf: Some(conf::merge_srv_conf),
    create_loc_conf: Some(conf::create_loc_conf),
    merge_loc_conf: Some(conf::merge_loc_conf),
};

#[cfg(feature = "export-modules")]
ngx::ngx_modules!(ngx_http_migration_module);

#[used]
#[allow(non_upper_case_globals)]
#[cfg_attr(not(feature = "export-modules"), no_mangle)]
pub static mut ngx_http_migration_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(NGX_HTTP_MIGRATION_MODULE_CTX) as _,
    // SAFETY: the commands table is a static that lives as long as the module; nginx
    // only reads it.
    commands: unsafe { addr_of_mut!(COMMANDS[0]) as *mut ngx_command_t },
    type_: NGX_HTTP_MODULE as _,
    init_module: Some(state::cycle::init_module),
    init_process: Some(state::cycle::init_process),
    exit_process: Some(state::cycle::exit_process),
    ..ngx_module_t::default()
};

impl ngx::http::HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is only written by nginx while loading the
        // configuration (ctx_index, index), before any request is served.
        unsafe { &*addr_of!(ngx_http_migration_module) }
    }
}
