//! The decision of one request: made once (in the access phase of locations with
//! `migration on`, or by the first `$migration_*` variable read before that), and
//! kept for the whole request, internal redirects included.
//!
//! nginx clears module contexts on an internal redirect (index, try_files,
//! error_page). Like the realip module, the decision is also registered as a
//! cleanup of the request pool, where it can be found again after a redirect: the
//! weighted coin is never tossed twice.
//!
//! A request is counted in the status once, the first time its decision is used
//! in a location with `migration on` (the access phase, or a variable read there):
//! those are the routed requests. A variable read elsewhere (an `access_log`
//! format at http level, a health-check server) decides but does not count.

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;
use core::slice;
use core::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use migration_engine::responses::{class_of, ABORTED, FAILED};
use migration_engine::{decide_with, CompiledConfig, Decision, Outcome, Rule, ServiceChoice, Target, Transition};
use ngx::core::Status;
use ngx::ffi::{
    ngx_array_push, ngx_conf_t, ngx_http_handler_pt, ngx_http_phases_NGX_HTTP_ACCESS_PHASE,
    ngx_http_phases_NGX_HTTP_LOG_PHASE, ngx_http_request_t, ngx_http_upstream_state_t, ngx_int_t, ngx_msec_t,
    ngx_pool_cleanup_add, NGX_LOG_WARN,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule, Request};
use ngx::ngx_log_error;

use crate::publish::Published;

use crate::directives::{Module, ServiceSetting};
use crate::request::NgxRequestView;

/// What a request keeps: the configuration it was decided with (so that the
/// variables' strings outlive any later configuration swap) and the decision.
///
/// A request holds process-local memory only. It never touches the zone
/// through the configuration it was decided with, which may have been replaced
/// while it ran (a request held open for minutes: a slow upload, a WebSocket):
/// its counters, responses, ramp window and breaker are reached through the
/// configuration the process routes by now ([`RequestDecision::live_slot`]), so
/// the process announces only that generation to the zone, and a held request
/// never keeps older generations' slots from being reclaimed.
pub struct RequestDecision {
    /// Recognises our cleanup entry among the pool's cleanups.
    tag: u64,
    pub published: Arc<Published>,
    pub decision: Decision,
    counted: Cell<bool>,
    /// The connection's client address when the decision was made: realip at
    /// location level replaces it later (preaccess), see `access_handler`.
    client_sockaddr: usize,
    /// Made by a variable read before any access handler of ours ran for the
    /// request (not found again after an internal redirect).
    before_access: bool,
}

/// Set while our access handler runs: a decision made then is not early.
static IN_ACCESS: AtomicBool = AtomicBool::new(false);

const TAG: u64 = u64::from_be_bytes(*b"migrdcsn");

impl RequestDecision {
    /// The configuration the process routes by now, and the index in it of the
    /// decided service (slots belong to a service's name: the same slot, unless
    /// the service has been removed since). None without a service.
    pub fn live_slot(&self) -> Option<(Arc<Published>, usize)> {
        let index = self.decision.service? as usize;
        let now = crate::publish::current()?;
        if Arc::ptr_eq(&now, &self.published) {
            return Some((now, index));
        }
        let name = &self.published.config.services.get(index)?.name;
        let index = now.config.service_index(name)? as usize;
        Some((now, index))
    }

    /// Counts the decision in the zone (the status's `requests` and `rules`).
    fn count(&self) {
        match (self.decision.service, self.decision.target) {
            (Some(_), Some(target)) => {
                if let Some((now, index)) = self.live_slot() {
                    now.slots[index].count(target, self.decision.rule);
                }
            }
            _ => self.published.zone.count_unmatched(),
        }
    }
}

unsafe extern "C" fn drop_request_decision(data: *mut c_void) {
    // SAFETY: `data` is the RequestDecision written by `decision_for`, dropped once
    // when the request pool is destroyed.
    crate::guard::quiet("a request's cleanup", || unsafe { ptr::drop_in_place(data as *mut RequestDecision) });
}

