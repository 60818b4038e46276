//! The module's part in nginx's cycle: a reload *prepares* the new configuration
//! in the zone's `init` (where a shortage can still fail the reload cleanly) and
//! *commits* it in `init_module`, once the new cycle can no longer fail; each
//! worker starts on what its cycle committed (`init_process`) and gives its
//! entry in the zone's process table back when it exits.

use core::any::Any;
use core::ffi::c_void;
use core::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ngx::core::Status;
use ngx::ffi::{
    ngx_add_timer, ngx_cycle_t, ngx_event_t, ngx_int_t, ngx_log_t, ngx_pcalloc, ngx_process, ngx_shm_zone_t,
    ngx_test_config, ngx_uint_t, NGX_LOG_ALERT, NGX_LOG_EMERG, NGX_LOG_NOTICE, NGX_LOG_WARN, NGX_PROCESS_HELPER,
    NGX_PROCESS_SIGNALLER,
};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_log_error;

use crate::conf::{MainConf, Module};
use crate::state::live::{adopt, catch_up_now, current, service_names, unix_now, LiveConfig, PROCESS_ENTRY};
use crate::state::ramp_timer::{ramp_tick, RAMP_TICK_MS};
use crate::state::watch::watch_tick;
use crate::state::zone::{human_size, required_zone_size, use_cell, Record, SlotRef, Zone, MAX_CELLS};

/// Keeps a copy of the configuration just published at `path` (`migration_config
/// ... last_good=PATH`): written beside it and renamed over it, so a reader never
/// sees half a file. A failure is logged at `warn`: the publication stands.
pub fn save_last_good(path: &str, version: &str, text: &str, log: *mut ngx_log_t) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // The directory is writable by nginx's `user` (workers save too), and the
    // master saves as root: the temporary file is created new, never opened
    // through a name someone planted (a symlink to /etc/passwd), and its name is
    // not guessable from a pid alone.
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let temporary = format!("{path}.{}.{nonce:08x}.tmp", std::process::id());
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temporary)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "migration: cannot keep the last good configuration (version {}) at {}: {} (nginx's `user` must be able to \
             write there for watch= publications)",
            version,
            path,
            e
        );
    }
}

/// This cycle's hold on the zone, kept in the main configuration (type-erased
/// there: `conf/` knows nothing of the zone).
pub struct CycleZone {
    pub zone: Zone,
    /// The reload's prepared record: its slots and load time, until committed.
    slots: Vec<SlotRef>,
    loaded_at: u64,
    /// The zone's serial right after the prepare: the commit compares with it.
    prepared_serial: u64,
    /// The zone's epoch after this cycle's commit: a `watch=` publication of this
    /// cycle's workers commits only while it is still the zone's.
    pub epoch: u64,
    /// After `init_module`: what the workers start with (None when a newer
    /// `watch=` publication of the same file was kept: they read it from the zone).
    published: Option<Arc<LiveConfig>>,
    /// The prepared record, in a zone the previous cycle keeps, until this
    /// cycle reaches `init_module`: if it never does (the reload failed after
    /// the zone's init), dropping the cycle takes the record out of the zone.
    uncommitted: Option<NonNull<Record>>,
}

impl Drop for CycleZone {
    fn drop(&mut self) {
        let Some(record) = self.uncommitted.take() else {
            return;
        };
        // Set only for a zone the previous cycle keeps, which is still mapped
        // when nginx destroys a failed cycle (a zone new to it is unmapped
        // first); `nginx -t` and the signaller always make a new zone.
        // SAFETY: ngx_cycle is the cycle that runs on, and its log is live.
        let log = unsafe { (*ngx::ffi::ngx_cycle).log };
        match self.zone.lock_in_master(log) {
            Ok(mut locked) => {
                if locked.drop_pending(record) {
                    drop(locked);
                    ngx_log_error!(
                        NGX_LOG_NOTICE,
                        log,
                        "migration: the failed reload's configuration was taken out of the zone"
                    );
                }
            }
            Err(why) => {
                ngx_log_error!(
                    NGX_LOG_WARN,
                    log,
                    "migration: {}: the failed reload's configuration stays in the zone until the next reload",
                    why
                );
            }
        }
    }
}

