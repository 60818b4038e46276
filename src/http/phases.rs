//! The module's phase handlers: the access phase decides (and counts) the
//! requests of locations with `migration on`; the log phase feeds each routed
//! request's outcome to its service's breaker, responses and ramp window.
//! Registered by `http::postconfiguration`.

use core::ptr;
use core::slice;
use core::sync::atomic::{AtomicBool, Ordering};

use migration_engine::responses::{
    class_of, grpc_http_status, grpc_timeout_us, is_event_stream, is_grpc, ABORTED, FAILED,
};
use migration_engine::{Outcome, Rule, Target};
use ngx::core::Status;
use ngx::ffi::{
    ngx_connection_t, ngx_event_t, ngx_http_request_t, ngx_http_upstream_state_t, ngx_http_upstream_t, ngx_int_t,
    ngx_msec_t, NGX_LOG_WARN,
};
use ngx::http::{HttpModule, Request};
use ngx::ngx_log_error;

use crate::conf::Module;
use crate::http::decision::{
    decided_after_access, existing, log_transition, migration_on, RequestDecision, LOGGING, NOT_ROUTED,
};
use crate::http::request::{list_value, list_values};
use crate::state::live::LiveConfig;

pub(super) unsafe extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
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
    if migration_on(r) && decided_after_access(r).is_err() {
        return Status::NGX_ERROR.into();
    }
    Status::NGX_DECLINED.into()
}

/// The precontent phase: a request counted as routed got past every check
/// before its content (limit_req, deny, auth_request), and its routed upstream,
/// if any, is the first to start from here on (`RequestDecision::routed_from`).
/// A request that an `error_page` sent here after a refusal of the location it
/// was counted in (limit_req's 503 caught by the retry recipe's `error_page 503
/// = @old`) is not routed here: what @old answers is not the decided side's
/// doing. In a location with `migration on` the decision is made here if no
/// access handler of ours ran (`satisfy any` skips the rest of the access phase
/// once one check passes).
pub(super) unsafe extern "C" fn precontent_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    crate::guard::request(r, "the precontent phase", || unsafe { precontent_handler_body(r) })
}