/// The decision already made for this request, if any: from the module context,
/// or, after an internal redirect cleared it, from the request pool's cleanups.
pub fn existing(r: &mut ngx_http_request_t) -> Option<*mut RequestDecision> {
    // SAFETY: Request is a transparent wrapper over ngx_http_request_t.
    let request: &mut Request = unsafe { Request::from_ngx_http_request(r) };
    let module = Module::module();
    if let Some(ctx) = request.get_module_ctx::<RequestDecision>(module) {
        return Some(ctx as *const _ as *mut _);
    }
    let found = crate::request::pool_cleanup::<RequestDecision>(r, drop_request_decision, |d| d.tag == TAG)?;
    request.set_module_ctx(found as *mut c_void, module);
    Some(found)
}

/// How this location finds the request's service (`migration_service`).
fn service_choice<'a>(r: &ngx_http_request_t, config: &'a CompiledConfig) -> ServiceChoice<'a> {
    let loc = Module::location_conf(r).expect("location conf");
    match &loc.service {
        // The name lives as long as the location configuration, which outlives
        // every request; the engine only compares it.
        ServiceSetting::Named(name) => ServiceChoice::Index(config.service_index(name).unwrap_or(u32::MAX)),
        ServiceSetting::AutoAnyServer => ServiceChoice::Auto,
        // Only a Host this server block names: a request that reached it as the
        // default server for another name routes nowhere (rule none).
        ServiceSetting::Auto | ServiceSetting::Unset => {
            // headers_in.server is nginx's validated Host: lowercase, no port.
            match config.service_for_normalized_host(crate::request::bytes(&r.headers_in.server)) {
                Some(index) if crate::request::served_by_name(r) => ServiceChoice::Index(index),
                _ => ServiceChoice::Index(u32::MAX),
            }
        }
    }
}

/// The request's service, found from the Host (or the location's
/// `migration_service`) alone, without deciding its target: what
/// `$migration_service`, `$migration_config_version` and `$migration_old_*` need.
/// The target is decided later, in the access phase after the other access
/// handlers, so that a `user_key: var:NAME` set by `auth_request_set` is there
/// (README "Decision order").
pub fn service_only(r: &mut ngx_http_request_t) -> Option<(Arc<Published>, u32)> {
    let published = crate::publish::current()?;
    let index = match service_choice(r, &published.config) {
        ServiceChoice::Index(index) => (index < published.config.services.len() as u32).then_some(index),
        ServiceChoice::Auto => {
            // SAFETY: `r` is a live request for the duration of this call.
            let view = unsafe { NgxRequestView::new(r) };
            published.config.service_for_host(migration_engine::RequestView::host(&view))
        }
        ServiceChoice::Named(name) => published.config.service_index(name),
    }?;
    Some((published, index))
}

/// The request's decision, made now if it was not made yet. None when no
/// `migration_config` is loaded, or on allocation failure (`Err`).
pub fn decision_for(r: &mut ngx_http_request_t) -> Result<Option<&RequestDecision>, ()> {
    if let Some(d) = existing(r) {
        // SAFETY: the decision lives in the request pool, which outlives `r`'s borrow.
        return Ok(Some(unsafe { &*d }));
    }
    let Some(published) = crate::publish::current() else {
        return Ok(None);
    };
    let config = &published.config;
    let choice = service_choice(r, config);
    let decision = {
        // SAFETY: `r` is a live request for the duration of this call.
        let view = unsafe { NgxRequestView::new(r) };
        decide_with(config, choice, &view, &mut crate::random::draw, &*published)
    };
    if let (Some(transition), Some(index)) = (decision.transition, decision.service) {
        log_transition(r, &published, index, transition);
    }
    // SAFETY: r->pool is the request pool; the cleanup's data area is sized for a
    // RequestDecision and is initialised right below, before anything reads it.
    unsafe {
        let cln = ngx_pool_cleanup_add(r.pool, core::mem::size_of::<RequestDecision>());
        if cln.is_null() {
            return Err(());
        }
        let data = (*cln).data as *mut RequestDecision;
        let client_sockaddr = (*r.connection).sockaddr as usize;
        let before_access = !IN_ACCESS.load(Ordering::Relaxed);
        ptr::write(
            data,
            RequestDecision {
                tag: TAG,
                published,
                decision,
                counted: Cell::new(false),
                client_sockaddr,
                before_access,
            },
        );
        (*cln).handler = Some(drop_request_decision);
        let request = Request::from_ngx_http_request(r);
        request.set_module_ctx(data as *mut c_void, Module::module());
        Ok(Some(&*data))
    }
}