impl CycleZone {
    /// The cycle's hold, from its main configuration's `cycle_zone`.
    pub fn of(slot: &Option<Box<dyn Any>>) -> Option<&CycleZone> {
        slot.as_ref()?.downcast_ref()
    }

    fn of_mut(slot: &mut Option<Box<dyn Any>>) -> Option<&mut CycleZone> {
        slot.as_mut()?.downcast_mut()
    }
}

/// The zone's `init`, in the master, for `nginx -t`, start and every reload:
/// attaches the zone and prepares this cycle's record in it. A shortage fails the
/// reload here, while the old cycle still runs untouched.
pub unsafe extern "C" fn init_zone(shm_zone: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls init with the zone entry being initialised; its log is live.
    crate::guard::init(unsafe { (*shm_zone).shm.log }, "the zone's init", || unsafe { init_zone_body(shm_zone, data) })
}

unsafe fn init_zone_body(shm_zone: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls init with the zone entry whose data we set to this
    // cycle's main configuration (which lives in the cycle's pool).
    let (shm_zone, main) = unsafe { (&*shm_zone, &mut *((*shm_zone).data as *mut MainConf)) };
    let log = shm_zone.shm.log;
    let name = String::from_utf8_lossy(shm_zone.shm.name.as_bytes()).into_owned();
    let cells = if data.is_null() { counter_cells(shm_zone, main, log, &name) } else { 1 };
    // SAFETY: `data` is null for a new zone and the previous cycle's data for a
    // kept one; we are in the zone's init.
    let zone = match unsafe { Zone::attach(shm_zone, data.is_null(), cells) } {
        Ok(zone) => zone,
        Err(why) => {
            ngx_log_error!(NGX_LOG_EMERG, log, "migration: zone \"{}\" {}", name, why);
            return Status::NGX_ERROR.into();
        }
    };
    let Some(config) = main.config.clone() else {
        return Status::NGX_ERROR.into();
    };
    let names = service_names(&config);
    let loaded_at = unix_now();
    let mut locked = match zone.lock_in_master(log) {
        Ok(locked) => locked,
        Err(why) => {
            ngx_log_error!(NGX_LOG_EMERG, log, "migration: zone \"{}\": {}; the configuration is refused", name, why);
            return Status::NGX_ERROR.into();
        }
    };
    match locked.prepare(&main.source, &main.text, main.content_hash, loaded_at, &names) {
        Ok((record, slots)) => {
            let prepared_serial = locked.set_pending(record);
            drop(locked);
            let uncommitted = (!data.is_null()).then_some(record);
            main.cycle_zone = Some(Box::new(CycleZone {
                zone,
                slots,
                loaded_at,
                prepared_serial,
                epoch: 0,
                published: None,
                uncommitted,
            }));
            Status::NGX_OK.into()
        }
        Err(shortfall) => {
            drop(locked);
            ngx_log_error!(
                NGX_LOG_EMERG,
                log,
                "migration: zone \"{}\" ({}) has no room left for {}: the configuration alone needs {}, and a zone kept over \
                 a reload also holds the counters of earlier services; give it a larger size (a new size starts a new zone)",
                name,
                human_size(shm_zone.shm.size),
                main.source,
                human_size(shortfall.needed)
            );
            Status::NGX_ERROR.into()
        }
    }
}

/// How many counter cells a new zone gives each service: one per worker (up to
/// MAX_CELLS), so that workers never increment the same cache lines, as long as
/// this configuration then takes at most half the zone (a reload that keeps the
/// zone needs room for two). Fewer where that does not fit, down to one shared
/// by all, said at notice: the counts are exact either way.
fn counter_cells(shm_zone: &ngx_shm_zone_t, main: &MainConf, log: *mut ngx_log_t, name: &str) -> usize {
    let workers = crate::state::cycle_warnings::worker_processes().min(MAX_CELLS);
    let Some(config) = &main.config else {
        return 1;
    };
    let names = service_names(config);
    let fits =
        |cells: usize| required_zone_size(main.source.len(), main.text.len(), &names, cells) <= shm_zone.shm.size / 2;
    let cells = (1..=workers).rev().find(|&cells| fits(cells)).unwrap_or(1);
    if cells < workers {
        ngx_log_error!(
            NGX_LOG_NOTICE,
            log,
            "migration: zone \"{}\" ({}) has room for {} counter cell(s) per service, not one for each of the {} workers: \
             workers share cells (the counts stay exact, busy workers contend for them); zone={}:{} would give each its own",
            name,
            human_size(shm_zone.shm.size),
            cells,
            workers,
            name,
            human_size(required_zone_size(main.source.len(), main.text.len(), &names, workers) * 2)
        );
    }
    cells
}

