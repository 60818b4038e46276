//! Publication of the configuration (SPEC "Reload and updates"): what each worker
//! routes by, how a reload publishes a new file, and how `watch=` publishes a
//! changed one without a reload.
//!
//! Each process routes by its own [`Published`] value, held in an `ArcSwap`: a
//! request takes it without a lock, and keeps its `Arc` for as long as it needs
//! the strings of its decision. A worker replaces it when the zone's generation
//! moves (on its `watch=` timer, or when serving the status), compiling the
//! zone's record, or taking the configuration it just published itself.

use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use migration_engine::source::FileStamp;
use migration_engine::{BreakerCells, Breakers, CompiledConfig};
use ngx::core::Status;
use ngx::ffi::{
    ngx_add_timer, ngx_current_msec, ngx_cycle, ngx_cycle_t, ngx_event_t, ngx_exiting, ngx_int_t, ngx_log_t,
    ngx_pcalloc, ngx_process, ngx_quit, ngx_shm_zone_t, ngx_terminate, ngx_test_config, ngx_uint_t, NGX_LOG_ALERT,
    NGX_LOG_EMERG, NGX_LOG_ERR, NGX_LOG_NOTICE, NGX_LOG_WARN, NGX_PROCESS_HELPER, NGX_PROCESS_SIGNALLER,
};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_log_error;

use crate::directives::{MainConf, Module};
use crate::publisher;
use crate::zone::{human_size, required_zone_size, SlotRef, Zone};

/// One generation of the configuration, as a process routes by it.
pub struct Published {
    pub generation: u64,
    pub loaded_at: u64,
    pub content_hash: u64,
    pub source: String,
    pub config: Arc<CompiledConfig>,
    /// The counters of `config.services[i]` are `slots[i]`.
    pub slots: Box<[SlotRef]>,
    pub zone: Zone,
}

/// Decision step 4 reads the breakers in the zone, on nginx's monotonic clock
/// (the same in every process).
impl Breakers for Published {
    fn breaker(&self, index: u32) -> Option<&BreakerCells> {
        self.slots.get(index as usize).map(|slot| &slot.breaker)
    }

    fn now_ms(&self) -> u64 {
        // SAFETY: nginx's cached clock, updated by the event loop of this process.
        unsafe { ngx_current_msec as u64 }
    }

    #[inline]
    fn percentage_in_force(&self, index: u32) -> Option<u32> {
        self.slots.get(index as usize).and_then(|slot| slot.ramp.percentage_in_force())
    }
}

impl Published {
    /// Tells each service's ramp cells what this publication holds: an unchanged
    /// ramp keeps its position, a changed one starts again (README "Ramp"); the
    /// step in force is logged. Called by the process that committed it, under
    /// the zone's lock.
    fn publish_ramps(&self, log: *mut ngx_log_t) {
        let now = unix_now_ms();
        for (service, slot) in self.config.services.iter().zip(self.slots.iter()) {
            let what = slot.ramp.publish(
                service.ramp.as_ref(),
                service.ramp_fingerprint,
                service.outcome_fingerprint,
                service.enabled,
                now,
            );
            crate::ramp::log_publication(service, slot, what, log);
        }
    }
}

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

/// Wall-clock milliseconds: a ramp's `start` is a time of day, the same on every
/// replica.
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The cycle's hold on its zone, kept in the main configuration.
pub struct Publication {
    pub zone: Zone,
    /// The reload's prepared record: its slots and load time, until committed.
    slots: Vec<SlotRef>,
    loaded_at: u64,
    /// The zone's serial right after the prepare: the commit compares with it.
    prepared_serial: u64,
    /// The zone's epoch after this cycle's commit: a `watch=` publication of this
    /// cycle's workers commits only while it is still the zone's.
    epoch: u64,
    /// After `init_module`: what the workers start with (None when a newer
    /// `watch=` publication of the same file was kept: they read it from the zone).
    published: Option<Arc<Published>>,
}

