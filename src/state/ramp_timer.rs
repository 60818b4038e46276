//! The ramps on the event loop (docs/ramp.md): every worker's timer asks each
//! ramped service's cells in the zone whether the clock moves it on; the worker
//! that makes a transition logs it, once. A publication logs the step it puts
//! (or keeps) in force. The state machine itself is the engine's
//! (`migration_engine::ramp`): it refuses a worker whose ramp is not the zone's,
//! and a ramp that `enabled: false` froze.

use migration_engine::config::ramp::{OnFailure, Ramp};
use migration_engine::config::values::PercentageText;
use migration_engine::ramp::{Publication, RampEvent, RampState};
use migration_engine::{CompiledService, RampReport};
use ngx::ffi::{
    ngx_add_timer, ngx_cycle, ngx_event_t, ngx_exiting, ngx_log_t, ngx_quit, ngx_terminate, NGX_LOG_NOTICE,
    NGX_LOG_WARN,
};
use ngx::ngx_log_error;

use crate::state::live::{current, unix_now_ms, LiveConfig};
use crate::state::zone::ServiceSlot;

/// How often every worker looks at the clock for the services' ramps.
pub const RAMP_TICK_MS: u64 = 100;

/// Moves the ramps on: every worker, every RAMP_TICK_MS; one of them makes each
/// transition (a compare-and-swap in the zone) and logs it.
pub unsafe extern "C" fn ramp_tick(ev: *mut ngx_event_t) {
    // SAFETY: nginx's process-state flags, only written by its signal handlers.
    if unsafe { ngx_exiting != 0 || ngx_quit != 0 || ngx_terminate != 0 } {
        return;
    }
    // SAFETY: in a worker, ngx_cycle is the worker's cycle.
    let log = unsafe { (*ngx_cycle).log };
    crate::guard::timer(log, "the ramp's timer", || {
        if let Some(published) = current() {
            crate::state::ramp_timer::tick(&published, log);
        }
    });
    // SAFETY: `ev` is our timer event, not armed while its handler runs.
    unsafe { ngx_add_timer(ev, RAMP_TICK_MS as _) };
}

/// When the step after the current one is due, in words.
fn next_due(ramp: &Ramp, slot: &ServiceSlot, done: bool) -> String {
    if done {
        "the last step: the ramp is done".to_owned()
    } else {
        let at = slot.ramp.step_started_ms() + ramp.every_ms;
        format!("the next is due at {}", migration_engine::report::rfc3339(at / 1000))
    }
}

/// A publication told `slot`'s ramp cells what it holds (`what`): the step in
/// force is logged, and a ramp without `start` is warned about, as its
/// position lives in this nginx's shared memory only.
pub fn log_publication(service: &CompiledService, slot: &ServiceSlot, what: Publication, log: *mut ngx_log_t) {
    let Some(ramp) = &service.ramp else { return };
    if what == Publication::None {
        return;
    }
    let name = &service.name;
    let steps = ramp.steps.len();
    let step = slot.ramp.step(ramp);
    let state = slot.ramp.state();
    let in_force = slot.ramp.percentage_in_force().unwrap_or(0);
    let verb = if what == Publication::Started { "begins" } else { "stays" };
    let frozen = if slot.ramp.frozen() { " (frozen: the service is disabled)" } else { "" };
    let message = match state {
        Some(RampState::Scheduled) => format!(
            "ramp scheduled: step 1 of {} ({}%) begins at {}; 0% in force until then{}",
            steps,
            PercentageText(ramp.steps[0]),
            migration_engine::report::rfc3339(slot.ramp.step_started_ms() / 1000),
            frozen
        ),
        Some(RampState::Held | RampState::RolledBack) => format!(
            "ramp {} on step {} of {}: {}% in force until the service's migration or backends change",
            if state == Some(RampState::Held) { "held" } else { "rolled back" },
            step + 1,
            steps,
            PercentageText(in_force)
        ),
        _ => format!(
            "ramp step {} of {} {}: {}% in force; {}{}",
            step + 1,
            steps,
            verb,
            PercentageText(in_force),
            next_due(ramp, slot, state == Some(RampState::Done)),
            frozen
        ),
    };
    ngx_log_error!(NGX_LOG_NOTICE, log, "migration: service \"{}\": {}", name, message);
    if what == Publication::Started && ramp.start_ms.is_none() {
        ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "migration: service \"{}\": the ramp has no start: its position lives in this nginx's shared memory, so \
             a binary upgrade (USR2), a restart or another replica begins it again at step 1; set ramp.start to put \
             every replica and upgrade on the same wall-clock step",
            name
        );
    }
}

