//! A first, linear pass over the YAML text, before serde_yaml reads it into the
//! typed model. It uses a second parser (`saphyr-parser`, pure Rust, linear in the
//! input) for what serde_yaml cannot do safely or at all:
//!
//! * refuse anchors and aliases: the schema never needs them, and a 100 KB file of
//!   aliases expands to gigabytes while serde_yaml reads it;
//! * refuse nesting deeper than [`MAX_DEPTH`] before libyaml's scanner, which is
//!   quadratic in the depth of flow collections (`[[[[...`), ever sees it;
//! * say what the document is (empty, a ConfigMap manifest, a plain document)
//!   without building a `serde_yaml::Value` of it;
//! * find the line and column of a field path (`services[1].hosts[0]`), so that
//!   errors found across fields are reported at the field, not at its mapping;
//! * give a scalar as it is written (`version: 1.10` is "1.10", not 1.1).

use std::borrow::Cow;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};

use super::error::escape_controls;

/// Deepest nesting of collections a file may have. The schema needs 9 (a
/// ConfigMap's data holding services, rules and their lists); 32 leaves room and
/// stops a hostile file long before any parser works hard on it.
pub const MAX_DEPTH: usize = 32;

/// One step of a field path: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// `services[1].hosts[0]` as steps; the path syntax of serde_yaml's messages.
pub(crate) fn parse_path(path: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            steps.push(Step::Key(key.to_owned()));
        }
        while let Some((index, after)) = rest.split_once(']') {
            if let Ok(i) = index.parse() {
                steps.push(Step::Index(i));
            }
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    steps
}

/// What the first pass learned of a document.
#[derive(Debug, Default)]
pub(crate) struct Outline {
    /// No node at all, or a null scalar (`~`, `null`, nothing).
    pub empty: bool,
    /// The root is a mapping whose `kind` is the string `ConfigMap`.
    pub configmap: bool,
}

/// Why the first pass refused a document.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// A located problem of ours: an anchor, an alias, too deep a nesting.
    Located { line: usize, column: usize, message: String },
    /// The text is not YAML by saphyr's reading; serde_yaml words the error.
    Syntax(ScanError),
}

/// Where each collection of the walk stands.
enum Frame {
    Map { key: Option<String>, awaiting_key: bool },
    Seq { next: usize },
}