unsafe fn precontent_handler_body(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    let r = unsafe { &mut *r };
    if !ptr::eq(r, r.main) {
        return Status::NGX_DECLINED.into();
    }
    // Where the next upstream's attempts will begin: nginx starts the first
    // upstream of a request with an empty array, and each later one with a
    // separator state of its own.
    let from = {
        // SAFETY: r->upstream_states is null or an ngx_array_t owned by the request pool.
        unsafe { r.upstream_states.as_ref() }.map_or(0, |array| array.nelts as u32 + 1)
    };
    let d = if migration_on(r) {
        match decided_after_access(r) {
            Ok(d) => d.map(|d| d as *const RequestDecision),
            Err(()) => return Status::NGX_ERROR.into(),
        }
    } else {
        // Counted in a location with `migration on` that passed the request on
        // (try_files to a named location, say): it is routed here.
        existing(r).map(|d| d as *const RequestDecision)
    };
    // SAFETY: the decision lives in the request pool, as long as the request.
    let Some(d) = d.map(|d| unsafe { &*d }) else {
        return Status::NGX_DECLINED.into();
    };
    // Sent here by an error_page that caught a refusal of the location it was
    // counted in (limit_req's 503): not routed here. Counted here, after the
    // error_page (`error_page 404 = @app`), it is.
    let refused_before = r.error_page() != 0 && !d.counted_in_error_page.get();
    if d.counted.get() && d.routed_from.get() == NOT_ROUTED && !refused_before {
        d.routed_from.set(from);
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
    let client =
        String::from_utf8_lossy(crate::http::request::bytes(unsafe { &(*r.connection).addr_text })).into_owned();
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

/// The first handler of the log phase: from here on, a decision first used for
/// the request is not counted as routed (see `http::decision::LOGGING`).
pub(super) unsafe extern "C" fn log_phase_begins(r: *mut ngx_http_request_t) -> ngx_int_t {
    LOGGING.store(r as usize, Ordering::Relaxed);
    Status::NGX_OK.into()
}

/// Log phase: how a request routed to new ended, for its service's fallback
/// breaker (docs/fallback.md). Every request passes here, aborted ones included,
/// so a trial always hands its permit back.
// The `counted` flag doubles as "routed": it is set exactly when the decision was
// used in a location with `migration on`.
pub(super) unsafe extern "C" fn log_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // The last handler of the phase (see `log_phase_begins`).
    LOGGING.store(0, Ordering::Relaxed);
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
    d.with_live_slot(|live, live_index| record_outcome(r, d, index, target, live, live_index));
    Status::NGX_OK.into()
}

/// What the log phase tells the zone of a routed request: its response (per
/// target, and to a ramp's gate) and, for new, the fallback breaker.
fn record_outcome(
    r: &ngx_http_request_t,
    d: &RequestDecision,
    index: u32,
    target: Target,
    live: &LiveConfig,
    live_index: usize,
) {
    let slot = &live.slots[live_index];
    let published = &d.published;
    let mut first = first_upstream(r, d.routed_from.get());
    let mut ending = Ending::Whole;
    // The status nginx wrote over new's answer when it gave up sending the
    // client's body, first. A gRPC error is an HTTP 200 whose `grpc-status`
    // says the error: the routed upstream's status is the one that code
    // stands for, when the client got its answer (after an error_page retry,
    // another upstream's trailers are all that is left).
    if let FirstUpstream::Attempt { last, later: false, waited_ms } = &mut first {
        if body_refused_after_answer(r, last) {
            ending = Ending::BodyRefusedAfterAnswer;
        } else if last.status == 200 {
            match grpc_answer(r, *waited_ms) {
                Some(GrpcAnswer::Status(status)) => last.status = status.into(),
                Some(GrpcAnswer::ClientsDeadline) => ending = Ending::ClientsDeadline,
                None => {}
            }
        }
    }
    // Responses per target: every routed request (the same rule as the counters);
    // a ramp's gate judges only what the percentage split decided.
    // A long-lived request that drain closed (http::drain) was ended by the
    // module, not by either cluster: aborted, without a latency sample (its
    // upstream time is its whole life) and no word to the breaker or the gate.
    let drained = d.drained.get();
    // A long-lived request: upgraded, an event stream, or one `drain` found
    // open past its `after`. The response the client got tells only when it is
    // the first upstream's: after an error_page retry it is another upstream's.
    let final_is_first = !matches!(first, FirstUpstream::Attempt { later: true, .. });
    let long_lived = || {
        (final_is_first
            && (r.headers_out.status == 101
                || is_event_stream(crate::http::request::bytes(&r.headers_out.content_type))))
            || crate::http::drain::is_long_lived(d)
    };
    // A stream's end says nothing of its cluster: an idle one outlives
    // `proxy_read_timeout` by design.
    if let FirstUpstream::Attempt { last, later: false, waited_ms } = &first {
        if ending == Ending::Whole && !drained && !no_response(last) && response_broke_off(r, last) && !long_lived() {
            // A gRPC server (or a proxy before it) resets a call's stream when
            // the call's deadline passes: a deadline the client chose, read
            // from the request whatever the response's type (gRPC-Web's too).
            ending =
                if clients_deadline_may_explain(r, *waited_ms) { Ending::ClientsDeadline } else { Ending::BrokeOff };
        }
    }
    if d.counted.get() {
        let (class, mut upstream_us) = if drained { (ABORTED, None) } else { response_of(r, &first, ending) };
        // A long-lived request's upstream time is its whole life (a WebSocket's
        // hours would fill `+Inf`, and fail a gate's p99 with nobody to blame):
        // it counts in its class, without a latency sample (the sample of an
        // error_page retry's first upstream stays).
        if upstream_us.is_some() && long_lived() {
            upstream_us = None;
        }
        slot.record_response(target, class, upstream_us);
        // Header, CIDR and user-list traffic is the client's or the operator's
        // choice, never the ramp's evidence. Nor is a response nginx made
        // without asking the cluster (`return`, limit_req's 503, a cache hit):
        // a client flooding into limit_req would fail a healthy step with 503s
        // of its own making, or pad a failing one with answers new never gave.
        // The stamp confines it to the window of the step it was decided under.
        let asked_upstream = !matches!(first, FirstUpstream::None);
        if let (false, true, true, Some(stamp)) = (drained, asked_upstream, d.decision.rule.is_split(), d.decision.ramp)
        {
            slot.ramp.record(stamp, target, class, upstream_us);
        }
    }
    let (Target::New, Some(policy)) = (target, published.config.services[index as usize].fallback.as_ref()) else {
        return;
    };
    // Only a request the migration itself sent to new (decision steps 5 to 7, in
    // a location with `migration on`) speaks for the new cluster. A header rule
    // is the client's choice: anyone can send `X-Migration-Target: new` to a
    // failing path, and it must not send every migrated user back to old. A
    // decision that only fed a log format hands back a trial permit it may hold.
    let by_migration = d.counted.get() && d.decision.rule != Rule::Header && !drained;
    let outcome = if by_migration {
        upstream_outcome(r, &first, ending, |status| policy.is_failure(status))
    } else {
        Outcome::Inconclusive
    };
    let now = migration_engine::Breakers::now_ms(&**published);
    if let Some(transition) = slot.breaker.record(outcome, d.decision.trial, policy.failures, now) {
        log_transition(r, published, index, transition);
    }
}

/// How the request's first upstream (the one its location proxied to) ended. A
/// later upstream, after an internal redirect (the `error_page` retry on old of
/// the recipe of docs/fallback.md), is not its doing: nginx starts it with an empty state,
/// which ends the first group.
enum FirstUpstream {
    /// The request had no upstream (e.g. `return`).
    None,
    /// It pushed no state: it failed before any connection (nginx finalizes "no
    /// resolver defined" and "could not be resolved" with 502 first); `later`
    /// when an error_page took over from it.
    NoState { later: bool },
    /// Its last attempt; `later` when another upstream followed it (an
    /// error_page took over), so that the response the client got is not its;
    /// `waited_ms`, the response times of all its attempts added up.
    Attempt { last: ngx_http_upstream_state_t, later: bool, waited_ms: u64 },
}

/// The first upstream group from state `from` on ([`NOT_ROUTED`]: none).
fn first_upstream(r: &ngx_http_request_t, from: u32) -> FirstUpstream {
    if from == NOT_ROUTED {
        return FirstUpstream::None;
    }
    // SAFETY: r->upstream_states is null or an ngx_array_t owned by the request pool.
    let states: &[ngx_http_upstream_state_t] = match unsafe { r.upstream_states.as_ref() } {
        // SAFETY: its `nelts` elements are ngx_http_upstream_state_t, live with the request.
        Some(array) if array.nelts > 0 => unsafe { slice::from_raw_parts(array.elts as *const _, array.nelts) },
        // An upstream started (nginx creates the array then) but never connected.
        Some(_) => &[],
        None => return FirstUpstream::None,
    };
    // A mark after an earlier upstream: nothing started since, or the routed
    // upstream's attempts (none: it failed before connecting).
    let Some(states) = states.get(from as usize..) else {
        return FirstUpstream::None;
    };
    let first_group = states.iter().position(|s| s.peer.is_null()).unwrap_or(states.len());
    let group = &states[..first_group];
    match group.last() {
        Some(last) => FirstUpstream::Attempt {
            last: *last,
            later: first_group < states.len(),
            // nginx times each attempt from its own start: with
            // `proxy_next_upstream` a client that waited out one server's
            // timeout and was then answered by the next waited for both.
            waited_ms: group
                .iter()
                .filter(|s| s.response_time != ngx_msec_t::MAX)
                .map(|s| s.response_time as u64)
                .sum(),
        },
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
fn upstream_outcome(
    r: &ngx_http_request_t,
    first: &FirstUpstream,
    ending: Ending,
    is_failure: impl Fn(u16) -> bool,
) -> Outcome {
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
        FirstUpstream::Attempt { .. } if ending.clients_doing() => Outcome::Inconclusive,
        FirstUpstream::Attempt { last, .. } => {
            let status = u16::try_from(last.status).unwrap_or(0);
            // Without a response the status is nginx's own (502 when new closed
            // the connection): the client's body decides first.
            let for_the_body = no_response(last) && refused_client_body(r, last);
            if status != 0 && is_failure(status) && !for_the_body {
                return Outcome::Failure(status);
            }
            if client_left || for_the_body {
                return Outcome::Inconclusive;
            }
            if no_response(last) {
                return Outcome::Failure(if status == 0 { 502 } else { status });
            }
            // nginx ends a response that broke off with 502 (504 when new
            // stalled and proxy_buffering is off), after its header went out.
            if ending == Ending::BrokeOff {
                return Outcome::Failure(502);
            }
            Outcome::Success
        }
    }
}

/// Whether the request ended for its body: nginx refused it (malformed: 400,
/// too slow: 408, too large: 413), or it was still coming when the upstream
/// gave up (`reading_body`: new's own body timeout or size limit closed the
/// connection, and nginx answered 502). With `proxy_request_buffering off`
/// (and always for `grpc_pass`) the body is read while it is sent, after the
/// upstream was connected: its attempt then has no response either, but the
/// client caused it, and it must not count as the upstream's failure (anyone
/// could trip the breaker or fail a gate with slow or bad bodies). A cluster
/// that fails in the middle of an upload once connected is not told apart
/// from that; one that refused the connection is.
fn refused_client_body(r: &ngx_http_request_t, attempt: &ngx_http_upstream_state_t) -> bool {
    matches!(r.headers_out.status, 400 | 408 | 413)
        || (r.reading_body() != 0 && attempt.connect_time != ngx_msec_t::MAX)
}

/// Whether the response of the request's last upstream began (its header went
/// to the client) and then broke off: the upstream stalled past
/// `proxy_read_timeout` or closed its connection before the end of the body it
/// announced. nginx can only cut such a response short, and the client gets a
/// `200` with half a body; its status line alone would make it a success.
///
/// The reading is nginx's own, the test that makes it end the response with a
/// 502 rather than complete it, narrowed to what cannot be a stream. A body of
/// declared length (`Content-Length`) is a document: through the event pipe
/// (`proxy_buffering on`), not done and a read error or timeout, or an early
/// end; unbuffered, not all read. A body without one (chunked, gRPC, or ended
/// by closing the connection) may be a stream (NDJSON, a watch, a gRPC server
/// stream) that idles past the read timeout by design: only its early close is
/// read, where nginx tells it apart from a timeout: through the pipe, a
/// chunked body's last chunk missing; and where nginx leaves a close (or a
/// reset) and a timeout the same trace (a body not all read unbuffered, as
/// gRPC's always is; a read error through the pipe), an end sooner than
/// `proxy_read_timeout` after the attempt began, which no read timeout can
/// have made (`ended_early`). A response the client stopped reading
/// (it left, or `send_timeout`) did not break off. Nor did one without a body
/// to send (HEAD, a 304), which nginx ends before reading any (the pipe's
/// flags stay clear, and an unbuffered body's length unknown).
fn response_broke_off(r: &ngx_http_request_t, attempt: &ngx_http_upstream_state_t) -> bool {
    // SAFETY: r->upstream is null or the request's last upstream, allocated in
    // its pool; the log phase runs before the pool is destroyed.
    let Some(u) = (unsafe { r.upstream.as_ref() }) else {
        return false;
    };
    if u.header_sent() == 0 {
        return false;
    }
    let declared_length = u.headers_in.content_length_n >= 0;
    let broke = if u.buffering() == 0 {
        u.length > 0 && (declared_length || ended_early(u, attempt))
    } else {
        // SAFETY: u->pipe is null or the event pipe of the upstream, in the pool.
        let Some(pipe) = (unsafe { u.pipe.as_ref() }) else {
            return false;
        };
        pipe.downstream_error() == 0
            && pipe.upstream_done() == 0
            && ((pipe.upstream_error() != 0 && (declared_length || ended_early(u, attempt)))
                || (pipe.upstream_eof() != 0 && pipe.length != -1))
    };
    // The client's side last, read only for a response that broke (every
    // proxied request passes here). A body still coming when the response
    // ended: nginx refused it (413, a bad chunk) after new's header went out,
    // and cut new's response short.
    // SAFETY: the connection outlives its requests.
    broke && !client_gone(unsafe { &*r.connection }) && r.reading_body() == 0
}

/// Whether the client went away or stopped reading: nginx marks its
/// connection (`error`; `timedout` for `send_timeout`), or, for an HTTP/3
/// stream, whose connection it marks only in a cleanup after the log phase,
/// the stream's events (`error`) or `close` (the QUIC connection closed, and
/// `worker_shutdown_timeout`, which is no cluster's doing either).
fn client_gone(c: &ngx_connection_t) -> bool {
    // SAFETY: a request's connection has its two events for its whole life.
    let event_error = |e: *mut ngx_event_t| unsafe { e.as_ref() }.is_some_and(|e| e.error() != 0);
    c.error() != 0 || c.timedout() != 0 || c.close() != 0 || event_error(c.read) || event_error(c.write)
}

/// Whether nginx gave up sending the client's body to new after new's answer
/// went out: when new takes none of it for the send timeout, nginx writes 504
/// over new's status (`ngx_http_upstream_next`, the only writer of a status
/// after the header) and cuts the response. `grpc_pass` goes on sending a
/// streaming call's messages after the header (its flow-control window shut);
/// another proxy's send timer, armed while the body waited, can fire after an
/// early answer too. A client sends what it likes: one that streams more than
/// a server reads (a subscription whose server reads the first message only)
/// could open the breaker or fail a ramp step with 504s new never sent. A new
/// that answered and then hung with the call open leaves the same trace, and
/// is not told apart (as a failure in the middle of an upload is not). nginx's
/// status differs from the one new answered (a 504 of new's own stays new's).
/// The cheap test first: every proxied request passes here.
fn body_refused_after_answer(r: &ngx_http_request_t, attempt: &ngx_http_upstream_state_t) -> bool {
    attempt.status == usize::from(GATEWAY_TIMEOUT)
        // SAFETY: r->upstream is null or the request's last upstream, allocated
        // in its pool; the log phase runs before the pool is destroyed.
        && unsafe { r.upstream.as_ref() }
            .is_some_and(|u| u.header_sent() != 0 && u.headers_in.status_n != usize::from(GATEWAY_TIMEOUT))
}

/// How long after it began a body without a declared length that ends early
/// is read as broken off, at most: a crash in the middle of a call or of a
/// short stream. A quiet stream may be closed by a timer on new's side
/// (ingress-nginx's 60 s `proxy-read-timeout`, a load balancer's idle timeout)
/// long before this nginx's own read timeout, raised for streams; such an end
/// is no crash.
const STREAM_BREAK_WINDOW_MS: ngx_msec_t = 10_000;

/// Whether the attempt ended sooner than its read timeout after it began
/// (a read timeout waits that long for data, so none can have ended it), and
/// within [`STREAM_BREAK_WINDOW_MS`].
fn ended_early(u: &ngx_http_upstream_t, attempt: &ngx_http_upstream_state_t) -> bool {
    // SAFETY: u->conf is the location's upstream configuration, set before
    // the upstream starts and alive as long as the configuration.
    let Some(conf) = (unsafe { u.conf.as_ref() }) else {
        return false;
    };
    attempt.response_time != ngx_msec_t::MAX && attempt.response_time < conf.read_timeout.min(STREAM_BREAK_WINDOW_MS)
}

/// How the routed upstream's answer ended, beyond its status.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    Whole,
    /// Its body broke off after its header went out (`response_broke_off`).
    BrokeOff,
    /// A gRPC call's DEADLINE_EXCEEDED, or its stream broken off, that the
    /// call's own deadline explains (or may): the client's doing, as a client
    /// that hangs up is (see `clients_deadline_may_explain`).
    ClientsDeadline,
    /// New answered, and then took none of the client's body until nginx gave
    /// up sending it (`body_refused_after_answer`): the client's stream.
    BodyRefusedAfterAnswer,
}

impl Ending {
    /// An end the client's request explains: no word of the cluster.
    fn clients_doing(self) -> bool {
        matches!(self, Ending::ClientsDeadline | Ending::BodyRefusedAfterAnswer)
    }
}

/// What a gRPC answer says of its upstream, beyond its HTTP 200.
enum GrpcAnswer {
    /// The HTTP status its `grpc-status` stands for.
    Status(u16),
    /// DEADLINE_EXCEEDED, not shown to be new's own.
    ClientsDeadline,
}

/// What the gRPC answer of the request's last upstream says: its
/// `grpc-status`, from the trailers (or, for an answer without a body, the
/// header), as the upstream sent them (`grpc_hide_header` aside). None when
/// the answer is not gRPC (`Content-Type`), or has no status.
/// DEADLINE_EXCEEDED is new's own 504 only when the call's deadline cannot
/// explain it (`clients_deadline_may_explain`).
fn grpc_answer(r: &ngx_http_request_t, waited_ms: u64) -> Option<GrpcAnswer> {
    if !is_grpc(crate::http::request::bytes(&r.headers_out.content_type)) {
        return None;
    }
    // SAFETY: r->upstream is null or the request's last upstream, allocated in
    // its pool, with its lists of response headers and trailers (zeroed, empty,
    // when never initialised).
    let u = unsafe { r.upstream.as_ref() }?;
    let headers = &u.headers_in;
    let value =
        list_value(&headers.trailers, b"grpc-status").or_else(|| list_value(&headers.headers, b"grpc-status"))?;
    let status = grpc_http_status(value);
    if status != GATEWAY_TIMEOUT {
        return Some(GrpcAnswer::Status(status));
    }
    Some(if clients_deadline_may_explain(r, waited_ms) {
        GrpcAnswer::ClientsDeadline
    } else {
        GrpcAnswer::Status(status)
    })
}

/// Whether the gRPC call's own deadline may explain how new ended it: unless
/// the call carried no deadline, or one `grpc-timeout` that new answered well
/// before, in less than half of it, less 10 ms (`waited_ms` after nginx asked
/// new; a server may shorten a deadline by a margin, and nginx's clock has its
/// resolution). Read as new's doing, any client could open the breaker or fail
/// a ramp step with `grpc-timeout: 1n`. A deadline the module cannot read the
/// way new does (two headers, a sign, junk) may explain it too.
fn clients_deadline_may_explain(r: &ngx_http_request_t, waited_ms: u64) -> bool {
    let mut deadlines = list_values(&r.headers_in.headers, b"grpc-timeout");
    match (deadlines.next(), deadlines.next()) {
        (None, _) => false,
        (Some(deadline), None) => {
            grpc_timeout_us(deadline).is_none_or(|deadline_us| deadline_us <= 2 * (waited_ms * 1000 + 10_000))
        }
        (Some(_), Some(_)) => true,
    }
}

const GATEWAY_TIMEOUT: u16 = 504;

/// nginx's status for a request the client closed before it was answered.
const CLIENT_CLOSED_REQUEST: usize = 499;

/// The response's class for the status (docs/status.md, "Responses per target"):
/// `aborted` when the client left before the upstream answered (nginx's 499: no
/// error of the cluster, no latency sample — a client that hangs up on purpose
/// must not move a gate), `failed` when no upstream response came (the
/// breaker's own test), else the class of the status the client got; and the
/// upstream's response time, when it had one.
fn response_of(r: &ngx_http_request_t, first: &FirstUpstream, ending: Ending) -> (usize, Option<u64>) {
    let client_class = || class_of(u16::try_from(r.headers_out.status).unwrap_or(0)).unwrap_or(FAILED);
    // SAFETY: the connection outlives its requests.
    let client_left = unsafe { (*r.connection).error() } != 0 || r.headers_out.status == CLIENT_CLOSED_REQUEST;
    match first {
        FirstUpstream::None if r.headers_out.status == CLIENT_CLOSED_REQUEST => (ABORTED, None),
        FirstUpstream::None => (client_class(), None),
        FirstUpstream::NoState { .. } if client_left => (ABORTED, None),
        FirstUpstream::NoState { .. } => (FAILED, None),
        FirstUpstream::Attempt { last, .. } if no_response(last) && (client_left || refused_client_body(r, last)) => {
            (ABORTED, None)
        }
        FirstUpstream::Attempt { .. } if ending.clients_doing() => (ABORTED, None),
        FirstUpstream::Attempt { last, waited_ms, .. } => {
            let time = (last.response_time != ngx_msec_t::MAX).then(|| waited_ms * 1000);
            // The upstream's own status, not the one the client got: with
            // `proxy_intercept_errors` and an `error_page` (the retry on old of
            // docs/fallback.md, or a static error page), new's 502 is answered
            // with another response, and counted as that one new looked
            // healthy to the status and to a ramp's gate while it failed.
            let class = u16::try_from(last.status).ok().and_then(class_of);
            (
                if no_response(last) || ending == Ending::BrokeOff {
                    FAILED
                } else {
                    class.unwrap_or_else(client_class)
                },
                time,
            )
        }
    }
}
