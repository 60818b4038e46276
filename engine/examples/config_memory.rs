//! How much memory a compiled configuration holds: what each worker keeps per
//! generation, and what a long-lived request keeps alive while it lasts (the
//! configuration it was decided with, whose strings its variables returned).
//!
//!   cargo run --release -p migration-engine --example config_memory -- FILE...
//!
//! Counts the bytes the global allocator holds after `load_str` minus before
//! (the file's text is read before, and not counted).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; the
// counter only adds what it allocates and subtracts what it frees.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: (caller) a layout of non-zero size, as GlobalAlloc::alloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: (caller) `ptr` came from this allocator, that is from System, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: (caller) as for dealloc, and a non-zero `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: config_memory FILE...");
        std::process::exit(2);
    }
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let before = HELD.load(Ordering::Relaxed);
        let config = migration_engine::load_str(&path, &text).unwrap_or_else(|e| panic!("{e}"));
        let held = HELD.load(Ordering::Relaxed) - before;
        let services = config.services.len();
        println!(
            "{path}: {services} services, the compiled configuration holds {held} bytes ({} a service)",
            held / services.max(1) as isize
        );
    }
}
