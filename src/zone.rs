//! The shared zone of SPEC "Reload and updates" and "Status": the published
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
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use ahash::AHashMap;
use migration_engine::ramp::RampCells;
use migration_engine::responses::ResponseCells;
use migration_engine::{BreakerCells, Counts, FallbackReport, Rule};
use ngx::ffi::{
    ngx_log_t, ngx_pagesize, ngx_pid_t, ngx_shm_zone_t, ngx_shmtx_force_unlock, ngx_shmtx_lock, ngx_shmtx_trylock,
    ngx_shmtx_unlock, ngx_slab_calloc_locked, ngx_slab_free_locked, ngx_slab_page_t, ngx_slab_pool_t, ngx_slab_stat_t,
    NGX_LOG_WARN,
};
use ngx::ngx_log_error;

/// Marks a zone laid out by this version of the module ("migzone" + its layout).
const MAGIC: u64 = u64::from_be_bytes(*b"migzone\x06");

/// Processes (workers of the current and of draining older cycles) that can say
/// which generation they may still touch. Beyond it, slots are not reclaimed.
const PROCESSES: usize = 256;

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

/// A service's counters and fallback state, found by the service's name, so they
/// carry over from one configuration to the next. Followed by the name's bytes.
/// A slot is freed only once no record uses it and no process can still hold a
/// generation that did.
#[repr(C)]
pub struct ServiceSlot {
    next: AtomicPtr<ServiceSlot>,
    /// The first generation whose record used it (0: none yet).
    first_used: AtomicU64,
    /// The last generation whose record uses it; `u64::MAX` while a prepared,
    /// uncommitted record does.
    last_used: AtomicU64,
    counts: [[AtomicU64; Rule::COUNT]; 2],
    /// The service's fallback breaker (SPEC "fallback"); zeroed is closed.
    pub breaker: BreakerCells,
    /// Responses per target: status classes and the upstream time histogram.
    pub responses: ResponseCells,
    /// Where the service's ramp stands; zeroed is no ramp.
    pub ramp: RampCells,
    name_len: usize,
}

impl ServiceSlot {
    fn name(&self) -> &[u8] {
        // SAFETY: a slot is allocated with its name's bytes right after it.
        unsafe { slice::from_raw_parts((self as *const ServiceSlot).add(1) as *const u8, self.name_len) }
    }

