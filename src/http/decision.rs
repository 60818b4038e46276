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
//! format at http level, a health-check server), or only in the log phase,
//! decides but does not count.

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use migration_engine::{
    cookie_to_mint, decide_with, CompiledConfig, Decision, Rule, ServiceChoice, StickyId, Transition,
};
use ngx::ffi::{ngx_http_request_t, ngx_palloc, ngx_pool_cleanup_t, NGX_LOG_WARN};
use ngx::http::{HttpModule, HttpModuleLocationConf, Request};
use ngx::ngx_log_error;

use crate::state::live::LiveConfig;

use crate::conf::{Module, ServiceSetting};
use crate::http::host_verdict;
use crate::http::request::NgxRequestView;

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
    pub published: Arc<LiveConfig>,
    pub decision: Decision,
    pub(crate) counted: Cell<bool>,
    /// The connection's client address when the decision was made: realip at
    /// location level replaces it later (preaccess), see `access_handler`.
    pub(crate) client_sockaddr: usize,
    /// Made by a variable read before any access handler of ours ran for the
    /// request (not found again after an internal redirect).
    pub(crate) before_access: bool,
    /// The id `sticky` minted for this request (it carried none): the decision
    /// hashed it, and the response hands it out (`http::sticky`).
    pub minted: Option<StickyId>,
    /// The response's `Set-Cookie` for `minted` was added: never twice.
    pub(crate) cookie_sent: Cell<bool>,
    /// The number the weight split drew for the request, if it drew one: a
    /// long-lived request decided again keeps it (`http::drain`).
    pub(crate) drawn: Cell<Option<u32>>,
    /// Where the request is in its worker's list of long-lived requests
    /// (`http::drain`), or [`crate::http::drain::UNTRACKED`].
    pub(crate) tracked: Cell<u32>,
    /// `drain` closed it (a misplaced long-lived request): its end is the
    /// module's doing, not a cluster's (see the log phase).
    pub(crate) drained: Cell<bool>,
    /// Where, in the request's upstream states, the attempts of its routed
    /// upstream begin: the first upstream to start once the counted request
    /// reached the precontent phase (`http::phases`). [`NOT_ROUTED`] until
    /// then, and for good when it never got there (refused by limit_req, deny
    /// or auth_request, then perhaps sent to an `error_page` location): nothing
    /// it asked of an upstream speaks for the side it was decided to.
    pub(crate) routed_from: Cell<u32>,
    /// Counted in a location an `error_page` sent the request to.
    pub(crate) counted_in_error_page: Cell<bool>,
}

/// [`RequestDecision::routed_from`] of a request not counted as routed when it
/// reached the precontent phase (or that never reached it).
pub(crate) const NOT_ROUTED: u32 = u32::MAX;

/// A request pool's cleanup entry and the decision it drops, allocated together.
#[repr(C)]
struct DecisionCleanup {
    cleanup: ngx_pool_cleanup_t,
    decision: RequestDecision,
}

// ngx_palloc aligns to NGX_ALIGNMENT, an unsigned long.
const _: () = assert!(core::mem::align_of::<DecisionCleanup>() <= core::mem::align_of::<core::ffi::c_ulong>());

/// Set while our access or precontent handler runs: a decision made then is
/// not early.
pub(crate) static IN_ACCESS: AtomicBool = AtomicBool::new(false);

/// The request whose log phase runs now (0: none), set by the first log-phase
/// handler and cleared by the last (`http::phases`). A decision first used
/// then steered nothing: the request was answered without being routed (nginx
/// refused it while reading its header, an access check or `auth_request`
/// denied it, a server-level `return` answered it), and only an `access_log`
/// format asks what its target would have been. Counted, such requests would
/// be responses of a side that never saw them: a client could fill a ramp
/// step's window with its own 400s and 401s, diluting new's error rate.
pub(crate) static LOGGING: AtomicUsize = AtomicUsize::new(0);

const TAG: u64 = u64::from_be_bytes(*b"migrdcsn");

impl RequestDecision {
    /// The configuration the process routes by now, and the index in it of the
    /// decided service (slots belong to a service's name: the same slot, unless
    /// the service has been removed since). None without a service.
    pub fn live_slot(&self) -> Option<(Arc<LiveConfig>, usize)> {
        let index = self.decision.service? as usize;
        let now = crate::state::live::current()?;
        if Arc::ptr_eq(&now, &self.published) {
            return Some((now, index));
        }
        let name = &self.published.config.services.get(index)?.name;
        let index = now.config.service_index(name)? as usize;
        Some((now, index))
    }

