//! Located configuration errors (docs/yaml.md):
//! `migration.yaml:14:21: services[0].migration.percentage: must be between 0 and 100, got 120`.
//!
//! A message never carries much of the file: nginx's master reads the file as
//! root, so a path pointed (by mistake or malice) at a private key must not print
//! it. Quoted values are cut to a short prefix, and control characters are escaped
//! everywhere, so that a key holding a newline cannot forge a line of error.log.

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
        f.write_str(&escape_controls(&self.file))?;
        if let Some((line, column)) = self.location {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", escape_controls(&self.path))?;
        }
        f.write_str(&escape_controls(&self.message))
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn new(file: &str, location: Option<(usize, usize)>, path: &str, message: impl Into<String>) -> Self {
        ConfigError { file: file.to_owned(), location, path: path.to_owned(), message: shorten_quoted(&message.into()) }
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
        ConfigError { file: file.to_owned(), location, path, message: shorten_quoted(&tidy(message)) }
    }
}

/// serde's wording, made to read like the rest of our messages.
fn tidy(message: String) -> String {
    message.replace("invalid type: ", "wrong type: ")
}

/// Longest excerpt of a value a message quotes, in characters.
const EXCERPT: usize = 24;

/// Control characters, and the invisible ones that reorder or hide text on a
/// terminal (bidirectional overrides, zero-width characters, line and paragraph
/// separators).
fn shown_escaped(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{61c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// `\n`, `\t`, `\r` and other control characters as escapes, so that a message is
/// always one line of plain text.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(shown_escaped) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if shown_escaped(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Cuts every `"quoted"` or `` `quoted` `` part of a message to a short prefix.
fn shorten_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(256));
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' && c != '`' {
            continue;
        }
        let close = c;
        let mut inside = String::new();
        let mut closed = false;
        while let Some(d) = chars.next() {
            if d == '\\' && close == '"' {
                inside.push(d);
                if let Some(e) = chars.next() {
                    inside.push(e);
                }
                continue;
            }
            if d == close {
                closed = true;
                break;
            }
            inside.push(d);
        }
        if inside.chars().count() > EXCERPT {
            // Keep whole escapes: cut before a trailing backslash.
            let mut cut: String = inside.chars().take(EXCERPT).collect();
            if cut.ends_with('\\') && !cut.ends_with("\\\\") {
                cut.pop();
            }
            out.push_str(&cut);
            out.push('…');
        } else {
            out.push_str(&inside);
        }
        if closed {
            out.push(close);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_cut_to_a_prefix() {
        let secret = "-----BEGIN PRIVATE KEY----- MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC";
        let e = ConfigError::new("k.pem", Some((1, 1)), "", format!("wrong type: string \"{secret}\", expected x"));
        assert_eq!(e.message, "wrong type: string \"-----BEGIN PRIVATE KEY--…\", expected x");
        assert_eq!(shorten_quoted("unknown field `short`"), "unknown field `short`");
        assert_eq!(shorten_quoted("a \"b\\\"c\" d"), "a \"b\\\"c\" d");
    }

    #[test]
    fn control_characters_never_reach_the_log_raw() {
        let e = ConfigError::new("m.yaml", Some((2, 3)), "services[0]", "unknown field `a\n2026/11/27 [emerg] forged`");
        let shown = e.to_string();
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.contains("a\\n2026/11/27"), "{shown}");
    }
}

#[cfg(test)]
mod escape_tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept_whole() {
        assert_eq!(escape_controls("plain"), "plain");
        assert_eq!(escape_controls("a\nb\r\tc\u{7}\u{7f}"), "a\\nb\\r\\tc\\u{7}\\u{7f}");
        assert_eq!(escape_controls("a\u{202e}b\u{200b}"), "a\\u{202e}b\\u{200b}", "bidirectional and zero-width");
        let long = "':' must be followed by a valid YAML whitespace";
        assert_eq!(escape_controls(long), long, "a parser's message is quoted whole");
    }
}
