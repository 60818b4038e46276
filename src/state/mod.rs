//! What outlives a request: the shared zone (the published configuration, the
//! counters, the process table), the live configuration each process routes by,
//! and how a configuration gets there: admitted by the `migration_config`
//! directive at a reload or by `watch=`, compiled on a worker's compile thread,
//! prepared and committed in step with nginx's cycle, then moved on by the ramp
//! timer. Reads `conf/`, never `http/`.

pub mod admission;
pub mod compile_thread;
pub mod cycle;
pub mod cycle_warnings;
pub mod live;
pub mod load;
pub mod ramp_timer;
pub mod watch;
pub mod zone;