    /// `f` of what [`RequestDecision::live_slot`] finds, without taking a
    /// reference when the request was decided with the configuration the
    /// process routes by now (nearly always: a request's counting and its log
    /// phase then cost no reference count).
    #[inline(always)]
    pub fn with_live_slot<R>(&self, f: impl FnOnce(&LiveConfig, usize) -> R) -> Option<R> {
        let index = self.decision.service? as usize;
        // One call of `f`, so that it is inlined here (called from two
        // branches, the log phase's was a function of its own: callgrind, 20
        // instructions a request).
        let later;
        let (live, index) = if crate::state::live::is_current(&self.published) {
            (&*self.published, index)
        } else {
            later = self.live_slot()?;
            (&*later.0, later.1)
        };
        Some(f(live, index))
    }

    /// Counts the decision in the zone (the status's `requests` and `rules`).
    #[inline(always)]
    pub(crate) fn count(&self) {
        match (self.decision.service, self.decision.target) {
            (Some(_), Some(target)) => {
                self.with_live_slot(|now, index| now.slots[index].count(target, self.decision.rule));
            }
            _ => self.published.zone.count_unmatched(),
        }
    }
}

unsafe extern "C" fn drop_request_decision(data: *mut c_void) {
    // SAFETY: `data` is the RequestDecision written by `decision_for`, dropped once
    // when the request pool is destroyed.
    crate::guard::quiet("a request's cleanup", || unsafe {
        crate::http::drain::untrack(&*(data as *const RequestDecision));
        ptr::drop_in_place(data as *mut RequestDecision)
    });
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
    let found = crate::http::request::pool_cleanup::<RequestDecision>(r, drop_request_decision, |d| d.tag == TAG)?;
    request.set_module_ctx(found as *mut c_void, module);
    Some(found)
}

/// How this location finds the request's service (`migration_service`).
#[inline(always)]
fn service_choice<'a>(r: &ngx_http_request_t, live: &'a LiveConfig) -> ServiceChoice<'a> {
    let loc = Module::location_conf(r).expect("location conf");
    let config = &live.config;
    match &loc.service {
        // The name lives as long as the location configuration, which outlives
        // every request; the engine only compares it.
        ServiceSetting::Named(name) => ServiceChoice::Index(config.service_index(name).unwrap_or(u32::MAX)),
        ServiceSetting::AutoAnyServer => ServiceChoice::Auto,
        // Only a Host this server block names: a request that reached it as the
        // default server for another name routes nowhere (rule none).
        ServiceSetting::Auto | ServiceSetting::Unset => {
            ServiceChoice::Index(host_verdict::service_index(r, live, || {
                // headers_in.server is nginx's validated Host: lowercase, no port.
                match config.service_for_normalized_host(crate::http::request::bytes(&r.headers_in.server)) {
                    Some(index) if crate::http::request::served_by_name(r) => index,
                    _ => u32::MAX,
                }
            }))
        }
    }
}

/// The request's service, found from the Host (or the location's
/// `migration_service`) alone, without deciding its target: what
/// `$migration_service`, `$migration_config_version` and `$migration_old_*` need.
/// The target is decided later, in the access phase after the other access
/// handlers, so that a `user_key: var:NAME` set by `auth_request_set` is there
/// (docs/decision.md).
pub fn service_only(r: &mut ngx_http_request_t) -> Option<(Arc<LiveConfig>, u32)> {
    let published = crate::state::live::current()?;
    let index = match service_choice(r, &published) {
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
    let Some(published) = crate::state::live::current() else {
        return Ok(None);
    };
    let config = &published.config;
    let choice = service_choice(r, &published);
    let mut drawn = None;
    let mut draw = || {
        let number = crate::random::draw();
        drawn = Some(number);
        number
    };
    let (decision, minted) = {
        // A subrequest shares the main request's decision (the record lives in
        // the pool they share): it is made from the main request, whose query
        // an `auth_request` or SSI subrequest does not carry (`user_key: arg:`
        // and `arg:` rules would read nothing), and whose response hands out a
        // minted id.
        let subject: &mut ngx_http_request_t = if ptr::eq(r, r.main) {
            &mut *r
        } else {
            // SAFETY: a subrequest's main request is live while it runs, and is
            // another request than `r`, which is not used while this lives.
            unsafe { &mut *r.main }
        };
        let header_out = response_begun(subject);
        // SAFETY: `subject` is a live request for the duration of this block.
        let view = unsafe {
            if header_out {
                NgxRequestView::new(subject)
            } else {
                NgxRequestView::minting(subject)
            }
        };
        let decision = decide_with(config, choice, &view, &mut draw, &*published);
        // Once the response header is out no cookie can follow: a decision made
        // then (an access_log format) mints nothing.
        let mints = config.any_sticky && !header_out;
        (decision, mints.then(|| minted_for(config, choice, &view, &decision)).flatten())
    };
    if let (Some(transition), Some(index)) = (decision.transition, decision.service) {
        log_transition(r, &published, index, transition);
    }
    // One allocation for the cleanup entry and the decision it drops
    // (ngx_pool_cleanup_add makes two: about 40 instructions a request more).
    // SAFETY: r->pool is the request pool; the entry is initialised whole below,
    // before it is linked into the pool's cleanups or anything reads it.
    unsafe {
        let entry = ngx_palloc(r.pool, core::mem::size_of::<DecisionCleanup>()) as *mut DecisionCleanup;
        if entry.is_null() {
            return Err(());
        }
        let data = ptr::addr_of_mut!((*entry).decision);
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
                minted,
                cookie_sent: Cell::new(false),
                drawn: Cell::new(drawn),
                tracked: Cell::new(crate::http::drain::UNTRACKED),
                drained: Cell::new(false),
                routed_from: Cell::new(NOT_ROUTED),
                counted_in_error_page: Cell::new(false),
            },
        );
        ptr::write(
            ptr::addr_of_mut!((*entry).cleanup),
            ngx_pool_cleanup_t {
                handler: Some(drop_request_decision),
                data: data as *mut c_void,
                next: (*r.pool).cleanup,
            },
        );
        (*r.pool).cleanup = ptr::addr_of_mut!((*entry).cleanup);
        let request = Request::from_ngx_http_request(r);
        request.set_module_ctx(data as *mut c_void, Module::module());
        Ok(Some(&*data))
    }
}

