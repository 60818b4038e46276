//! The directives of SPEC "Directives": `migration_config`, `migration`,
//! `migration_service`, `migration_status`; the main and location configurations
//! they fill.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use migration_engine::CompiledConfig;
use ngx::core::{Pool, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_full_name, ngx_conf_t, ngx_pagesize, ngx_parse_size, ngx_parse_time, ngx_shared_memory_add,
    ngx_str_t, ngx_uint_t, NGX_CONF_FLAG, NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_TAKE123, NGX_HTTP_LOC_CONF,
    NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_SRV_CONF, NGX_LOG_EMERG,
    NGX_LOG_NOTICE, NGX_LOG_WARN,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::{ngx_conf_log_error, ngx_string};

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
    /// Set by the zone's `init` (reload: prepare) and `init_module` (commit).
    pub publication: Option<crate::publish::Publication>,
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
    Auto,
    Named(String),
}

#[derive(Default)]
pub struct LocConf {
    /// `migration on|off`; None when not set at this level.
    pub enabled: Option<bool>,
    pub service: ServiceSetting,
    /// `migration_status` is in this location (not inherited).
    pub status: bool,
}

// SAFETY: LocConf is the type create_loc_conf allocates for this module.
unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = LocConf;
}

pub static mut COMMANDS: [ngx_command_t; 5] = [
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
    ngx_command_t {
        name: ngx_string!("migration_status"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS) as ngx_uint_t,
        set: Some(set_migration_status),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t::empty(),
];

/// `zone=` when not given (SPEC "Directives").
const DEFAULT_ZONE: (ngx_str_t, usize) = (ngx_string!("migration"), 1024 * 1024);

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
    let mut zone: Option<(ngx_str_t, usize)> = None;
    for param in &args[1..] {
        let bytes = param.as_bytes();
        let parsed = match (bytes.strip_prefix(b"zone="), bytes.strip_prefix(b"watch=")) {
            (Some(value), _) if zone.is_none() => parse_zone(value).map(|z| zone = Some(z)),
            (_, Some(value)) if main.watch_ms.is_none() => parse_interval(value).map(|ms| main.watch_ms = Some(ms)),
            _ => Err("expected zone=NAME:SIZE or watch=INTERVAL, each at most once".to_string()),
        };
        if let Err(why) = parsed {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "invalid parameter \"{}\": {}", param, why);
            return NGX_CONF_ERROR;
        }
    }
    let mut path = args[0];
    // SAFETY: cf->cycle is the cycle being configured; ngx_conf_full_name replaces
    // `path` with a pool-allocated absolute path (relative to the nginx prefix).
    if unsafe { ngx_conf_full_name((*cf).cycle, &mut path, 0) } != 0 {
        return NGX_CONF_ERROR;
    }
    let file = Path::new(OsStr::from_bytes(path.as_bytes()));
    let source = file.display().to_string();
    let loaded = migration_engine::read_source(file)
        .and_then(|text| Ok((migration_engine::load_str_checked(&source, &text)?, text)));
    let ((config, warnings), text) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", e);
            return NGX_CONF_ERROR;
        }
    };
    for warning in &warnings {
        ngx_conf_log_error!(NGX_LOG_WARN, cf, "migration: {}: {}", source, warning);
    }
    let (mut zone_name, zone_size) = zone.unwrap_or(DEFAULT_ZONE);
    let names = crate::publish::service_names(&config);
    let needed = crate::zone::required_zone_size(source.len(), text.len(), &names);
    if needed > zone_size {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "zone \"{}\" is too small for {} ({} services, {} bytes of YAML): it needs at least {}, e.g. zone={}:{}",
            zone_name,
            source,
            names.len(),
            text.len(),
            crate::zone::human_size(needed),
            zone_name,
            crate::zone::human_size(needed)
        );
        return NGX_CONF_ERROR;
    }
    // SAFETY: cf is valid; the tag is this module's static, the same in every cycle
    // (the shared object stays loaded over a reload), so nginx keeps the zone.
    let shm_zone = unsafe {
        ngx_shared_memory_add(
            cf,
            &mut zone_name,
            zone_size,
            ptr::addr_of_mut!(crate::ngx_http_migration_module) as *mut c_void,
        )
    };
    if shm_zone.is_null() {
        return NGX_CONF_ERROR;
    }
    // SAFETY: ngx_shared_memory_add returned a zone entry of this cycle.
    let shm_zone = unsafe { &mut *shm_zone };
    if !shm_zone.data.is_null() {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "zone \"{}\" is already used by another migration_config", zone_name);
        return NGX_CONF_ERROR;
    }
    shm_zone.init = Some(crate::publish::init_zone);
    shm_zone.data = main as *mut MainConf as *mut c_void;
    ngx_conf_log_error!(
        NGX_LOG_NOTICE,
        cf,
        "migration: loaded {} (version {}, {} services)",
        source,
        config.version,
        config.services.len()
    );
    main.content_hash = migration_engine::content_hash(text.as_bytes());
    main.config = Some(Arc::new(config));
    main.source = source;
    main.text = text;
    NGX_CONF_OK
}

