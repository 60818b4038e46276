//! `watch=` without stalling a request: every worker owns a compile thread
//! that reads, hashes, validates and compiles configurations, at the lowest CPU
//! priority, while the event loop goes on serving. The event loop only `stat`s
//! the file, hands a job over, and on a later tick takes the finished result:
//! a short commit under the zone's lock and an `Arc` swap.
//!
//! Two kinds of job: a changed file (the first worker to see it publishes it),
//! and a generation another process published (every other worker compiles the
//! zone's record to catch up). Everything nginx (logging, the zone's lock, the
//! timer) stays on the event loop; the thread only runs the engine.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;

use migration_engine::source::FileStamp;
use migration_engine::variables::VariableNames;
use migration_engine::CompiledConfig;

use crate::conf::PinnedService;
use crate::state::admission::{Admission, Admitted, Refusal};
use crate::state::zone::RecordCopy;

/// Work for the compile thread.
pub enum Job {
    /// Compile the zone's committed record, which another process published.
    CatchUp(RecordCopy),
    /// Look at the watched file, which `stat` says changed.
    Check(Check),
    /// A configuration no request holds any more: freeing tens of thousands of
    /// allocations is work for this thread, not the event loop. No `Done`.
    Discard(Arc<CompiledConfig>),
}

pub struct Check {
    pub path: String,
    pub max_size: u64,
    pub zone_size: usize,
    /// The content this process routes by, and the last content refused: either
    /// means nothing to do.
    pub current_hash: Option<u64>,
    pub refused_hash: u64,
    pub pinned: Vec<PinnedService>,
    /// The variables nginx.conf defines, for `user_key: var:NAME`.
    pub variables: Option<Arc<VariableNames>>,
    /// What nginx.conf's locations can route: unreachable services are warned about.
    pub reach: Option<Arc<migration_engine::reach::Reach>>,
    pub stamp: Option<FileStamp>,
    /// The zone's serial before the file is read (the commit compares with it).
    pub serial: u64,
}

/// What the thread hands back.
pub enum Done {
    CaughtUp {
        record: RecordCopy,
        compiled: Result<CompiledConfig, String>,
    },
    /// The content is the one routed by (`published`), or the one last refused.
    Unchanged {
        stamp: Option<FileStamp>,
        published: bool,
    },
    Refused {
        refusal: Refusal,
        stamp: Option<FileStamp>,
    },
    Ready(Box<Ready>),
}

/// A changed file, admitted: the event loop commits it if it still may.
pub struct Ready {
    pub admitted: Admitted,
    pub stamp: Option<FileStamp>,
    pub serial: u64,
}

struct Thread {
    jobs: Sender<Job>,
    done: Receiver<Done>,
}

thread_local! {
    /// The event loop's handle on its compile thread (started on first use:
    /// a thread never survives nginx's fork, so not in the master).
    static THREAD: RefCell<Option<Thread>> = const { RefCell::new(None) };
    /// A job was handed over and its result not taken yet.
    static IN_FLIGHT: Cell<bool> = const { Cell::new(false) };
}

/// Whether a job is being worked on.
pub fn busy() -> bool {
    IN_FLIGHT.with(Cell::get)
}

/// Hands `job` to the thread; false when the thread cannot be started.
pub fn submit(job: Job) -> bool {
    THREAD.with(|t| {
        let mut t = t.borrow_mut();
        if t.is_none() {
            *t = start();
        }
        let Some(thread) = t.as_ref() else { return false };
        let sent = thread.jobs.send(job).is_ok();
        if !sent {
            // The thread is gone (it never panics out of a job, but be safe).
            *t = None;
        }
        IN_FLIGHT.with(|f| f.set(sent));
        sent
    })
}

/// Frees `config` on the compile thread when it runs (a worker), here
/// otherwise (the master, or no thread).
pub fn discard(config: Arc<CompiledConfig>) {
    let config = THREAD.with(|t| match t.borrow().as_ref() {
        Some(thread) => match thread.jobs.send(Job::Discard(config)) {
            Ok(()) => None,
            Err(returned) => Some(returned.0),
        },
        None => Some(Job::Discard(config)),
    });
    drop(config);
}

