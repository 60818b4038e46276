//! The shared zone of docs/module.md (migration_config) and docs/status.md: the published
//! configuration and the per-service counters, in an nginx shared-memory zone
//! (`migration_config ... zone=NAME:SIZE`).
//!
//! Only plain bytes, atomics and pointers into the zone itself live there, never a
//! Rust heap pointer: every process maps the zone at the same address (it is
//! mapped by the master before the workers fork), but each has its own heap. The
//! layout is `#[repr(C)]` and marked by [`MAGIC`], so a reload that keeps the zone
//! never reads it with a different layout.
//!
//! Publishing follows nginx's cycle: a reload *prepares* the new record in
//! `init_zone` (where a shortage can still fail the reload cleanly) and *commits* it
//! in `init_module`, once the new cycle can no longer fail. `watch=` prepares and
//! commits in one go, from a worker. The request path never takes the lock: it
//! increments counters with atomics, through slot pointers resolved at publication.

use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::slice;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use ahash::AHashMap;
use migration_engine::ramp::RampCells;
use migration_engine::responses::{ResponseCells, ResponseCounts};
use migration_engine::{BreakerCells, Counts, FallbackReport, Rule};
use ngx::ffi::{
    ngx_log_t, ngx_pid_t, ngx_shm_zone_t, ngx_shmtx_force_unlock, ngx_shmtx_lock, ngx_shmtx_trylock, ngx_shmtx_unlock,
    ngx_slab_calloc_locked, ngx_slab_free_locked, ngx_slab_pool_t, NGX_LOG_WARN,
};
use ngx::ngx_log_error;

mod locked;
mod size;

pub use locked::Locked;
pub use size::{human_size, required_zone_size, PARSE_BEFORE_REFUSING};

/// Marks a zone laid out by this version of the module ("migzone" + its layout).
const MAGIC: u64 = u64::from_be_bytes(*b"migzone\x09");

/// The most counter cells a service slot has (one per worker, up to this many;
/// workers beyond it share).
pub const MAX_CELLS: usize = 64;

/// What two workers' counter cells never share.
const CACHE_LINE: usize = 64;

/// Processes (workers of the current and of draining older cycles) that can say
/// which generation they may still touch. Beyond it, slots are not reclaimed.
pub(crate) const PROCESSES: usize = 256;

/// A process's claim: "I may still use the slots of `generation` and later".
#[repr(C)]
struct ProcessEntry {
    /// 0: a free entry.
    pid: AtomicU64,
    generation: AtomicU64,
}

/// Every field is an atomic, so that no process ever holds a reference to memory
/// another process writes without one. The lock serialises the logical updates of
/// `record`, `pending`, `slots`, `epoch` and `serial`; the others are read and
/// written without it.
#[repr(C)]
struct ZoneHeader {
    magic: AtomicU64,
    /// The committed record's generation; read without the lock to notice a change.
    generation: AtomicU64,
    /// Moves only when the master commits a cycle's configuration (start, reload):
    /// a worker of an older cycle never publishes its own, older, file.
    epoch: AtomicU64,
    /// Moves at every prepare and commit: a publication is committed only if
    /// nothing was prepared or committed since its worker started reading the file.
    serial: AtomicU64,
    /// Content hash of the last file `watch=` refused, so that it is logged once.
    rejected_hash: AtomicU64,
    /// Requests whose Host matched no service.
    unmatched: AtomicU64,
    record: AtomicPtr<Record>,
    /// Prepared by a reload's `init_zone`, not yet committed.
    pending: AtomicPtr<Record>,
    /// Singly linked list of the service slots, unlinked and freed when no
    /// process can still use them (see [`Locked::reclaim`]).
    slots: AtomicPtr<ServiceSlot>,
    /// The generation the master committed for the running cycle: a worker it
    /// forks (a respawn after a crash) starts with it.
    cycle_generation: AtomicU64,
    /// Set when a process found the table full: nothing is reclaimed then.
    processes_overflowed: AtomicU64,
    /// Counter cells per service slot, fixed when the zone is laid out.
    cells: AtomicU64,
    processes: [ProcessEntry; PROCESSES],
    /// The file's state (status `file`): since when a change is refused (Unix
    /// seconds; 0: the file is fine), and the refusal's message, cut to
    /// `FILE_ERROR_BYTES`. Written and read under the lock.
    file_refused_since: AtomicU64,
    file_error_len: AtomicU64,
    file_error: [AtomicU64; FILE_ERROR_BYTES / 8],
}