/// The request's decision, as [`decision_for`], counted in the status if this
/// location has `migration on` and it was not counted yet.
pub fn routed_decision(r: &mut ngx_http_request_t) -> Result<Option<&RequestDecision>, ()> {
    let routing = Module::location_conf(&*r).is_some_and(|loc| loc.enabled == Some(true));
    let d = decision_for(r)?;
    if let Some(d) = d {
        if routing && !d.counted.replace(true) && !cfg!(feature = "uncounted") {
            d.count();
        }
    }
    Ok(d)
}

unsafe extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    crate::guard::request(r, "the access phase", || unsafe { access_handler_body(r) })
}

unsafe fn access_handler_body(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    let r = unsafe { &mut *r };
    // SAFETY: Request is a transparent wrapper over ngx_http_request_t.
    let request: &Request = unsafe { Request::from_ngx_http_request(r) };
    if let Some(early) = request.get_module_ctx::<RequestDecision>(Module::module()) {
        warn_if_decided_before_realip(r, early);
        warn_if_decided_before_access(r, early);
    }
    let enabled = Module::location_conf(&*r).is_some_and(|loc| loc.enabled == Some(true));
    IN_ACCESS.store(true, Ordering::Relaxed);
    let decided = !enabled || routed_decision(r).is_ok();
    IN_ACCESS.store(false, Ordering::Relaxed);
    if !decided {
        return Status::NGX_ERROR.into();
    }
    Status::NGX_DECLINED.into()
}

/// A decision made before the access phase (a variable read by set, if, return
/// or rewrite) saw the client address as it was then; realip configured in the
/// location replaces it only in the preaccess phase. When the address moved and
/// the service's rules look at it, the request was routed by the proxy's
/// address: say so (once per worker), never silently. `nginx -t` warns about
/// such locations too.
fn warn_if_decided_before_realip(r: &ngx_http_request_t, d: &RequestDecision) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    // SAFETY: the connection outlives its requests.
    let (now, log) = unsafe { ((*r.connection).sockaddr as usize, (*r.connection).log) };
    if now == d.client_sockaddr || WARNED.load(Ordering::Relaxed) {
        return;
    }
    let Some(service) = d.decision.service.map(|i| &d.published.config.services[i as usize]) else {
        return;
    };
    if !service.uses_client_address() || WARNED.swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: the connection is live; its addr_text is realip's client address now.
    let client = String::from_utf8_lossy(crate::request::bytes(unsafe { &(*r.connection).addr_text })).into_owned();
    ngx_log_error!(
        NGX_LOG_WARN,
        log,
        "migration: service \"{}\" was decided before realip set the client address {} (realip in this location runs \
         after set, if, return and rewrite): its ip rules and from: saw the proxy's address; put set_real_ip_from and \
         real_ip_header at the server or http level (logged once per worker)",
        service.name,
        client
    );
}

