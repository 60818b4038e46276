//! What the module can do of what ingress-nginx built: the services, and the
//! report of every annotation.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use migration_engine::config::escape_controls;
use serde_json::json;

use super::build::{Built, Dropped, Location};
use super::model::{Ingress, PathType, Port, Report, Service, ServiceRef};
use super::rules::canary_rules;
use super::PREFIX;

const AFFINITY: &[&str] = &[
    "affinity",
    "affinity-mode",
    "affinity-canary-behavior",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-max-age",
    "session-cookie-expires",
    "session-cookie-samesite",
    "session-cookie-secure",
    "session-cookie-change-on-failure",
    "session-cookie-domain",
    "session-cookie-conditional-samesite-none",
];
const CANARY: &[&str] = &[
    "canary",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "canary-weight",
    "canary-weight-total",
];
/// The annotations a canary Ingress keeps (annotations.md, "Canary").
const KEPT_ON_CANARY: &[&str] = &["load-balance", "upstream-hash-by"];

/// Annotations other than the canary's own, reported once per Ingress.
fn other_annotations(i: &Ingress, report: &mut Report) {
    for (key, value) in &i.annotations {
        let Some(name) = key.strip_prefix(PREFIX) else { continue };
        if CANARY.contains(&name) || name == "backend-protocol" {
            continue;
        }
        if AFFINITY.contains(&name) {
            let cookie = i.annotation("session-cookie-name").unwrap_or("INGRESSCOOKIE");
            report.unmapped(
                i,
                name,
                format!("session affinity ({value:?}): in ingress-nginx the affinity cookie {cookie} keeps a client on the side, main or canary, that its first request was sent to (balancer.lua:195-221; affinity-canary-behavior: sticky, the default), while strategy: weight draws every request anew. For clients that stay on one side, use strategy: user with user_key: cookie:{cookie} (a cookie your clients already carry) or header:X-User-ID"),
            );
        } else if i.canary.is_some() && !KEPT_ON_CANARY.contains(&name) {
            report.unmapped(i, name, format!("ingress-nginx ignores it on a canary Ingress ({value:?}): the main Ingress's annotations apply to both sides"));
        } else {
            report.unmapped(i, name, format!("not a canary annotation ({value:?}): keep its effect in nginx.conf; this tool maps only the canary"));
        }
    }
}

/// The scheme ingress-nginx proxies a location with (`backend-protocol`).
fn scheme(main: &Ingress) -> Result<&'static str, String> {
    match main.annotation("backend-protocol").map(|p| p.trim().to_ascii_uppercase()) {
        Some(p) if p == "HTTPS" => Ok("https"),
        Some(p) if ["GRPC", "GRPCS", "FCGI", "AUTO_HTTP"].contains(&p.as_str()) => Err(p),
        _ => Ok("http"),
    }
}

fn service_name(parts: &[&str]) -> String {
    parts
        .join("-")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .collect()
}

fn path_type_name(t: PathType) -> &'static str {
    match t {
        PathType::Exact => "Exact",
        PathType::Prefix => "Prefix",
    }
}

