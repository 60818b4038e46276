//! The live configuration: what this process routes by now, one [`LiveConfig`]
//! per generation. A request takes it without a lock (an `Arc` behind an
//! atomic pointer that only the event loop's thread swaps) and keeps it for as
//! long as it needs the strings of its decision. A worker replaces it when the
//! zone's generation moves (on its `watch=` timer, or when serving the status),
//! compiling the zone's record on the compile thread, or taking the
//! configuration it just published itself.

use core::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use migration_engine::{BreakerCells, Breakers, CompiledConfig};
use ngx::ffi::{ngx_current_msec, ngx_log_t, NGX_LOG_ALERT};
use ngx::ngx_log_error;

use crate::state::compile_thread;
use crate::state::zone::{RecordCopy, SlotRef, Zone};

/// One generation of the configuration, as a process routes by it.
pub struct LiveConfig {
    /// Unique in the process, never reused: which configuration a server
    /// block's kept answer (`http::host_verdict`) was found in. Neither the
    /// address (reused once freed) nor the generation (a new zone at a reload
    /// counts from 1 again) would do.
    pub instance: u64,
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
impl Breakers for LiveConfig {
    fn breaker(&self, index: u32) -> Option<&BreakerCells> {
        self.slots.get(index as usize).map(|slot| &slot.breaker)
    }

    fn now_ms(&self) -> u64 {
        // SAFETY: nginx's cached clock, updated by the event loop of this process.
        unsafe { ngx_current_msec as u64 }
    }

    #[inline]
    fn ramp_in_force(&self, index: u32) -> Option<migration_engine::ramp::RampInForce> {
        let service = self.config.services.get(index as usize)?;
        let (fingerprint, outcome) = (service.ramp_fingerprint, service.outcome_fingerprint);
        self.slots.get(index as usize).and_then(|slot| slot.ramp.in_force_for(fingerprint, outcome))
    }
}

impl LiveConfig {
    /// Tells each service's ramp cells what this publication holds: an unchanged
    /// ramp keeps its position, a changed one starts again (docs/ramp.md); the
    /// step in force is logged. Called by the process that committed it, under
    /// the zone's lock.
    pub fn publish_ramps(&self, log: *mut ngx_log_t) {
        let now = unix_now_ms();
        for (service, slot) in self.config.services.iter().zip(self.slots.iter()) {
            let what = slot.ramp.publish(
                service.ramp.as_ref(),
                service.ramp_fingerprint,
                service.outcome_fingerprint,
                service.enabled,
                now,
            );
            crate::state::ramp_timer::log_publication(service, slot, what, log);
        }
    }
}

/// Wall-clock milliseconds: a ramp's `start` is a time of day, the same on every
/// replica.
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What this process routes by, as `Arc::into_raw` (null: nothing). Only the
/// event loop's thread reads or replaces it (the compile thread never
/// does), so a load followed by taking a reference cannot race a swap that
/// frees the configuration.
static CURRENT: AtomicPtr<LiveConfig> = AtomicPtr::new(ptr::null_mut());

/// What this process routes by now; None without `migration_config`.
#[inline]
pub fn current() -> Option<Arc<LiveConfig>> {
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

/// A new [`LiveConfig::instance`].
pub fn next_instance() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Whether `live` is what this process routes by now.
#[inline]
pub fn is_current(live: &Arc<LiveConfig>) -> bool {
    ptr::eq(CURRENT.load(Ordering::Acquire), Arc::as_ptr(live))
}

/// Makes `new` what this process routes by; returns what it replaces.
fn replace_current(new: Arc<LiveConfig>) -> Option<Arc<LiveConfig>> {
    let old = CURRENT.swap(Arc::into_raw(new) as *mut LiveConfig, Ordering::AcqRel);
    // SAFETY: a non-null value of CURRENT came from Arc::into_raw; its reference
    // passes to the caller.
    (!old.is_null()).then(|| unsafe { Arc::from_raw(old) })
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The services' names, in order: the keys of their slots in the zone.
pub fn service_names(config: &CompiledConfig) -> Vec<&str> {
    config.services.iter().map(|s| s.name.as_str()).collect()
}

/// This process's entry in the zone's process table (usize::MAX: none).
pub(super) static PROCESS_ENTRY: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Generations this process replaced while requests still held them. A request
/// holds them for their strings only (it reaches the zone through the current
/// configuration: `RequestDecision::live_slot`); kept here so that the last one
/// is dropped on the compile thread, never on the event loop.
static RETIRED: Mutex<Vec<Arc<LiveConfig>>> = Mutex::new(Vec::new());

/// Makes `published` what this process routes by, and announces its generation.
pub fn adopt(published: Arc<LiveConfig>) {
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
pub fn announce_held(zone: &Zone) {
    let entry = PROCESS_ENTRY.load(Ordering::Acquire);
    let mut retired = RETIRED.lock().unwrap_or_else(|e| e.into_inner());
    let (held, released): (Vec<_>, Vec<_>) = retired.drain(..).partition(|p| Arc::strong_count(p) > 1);
    *retired = held;
    for published in released {
        if let Ok(published) = Arc::try_unwrap(published) {
            crate::state::compile_thread::discard(published.config);
        }
    }
    drop(retired);
    if let (Some(routing), true) = (current().map(|p| p.generation), entry != usize::MAX) {
        zone.announce(entry, routing);
    }
}

/// Replaces this process's configuration by the zone's committed one when its
/// generation moved, compiling it here and now: only for `init_process`, before
/// the worker serves (the event loop hands this to the compile thread).
pub fn catch_up_now(zone: &Zone, log: *mut ngx_log_t) -> Option<Arc<LiveConfig>> {
    if current().is_some_and(|c| c.generation == zone.generation()) {
        return current();
    }
    // The copy is taken under the lock, and compiled after it is released:
    // in an `if let` the lock's guard would live through the compile, and every
    // other process's status request, `watch=` tick and the master's reload
    // would wait for it. The record's slots stay: this worker's entry in the
    // process table holds an older generation than the record's.
    let record = zone.lock().read();
    if let Some(record) = record {
        let compiled = migration_engine::load_str(&record.source, &record.text).map_err(|e| e.to_string());
        adopt_record(zone, record, compiled, log);
    }
    current()
}

/// Routes by the zone's `record`, compiled (here or on the compile thread),
/// unless this process already routes by that generation or a newer one.
pub fn adopt_record(zone: &Zone, record: RecordCopy, compiled: Result<CompiledConfig, String>, log: *mut ngx_log_t) {
    match compiled {
        Ok(config) if current().is_none_or(|c| c.generation < record.generation) => {
            adopt(Arc::new(LiveConfig {
                instance: next_instance(),
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
    }
}

/// When another process published a newer generation, hands its record to the
/// compile thread to compile; true when it did.
pub fn catch_up_later(zone: &Zone) -> bool {
    if compile_thread::busy() || current().is_some_and(|c| c.generation == zone.generation()) {
        return compile_thread::busy();
    }
    match zone.lock().read() {
        Some(record) => compile_thread::submit(compile_thread::Job::CatchUp(record)),
        None => false,
    }
}