/// A decision made before this handler (the last of the access phase) read a
/// `user_key: var:NAME` before `auth_request_set` (or another access handler)
/// could set it: a target-dependent `$migration_*` variable was read by set, if,
/// return or rewrite. Said once per worker, never silently.
fn warn_if_decided_before_access(r: &ngx_http_request_t, d: &RequestDecision) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if WARNED.load(Ordering::Relaxed) || !d.before_access {
        return;
    }
    let Some(service) = d.decision.service.map(|i| &d.published.config.services[i as usize]) else {
        return;
    };
    let Some(variable) = service.user_variable() else {
        return;
    };
    if WARNED.swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: the connection's log is live with the request.
    let log = unsafe { (*r.connection).log };
    ngx_log_error!(
        NGX_LOG_WARN,
        log,
        "migration: service \"{}\" was decided before the access phase (a $migration_* variable that depends on the \
         target was read by set, if, return or rewrite), so its user_key var:{} was read before auth_request_set could \
         set it; before access, read only $migration_service, $migration_config_version or $migration_old_* (logged \
         once per worker)",
        service.name,
        variable
    );
}

/// Log phase: how a request routed to new ended, for its service's fallback
/// breaker (SPEC "fallback"). Every request passes here, aborted ones included,
/// so a trial always hands its permit back.
// The `counted` flag doubles as "routed": it is set exactly when the decision was
// used in a location with `migration on`.
unsafe extern "C" fn log_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    let rc = crate::guard::request(r, "the log phase", || unsafe { log_handler_body(r) });
    // The response is gone by now: nothing to answer with a 500.
    if rc == ngx::ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t {
        Status::NGX_OK.into()
    } else {
        rc
    }
}

unsafe fn log_handler_body(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    let r = unsafe { &mut *r };
    // A subrequest (SSI, auth_request with log_subrequest on) shares the main
    // request's decision; only the main request speaks for the new cluster, once.
    if !ptr::eq(r, r.main) {
        return Status::NGX_OK.into();
    }
    let Some(d) = existing(r) else {
        return Status::NGX_OK.into();
    };
    // SAFETY: the decision lives in the request pool, alive until after the log phase.
    let d = unsafe { &*d };
    let (Some(index), Some(target)) = (d.decision.service, d.decision.target) else {
        return Status::NGX_OK.into();
    };
    // The zone through the configuration the process routes by now (see RequestDecision).
    let Some((live, live_index)) = d.live_slot() else {
        return Status::NGX_OK.into();
    };
    let slot = &live.slots[live_index];
    let published = &d.published;
    let first = first_upstream(r);
    // Responses per target: every routed request (the same rule as the counters);
    // a ramp's gate judges only what the percentage split decided.
    if d.counted.get() {
        let (class, upstream_us) = response_of(r, &first);
        slot.responses.record(target, class, upstream_us);
        // Header, CIDR and user-list traffic is the client's or the operator's
        // choice, never the ramp's evidence.
        if d.decision.rule.is_split() && live.config.services[live_index].ramp.is_some() {
            slot.ramp.record(target, class, upstream_us);
        }
    }
    let (Target::New, Some(policy)) = (target, published.config.services[index as usize].fallback.as_ref()) else {
        return Status::NGX_OK.into();
    };
    // Only a request the migration itself sent to new (decision steps 5 to 7, in
    // a location with `migration on`) speaks for the new cluster. A header rule
    // is the client's choice: anyone can send `X-Migration-Target: new` to a
    // failing path, and it must not send every migrated user back to old. A
    // decision that only fed a log format hands back a trial permit it may hold.
    let by_migration = d.counted.get() && d.decision.rule != Rule::Header;
    let outcome = if by_migration {
        upstream_outcome(r, &first, |status| policy.is_failure(status))
    } else {
        Outcome::Inconclusive
    };
    let now = migration_engine::Breakers::now_ms(&**published);
    if let Some(transition) = slot.breaker.record(outcome, d.decision.trial, policy.failures, now) {
        log_transition(r, published, index, transition);
    }
    Status::NGX_OK.into()
}