/// What the module can do of what ingress-nginx built.
pub(super) fn plan(all: &[Ingress], order: &[usize], built: &Built, report: &mut Report) -> Vec<Service> {
    for (&k, dropped) in &built.dropped {
        let c = &all[k];
        for d in dropped {
            let why = match d {
                Dropped::NoServer { host, path } => format!(
                    "no main Ingress serves host {:?} (path {path:?}): ingress-nginx cannot merge the canary there (controller.go:1680) and sends it nothing",
                    if host.is_empty() { "_" } else { host }
                ),
                Dropped::SameAsMain { host, path } => format!(
                    "host {host:?} path {path:?}: the canary's Service is the main location's own (controller.go:1694): nothing to split"
                ),
                Dropped::NoLocation { host, path, path_type } => format!(
                    "host {host:?}: no main Ingress has a location with path {path:?} and pathType {} (paths and pathTypes must be equal, controller.go:1701), so ingress-nginx deletes this canary's backend (controller.go:1711) and none of its paths get traffic",
                    path_type_name(*path_type)
                ),
                Dropped::CatchAll => "its defaultBackend merges with no location of the catch-all server, so ingress-nginx deletes this canary's backend (controller.go:1648)".to_owned(),
            };
            report.unmapped(c, "canary", why);
        }
    }
    for (main, host, path, canary) in &built.shadowed {
        report.unmapped(
            &all[*main],
            "spec.rules",
            format!(
                "host {host:?} path {path:?}: its Service's upstream is the canary {}'s (made first by its path, or made again by its defaultBackend, which replaces an upstream, controller.go:1037; Ingresses in order of creationTimestamp, then namespace/name descending), so ingress-nginx serves no location there (controller.go:807) and answers with its default backend (404); the module cannot answer 404 for a service, so requests there route as nginx.conf says",
                all[*canary].id()
            ),
        );
    }
    let mut services = Vec::new();
    let mut used_names = BTreeSet::new();
    // (Ingress, what) already told in the report.
    let mut told: BTreeSet<(usize, &str)> = BTreeSet::new();
    // Upstream → host → its locations there, in order: found once, not per upstream.
    let mut located: HashMap<&str, BTreeMap<&str, Vec<&Location>>> = HashMap::new();
    for (host, locations) in &built.servers {
        for l in locations {
            let Some(u) = &l.upstream else { continue };
            if built.upstreams.contains_key(u) {
                located.entry(u).or_default().entry(host).or_default().push(l);
            } else if l.ingress != usize::MAX {
                report.unmapped(
                    &all[l.ingress],
                    "spec.rules",
                    format!("host {:?} path {:?}: its upstream {u} was deleted by a canary whose defaultBackend names the same Service and joins nothing (controller.go:1648), so ingress-nginx answers 503 there; requests there route as nginx.conf says", if host.is_empty() { "_" } else { host }, l.path),
                );
            }
        }
    }
    let mut names: Vec<&String> = built.upstreams.keys().collect();
    names.sort();
    for primary in names {
        let u = &built.upstreams[primary];
        if u.no_server || u.alternatives.is_empty() {
            continue;
        }
        for later in &u.alternatives[1..] {
            if let Some(k) = built.upstreams.get(later).and_then(|a| a.policy_of) {
                let first_k = built.upstreams.get(&u.alternatives[0]).and_then(|a| a.policy_of);
                let first = first_k.map(|f| all[f].id());
                // Manifests from a repository have no creationTimestamp: the
                // order is then the names', which the cluster's may not be.
                let untimed = first_k.is_some_and(|f| all[f].created == i64::MIN) || all[k].created == i64::MIN;
                report.unmapped(
                    &all[k],
                    "canary",
                    format!(
                        "the upstream {primary} already has the canary {} first (Ingresses in order of creationTimestamp, then namespace/name descending, store.go:1111); ingress-nginx consults only the first (balancer.lua:205){}",
                        first.unwrap_or_else(|| u.alternatives[0].clone()),
                        if untimed { "; the input has no creationTimestamp for one of them, so this order is not the cluster's (one without sorts first, as Go's zero time; two without, by name): in the cluster the one created first wins (import what `kubectl get ingress -A -o yaml` prints)" } else { "" }
                    ),
                );
            }
        }
        let Some(alt) = built.upstreams.get(&u.alternatives[0]) else { continue };
        let Some(k) = alt.policy_of else {
            // A main's defaultBackend made the canary's upstream again, without
            // a policy: it still merges (canMergeBackend asks only the
            // primary), and balancer.lua finds no header, cookie or weight.
            let alt_name = &u.alternatives[0];
            for &c in order.iter().filter(|&&c| all[c].canary.is_some() && names_upstream(&all[c], alt_name)) {
                report.unmapped(
                    &all[c],
                    "canary",
                    format!(
                        "its upstream {alt_name} was made again by the defaultBackend of {} (controller.go:1037), which carries no traffic policy, so ingress-nginx sends this canary no request (no header, cookie or weight, balancer.lua:258-276); no service is written for it",
                        all[alt.made_by].id()
                    ),
                );
            }
            continue;
        };
        let c = &all[k];
        let canary = c.canary.as_ref().expect("a policy is a canary's");
        // balancer.lua:195-197: with session affinity on the main Ingress, a request
        // that holds a valid affinity cookie stays where it is before any rule is asked.
        let hosts = located.get(primary.as_str()).cloned().unwrap_or_default();
        // controller.go:875-897: the upstream's affinity comes from any main
        // Ingress with a location on it; only `cookie` makes a balancer sticky.
        let affinity = hosts
            .values()
            .flatten()
            .map(|l| &all[l.ingress])
            .find(|main| main.annotation("affinity").is_some_and(|a| a.trim() == "cookie"));
        let (rules, bp) = {
            let mut scratch = Report::default();
            let out = canary_rules(c, canary, &mut scratch);
            if told.insert((k, "annotations")) {
                if let Some(main) = affinity {
                    let cookie = main.annotation("session-cookie-name").unwrap_or("INGRESSCOOKIE");
                    let except = format!("; a request that holds a valid {cookie} cookie of {} differs: ingress-nginx keeps it on the side the cookie names before asking any rule (balancer.lua:195-221)", main.id());
                    for v in &mut scratch.approximate {
                        v["how"] = escape_controls(&format!("{}{except}", v["how"].as_str().unwrap_or(""))).into();
                    }
                    for mut v in std::mem::take(&mut scratch.mapped) {
                        let rule = v["annotation"]
                            .as_str()
                            .is_some_and(|a| a.starts_with("canary-by") || a.starts_with("canary-weight"));
                        if rule {
                            v["how"] = escape_controls(&format!("{}{except}", v["how"].as_str().unwrap_or(""))).into();
                            scratch.approximate.push(v);
                        } else {
                            scratch.mapped.push(v);
                        }
                    }
                }
                report.mapped.append(&mut scratch.mapped);
                report.approximate.append(&mut scratch.approximate);
                report.unmapped.append(&mut scratch.unmapped);
                other_annotations(c, report);
            }
            out
        };
        let rules = std::rc::Rc::new(rules);
        // Every location of this upstream, on any host, goes through the canary.
        for (host, mine) in &hosts {
            let host = &host.to_string();
            let Some(first) = mine.first() else { continue };
            let main = &all[first.ingress];
            for l in mine {
                if told.insert((l.ingress, "annotations")) {
                    other_annotations(&all[l.ingress], report);
                }
            }
            if host.is_empty() {
                report.unmapped(c, "canary", format!("rules without a host (and defaultBackend) of {} are served by ingress-nginx's catch-all server _, for every Host no Ingress names; the module routes by Host, so the canary is not mapped there", main.id()));
                continue;
            }
            if host.starts_with("*.") {
                report.unmapped(c, "canary", format!("host {host:?} is a wildcard: ingress-nginx sends each request's own Host upstream, while old_host and new_host are one name; write this service by hand with hosts: [{host:?}] and proxy_set_header Host $host"));
                continue;
            }
            let named: Vec<String> = [(&u.service, "old", main), (&alt.service, "new", c)]
                .into_iter()
                .filter_map(|(s, side, i)| match &s.port {
                    Port::Name(p) => Some(format!(
                        "{side}: Service {} of {} names its port {p:?}, whose number only the Service knows",
                        s.name,
                        i.id()
                    )),
                    Port::Number(_) => None,
                })
                .collect();
            if !named.is_empty() {
                report.unmapped(c, "canary", format!("host {host}: {}; nginx needs host:port, so no service is written: import again after writing the port's number in the Ingress, or write the service by hand", named.join("; ")));
                continue;
            }
            let scheme = match scheme(main) {
                Ok(s) => s,
                Err(p) => {
                    report.unmapped(
                        main,
                        "backend-protocol",
                        format!(
                            "{p}: the module proxies HTTP and HTTPS only, so no service is written for host {host}"
                        ),
                    );
                    continue;
                }
            };
            let address = |s: &ServiceRef| {
                let Port::Number(n) = s.port else { unreachable!("named ports are left out above") };
                if scheme == "https" {
                    format!("https://{}:{n}", s.host())
                } else {
                    format!("{}:{n}", s.host())
                }
            };
            if scheme == "https" && told.insert((first.ingress, "backend-protocol")) {
                report.mapped(main, "backend-protocol", "HTTPS: old_backend and new_backend are https:// (ingress-nginx proxies the canary with the main Ingress's protocol); proxy_ssl_verify and the other proxy-ssl-* settings stay in nginx.conf (ingress-nginx does not verify by default)");
            }
            // Whole: every location of the host, its root included, sends here. A
            // root that answers 404 or sends elsewhere makes it by location.
            let whole = built.servers[host.as_str()].len() == mine.len();
            let mut name = service_name(&[&main.namespace, &main.name]);
            if used_names.contains(&name) {
                name = service_name(&[&main.namespace, &main.name, host]);
            }
            let base = name.clone();
            let mut n = 2;
            while used_names.contains(&name) {
                name = format!("{base}-{n}");
                n += 1;
            }
            used_names.insert(name.clone());
            if !whole {
                let server = &built.servers[host.as_str()];
                let paths: Vec<&str> = mine.iter().map(|l| l.path.as_str()).collect();
                // template.go:506-537: one location with a regular expression or
                // a rewrite makes every location of the server one.
                let regex_by = server.iter().filter(|l| l.ingress != usize::MAX).map(|l| &all[l.ingress]).find(|i| {
                    i.annotation("use-regex").is_some_and(|v| v.trim() == "true")
                        || i.annotation("rewrite-target").is_some_and(|t| !t.is_empty())
                });
                let how = match regex_by {
                    Some(i) => format!("ingress-nginx writes this host's locations as case-insensitive regular expressions (use-regex or rewrite-target on {}, template.go:506-537), which the import does not translate: write those locations by hand, each with `migration on; migration_service {name};`", i.id()),
                    None => mine
                        .iter()
                        .flat_map(|l| nginx_locations(l, server))
                        .map(|location| {
                            format!("location {location} {{ migration on; migration_service {name}; proxy_set_header Host $migration_host; proxy_pass $migration_scheme://$migration_backend; }}")
                        })
                        .collect::<Vec<_>>()
                        .join(" "),
                };
                report.approximate(
                    c,
                    "canary",
                    format!(
                        "host {host}: the canary rides on the upstream {primary}, which serves paths {} of this host (ingress-nginx canaries every location of that upstream, controller.go:1601), while other paths of it send elsewhere; the module routes whole Hosts, so this service is routed only by locations that name it: {how}",
                        paths.join(", "),
                    ),
                );
            }
            report.mapped(
                c,
                "canary",
                format!(
                    "service {name}: host {host}, old {} ({}), new {} ({})",
                    address(&u.service),
                    main.id(),
                    address(&alt.service),
                    c.id()
                ),
            );
            services.push(Service {
                name,
                host: host.clone(),
                by_location: !whole,
                old: address(&u.service),
                new: address(&alt.service),
                rules: std::rc::Rc::clone(&rules),
                percentage_bp: bp,
            });
        }
    }
    // Canary Ingresses that reached no upstream still have their annotations told.
    for &k in order {
        let i = &all[k];
        if let Some(canary) = i.canary.as_ref().filter(|_| !told.contains(&(k, "annotations"))) {
            let mut scratch = Report::default();
            canary_rules(i, canary, &mut scratch);
            report.unmapped.extend(scratch.mapped.into_iter().chain(scratch.approximate).chain(scratch.unmapped).map(|mut v| {
                let how = v["how"].take();
                let why = if how.is_null() { v["why"].take() } else { how };
                json!({"ingress": v["ingress"], "annotation": v["annotation"], "why": format!("{} (this canary gets no traffic, see its canary line)", why.as_str().unwrap_or(""))})
            }));
            other_annotations(i, report);
        } else if i.canary.is_none() && !i.parse_notes.is_empty() {
            for (annotation, note) in &i.parse_notes {
                report.unmapped(i, annotation, note);
            }
        }
    }
    services
}

