//! What `nginx -t` (and start, reload) says about nginx.conf while the http
//! block is merged: the module cannot route what the configuration asks for.

use core::ffi::{c_void, CStr};
use core::ptr;

use ngx::ffi::{ngx_conf_t, ngx_http_conf_ctx_t, ngx_http_variable_t, ngx_module_t, NGX_LOG_WARN};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, HttpModuleServerConf, NgxHttpCoreModule};

use crate::conf::{LocConf, Module, ServerName, ServiceSetting};

/// `migration_service auto` routes only Hosts the server block names: a block
/// with `migration on` and no usable `server_name` would route nothing, which
/// `nginx -t` says once per server block.
pub fn warn_if_auto_without_names(cf: *mut ngx_conf_t, conf: &LocConf) {
    if conf.enabled != Some(true) || !matches!(conf.service, ServiceSetting::Auto | ServiceSetting::Unset) {
        return;
    }
    // SAFETY: cf->ctx holds the server block being merged.
    let Some(server) = Module::server_conf_mut(unsafe { &*cf }) else {
        return;
    };
    let nameless = server.names.iter().all(|n| matches!(n, ServerName::Exact(name) if name.is_empty() || name == b"_"));
    if nameless && !server.warned_nameless {
        server.warned_nameless = true;
        // Merged after the whole http block was read: cf's line is the block's
        // end, so the server block's own line is named.
        // SAFETY: cf->log is live while the configuration is read.
        let log = unsafe { (*cf).log };
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "migration: the server block in {} names no host in server_name, so \"migration_service auto\" routes \
             none of its requests (a Host it does not name may belong to another server block); list the services' \
             hosts in server_name, or write \"migration_service auto any_server;\" for a catch-all router",
            server.at
        );
    }
}

/// The `$migration_*` variables whose value needs the target: reading one
/// decides the request.
const TARGET_VARIABLES: [&[u8]; 7] = [
    b"migration_target",
    b"migration_backend",
    b"migration_host",
    b"migration_scheme",
    b"migration_rule",
    b"migration_percentage",
    b"migration_user_id",
];

/// `nginx -t` (and start, reload) warns about a location whose rewrite-phase
/// directives (`set`, `if`, `return`, `rewrite`) read a target-dependent
/// `$migration_*` variable while a service reads its user id from a variable
/// (`user_key: var:NAME`): such a request is decided before the access phase,
/// before `auth_request_set` can set that variable.
///
/// The rewrite module compiles a location's directives into one array of script
/// codes; reading a variable is a code struct that starts with the address of
/// `ngx_http_script_var_code` or `ngx_http_script_copy_var_code` followed by the
/// variable's index, and a `return` keeps its text's codes in its own struct. The
/// scan looks for those pairs, word by word (code structs are word-aligned):
/// nginx's own function addresses mark them, no guess about the layout.
pub fn warn_if_target_read_before_access(cf: *mut ngx_conf_t) {
    // SAFETY: cf is valid while the http block is merged.
    let Some(main) = Module::main_conf(unsafe { &*cf }) else { return };
    let Some(config) = &main.config else { return };
    let keyed: Vec<String> =
        config.services.iter().filter_map(|s| s.user_variable().map(|v| format!("\"{}\" (var:{v})", s.name))).collect();
    if keyed.is_empty() {
        return;
    }
    // SAFETY: cf is valid while the http block is merged.
    let cmcf = NgxHttpCoreModule::main_conf(unsafe { &*cf }).expect("http core main conf");
    // SAFETY: cmcf->variables is an array of ngx_http_variable_t: the indexed ones.
    let variables: &[ngx_http_variable_t] = unsafe { cmcf.variables.as_slice() };
    let wanted: Vec<(usize, String)> = variables
        .iter()
        .enumerate()
        .filter(|(_, v)| TARGET_VARIABLES.contains(&v.name.as_bytes()))
        .map(|(i, v)| (i, String::from_utf8_lossy(v.name.as_bytes()).into_owned()))
        .collect();
    if wanted.is_empty() {
        return;
    }
    // SAFETY: during the merge, cf->ctx holds this location's configurations.
    let Some(codes) = (unsafe { rewrite_codes(cf) }) else { return };
    let Some(variable) = read_in_codes(codes, &wanted) else { return };
    // SAFETY: as above.
    let clcf = NgxHttpCoreModule::location_conf(unsafe { &*cf }).expect("http core location conf");
    let name = String::from_utf8_lossy(clcf.name.as_bytes()).into_owned();
    let place = if name.is_empty() { "a server block's own level".to_owned() } else { format!("location \"{name}\"") };
    // Merged after the whole http block was read: cf's line is not the location's.
    // SAFETY: cf->log is live while the configuration is read.
    let log = unsafe { (*cf).log };
    ngx::ngx_log_error!(
        NGX_LOG_WARN,
        log,
        "migration: {} reads ${} with set, if, return or rewrite, before the access phase: a request decided there \
         is decided before auth_request_set can set the user id of {}; before access, read only $migration_service, \
         $migration_config_version or $migration_old_*",
        place,
        variable,
        keyed.join(", ")
    );
}

