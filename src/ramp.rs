//! The ramps on the event loop (SPEC "Ramp: a percentage that moves itself"):
//! every worker's timer asks each ramped service's cells in the zone whether the
//! clock moves it on; the worker that makes a transition logs it, once. The
//! state machine itself is the engine's (`migration_engine::ramp`).

use migration_engine::config::ramp::OnFailure;
use migration_engine::config::values::PercentageText;
use migration_engine::ramp::{RampEvent, RampState};
use migration_engine::RampReport;
use ngx::ffi::{ngx_log_t, NGX_LOG_NOTICE, NGX_LOG_WARN};
use ngx::ngx_log_error;

use crate::publish::{unix_now_ms, Published};
use crate::zone::ServiceSlot;

/// One look at the clock for every service with a ramp.
pub fn tick(published: &Published, log: *mut ngx_log_t) {
    let now = unix_now_ms();
    for (service, slot) in published.config.services.iter().zip(published.slots.iter()) {
        let Some(ramp) = &service.ramp else { continue };
        let counts = slot.responses.snapshot();
        let Some(event) = slot.ramp.tick(ramp, service.enabled, now, &counts, published.content_hash) else {
            continue;
        };
        let name = &service.name;
        let steps = ramp.steps.len();
        match event {
            RampEvent::Advanced { step, percentage_bp, done } => {
                let next = if done {
                    "the last step: the ramp is done".to_owned()
                } else {
                    let at = slot.ramp.step_started_ms() + ramp.every_ms;
                    format!("the next is due at {}", migration_engine::report::rfc3339(at / 1000))
                };
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
                    OnFailure::Rollback => "rolled back to 0% until the file changes".to_owned(),
                    OnFailure::Hold => {
                        format!("held at {}% until the file changes", PercentageText(ramp.steps[step]))
                    }
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

/// A service's ramp as the status shows it.
pub fn report(service: &migration_engine::CompiledService, slot: &ServiceSlot) -> Option<RampReport> {
    let ramp = service.ramp.as_ref()?;
    let state = slot.ramp.state()?;
    let step = slot.ramp.step();
    let next_step_at_ms = (state == RampState::Ramping || state == RampState::Scheduled)
        .then(|| slot.ramp.step_started_ms() + if state == RampState::Scheduled { 0 } else { ramp.every_ms });
    Some(RampReport {
        state,
        step,
        steps: ramp.steps.len(),
        percentage_bp: slot.ramp.percentage_in_force().unwrap_or(service.percentage_bp),
        next_step_at_ms,
        last_gate: slot.ramp.last_gate(),
        frozen: !service.enabled,
    })
}