/// Whether the Ingress's defaultBackend or one of its paths sends to `upstream`.
fn names_upstream(i: &Ingress, upstream: &str) -> bool {
    i.default_backend.iter().chain(i.path_backends()).any(|s| s.upstream() == upstream)
}

/// The `location` arguments ingress-nginx writes for a location
/// (location.go:33-100): a Prefix path other than `/` becomes the path with a
/// `/` at its end, and an exact location of the path itself unless the server
/// has one already; so `/api` canaries `/api` and `/api/...`, not `/apix`. A
/// path nginx.conf would read otherwise (a space, `;`, `{`, a quote) is quoted.
/// Locations of a main with `use-regex` or `rewrite-target` are regular
/// expressions in ingress-nginx: not written here.
fn nginx_locations(l: &Location, server: &[Location]) -> Vec<String> {
    let quoted = |path: &str| {
        if path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._~%-+:@!$&()*,=".contains(&b)) {
            path.to_owned()
        } else {
            format!("\"{}\"", path.replace('\\', "\\\\").replace('"', "\\\""))
        }
    };
    match l.path_type {
        PathType::Exact => vec![format!("= {}", quoted(&l.path))],
        _ if l.path == "/" => vec!["/".to_owned()],
        _ => {
            let prefix = if l.path.ends_with('/') { l.path.clone() } else { format!("{}/", l.path) };
            let mut out = vec![quoted(&prefix)];
            if !server.iter().any(|other| other.path_type == PathType::Exact && other.path == l.path) {
                out.push(format!("= {}", quoted(&l.path)));
            }
            out
        }
    }
}