/// The rewrite module's compiled codes of the location being merged, as words.
///
/// # Safety
/// `cf` is the configuration being merged (cf->ctx holds the location's).
unsafe fn rewrite_codes<'a>(cf: *mut ngx_conf_t) -> Option<&'a [usize]> {
    static MODULE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let conf = loc_conf_of(cf, &MODULE, c"ngx_http_rewrite_module") as *const *const ngx::ffi::ngx_array_t;
    // SAFETY: null, or the rewrite module's location configuration, which begins
    // with `ngx_array_t *codes` (a byte array of word-aligned code structs) in
    // every nginx we build for.
    unsafe {
        let codes = conf.as_ref()?.as_ref()?;
        let bytes = codes.nelts * codes.size;
        (!codes.elts.is_null())
            .then(|| core::slice::from_raw_parts(codes.elts as *const usize, bytes / size_of::<usize>()))
    }
}

/// The first wanted variable (index, name) a variable-reading code of `words`
/// reads, following a `return`'s text into its own codes.
fn read_in_codes(words: &[usize], wanted: &[(usize, String)]) -> Option<String> {
    // The addresses nginx stores in its code structs (the dynamic linker gives
    // this module nginx's own).
    let var_codes = [
        ngx::ffi::ngx_http_script_var_code as *const () as usize,
        ngx::ffi::ngx_http_script_copy_var_code as *const () as usize,
    ];
    let return_code = ngx::ffi::ngx_http_script_return_code as *const () as usize;
    let hit = |index: usize| wanted.iter().find(|(i, _)| *i == index).map(|(_, name)| name.clone());
    for (i, &word) in words.iter().enumerate() {
        if var_codes.contains(&word) {
            if let Some(name) = words.get(i + 1).and_then(|&index| hit(index)) {
                return Some(name);
            }
        } else if word == return_code
            && words.len() - i >= size_of::<ngx::ffi::ngx_http_script_return_code_t>() / size_of::<usize>()
        {
            let at = words[i..].as_ptr() as *const ngx::ffi::ngx_http_script_return_code_t;
            // SAFETY: a return code struct starts at `at` (its code address), whole
            // within the array.
            let mut code = unsafe { (*at).text.values } as *const usize;
            // The text's codes: null, or a run ended by a null code address. A
            // variable code's index (which may be 0) is read with its code, so it
            // never ends the run; a few thousand words at most.
            for _ in 0..4096 {
                // SAFETY: `code` is null or points into that run, at a code address.
                let Some(&word) = (unsafe { code.as_ref() }) else { break };
                if word == 0 {
                    break;
                }
                if var_codes.contains(&word) {
                    // SAFETY: the word after a variable code's address is its index.
                    if let Some(name) = hit(unsafe { *code.add(1) }) {
                        return Some(name);
                    }
                    // SAFETY: past the index, still within the run.
                    code = unsafe { code.add(2) };
                } else {
                    // SAFETY: the next word of the run.
                    code = unsafe { code.add(1) };
                }
            }
        }
    }
    None
}

