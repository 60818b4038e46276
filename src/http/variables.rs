//! The `$migration_*` variables (docs/module.md, "Embedded variables"): every one is read from the
//! request's single decision, so they always agree with each other. Those that
//! depend on the service alone (`$migration_service`, `$migration_config_version`,
//! `$migration_old_*`) are read from the Host before the decision is made, so
//! that reading them early (a guard in the rewrite phase) does not decide the
//! target before auth_request can set a `user_key: var:NAME`.

use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};
use ngx::core::Status;

use migration_engine::config::values::PercentageText;
use ngx::ffi::{
    __BindgenBitfieldUnit, ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_int_t, ngx_pnalloc, ngx_str_t,
    ngx_variable_value_t,
};
use ngx::ngx_string;

use crate::http::decision::{existing, routed_decision, service_only, RequestDecision};

#[derive(Clone, Copy)]
#[repr(usize)]
enum Variable {
    Target,
    Backend,
    Host,
    Scheme,
    Service,
    Rule,
    ConfigVersion,
    OldBackend,
    OldHost,
    OldScheme,
    Percentage,
    UserId,
}

const VARIABLES: [(ngx_str_t, Variable); 12] = [
    (ngx_string!("migration_target"), Variable::Target),
    (ngx_string!("migration_backend"), Variable::Backend),
    (ngx_string!("migration_host"), Variable::Host),
    (ngx_string!("migration_scheme"), Variable::Scheme),
    (ngx_string!("migration_service"), Variable::Service),
    (ngx_string!("migration_rule"), Variable::Rule),
    (ngx_string!("migration_config_version"), Variable::ConfigVersion),
    (ngx_string!("migration_old_backend"), Variable::OldBackend),
    (ngx_string!("migration_old_host"), Variable::OldHost),
    (ngx_string!("migration_old_scheme"), Variable::OldScheme),
    (ngx_string!("migration_percentage"), Variable::Percentage),
    (ngx_string!("migration_user_id"), Variable::UserId),
];

impl Variable {
    /// Known from the service alone, without deciding the target.
    fn needs_service_only(self) -> bool {
        matches!(
            self,
            Variable::Service
                | Variable::ConfigVersion
                | Variable::OldBackend
                | Variable::OldHost
                | Variable::OldScheme
        )
    }

    /// The value of a service-only variable for `config.services[index]`.
    fn service_value(self, config: &migration_engine::CompiledConfig, index: u32) -> &str {
        let service = &config.services[index as usize];
        match self {
            Variable::Service => &service.name,
            Variable::ConfigVersion => &config.version,
            Variable::OldBackend => &service.old.backend,
            Variable::OldHost => &service.old.host,
            Variable::OldScheme => service.old.scheme,
            _ => "",
        }
    }

    #[inline]
    fn from_data(data: usize) -> Option<Variable> {
        Some(match data {
            0 => Variable::Target,
            1 => Variable::Backend,
            2 => Variable::Host,
            3 => Variable::Scheme,
            4 => Variable::Service,
            5 => Variable::Rule,
            6 => Variable::ConfigVersion,
            7 => Variable::OldBackend,
            8 => Variable::OldHost,
            9 => Variable::OldScheme,
            10 => Variable::Percentage,
            11 => Variable::UserId,
            _ => return None,
        })
    }

    /// The value for a request's decision. Strings point into the compiled
    /// configuration the request holds, or are static.
    fn value(self, d: &RequestDecision) -> &[u8] {
        let config = &d.published.config;
        let service = d.decision.service.map(|i| &config.services[i as usize]);
        let endpoint = service.zip(d.decision.target).map(|(s, t)| s.endpoint(t));
        let text: &str = match self {
            Variable::Target => d.decision.target.map_or("", |t| t.as_str()),
            Variable::Backend => endpoint.map_or("", |e| e.backend.as_str()),
            Variable::Host => endpoint.map_or("", |e| e.host.as_str()),
            Variable::Scheme => endpoint.map_or("", |e| e.scheme),
            Variable::Service => service.map_or("", |s| s.name.as_str()),
            Variable::Rule => d.decision.rule.as_str(),
            Variable::ConfigVersion => config.version.as_str(),
            // The old side whatever was decided: for retrying a failed request to
            // new on old (`error_page` to a named location).
            Variable::OldBackend => service.map_or("", |s| s.old.backend.as_str()),
            Variable::OldHost => service.map_or("", |s| s.old.host.as_str()),
            Variable::OldScheme => service.map_or("", |s| s.old.scheme),
            // Formatted into the request's pool, or read from the request, by the getter.
            Variable::Percentage | Variable::UserId => "",
        };
        text.as_bytes()
    }
}

