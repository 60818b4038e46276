//! `migration_config`: the file is read and admitted while nginx.conf is read
//! (`nginx -t`, start, every reload), so that a bad file fails them with its
//! located error, and the shared zone it is published into is added to the cycle.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_full_name, ngx_conf_t, ngx_shared_memory_add, ngx_str_t, NGX_LOG_EMERG, NGX_LOG_NOTICE,
    NGX_LOG_WARN,
};
use ngx::ngx_conf_log_error;

use crate::conf::params::{arguments, parse_interval, parse_max_size, parse_zone, SplitOnceAt, DEFAULT_ZONE};
use crate::conf::signal::signal_needs_no_configuration;
use crate::conf::MainConf;
use crate::state::admission::{Admission, Admitted, Refusal};
use crate::state::live::service_names;
use crate::state::zone::{human_size, required_zone_size};

pub extern "C" fn set_migration_config(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::guard::conf(cf, "migration_config", || set_migration_config_body(cf, cmd, conf))
}

fn set_migration_config_body(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes the http main configuration this module created, and a
    // cf that is valid for the duration of the call.
    let (main, args) = unsafe { (&mut *(conf as *mut MainConf), arguments(cf)) };
    if main.config.is_some() || main.signalling {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    let mut zone: Option<(ngx_str_t, usize)> = None;
    let mut max_size: Option<u64> = None;
    let mut last_good: Option<ngx_str_t> = None;
    for param in &args[1..] {
        let bytes = param.as_bytes();
        let parsed = match (bytes.split_once_at(b'='), bytes) {
            (Some((b"zone", value)), _) if zone.is_none() => parse_zone(value).map(|z| zone = Some(z)),
            (Some((b"watch", value)), _) if main.watch_ms.is_none() => {
                parse_interval(value).map(|ms| main.watch_ms = Some(ms))
            }
            (Some((b"max_size", value)), _) if max_size.is_none() => parse_max_size(value).map(|n| max_size = Some(n)),
            (Some((b"last_good", value)), _) if last_good.is_none() && !value.is_empty() => {
                last_good = Some(ngx_str_t { len: value.len(), data: value.as_ptr() as *mut u8 });
                Ok(())
            }
            _ => Err("expected zone=NAME:SIZE, watch=INTERVAL, max_size=SIZE or last_good=PATH, each at most once"
                .to_string()),
        };
        if let Err(why) = parsed {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "invalid parameter \"{}\": {}", param, why);
            return NGX_CONF_ERROR;
        }
    }
    if signal_needs_no_configuration() {
        main.signalling = true;
        return NGX_CONF_OK;
    }
    let mut path = args[0];
    // SAFETY: cf->cycle is the cycle being configured; ngx_conf_full_name replaces
    // `path` with a pool-allocated absolute path (relative to the nginx prefix).
    if unsafe { ngx_conf_full_name((*cf).cycle, &mut path, 0) } != 0 {
        return NGX_CONF_ERROR;
    }
    let file = Path::new(OsStr::from_bytes(path.as_bytes()));
    let source = file.display().to_string();
    main.max_size = max_size.unwrap_or(migration_engine::source::DEFAULT_MAX_SIZE);
    let (mut zone_name, zone_size) = zone.unwrap_or(DEFAULT_ZONE);
    // Reads and admits a file, as `watch=` does (`path` names it in messages).
    let admission = Admission { max_size: main.max_size, zone_size, pinned: &[], variables: None, reach: None };
    let load = |path: &str| -> Result<Admitted, String> {
        admission.admit(path).map_err(|refusal| match refusal {
            Refusal::Unreadable(e) => e.to_string(),
            Refusal::TooBig { bytes, at_least, .. } => format!(
                "zone \"{}\" is too small for {} ({} bytes of YAML): it needs more than {}, e.g. zone={}:{}",
                zone_name,
                path,
                bytes,
                human_size(at_least),
                zone_name,
                human_size(at_least * 5 / 4)
            ),
            Refusal::Invalid { message, .. } => message,
        })
    };
    let last_good = match last_good {
        None => None,
        Some(mut p) => {
            // SAFETY: as for the file's own path above.
            if unsafe { ngx_conf_full_name((*cf).cycle, &mut p, 0) } != 0 {
                return NGX_CONF_ERROR;
            }
            Some(Path::new(OsStr::from_bytes(p.as_bytes())).display().to_string())
        }
    };
    let admitted = match (load(&source), &last_good) {
        (Ok(loaded), _) => loaded,
        (Err(e), None) => {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", e);
            return NGX_CONF_ERROR;
        }
        // The file is refused: start (or reload) on the last configuration this
        // module published, and say so at `error`, instead of failing.
        (Err(e), Some(copy)) => match load(copy) {
            Ok(loaded) => {
                ngx_conf_log_error!(
                    ngx::ffi::NGX_LOG_ERR,
                    cf,
                    "migration: {}; nginx runs on the last good configuration {} (version {}) instead",
                    e,
                    copy,
                    loaded.config.version
                );
                main.refused = Some(e);
                loaded
            }
            Err(copy_error) => {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "{} (and the last good configuration cannot be used: {})",
                    e,
                    copy_error
                );
                return NGX_CONF_ERROR;
            }
        },
    };
    main.last_good = last_good;
    let Admitted { config, warnings, text, hash } = admitted;
    for warning in &warnings {
        ngx_conf_log_error!(NGX_LOG_WARN, cf, "migration: {}: {}", source, warning);
    }
    let names = service_names(&config);
    // The least the zone works with: one counter cell per service (its init gives
    // every worker a cell of its own where those fit).
    let needed = required_zone_size(source.len(), text.len(), &names, 1);
    if needed > zone_size {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "zone \"{}\" is too small for {} ({} services, {} bytes of YAML): it needs at least {}, e.g. zone={}:{}",
            zone_name,
            source,
            names.len(),
            text.len(),
            human_size(needed),
            zone_name,
            human_size(needed)
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
    // Warns (state::cycle_warnings) once the whole configuration is read, then publishes.
    shm_zone.init = Some(crate::state::cycle_warnings::init_zone);
    // SAFETY: cf is valid; its cycle is the one being configured.
    crate::state::cycle_warnings::note_cycle(unsafe { (*cf).cycle });
    shm_zone.data = main as *mut MainConf as *mut c_void;
    ngx_conf_log_error!(
        NGX_LOG_NOTICE,
        cf,
        "migration: loaded {} (version {}, {} services)",
        source,
        config.version,
        config.services.len()
    );
    main.content_hash = hash;
    main.config = Some(Arc::new(config));
    main.source = source;
    main.text = text;
    NGX_CONF_OK
}
