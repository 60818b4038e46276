//! The module's configurations (main, server, location) and their create and
//! merge handlers; the `migration` and `migration_service` directives are in
//! `directives.rs` (docs/module.md). `migration_config` is read by
//! `state::load`, which admits the file; `migration_status` lives with its
//! handler in `http::status`.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::sync::Arc;

use migration_engine::CompiledConfig;
use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{ngx_conf_t, ngx_http_server_name_t, ngx_pool_cleanup_add, ngx_pool_t, NGX_LOG_EMERG, NGX_LOG_WARN};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, HttpModuleServerConf, NgxHttpCoreModule};
use ngx::ngx_conf_log_error;

use warnings::{
    migration_variables_used, realip_from, record_reach, warn_if_auto_without_names, warn_if_target_read_before_access,
};

pub mod directives;
pub mod params;
pub mod server_name;
pub mod signal;
pub mod variable_names;
pub mod warnings;

pub use server_name::ServerName;

pub struct Module;

/// http-level state: the configuration this cycle loaded, and its zone.
#[derive(Default)]
pub struct MainConf {
    /// Compiled when the directive is read; the first thing the workers route by.
    pub config: Option<Arc<CompiledConfig>>,
    /// The file, after resolving a relative path against the nginx prefix.
    pub source: String,
    /// The file's text as validated, published into the zone.
    pub text: String,
    pub content_hash: u64,
    /// `watch=`, in milliseconds.
    pub watch_ms: Option<u64>,
    /// `max_size=`: the largest file read, in bytes.
    pub max_size: u64,
    /// This cycle's hold on the zone (`state::cycle::CycleZone`), set by the
    /// zone's `init` (reload: prepare) and `init_module` (commit).
    pub cycle_zone: Option<Box<dyn core::any::Any>>,
    /// This process only signals the master (`nginx -s quit|stop|reopen`): the YAML
    /// is not read, so a bad file never stands between an operator and nginx.
    pub signalling: bool,
    /// `migration_service NAME` of every location, with where nginx.conf says it:
    /// a `watch=` change must still have these services, as `nginx -t` requires.
    pub pinned: Vec<PinnedService>,
    /// The variables nginx.conf defines (postconfiguration): a `user_key:
    /// var:NAME` must name one, at `nginx -t` and in every `watch=` change.
    pub variables: Option<Arc<migration_engine::variables::VariableNames>>,
    /// `last_good=PATH`: where the module keeps a copy of the last configuration
    /// it published, to start and reload with when the file is refused.
    pub last_good: Option<String>,
    /// The file was refused at start or reload and this cycle runs on the
    /// `last_good` copy: the refusal, for the status's `file` state.
    pub refused: Option<String>,
    /// What the locations can route (collected as they are merged): a service
    /// none can reach is warned about at `nginx -t` and at each publication.
    pub reach: migration_engine::reach::Reach,
    /// The same, once complete (postconfiguration), for `watch=` checks.
    pub reach_done: Option<Arc<migration_engine::reach::Reach>>,
}

/// A `migration_service NAME` directive.
#[derive(Clone)]
pub struct PinnedService {
    pub name: String,
    /// `nginx.conf:12`
    pub at: String,
}

/// The message of a service that nginx.conf names (`pinned`) and `config` lacks,
/// the same for `nginx -t` and for a `watch=` change.
pub fn check_pinned_services(pinned: &[PinnedService], source: &str, config: &CompiledConfig) -> Result<(), String> {
    match pinned.iter().find(|p| config.service_index(&p.name).is_none()) {
        None => Ok(()),
        Some(p) => Err(unknown_service(&p.name, source, Some(&p.at))),
    }
}

/// `migration_service: no service named "api" in /etc/nginx/m.yaml`, and for a
/// `watch=` change, where nginx.conf names it.
fn unknown_service(name: &str, source: &str, at: Option<&str>) -> String {
    let at = at.map_or(String::new(), |at| format!(" (migration_service in {at})"));
    format!("migration_service: no service named \"{name}\" in {source}{at}")
}