/// The finished job's result, if it is there.
pub fn take() -> Option<Done> {
    THREAD.with(|t| {
        let t = t.borrow();
        let thread = t.as_ref()?;
        match thread.done.try_recv() {
            Ok(done) => {
                IN_FLIGHT.with(|f| f.set(false));
                Some(done)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                IN_FLIGHT.with(|f| f.set(false));
                None
            }
        }
    })
}

/// Signals the thread must not block: a fault in it is reported as in any thread.
const FAULTS: [libc::c_int; 4] = [libc::SIGILL, libc::SIGFPE, libc::SIGSEGV, libc::SIGBUS];

/// Blocks every signal but the faults in the calling thread; returns the mask it had.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigfillset/sigdelset before
    // use; pthread_sigmask only changes this thread's mask.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        for fault in FAULTS {
            libc::sigdelset(&mut all, fault);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        old
    }
}

fn start() -> Option<Thread> {
    let (jobs, inbox) = channel::<Job>();
    let (outbox, done) = channel::<Done>();
    // nginx delivers its signals (reload, reopen, quit, SIGCHLD, SIGIO) to the
    // process and handles them on its event loop: a thread that could take one
    // would run nginx's handler on the wrong thread, or eat a signal the loop
    // waits for. Like nginx's own thread pools (ngx_thread_pool.c), the thread
    // blocks them all; it is spawned with them blocked, so that it never has a
    // moment with nginx's mask, and the worker's mask is put back right after.
    let worker_mask = block_signals();
    let spawned = std::thread::Builder::new()
        .name("migration-publish".into())
        .spawn(move || {
            // The event loop comes first: this thread gets whatever CPU is idle.
            // SCHED_IDLE yields at once to any normal task that wakes up (nice 19
            // alone still takes time slices from a busy worker); nice 19 stays as
            // the fallback where SCHED_IDLE is refused.
            let idle = libc::sched_param { sched_priority: 0 };
            // SAFETY: pid 0 is this thread; the call only changes its scheduling class.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) } != 0 {
                // SAFETY: setpriority on this thread's own id only changes its nice value.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
            }
            for job in inbox {
                if let Job::Discard(config) = job {
                    let _ = catch_unwind(AssertUnwindSafe(|| drop(config)));
                    continue;
                }
                let done = catch_unwind(AssertUnwindSafe(|| run(job))).unwrap_or_else(|panic| {
                    let message = panic_message(&panic);
                    // Refused once, like any bad change (a hash of 0 means "none").
                    let hash = migration_engine::content_hash(message.as_bytes());
                    Done::Refused { refusal: Refusal::Invalid { hash, message }, stamp: None }
                });
                if outbox.send(done).is_err() {
                    break;
                }
            }
        })
        .ok();
    // SAFETY: restores the mask block_signals saved, on this same thread.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &worker_mask, core::ptr::null_mut()) };
    spawned?;
    Some(Thread { jobs, done })
}

/// A panic's message, as a refusal says it.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    format!("internal error (a panic: {text})")
}

fn run(job: Job) -> Done {
    match job {
        Job::CatchUp(record) => {
            let compiled = migration_engine::load_str(&record.source, &record.text).map_err(|e| e.to_string());
            Done::CaughtUp { record, compiled }
        }
        Job::Check(check) => run_check(check),
        Job::Discard(_) => unreachable!("handled by the thread's loop"),
    }
}

fn run_check(c: Check) -> Done {
    let stamp = c.stamp;
    let admission = Admission {
        max_size: c.max_size,
        zone_size: c.zone_size,
        pinned: &c.pinned,
        variables: c.variables.as_deref(),
        reach: c.reach.as_deref(),
    };
    let (bytes, hash) = match admission.read(&c.path) {
        Ok(read) => read,
        Err(refusal) => return Done::Refused { refusal, stamp },
    };
    if c.current_hash == Some(hash) || c.refused_hash == hash {
        return Done::Unchanged { stamp, published: c.current_hash == Some(hash) };
    }
    let admitted = admission.admit_read(&c.path, bytes, hash, || {
        crate::test_hooks::watch_delay_once(&c.path);
        crate::test_hooks::panic_in("publication");
    });
    match admitted {
        Ok(admitted) => Done::Ready(Box::new(Ready { admitted, stamp, serial: c.serial })),
        Err(refusal) => Done::Refused { refusal, stamp },
    }
}