/// What this process routes by, as `Arc::into_raw` (null: nothing). Only the
/// event loop's thread reads or replaces it (the publication thread never
/// does), so a load followed by taking a reference cannot race a swap that
/// frees the configuration.
static CURRENT: AtomicPtr<Published> = AtomicPtr::new(ptr::null_mut());

/// What this process routes by now; None without `migration_config`.
#[inline]
pub fn current() -> Option<Arc<Published>> {
    let p = CURRENT.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` came from Arc::into_raw and CURRENT holds that reference; only
    // this thread could swap it away (see CURRENT).
    unsafe {
        Arc::increment_strong_count(p);
        Some(Arc::from_raw(p))
    }
}

/// Makes `new` what this process routes by; returns what it replaces.
fn replace_current(new: Arc<Published>) -> Option<Arc<Published>> {
    let old = CURRENT.swap(Arc::into_raw(new) as *mut Published, Ordering::AcqRel);
    // SAFETY: a non-null value of CURRENT came from Arc::into_raw; its reference
    // passes to the caller.
    (!old.is_null()).then(|| unsafe { Arc::from_raw(old) })
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The services' names, in order: the keys of their slots in the zone.
pub fn service_names(config: &CompiledConfig) -> Vec<&str> {
    config.services.iter().map(|s| s.name.as_str()).collect()
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
    // SAFETY: `data` is null for a new zone and the previous cycle's data for a
    // kept one; we are in the zone's init.
    let zone = match unsafe { Zone::attach(shm_zone, data.is_null()) } {
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
            main.publication = Some(Publication { zone, slots, loaded_at, prepared_serial, epoch: 0, published: None });
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
    let (Some(config), Some(publication)) = (main.config.clone(), main.publication.as_mut()) else {
        return Status::NGX_OK.into();
    };
    crate::hooks::reload_commit_delay(publication.zone.generation());
    // SAFETY: set by nginx's command line handling before any cycle exists.
    let testing = unsafe { ngx_test_config } != 0;
    let commit = match publication.zone.lock_in_master(cycle.log) {
        Ok(mut locked) => {
            let commit = locked.commit_pending(publication.prepared_serial);
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
    publication.epoch = publication.zone.epoch();
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
        publication.slots.clear();
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
    let published = Arc::new(Published {
        generation: commit.generation,
        loaded_at: publication.loaded_at,
        content_hash: main.content_hash,
        source: main.source.clone(),
        config,
        slots: core::mem::take(&mut publication.slots).into_boxed_slice(),
        zone: publication.zone,
    });
    // `nginx -t` has a zone of its own: its ramps are nobody's.
    // SAFETY: set by nginx's command line handling before any cycle exists.
    if unsafe { ngx_test_config } == 0 {
        match publication.zone.lock_in_master(cycle.log) {
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
            publication.zone.refuse(0);
        }
    }
    publication.published = Some(published);
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
    let Some(publication) = main.publication.as_mut() else {
        return Status::NGX_OK.into();
    };
    let zone = publication.zone;
    // Before anything of the zone is used: the generation this worker may touch,
    // so that the slots it can reach are not reclaimed under it.
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    let start = publication.published.as_ref().map_or(zone.generation(), |p| p.generation);
    if let Some(entry) = zone.lock().register(pid, start) {
        PROCESS_ENTRY.store(entry, Ordering::Release);
    }
    // Taken, not shared: this worker's hold on the cycle's generation ends when
    // it routes by a newer one (a respawned worker gets the master's copy again).
    if let Some(published) = publication.published.take() {
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

/// This process's entry in the zone's process table (usize::MAX: none).
static PROCESS_ENTRY: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Generations this process replaced while requests still held them. A request
/// holds them for their strings only (it reaches the zone through the current
/// configuration: `RequestDecision::live_slot`); kept here so that the last one
/// is dropped on the publication thread, never on the event loop.
static RETIRED: Mutex<Vec<Arc<Published>>> = Mutex::new(Vec::new());

/// Makes `published` what this process routes by, and announces its generation.
fn adopt(published: Arc<Published>) {
    let zone = published.zone;
    if let Some(previous) = replace_current(published) {
        RETIRED.lock().unwrap_or_else(|e| e.into_inner()).push(previous);
    }
    announce_held(&zone);
}

/// Lets go of the retired generations no request holds any more, and tells the
/// zone the generation this process may still touch: the one it routes by (see
/// `Locked::reclaim`). Retired generations are not announced: no request reaches
/// the zone through them, so one held open for minutes pins no zone memory.
fn announce_held(zone: &Zone) {
    let entry = PROCESS_ENTRY.load(Ordering::Acquire);
    let mut retired = RETIRED.lock().unwrap_or_else(|e| e.into_inner());
    let (held, released): (Vec<_>, Vec<_>) = retired.drain(..).partition(|p| Arc::strong_count(p) > 1);
    *retired = held;
    for published in released {
        if let Ok(published) = Arc::try_unwrap(published) {
            crate::publisher::discard(published.config);
        }
    }
    drop(retired);
    if let (Some(routing), true) = (current().map(|p| p.generation), entry != usize::MAX) {
        zone.announce(entry, routing);
    }
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

/// Replaces this process's configuration by the zone's committed one when its
/// generation moved, compiling it here and now: only for `init_process`, before
/// the worker serves (the event loop hands this to the publication thread).
fn catch_up_now(zone: &Zone, log: *mut ngx_log_t) -> Option<Arc<Published>> {
    let current = current();
    if current.as_ref().is_some_and(|c| c.generation == zone.generation()) {
        return current;
    }
    let Some(record) = zone.lock().read() else {
        return current;
    };
    match migration_engine::load_str(&record.source, &record.text) {
        Ok(config) => {
            let published = Arc::new(Published {
                generation: record.generation,
                loaded_at: record.loaded_at,
                content_hash: record.content_hash,
                source: record.source,
                config: Arc::new(config),
                slots: record.slots.into_boxed_slice(),
                zone: *zone,
            });
            adopt(published.clone());
            Some(published)
        }
        Err(e) => {
            // A record was validated before it was published; this means the
            // process that published it read the file differently.
            ngx_log_error!(
                NGX_LOG_ALERT,
                log,
                "migration: generation {} does not compile here: {}",
                record.generation,
                e
            );
            current
        }
    }
}

/// The stamp of the file as this process last dealt with it (published it,
/// found it unchanged or refused it): an equal stamp means nothing to read.
/// A read that lost a race to another publication is not remembered, so the
/// next tick looks again.
static LAST_STAMP: Mutex<Option<FileStamp>> = Mutex::new(None);

fn last_stamp() -> Option<FileStamp> {
    *LAST_STAMP.lock().unwrap_or_else(|e| e.into_inner())
}

fn remember_stamp(stamp: Option<FileStamp>) {
    *LAST_STAMP.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
}

/// How often a tick looks for the publication thread's result while it works.
const POLL_MS: u64 = 5;

/// How often every worker looks at the clock for the services' ramps.
const RAMP_TICK_MS: u64 = 100;

/// Moves the ramps on: every worker, every RAMP_TICK_MS; one of them makes each
/// transition (a compare-and-swap in the zone) and logs it.
unsafe extern "C" fn ramp_tick(ev: *mut ngx_event_t) {
    // SAFETY: nginx's process-state flags, only written by its signal handlers.
    if unsafe { ngx_exiting != 0 || ngx_quit != 0 || ngx_terminate != 0 } {
        return;
    }
    // SAFETY: in a worker, ngx_cycle is the worker's cycle.
    let log = unsafe { (*ngx_cycle).log };
    crate::guard::timer(log, "the ramp's timer", || {
        if let Some(published) = current() {
            crate::ramp::tick(&published, log);
        }
    });
    // SAFETY: `ev` is our timer event, not armed while its handler runs.
    unsafe { ngx_add_timer(ev, RAMP_TICK_MS as _) };
}

unsafe extern "C" fn watch_tick(ev: *mut ngx_event_t) {
    // SAFETY: nginx's process-state flags, only written by its signal handlers.
    if unsafe { ngx_exiting != 0 || ngx_quit != 0 || ngx_terminate != 0 } {
        return;
    }
    // SAFETY: in a worker, ngx_cycle is the worker's cycle.
    let cycle = unsafe { &*ngx_cycle };
    let Some(main) = Module::main_conf(cycle) else {
        return;
    };
    if let (Some(publication), Some(interval)) = (&main.publication, main.watch_ms) {
        let mut next = interval;
        crate::guard::timer(cycle.log, "watch=", || {
            announce_held(&publication.zone);
            if watch_step(main, publication, cycle.log) {
                next = POLL_MS;
            }
        });
        // SAFETY: `ev` is our timer event, not armed while its handler runs.
        unsafe { ngx_add_timer(ev, next as _) };
    }
}

/// One step of `watch=` on the event loop: take the publication thread's result
/// if there is one, then catch up with the zone or look at the file. Returns
/// whether a job is in flight (the next tick comes soon, to take its result).
fn watch_step(main: &MainConf, publication: &Publication, log: *mut ngx_log_t) -> bool {
    if publisher::busy() {
        match publisher::take() {
            Some(done) => finish(main, publication, done, log),
            None => return true,
        }
    }
    let zone = &publication.zone;
    if zone.epoch() != publication.epoch {
        // A reload committed a newer cycle: this worker is on its way out and its
        // file may be the old one. The new cycle's workers watch from now on.
        return false;
    }
    if catch_up_later(zone) {
        return true;
    }
    // `stat` first: when nothing of the file changed, it is not read at all.
    let stamp = FileStamp::at(std::path::Path::new(&main.source)).ok();
    if stamp.is_some() && stamp == last_stamp() {
        return false;
    }
    let check = publisher::Check {
        path: main.source.clone(),
        max_size: main.max_size,
        zone_size: zone.size(),
        current_hash: current().map(|c| c.content_hash),
        refused_hash: zone.refused_hash(),
        pinned: main.pinned.clone(),
        variables: main.variables.clone(),
        reach: main.reach_done.clone(),
        stamp,
        // Taken before the file is read: the commit compares with it, so a read
        // older than another publication (or a reload's prepare) is never committed.
        serial: zone.serial(),
    };
    publisher::submit(publisher::Job::Check(check))
}

/// When another process published a newer generation, hands its record to the
/// publication thread to compile; true when it did.
pub fn catch_up_later(zone: &Zone) -> bool {
    if publisher::busy() || current().is_some_and(|c| c.generation == zone.generation()) {
        return publisher::busy();
    }
    match zone.lock().read() {
        Some(record) => publisher::submit(publisher::Job::CatchUp(record)),
        None => false,
    }
}

/// Carries out what the publication thread finished: a compiled catch-up is
/// adopted, a changed file committed (if it still may be) or refused, once for
/// all workers.
pub fn finish(main: &MainConf, publication: &Publication, done: publisher::Done, log: *mut ngx_log_t) {
    use publisher::Done;
    let zone = &publication.zone;
    let current = current();
    let (generation, version) =
        current.as_ref().map_or((0, String::new()), |c| (c.generation, c.config.version.clone()));
    match done {
        Done::CaughtUp { record, compiled } => match compiled {
            Ok(config) if current.as_ref().is_none_or(|c| c.generation < record.generation) => {
                adopt(Arc::new(Published {
                    generation: record.generation,
                    loaded_at: record.loaded_at,
                    content_hash: record.content_hash,
                    source: record.source,
                    config: Arc::new(config),
                    slots: record.slots.into_boxed_slice(),
                    zone: *zone,
                }));
            }
            Ok(_) => {}
            // A record was validated before it was published; this means the
            // process that published it read the file differently.
            Err(e) => {
                ngx_log_error!(
                    NGX_LOG_ALERT,
                    log,
                    "migration: generation {} does not compile here: {}",
                    record.generation,
                    e
                );
            }
        },
        Done::Unchanged { stamp, published } => {
            remember_stamp(stamp);
            // The file is back to the published content: nothing is refused now.
            if published && zone.refused_hash() != 0 {
                zone.refuse(0);
                zone.lock().set_file_refused(None);
            }
        }
        Done::Unreadable { message, stamp } => {
            remember_stamp(stamp);
            let first = zone.refuse(migration_engine::content_hash(message.as_bytes()));
            zone.lock().set_file_refused(Some((&format!("cannot read {}: {message}", main.source), unix_now())));
            if first {
                ngx_log_error!(
                    NGX_LOG_ERR,
                    log,
                    "migration: watch= cannot read {}: {} (the workers read it, as nginx's `user`); generation {} (version {}) stays",
                    main.source,
                    message,
                    generation,
                    version
                );
            }
        }
        Done::TooBig { hash, bytes, stamp } => {
            remember_stamp(stamp);
            let first = zone.refuse(hash);
            let message = format!("{}: the zone is too small for it ({bytes} bytes of YAML, held twice)", main.source);
            zone.lock().set_file_refused(Some((&message, unix_now())));
            if first {
                ngx_log_error!(
                    NGX_LOG_ERR,
                    log,
                    "migration: {} changed but the zone is too small for it ({} bytes of YAML, held twice); generation {} (version {}) stays",
                    main.source,
                    bytes,
                    generation,
                    version
                );
            }
        }
        Done::Invalid { hash, message, stamp } => {
            remember_stamp(stamp);
            let first = zone.refuse(hash);
            zone.lock().set_file_refused(Some((&message, unix_now())));
            if first {
                ngx_log_error!(
                    NGX_LOG_ERR,
                    log,
                    "migration: {}; the change is not published, generation {} (version {}) stays",
                    message,
                    generation,
                    version
                );
            }
        }
        Done::Ready(ready) => commit_change(main, publication, *ready, (generation, version), log),
    }
}

/// Commits a changed file the thread compiled, unless a reload or another
/// publication came first (then the next tick catches up, and looks again).
fn commit_change(
    main: &MainConf,
    publication: &Publication,
    ready: publisher::Ready,
    (generation, version): (u64, String),
    log: *mut ngx_log_t,
) {
    let zone = &publication.zone;
    let names = service_names(&ready.config);
    let loaded_at = unix_now();
    let mut locked = zone.lock();
    if !locked.may_publish(publication.epoch, ready.serial) || locked.committed_hash() == Some(ready.hash) {
        return;
    }
    let prepared = locked.prepare(&main.source, &ready.text, ready.hash, loaded_at, &names);
    let Ok((record, slots)) = prepared else {
        let message = format!(
            "{} changed but does not fit the zone: it needs {}",
            main.source,
            human_size(required_zone_size(main.source.len(), ready.text.len(), &names))
        );
        locked.set_file_refused(Some((&message, unix_now())));
        drop(locked);
        remember_stamp(ready.stamp);
        if zone.refuse(ready.hash) {
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "migration: {}; generation {} (version {}) stays",
                message,
                generation,
                version
            );
        }
        return;
    };
    let generation = locked.commit(record);
    locked.set_file_refused(None);
    let published = Arc::new(Published {
        generation,
        loaded_at,
        content_hash: ready.hash,
        source: main.source.clone(),
        config: Arc::new(ready.config),
        slots: slots.into_boxed_slice(),
        zone: *zone,
    });
    published.publish_ramps(log);
    // Under the lock: two publications close together save in commit order.
    if let Some(last_good) = &main.last_good {
        save_last_good(last_good, &published.config.version, &ready.text, log);
    }
    drop(locked);
    remember_stamp(ready.stamp);
    zone.refuse(0);
    for warning in &ready.warnings {
        ngx_log_error!(NGX_LOG_WARN, log, "migration: {}: {}", main.source, warning);
    }
    ngx_log_error!(
        NGX_LOG_NOTICE,
        log,
        "migration: {} changed; published generation {} (version {}, {} services)",
        main.source,
        generation,
        published.config.version,
        published.config.services.len()
    );
    adopt(published);
}