/// `init_module`, in the master, once the new cycle can no longer fail: commits
/// the prepared record, so the zone's generation moves only for a cycle that runs.
pub unsafe extern "C" fn init_module(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx calls init_module with the new cycle; its log is live.
    crate::guard::init(unsafe { (*cycle).log }, "init_module", || unsafe { init_module_body(cycle) })
}

unsafe fn init_module_body(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx calls init_module with the new, complete cycle.
    let cycle = unsafe { &*cycle };
    let Some(main) = Module::main_conf_mut(cycle) else {
        return Status::NGX_OK.into();
    };
    let (Some(config), Some(cycle_zone)) = (main.config.clone(), CycleZone::of_mut(&mut main.cycle_zone)) else {
        return Status::NGX_OK.into();
    };
    // The cycle runs: its commit, below, owns the prepared record now.
    cycle_zone.uncommitted = None;
    crate::test_hooks::reload_commit_delay(cycle_zone.zone.generation());
    // SAFETY: set by nginx's command line handling before any cycle exists.
    let testing = unsafe { ngx_test_config } != 0;
    let commit = match cycle_zone.zone.lock_in_master(cycle.log) {
        Ok(mut locked) => {
            let commit = locked.commit_pending(cycle_zone.prepared_serial);
            if commit.is_some() && !testing {
                // This cycle runs on the file, or on the last good copy because the
                // file was refused (status `file`).
                locked.set_file_refused(main.refused.as_deref().map(|e| (e, unix_now())));
            }
            commit
        }
        Err(why) => {
            // init_module cannot fail without ending the master: the workers start
            // on the zone's current generation instead.
            ngx_log_error!(NGX_LOG_ALERT, cycle.log, "migration: {}: {} is not published", why, main.source);
            return Status::NGX_OK.into();
        }
    };
    let Some(commit) = commit else {
        ngx_log_error!(NGX_LOG_ALERT, cycle.log, "migration: no prepared configuration to publish");
        return Status::NGX_OK.into();
    };
    cycle_zone.epoch = cycle_zone.zone.epoch();
    // `nginx -t` builds a throwaway cycle with a zone of its own: only the
    // master's publication is news.
    // SAFETY: both flags are set by nginx's command line handling before any cycle exists.
    let announce = unsafe { ngx_test_config == 0 && ngx_process != NGX_PROCESS_SIGNALLER as ngx_uint_t };
    if commit.kept_newer {
        // The same file, re-read by a worker's `watch=` after this reload read it.
        if announce {
            ngx_log_error!(
                NGX_LOG_NOTICE,
                cycle.log,
                "migration: {} was published as generation {} by watch= after this reload read it; that newer read stays",
                main.source,
                commit.generation
            );
        }
        cycle_zone.slots.clear();
        return Status::NGX_OK.into();
    }
    if announce {
        ngx_log_error!(
            NGX_LOG_NOTICE,
            cycle.log,
            "migration: published {} as generation {} (version {})",
            main.source,
            commit.generation,
            config.version
        );
    }
    let published = Arc::new(LiveConfig {
        instance: crate::state::live::next_instance(),
        generation: commit.generation,
        loaded_at: cycle_zone.loaded_at,
        content_hash: main.content_hash,
        source: main.source.clone(),
        config,
        slots: core::mem::take(&mut cycle_zone.slots).into_boxed_slice(),
        zone: cycle_zone.zone,
    });
    // `nginx -t` has a zone of its own: its ramps are nobody's.
    // SAFETY: set by nginx's command line handling before any cycle exists.
    if unsafe { ngx_test_config } == 0 {
        match cycle_zone.zone.lock_in_master(cycle.log) {
            Ok(_locked) => {
                published.publish_ramps(cycle.log);
                // Under the lock, as a worker's `watch=` save is: in commit order.
                if let (Some(last_good), None) = (&main.last_good, &main.refused) {
                    save_last_good(last_good, &published.config.version, &main.text, cycle.log);
                }
            }
            Err(why) => {
                ngx_log_error!(NGX_LOG_ALERT, cycle.log, "migration: {}: the ramps keep their positions", why);
            }
        }
        if main.refused.is_none() {
            // A good reload: a change refused before may be tried (and said) again.
            cycle_zone.zone.refuse(0);
        }
    }
    cycle_zone.published = Some(published);
    Status::NGX_OK.into()
}

