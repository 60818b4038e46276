//! The directives of SPEC "Directives": `migration_config`, `migration`,
//! `migration_service`, `migration_status`; the main and location configurations
//! they fill.

use core::ffi::{c_char, c_void, CStr};
use core::ptr;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use migration_engine::CompiledConfig;
use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_full_name, ngx_conf_t, ngx_http_conf_ctx_t, ngx_http_server_name_t, ngx_http_variable_t,
    ngx_module_t, ngx_pagesize, ngx_parse_size, ngx_parse_time, ngx_pool_cleanup_add, ngx_pool_t, ngx_process,
    ngx_regex_t, ngx_shared_memory_add, ngx_str_t, ngx_uint_t, NGX_CONF_FLAG, NGX_CONF_NOARGS, NGX_CONF_TAKE12,
    NGX_CONF_TAKE123, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET,
    NGX_HTTP_SRV_CONF, NGX_LOG_EMERG, NGX_LOG_NOTICE, NGX_LOG_WARN, NGX_PROCESS_SIGNALLER,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, HttpModuleServerConf, NgxHttpCoreModule};
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
    /// `max_size=`: the largest file read, in bytes.
    pub max_size: u64,
    /// Set by the zone's `init` (reload: prepare) and `init_module` (commit).
    pub publication: Option<crate::publish::Publication>,
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
}

// SAFETY: SrvConf is the type create_srv_conf allocates for this module.
unsafe impl HttpModuleServerConf for Module {
    type ServerConf = SrvConf;
}

/// One `server_name`, matched as nginx matches it.
pub enum ServerName {
    /// `api.example.com`, lowercase.
    Exact(Vec<u8>),
    /// `*.example.com`: any subdomain (`.example.com` kept), not the bare name.
    AnySubdomain(Vec<u8>),
    /// `.example.com`: the name (`example.com` kept) and every subdomain.
    NameAndSubdomains(Vec<u8>),
    /// `www.example.*` (`www.example.` kept).
    AnyTail(Vec<u8>),
    /// `~regex`: its compiled expression, alive as long as the cycle.
    Regex(*mut ngx_regex_t),
}

impl ServerName {
    /// The engine's view of it, for reachability.
    fn pattern(&self) -> migration_engine::reach::ServerNamePattern {
        use migration_engine::reach::ServerNamePattern as P;
        match self {
            ServerName::Exact(n) => P::Exact(n.clone()),
            ServerName::AnySubdomain(s) => P::AnySubdomain(s.clone()),
            ServerName::NameAndSubdomains(d) => P::NameAndSubdomains(d.clone()),
            ServerName::AnyTail(p) => P::AnyTail(p.clone()),
            ServerName::Regex(_) => P::Any,
        }
    }

    fn new(name: &ngx_http_server_name_t) -> ServerName {
        if !name.regex.is_null() {
            // SAFETY: a regex server name's ngx_http_regex_t lives in the cycle's pool.
            return ServerName::Regex(unsafe { (*name.regex).regex });
        }
        let text = crate::request::bytes(&name.name).to_ascii_lowercase();
        if let Some(suffix) = text.strip_prefix(b"*") {
            ServerName::AnySubdomain(suffix.to_vec())
        } else if let Some(domain) = text.strip_prefix(b".") {
            ServerName::NameAndSubdomains(domain.to_vec())
        } else if let Some(prefix) = text.strip_suffix(b"*") {
            ServerName::AnyTail(prefix.to_vec())
        } else {
            ServerName::Exact(text)
        }
    }