/// The id `sticky` hands the request: the one minted when its decision asked
/// (it read the user id and found none), or, when a step before the split
/// decided without reading it, one minted now if the request carries none (the
/// client gets its id whatever decided).
fn minted_for(
    config: &CompiledConfig,
    choice: ServiceChoice<'_>,
    view: &NgxRequestView<'_>,
    decision: &Decision,
) -> Option<StickyId> {
    let minted = match view.minted() {
        Some(id) => Some(id),
        // The split or a user list read an id the request carried; a weight
        // decision of a sticky service means the kernel gave no random bytes.
        None if matches!(decision.rule, Rule::UserHash | Rule::UserList | Rule::Weight) => None,
        None => cookie_to_mint(config, choice, view).and_then(|_| crate::random::sticky_id()),
    };
    if minted.is_some() {
        crate::http::sticky::MINTED_ANY.store(true, Ordering::Relaxed);
    }
    minted
}

/// Whether the request's location has `migration on`.
pub(crate) fn migration_on(r: &ngx_http_request_t) -> bool {
    Module::location_conf(r).is_some_and(|loc| loc.enabled == Some(true))
}

/// Whether the request's response header went past the sticky filter (and is
/// being written) or out: too late for a cookie, and for a decision to route.
fn response_begun(r: &ngx_http_request_t) -> bool {
    r.header_sent() != 0 || crate::http::sticky::past_filter(r)
}

/// The request's decision, as [`routed_decision`], made by a phase handler of
/// ours that runs after every access check: not an early decision
/// ([`IN_ACCESS`]).
pub(crate) fn decided_after_access(r: &mut ngx_http_request_t) -> Result<Option<&RequestDecision>, ()> {
    IN_ACCESS.store(true, Ordering::Relaxed);
    let decided = routed_decision(r);
    IN_ACCESS.store(false, Ordering::Relaxed);
    decided
}

/// The request's decision, as [`decision_for`], counted in the status if this
/// location has `migration on`, it was not counted yet and the request's
/// response has not begun (its header filters, its log phase: see [`LOGGING`]).
pub fn routed_decision(r: &mut ngx_http_request_t) -> Result<Option<&RequestDecision>, ()> {
    // A decision first used once the response is under way (an `add_header`
    // of a request nginx refused, its access log) steered nothing.
    let routing =
        migration_on(r) && LOGGING.load(Ordering::Relaxed) != ptr::addr_of!(*r) as usize && !response_begun(r);
    let Some(d) = decision_for(r)?.map(|d| d as *const RequestDecision) else {
        return Ok(None);
    };
    // SAFETY: the decision lives in the request pool, which outlives `r`'s borrow.
    let d = unsafe { &*d };
    if routing && !cfg!(feature = "uncounted") {
        if !d.counted.replace(true) {
            d.count();
            d.counted_in_error_page.set(r.error_page() != 0);
        }
        // Listed by the main request, in its own routed location, even when a
        // subrequest used the decision first (an `auth_request` to a location
        // with `migration on`): that one counted it, and is not what streams.
        if d.published.config.any_drain && d.tracked.get() == crate::http::drain::UNTRACKED {
            crate::http::drain::track(r, d);
        }
    }
    Ok(Some(d))
}

/// Every breaker transition is logged at `warn`, once, by the process that made it.
pub(crate) fn log_transition(r: &ngx_http_request_t, published: &LiveConfig, index: u32, transition: Transition) {
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