/// `init_process`: the worker starts with the configuration its cycle published,
/// and with `watch=`, its timer.
pub unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx calls init_process with the worker's cycle; its log is live.
    crate::guard::process(unsafe { (*cycle).log }, "init_process", || unsafe { init_process_body(cycle) })
}

unsafe fn init_process_body(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx calls init_process with the worker's cycle.
    let cycle = unsafe { &*cycle };
    // The cache manager and loader run init_process too: they serve no request
    // and must not watch the file (a helper could publish, or log a refusal).
    // SAFETY: ngx_process is set by nginx before it calls init_process.
    if unsafe { ngx_process } == NGX_PROCESS_HELPER as ngx_uint_t {
        return Status::NGX_OK.into();
    }
    crate::random::seed_worker();
    let Some(main) = Module::main_conf_mut(cycle) else {
        return Status::NGX_OK.into();
    };
    let Some(cycle_zone) = CycleZone::of_mut(&mut main.cycle_zone) else {
        return Status::NGX_OK.into();
    };
    let zone = cycle_zone.zone;
    // Before anything of the zone is used: the generation this worker may touch,
    // so that the slots it can reach are not reclaimed under it.
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    // SAFETY: ngx_worker is set by the master before it forks the worker (0 in a
    // single-process nginx) and never changes in it.
    let worker = unsafe { ngx::ffi::ngx_worker };
    use_cell(worker, zone.cells());
    let start = cycle_zone.published.as_ref().map_or(zone.generation(), |p| p.generation);
    let entry = zone.lock().register(pid, start);
    match entry {
        Some(entry) => PROCESS_ENTRY.store(entry, Ordering::Release),
        None => {
            ngx_log_error!(
                NGX_LOG_WARN,
                cycle.log,
                "migration: the zone's process table is full ({} processes of this and older cycles): \
                 the slots of removed services are no longer freed until nginx restarts",
                crate::state::zone::PROCESSES
            );
        }
    }
    // Taken, not shared: this worker's hold on the cycle's generation ends when
    // it routes by a newer one (a respawned worker gets the master's copy again).
    if let Some(published) = cycle_zone.published.take() {
        adopt(published);
    }
    // A worker respawned after a crash starts with its cycle's configuration;
    // `watch=` may have published a newer one since (or the master kept one).
    catch_up_now(&zone, cycle.log);
    let mut timers: Vec<(unsafe extern "C" fn(*mut ngx_event_t), u64)> = vec![(ramp_tick, RAMP_TICK_MS)];
    if let Some(interval) = main.watch_ms {
        timers.push((watch_tick, interval));
    }
    for (handler, interval) in timers {
        // SAFETY: the cycle pool outlives the worker's event loop.
        let ev = unsafe { ngx_pcalloc(cycle.pool, core::mem::size_of::<ngx_event_t>()) } as *mut ngx_event_t;
        if ev.is_null() {
            return Status::NGX_ERROR.into();
        }
        // SAFETY: a zeroed event is valid; cancelable lets a worker that is shutting
        // down exit without waiting for this timer.
        unsafe {
            (*ev).handler = Some(handler);
            (*ev).log = cycle.log;
            (*ev).set_cancelable(1);
            ngx_add_timer(ev, interval as _);
        }
    }
    Status::NGX_OK.into()
}

/// `exit_process`: gives the process's entry of the zone's table back.
pub unsafe extern "C" fn exit_process(cycle: *mut ngx_cycle_t) {
    // SAFETY: nginx calls exit_process with the worker's cycle; its log is live.
    crate::guard::process(unsafe { (*cycle).log }, "exit_process", || {
        // SAFETY: as above.
        unsafe { exit_process_body(cycle) };
        Status::NGX_OK.into()
    });
}

unsafe fn exit_process_body(_cycle: *mut ngx_cycle_t) {
    let entry = PROCESS_ENTRY.swap(usize::MAX, Ordering::AcqRel);
    if let (Some(current), true) = (current(), entry != usize::MAX) {
        current.zone.unregister(entry);
    }
}
