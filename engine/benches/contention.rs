//! What sharing the zone's counter cells costs when several processes count at
//! once: N threads record responses (the log phase's three relaxed increments
//! into a service's `ResponseCells`) either all into one set of cells, as every
//! nginx worker does today, or each into its own cache-line-aligned set, summed
//! when read (what per-worker cells would do). Threads stand in for workers: the
//! zone is shared memory, and a cache line bounces between cores the same way
//! whether the writers are threads or processes.
//!
//!     cargo bench -p migration-engine --bench contention [-- THREADS...]
//!
//! Prints nanoseconds per recorded response for each thread count (default 1,
//! 2 and the machine's cores), and the ratio shared / per-thread.

use std::sync::Barrier;
use std::time::Instant;

use migration_engine::responses::ResponseCells;
use migration_engine::Target;

/// One worker's cells, alone on their cache lines.
#[repr(align(64))]
#[derive(Default)]
struct Padded(ResponseCells);

const RECORDS: u64 = 2_000_000;

/// Nanoseconds per record, each of `threads` threads recording RECORDS
/// responses into `cells(thread)`.
fn run<'a>(threads: usize, cells: &(dyn Fn(usize) -> &'a ResponseCells + Sync)) -> f64 {
    let start = Barrier::new(threads + 1);
    let elapsed = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (start, cells) = (&start, &cells);
                s.spawn(move || {
                    let own = cells(t);
                    start.wait();
                    let began = Instant::now();
                    for i in 0..RECORDS {
                        // A 2xx of new, its upstream time spread over the buckets.
                        own.record(Target::New, 1, Some(i & 0xffff));
                    }
                    began.elapsed()
                })
            })
            .collect();
        start.wait();
        workers.into_iter().map(|w| w.join().unwrap()).max().unwrap()
    });
    elapsed.as_nanos() as f64 / RECORDS as f64
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut counts: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if counts.is_empty() {
        counts = vec![1, 2, cores];
        counts.sort_unstable();
        counts.dedup();
    }
    println!("contention: {RECORDS} responses recorded per thread, {cores} cores");
    for threads in counts {
        let shared = ResponseCells::default();
        let shared_ns = run(threads, &|_| &shared);
        let own: Vec<Padded> = (0..threads).map(|_| Padded::default()).collect();
        let own_ns = run(threads, &|t| &own[t].0);
        // Per-thread cells count exactly what shared ones do, once summed.
        let total: u64 = own.iter().map(|p| p.0.snapshot().total(Target::New)).sum();
        assert_eq!(total, shared.snapshot().total(Target::New));
        println!(
            "threads {threads:>2}: shared cells {shared_ns:6.1} ns/response, per-thread cells {own_ns:6.1} ns/response ({:.2}x)",
            shared_ns / own_ns
        );
    }
}
