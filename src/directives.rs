//! The directives of SPEC "Directives": `migration_config`, `migration`,
//! `migration_service`; the main and location configurations they fill.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use migration_engine::CompiledConfig;
use ngx::core::{Pool, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_full_name, ngx_conf_t, ngx_str_t, ngx_uint_t, NGX_CONF_FLAG, NGX_CONF_TAKE1,
    NGX_CONF_TAKE123, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET,
    NGX_HTTP_SRV_CONF, NGX_LOG_EMERG, NGX_LOG_NOTICE,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};
use ngx::{ngx_conf_log_error, ngx_string};

pub struct Module;

/// http-level state: the loaded configuration.
#[derive(Default)]
pub struct MainConf {
    /// The compiled configuration, shared with the requests that use it.
    pub config: Option<Arc<CompiledConfig>>,
    /// The file, after resolving a relative path against the nginx prefix.
    pub source: String,
}

unsafe impl HttpModuleMainConf for Module {
    type MainConf = MainConf;
}

/// `migration_service`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ServiceSetting {
    #[default]
    Unset,
    Auto,
    Named(String),
}

#[derive(Default)]
pub struct LocConf {
    /// `migration on|off`; None when not set at this level.
    pub enabled: Option<bool>,
    pub service: ServiceSetting,
}

unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = LocConf;
}

pub static mut COMMANDS: [ngx_command_t; 4] = [
    ngx_command_t {
        name: ngx_string!("migration_config"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE123) as ngx_uint_t,
        set: Some(set_migration_config),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("migration"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_FLAG) as ngx_uint_t,
        set: Some(set_migration),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("migration_service"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(set_migration_service),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t::empty(),
];

/// The directive's arguments after its name.
///
/// # Safety
/// `cf` must be the configuration being parsed, inside a directive handler.
unsafe fn arguments<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: inside a directive handler, cf->args holds the directive name and its
    // arguments as ngx_str_t, allocated from the configuration pool.
    let args: &[ngx_str_t] = unsafe { (*(*cf).args).as_slice() };
    &args[1..]
}

extern "C" fn set_migration_config(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes the http main configuration this module created, and a
    // cf that is valid for the duration of the call.
    let (main, args) = unsafe { (&mut *(conf as *mut MainConf), arguments(cf)) };
    if main.config.is_some() {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    for extra in &args[1..] {
        let text = String::from_utf8_lossy(extra.as_bytes());
        let name = text.split('=').next().unwrap_or_default();
        let message = match name {
            "zone" | "watch" => format!("\"{text}\": the {name}= parameter is not supported by this build of the module yet"),
            _ => format!("invalid parameter \"{text}\"; expected zone=NAME:SIZE or watch=INTERVAL"),
        };
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", message);
        return NGX_CONF_ERROR;
    }
    let mut path = args[0];
    // SAFETY: cf->cycle is the cycle being configured; ngx_conf_full_name replaces
    // `path` with a pool-allocated absolute path (relative to the nginx prefix).
    if unsafe { ngx_conf_full_name((*cf).cycle, &mut path, 0) } != 0 {
        return NGX_CONF_ERROR;
    }
    let file = Path::new(OsStr::from_bytes(path.as_bytes()));
    let source = file.display().to_string();
    match migration_engine::load_file(file) {
        Ok(config) => {
            ngx_conf_log_error!(
                NGX_LOG_NOTICE,
                cf,
                "migration: loaded {} (version {}, {} services)",
                source,
                config.version,
                config.services.len()
            );
            main.config = Some(Arc::new(config));
            main.source = source;
            NGX_CONF_OK
        }
        Err(e) => {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", e);
            NGX_CONF_ERROR
        }
    }
}

extern "C" fn set_migration(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes this module's location configuration and a valid cf.
    let (loc, args) = unsafe { (&mut *(conf as *mut LocConf), arguments(cf)) };
    if loc.enabled.is_some() {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    let value = args[0].as_bytes();
    loc.enabled = if value.eq_ignore_ascii_case(b"on") {
        Some(true)
    } else if value.eq_ignore_ascii_case(b"off") {
        Some(false)
    } else {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "invalid value \"{}\", it must be \"on\" or \"off\"", args[0]);
        return NGX_CONF_ERROR;
    };
    NGX_CONF_OK
}

extern "C" fn set_migration_service(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes this module's location configuration and a valid cf.
    let (loc, args) = unsafe { (&mut *(conf as *mut LocConf), arguments(cf)) };
    if loc.service != ServiceSetting::Unset {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    let value = String::from_utf8_lossy(args[0].as_bytes());
    if value == "auto" {
        loc.service = ServiceSetting::Auto;
        return NGX_CONF_OK;
    }
    // SAFETY: cf is valid inside an http-level directive handler.
    let main = Module::main_conf(unsafe { &*cf }).expect("http main conf");
    match &main.config {
        None => {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "migration_service \"{}\" needs migration_config earlier in the http block", value);
            return NGX_CONF_ERROR;
        }
        Some(config) if config.service_index(&value).is_none() => {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "migration_service: no service named \"{}\" in {}", value, main.source);
            return NGX_CONF_ERROR;
        }
        Some(_) => {}
    }
    loc.service = ServiceSetting::Named(value.into_owned());
    NGX_CONF_OK
}

pub unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: cf->pool is the configuration pool; `allocate` registers a cleanup that
    // drops the value (and its Arc) when the cycle's pool is destroyed.
    let pool = unsafe { Pool::from_ngx_pool((*cf).pool) };
    pool.allocate(MainConf::default()) as *mut c_void
}

pub unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: as in create_main_conf.
    let pool = unsafe { Pool::from_ngx_pool((*cf).pool) };
    pool.allocate(LocConf::default()) as *mut c_void
}

pub unsafe extern "C" fn merge_loc_conf(cf: *mut ngx_conf_t, prev: *mut c_void, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes two location configurations created by create_loc_conf.
    let (prev, conf) = unsafe { (&*(prev as *const LocConf), &mut *(conf as *mut LocConf)) };
    if conf.enabled.is_none() {
        conf.enabled = prev.enabled;
    }
    if conf.service == ServiceSetting::Unset {
        conf.service = prev.service.clone();
    }
    if conf.enabled == Some(true) {
        // SAFETY: cf is valid while merging the http block.
        let main = Module::main_conf(unsafe { &*cf }).expect("http main conf");
        if main.config.is_none() {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "\"migration on\" needs migration_config in the http block");
            return NGX_CONF_ERROR;
        }
    }
    NGX_CONF_OK
}
