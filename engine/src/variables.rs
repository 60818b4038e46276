//! The nginx variables a configuration defines, for `user_key: var:NAME`: a name
//! no module and no directive of nginx.conf defines would read as absent on every
//! request, and the split would silently fall back to a random draw. The nginx
//! layer fills a [`VariableNames`] from its configuration; this checks a
//! configuration's `var:` keys against it, with the file, line and column.

use std::collections::HashSet;

use crate::config::locate_in_file;
use crate::CompiledConfig;

/// The variable names an nginx configuration defines (lowercase), and the
/// prefixed families it resolves by prefix (`http_`, `cookie_`, `arg_`, ...).
#[derive(Debug, Default)]
pub struct VariableNames {
    names: HashSet<Vec<u8>>,
    prefixes: Vec<Vec<u8>>,
}

impl VariableNames {
    pub fn new(names: impl IntoIterator<Item = Vec<u8>>, prefixes: impl IntoIterator<Item = Vec<u8>>) -> Self {
        VariableNames {
            names: names.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
            prefixes: prefixes.into_iter().map(|p| p.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether nginx would find a variable of this (lowercase) name.
    pub fn knows(&self, name: &str) -> bool {
        // `$1`..`$9`: a regex capture, set at run time by a location or `map`.
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
            return true;
        }
        let name = name.as_bytes();
        self.names.contains(name) || self.prefixes.iter().any(|p| name.len() > p.len() && name.starts_with(p))
    }
}

/// The prefix of the module's own variables (`$migration_target`, ...).
const OWN_PREFIX: &str = "migration_";

/// The first `user_key: var:NAME` of `config` that `names` lacks, or that is one
/// of the module's own variables (read while deciding, it would start another
/// decision inside this one), as a located
/// message (`m.yaml:9:17: services[0].migration.user_key: unknown variable ...`).
pub fn check_user_variables(
    names: &VariableNames,
    source: &str,
    text: &str,
    config: &CompiledConfig,
) -> Result<(), String> {
    for (i, service) in config.services.iter().enumerate() {
        let Some(name) = service.user_variable() else { continue };
        let own = name.starts_with(OWN_PREFIX);
        if names.knows(name) && !own {
            continue;
        }
        let path = format!("services[{i}].migration.user_key");
        let at = locate_in_file(text, &path).map_or(String::new(), |(line, column)| format!(":{line}:{column}"));
        let why = if own {
            format!(
                "\"${name}\" is one of the module's own variables, which the decision sets: \
                 the user id cannot come from the decision it feeds"
            )
        } else {
            format!(
                "unknown variable \"${name}\": no module or directive of nginx.conf defines it \
                 (set, map, auth_request_set, ...), so every request would read no user id"
            )
        };
        return Err(format!("{source}{at}: {path}: {why}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixed_families() {
        let names = VariableNames::new(
            [b"Verified_User".to_vec(), b"remote_user".to_vec()],
            [b"http_".to_vec(), b"cookie_".to_vec()],
        );
        for known in ["verified_user", "remote_user", "http_x_user", "cookie_uid"] {
            assert!(names.knows(known), "{known}");
        }
        for unknown in ["doesnotexist", "http_", "verified", "cookie"] {
            assert!(!names.knows(unknown), "{unknown}");
        }
    }

    #[test]
    fn an_unknown_variable_is_located() {
        let text = "services:\n  - name: api\n    old_host: a\n    old_backend: o:80\n    new_host: n\n    new_backend: n:80\n    migration:\n      strategy: user\n      user_key: var:doesnotexist\n";
        let config = crate::load_str("m.yaml", text).unwrap();
        let message = check_user_variables(&VariableNames::default(), "m.yaml", text, &config).unwrap_err();
        assert!(
            message.starts_with("m.yaml:9:17: services[0].migration.user_key: unknown variable \"$doesnotexist\""),
            "{message}"
        );
        let names = VariableNames::new([b"doesnotexist".to_vec()], []);
        assert_eq!(check_user_variables(&names, "m.yaml", text, &config), Ok(()));
    }

    #[test]
    fn the_module_s_own_variables_are_refused_though_defined() {
        let text = "services:\n  - name: api\n    old_host: a\n    old_backend: o:80\n    new_host: n\n    new_backend: n:80\n    migration:\n      strategy: user\n      user_key: var:migration_target\n";
        let config = crate::load_str("m.yaml", text).unwrap();
        let names = VariableNames::new([b"migration_target".to_vec(), b"migrations".to_vec()], []);
        let message = check_user_variables(&names, "m.yaml", text, &config).unwrap_err();
        assert!(
            message.starts_with(
                "m.yaml:9:17: services[0].migration.user_key: \"$migration_target\" is one of the module's own variables"
            ),
            "{message}"
        );
        let other = crate::load_str("m.yaml", &text.replace("migration_target", "migrations")).unwrap();
        assert_eq!(check_user_variables(&names, "m.yaml", text, &other), Ok(()));
    }
}
