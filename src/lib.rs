//! ngx_http_migration_module: routes each request to the old or the new cluster of
//! a service, by the rules of a YAML file (README.md is the reference: directives,
//! variables, the YAML, the decision order, status).
//!
//! This crate is the thin nginx layer over the `migration-engine` crate and the only
//! place for `unsafe`: the module table and its directives (`directives.rs`), a
//! borrowed view of a request (`request.rs`), the per-request decision and its
//! access-phase handler (`phases.rs`), the `$migration_*` variables
//! (`variables.rs`), the shared zone (`zone.rs`), publication on reload and on
//! `watch=` (`publish.rs`), warnings that need the whole configuration
//! (`checks.rs`) and the status handler (`status.rs`).

use core::ptr::{addr_of, addr_of_mut};

use ngx::ffi::{ngx_command_t, ngx_http_module_t, ngx_module_t, NGX_HTTP_MODULE};

mod checks;
mod directives;
mod guard;
mod hooks;
mod phases;
mod publish;
mod publisher;
mod ramp;
mod random;
mod request;
mod status;
mod variable_names;
mod variables;
mod zone;

use directives::Module;

static NGX_HTTP_MIGRATION_MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(variables::add_variables),
    postconfiguration: Some(phases::register_handlers),
    create_main_conf: Some(directives::create_main_conf),
    init_main_conf: None,
    create_srv_conf: Some(directives::create_srv_conf),
    merge_srv_conf: Some(directives::merge_srv_conf),
    create_loc_conf: Some(directives::create_loc_conf),
    merge_loc_conf: Some(directives::merge_loc_conf),
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
    commands: unsafe { addr_of_mut!(directives::COMMANDS[0]) as *mut ngx_command_t },
    type_: NGX_HTTP_MODULE as _,
    init_module: Some(publish::init_module),
    init_process: Some(publish::init_process),
    exit_process: Some(publish::exit_process),
    ..ngx_module_t::default()
};

impl ngx::http::HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is only written by nginx while loading the
        // configuration (ctx_index, index), before any request is served.
        unsafe { &*addr_of!(ngx_http_migration_module) }
    }
}
