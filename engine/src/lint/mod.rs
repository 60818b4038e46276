//! Static checks printed by `nginx -t` as warnings (the file is still valid), one
//! file per check: rules that can never decide (`shadowed/`), header names nginx
//! drops by default (`underscores.rs`), and ramp gates that are never judged
//! (`idle_gates.rs`).

mod idle_gates;
mod shadowed;
mod underscores;

use std::fmt;

use crate::config::Config;

pub use idle_gates::idle_gates;
pub use shadowed::shadowed_rules;
pub use underscores::underscored_headers;

/// A problem that does not make the file invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Field path such as `services[0].canary.header_rules[2]`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Everything `nginx -t` warns about in a valid file: shadowed rules, then header
/// names nginx drops by default.
pub fn warnings(config: &Config) -> Vec<Warning> {
    let mut out = shadowed_rules(config);
    out.extend(underscored_headers(config));
    out.extend(idle_gates(config));
    out
}

#[cfg(test)]
mod tests {
    pub(super) const BASE: &str = "\
services:
  - name: api
    old_host: api.example
    old_backend: old.svc:8078
    new_host: api.kong.example
    new_backend: api.kong.example:443
    canary:
";
}
