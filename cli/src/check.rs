//! `check FILE...`: the validation of `nginx -t`, from the same engine calls
//! (`read_source` then `load_str_checked`, as `migration_config` makes them), so
//! the messages are the same bytes.

use std::path::PathBuf;

use serde_json::json;

use crate::{Failed, Format};

/// One problem of one file.
struct Finding {
    file: String,
    location: Option<(usize, usize)>,
    path: String,
    severity: &'static str,
    /// The message without file, location and path.
    message: String,
    /// The line nginx -t prints, without `nginx: ` and ` in nginx.conf:N`.
    nginx: String,
}

fn findings(path: &std::path::Path) -> Vec<Finding> {
    let file = path.display().to_string();
    let loaded = migration_engine::read_source(path, migration_engine::source::DEFAULT_MAX_SIZE)
        .and_then(|text| migration_engine::load_str_checked(&file, &text).map(|(_, warnings)| (text, warnings)));
    match loaded {
        Err(e) => vec![Finding {
            file: e.file.clone(),
            location: e.location,
            path: e.path.clone(),
            severity: "error",
            message: e.message.clone(),
            // src/state/load.rs: ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", e)
            nginx: format!("[emerg] {e}"),
        }],
        Ok((text, warnings)) => warnings
            .into_iter()
            .map(|w| Finding {
                file: file.clone(),
                location: migration_engine::config::locate_in_file(&text, &w.path),
                path: w.path.clone(),
                severity: "warning",
                message: w.message.clone(),
                // src/state/load.rs: ngx_conf_log_error!(NGX_LOG_WARN, cf, "migration: {}: {}", source, warning)
                nginx: format!("[warn] migration: {file}: {w}"),
            })
            .collect(),
    }
}

pub fn run(files: &[PathBuf], strict: bool, format: Format) -> Result<(), Failed> {
    let mut all = Vec::new();
    let mut failed = false;
    for path in files {
        let found = findings(path);
        let errors = found.iter().filter(|f| f.severity == "error").count();
        let warnings = found.len() - errors;
        failed |= errors > 0 || (strict && warnings > 0);
        if format == Format::Text {
            for f in &found {
                println!("nginx-migration: {}", f.nginx);
            }
            if errors == 0 {
                let with = match warnings {
                    0 => String::new(),
                    1 => " (1 warning)".to_owned(),
                    n => format!(" ({n} warnings)"),
                };
                println!("nginx-migration: {}: ok{with}", path.display());
            }
        }
        all.extend(found);
    }
    if format == Format::Json {
        let list: Vec<_> = all
            .iter()
            .map(|f| {
                json!({
                    "file": f.file,
                    "line": f.location.map(|l| l.0),
                    "column": f.location.map(|l| l.1),
                    "path": f.path,
                    "severity": f.severity,
                    "message": f.message,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list).expect("JSON of strings and numbers"));
    }
    if failed {
        Err(Failed(None))
    } else {
        Ok(())
    }
}
