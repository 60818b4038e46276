//! Which services some location of nginx.conf can route at all. With
//! `migration_service auto` a server block routes only the Hosts it names in
//! `server_name`; a service whose hosts no such block names, that no location
//! names with `migration_service NAME`, and with no `auto any_server` anywhere,
//! gets `rule none` on every request (the 421 guard of docs/module.md answers it) while
//! `check` says the file is fine. The nginx layer collects a [`Reach`] from its
//! configuration; `nginx -t`, start, reload and every `watch=` publication warn
//! about each such service.

use std::collections::HashSet;

use crate::CompiledConfig;

/// A `server_name` as nginx matches it (lowercase).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerNamePattern {
    /// `api.example.com`.
    Exact(Vec<u8>),
    /// `*.example.com`: any subdomain (`.example.com` kept).
    AnySubdomain(Vec<u8>),
    /// `.example.com`: the name (`example.com` kept) and every subdomain.
    NameAndSubdomains(Vec<u8>),
    /// `www.example.*` (`www.example.` kept).
    AnyTail(Vec<u8>),
    /// `~regex`: taken to match anything (it is not evaluated here).
    Any,
}

/// What nginx.conf can route: the locations' `migration_service` settings.
#[derive(Clone, Debug, Default)]
pub struct Reach {
    /// Some location routes every service (`auto any_server`).
    pub any_server: bool,
    /// Services some location names (`migration_service NAME`).
    pub named: HashSet<String>,
    /// The names of every server block with a location that routes by `auto`.
    pub server_names: Vec<ServerNamePattern>,
    /// The `upstream {}` blocks nginx.conf defines (lowercase), and the implicit
    /// upstreams of static `proxy_pass` addresses (`name:port`): a backend
    /// matching one needs no resolver.
    pub upstreams: HashSet<String>,
    /// A location with `migration on` that has no `resolver` (its name), if any:
    /// a backend given by host name fails there on every request (502, "no
    /// resolver defined"), since `proxy_pass` with variables resolves at request
    /// time.
    pub location_without_resolver: Option<String>,
}

/// `host` (a service's exact host, or with `wildcard` its `.suffix`: any
/// subdomain) and `name` could both match some request's Host.
fn overlap(host: &[u8], wildcard: bool, name: &ServerNamePattern) -> bool {
    use ServerNamePattern::*;
    // `a` is `b` or a subdomain of it (`b` written with its leading dot).
    let under = |a: &[u8], dotted_b: &[u8]| a.ends_with(dotted_b);
    match (name, wildcard) {
        (Any, _) | (AnyTail(_), true) => true,
        (Exact(n), false) => host == n.as_slice(),
        (Exact(n), true) => n.len() > host.len() && under(n, host),
        (AnySubdomain(s), false) => host.len() > s.len() && under(host, s),
        (AnySubdomain(s), true) => under(host, s) || under(s, host),
        (NameAndSubdomains(d), false) => {
            host == d.as_slice()
                || (host.len() > d.len() && host.ends_with(d) && host[host.len() - d.len() - 1] == b'.')
        }
        (NameAndSubdomains(d), true) => {
            let dotted: Vec<u8> = [b".", &d[..]].concat();
            under(host, &dotted) || under(&dotted, host)
        }
        (AnyTail(prefix), false) => host.starts_with(prefix),
    }
}

/// The services of `config` no location can route, by index, in order.
pub fn unreachable_services(config: &CompiledConfig, reach: &Reach) -> Vec<usize> {
    if reach.any_server {
        return Vec::new();
    }
    let mut reached = vec![false; config.services.len()];
    for (index, service) in config.services.iter().enumerate() {
        reached[index] = reach.named.contains(&service.name);
    }
    for (index, host, wildcard) in config.hosts() {
        let slot = &mut reached[index as usize];
        if !*slot {
            *slot = reach.server_names.iter().any(|name| overlap(host, wildcard, name));
        }
    }
    reached.iter().enumerate().filter(|(_, &r)| !r).map(|(i, _)| i).collect()
}

/// The warnings for [`unreachable_services`]: one line each, the first ten, then
/// how many more.
pub fn unreachable_warnings(config: &CompiledConfig, reach: &Reach) -> Vec<String> {
    let unreachable = unreachable_services(config, reach);
    let mut out: Vec<String> = unreachable
        .iter()
        .take(10)
        .map(|&i| {
            format!(
                "service \"{}\" is routed by no location: no server block that routes by \"migration_service auto\" \
                 names one of its hosts in server_name, no location names it with migration_service, and none uses \
                 \"auto any_server\"; its requests get no service (rule none)",
                config.services[i].name
            )
        })
        .collect();
    if unreachable.len() > 10 {
        out.push(format!("{} more services are routed by no location", unreachable.len() - 10));
    }
    out
}

