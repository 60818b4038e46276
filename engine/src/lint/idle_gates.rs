//! A ramp's gate that is never judged.

use super::Warning;
use crate::config::Config;

/// A ramp's gate on a service that sends nothing to new (`enabled: false`) is
/// never judged: the ramp stands still until the service is enabled again.
pub fn idle_gates(config: &Config) -> Vec<Warning> {
    config
        .services
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.migration.enabled && s.migration.ramp.as_ref().is_some_and(|r| r.gate.is_some()))
        .map(|(i, _)| Warning {
            path: format!("services[{i}].migration.ramp.gate"),
            message: "the service is disabled (enabled: false): nothing goes to new, so the gate is never judged and \
                      the ramp stands still until the service is enabled"
                .into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::lint::tests::BASE;
    use crate::lint::{warnings, Warning};

    #[test]
    fn a_gate_on_a_disabled_service_is_warned() {
        let text = format!("{BASE}      user_rules: []\n    migration:\n      enabled: false\n      ramp: {{steps: [1, 100], every: 1h, gate: {{max_error_rate: 1%}}}}\n");
        let config = crate::config::parse("m.yaml", &text).unwrap();
        let found: Vec<String> = warnings(&config).iter().map(Warning::to_string).collect();
        assert_eq!(found, ["services[0].migration.ramp.gate: the service is disabled (enabled: false): nothing goes to new, so the gate is never judged and the ramp stands still until the service is enabled"]);
        // Enabled with a gate, or disabled without one (or without a ramp): nothing to say.
        for migration in [
            "enabled: true\n      ramp: {steps: [1, 100], every: 1h, gate: {max_error_rate: 1%}}",
            "enabled: false\n      ramp: {steps: [1, 100], every: 1h}",
            "enabled: false",
        ] {
            let text = format!("{BASE}      user_rules: []\n    migration:\n      {migration}\n");
            let config = crate::config::parse("m.yaml", &text).unwrap();
            assert!(warnings(&config).is_empty(), "{migration}: {:?}", warnings(&config));
        }
    }
}
