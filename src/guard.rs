//! No panic crosses into nginx. A panic that unwinds out of an `extern "C"`
//! function aborts the process: in the master, the whole nginx. Every entry
//! point nginx calls runs its body through one of these guards, which turns a
//! panic into what nginx expects from that kind of entry point:
//!
//! * configuration (directives, create/merge, the zone's init, init_module): a
//!   refused configuration, `[emerg]` with the panic's message;
//! * a worker's start and exit: `[alert]`, and the worker goes on;
//! * a timer (`watch=`): `[error]`, the publication refused, the last good
//!   configuration kept;
//! * a request (access phase, status): a 500 for that request and an `[alert]`
//!   line; a variable: not found (empty) for that request and an `[alert]` (a
//!   getter cannot fail a request: nginx's scripts take a failed variable as
//!   empty, and `proxy_pass` to an empty backend answers 500 by itself).
//!
//! The panic hook records where the panic happened; nothing is printed raw.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ngx::core::NGX_CONF_ERROR;
use ngx::ffi::{
    ngx_conf_t, ngx_cycle, ngx_http_request_t, ngx_int_t, ngx_log_t, NGX_ERROR, NGX_HTTP_INTERNAL_SERVER_ERROR,
    NGX_LOG_ALERT, NGX_LOG_EMERG, NGX_LOG_ERR, NGX_OK,
};
use ngx::{ngx_conf_log_error, ngx_log_error};

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the panic hook (once, in the master, before any worker is forked).
pub fn install_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let text = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            let at = info.location().map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("a panic{at}: {text}")));
        }));
    });
}

/// What the last panic of this thread said.
fn last_panic() -> String {
    LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "a panic".into())
}

/// Runs `f` for entry point `place`; a panic (or the test hook `panic=place`)
/// gives `on_panic(message)` instead.
fn run<R>(place: &str, f: impl FnOnce() -> R, on_panic: impl FnOnce(String) -> R) -> R {
    match catch_unwind(AssertUnwindSafe(|| {
        crate::test_hooks::panic_in(place);
        f()
    })) {
        Ok(result) => result,
        Err(_) => on_panic(format!("migration: internal error in {place} ({})", last_panic())),
    }
}

/// A directive, or a merge of configurations: the configuration is refused.
pub fn conf(cf: *mut ngx_conf_t, place: &str, f: impl FnOnce() -> *mut c_char) -> *mut c_char {
    run(place, f, |message| {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", message);
        NGX_CONF_ERROR
    })
}

/// A configuration's creation: null, which nginx reports as a failed configuration.
pub fn create(cf: *mut ngx_conf_t, place: &str, f: impl FnOnce() -> *mut c_void) -> *mut c_void {
    run(place, f, |message| {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", message);
        ptr::null_mut()
    })
}

/// Configuration-time hooks with a log (the zone's init, init_module,
/// pre/postconfiguration): NGX_ERROR, the cycle is refused.
pub fn init(log: *mut ngx_log_t, place: &str, f: impl FnOnce() -> ngx_int_t) -> ngx_int_t {
    run(place, f, |message| {
        ngx_log_error!(NGX_LOG_EMERG, log, "{}", message);
        NGX_ERROR as ngx_int_t
    })
}

/// A worker's start or exit: logged, and the worker goes on (with the
/// configuration it had, or none: requests then get rule `none`).
pub fn process(log: *mut ngx_log_t, place: &str, f: impl FnOnce() -> ngx_int_t) -> ngx_int_t {
    run(place, f, |message| {
        ngx_log_error!(NGX_LOG_ALERT, log, "{}", message);
        NGX_OK as ngx_int_t
    })
}

/// A timer: the step is dropped (a publication it was making is refused, the
/// last good configuration stays); the caller re-arms the timer.
pub fn timer(log: *mut ngx_log_t, place: &str, f: impl FnOnce()) {
    run(place, f, |message| {
        ngx_log_error!(NGX_LOG_ERR, log, "{}; the change is not published, the last good configuration stays", message);
    })
}

/// A request's handler: that request gets a 500.
pub fn request(r: *mut ngx_http_request_t, place: &str, f: impl FnOnce() -> ngx_int_t) -> ngx_int_t {
    run(place, f, |message| {
        // SAFETY: nginx called us with a live request; its connection's log is live.
        let log = unsafe { (*(*r).connection).log };
        ngx_log_error!(NGX_LOG_ALERT, log, "{}; this request fails", message);
        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t
    })
}

/// A variable's getter: NGX_ERROR, which nginx takes as "not found".
pub fn variable(r: *mut ngx_http_request_t, place: &str, f: impl FnOnce() -> ngx_int_t) -> ngx_int_t {
    let rc = request(r, place, f);
    if rc == NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t {
        return NGX_ERROR as ngx_int_t;
    }
    rc
}

/// Anything else nginx calls back (a pool cleanup): logged on the cycle's log.
pub fn quiet(place: &str, f: impl FnOnce()) {
    run(place, f, |message| {
        // SAFETY: ngx_cycle is the running cycle; its log lives as long as it.
        let log = unsafe { (*ngx_cycle).log };
        ngx_log_error!(NGX_LOG_ALERT, log, "{}", message);
    })
}
