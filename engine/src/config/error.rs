//! Located configuration errors (SPEC "The YAML"):
//! `migration.yaml:14:21: services[0].migration.percentage: must be between 0 and 100, got 120`.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as the operator named it.
    pub file: String,
    /// 1-based line and column, where the YAML parser knows them.
    pub location: Option<(usize, usize)>,
    /// Field path such as `services[0].migration.percentage`; empty for the document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some((line, column)) = self.location {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn new(file: &str, location: Option<(usize, usize)>, path: &str, message: impl Into<String>) -> Self {
        ConfigError { file: file.to_owned(), location, path: path.to_owned(), message: message.into() }
    }

    /// Splits serde_yaml's `"{path}: {message} at line L column C"` into its parts.
    pub(crate) fn from_yaml(file: &str, err: &serde_yaml::Error) -> Self {
        let location = err.location().map(|l| (l.line(), l.column()));
        let mut text = err.to_string();
        if let Some(loc) = err.location() {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(stripped) = text.strip_suffix(&suffix) {
                text = stripped.to_owned();
            }
        }
        // A path is made of schema keys and `[n]` indexes: it never holds a space.
        let (path, message) = match text.split_once(": ") {
            Some((p, m)) if !p.is_empty() && !p.contains(char::is_whitespace) && !p.contains('`') => {
                (p.to_owned(), m.to_owned())
            }
            _ => (String::new(), text),
        };
        ConfigError { file: file.to_owned(), location, path, message: tidy(message) }
    }
}

/// serde's wording, made to read like the rest of our messages.
fn tidy(message: String) -> String {
    message.replace("invalid type: ", "wrong type: ")
}
