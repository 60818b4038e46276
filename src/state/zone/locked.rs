//! The zone under its lock: preparing, committing and reading the published
//! record, the process table, reclaiming the slots no process can touch.

use super::*;

/// The zone, locked; unlocked on drop.
pub struct Locked<'a> {
    pub(super) zone: &'a Zone,
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

    /// The long-lived requests' cells of the slot of service `name` that `id`
    /// names, if that slot is still in the zone: the configuration this process
    /// routes by may no longer have the service, and its slot may have been freed
    /// since. The cells are borrowed for as long as the lock.
    pub fn long_lived_of(&self, name: &str, id: SlotIdentity) -> Option<&LongLivedCells> {
        let mut p = self.header().slots.load(Ordering::Acquire);
        while let Some(slot) = NonNull::new(p) {
            // SAFETY: a slot on the list is live while the lock is held
            // (reclaiming one unlinks it under the lock).
            let slot = unsafe { slot.as_ref() };
            if slot.identity() == Some(id) && slot.name() == name.as_bytes() {
                return slot.long_lived();
            }
            p = slot.next.load(Ordering::Acquire);
        }
        None
    }

    fn free(&mut self, p: *mut u8) {
        if !p.is_null() {
            // SAFETY: under the lock; `p` came from calloc on this pool.
            unsafe { ngx_slab_free_locked(self.zone.pool.as_ptr(), p as *mut _) };
        }
    }

    /// The slots of `names`, in order, creating those the zone has not seen yet.
    /// New slots get `cells` counter cells, or one where those do not fit (a
    /// slot with one cell is always valid: the status sums each slot's own
    /// cells, and a process whose cell a slot lacks counts into its first).
    fn slots_for(&mut self, names: &[&str], cells: usize) -> Option<Vec<SlotRef>> {
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
            let mut cells = cells.max(1);
            let mut p = self.calloc(ServiceSlot::size(cells, name.len())) as *mut ServiceSlot;
            if p.is_null() && cells > 1 {
                cells = 1;
                p = self.calloc(ServiceSlot::size(cells, name.len())) as *mut ServiceSlot;
            }
            let slot = NonNull::new(p)?;
            let long_lived = self.calloc(size_of::<LongLivedCells>()) as *mut LongLivedCells;
            if long_lived.is_null() {
                self.free(p as *mut u8);
                return None;
            }
            // SAFETY: a zeroed ServiceSlot (zero atomics, null next) with room for
            // its zeroed counter cells and the name after them; linked under the lock.
            unsafe {
                let cells_end = ServiceSlot::name_offset(cells);
                ptr::copy_nonoverlapping(name.as_ptr(), (p as *mut u8).add(cells_end), name.len());
                // All small: at most MAX_CELLS cells, a name of a YAML file of at most max_size.
                (*p).cells = cells as u32;
                (*p).cells_end = cells_end as u32;
                (*p).name_len = name.len() as u32;
                // Zeroed atomics are valid LongLivedCells.
                (*p).long_lived = AtomicPtr::new(long_lived);
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
        // What it needs at the least: one counter cell per new slot.
        let shortfall = || Shortfall { needed: required_zone_size(source.len(), text.len(), services, 1) };
        let size = Record::size(services.len(), source.len(), text.len());
        let cells = self.zone.cells();
        let mut attempt = || -> Option<(Vec<SlotRef>, NonNull<Record>)> {
            let slots = self.slots_for(services, cells)?;
            let record = NonNull::new(self.calloc(size) as *mut Record)?;
            Some((slots, record))
        };
        // A full zone first gives back the slots of services no one can use any more.
        let (slots, record) = match attempt() {
            Some(done) => done,
            None => {
                self.reclaim();
                // Tight: new slots take one cell each, so that what fitted before
                // there were cells per worker still fits.
                let mut attempt = || -> Option<(Vec<SlotRef>, NonNull<Record>)> {
                    let slots = self.slots_for(services, 1)?;
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

    /// Drops `record` if it is still the pending one: the prepare of a reload
    /// that failed after the zone's init (a `listen` nginx could not bind),
    /// whose cycle nginx destroys without `init_module`. Left in, its copy of
    /// the file and its slots would take room from `watch=` until the next
    /// reload.
    pub fn drop_pending(&mut self, record: NonNull<Record>) -> bool {
        let pending = &self.header().pending;
        if pending.compare_exchange(record.as_ptr(), ptr::null_mut(), Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        self.drop_prepared(record);
        true
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
    /// other record holds become as old as the committed generation, and those
    /// it made (of services no record ever published) as old as none: a slot
    /// used from generation 0 to the committed one would look held by the
    /// running cycle, and never be reclaimed.
    fn drop_prepared(&mut self, record: NonNull<Record>) {
        let generation = self.zone.generation();
        // SAFETY: the prepared record is complete and ours alone; its slots are live.
        for slot in unsafe { record_slots(record) } {
            // SAFETY: as above.
            let slot = unsafe { &**slot };
            let last = if slot.first_used.load(Ordering::Acquire) == 0 { 0 } else { generation };
            let _ = slot.last_used.compare_exchange(u64::MAX, last, Ordering::AcqRel, Ordering::Acquire);
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
        // The committed record is held whoever is registered: any process may
        // read it next (a worker respawned while no other process is
        // registered; the table is then empty, and would hold nothing).
        let oldest_held = self.oldest_held_generation().min(self.zone.generation());
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
                self.free(slot_ref.long_lived.load(Ordering::Acquire) as *mut u8);
                self.free(slot.as_ptr() as *mut u8);
                freed += 1;
                continue;
            }
            // SAFETY: as above; the link lives in the slot, which stays linked.
            link = unsafe { &(*slot.as_ptr()).next };
        }
        freed
    }

    /// The oldest generation a running process still holds (u64::MAX when none
    /// is registered): slots of later generations cannot be reclaimed before it
    /// moves on or exits.
    pub fn oldest_held_generation(&mut self) -> u64 {
        self.forget_dead_processes();
        let mut oldest_held = u64::MAX;
        for entry in &self.header().processes {
            if entry.pid.load(Ordering::Acquire) != 0 {
                oldest_held = oldest_held.min(entry.generation.load(Ordering::Acquire));
            }
        }
        oldest_held
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