/// Room for a refusal's message in the zone.
const FILE_ERROR_BYTES: usize = 1024;

/// One published configuration, followed in the same allocation by
/// `[*mut ServiceSlot; slot_count]`, the source path and the YAML text.
#[repr(C)]
pub struct Record {
    generation: u64,
    loaded_at: u64,
    content_hash: u64,
    slot_count: usize,
    path_len: usize,
    text_len: usize,
}

impl Record {
    fn size(slot_count: usize, path_len: usize, text_len: usize) -> usize {
        size_of::<Record>() + slot_count * size_of::<*mut ServiceSlot>() + path_len + text_len
    }
}

/// One process's share of a service's counters: the decisions (requests per
/// target and rule) and the responses per target. Each worker increments its
/// own cell, on cache lines of its own, so that workers on different cores do not
/// pass the same lines back and forth on every request; the status sums the
/// cells, so the totals are exact.
#[repr(C)]
pub struct CounterCell {
    counts: [[AtomicU64; Rule::COUNT]; 2],
    responses: ResponseCells,
    /// Ids `sticky` handed out.
    sticky_minted: AtomicU64,
}

/// A service's long-lived requests (docs/drain.md), in an allocation of their
/// own beside the slot: the slot with one counter cell stays in the 1 KB slab
/// size class it had before they existed (48 more bytes would have doubled it),
/// and requests become long-lived or end seldom enough that every process
/// shares these cells.
#[repr(C)]
#[derive(Default)]
pub struct LongLivedCells {
    /// When the next misplaced long-lived request may be closed (`drain.rate`).
    pub pace: migration_engine::drain::DrainPace,
    /// Long-lived requests open now, per target.
    connections: [AtomicU64; 2],
    /// How many of them are misplaced now.
    misplaced: AtomicU64,
    /// Misplaced long-lived requests closed, per target they were on.
    drained: [AtomicU64; 2],
}

impl LongLivedCells {
    /// A long-lived request on `target` began (`delta` 1) or ended (`u64::MAX`,
    /// that is -1: the gauges wrap).
    pub fn add_connection(&self, target: migration_engine::Target, delta: u64) {
        self.connections[target.index()].fetch_add(delta, Ordering::Relaxed);
    }

    /// A long-lived request became misplaced (1) or stopped being so (-1).
    pub fn add_misplaced(&self, delta: u64) {
        self.misplaced.fetch_add(delta, Ordering::Relaxed);
    }

