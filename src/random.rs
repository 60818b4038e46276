//! The per-request random draw of the weighted split: a xorshift64* generator per
//! worker (workers are single-threaded), seeded from the kernel at worker start so
//! that workers do not share a sequence.

use core::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) };
}

/// Seeds this worker's generator; called from `init_process`.
pub fn seed_worker() {
    let mut seed = [0u8; 8];
    // SAFETY: getrandom writes at most `seed.len()` bytes into the buffer.
    let got = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    let mut value = u64::from_ne_bytes(seed);
    if got != seed.len() as isize {
        value ^= (std::process::id() as u64) << 32 ^ std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos() as u64);
    }
    STATE.with(|s| s.set(value | 1));
}

/// A uniform 32-bit draw.
pub fn draw() -> u32 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    })
}

/// A new sticky id: 128 bits from the kernel's random source (`getrandom`,
/// which does not block once the kernel's pool is initialised, long before nginx
/// serves). None if the kernel gives none: the request is then decided as one
/// without an id, and no cookie is sent.
pub fn sticky_id() -> Option<migration_engine::StickyId> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: getrandom writes at most the given length into the buffer's rest.
        let got = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0) };
        if got > 0 {
            filled += got as usize;
        } else if got < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        } else {
            return None;
        }
    }
    Some(migration_engine::StickyId::from_random(bytes))
}