// SAFETY: MainConf is the type create_main_conf allocates for this module.
unsafe impl HttpModuleMainConf for Module {
    type MainConf = MainConf;
}

/// `migration_service`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ServiceSetting {
    #[default]
    Unset,
    /// By Host, among the hosts this server block names in `server_name`.
    Auto,
    /// `auto any_server`: by Host, whatever server block the request reached (a
    /// catch-all router).
    AutoAnyServer,
    Named(String),
}

/// Server-level state: the server block's names, copied while the
/// configuration is read (nginx keeps `server_name`s in a temporary pool), for
/// `migration_service auto`.
#[derive(Default)]
pub struct SrvConf {
    pub names: Vec<ServerName>,
    /// `nginx -t` said once that this block names no host.
    warned_nameless: bool,
    /// Where the block begins (`file:line`), for warnings given when it is
    /// merged, after the whole http block was read.
    at: String,
    /// Its names were added to the main configuration's `reach`.
    reach_recorded: bool,
    /// The service its last request's Host found (`migration_service auto`).
    pub last_verdict: crate::http::host_verdict::LastVerdict,
}

// SAFETY: SrvConf is the type create_srv_conf allocates for this module.
unsafe impl HttpModuleServerConf for Module {
    type ServerConf = SrvConf;
}

#[derive(Default)]
pub struct LocConf {
    /// `migration on|off`; None when not set at this level.
    pub enabled: Option<bool>,
    pub service: ServiceSetting,
    /// `migration_status` is in this location (not inherited).
    pub status: bool,
    /// realip's `set_real_ip_from` list at this level (its address, or 0), to tell
    /// a location that configures realip itself from one that inherits it.
    realip_from: usize,
}

// SAFETY: LocConf is the type create_loc_conf allocates for this module.
unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = LocConf;
}

/// Moves `value` into the configuration pool, to be dropped when the pool is
/// destroyed (at the end of its cycle). Null when the pool is out of memory
/// (ngx's `Pool::allocate` would write through the null pointer).
///
/// # Safety
/// `pool` is a live nginx pool.
unsafe fn allocate_in_pool<T>(pool: *mut ngx_pool_t, value: T) -> *mut c_void {
    unsafe extern "C" fn drop_value<T>(data: *mut c_void) {
        // SAFETY: the cleanup's data is the T written below, dropped once.
        unsafe { ptr::drop_in_place(data as *mut T) };
    }
    // SAFETY: the cleanup's data area is allocated from the pool, sized and (by
    // nginx's pool alignment) aligned for T; it is initialised right below.
    unsafe {
        let cln = ngx_pool_cleanup_add(pool, core::mem::size_of::<T>());
        if cln.is_null() || (*cln).data.is_null() {
            return ptr::null_mut();
        }
        let data = (*cln).data as *mut T;
        ptr::write(data, value);
        (*cln).handler = Some(drop_value::<T>);
        data as *mut c_void
    }
}

pub unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    crate::guard::install_hook();
    // SAFETY: nginx calls it with a valid cf.
    crate::guard::create(cf, "create_main_conf", || unsafe { create_main_conf_body(cf) })
}

unsafe fn create_main_conf_body(cf: *mut ngx_conf_t) -> *mut c_void {
    crate::test_hooks::load();
    // SAFETY: cf->pool is the configuration pool.
    unsafe { allocate_in_pool((*cf).pool, MainConf::default()) }
}

pub unsafe extern "C" fn create_srv_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: nginx calls it with a valid cf.
    crate::guard::create(cf, "create_srv_conf", || unsafe { create_srv_conf_body(cf) })
}

unsafe fn create_srv_conf_body(cf: *mut ngx_conf_t) -> *mut c_void {
    // nginx creates a server block's configurations as it reads `server {`: the
    // file and line being parsed are the block's.
    // SAFETY: cf->conf_file is the file being parsed (null before any is opened).
    let at = unsafe {
        (*cf).conf_file.as_ref().map_or(String::new(), |file| {
            format!("{}:{}", String::from_utf8_lossy(file.file.name.as_bytes()), file.line)
        })
    };
    // SAFETY: as in create_main_conf.
    unsafe { allocate_in_pool((*cf).pool, SrvConf { at, ..SrvConf::default() }) }
}