/// Adds what this location can route to the main configuration's `reach`.
/// Variables decide in any location, `migration on` or not, so every location
/// counts: a service is unreachable only when nothing could ever route it.
pub fn record_reach(cf: *mut ngx_conf_t, conf: &LocConf) {
    // SAFETY: cf is valid while the http block is merged.
    let Some(main) = Module::main_conf_mut(unsafe { &*cf }) else { return };
    if conf.enabled == Some(true) && main.reach.location_without_resolver.is_none() {
        // SAFETY: during the merge, cf->ctx holds this location's configurations;
        // the core module (merged before this one) gave it a resolver, one with
        // no name server when no `resolver` applies.
        let clcf = NgxHttpCoreModule::location_conf(unsafe { &*cf }).expect("http core location conf");
        // SAFETY: clcf->resolver is null or a resolver of this cycle.
        let servers = unsafe { clcf.resolver.as_ref() }.map_or(0, |resolver| resolver.connections.nelts);
        // A server block's own level is left out: requests reach it only when no
        // location matches, and the resolver is often set in the locations.
        if servers == 0 && clcf.name.len > 0 {
            main.reach.location_without_resolver = Some(String::from_utf8_lossy(clcf.name.as_bytes()).into_owned());
        }
    }
    match &conf.service {
        ServiceSetting::Named(name) => {
            main.reach.named.insert(name.clone());
        }
        ServiceSetting::AutoAnyServer => main.reach.any_server = true,
        ServiceSetting::Auto | ServiceSetting::Unset => {
            // SAFETY: cf->ctx holds the server block being merged.
            let Some(server) = Module::server_conf_mut(unsafe { &*cf }) else { return };
            if !server.reach_recorded {
                server.reach_recorded = true;
                main.reach.server_names.extend(server.names.iter().map(ServerName::pattern));
            }
        }
    }
}

/// The address of realip's `set_real_ip_from` list in the configuration being
/// merged, or 0 (no realip module, or none configured). realip's location
/// configuration begins with that `ngx_array_t *from` in every nginx we build
/// for; the module is looked up by name, as it may not be compiled in.
pub fn realip_from(cf: *mut ngx_conf_t) -> usize {
    static MODULE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let conf = loc_conf_of(cf, &MODULE, c"ngx_http_realip_module") as *const *const c_void;
    // SAFETY: null, or realip's location configuration, which begins with `from`.
    unsafe { conf.as_ref() }.map_or(0, |from| *from as usize)
}

/// The location configuration, in the configuration being merged, of the nginx
/// module named `name` (looked up by name once, into `module`: it may not be
/// compiled in); null without that module.
fn loc_conf_of(cf: *mut ngx_conf_t, module: &'static std::sync::OnceLock<usize>, name: &CStr) -> *const c_void {
    let module =
        // SAFETY: dlsym with RTLD_DEFAULT only looks a symbol up in the process.
        *module.get_or_init(|| unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize);
    if module == 0 {
        return ptr::null();
    }
    // SAFETY: `module` is that module's table; during the merge, cf->ctx is the
    // http configuration context whose loc_conf array holds the module's (merged)
    // location configuration at its ctx_index.
    unsafe {
        let index = (*(module as *const ngx_module_t)).ctx_index;
        let ctx = (*cf).ctx as *const ngx_http_conf_ctx_t;
        *(*ctx).loc_conf.add(index) as *const c_void
    }
}

/// Whether some script (set, if, return, proxy_pass, log_format...) reads a
/// `$migration_*` variable: nginx indexes every variable a script uses.
pub fn migration_variables_used(cf: *mut ngx_conf_t) -> bool {
    // SAFETY: cf is valid while the http block is merged.
    let cmcf = NgxHttpCoreModule::main_conf(unsafe { &*cf }).expect("http core main conf");
    // SAFETY: cmcf->variables is an array of ngx_http_variable_t.
    let variables: &[ngx_http_variable_t] = unsafe { cmcf.variables.as_slice() };
    variables.iter().any(|v| v.name.as_bytes().starts_with(b"migration_"))
}
