//! Header names nginx drops by default.

use super::Warning;
use crate::config::{Config, RuleSource, UserKey};

/// Header names with `_`: nginx ignores such request headers unless the server
/// has `underscores_in_headers on` (default off), so a rule on one never matches
/// and a user id read from one is never found.
pub fn underscored_headers(config: &Config) -> Vec<Warning> {
    const WHY: &str = "nginx ignores request headers whose names contain '_' unless the server has \
                       `underscores_in_headers on`; without it this never matches";
    let mut out = Vec::new();
    for (s, service) in config.services.iter().enumerate() {
        if let UserKey::Header(name) = &service.migration.user_key {
            if name.contains('_') {
                out.push(Warning {
                    path: format!("services[{s}].migration.user_key"),
                    message: format!("header {name:?}: {WHY}"),
                });
            }
        }
        for (r, rule) in service.canary.header_rules.iter().enumerate() {
            // Cookies and arguments with '_' are found: only header names are dropped.
            if let RuleSource::Header(name) = &rule.source {
                if name.contains('_') {
                    out.push(Warning {
                        path: format!("services[{s}].canary.header_rules[{r}].header"),
                        message: format!("header {name:?}: {WHY}"),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::lint::tests::BASE;
    use crate::lint::{warnings, Warning};

    #[test]
    fn header_names_with_underscores_are_warned() {
        let text = format!(
            "{BASE}      header_rules:\n        - {{header: X_Canary, value: a, target: new}}\n        - {{header: X-Ok, value: a, target: new}}\n    migration: {{user_key: 'header:X_User'}}\n"
        );
        let config = crate::config::parse("m.yaml", &text).unwrap();
        let found: Vec<String> = warnings(&config).iter().map(Warning::to_string).collect();
        assert_eq!(found, [
            "services[0].migration.user_key: header \"x_user\": nginx ignores request headers whose names contain '_' unless the server has `underscores_in_headers on`; without it this never matches",
            "services[0].canary.header_rules[0].header: header \"x_canary\": nginx ignores request headers whose names contain '_' unless the server has `underscores_in_headers on`; without it this never matches",
        ]);
    }

    #[test]
    fn underscores_are_warned_for_headers_only() {
        let text = format!(
            "{BASE}      header_rules:\n        - {{cookie: session_id, present: true, target: new}}\n        - {{arg: user_id, present: true, target: new}}\n"
        );
        let config = crate::config::parse("m.yaml", &text).unwrap();
        assert_eq!(warnings(&config), vec![]);
    }
}