    /// A misplaced long-lived request on `target` was closed.
    pub fn count_drained(&self, target: migration_engine::Target) {
        self.drained[target.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// As the status shows them.
    pub fn report(&self) -> migration_engine::ConnectionsReport {
        // A process that died (a crash) took its requests with it and could not
        // take them back: never show a negative gauge.
        let gauge = |v: &AtomicU64| match v.load(Ordering::Relaxed) {
            v if v > u64::MAX / 2 => 0,
            v => v,
        };
        migration_engine::ConnectionsReport {
            old: gauge(&self.connections[0]),
            new: gauge(&self.connections[1]),
            misplaced: gauge(&self.misplaced),
            drained: [self.drained[0].load(Ordering::Relaxed), self.drained[1].load(Ordering::Relaxed)],
        }
    }
}

/// Which slot of its service a long-lived request was counted in
/// (`http::drain`): the generation that first used the slot. A service's slot
/// stays in the zone while its name comes and goes (a service removed and
/// added back, or renamed and renamed back); one freed and made again under
/// the same name was first used by a later generation. Nonzero: a slot is
/// first used when the first record that has it is committed, before any
/// process routes by it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SlotIdentity(core::num::NonZeroU64);

/// Where this process's counter cell lies in every slot, from the slot's start:
/// its worker number modulo the zone's cells picks the cell (the first in the
/// master and a single-process nginx). Every slot of a zone has the zone's
/// number of cells, so one offset serves them all, computed once, not per request.
/// Until a process sets it (a process that never does, counts into the first cell).
static OWN_CELL_OFFSET: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Sets which counter cell this process increments (at its start), for a zone
/// of `cells` cells per slot.
pub fn use_cell(worker: usize, cells: usize) {
    let cells = cells.max(1);
    let (first, stride) = ServiceSlot::cell_layout(cells);
    OWN_CELL_OFFSET.store(first + (worker % cells) * stride, Ordering::Relaxed);
}

/// A service's counters and fallback state, found by the service's name, so they
/// carry over from one configuration to the next. Followed by its counter cells
/// (`cells` of them, one per worker) and the name's bytes. A slot is freed only
/// once no record uses it and no process can still hold a generation that did.
#[repr(C)]
pub struct ServiceSlot {
    next: AtomicPtr<ServiceSlot>,
    /// The first generation whose record used it (0: none yet).
    first_used: AtomicU64,
    /// The last generation whose record uses it; `u64::MAX` while a prepared,
    /// uncommitted record does.
    last_used: AtomicU64,
    /// The service's fallback breaker (docs/fallback.md); zeroed is closed.
    pub breaker: BreakerCells,
    /// Where the service's ramp stands; zeroed is no ramp.
    pub ramp: RampCells,
    /// The service's long-lived requests (allocated with the slot, freed with it).
    pub(super) long_lived: AtomicPtr<LongLivedCells>,
    /// How many [`CounterCell`]s follow (at least 1), and where they end, from the
    /// slot's start (where the name begins). u32s: the slot with one cell stays
    /// under 1 KB with the pointer above.
    cells: u32,
    cells_end: u32,
    name_len: u32,
}

impl ServiceSlot {
    /// Where a slot's counter cells start and how far apart they are: right
    /// after the slot when there is one (no other process shares its lines, and
    /// the slot stays in the slab size class it always had), each on cache lines
    /// of its own when there are several (the slab allocates a slot aligned to its
    /// size class, at least 128 bytes).
    fn cell_layout(cells: usize) -> (usize, usize) {
        if cells <= 1 {
            (size_of::<ServiceSlot>(), size_of::<CounterCell>())
        } else {
            (
                size_of::<ServiceSlot>().next_multiple_of(CACHE_LINE),
                size_of::<CounterCell>().next_multiple_of(CACHE_LINE),
            )
        }
    }

    /// The bytes a slot with `cells` counter cells and a name of `name_len` takes.
    pub fn size(cells: usize, name_len: usize) -> usize {
        let (first, stride) = Self::cell_layout(cells);
        first + cells.max(1) * stride + name_len
    }

    /// Counter cell `index` (< `self.cells`).
    fn cell(&self, index: usize) -> &CounterCell {
        let (first, stride) = Self::cell_layout(self.cells as usize);
        // SAFETY: a slot is allocated (ServiceSlot::size) with `cells` zeroed
        // counter cells at this layout, all atomics (valid zeroed), 8-aligned.
        unsafe { &*((self as *const ServiceSlot as *const u8).add(first + index * stride) as *const CounterCell) }
    }

    /// Where the slot's name starts, from its start.
    pub(super) fn name_offset(cells: usize) -> usize {
        let (first, stride) = Self::cell_layout(cells);
        first + cells.max(1) * stride
    }

    fn name(&self) -> &[u8] {
        // SAFETY: the name's bytes follow the counter cells (ServiceSlot::size).
        unsafe {
            slice::from_raw_parts(
                (self as *const ServiceSlot as *const u8).add(self.cells_end as usize),
                self.name_len as usize,
            )
        }
    }

    /// This process's counter cell.
    #[inline]
    fn own_cell(&self) -> &CounterCell {
        let offset = OWN_CELL_OFFSET.load(Ordering::Relaxed);
        // Unset (a process that never started as a worker), or a slot of another
        // layout than the offset's (none exists in one zone): the first cell.
        if offset > (self.cells_end as usize).saturating_sub(size_of::<CounterCell>()) {
            return self.cell(0);
        }
        // SAFETY: within this slot's counter cells (checked just above), at a
        // cell's start: the offset was computed with the same layout.
        unsafe { &*((self as *const ServiceSlot as *const u8).add(offset) as *const CounterCell) }
    }

    #[inline]
    pub fn count(&self, target: migration_engine::Target, rule: Rule) {
        self.own_cell().counts[target.index()][rule.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one response (docs/status.md, "Responses per target").
    #[inline]
    pub fn record_response(&self, target: migration_engine::Target, class: usize, upstream_us: Option<u64>) {
        self.own_cell().responses.record(target, class, upstream_us);
    }

    /// Counts an id `sticky` handed out.
    #[inline]
    pub fn count_minted(&self) {
        self.own_cell().sticky_minted.fetch_add(1, Ordering::Relaxed);
    }

    /// Which slot of its name this is, for [`Locked::long_lived_of`] (None
    /// before its first record is committed).
    pub fn identity(&self) -> Option<SlotIdentity> {
        core::num::NonZeroU64::new(self.first_used.load(Ordering::Acquire)).map(SlotIdentity)
    }

    /// The service's long-lived requests (None: a slot of a zone laid out
    /// without them cannot exist; kept an Option so that nothing dereferences null).
    pub fn long_lived(&self) -> Option<&LongLivedCells> {
        // SAFETY: set once when the slot is made, to an allocation freed only with
        // the slot, which outlives this borrow.
        unsafe { self.long_lived.load(Ordering::Acquire).as_ref() }
    }

    /// The long-lived requests of every process.
    pub fn connections(&self) -> migration_engine::ConnectionsReport {
        self.long_lived().map(LongLivedCells::report).unwrap_or_default()
    }

    /// The ids `sticky` handed out, in every process.
    pub fn sticky_minted(&self) -> u64 {
        (0..(self.cells as usize).max(1)).map(|i| self.cell(i).sticky_minted.load(Ordering::Relaxed)).sum()
    }

    /// The decisions counted by every process.
    pub fn counts(&self) -> Counts {
        let mut out = [[0; Rule::COUNT]; 2];
        for cell in (0..(self.cells as usize).max(1)).map(|i| self.cell(i)) {
            for (row, cells) in out.iter_mut().zip(&cell.counts) {
                for (n, c) in row.iter_mut().zip(cells) {
                    *n += c.load(Ordering::Relaxed);
                }
            }
        }
        out
    }

    /// The responses counted by every process.
    pub fn responses(&self) -> ResponseCounts {
        let mut out = ResponseCounts::default();
        for cell in (0..(self.cells as usize).max(1)).map(|i| self.cell(i)) {
            out.add(&cell.responses.snapshot());
        }
        out
    }

    pub fn fallback(&self) -> FallbackReport {
        FallbackReport {
            state: self.breaker.state(),
            consecutive_failures: self.breaker.consecutive_failures(),
            trips: self.breaker.trips(),
        }
    }
}

/// A slot pointer a process may keep: the slot lives in the shared zone and never
/// moves; it is reclaimed only when no process in the zone's process table can
/// still route by a generation that uses it.
#[derive(Clone, Copy)]
pub struct SlotRef(NonNull<ServiceSlot>);

// SAFETY: a slot is only ever accessed through atomics (and its immutable name).
unsafe impl Send for SlotRef {}
// SAFETY: as above.
unsafe impl Sync for SlotRef {}

impl core::ops::Deref for SlotRef {
    type Target = ServiceSlot;
    fn deref(&self) -> &ServiceSlot {
        // SAFETY: see the type's documentation.
        unsafe { self.0.as_ref() }
    }
}

/// This process's handle on the zone.
#[derive(Clone, Copy)]
pub struct Zone {
    pool: NonNull<ngx_slab_pool_t>,
    header: NonNull<ZoneHeader>,
}

// SAFETY: the header's shared fields are atomics; the others are only touched
// under the zone's lock, which serialises processes (and threads).
unsafe impl Send for Zone {}
// SAFETY: as above.
unsafe impl Sync for Zone {}

/// A copy of the committed record, taken under the lock.
pub struct RecordCopy {
    pub generation: u64,
    pub loaded_at: u64,
    pub content_hash: u64,
    pub source: String,
    pub text: String,
    pub slots: Vec<SlotRef>,
}

/// The record would not fit: what the zone would need, in bytes.
pub struct Shortfall {
    pub needed: usize,
}

impl Zone {
    /// Takes hold of the zone nginx mapped for us: lays out a fresh one, or checks
    /// that a zone kept over a reload was laid out by this same layout.
    ///
    /// # Safety
    /// `shm_zone` is the zone being initialised, in its `init` callback.
    /// A fresh zone gets `cells` counter cells per service slot.
    pub unsafe fn attach(shm_zone: &ngx_shm_zone_t, fresh: bool, cells: usize) -> Result<Zone, String> {
        let pool = NonNull::new(shm_zone.shm.addr as *mut ngx_slab_pool_t).ok_or("the zone is not mapped")?;
        if !fresh {
            // SAFETY: a kept zone's slab pool holds our header in `data` since it was fresh.
            let header = unsafe { pool.as_ref().data } as *mut ZoneHeader;
            return match NonNull::new(header) {
                // SAFETY: the header was written when the zone was fresh.
                Some(header) if unsafe { header.as_ref() }.magic.load(Ordering::Acquire) == MAGIC => {
                    Ok(Zone { pool, header })
                }
                _ => {
                    Err("was laid out by another version of the module; change its size or name, or restart nginx"
                        .into())
                }
            };
        }
        let zone = Zone { pool, header: NonNull::dangling() };
        let guard = zone.lock();
        // SAFETY: under the lock; calloc returns zeroed memory, a valid ZoneHeader
        // (null pointers, zero atomics) once the magic is set.
        let header = unsafe { ngx_slab_calloc_locked(pool.as_ptr(), size_of::<ZoneHeader>()) } as *mut ZoneHeader;
        drop(guard);
        let header = NonNull::new(header).ok_or("is too small to hold even its header")?;
        // SAFETY: fresh zone, no other process has it yet; the header was just allocated.
        unsafe {
            header.as_ref().cells.store(cells.clamp(1, MAX_CELLS) as u64, Ordering::Relaxed);
            header.as_ref().magic.store(MAGIC, Ordering::Release);
            (*pool.as_ptr()).data = header.as_ptr() as *mut _;
            // A full zone is reported by us, with the size it needs, not as a [crit].
            (*pool.as_ptr()).set_log_nomem(0);
        }
        Ok(Zone { pool, header })
    }

    fn header(&self) -> &ZoneHeader {
        // SAFETY: the header lives as long as the zone; its shared fields are atomics.
        unsafe { self.header.as_ref() }
    }

    /// Counter cells per service slot.
    pub fn cells(&self) -> usize {
        self.header().cells.load(Ordering::Relaxed) as usize
    }

    /// The committed generation (0 before the first commit).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.header().generation.load(Ordering::Acquire)
    }

    /// The zone's size in bytes, as nginx mapped it.
    pub fn size(&self) -> usize {
        // SAFETY: the slab pool header records the end of the mapped zone.
        unsafe { (*self.pool.as_ptr()).end as usize - self.pool.as_ptr() as usize }
    }

    /// Says that this process may still use the slots of `generation` and later
    /// (its entry of the process table, from [`Locked::register`]).
    pub fn announce(&self, entry: usize, generation: u64) {
        if let Some(e) = self.header().processes.get(entry) {
            e.generation.store(generation, Ordering::Release);
        }
    }

    /// Gives the process's entry back, at its exit.
    pub fn unregister(&self, entry: usize) {
        if let Some(e) = self.header().processes.get(entry) {
            e.pid.store(0, Ordering::Release);
        }
    }

    /// The epoch of the master's last commit.
    pub fn epoch(&self) -> u64 {
        self.header().epoch.load(Ordering::Acquire)
    }

    /// Moves at every prepare and commit.
    pub fn serial(&self) -> u64 {
        self.header().serial.load(Ordering::Acquire)
    }

    #[inline]
    pub fn count_unmatched(&self) {
        self.header().unmatched.fetch_add(1, Ordering::Relaxed);
    }

    pub fn unmatched(&self) -> u64 {
        self.header().unmatched.load(Ordering::Relaxed)
    }

    /// The file's state: the refusal's message and since when (Unix seconds), or
    /// None while the file is fine.
    pub fn file_refused(&self) -> Option<(String, u64)> {
        let _locked = self.lock();
        let header = self.header();
        let since = header.file_refused_since.load(Ordering::Acquire);
        if since == 0 {
            return None;
        }
        let len = (header.file_error_len.load(Ordering::Acquire) as usize).min(FILE_ERROR_BYTES);
        let bytes: Vec<u8> = header.file_error.iter().flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes()).collect();
        Some((String::from_utf8_lossy(&bytes[..len]).into_owned(), since))
    }

    /// Records `hash` as the last refused change; true when it was not already
    /// (so the caller logs it, once for all workers).
    pub fn refuse(&self, hash: u64) -> bool {
        self.header().rejected_hash.swap(hash, Ordering::AcqRel) != hash
    }

    /// The content hash of the last refused change.
    pub fn refused_hash(&self) -> u64 {
        self.header().rejected_hash.load(Ordering::Acquire)
    }

    /// Takes the zone's lock: the slab pool's own mutex. nginx's master releases
    /// it for a worker that died holding it only when it reaps that worker, from
    /// its SIGCHLD handling, which runs only while the master waits in
    /// sigsuspend: a master that waited for this lock itself would never reap
    /// the dead holder.
    pub fn lock(&self) -> Locked<'_> {
        // SAFETY: the pool's mutex was created by ngx_init_zone_pool.
        unsafe { ngx_shmtx_lock(&mut (*self.pool.as_ptr()).mutex) };
        Locked { zone: self }
    }

    /// Takes the zone's lock in the master (a reload), which must never wait for
    /// it for good: a worker that died holding it is not reaped (and its lock not
    /// released) while the master waits here. So the master tries, and when the
    /// holder is dead (gone, or a zombie nobody reaped yet) it releases the lock
    /// itself, as nginx's reaping would; after `MASTER_LOCK_WAIT_MS` of a live
    /// holder it gives up, and the reload is refused instead of hanging.
    pub fn lock_in_master(&self, log: *mut ngx_log_t) -> Result<Locked<'_>, String> {
        // SAFETY: the pool's mutex was created by ngx_init_zone_pool.
        let mutex = unsafe { &mut (*self.pool.as_ptr()).mutex };
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(MASTER_LOCK_WAIT_MS);
        loop {
            // SAFETY: as above.
            if unsafe { ngx_shmtx_trylock(mutex) } != 0 {
                return Ok(Locked { zone: self });
            }
            // SAFETY: `lock` points at the mutex's word in the zone: the holder's pid.
            let holder = unsafe { core::ptr::read_volatile(mutex.lock) } as ngx_pid_t;
            if holder > 0 && process_is_gone(holder) {
                // SAFETY: the lock word names a process that no longer runs.
                if unsafe { ngx_shmtx_force_unlock(mutex, holder) } != 0 {
                    ngx_log_error!(
                        NGX_LOG_WARN,
                        log,
                        "migration: process {} died holding the zone's lock; the master released it",
                        holder
                    );
                }
                continue;
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!("the zone's lock is held by process {holder} for over {MASTER_LOCK_WAIT_MS} ms"));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// How long the master waits for a live holder of the zone's lock.
const MASTER_LOCK_WAIT_MS: u64 = 5_000;

/// Whether `pid` no longer runs: no such process, or a zombie (dead, not reaped:
/// the master cannot reap while it waits for the lock).
fn process_is_gone(pid: ngx_pid_t) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name's closing parenthesis.
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => {
            // SAFETY: kill with signal 0 only checks that the process exists.
            let missing = unsafe { libc::kill(pid, 0) } != 0;
            missing && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        }
    }
}