/// `len` (28 bits), `valid`, `no_cacheable`, `not_found` and `escape` share one
/// 32-bit bitfield. bindgen's setters write it bit by bit, about 480 instructions
/// for the four (callgrind), a quarter of the module's cost per request; when the
/// bitfield is laid out as the low bits of a native u32 (checked once at start by
/// [`check_bitfield_layout`]), a value is written whole instead.
static WHOLE_BITFIELD: AtomicBool = AtomicBool::new(false);

const VALID: u32 = 1 << 28;
const NO_CACHEABLE: u32 = 1 << 29;

/// A value nginx keeps for the rest of the request (and its internal redirects).
fn set_value(v: &mut ngx_variable_value_t, value: &[u8]) {
    set_value_flags(v, value, false);
}

/// A value read from the service alone, before the decision: nginx keeps a
/// value for the rest of the request, internal redirects included, and the
/// decision may later be made in a location with another `migration_service`.
/// Not cacheable, so that a read after the decision (nginx flushes such a value
/// before each `return`, `set`, `if`, `map` or log format that reads it) names
/// the decided service.
fn set_value_until_decided(v: &mut ngx_variable_value_t, value: &[u8]) {
    set_value_flags(v, value, true);
}

fn set_value_flags(v: &mut ngx_variable_value_t, value: &[u8], no_cacheable: bool) {
    let len = value.len() as u32;
    if len < VALID && WHOLE_BITFIELD.load(Ordering::Relaxed) {
        let flags = if no_cacheable { VALID | NO_CACHEABLE } else { VALID };
        v._bitfield_1 = __BindgenBitfieldUnit::new((len | flags).to_ne_bytes());
    } else {
        set_value_by_setters(v, len, no_cacheable);
    }
    v.data = value.as_ptr() as *mut u8;
}

fn set_value_by_setters(v: &mut ngx_variable_value_t, len: u32, no_cacheable: bool) {
    v.set_len(len);
    v.set_valid(1);
    v.set_no_cacheable(no_cacheable.into());
    v.set_not_found(0);
    v.set_escape(0);
}

/// Compares the whole-word write with bindgen's setters for a few lengths, and
/// enables it only if they agree bit for bit.
fn check_bitfield_layout() {
    let lengths = [0u32, 1, 7, 255, 65_535, VALID - 1];
    let same = lengths.iter().flat_map(|&len| [(len, false), (len, true)]).all(|(len, no_cacheable)| {
        let mut by_setters = ngx_variable_value_t {
            _bitfield_align_1: [],
            _bitfield_1: __BindgenBitfieldUnit::new([0xff; 4]),
            data: ptr::null_mut(),
        };
        set_value_by_setters(&mut by_setters, len, no_cacheable);
        let flags = if no_cacheable { VALID | NO_CACHEABLE } else { VALID };
        by_setters._bitfield_1 == __BindgenBitfieldUnit::new((len | flags).to_ne_bytes())
    });
    WHOLE_BITFIELD.store(same, Ordering::Relaxed);
}

unsafe extern "C" fn get_variable(r: *mut ngx_http_request_t, v: *mut ngx_variable_value_t, data: usize) -> ngx_int_t {
    // SAFETY: nginx calls variable getters with a live request and a value slot.
    crate::guard::variable(r, "a $migration_* variable", || unsafe { get_variable_body(r, v, data) })
}