/// One look at the clock for every service with a ramp.
pub fn tick(published: &LiveConfig, log: *mut ngx_log_t) {
    let now = unix_now_ms();
    for (service, slot) in published.config.services.iter().zip(published.slots.iter()) {
        let Some(ramp) = &service.ramp else { continue };
        let Some(event) = slot.ramp.tick(ramp, service.ramp_fingerprint, now) else {
            continue;
        };
        let name = &service.name;
        let steps = ramp.steps.len();
        match event {
            RampEvent::Advanced { step, percentage_bp, done } => {
                let next = next_due(ramp, slot, done);
                ngx_log_error!(
                    NGX_LOG_NOTICE,
                    log,
                    "migration: service \"{}\": ramp step {} of {} begins: {}% in force; {}",
                    name,
                    step + 1,
                    steps,
                    PercentageText(percentage_bp),
                    next
                );
            }
            RampEvent::Failed { step, action, gate } => {
                let what = match action {
                    OnFailure::Rollback => {
                        "rolled back to 0% until the service's migration or backends change".to_owned()
                    }
                    OnFailure::Hold => format!(
                        "held at {}% until the service's migration or backends change",
                        PercentageText(ramp.steps[step])
                    ),
                };
                let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
                ngx_log_error!(
                    NGX_LOG_WARN,
                    log,
                    "migration: service \"{}\": ramp step {} of {} ({}%) failed its gate: {} (new: {} responses, \
                     {:.2}% errors, p99 {}; old: {} responses, {:.2}% errors, p99 {}); {}",
                    name,
                    step + 1,
                    steps,
                    PercentageText(ramp.steps[step]),
                    gate.reason,
                    gate.new_requests,
                    gate.new_error_rate * 100.0,
                    ms(gate.new_p99_ms),
                    gate.old_requests,
                    gate.old_error_rate * 100.0,
                    ms(gate.old_p99_ms),
                    what
                );
            }
        }
    }
}

/// A service's ramp as the status shows it: steps counted from 1, as the log
/// counts them; the percentage in force (0 while the service is disabled).
pub fn report(service: &CompiledService, slot: &ServiceSlot) -> Option<RampReport> {
    let ramp = service.ramp.as_ref()?;
    let state = slot.ramp.state()?;
    let frozen = slot.ramp.frozen() || !service.enabled;
    let next_step_at_ms = (!frozen && (state == RampState::Ramping || state == RampState::Scheduled))
        .then(|| slot.ramp.step_started_ms() + if state == RampState::Scheduled { 0 } else { ramp.every_ms });
    let last_gate = slot.ramp.last_gate();
    let failed = match (&last_gate, &ramp.gate) {
        (Some(report), Some(gate)) => report.failed_limits(gate),
        _ => Vec::new(),
    };
    let in_force = slot.ramp.percentage_in_force().unwrap_or(service.percentage_bp);
    Some(RampReport {
        state,
        step: slot.ramp.step(ramp) + 1,
        steps: ramp.steps.len(),
        percentage_bp: if service.enabled { in_force } else { 0 },
        next_step_at_ms,
        last_gate,
        failed,
        frozen,
    })
}