    #[inline]
    pub fn count(&self, target: migration_engine::Target, rule: Rule) {
        self.counts[target.index()][rule.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> Counts {
        let mut out = [[0; Rule::COUNT]; 2];
        for (row, cells) in out.iter_mut().zip(&self.counts) {
            for (n, cell) in row.iter_mut().zip(cells) {
                *n = cell.load(Ordering::Relaxed);
            }
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
    pub unsafe fn attach(shm_zone: &ngx_shm_zone_t, fresh: bool) -> Result<Zone, String> {
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

/// The zone, locked; unlocked on drop.
pub struct Locked<'a> {
    zone: &'a Zone,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: this guard holds the lock.
        unsafe { ngx_shmtx_unlock(&mut (*self.zone.pool.as_ptr()).mutex) };
    }
}

impl Locked<'_> {
    fn header(&self) -> &ZoneHeader {
        self.zone.header()
    }

    /// Sets the file's state: refused with `message` since `since` (Unix
    /// seconds), or fine (None). A refusal already recorded keeps its `since`.
    pub fn set_file_refused(&mut self, refused: Option<(&str, u64)>) {
        let header = self.header();
        let Some((message, since)) = refused else {
            header.file_refused_since.store(0, Ordering::Release);
            return;
        };
        let mut bytes = [0u8; FILE_ERROR_BYTES];
        // Cut on a character boundary.
        let mut len = message.len().min(FILE_ERROR_BYTES);
        while !message.is_char_boundary(len) {
            len -= 1;
        }
        bytes[..len].copy_from_slice(&message.as_bytes()[..len]);
        for (word, chunk) in header.file_error.iter().zip(bytes.chunks(8)) {
            word.store(u64::from_le_bytes(chunk.try_into().expect("8 bytes")), Ordering::Relaxed);
        }
        header.file_error_len.store(len as u64, Ordering::Release);
        if header.file_refused_since.load(Ordering::Acquire) == 0 {
            header.file_refused_since.store(since.max(1), Ordering::Release);
        }
    }

    fn calloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: under the lock.
        unsafe { ngx_slab_calloc_locked(self.zone.pool.as_ptr(), size) as *mut u8 }
    }

    fn free(&mut self, p: *mut u8) {
        if !p.is_null() {
            // SAFETY: under the lock; `p` came from calloc on this pool.
            unsafe { ngx_slab_free_locked(self.zone.pool.as_ptr(), p as *mut _) };
        }
    }

    /// The slots of `names`, in order, creating those the zone has not seen yet.
    fn slots_for(&mut self, names: &[&str]) -> Option<Vec<SlotRef>> {
        let mut known: AHashMap<&[u8], SlotRef> = AHashMap::new();
        let mut p = self.header().slots.load(Ordering::Acquire);
        while let Some(slot) = NonNull::new(p) {
            let slot = SlotRef(slot);
            // SAFETY: a slot on the list is live (reclaiming one unlinks it under the
            // lock this function holds); its name is immutable.
            let name: &[u8] = unsafe { &*(slot.name() as *const [u8]) };
            known.insert(name, slot);
            p = slot.next.load(Ordering::Acquire);
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(&slot) = known.get(name.as_bytes()) {
                out.push(slot);
                continue;
            }
            let p = self.calloc(size_of::<ServiceSlot>() + name.len()) as *mut ServiceSlot;
            let slot = NonNull::new(p)?;
            // SAFETY: a zeroed ServiceSlot (zero atomics, null next) with room for
            // the name right after it; linked under the lock.
            unsafe {
                ptr::copy_nonoverlapping(name.as_ptr(), p.add(1) as *mut u8, name.len());
                (*p).name_len = name.len();
                // Reclaimable until a record that uses it is prepared.
                (*p).last_used = AtomicU64::new(0);
                (*p).next = AtomicPtr::new(self.header().slots.load(Ordering::Acquire));
            }
            self.header().slots.store(p, Ordering::Release);
            out.push(SlotRef(slot));
        }
        Some(out)
    }

    /// Writes a configuration into a new record (not yet visible to anyone) and
    /// returns it with the slots of its services.
    pub fn prepare(
        &mut self,
        source: &str,
        text: &str,
        content_hash: u64,
        loaded_at: u64,
        services: &[&str],
    ) -> Result<(NonNull<Record>, Vec<SlotRef>), Shortfall> {
        let shortfall = || Shortfall { needed: required_zone_size(source.len(), text.len(), services) };
        let size = Record::size(services.len(), source.len(), text.len());
        let mut attempt = || -> Option<(Vec<SlotRef>, NonNull<Record>)> {
            let slots = self.slots_for(services)?;
            let record = NonNull::new(self.calloc(size) as *mut Record)?;
            Some((slots, record))
        };
        // A full zone first gives back the slots of services no one can use any more.
        let (slots, record) = match attempt() {
            Some(done) => done,
            None => {
                self.reclaim();
                let mut attempt = || -> Option<(Vec<SlotRef>, NonNull<Record>)> {
                    let slots = self.slots_for(services)?;
                    let record = NonNull::new(self.calloc(size) as *mut Record)?;
                    Some((slots, record))
                };
                attempt().ok_or_else(shortfall)?
            }
        };
        // In use by a prepared record from now on, until a commit dates it.
        for slot in &slots {
            slot.last_used.store(u64::MAX, Ordering::Release);
        }
        // SAFETY: `record` has room for the header, the slot array, the path and
        // the text, in that order.
        unsafe {
            let r = record.as_ptr();
            ptr::write(
                r,
                Record {
                    generation: 0,
                    loaded_at,
                    content_hash,
                    slot_count: slots.len(),
                    path_len: source.len(),
                    text_len: text.len(),
                },
            );
            let slot_array = r.add(1) as *mut *mut ServiceSlot;
            for (i, slot) in slots.iter().enumerate() {
                *slot_array.add(i) = slot.0.as_ptr();
            }
            let bytes = slot_array.add(slots.len()) as *mut u8;
            ptr::copy_nonoverlapping(source.as_ptr(), bytes, source.len());
            ptr::copy_nonoverlapping(text.as_ptr(), bytes.add(source.len()), text.len());
        }
        Ok((record, slots))
    }

    /// Keeps a prepared record as the reload's pending one, dropping a pending
    /// record left by a reload that failed after preparing. Returns the serial the
    /// commit will compare with.
    pub fn set_pending(&mut self, record: NonNull<Record>) -> u64 {
        let previous = self.header().pending.swap(record.as_ptr(), Ordering::AcqRel);
        if let Some(previous) = NonNull::new(previous) {
            self.drop_prepared(previous);
        }
        self.header().serial.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The master's commit of its cycle's pending record; moves the epoch, so that
    /// workers of older cycles stop publishing. If a worker's `watch=` published
    /// the same file since the prepare (so from a newer read of it), that record
    /// stays and the pending one is dropped.
    pub fn commit_pending(&mut self, prepared_serial: u64) -> Option<Commit> {
        let pending = NonNull::new(self.header().pending.swap(ptr::null_mut(), Ordering::AcqRel))?;
        self.header().epoch.fetch_add(1, Ordering::AcqRel);
        let newer = self.header().serial.load(Ordering::Acquire) != prepared_serial
            && self.committed_source().is_some_and(|committed| {
                // SAFETY: the pending record is complete and ours alone.
                committed == unsafe { record_source(pending) }
            });
        if newer {
            let generation = self.zone.generation();
            self.drop_prepared(pending);
            self.header().cycle_generation.store(generation, Ordering::Release);
            return Some(Commit { generation, kept_newer: true });
        }
        let generation = self.commit(pending);
        self.header().cycle_generation.store(generation, Ordering::Release);
        Some(Commit { generation, kept_newer: false })
    }

    /// Frees a prepared record that will not be committed; its slots that no
    /// other record holds become as old as the committed generation.
    fn drop_prepared(&mut self, record: NonNull<Record>) {
        let generation = self.zone.generation();
        // SAFETY: the prepared record is complete and ours alone; its slots are live.
        for slot in unsafe { record_slots(record) } {
            // SAFETY: as above.
            let slot = unsafe { &**slot };
            let _ = slot.last_used.compare_exchange(u64::MAX, generation, Ordering::AcqRel, Ordering::Acquire);
        }
        self.free(record.as_ptr() as *mut u8);
    }

    /// Frees the slots no process can still use. A process holds the generations
    /// from the oldest it announced up to the newest; a worker the master forks
    /// (a respawn after a crash) starts with the cycle's generation. A slot is
    /// used from the first to the last generation whose record has it, and is
    /// freed when neither range meets that one. Returns how many were freed.
    pub fn reclaim(&mut self) -> usize {
        if self.header().processes_overflowed.load(Ordering::Acquire) != 0 {
            return 0;
        }
        let cycle = self.header().cycle_generation.load(Ordering::Acquire);
        self.forget_dead_processes();
        let mut oldest_held = u64::MAX;
        for entry in &self.header().processes {
            if entry.pid.load(Ordering::Acquire) != 0 {
                oldest_held = oldest_held.min(entry.generation.load(Ordering::Acquire));
            }
        }
        let mut freed = 0;
        let zone = self.zone;
        let mut link: &AtomicPtr<ServiceSlot> = &zone.header().slots;
        while let Some(slot) = NonNull::new(link.load(Ordering::Acquire)) {
            // SAFETY: a linked slot is live until unlinked, under this lock.
            let slot_ref = unsafe { slot.as_ref() };
            let (first, last) =
                (slot_ref.first_used.load(Ordering::Acquire), slot_ref.last_used.load(Ordering::Acquire));
            let held_by_cycle = first <= cycle && cycle <= last;
            if last < oldest_held && !held_by_cycle {
                link.store(slot_ref.next.load(Ordering::Acquire), Ordering::Release);
                self.free(slot.as_ptr() as *mut u8);
                freed += 1;
                continue;
            }
            // SAFETY: as above; the link lives in the slot, which stays linked.
            link = unsafe { &(*slot.as_ptr()).next };
        }
        freed
    }

    /// Frees the entries of processes that no longer run. `exit_process` gives an
    /// entry back only on a normal exit: a worker the OOM killer or a crash took
    /// leaves its entry, which is taken back here (gone, or a zombie).
    fn forget_dead_processes(&mut self) {
        for entry in &self.header().processes {
            let pid = entry.pid.load(Ordering::Acquire);
            if pid != 0 && process_is_gone(pid as ngx_pid_t) {
                entry.pid.store(0, Ordering::Release);
            }
        }
    }

    /// Claims an entry of the process table for `pid`, starting at `generation`;
    /// None when the table is full of live processes (then slots are not
    /// reclaimed while it is). Entries of dead processes are taken back first.
    pub fn register(&mut self, pid: u64, generation: u64) -> Option<usize> {
        let free = |header: &ZoneHeader| header.processes.iter().position(|e| e.pid.load(Ordering::Acquire) == 0);
        let mut found = free(self.header());
        if found.is_none() {
            self.forget_dead_processes();
            found = free(self.header());
        }
        let Some(index) = found else {
            self.header().processes_overflowed.store(1, Ordering::Release);
            return None;
        };
        let entry = &self.header().processes[index];
        entry.generation.store(generation, Ordering::Release);
        entry.pid.store(pid, Ordering::Release);
        Some(index)
    }

    /// Whether a `watch=` publication begun at `epoch` and `serial` may commit:
    /// no reload happened since (its worker's cycle is the current one) and
    /// nothing was prepared or committed since it read the file.
    pub fn may_publish(&self, epoch: u64, serial: u64) -> bool {
        self.header().epoch.load(Ordering::Acquire) == epoch && self.header().serial.load(Ordering::Acquire) == serial
    }

    /// Makes `record` the published configuration under the next generation, and
    /// frees the one it replaces (readers copy records under this lock).
    pub fn commit(&mut self, record: NonNull<Record>) -> u64 {
        let generation = self.header().generation.load(Ordering::Relaxed) + 1;
        // SAFETY: `record` was prepared under this lock and is ours alone; its slot
        // array holds `slot_count` live slots.
        unsafe {
            (*record.as_ptr()).generation = generation;
            for slot in record_slots(record) {
                let slot = &**slot;
                slot.last_used.store(generation, Ordering::Release);
                let _ = slot.first_used.compare_exchange(0, generation, Ordering::AcqRel, Ordering::Acquire);
            }
        }
        let previous = self.header().record.swap(record.as_ptr(), Ordering::AcqRel);
        self.free(previous as *mut u8);
        self.header().serial.fetch_add(1, Ordering::AcqRel);
        self.header().generation.store(generation, Ordering::Release);
        generation
    }

    /// The content hash of the committed record.
    pub fn committed_hash(&mut self) -> Option<u64> {
        // SAFETY: a committed record stays valid while the lock is held.
        NonNull::new(self.header().record.load(Ordering::Acquire)).map(|r| unsafe { r.as_ref().content_hash })
    }

    /// The source path of the committed record.
    fn committed_source(&self) -> Option<&[u8]> {
        // SAFETY: a committed record stays valid while the lock is held.
        NonNull::new(self.header().record.load(Ordering::Acquire)).map(|r| unsafe { record_source(r) })
    }

    /// The committed record, copied out so the lock is held only for a memcpy.
    pub fn read(&mut self) -> Option<RecordCopy> {
        let record = NonNull::new(self.header().record.load(Ordering::Acquire))?;
        // SAFETY: a committed record is complete and is only freed under this lock.
        unsafe {
            let r = record.as_ref();
            let slot_array = record.as_ptr().add(1) as *const *mut ServiceSlot;
            let slots = (0..r.slot_count).filter_map(|i| NonNull::new(*slot_array.add(i)).map(SlotRef)).collect();
            let bytes = slot_array.add(r.slot_count) as *const u8;
            let source = slice::from_raw_parts(bytes, r.path_len);
            let text = slice::from_raw_parts(bytes.add(r.path_len), r.text_len);
            Some(RecordCopy {
                generation: r.generation,
                loaded_at: r.loaded_at,
                content_hash: r.content_hash,
                source: String::from_utf8_lossy(source).into_owned(),
                text: String::from_utf8_lossy(text).into_owned(),
                slots,
            })
        }
    }
}

/// What the master's commit did.
pub struct Commit {
    pub generation: u64,
    /// A `watch=` publication of the same file, newer than the reload's read, stays.
    pub kept_newer: bool,
}

/// The slot pointers stored in a record.
///
/// # Safety
/// `record` is a complete record that stays valid for the returned lifetime.
unsafe fn record_slots<'a>(record: NonNull<Record>) -> &'a [*mut ServiceSlot] {
    // SAFETY: a record is followed by its `slot_count` slot pointers.
    unsafe { slice::from_raw_parts(record.as_ptr().add(1) as *const *mut ServiceSlot, record.as_ref().slot_count) }
}

/// The source path stored in a record.
///
/// # Safety
/// `record` is a complete record that stays valid for the returned lifetime.
unsafe fn record_source<'a>(record: NonNull<Record>) -> &'a [u8] {
    // SAFETY: a record is followed by its slot array, then the path's bytes.
    unsafe {
        let r = record.as_ref();
        let bytes = (record.as_ptr().add(1) as *const *mut ServiceSlot).add(r.slot_count) as *const u8;
        slice::from_raw_parts(bytes, r.path_len)
    }
}

/// A file larger than this that cannot fit the zone is refused from its size
/// alone, unparsed; a smaller one is parsed, so that the refusal says exactly
/// how much it needs (parsing 1 MB takes well under a second).
pub const PARSE_BEFORE_REFUSING: usize = 1 << 20;

/// The smallest zone that holds a configuration: the slab pool's own bookkeeping,
/// the header, a slot per service, and the record twice over (while a new one is
/// written, the old one still serves). Computed the way `ngx_slab_init` and
/// `ngx_slab_alloc` lay out memory, so `nginx -t` can say how much to ask for.
pub fn required_zone_size(path_len: usize, text_len: usize, services: &[&str]) -> usize {
    // SAFETY: ngx_pagesize is set by ngx_os_init before any configuration is read.
    let page = unsafe { ngx_pagesize };
    let max_small = page / 2;
    let class = |size: usize| size.max(8).next_power_of_two();
    // Small allocations share pages of their size class; large ones take whole pages.
    let mut small: AHashMap<usize, usize> = AHashMap::new();
    let mut pages = 0;
    let mut add = |size: usize| {
        if size > max_small {
            pages += size.div_ceil(page);
        } else {
            *small.entry(class(size)).or_default() += 1;
        }
    };
    add(size_of::<ZoneHeader>());
    for name in services {
        add(size_of::<ServiceSlot>() + name.len());
    }
    let record = Record::size(services.len(), path_len, text_len);
    add(record);
    add(record);
    pages += small.iter().map(|(&class, &count)| (count * class).div_ceil(page)).sum::<usize>();
    let classes = page.trailing_zeros() as usize - 3;
    let bookkeeping =
        size_of::<ngx_slab_pool_t>() + classes * (size_of::<ngx_slab_page_t>() + size_of::<ngx_slab_stat_t>());
    // One page descriptor per page, and up to a page lost aligning the first page.
    bookkeeping + pages * (page + size_of::<ngx_slab_page_t>()) + page
}

/// A size in bytes as nginx's configuration would write it, rounded up.
pub fn human_size(bytes: usize) -> String {
    const K: usize = 1024;
    if bytes >= 10 * K * K {
        format!("{}m", bytes.div_ceil(K * K))
    } else {
        format!("{}k", bytes.div_ceil(K))
    }
}
