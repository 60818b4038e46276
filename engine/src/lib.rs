//! The decision engine of ngx_http_migration_module: the YAML model and its
//! validation, the compiled rule tables, and the decision order. Pure Rust with no
//! nginx types, so it is unit-tested, benchmarked and fuzzed on its own.
//!
//! ```
//! use migration_engine::{decide, load_str, OwnedRequest, ServiceChoice, Target};
//! let config = load_str("m.yaml", "services:\n  - name: api\n    old_host: api.example\n    old_backend: old:80\n    new_host: api.example\n    new_backend: new:443\n    migration: {percentage: 100}\n").unwrap();
//! let d = decide(&config, ServiceChoice::Auto, &OwnedRequest::new("API.example:8080"), &mut || 7);
//! assert_eq!(d.target, Some(Target::New));
//! ```

#![forbid(unsafe_code)]

pub mod breaker;
pub mod cidr;
pub mod compiled;
pub mod config;
pub mod decide;
pub mod drain;
pub mod hash;
pub mod lint;
pub mod ramp;
pub mod reach;
pub mod report;
pub mod request;
pub mod responses;
pub mod source;
pub mod sticky;
pub mod trace;
pub mod variables;

pub use breaker::{BreakerCells, Gate, Outcome, Transition, TrialPermit};
pub use compiled::{CompiledConfig, CompiledService, Endpoint, FallbackPolicy};
pub use config::{ConfigError, Target};
pub use decide::{decide, decide_traced, decide_with, Breakers, Decision, NoBreakers, Rule, ServiceChoice};
pub use report::{
    BreakerState, ConnectionsReport, Counts, FallbackReport, FileState, RampReport, ServiceReport, StatusReport,
};
pub use request::{
    arg_in_query, args_of_query, cookie_in_header, parse_header_line, HeaderLine, OwnedRequest, RequestView,
};
pub use sticky::{cookie_to_mint, StickyCookie, StickyId, WithUserCookie};
pub use trace::{NoTrace, Step, Trace, TracedStep, Tracer};

/// Parses, validates and compiles a configuration held in memory.
pub fn load_str(file: &str, text: &str) -> Result<CompiledConfig, ConfigError> {
    config::parse(file, text).map(CompiledConfig::compile)
}

/// As [`load_str`], with the warnings of [`lint::warnings`]: rules that can never
/// match (`nginx -t` prints them, and a configuration with them still loads).
pub fn load_str_checked(file: &str, text: &str) -> Result<(CompiledConfig, Vec<lint::Warning>), ConfigError> {
    let config = config::parse(file, text)?;
    let warnings = lint::warnings(&config);
    Ok((CompiledConfig::compile(config), warnings))
}

/// Reads, validates and compiles a configuration file. Errors name the file as
/// given.
pub fn load_file(path: &std::path::Path) -> Result<CompiledConfig, ConfigError> {
    let text = read_source(path, source::DEFAULT_MAX_SIZE)?;
    load_str(&path.display().to_string(), &text)
}

/// Reads a configuration file as text (a regular file of at most `max_size`
/// bytes, see [`source::read_bounded`]), with located errors for what cannot be
/// read or is not UTF-8; the text is what the shared zone publishes.
pub fn read_source(path: &std::path::Path, max_size: u64) -> Result<String, ConfigError> {
    let (bytes, _) = source::read_bounded(path, max_size)?;
    source_from_bytes(&path.display().to_string(), bytes)
}

/// A file's bytes as text; bytes that are not UTF-8 are a located error.
pub fn source_from_bytes(file: &str, bytes: Vec<u8>) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = offset - before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
        ConfigError::new(file, Some((line, column)), "", "the file is not valid UTF-8")
    })
}

/// The content hash of a configuration's text (FNV-1a 64): how a watched file is
/// known to have changed, whatever its modification time says.
pub fn content_hash(text: &[u8]) -> u64 {
    config::fnv1a64(text)
}
