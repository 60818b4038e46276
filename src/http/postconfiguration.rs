//! The module's postconfiguration: what needs the whole http block, once
//! every location is merged. It registers the phase handlers
//! (`http::phases`) and the sticky header filter, checks the variables a
//! `user_key: var:NAME` reads, and warns of services the locations cannot
//! route.

use core::slice;
use std::sync::Arc;

use ngx::core::Status;
use ngx::ffi::{
    ngx_array_push, ngx_conf_t, ngx_http_handler_pt, ngx_http_phases_NGX_HTTP_ACCESS_PHASE,
    ngx_http_phases_NGX_HTTP_LOG_PHASE, ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE, ngx_int_t, NGX_LOG_WARN,
};
use ngx::http::{HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_log_error;

use crate::conf::Module;
use crate::http::phases::{access_handler, log_handler, log_phase_begins, precontent_handler};

/// The names of nginx.conf's `upstream {}` blocks (lowercase).
///
/// # Safety
/// `cf` is the configuration of the http block, in postconfiguration.
unsafe fn upstream_blocks(cf: *mut ngx_conf_t) -> std::collections::HashSet<String> {
    // SAFETY: (caller) cf->ctx is the http block's context; the upstream module
    // (always built in) keeps its main configuration at its ctx_index, with an
    // array of ngx_http_upstream_srv_conf_t pointers.
    unsafe {
        let ctx = (*cf).ctx as *const ngx::ffi::ngx_http_conf_ctx_t;
        let umcf = *(*ctx).main_conf.add(ngx::ffi::ngx_http_upstream_module.ctx_index)
            as *const ngx::ffi::ngx_http_upstream_main_conf_t;
        let Some(umcf) = umcf.as_ref() else { return Default::default() };
        let upstreams: &[*mut ngx::ffi::ngx_http_upstream_srv_conf_t] = umcf.upstreams.as_slice();
        upstreams
            .iter()
            .filter_map(|&u| u.as_ref())
            .map(|u| {
                let host = String::from_utf8_lossy(u.host.as_bytes()).to_ascii_lowercase();
                // An upstream{} block is matched by its name; the implicit one a
                // static `proxy_pass http://name:port` makes, by name and port.
                if u.flags & ngx::ffi::NGX_HTTP_UPSTREAM_CREATE as ngx::ffi::ngx_uint_t != 0 || u.port == 0 {
                    host
                } else {
                    format!("{host}:{}", u.port)
                }
            })
            .collect()
    }
}

pub unsafe extern "C" fn register_handlers(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: postconfiguration runs with a valid cf; its log is live.
    crate::guard::init(unsafe { (*cf).log }, "postconfiguration", || unsafe { register_handlers_body(cf) })
}

unsafe fn register_handlers_body(cf: *mut ngx_conf_t) -> ngx_int_t {
    // First, before anything that can fail: the chain is a global the filter
    // modules have just rebuilt, and a reload that fails after this point keeps
    // it for the workers the master respawns.
    // SAFETY: postconfiguration, while nginx builds the header filter chain.
    unsafe { crate::http::sticky::register() };
    // SAFETY: postconfiguration runs with a valid cf inside the http block.
    let cmcf = NgxHttpCoreModule::main_conf_mut(unsafe { &*cf }).expect("http core main conf");
    // `user_key: var:NAME` must name a variable nginx.conf defines: now, while
    // nginx still holds their names (`nginx -t`, start, reload).
    // SAFETY: postconfiguration: variables_keys is still allocated.
    let variables = Arc::new(unsafe { crate::conf::variable_names::of_configuration(cmcf) });
    // SAFETY: postconfiguration runs with a valid cf inside the http block.
    let main = Module::main_conf_mut(unsafe { &*cf }).expect("http main conf");
    if let Some(config) = &main.config {
        if let Err(message) =
            migration_engine::variables::check_user_variables(&variables, &main.source, &main.text, config)
        {
            // SAFETY: cf->log is live during postconfiguration.
            ngx_log_error!(ngx::ffi::NGX_LOG_EMERG, unsafe { (*cf).log }, "migration: {}", message);
            return Status::NGX_ERROR.into();
        }
    }
    main.variables = Some(variables);
    // Every location is merged by now: what they can route is known.
    let mut reach = core::mem::take(&mut main.reach);
    // SAFETY: postconfiguration, inside the http block.
    reach.upstreams = unsafe { upstream_blocks(cf) };
    // Backends matter to a resolver only where `proxy_pass` can use them: when
    // no script reads $migration_backend (a `map` of $migration_target onto
    // upstream{} blocks, say), the file's backends are never resolved.
    // SAFETY: cmcf->variables is an array of ngx_http_variable_t.
    let indexed: &[ngx::ffi::ngx_http_variable_t] = unsafe { cmcf.variables.as_slice() };
    if !indexed.iter().any(|v| v.name.as_bytes() == b"migration_backend") {
        reach.location_without_resolver = None;
    }
    let reach = Arc::new(reach);
    if let Some(config) = &main.config {
        let warnings = migration_engine::reach::unreachable_warnings(config, &reach)
            .into_iter()
            .chain(migration_engine::reach::resolver_warnings(config, &reach));
        for warning in warnings {
            // SAFETY: cf->log is live during postconfiguration.
            ngx_log_error!(NGX_LOG_WARN, unsafe { (*cf).log }, "migration: {}: {}", main.source, warning);
        }
    }
    main.reach_done = Some(reach);
    // nginx runs a phase's handlers from the last registered to the first,
    // but the log phase's from the first to the last. Moved to the front of
    // its array, a handler of ours runs last in the access and precontent
    // phases and first in the log phase:
    // - the access handler decides after every other access check
    //   (allow/deny, auth_basic, auth_request), so that `user_key: var:NAME`
    //   can read what auth_request_set set;
    // - the precontent handler runs after try_files, which may send the
    //   request to another location first, and after mirror;
    // - `log_phase_begins` runs before access_log's handler (the log module
    //   registers its handler before any dynamic module), and `log_handler`,
    //   left at the end, after it.
    for (phase, handler, to_front) in [
        (ngx_http_phases_NGX_HTTP_ACCESS_PHASE, access_handler as unsafe extern "C" fn(_) -> _, true),
        (ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE, precontent_handler, true),
        (ngx_http_phases_NGX_HTTP_LOG_PHASE, log_phase_begins, true),
        (ngx_http_phases_NGX_HTTP_LOG_PHASE, log_handler, false),
    ] {
        let handlers = &mut cmcf.phases[phase as usize].handlers;
        // SAFETY: the phase's handler array is an ngx_array_t of ngx_http_handler_pt.
        let h = unsafe { ngx_array_push(handlers) as *mut ngx_http_handler_pt };
        if h.is_null() {
            return Status::NGX_ERROR.into();
        }
        // SAFETY: `h` is a fresh slot in the array.
        unsafe { *h = Some(handler) };
        if to_front {
            // SAFETY: the array holds `nelts` handlers, ours the last of them.
            let all = unsafe { slice::from_raw_parts_mut(handlers.elts as *mut ngx_http_handler_pt, handlers.nelts) };
            all.rotate_right(1);
        }
    }
    Status::NGX_OK.into()
}
