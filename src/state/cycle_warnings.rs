//! Warnings that need the whole configuration read, so they run when the zone is
//! initialised (after nginx has settled the worker `user`), before publication:
//! on `nginx -t` (printed on the terminal), at start and on every reload.
//!
//! * `watch=` re-reads the file in the workers, as the worker user: when that user
//!   cannot open it (a 0700 directory, a root-only file), the first change would
//!   be refused and watching would stay off. Said at once, not at the first edit.
//! * A reload that keeps the zone must fit the previous configuration and the new
//!   one into it at once; `nginx -t` cannot see the running zone, but it can say
//!   when this configuration alone leaves little room, before a reload is refused
//!   (which only the error log would tell: `nginx -s reload` only sends a signal).

use core::ffi::{c_void, CStr};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};
use std::ffi::CString;

use ngx::ffi::{ngx_core_conf_t, ngx_core_module, ngx_cycle, ngx_cycle_t, ngx_int_t, ngx_shm_zone_t, NGX_LOG_WARN};
use ngx::ngx_log_error;

use crate::conf::MainConf;

/// The cycle whose configuration is being read (set by `migration_config`), whose
/// core configuration (`user`) is complete once its zones are initialised.
static CYCLE: AtomicPtr<ngx_cycle_t> = AtomicPtr::new(ptr::null_mut());

pub fn note_cycle(cycle: *mut ngx_cycle_t) {
    CYCLE.store(cycle, Ordering::Relaxed);
}

/// The cycle's `worker_processes` (`auto` already resolved), for the zone's
/// init; 1 when unknown.
pub fn worker_processes() -> usize {
    let cycle = CYCLE.load(Ordering::Relaxed);
    if cycle.is_null() {
        return 1;
    }
    // SAFETY: as in `warn`: the cycle being initialised, whose core configuration
    // was completed by the core module's init_conf before any zone is initialised.
    let ccf = unsafe { &*(*(*cycle).conf_ctx.add(ngx_core_module.index) as *const ngx_core_conf_t) };
    usize::try_from(ccf.worker_processes).unwrap_or(1).max(1)
}

/// The zone's `init`: warns, then hands over to publication.
pub unsafe extern "C" fn init_zone(shm_zone: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls init with this cycle's zone entry, whose data is this
    // cycle's main configuration (set by migration_config).
    unsafe { warn(&*shm_zone, &*((*shm_zone).data as *const MainConf)) };
    // SAFETY: the same call, passed on unchanged.
    unsafe { crate::state::cycle::init_zone(shm_zone, data) }
}

fn warn(shm_zone: &ngx_shm_zone_t, main: &MainConf) {
    // The log nginx used while reading this configuration (the running cycle's, or
    // at start and for `nginx -t` the terminal and the default error log): this
    // cycle's own error_log is already in place but keeps only its configured level,
    // `error` by default, which would swallow a warning.
    // SAFETY: ngx_cycle is the cycle nginx runs (or the initial one); its log outlives this call.
    let log = unsafe { (*ngx_cycle).log };
    if let Some(config) = &main.config {
        let names = crate::state::live::service_names(config);
        let needed = crate::state::zone::required_zone_size(main.source.len(), main.text.len(), &names, 1);
        // Over three quarters: a running configuration of about the same size may
        // no longer fit beside this one during a reload.
        if needed > shm_zone.shm.size / 4 * 3 {
            let name = String::from_utf8_lossy(shm_zone.shm.name.as_bytes()).into_owned();
            ngx_log_error!(
                NGX_LOG_WARN,
                log,
                "migration: zone \"{}\" ({}) is {}% taken by {} alone; a reload that keeps the zone also needs room for \
                 the running configuration beside it, and is refused when both do not fit (only the error log says so \
                 after nginx -s reload): consider zone={}:{}",
                name,
                crate::state::zone::human_size(shm_zone.shm.size),
                needed * 100 / shm_zone.shm.size,
                main.source,
                name,
                crate::state::zone::human_size(needed * 2)
            );
        }
    }
    if main.watch_ms.is_none() {
        return;
    }
    let cycle = CYCLE.load(Ordering::Relaxed);
    if cycle.is_null() {
        return;
    }
    // SAFETY: cycle is the cycle being initialised; its core configuration was
    // completed by the core module's init_conf before any zone is initialised.
    let ccf = unsafe { &*(*(*cycle).conf_ctx.add(ngx_core_module.index) as *const ngx_core_conf_t) };
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    // Workers switch user only when the master runs as root (nginx's own rule).
    if euid != 0 || ccf.user == u32::MAX || ccf.user == euid || ccf.username.is_null() {
        return;
    }
    let Ok(path) = CString::new(main.source.as_bytes()) else {
        return;
    };
    // SAFETY: username is the NUL-terminated name set by `user` (or nginx's default).
    let username = unsafe { CStr::from_ptr(ccf.username) };
    if let Some(errno) = unreadable_as(&path, ccf.user, ccf.group, username) {
        ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "migration: watch= cannot work: the worker processes run as \"{}\" and cannot read {}: {}; they read \
             the file on every change, so make it and its directories readable by that user, or run the workers as \
             a user that can read it",
            username.to_string_lossy(),
            main.source,
            std::io::Error::from_raw_os_error(errno)
        );
    }
}

/// The groups of `username` (with `gid`), as initgroups would set them.
fn groups_of(username: &CStr, gid: libc::gid_t) -> Option<Vec<libc::gid_t>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: a NUL-terminated name, a buffer of `n` gid_t, and `n` in and out.
        let rc = unsafe { libc::getgrouplist(username.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            return Some(groups);
        }
        if n as usize <= groups.len() || groups.len() >= 65_536 {
            return None;
        }
        groups.resize(n as usize, 0);
    }
}

/// Opens `path` as the worker user would (uid, gid and that user's groups, as
/// nginx's worker sets them) in a child process; the errno when it cannot.
fn unreadable_as(path: &CStr, uid: libc::uid_t, gid: libc::gid_t, username: &CStr) -> Option<i32> {
    // The user's groups are looked up here, before the fork: the process may have
    // other threads (with `master_process off` the one process is master and
    // worker, and its compile thread may run), so the child must not take
    // any lock another thread could hold (initgroups reads /etc/group with
    // malloc); it only makes system calls.
    let groups = groups_of(username, gid)?;
    // SAFETY: the child only switches its ids, opens the file without blocking (a
    // FIFO must not hang it) and exits: system calls only, no allocation, no lock.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return None;
    }
    if pid == 0 {
        // SAFETY: in the child, plain system calls on a valid NUL-terminated path
        // and the parent's group list.
        unsafe {
            if libc::setgid(gid) != 0 || libc::setgroups(groups.len(), groups.as_ptr()) != 0 || libc::setuid(uid) != 0 {
                libc::_exit(255);
            }
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC);
            libc::_exit(if fd < 0 { *libc::__errno_location() } else { 0 });
        }
    }
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid out pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) | Some(255) | None => None,
        Some(errno) => Some(errno),
    }
}