/// Walks the events of the first document, calling `visit` with the path of every
/// node that is a value (mapping keys are not visited). `visit` returns false to
/// stop the walk early.
fn walk<'t>(
    text: &'t str,
    mut visit: impl FnMut(&[Step], &Event<'t>, Span) -> Result<bool, Refusal>,
) -> Result<(), Refusal> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut path: Vec<Step> = Vec::new();
    // Depth of complex mapping keys being skipped (a key that is a collection).
    let mut in_key = 0usize;
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| {
            if e.info().contains("recursion limit") {
                located(e.marker().line(), e.marker().col(), too_deep())
            } else {
                Refusal::Syntax(e)
            }
        })?;
        match &event {
            Event::DocumentEnd => break,
            Event::Scalar(..) | Event::Alias(_) | Event::SequenceStart(..) | Event::MappingStart(..) => {
                let anchored = match &event {
                    Event::Scalar(_, _, anchor, _)
                    | Event::SequenceStart(anchor, _)
                    | Event::MappingStart(anchor, _) => *anchor != 0,
                    _ => false,
                };
                if anchored || matches!(event, Event::Alias(_)) {
                    return Err(located(span.start.line(), span.start.col(), anchors_refused()));
                }
                let opens = matches!(event, Event::SequenceStart(..) | Event::MappingStart(..));
                if opens && frames.len() + 1 > MAX_DEPTH {
                    return Err(located(span.start.line(), span.start.col(), too_deep()));
                }
                // Where this node sits: a key, a value, or an item.
                let mut is_key = in_key > 0;
                match frames.last_mut() {
                    Some(Frame::Map { key, awaiting_key }) if *awaiting_key && in_key == 0 => {
                        is_key = true;
                        *key = match &event {
                            Event::Scalar(value, ..) => Some(value.to_string()),
                            _ => None,
                        };
                        *awaiting_key = false;
                    }
                    Some(Frame::Map { key, awaiting_key }) if in_key == 0 => {
                        path.push(Step::Key(key.clone().unwrap_or_default()));
                        *awaiting_key = true;
                    }
                    Some(Frame::Seq { next }) if in_key == 0 => {
                        path.push(Step::Index(*next));
                        *next += 1;
                    }
                    _ => {}
                }
                if is_key {
                    if opens {
                        in_key += 1;
                        frames.push(if matches!(event, Event::MappingStart(..)) {
                            Frame::Map { key: None, awaiting_key: true }
                        } else {
                            Frame::Seq { next: 0 }
                        });
                    }
                    continue;
                }
                if !visit(&path, &event, span)? {
                    return Ok(());
                }
                if opens {
                    frames.push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Map { key: None, awaiting_key: true }
                    } else {
                        Frame::Seq { next: 0 }
                    });
                } else {
                    path.pop();
                }
            }
            Event::SequenceEnd | Event::MappingEnd => {
                frames.pop();
                if in_key > 0 {
                    in_key -= 1;
                } else {
                    path.pop();
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn located(line: usize, col: usize, message: String) -> Refusal {
    Refusal::Located { line, column: col + 1, message }
}

fn anchors_refused() -> String {
    "anchors and aliases (&name, *name) are not allowed: the schema never needs them, and aliases can make a \
     small file expand without bound"
        .to_owned()
}

fn too_deep() -> String {
    format!("collections are nested more than {MAX_DEPTH} deep; the schema needs far fewer")
}

/// Checks the whole document (aliases, anchors, depth) and outlines it.
pub(crate) fn outline(text: &str) -> Result<Outline, Refusal> {
    let mut outline = Outline { empty: true, configmap: false };
    walk(text, |path, event, _| {
        match (path, event) {
            ([], Event::Scalar(value, style, ..)) => {
                outline.empty = *style == ScalarStyle::Plain && is_null(value);
            }
            ([], _) => outline.empty = false,
            ([Step::Key(key)], Event::Scalar(value, ..)) if key == "kind" => {
                outline.configmap = value == "ConfigMap";
            }
            _ => {}
        }
        Ok(true)
    })?;
    Ok(outline)
}

/// YAML's null scalars, as serde_yaml reads them.
fn is_null(value: &str) -> bool {
    matches!(value, "" | "~" | "null" | "Null" | "NULL")
}

/// The 1-based line and column of the node at `path`, if the text has it.
pub(crate) fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let wanted = parse_path(path);
    let mut found = None;
    let _ = walk(text, |at, _, span| {
        if at == wanted.as_slice() {
            found = Some((span.start.line(), span.start.col() + 1));
            return Ok(false);
        }
        Ok(true)
    });
    found
}

/// The plain scalar at `path` as it is written in the file.
pub(crate) fn plain_scalar(text: &str, path: &str) -> Option<String> {
    let wanted = parse_path(path);
    let mut found = None;
    let _ = walk(text, |at, event, _| {
        if at == wanted.as_slice() {
            if let Event::Scalar(value, ScalarStyle::Plain, ..) = event {
                found = Some(Cow::clone(value).into_owned());
            }
            return Ok(false);
        }
        Ok(true)
    });
    found
}

/// A refusal's message for a located problem, or saphyr's own wording.
pub(crate) fn describe(refusal: &Refusal) -> (Option<(usize, usize)>, String) {
    match refusal {
        Refusal::Located { line, column, message } => (Some((*line, *column)), message.clone()),
        Refusal::Syntax(e) => {
            // The parser's own words, whole (they quote no value of the file).
            (Some((e.marker().line(), e.marker().col() + 1)), format!("not valid YAML: {}", escape_controls(e.info())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_as_serde_yaml_prints_them() {
        assert_eq!(
            parse_path("services[1].hosts[0]"),
            vec![Step::Key("services".into()), Step::Index(1), Step::Key("hosts".into()), Step::Index(0)]
        );
        assert_eq!(parse_path("a[2][3]"), vec![Step::Key("a".into()), Step::Index(2), Step::Index(3)]);
    }

    #[test]
    fn locates_values_in_block_and_flow_style() {
        let text = "version: x\nservices:\n  - name: a\n    hosts: [x.example, y.example]\n  - {name: b, hosts: []}\n";
        assert_eq!(locate(text, "services[0].hosts[1]"), Some((4, 24)));
        assert_eq!(locate(text, "services[0].hosts"), Some((4, 12)));
        assert_eq!(locate(text, "services[1].hosts"), Some((5, 22)));
        assert_eq!(locate(text, "services[1].name"), Some((5, 12)));
        assert_eq!(locate(text, "services[2]"), None);
    }

    #[test]
    fn complex_keys_are_skipped() {
        let text = "? [a, b]\n: 1\nversion: 2\n";
        assert_eq!(locate(text, "version"), Some((3, 10)));
    }

    #[test]
    fn outlines_documents() {
        assert!(outline("").unwrap().empty);
        assert!(outline("# c\n~\n").unwrap().empty);
        assert!(!outline("\"\"").unwrap().empty);
        assert!(!outline("services: []").unwrap().empty);
        assert!(outline("kind: ConfigMap\ndata: {}\n").unwrap().configmap);
        assert!(!outline("metadata: {kind: ConfigMap}\n").unwrap().configmap);
    }

    #[test]
    fn refuses_anchors_aliases_and_depth() {
        let e = outline("x: &a [1]\ny: *a\n").unwrap_err();
        assert!(matches!(e, Refusal::Located { line: 1, column: 4, .. }), "{e:?}");
        let e = outline("x: [1]\ny: *a\n").unwrap_err();
        assert!(matches!(e, Refusal::Syntax(_)), "an unknown alias is a syntax error: {e:?}");
        let e = outline("x: [1]\ny: !!str &b 2\n").unwrap_err();
        assert!(matches!(e, Refusal::Located { line: 2, column: 4, .. }), "{e:?}");
        let deep = format!("x: {}1{}", "[".repeat(40), "]".repeat(40));
        assert!(matches!(outline(&deep).unwrap_err(), Refusal::Located { line: 1, .. }));
        let deeper = "[".repeat(200_000);
        assert!(matches!(outline(&deeper).unwrap_err(), Refusal::Located { .. }));
    }

    #[test]
    fn plain_scalars_as_written() {
        assert_eq!(plain_scalar("version: 1.10\nservices: []\n", "version").as_deref(), Some("1.10"));
        assert_eq!(plain_scalar("version: \"1.10\"\n", "version"), None);
    }
}