/// How the request's first upstream (the one its location proxied to) ended. A
/// later upstream, after an internal redirect (the `error_page` retry on old of
/// the README's recipe), is not its doing: nginx starts it with an empty state,
/// which ends the first group.
enum FirstUpstream {
    /// The request had no upstream (e.g. `return`).
    None,
    /// It pushed no state: it failed before any connection (nginx finalizes "no
    /// resolver defined" and "could not be resolved" with 502 first); `later`
    /// when an error_page took over from it.
    NoState { later: bool },
    /// Its last attempt.
    Attempt(ngx_http_upstream_state_t),
}

fn first_upstream(r: &ngx_http_request_t) -> FirstUpstream {
    // SAFETY: r->upstream_states is null or an ngx_array_t owned by the request pool.
    let states: &[ngx_http_upstream_state_t] = match unsafe { r.upstream_states.as_ref() } {
        // SAFETY: its `nelts` elements are ngx_http_upstream_state_t, live with the request.
        Some(array) if array.nelts > 0 => unsafe { slice::from_raw_parts(array.elts as *const _, array.nelts) },
        // An upstream started (nginx creates the array then) but never connected.
        Some(_) => &[],
        None => return FirstUpstream::None,
    };
    let first_group = states.iter().position(|s| s.peer.is_null()).unwrap_or(states.len());
    match states[..first_group].last() {
        Some(last) => FirstUpstream::Attempt(*last),
        None => FirstUpstream::NoState { later: first_group < states.len() },
    }
}

/// nginx marks a connection that never completed, or a response header that
/// never came, with -1.
fn no_response(attempt: &ngx_http_upstream_state_t) -> bool {
    attempt.connect_time == ngx_msec_t::MAX || attempt.header_time == ngx_msec_t::MAX
}

/// The breaker's reading: the last attempt's status in `statuses`, a failed
/// connection or a timeout is a failure; no upstream, or a client that left
/// before the answer, tells nothing.
fn upstream_outcome(r: &ngx_http_request_t, first: &FirstUpstream, is_failure: impl Fn(u16) -> bool) -> Outcome {
    // SAFETY: the connection outlives its requests.
    let client_left = unsafe { (*r.connection).error() } != 0;
    match first {
        FirstUpstream::None => Outcome::Inconclusive,
        FirstUpstream::NoState { later } => {
            let status = u16::try_from(r.headers_out.status).unwrap_or(0);
            match () {
                _ if client_left => Outcome::Inconclusive,
                _ if *later || status == 502 => Outcome::Failure(502),
                _ if status != 0 && is_failure(status) => Outcome::Failure(status),
                _ => Outcome::Inconclusive,
            }
        }
        FirstUpstream::Attempt(last) => {
            let status = u16::try_from(last.status).unwrap_or(0);
            if status != 0 && is_failure(status) {
                return Outcome::Failure(status);
            }
            if client_left {
                return Outcome::Inconclusive;
            }
            if no_response(last) {
                return Outcome::Failure(if status == 0 { 502 } else { status });
            }
            Outcome::Success
        }
    }
}

/// nginx's status for a request the client closed before it was answered.
const CLIENT_CLOSED_REQUEST: usize = 499;

