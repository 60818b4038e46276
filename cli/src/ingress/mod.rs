//! `import-ingress`: ingress-nginx canary Ingresses to a migration.yaml.
//!
//! The import replays what ingress-nginx (controller v1.15.1, the last release)
//! does with a set of Ingresses, step for step, and then writes what the module
//! can do the same way. Line numbers below are of that release's source.
//!
//! 1. Each Ingress's canary annotations are parsed as
//!    `internal/ingress/annotations/canary/main.go` parses them: `canary` with Go's
//!    `strconv.ParseBool` (`True`, `1`, `t` are true), the weights with
//!    `strconv.Atoi` (anything else is 0, or 100 for the total), strings trimmed
//!    line by line (`parser/main.go:231`). A non-canary Ingress with canary
//!    annotations is "configured but not enabled" (`main.go:182`) and routes as a
//!    main Ingress. A string that ingress-nginx's annotation validation refuses
//!    (`parser/validators.go:68`, `:55`) is used as `""` when validation is on and
//!    as written when it is off, so the import cannot know what it did: that
//!    Ingress is an error.
//! 2. Ingresses are ordered by `creationTimestamp`, then `namespace/name`
//!    descending (`store/store.go:1111-1113`).
//! 3. Upstreams are named `namespace-service-port` (`controller/util.go:50`); the
//!    first Ingress to name one makes it, and a canary's is "no server"
//!    (`controller.go:1096`, `:1127`). A path `""` is `/` and a pathType
//!    ImplementationSpecific (or none) is Prefix (`store.go:940-947`). Each host's
//!    server starts with a root location sending to the defaultBackend of the
//!    main Ingress that made it, else to the controller's 404 (`:1335-1381`);
//!    main Ingresses' paths become locations, the first (path, pathType) of a host
//!    winning (`controller.go:807-850`).
//! 4. A canary's path joins the *upstream* of the main location with the same
//!    host, path and pathType (`controller.go:1701`). Every location of that upstream, on any host, then
//!    goes through the canary; only the first canary of an upstream is consulted
//!    (`balancer.lua:205`). A canary path that joins nothing deletes the canary's
//!    backend altogether (`controller.go:1711`), so none of its paths get traffic.
//! 5. A request is decided by `route_to_alternative_balancer`
//!    (`rootfs/etc/nginx/lua/balancer.lua:194`): the header (its name with `-`
//!    read as `_`, so `X_Canary` is the request's `X-Canary`; a value, else a PCRE
//!    pattern searched in the value, where a pattern error sends the request to
//!    main, else `always`/`never`), then the cookie (`always`/`never`), then
//!    `math.random(total) <= weight` with a total below 100 counting as 100.
//!
//! The module routes a whole Host to a service, or a location that names the
//! service with `migration_service`; what cannot be written that way is
//! reported and left out, never guessed.

mod build;
mod canary;
mod model;
mod plan;
mod read;
mod render;
mod rules;

use std::collections::BTreeSet;
use std::path::PathBuf;

use migration_engine::config::escape_controls;

use crate::{Failed, Format};
use build::{build, ordered};
use model::{At, Report};
use plan::plan;
use read::read;
use render::{print_report, render};

const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// `--namespace`: a namespace name (a DNS-1123 label), or a usage error.
pub fn namespace_arg(text: &str) -> Result<String, String> {
    if read::dns_label(text, 63) {
        Ok(text.to_owned())
    } else {
        Err("not a namespace name: a DNS-1123 label (lowercase letters, digits and '-', at most 63)".into())
    }
}

pub fn run(files: &[PathBuf], partial: bool, namespace: Option<&str>, format: Format) -> Result<(), Failed> {
    let mut all = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        read(f, namespace, &mut all, &mut problems)?;
    }
    // An object is one namespace/name: a second one is an error of its own.
    // One pass (removing each from the list was quadratic: 80,000 repeated
    // among 80,000 others took 55 s).
    let mut seen = BTreeSet::new();
    let mut repeated = Vec::new();
    all.retain(|i| {
        let first = seen.insert(i.id());
        if !first {
            repeated.push(i.id());
        }
        first
    });
    for id in repeated.into_iter().rev() {
        problems.push((
            At { file: "".into(), line: 0, column: 0 },
            format!("the Ingress {} is given twice; an object has one namespace/name", escape_controls(&id)),
        ));
    }
    let order = ordered(&all);
    let built = build(&all, &order);
    let mut report = Report::default();
    let services = plan(&all, &order, &built, &mut report);
    report.errors = problems
        .iter()
        .map(|(at, m)| if at.line == 0 { escape_controls(m) } else { format!("{at}: {}", escape_controls(m)) })
        .collect();
    // What nginx and `check` read is bounded; so is what the import writes
    // (checked as it is written, before anything parses it).
    let limit = migration_engine::source::DEFAULT_MAX_SIZE;
    let yaml = render(&services, files, limit as usize).map_err(|written| {
        Failed(Some(format!(
            "the generated YAML would be more than {limit} bytes, the most a configuration may have (max_size=; {written} bytes when writing stopped, {} services in all); nothing printed: look for Ingresses with huge annotation values joining many hosts",
            services.len()
        )))
    })?;
    // Whatever the import believes, what it prints must load: check it as nginx would.
    if let Err(e) = migration_engine::load_str_checked("import-ingress output", &yaml) {
        return Err(Failed(Some(format!("internal error: the generated YAML does not load ({e}); nothing printed"))));
    }
    if report.errors.is_empty() || partial {
        print!("{yaml}");
    }
    print_report(&report, partial, format);
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(Failed(None))
    }
}
