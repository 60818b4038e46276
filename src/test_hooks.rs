//! Fault injection for the tests, compiled only with the cargo feature
//! `test-hooks` (`make build` installs such a build as
//! `target/nginx/modules/ngx_http_migration_module_test_hooks.so`; the module
//! everyone runs has none of this).
//!
//! Hooks are named in the master's environment, `MIGRATION_TEST_HOOKS="name=value,..."`,
//! read once when the http block is configured; workers inherit them with the
//! master's memory, whatever nginx's `env` directive keeps.

#[cfg(feature = "test-hooks")]
mod enabled {
    use std::sync::OnceLock;

    static HOOKS: OnceLock<Vec<(String, String)>> = OnceLock::new();

    pub fn load() {
        HOOKS.get_or_init(|| {
            std::env::var("MIGRATION_TEST_HOOKS")
                .unwrap_or_default()
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| match h.split_once('=') {
                    Some((name, value)) => (name.to_owned(), value.to_owned()),
                    None => (h.to_owned(), String::new()),
                })
                .collect()
        });
    }

    pub fn value(name: &str) -> Option<&'static str> {
        HOOKS.get()?.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads the hooks (in the master, before any worker exists).
pub fn load() {
    #[cfg(feature = "test-hooks")]
    enabled::load();
}

/// The value of hook `name`, when the tests set it.
#[inline]
pub fn value(_name: &str) -> Option<&'static str> {
    #[cfg(feature = "test-hooks")]
    return enabled::value(_name);
    #[cfg(not(feature = "test-hooks"))]
    None
}

/// `watch_delay_once=MS`: the first process to compile a `watch=` change sleeps
/// MS milliseconds before compiling it (one process only: it claims
/// `<file>.hook-claimed`), so that another can publish a newer change meanwhile.
pub fn watch_delay_once(source: &str) {
    let Some(ms) = value("watch_delay_once").and_then(|v| v.parse::<u64>().ok()) else {
        return;
    };
    let claimed = std::fs::OpenOptions::new().write(true).create_new(true).open(format!("{source}.hook-claimed"));
    if claimed.is_ok() {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// `fail_loc_conf_alloc=N`: the N-th location configuration (1-based) cannot be
/// allocated, as when the configuration pool is out of memory.
pub fn fail_loc_conf_alloc() -> bool {
    use core::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let Some(n) = value("fail_loc_conf_alloc").and_then(|v| v.parse::<u64>().ok()) else {
        return false;
    };
    CALLS.fetch_add(1, Ordering::Relaxed) + 1 == n
}

/// `panic=WHERE`: a panic at the named entry point (`publication`, and the
/// others `crate::guard` names), to show that none crosses into nginx.
pub fn panic_in(place: &str) {
    if value("panic") == Some(place) {
        panic!("test hook: a panic in {place}");
    }
}

/// `reload_commit_delay=MS`: at a reload (the zone already has a generation), the
/// master sleeps MS milliseconds between reading the file and committing it, so
/// that an old worker's `watch=` can publish a newer read of the same file meanwhile.
pub fn reload_commit_delay(zone_generation: u64) {
    let Some(ms) = value("reload_commit_delay").and_then(|v| v.parse::<u64>().ok()) else {
        return;
    };
    if zone_generation > 0 {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// `hold_zone_lock=MS`: the status handler takes the zone's lock and holds it
/// MS milliseconds (its worker blocks meanwhile), saying so in the error log: a
/// worker killed then dies holding the lock, as one the OOM killer takes would.
pub fn hold_zone_lock_ms() -> Option<u64> {
    value("hold_zone_lock").and_then(|v| v.parse::<u64>().ok())
}
