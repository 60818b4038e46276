//! A ConfigMap manifest (docs/yaml.md): the document it embeds, and where that
//! document's lines are in the manifest.

use super::{syntax, ConfigError};

/// The line and column of the field at `path` (`services[0].canary.ip_rules[1]`,
/// as errors and warnings name fields) in a file's text, a ConfigMap manifest
/// included (positions are the manifest's when the document is a literal block).
/// For the located warnings of `nginx-migration check --format json`.
pub fn locate_in_file(text: &str, path: &str) -> Option<(usize, usize)> {
    let outline = syntax::outline(text).ok()?;
    if !outline.configmap {
        return syntax::locate(text, path);
    }
    let embedded = unwrap_configmap("", text).ok()?;
    let (line, column) = syntax::locate(&embedded.text, path)?;
    let (line_offset, indent) = embedded.offset?;
    Some((line + line_offset, column + indent))
}

pub(super) struct Embedded {
    /// How errors name the embedded document.
    pub(super) label: String,
    pub(super) text: String,
    /// (lines before its first line, its indentation) in the manifest, when the
    /// document is a literal block whose lines map one to one onto the file's.
    pub(super) offset: Option<(usize, usize)>,
}

/// A ConfigMap manifest's `data."migration.yaml"`, or its only `*.yaml` key
/// (docs/yaml.md: a `*.yml` key is not one of them). The first pass has checked the
/// manifest (no aliases, bounded depth), so reading it whole costs what its size
/// says.
pub(super) fn unwrap_configmap(file: &str, text: &str) -> Result<Embedded, ConfigError> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| ConfigError::from_yaml(file, &e))?;
    let data = value.get("data").and_then(|d| d.as_mapping()).ok_or_else(|| {
        ConfigError::new(file, None, "data", "a ConfigMap needs a `data` mapping holding migration.yaml")
    })?;
    let key = if data.contains_key("migration.yaml") {
        "migration.yaml".to_owned()
    } else {
        let yaml_keys: Vec<&str> = data.keys().filter_map(|k| k.as_str()).filter(|k| k.ends_with(".yaml")).collect();
        match yaml_keys.as_slice() {
            [only] => (*only).to_owned(),
            [] => {
                let yml = data.keys().filter_map(|k| k.as_str()).any(|k| k.ends_with(".yml"));
                let hint = if yml { " (a *.yml key is not read: name it migration.yaml)" } else { "" };
                return Err(ConfigError::new(
                    file,
                    None,
                    "data",
                    format!("the ConfigMap has no migration.yaml key{hint}"),
                ));
            }
            _ => {
                return Err(ConfigError::new(
                    file,
                    None,
                    "data",
                    format!(
                        "the ConfigMap has several *.yaml keys ({}) and none is migration.yaml",
                        yaml_keys.join(", ")
                    ),
                ))
            }
        }
    };
    // `key` came from `as_str`, which sees through tags: `! a.yaml:` is a tagged
    // key that indexing by the plain string would not find (and would panic).
    let body = data
        .get(key.as_str())
        .or_else(|| data.iter().find(|(k, _)| k.as_str() == Some(key.as_str())).map(|(_, v)| v))
        .and_then(serde_yaml::Value::as_str)
        .ok_or_else(|| {
            ConfigError::new(file, None, &format!("data.{key}"), "must be a string holding the YAML document")
        })?;
    let offset = literal_block_offset(text, &key);
    let label = if offset.is_some() { file.to_owned() } else { format!("{file} (data.{key})") };
    Ok(Embedded { label, text: body.to_owned(), offset })
}

/// Finds `KEY: |` in the manifest and returns (its line number, the block's
/// indentation), so embedded positions can be reported as positions in the file.
fn literal_block_offset(text: &str, key: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = None;
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let rest = [format!("{key}:"), format!("\"{key}\":"), format!("'{key}':")]
            .iter()
            .find_map(|k| trimmed.strip_prefix(k.as_str()))
            .map(str::trim);
        if let Some(rest) = rest {
            if !(rest == "|" || rest == "|-" || rest == "|+") || found.is_some() {
                return None;
            }
            found = Some(i);
        }
    }
    let key_line = found?;
    let indent = lines[key_line + 1..]
        .iter()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches(' ').len())?;
    Some((key_line + 1, indent))
}