/// Whether nginx resolves `address` (a backend without its scheme: `host:port`,
/// `[v6]:port`, or an upstream name; a bare IPv6 address is refused by
/// `Backend::parse`) at request time: a host name that is not an
/// `upstream {}` block (nginx matches a block only for an address without port).
fn needs_resolver(address: &str, upstreams: &HashSet<String>) -> bool {
    let (host, has_port) = match address.rsplit_once(':') {
        _ if address.starts_with('[') => return false,
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => (host, true),
        _ => (address, false),
    };
    if host.parse::<std::net::IpAddr>().is_ok() || upstreams.contains(&address.to_ascii_lowercase()) {
        return false;
    }
    has_port || !upstreams.contains(&host.to_ascii_lowercase())
}

/// The warnings for backends given by host name while a location with
/// `migration on` has no resolver: one line each, the first ten, then how many
/// more.
pub fn resolver_warnings(config: &CompiledConfig, reach: &Reach) -> Vec<String> {
    let Some(location) = &reach.location_without_resolver else { return Vec::new() };
    let mut lines = Vec::new();
    let mut more = 0;
    for service in &config.services {
        for (which, endpoint) in [("old_backend", &service.old), ("new_backend", &service.new)] {
            if !needs_resolver(&endpoint.backend, &reach.upstreams) {
                continue;
            }
            if lines.len() == 10 {
                more += 1;
                continue;
            }
            lines.push(format!(
                "service \"{}\": {which} {} is a host name, which nginx resolves when a request is sent to it, and \
                 location \"{location}\" (migration on) has no resolver: every request sent there fails with 502 (no \
                 resolver defined); add a resolver (your DNS, e.g. the cluster's) to that location, its server or the \
                 http block, or name an upstream {{}} block",
                service.name, endpoint.backend
            ));
        }
    }
    if more > 0 {
        lines.push(format!("{more} more backends are host names without a resolver"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServerNamePattern::*;

    const YAML: &str = "services:\n\
        - {name: api, hosts: [api.example.com], old_host: a, old_backend: \"o:1\", new_host: a, new_backend: \"n:1\"}\n\
        - {name: shop, hosts: [\"*.shop.example.com\"], old_host: s, old_backend: \"o:1\", new_host: s, new_backend: \"n:1\"}\n\
        - {name: admin, hosts: [admin.internal], old_host: d, old_backend: \"o:1\", new_host: d, new_backend: \"n:1\"}\n";

    fn names(reach: &Reach) -> Vec<&str> {
        let config = crate::load_str("m.yaml", YAML).unwrap();
        let unreachable = unreachable_services(&config, reach);
        // The names outlive `config` as static strings of the test.
        unreachable.iter().map(|&i| ["api", "shop", "admin"][i]).collect()
    }

    fn servers(names: Vec<ServerNamePattern>) -> Reach {
        Reach { server_names: names, ..Reach::default() }
    }

    #[test]
    fn a_service_is_reached_by_a_server_name_a_pinned_location_or_any_server() {
        assert_eq!(names(&Reach::default()), ["api", "shop", "admin"], "nothing routes anything");
        assert_eq!(names(&servers(vec![Exact(b"api.example.com".to_vec())])), ["shop", "admin"]);
        assert_eq!(
            names(&servers(vec![Exact(b"eu.shop.example.com".to_vec())])),
            ["api", "admin"],
            "a host under the wildcard"
        );
        assert_eq!(names(&servers(vec![AnySubdomain(b".example.com".to_vec())])), ["admin"], "*.example.com");
        assert_eq!(names(&servers(vec![NameAndSubdomains(b"shop.example.com".to_vec())])), ["api", "admin"]);
        assert_eq!(names(&servers(vec![AnyTail(b"api.".to_vec())])), ["admin"], "api.* (and any wildcard may match)");
        assert!(names(&servers(vec![Any])).is_empty(), "a regex is taken to match anything");
        assert!(names(&Reach { any_server: true, ..Reach::default() }).is_empty());
        let pinned = Reach {
            named: ["admin".to_string()].into_iter().collect(),
            ..servers(vec![Exact(b"api.example.com".to_vec())])
        };
        assert_eq!(names(&pinned), ["shop"]);
        assert_eq!(
            names(&servers(vec![Exact(b"api.example.org".to_vec()), Exact(b"shop.example.com".to_vec())])),
            ["api", "shop", "admin"],
            "shop.example.com itself is not under *.shop.example.com"
        );
    }

    #[test]
    fn a_host_and_a_server_name_overlap_exactly_when_one_request_can_match_both() {
        let cases: [(&[u8], bool, ServerNamePattern, bool); 24] = [
            (b"api.example.com", false, Exact(b"api.example.com".to_vec()), true),
            (b"api.example.com", false, Exact(b"api.example.org".to_vec()), false),
            // A wildcard host `.shop.example.com` (from `*.shop.example.com`).
            (b".shop.example.com", true, Exact(b"eu.shop.example.com".to_vec()), true),
            (b".shop.example.com", true, Exact(b"shop.example.com".to_vec()), false),
            (b".shop.example.com", true, Exact(b".shop.example.com".to_vec()), false),
            (b"api.example.com", false, AnySubdomain(b".example.com".to_vec()), true),
            (b".example.com", false, AnySubdomain(b".example.com".to_vec()), false),
            (b"example.com", false, AnySubdomain(b".example.com".to_vec()), false),
            (b".a.example.com", true, AnySubdomain(b".example.com".to_vec()), true),
            (b".example.com", true, AnySubdomain(b".a.example.com".to_vec()), true),
            (b".example.org", true, AnySubdomain(b".example.com".to_vec()), false),
            (b"example.com", false, NameAndSubdomains(b"example.com".to_vec()), true),
            (b"api.example.com", false, NameAndSubdomains(b"example.com".to_vec()), true),
            (b"apiexample.com", false, NameAndSubdomains(b"example.com".to_vec()), false),
            (b"example.org", false, NameAndSubdomains(b"example.com".to_vec()), false),
            (b"xample.com", false, NameAndSubdomains(b"example.com".to_vec()), false),
            (b".shop.example.com", true, NameAndSubdomains(b"example.com".to_vec()), true),
            (b".com", true, NameAndSubdomains(b"example.com".to_vec()), true),
            (b".example.org", true, NameAndSubdomains(b"example.com".to_vec()), false),
            (b"www.example.com", false, AnyTail(b"www.".to_vec()), true),
            (b"api.example.com", false, AnyTail(b"www.".to_vec()), false),
            (b".example.com", true, AnyTail(b"www.".to_vec()), true),
            (b"api.example.com", false, Any, true),
            (b".example.com", true, Any, true),
        ];
        for (host, wildcard, name, want) in cases {
            assert_eq!(
                overlap(host, wildcard, &name),
                want,
                "{} (wildcard {wildcard}) vs {name:?}",
                String::from_utf8_lossy(host)
            );
        }
    }

    /// A file of `n` services, each with its own host and host-name backends.
    fn services(n: usize) -> CompiledConfig {
        let mut yaml = String::from("services:\n");
        for i in 0..n {
            yaml.push_str(&format!(
                "  - {{name: s{i}, hosts: [s{i}.example], old_host: a, old_backend: \"old{i}.example:80\", new_host: a, new_backend: \"10.0.0.1:80\"}}\n"
            ));
        }
        crate::load_str("m.yaml", &yaml).unwrap()
    }

    #[test]
    fn ten_warnings_are_written_out_and_the_rest_counted() {
        let nothing = Reach::default();
        assert_eq!(unreachable_warnings(&services(10), &nothing).len(), 10, "ten: each its own line, no count");
        let lines = unreachable_warnings(&services(12), &nothing);
        assert_eq!(lines.len(), 11);
        assert_eq!(lines[10], "2 more services are routed by no location");
        let reach = Reach { location_without_resolver: Some("/".into()), ..Reach::default() };
        assert_eq!(resolver_warnings(&services(10), &reach).len(), 10, "ten host-name backends, no count");
        let lines = resolver_warnings(&services(12), &reach);
        assert_eq!(lines.len(), 11);
        assert_eq!(lines[10], "2 more backends are host names without a resolver");
    }

    #[test]
    fn warnings_name_each_service_then_count_the_rest() {
        let config = crate::load_str("m.yaml", YAML).unwrap();
        let lines = unreachable_warnings(&config, &servers(vec![Exact(b"api.example.com".to_vec())]));
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("service \"shop\" is routed by no location: "), "{}", lines[0]);
    }

    #[test]
    fn host_name_backends_need_a_resolver_ip_literals_and_upstream_blocks_do_not() {
        let upstreams: HashSet<String> = ["pool".to_string(), "static.example:8080".to_string()].into_iter().collect();
        for (address, needs) in [
            ("10.0.0.1:8080", false),
            ("[2001:db8::1]:443", false),
            ("pool", false),
            ("POOL", false),
            ("pool:8080", true),
            ("static.example:8080", false),
            ("api.new.example:443", true),
            ("svc.cluster.local", true),
        ] {
            assert_eq!(needs_resolver(address, &upstreams), needs, "{address}");
        }
        let config = crate::load_str("m.yaml", "services:\n  - {name: api, old_host: a, old_backend: \"10.0.0.1:80\", new_host: n, new_backend: \"https://api.new.example:443\"}\n").unwrap();
        assert!(resolver_warnings(&config, &Reach::default()).is_empty(), "every location has a resolver");
        let reach = Reach { location_without_resolver: Some("/".into()), ..Reach::default() };
        let lines = resolver_warnings(&config, &reach);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("service \"api\": new_backend api.new.example:443 is a host name"),
            "{}",
            lines[0]
        );
    }
}
