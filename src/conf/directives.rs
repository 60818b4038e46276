//! The location-level directives: `migration` and `migration_service`.

use core::ffi::{c_char, c_void};

use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{ngx_command_t, ngx_conf_t, NGX_LOG_EMERG};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_conf_log_error;

use crate::conf::params::arguments;
use crate::conf::{unknown_service, LocConf, Module, PinnedService, ServiceSetting};

pub extern "C" fn set_migration(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::guard::conf(cf, "migration", || set_migration_body(cf, cmd, conf))
}

fn set_migration_body(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
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

pub extern "C" fn set_migration_service(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    crate::guard::conf(cf, "migration_service", || set_migration_service_body(cf, cmd, conf))
}

fn set_migration_service_body(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes this module's location configuration and a valid cf.
    let (loc, args) = unsafe { (&mut *(conf as *mut LocConf), arguments(cf)) };
    if loc.service != ServiceSetting::Unset {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    let value = String::from_utf8_lossy(args[0].as_bytes()).into_owned();
    match (value.as_str(), args.get(1).map(|a| a.as_bytes())) {
        ("auto", None) => {
            loc.service = ServiceSetting::Auto;
            return NGX_CONF_OK;
        }
        ("auto", Some(b"any_server")) => {
            loc.service = ServiceSetting::AutoAnyServer;
            return NGX_CONF_OK;
        }
        (_, Some(_)) => {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "invalid parameter \"{}\": only \"auto\" takes one, \"any_server\"",
                args[1]
            );
            return NGX_CONF_ERROR;
        }
        _ => {}
    }
    // SAFETY: cf is valid inside an http-level directive handler.
    let main = Module::main_conf_mut(unsafe { &*cf }).expect("http main conf");
    if main.signalling {
        loc.service = ServiceSetting::Named(value);
        return NGX_CONF_OK;
    }
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
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", unknown_service(&value, &main.source, None));
            return NGX_CONF_ERROR;
        }
        Some(_) => {}
    }
    // SAFETY: cf->conf_file is the file being parsed, valid during the handler.
    let at = unsafe {
        let file = &*(*cf).conf_file;
        format!("{}:{}", String::from_utf8_lossy(file.file.name.as_bytes()), file.line)
    };
    if !main.pinned.iter().any(|p| p.name == value) {
        main.pinned.push(PinnedService { name: value.clone(), at });
    }
    loc.service = ServiceSetting::Named(value);
    NGX_CONF_OK
}
