//! Kubernetes YAML as a tree whose every node knows its line and column, read in
//! one linear pass with the bounds the module's own reader has.
//!
//! `import-ingress` reads what tenants wrote (`kubectl get ingress -A -o yaml`),
//! so its reader is as hardened as the one `check` and nginx use: a bounded read
//! of a regular file (no FIFO, device or endless file), no anchors or aliases
//! (kubectl never writes them, and a few kilobytes of aliases expand to
//! gigabytes), nesting at most [`MAX_DEPTH`] deep, and each node's position kept
//! as it is parsed, so that an error costs nothing to locate (re-parsing the file
//! for every error was quadratic in the number of bad Ingresses).

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Deepest nesting of collections. An Ingress needs 10 (a List's items, rules,
/// paths, backend, service, port); `managedFields` a few more.
pub const MAX_DEPTH: usize = 48;

/// The largest file read: a `kubectl get ingress -A -o yaml` of tens of
/// thousands of Ingresses, far beyond what a cluster holds.
pub const MAX_SIZE: u64 = 256 * 1024 * 1024;

#[derive(Debug)]
pub enum Value {
    /// A scalar as written, and whether it was plain (unquoted): only a plain
    /// `~`, `null` or nothing is YAML's null.
    Scalar(String, bool),
    Seq(Vec<Node>),
    /// Keys in the file's order, duplicates kept (the reader of an object says
    /// whether it accepts them).
    Map(Vec<(String, Node)>),
}

#[derive(Debug)]
pub struct Node {
    pub value: Value,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v).filter(|v| !v.is_null()),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s, true) if matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s, _) if !self.is_null() => Some(s),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    pub fn pairs(&self) -> &[(String, Node)] {
        match &self.value {
            Value::Map(pairs) => pairs,
            _ => &[],
        }
    }

    /// The first key that a mapping anywhere under this node repeats, with the
    /// repeated entry. YAML forbids them, and readers disagree on which one wins.
    pub fn duplicate_key(&self) -> Option<(&str, &Node)> {
        match &self.value {
            Value::Scalar(..) => None,
            Value::Seq(items) => items.iter().find_map(Node::duplicate_key),
            Value::Map(pairs) => {
                let mut seen = std::collections::HashSet::with_capacity(pairs.len());
                for (k, v) in pairs {
                    if !seen.insert(k.as_str()) {
                        return Some((k, v));
                    }
                }
                pairs.iter().find_map(|(_, v)| v.duplicate_key())
            }
        }
    }
}

/// Why a text could not be read as YAML: line, column (1-based), message.
#[derive(Debug)]
pub struct Refused {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

enum Frame {
    Seq(Vec<Node>, usize, usize),
    Map(Vec<(String, Node)>, Option<String>, usize, usize),
}

/// Every document of a stream, as trees (a null document for `---` alone).
pub fn documents(text: &str) -> Result<Vec<Node>, Refused> {
    let mut docs = Vec::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let refused = |line: usize, col: usize, message: String| Refused { line, column: col + 1, message };
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| {
            let message = if e.info().contains("recursion limit") {
                format!("collections are nested more than {MAX_DEPTH} deep")
            } else {
                format!("not valid YAML: {}", migration_engine::config::escape_controls(e.info()))
            };
            refused(e.marker().line(), e.marker().col(), message)
        })?;
        let (line, col) = (span.start.line(), span.start.col());
        let node = match event {
            Event::DocumentEnd => {
                docs.push(root.take().unwrap_or(Node {
                    value: Value::Scalar(String::new(), true),
                    line,
                    column: col + 1,
                }));
                continue;
            }
            Event::Alias(_) => return Err(refused(line, col, anchors())),
            Event::Scalar(_, _, anchor, _) | Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _)
                if anchor != 0 =>
            {
                return Err(refused(line, col, anchors()))
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if frames.len() >= MAX_DEPTH {
                    return Err(refused(line, col, format!("collections are nested more than {MAX_DEPTH} deep")));
                }
                if let Some(Frame::Map(_, None, ..)) = frames.last() {
                    return Err(refused(line, col, "a mapping key must be a scalar".into()));
                }
                frames.push(match event {
                    Event::SequenceStart(..) => Frame::Seq(Vec::new(), line, col + 1),
                    _ => Frame::Map(Vec::new(), None, line, col + 1),
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match frames.pop() {
                Some(Frame::Seq(items, l, c)) => Node { value: Value::Seq(items), line: l, column: c },
                Some(Frame::Map(pairs, _, l, c)) => Node { value: Value::Map(pairs), line: l, column: c },
                None => continue,
            },
            Event::Scalar(text, style, ..) => {
                if let Some(Frame::Map(_, key @ None, ..)) = frames.last_mut() {
                    *key = Some(text.into_owned());
                    continue;
                }
                Node { value: Value::Scalar(text.into_owned(), style == ScalarStyle::Plain), line, column: col + 1 }
            }
            _ => continue,
        };
        match frames.last_mut() {
            Some(Frame::Seq(items, ..)) => items.push(node),
            Some(Frame::Map(pairs, key, ..)) => pairs.push((key.take().unwrap_or_default(), node)),
            None => root = Some(node),
        }
    }
    Ok(docs)
}

fn anchors() -> String {
    "anchors and aliases (&name, *name) are not read: kubectl never writes them, and aliases can make a small \
     file expand without bound"
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_know_where_they_are() {
        let docs = documents("a: 1\nb:\n  - x\n  - {c: 'd'}\n---\n---\nz: ~\n").unwrap();
        assert_eq!(docs.len(), 3);
        let b = docs[0].get("b").unwrap();
        assert_eq!((b.items()[1].line, b.items()[1].column), (4, 5));
        let c = b.items()[1].get("c").unwrap();
        assert_eq!((c.as_str(), c.line, c.column), (Some("d"), 4, 9), "a quoted scalar starts at its quote");
        assert!(docs[1].is_null());
        assert!(docs[2].get("z").is_none(), "a null value is absent");
    }

    #[test]
    fn refuses_aliases_depth_and_complex_keys() {
        let e = documents("a: &x [1]\nb: *x\n").unwrap_err();
        assert_eq!((e.line, e.column), (1, 4), "{e:?}");
        let deep = "[".repeat(100_000);
        let e = documents(&deep).unwrap_err();
        assert!(e.message.contains("nested more than"), "{e:?}");
        assert!(documents("? [a]\n: b\n").is_err());
    }

    #[test]
    fn finds_repeated_keys() {
        let docs = documents("a:\n  b: 1\n  c: {d: 1, d: 2}\n").unwrap();
        let (k, v) = docs[0].duplicate_key().unwrap();
        assert_eq!((k, v.line, v.column), ("d", 3, 16));
    }
}