/// Copies the server block's names (after the core module's merge gave a block
/// without `server_name` its empty name).
pub unsafe extern "C" fn merge_srv_conf(cf: *mut ngx_conf_t, prev: *mut c_void, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx calls it with a valid cf and two server configurations of ours.
    crate::guard::conf(cf, "merge_srv_conf", || unsafe { merge_srv_conf_body(cf, prev, conf) })
}

unsafe fn merge_srv_conf_body(cf: *mut ngx_conf_t, _prev: *mut c_void, conf: *mut c_void) -> *mut c_char {
    let (conf, core) =
        // SAFETY: nginx passes the server configuration create_srv_conf made; cf->ctx
        // holds this server block's configurations while it is merged.
        unsafe { (&mut *(conf as *mut SrvConf), NgxHttpCoreModule::server_conf(&*cf).expect("http core server conf")) };
    // SAFETY: server_names is an array of ngx_http_server_name_t, valid while the
    // configuration is read.
    let names: &[ngx_http_server_name_t] = unsafe { core.server_names.as_slice() };
    conf.names = names.iter().map(ServerName::new).collect();
    conf.last_verdict = crate::http::host_verdict::LastVerdict::for_names(&conf.names);
    NGX_CONF_OK
}

pub unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: nginx calls it with a valid cf.
    crate::guard::create(cf, "create_loc_conf", || unsafe { create_loc_conf_body(cf) })
}

unsafe fn create_loc_conf_body(cf: *mut ngx_conf_t) -> *mut c_void {
    if crate::test_hooks::fail_loc_conf_alloc() {
        return ptr::null_mut();
    }
    // SAFETY: as in create_main_conf.
    unsafe { allocate_in_pool((*cf).pool, LocConf::default()) }
}

pub unsafe extern "C" fn merge_loc_conf(cf: *mut ngx_conf_t, prev: *mut c_void, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx calls it with a valid cf and two location configurations of ours.
    crate::guard::conf(cf, "merge_loc_conf", || unsafe { merge_loc_conf_body(cf, prev, conf) })
}

unsafe fn merge_loc_conf_body(cf: *mut ngx_conf_t, prev: *mut c_void, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes two location configurations created by create_loc_conf.
    let (prev, conf) = unsafe { (&*(prev as *const LocConf), &mut *(conf as *mut LocConf)) };
    if conf.enabled.is_none() {
        conf.enabled = prev.enabled;
    }
    if conf.service == ServiceSetting::Unset {
        conf.service = prev.service.clone();
    }
    warn_if_auto_without_names(cf, conf);
    record_reach(cf, conf);
    warn_if_target_read_before_access(cf);
    conf.realip_from = realip_from(cf);
    if conf.realip_from != 0 && conf.realip_from != prev.realip_from && migration_variables_used(cf) {
        // SAFETY: during the merge, cf->ctx holds this location's configurations.
        let clcf = NgxHttpCoreModule::location_conf(unsafe { &*cf }).expect("http core location conf");
        // Server blocks (and `if` blocks) have no name: realip there runs at
        // post-read, before anything can read our variables.
        if clcf.name.len > 0 {
            ngx_conf_log_error!(
                NGX_LOG_WARN,
                cf,
                "migration: realip is configured in location \"{}\", where it runs in the preaccess phase: a \
                 $migration_* variable read before that (by set, if, return or rewrite) decides by the proxy's \
                 address, not the client's; put set_real_ip_from and real_ip_header at the server or http level",
                clcf.name
            );
        }
    }
    for (needed, directive) in [(conf.enabled == Some(true), "\"migration on\""), (conf.status, "migration_status")] {
        // SAFETY: cf is valid while merging the http block.
        let main = Module::main_conf(unsafe { &*cf }).expect("http main conf");
        if needed && main.config.is_none() && !main.signalling {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{} needs migration_config in the http block", directive);
            return NGX_CONF_ERROR;
        }
    }
    NGX_CONF_OK
}
