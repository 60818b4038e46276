//! One admission for a configuration file, whichever way it arrives: read by the
//! `migration_config` directive (`nginx -t`, start, reload) or by a worker's
//! compile thread (`watch=`). Both read it bounded, refuse a file whose text
//! alone cannot fit the zone before parsing a large one, validate it with the
//! engine, and check it against what nginx.conf says (the services its
//! `migration_service` names, the variables a `user_key: var:NAME` reads, what
//! its locations can route). Each caller words the refusal for where it is said
//! (the terminal of `nginx -t`, the error log, the status's `file` state).

use migration_engine::reach::Reach;
use migration_engine::variables::VariableNames;
use migration_engine::{CompiledConfig, ConfigError};

use crate::conf::{check_pinned_services, PinnedService};
use crate::state::zone::{required_zone_size, PARSE_BEFORE_REFUSING};

/// What a file must satisfy beyond the engine's own validation.
pub struct Admission<'a> {
    /// `max_size=`: the largest file read, in bytes.
    pub max_size: u64,
    /// The zone the configuration must fit (its text is held twice).
    pub zone_size: usize,
    /// The services nginx.conf's locations name. Empty while nginx.conf is read:
    /// each `migration_service` checks its own name as it comes.
    pub pinned: &'a [PinnedService],
    /// The variables nginx.conf defines; None while nginx.conf is read (the
    /// postconfiguration checks them once they are all known).
    pub variables: Option<&'a VariableNames>,
    /// What nginx.conf's locations can route: services none can reach are warned
    /// about. None while nginx.conf is read (postconfiguration warns).
    pub reach: Option<&'a Reach>,
}

/// Why a file is not admitted.
pub enum Refusal {
    /// It cannot be read: missing, not a regular file, unreadable by this
    /// process's user, over `max_size`.
    Unreadable(ConfigError),
    /// Its text alone cannot fit the zone (`at_least` bytes); refused unparsed.
    TooBig { hash: u64, bytes: usize, at_least: usize },
    /// Not a configuration nginx can run: the located message.
    Invalid { hash: u64, message: String },
}

/// An admitted file.
pub struct Admitted {
    pub config: CompiledConfig,
    pub warnings: Vec<String>,
    pub text: String,
    pub hash: u64,
}

impl Admission<'_> {
    /// Reads and admits the file at `path` (named so in every message).
    pub fn admit(&self, path: &str) -> Result<Admitted, Refusal> {
        let (bytes, hash) = self.read(path)?;
        self.admit_read(path, bytes, hash, || {})
    }

    /// Reads the file, bounded by `max_size`: its bytes and content hash (a
    /// caller that already dealt with that content need not admit it again).
    pub fn read(&self, path: &str) -> Result<(Vec<u8>, u64), Refusal> {
        let (bytes, _) = migration_engine::source::read_bounded(std::path::Path::new(path), self.max_size)
            .map_err(Refusal::Unreadable)?;
        let hash = migration_engine::content_hash(&bytes);
        Ok((bytes, hash))
    }

    /// Admits a file's content as [`Admission::read`] returned it; `before_parse`
    /// runs between the size check and the parse (the test hooks' delay).
    pub fn admit_read(
        &self,
        path: &str,
        bytes: Vec<u8>,
        hash: u64,
        before_parse: impl FnOnce(),
    ) -> Result<Admitted, Refusal> {
        // The zone holds the text twice: a large file that cannot fit whatever its
        // services is refused before it is parsed (a small one is parsed first, so
        // that the refusal can say exactly what it needs).
        let at_least = required_zone_size(path.len(), bytes.len(), &[], 1);
        if bytes.len() > PARSE_BEFORE_REFUSING && at_least > self.zone_size {
            return Err(Refusal::TooBig { hash, bytes: bytes.len(), at_least });
        }
        before_parse();
        let invalid = |message: String| Refusal::Invalid { hash, message };
        let text = migration_engine::source_from_bytes(path, bytes).map_err(|e| invalid(e.to_string()))?;
        let (config, warnings) = migration_engine::load_str_checked(path, &text).map_err(|e| invalid(e.to_string()))?;
        check_pinned_services(self.pinned, path, &config).map_err(|message| invalid(format!("{path}: {message}")))?;
        if let Some(names) = self.variables {
            migration_engine::variables::check_user_variables(names, path, &text, &config).map_err(invalid)?;
        }
        let mut warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        if let Some(reach) = self.reach {
            warnings.extend(migration_engine::reach::unreachable_warnings(&config, reach));
            warnings.extend(migration_engine::reach::resolver_warnings(&config, reach));
        }
        Ok(Admitted { config, warnings, text, hash })
    }
}