    /// Against a Host as nginx keeps it (lowercase, no port).
    pub fn matches(&self, host: &[u8]) -> bool {
        match self {
            ServerName::Exact(name) => host == name.as_slice(),
            ServerName::AnySubdomain(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            ServerName::NameAndSubdomains(domain) => {
                host == domain.as_slice()
                    || (host.len() > domain.len() + 1
                        && host.ends_with(domain)
                        && host[host.len() - domain.len() - 1] == b'.')
            }
            ServerName::AnyTail(prefix) => host.len() > prefix.len() && host.starts_with(prefix),
            ServerName::Regex(regex) => regex_matches(*regex, host),
        }
    }
}

#[cfg(ngx_feature = "pcre2")]
fn regex_matches(regex: *mut ngx_regex_t, host: &[u8]) -> bool {
    let mut subject = ngx_str_t { len: host.len(), data: host.as_ptr() as *mut u8 };
    // SAFETY: the expression lives as long as the cycle; no captures are asked
    // for, so nothing of the request is touched.
    unsafe { ngx::ffi::ngx_regex_exec(regex, &mut subject, ptr::null_mut(), 0) >= 0 }
}

/// Without PCRE2's function the expression cannot be run here: a server block
/// with a regular expression as its name is taken to serve every Host.
#[cfg(not(ngx_feature = "pcre2"))]
fn regex_matches(_regex: *mut ngx_regex_t, _host: &[u8]) -> bool {
    true
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
        type_: (NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE12) as ngx_uint_t,
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

extern "C" fn set_migration_config(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
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
    // Reads and validates a file (`source` names it in messages).
    let max_size = main.max_size;
    let load = |file: &Path, source: &str| -> Result<(String, CompiledConfig, Vec<String>), String> {
        let text = migration_engine::read_source(file, max_size).map_err(|e| e.to_string())?;
        // The zone holds the text twice: a large file that cannot fit whatever its
        // services is refused before it is parsed (a small one is parsed first, so
        // that the error can say exactly what it needs).
        let at_least = crate::zone::required_zone_size(source.len(), text.len(), &[]);
        if at_least > zone_size && text.len() > crate::zone::PARSE_BEFORE_REFUSING {
            return Err(format!(
                "zone \"{}\" is too small for {} ({} bytes of YAML): it needs more than {}, e.g. zone={}:{}",
                zone_name,
                source,
                text.len(),
                crate::zone::human_size(at_least),
                zone_name,
                crate::zone::human_size(at_least * 5 / 4)
            ));
        }
        let (config, warnings) = migration_engine::load_str_checked(source, &text).map_err(|e| e.to_string())?;
        Ok((text, config, warnings.iter().map(ToString::to_string).collect()))
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
    let (text, config, warnings) = match (load(file, &source), &last_good) {
        (Ok(loaded), _) => loaded,
        (Err(e), None) => {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", e);
            return NGX_CONF_ERROR;
        }
        // The file is refused: start (or reload) on the last configuration this
        // module published, and say so at `error`, instead of failing.
        (Err(e), Some(copy)) => match load(Path::new(copy), copy) {
            Ok(loaded) => {
                ngx_conf_log_error!(
                    ngx::ffi::NGX_LOG_ERR,
                    cf,
                    "migration: {}; nginx runs on the last good configuration {} (version {}) instead",
                    e,
                    copy,
                    loaded.1.version
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
    for warning in &warnings {
        ngx_conf_log_error!(NGX_LOG_WARN, cf, "migration: {}: {}", source, warning);
    }
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
    // Warns (checks.rs) once the whole configuration is read, then publishes.
    shm_zone.init = Some(crate::checks::init_zone);
    // SAFETY: cf is valid; its cycle is the one being configured.
    crate::checks::note_cycle(unsafe { (*cf).cycle });
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

/// Whether this process is `nginx -s quit`, `-s stop` or `-s reopen`: it parses
/// nginx.conf only to find the master's pid file, so the YAML does not matter. A
/// broken ConfigMap must not block logrotate (`reopen`) or a Kubernetes preStop
/// hook (`quit`). `-s reload` still reads it, and a bad file fails it with the
/// located error before any signal is sent, as a bad nginx.conf does.
fn signal_needs_no_configuration() -> bool {
    // SAFETY: ngx_process is set by nginx's option parsing before any configuration is read.
    if unsafe { ngx_process } != NGX_PROCESS_SIGNALLER as ngx_uint_t {
        return false;
    }
    // nginx keeps the signal's name in a static; read it from the command line
    // the same way nginx's ngx_get_options does.
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    signal_of(cmdline.split(|&b| b == 0).skip(1)).is_some_and(|s| s != b"reload")
}

/// The argument of `-s` in an nginx command line (options may be grouped, as in
/// `-qs quit`, and an option's argument may be glued to it, as in `-squit`).
fn signal_of<'a>(mut args: impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    let mut signal = None;
    while let Some(arg) = args.next() {
        let Some(flags) = arg.strip_prefix(b"-") else { continue };
        for (i, &flag) in flags.iter().enumerate() {
            if matches!(flag, b'p' | b'c' | b'g' | b'e' | b's') {
                let rest = &flags[i + 1..];
                let value = if rest.is_empty() { args.next() } else { Some(rest) };
                if flag == b's' {
                    signal = value;
                }
                break;
            }
        }
    }
    signal
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

/// `max_size=`: an nginx size (`16m`, `512k`), at least 1k.
fn parse_max_size(value: &[u8]) -> Result<u64, String> {
    let mut size = ngx_str_t { len: value.len(), data: value.as_ptr() as *mut u8 };
    // SAFETY: ngx_parse_size only reads `size`.
    let bytes = unsafe { ngx_parse_size(&mut size) };
    if bytes < 1024 {
        return Err("max_size must be a size of at least 1k, as in max_size=16m".into());
    }
    Ok(bytes as u64)
}

/// Splits `name=value` at its first `=`.
trait SplitOnceAt {
    fn split_once_at(&self, separator: u8) -> Option<(&[u8], &[u8])>;
}

impl SplitOnceAt for [u8] {
    fn split_once_at(&self, separator: u8) -> Option<(&[u8], &[u8])> {
        let at = self.iter().position(|&b| b == separator)?;
        Some((&self[..at], &self[at + 1..]))
    }
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

extern "C" fn set_migration(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
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

extern "C" fn set_migration_service(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
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

extern "C" fn set_migration_status(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::guard::conf(cf, "migration_status", || set_migration_status_body(cf, cmd, conf))
}

fn set_migration_status_body(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
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

/// `migration_service auto` routes only Hosts the server block names: a block
/// with `migration on` and no usable `server_name` would route nothing, which
/// `nginx -t` says once per server block.
fn warn_if_auto_without_names(cf: *mut ngx_conf_t, conf: &LocConf) {
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
const TARGET_VARIABLES: [&[u8]; 6] = [
    b"migration_target",
    b"migration_backend",
    b"migration_host",
    b"migration_scheme",
    b"migration_rule",
    b"migration_percentage",
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
fn warn_if_target_read_before_access(cf: *mut ngx_conf_t) {
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
fn record_reach(cf: *mut ngx_conf_t, conf: &LocConf) {
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
fn realip_from(cf: *mut ngx_conf_t) -> usize {
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
fn migration_variables_used(cf: *mut ngx_conf_t) -> bool {
    // SAFETY: cf is valid while the http block is merged.
    let cmcf = NgxHttpCoreModule::main_conf(unsafe { &*cf }).expect("http core main conf");
    // SAFETY: cmcf->variables is an array of ngx_http_variable_t.
    let variables: &[ngx_http_variable_t] = unsafe { cmcf.variables.as_slice() };
    variables.iter().any(|v| v.name.as_bytes().starts_with(b"migration_"))
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
    crate::hooks::load();
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
    NGX_CONF_OK
}

pub unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: nginx calls it with a valid cf.
    crate::guard::create(cf, "create_loc_conf", || unsafe { create_loc_conf_body(cf) })
}

unsafe fn create_loc_conf_body(cf: *mut ngx_conf_t) -> *mut c_void {
    if crate::hooks::fail_loc_conf_alloc() {
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