unsafe fn get_variable_body(r: *mut ngx_http_request_t, v: *mut ngx_variable_value_t, data: usize) -> ngx_int_t {
    // SAFETY: nginx calls variable getters with a live request and a value slot.
    let (r, v) = unsafe { (&mut *r, &mut *v) };
    let Some(variable) = Variable::from_data(data) else {
        return Status::NGX_ERROR.into();
    };
    // The service alone is known from the Host: reading these (the guard of docs/module.md
    // `if ($migration_service = "")`, in the rewrite phase) does not decide the
    // target, which waits for the access phase and what auth_request_set sets.
    if variable.needs_service_only() && existing(r).is_none() {
        if let Some((published, index)) = service_only(r) {
            let text = variable.service_value(&published.config, index);
            return match in_request_pool(r, text.as_bytes()) {
                Some(value) => {
                    set_value_until_decided(v, value);
                    Status::NGX_OK.into()
                }
                None => Status::NGX_ERROR.into(),
            };
        }
        // No service: nothing to wait for; decided (rule none) and counted below.
    }
    // Read by the decision itself, through the variable of its user_key.
    if crate::http::request::READING_USER_VARIABLE.load(Ordering::Relaxed) {
        v.set_valid(0);
        v.set_not_found(1);
        crate::http::request::hidden_while_reading(v);
        return Status::NGX_OK.into();
    }
    // The user id is read from the request again, while its decision (kept in
    // the request's pool) is borrowed.
    let raw: *mut ngx_http_request_t = r;
    match routed_decision(r) {
        Ok(Some(d)) if matches!(variable, Variable::Percentage) && d.decision.service.is_some() => {
            // The percentage in force for the request's service (its ramp's, or the
            // configured one), as the YAML writes percentages.
            let text = PercentageText(d.decision.percentage_bp).to_string();
            match in_request_pool(r, text.as_bytes()) {
                Some(value) => set_value(v, value),
                None => return Status::NGX_ERROR.into(),
            }
        }
        Ok(Some(d)) if matches!(variable, Variable::UserId) => {
            let value: &[u8] = match (&d.minted, d.decision.service) {
                (Some(id), _) => id.as_bytes(),
                (None, Some(index)) => {
                    // The id of the request the decision was made from: a
                    // subrequest's is its main request's (an `auth_request`
                    // carries no query, an SSI include its own), and nginx keeps
                    // the value for the main request and its subrequests alike.
                    // SAFETY: `raw` is the live request of this call, and its main
                    // request is live while it runs; the view only reads the
                    // main request's headers, arguments and variables, never the
                    // decision.
                    let view = unsafe { crate::http::request::NgxRequestView::new(&mut *(*raw).main) };
                    let id = d.published.config.services[index as usize].user_id_of(&view).unwrap_or_default();
                    // The id lies in the request (a header, a cookie, an argument or
                    // another variable's value), which outlives this value.
                    // SAFETY: as said; only its lifetime is widened to the request's.
                    unsafe { core::slice::from_raw_parts(id.as_ptr(), id.len()) }
                }
                (None, None) => b"",
            };
            set_value(v, value);
        }
        Ok(Some(d)) => {
            let value = variable.value(d);
            set_value(v, value);
        }
        // No migration_config: nothing was decided.
        Ok(None) => set_value(v, if matches!(variable, Variable::Rule) { b"none" } else { b"" }),
        Err(()) => return Status::NGX_ERROR.into(),
    }
    Status::NGX_OK.into()
}

/// A copy of `text` in the request's pool, which outlives the variable's value
/// (None when the pool is out of memory).
fn in_request_pool<'a>(r: &'a ngx_http_request_t, text: &[u8]) -> Option<&'a [u8]> {
    // SAFETY: the request pool is live with the request.
    let buf = unsafe { ngx_pnalloc(r.pool, text.len().max(1)) } as *mut u8;
    if buf.is_null() {
        return None;
    }
    // SAFETY: `buf` has room for the text's bytes, and lives as long as the request.
    Some(unsafe {
        core::ptr::copy_nonoverlapping(text.as_ptr(), buf, text.len());
        core::slice::from_raw_parts(buf, text.len())
    })
}

pub unsafe extern "C" fn add_variables(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: preconfiguration runs with a valid cf; its log is live.
    crate::guard::init(unsafe { (*cf).log }, "preconfiguration", || unsafe { add_variables_body(cf) })
}

unsafe fn add_variables_body(cf: *mut ngx_conf_t) -> ngx_int_t {
    check_bitfield_layout();
    for (name, variable) in VARIABLES {
        let mut name = name;
        // SAFETY: cf is valid during preconfiguration; nginx copies the name.
        let var = unsafe { ngx_http_add_variable(cf, &mut name, 0) };
        if var.is_null() {
            return Status::NGX_ERROR.into();
        }
        // SAFETY: `var` was just returned by nginx and is ours to fill in.
        unsafe {
            (*var).get_handler = Some(get_variable);
            (*var).data = variable as usize;
        }
    }
    Status::NGX_OK.into()
}