/// `NAME:SIZE`, SIZE as nginx reads sizes (`64k`, `1m`), at least 8 pages as
/// nginx's own zones require.
fn parse_zone(value: &[u8]) -> Result<(ngx_str_t, usize), String> {
    let text = String::from_utf8_lossy(value);
    let colon = value.iter().rposition(|&b| b == b':').ok_or("the zone needs a size, as in zone=migration:1m")?;
    if colon == 0 {
        return Err("the zone needs a name, as in zone=migration:1m".into());
    }
    let mut size = ngx_str_t { len: value.len() - colon - 1, data: value[colon + 1..].as_ptr() as *mut u8 };
    // SAFETY: ngx_parse_size only reads `size`.
    let bytes = unsafe { ngx_parse_size(&mut size) };
    // SAFETY: ngx_pagesize is set by ngx_os_init before the configuration is read.
    let minimum = 8 * unsafe { ngx_pagesize } as isize;
    if bytes < 0 {
        return Err(format!("invalid zone size in \"{text}\""));
    }
    if bytes < minimum {
        return Err(format!("zone size must be at least {}k", minimum / 1024));
    }
    Ok((ngx_str_t { len: colon, data: value.as_ptr() as *mut u8 }, bytes as usize))
}

/// An nginx time (`500ms`, `2s`, `1m`), at least 100ms.
fn parse_interval(value: &[u8]) -> Result<u64, String> {
    let mut text = ngx_str_t { len: value.len(), data: value.as_ptr() as *mut u8 };
    // SAFETY: ngx_parse_time only reads `text`; 0 asks for milliseconds.
    let ms = unsafe { ngx_parse_time(&mut text, 0) };
    if ms < 0 {
        return Err("invalid interval; write it as nginx times are written, e.g. watch=2s or watch=500ms".into());
    }
    if ms < 100 {
        return Err("the watch interval must be at least 100ms".into());
    }
    Ok(ms as u64)
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
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "migration_service \"{}\" needs migration_config earlier in the http block",
                value
            );
            return NGX_CONF_ERROR;
        }
        Some(config) if config.service_index(&value).is_none() => {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "migration_service: no service named \"{}\" in {}",
                value,
                main.source
            );
            return NGX_CONF_ERROR;
        }
        Some(_) => {}
    }
    loc.service = ServiceSetting::Named(value.into_owned());
    NGX_CONF_OK
}

extern "C" fn set_migration_status(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes this module's location configuration and a valid cf.
    let loc = unsafe { &mut *(conf as *mut LocConf) };
    if loc.status {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    loc.status = true;
    // SAFETY: cf is valid inside a location block.
    let clcf = NgxHttpCoreModule::location_conf_mut(unsafe { &*cf }).expect("http core location conf");
    clcf.handler = Some(crate::status::status_handler);
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
    for (needed, directive) in [(conf.enabled == Some(true), "\"migration on\""), (conf.status, "migration_status")] {
        // SAFETY: cf is valid while merging the http block.
        if needed && Module::main_conf(unsafe { &*cf }).expect("http main conf").config.is_none() {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{} needs migration_config in the http block", directive);
            return NGX_CONF_ERROR;
        }
    }
    NGX_CONF_OK
}
