//! `watch=`: every worker `stat`s the file on its timer; the first to see a
//! change hands it to its compile thread, admits it (the same admission as a
//! reload's), and commits it into the zone for every process, without a reload.
//! The others catch up with the zone's new generation.

use std::sync::{Arc, Mutex};

use migration_engine::source::FileStamp;
use migration_engine::variables::{check_user_variables, VariableNames};
use ngx::ffi::{
    ngx_add_timer, ngx_cycle, ngx_event_t, ngx_exiting, ngx_log_t, ngx_quit, ngx_terminate, NGX_LOG_ERR,
    NGX_LOG_NOTICE, NGX_LOG_WARN,
};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_log_error;

use crate::conf::{MainConf, Module};
use crate::state::admission::Refusal;
use crate::state::compile_thread;
use crate::state::cycle::{save_last_good, CycleZone};
use crate::state::live::{
    adopt, adopt_record, announce_held, catch_up_later, current, service_names, unix_now, LiveConfig,
};
use crate::state::zone::{human_size, required_zone_size, Zone};

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

thread_local! {
    /// A changed file that compiled but did not fit the zone while processes
    /// still on older generations hold room it would reuse. Each tick tries it
    /// again (no new read, no new compile) while the file keeps its stamp: it is
    /// published as soon as those processes catch up or exit, and refused (once,
    /// at `error`) if it still does not fit when none lags.
    static WAITING_FOR_ROOM: std::cell::RefCell<Option<compile_thread::Ready>> =
        const { std::cell::RefCell::new(None) };
    /// The content hash last said to wait for room: said once, not every tick.
    static WAIT_NOTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How often a tick looks for the compile thread's result while it works.
const POLL_MS: u64 = 5;

pub unsafe extern "C" fn watch_tick(ev: *mut ngx_event_t) {
    // SAFETY: nginx's process-state flags, only written by its signal handlers.
    if unsafe { ngx_exiting != 0 || ngx_quit != 0 || ngx_terminate != 0 } {
        return;
    }
    // SAFETY: in a worker, ngx_cycle is the worker's cycle.
    let cycle = unsafe { &*ngx_cycle };
    let Some(main) = Module::main_conf(cycle) else {
        return;
    };
    if let (Some(cycle_zone), Some(interval)) = (CycleZone::of(&main.cycle_zone), main.watch_ms) {
        let mut next = interval;
        crate::guard::timer(cycle.log, "watch=", || {
            announce_held(&cycle_zone.zone);
            if watch_step(main, cycle_zone, cycle.log) {
                next = POLL_MS;
            }
        });
        // SAFETY: `ev` is our timer event, not armed while its handler runs.
        unsafe { ngx_add_timer(ev, next as _) };
    }
}

/// One step of `watch=` on the event loop: take the compile thread's result
/// if there is one, then catch up with the zone or look at the file. Returns
/// whether a job is in flight (the next tick comes soon, to take its result).
fn watch_step(main: &MainConf, cycle_zone: &CycleZone, log: *mut ngx_log_t) -> bool {
    if compile_thread::busy() {
        match compile_thread::take() {
            Some(done) => finish(main, cycle_zone, done, log),
            None => return true,
        }
    }
    let zone = &cycle_zone.zone;
    if zone.epoch() != cycle_zone.epoch {
        // A reload committed a newer cycle: this worker is on its way out and its
        // file may be the old one. The new cycle's workers watch from now on.
        return false;
    }
    if catch_up_later(zone) {
        return true;
    }
    // `stat` first: when nothing of the file changed, it is not read at all.
    let stamp = FileStamp::at(std::path::Path::new(&main.source)).ok();
    if let Some(ready) = WAITING_FOR_ROOM.with_borrow_mut(Option::take) {
        if stamp.is_some() && stamp == ready.stamp {
            let current = current();
            let (generation, version) =
                current.as_ref().map_or((0, String::new()), |c| (c.generation, c.config.version.clone()));
            commit_change(main, cycle_zone, ready, (generation, version), log);
            return false;
        }
        // Changed again since: the new content is read below, and decides.
    }
    if stamp.is_some() && stamp == last_stamp() {
        return false;
    }
    let check = compile_thread::Check {
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
    compile_thread::submit(compile_thread::Job::Check(check))
}

/// Carries out what the compile thread finished: a compiled catch-up is
/// adopted, a changed file committed (if it still may be) or refused, once for
/// all workers.
pub fn finish(main: &MainConf, cycle_zone: &CycleZone, done: compile_thread::Done, log: *mut ngx_log_t) {
    use compile_thread::Done;
    let zone = &cycle_zone.zone;
    let current = current();
    let (generation, version) =
        current.as_ref().map_or((0, String::new()), |c| (c.generation, c.config.version.clone()));
    match done {
        Done::CaughtUp { record, compiled } => adopt_record(zone, record, compiled, log),
        Done::Unchanged { stamp, published } => {
            remember_stamp(stamp);
            // The file is back to the published content: nothing is refused now.
            if published && zone.refused_hash() != 0 {
                zone.refuse(0);
                zone.lock().set_file_refused(None);
            }
        }
        Done::Refused { refusal, stamp } => {
            remember_stamp(stamp);
            refuse(main, zone, refusal, (generation, &version), log);
        }
        Done::Ready(ready) => commit_change(main, cycle_zone, *ready, (generation, version), log),
    }
}

/// A retired worker (a reload replaced its cycle; it finishes what it holds)
/// no longer watches the file, which its successors do, but its long-lived
/// requests still follow the split: on each drain tick it takes what its
/// compile thread compiled, and hands it the zone's newest record. A file
/// check handed over before the reload is dropped: the new cycle's workers
/// look at the file themselves. Nothing follows when the reload made a new
/// zone (another size or name): the old one is never published to again.
///
/// A generation is not followed when it reads a user id from a variable this
/// worker's nginx.conf does not define (the reload defined it): every request
/// here would read none. Nor when it does not compile here (a reload that
/// loaded a newer module), or its compile panics. Each is tried once, not at
/// every tick; a newer generation is tried again.
pub fn follow_zone_while_retired(zone: &Zone, variables: Option<&VariableNames>, log: *mut ngx_log_t) {
    thread_local! {
        static NOT_FOLLOWED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        /// The generation whose catch-up this function handed over (0: none).
        static CATCHING_UP: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    if compile_thread::busy() {
        match compile_thread::take() {
            Some(compile_thread::Done::CaughtUp { record, compiled }) => {
                let unknown_variable = match (&compiled, variables) {
                    (Ok(config), Some(names)) => {
                        check_user_variables(names, &record.source, &record.text, config).err()
                    }
                    _ => None,
                };
                if compiled.is_err() || unknown_variable.is_some() {
                    NOT_FOLLOWED.set(record.generation);
                }
                match unknown_variable {
                    Some(why) => {
                        ngx_log_error!(
                            NGX_LOG_WARN,
                            log,
                            "migration: a retired worker does not follow generation {}: {}; its long-lived \
                             requests stay where they are until they end",
                            record.generation,
                            why
                        );
                    }
                    None => adopt_record(zone, record, compiled, log),
                }
            }
            // A catch-up whose compile panicked comes back refused.
            Some(_) if CATCHING_UP.get() != 0 => NOT_FOLLOWED.set(CATCHING_UP.get()),
            // A file check handed over before the reload.
            Some(_) => {}
            None => return,
        }
        CATCHING_UP.set(0);
    }
    let generation = zone.generation();
    if generation != NOT_FOLLOWED.get() && catch_up_later(zone) {
        CATCHING_UP.set(generation);
    }
}

/// Whether this process routes by the zone's newest generation. A worker that
/// has not caught up with it (its `watch=` tick or its compile is still to
/// come, a reload is retiring it, or as a retired worker it does not follow
/// that generation) decides no long-lived request again: the zone's ramp
/// cells already hold the newer generation's step, which its older rules must
/// not be judged by.
pub fn routes_by_newest(zone: &Zone) -> bool {
    current().is_some_and(|c| c.generation == zone.generation())
}

/// Commits a changed file the thread compiled, unless a reload or another
/// publication came first (then the next tick catches up, and looks again).
fn commit_change(
    main: &MainConf,
    cycle_zone: &CycleZone,
    ready: compile_thread::Ready,
    (generation, version): (u64, String),
    log: *mut ngx_log_t,
) {
    let zone = &cycle_zone.zone;
    let names = service_names(&ready.admitted.config);
    let loaded_at = unix_now();
    let mut locked = zone.lock();
    if !locked.may_publish(cycle_zone.epoch, ready.serial) || locked.committed_hash() == Some(ready.admitted.hash) {
        // Another publication (or a reload's prepare, even one that failed) came
        // first: the next tick reads the file again, even a change that was
        // waiting for room with its stamp remembered.
        drop(locked);
        remember_stamp(None);
        return;
    }
    let prepared = locked.prepare(&main.source, &ready.admitted.text, ready.admitted.hash, loaded_at, &names);
    let Ok((record, slots)) = prepared else {
        let admitted = &ready.admitted;
        remember_stamp(ready.stamp);
        let oldest_held = locked.oldest_held_generation();
        if oldest_held < zone.generation() {
            // Not refused: a process that has not caught up yet (busy, or an old
            // worker finishing its requests after a reload) holds the slots the
            // new content would reuse. Said once per content.
            drop(locked);
            if WAIT_NOTED.replace(admitted.hash) != admitted.hash {
                ngx_log_error!(
                    NGX_LOG_NOTICE,
                    log,
                    "migration: {} changed; it is published once the processes still on generation {} \
                     catch up or exit (the zone has no room for it beside theirs)",
                    main.source,
                    oldest_held
                );
            }
            WAITING_FOR_ROOM.set(Some(ready));
            return;
        }
        let message = format!(
            "{} changed but does not fit the zone: it needs {}",
            main.source,
            human_size(required_zone_size(main.source.len(), admitted.text.len(), &names, zone.cells()))
        );
        locked.set_file_refused(Some((&message, unix_now())));
        drop(locked);
        if zone.refuse(admitted.hash) {
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
    let compile_thread::Ready { admitted, stamp, .. } = ready;
    let generation = locked.commit(record);
    locked.set_file_refused(None);
    let published = Arc::new(LiveConfig {
        instance: crate::state::live::next_instance(),
        generation,
        loaded_at,
        content_hash: admitted.hash,
        source: main.source.clone(),
        config: Arc::new(admitted.config),
        slots: slots.into_boxed_slice(),
        zone: *zone,
    });
    published.publish_ramps(log);
    // Under the lock: two publications close together save in commit order.
    if let Some(last_good) = &main.last_good {
        save_last_good(last_good, &published.config.version, &admitted.text, log);
    }
    drop(locked);
    remember_stamp(stamp);
    zone.refuse(0);
    for warning in &admitted.warnings {
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

/// Says, once per content, why a changed file is not published, and keeps it
/// for the status's `file` state.
fn refuse(main: &MainConf, zone: &Zone, refusal: Refusal, (generation, version): (u64, &str), log: *mut ngx_log_t) {
    let (hash, state, logged) = match refusal {
        Refusal::Unreadable(e) => {
            let message = e.message.strip_prefix("cannot read the file: ").unwrap_or(&e.message).to_owned();
            (
                migration_engine::content_hash(message.as_bytes()),
                format!("cannot read {}: {message}", main.source),
                format!(
                    "watch= cannot read {}: {} (the workers read it, as nginx's `user`); generation {} (version {}) stays",
                    main.source, message, generation, version
                ),
            )
        }
        Refusal::TooBig { hash, bytes, .. } => (
            hash,
            format!("{}: the zone is too small for it ({bytes} bytes of YAML, held twice)", main.source),
            format!(
                "{} changed but the zone is too small for it ({} bytes of YAML, held twice); generation {} (version {}) stays",
                main.source, bytes, generation, version
            ),
        ),
        Refusal::Invalid { hash, message } => {
            let logged = format!("{message}; the change is not published, generation {generation} (version {version}) stays");
            (hash, message, logged)
        }
    };
    let first = zone.refuse(hash);
    zone.lock().set_file_refused(Some((&state, unix_now())));
    if first {
        ngx_log_error!(NGX_LOG_ERR, log, "migration: {}", logged);
    }
}