/// The response's class for the status (SPEC "Responses per target"):
/// `aborted` when the client left before the upstream answered (nginx's 499: no
/// error of the cluster, no latency sample — a client that hangs up on purpose
/// must not move a gate), `failed` when no upstream response came (the
/// breaker's own test), else the class of the status the client got; and the
/// upstream's response time, when it had one.
fn response_of(r: &ngx_http_request_t, first: &FirstUpstream) -> (usize, Option<u64>) {
    let client_class = || class_of(u16::try_from(r.headers_out.status).unwrap_or(0)).unwrap_or(FAILED);
    // SAFETY: the connection outlives its requests.
    let client_left = unsafe { (*r.connection).error() } != 0 || r.headers_out.status == CLIENT_CLOSED_REQUEST;
    match first {
        FirstUpstream::None if r.headers_out.status == CLIENT_CLOSED_REQUEST => (ABORTED, None),
        FirstUpstream::None => (client_class(), None),
        FirstUpstream::NoState { .. } if client_left => (ABORTED, None),
        FirstUpstream::NoState { .. } => (FAILED, None),
        FirstUpstream::Attempt(last) if no_response(last) && client_left => (ABORTED, None),
        FirstUpstream::Attempt(last) => {
            let time = (last.response_time != ngx_msec_t::MAX).then(|| last.response_time as u64 * 1000);
            (if no_response(last) { FAILED } else { client_class() }, time)
        }
    }
}

/// Every breaker transition is logged at `warn`, once, by the process that made it.
fn log_transition(r: &ngx_http_request_t, published: &Published, index: u32, transition: Transition) {
    let service = &published.config.services[index as usize];
    let cooldown = service.fallback.as_ref().map_or(0, |p| p.cooldown_ms);
    let cooldown = if cooldown % 1000 == 0 { format!("{}s", cooldown / 1000) } else { format!("{cooldown}ms") };
    // SAFETY: the connection's log is live with the request.
    let log = unsafe { (*r.connection).log };
    let name = &service.name;
    let message = match transition {
        Transition::Opened { failures, status } => format!(
            "service \"{name}\": fallback opened after {failures} consecutive failures of the new cluster (last: {status}); \
             requests go to old for {cooldown}"
        ),
        Transition::HalfOpened => {
            format!("service \"{name}\": fallback half-open after {cooldown}: one trial request goes to new")
        }
        Transition::Closed => format!("service \"{name}\": fallback closed: the trial request to new succeeded"),
        Transition::Reopened { status } => format!(
            "service \"{name}\": fallback re-opened: the trial request to new failed ({status}); requests go to old for {cooldown}"
        ),
    };
    ngx_log_error!(NGX_LOG_WARN, log, "migration: {}", message);
}

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
    // SAFETY: postconfiguration runs with a valid cf inside the http block.
    let cmcf = NgxHttpCoreModule::main_conf_mut(unsafe { &*cf }).expect("http core main conf");
    // `user_key: var:NAME` must name a variable nginx.conf defines: now, while
    // nginx still holds their names (`nginx -t`, start, reload).
    // SAFETY: postconfiguration: variables_keys is still allocated.
    let variables = Arc::new(unsafe { crate::variable_names::of_configuration(cmcf) });
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
    for (phase, handler) in [
        (ngx_http_phases_NGX_HTTP_ACCESS_PHASE, access_handler as unsafe extern "C" fn(_) -> _),
        (ngx_http_phases_NGX_HTTP_LOG_PHASE, log_handler),
    ] {
        let handlers = &mut cmcf.phases[phase as usize].handlers;
        // SAFETY: the phase's handler array is an ngx_array_t of ngx_http_handler_pt.
        let h = unsafe { ngx_array_push(handlers) as *mut ngx_http_handler_pt };
        if h.is_null() {
            return Status::NGX_ERROR.into();
        }
        // SAFETY: `h` is a fresh slot in the array.
        unsafe { *h = Some(handler) };
        if phase == ngx_http_phases_NGX_HTTP_ACCESS_PHASE {
            // nginx runs a phase's handlers from the last registered to the first:
            // moved to the front, the decision comes after every other access
            // check (allow/deny, auth_basic, auth_request), so that `user_key:
            // var:NAME` can read what auth_request_set set.
            // SAFETY: the array holds `nelts` handlers, ours the last of them.
            let all = unsafe { slice::from_raw_parts_mut(handlers.elts as *mut ngx_http_handler_pt, handlers.nelts) };
            all.rotate_right(1);
        }
    }
    Status::NGX_OK.into()
}
