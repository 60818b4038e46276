//! What ingress-nginx builds of the Ingresses: its order, upstreams, servers
//! and locations, and where each canary merges.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::model::{Ingress, PathType, ServiceRef};

pub(super) struct Upstream {
    pub(super) service: ServiceRef,
    /// A canary's upstream: no location of its own (`controller.go:1127`).
    pub(super) no_server: bool,
    /// The canary Ingress whose traffic shaping policy this upstream carries.
    pub(super) policy_of: Option<usize>,
    /// The Ingress that made it (the last defaultBackend to name it, else the
    /// first path).
    pub(super) made_by: usize,
    pub(super) alternatives: Vec<String>,
}

pub(super) struct Location {
    pub(super) path: String,
    pub(super) path_type: PathType,
    /// `None`: the controller's default backend (404).
    pub(super) upstream: Option<String>,
    pub(super) ingress: usize,
    /// The root location a server starts with, which a main's `/` Prefix path
    /// takes over (`IsDefBackend`, controller.go:1371-1378, :836-848).
    pub(super) default: bool,
}

/// Why a canary Ingress's path got no traffic.
pub(super) enum Dropped {
    NoServer { host: String, path: String },
    SameAsMain { host: String, path: String },
    NoLocation { host: String, path: String, path_type: PathType },
    CatchAll,
}

pub(super) struct Built {
    pub(super) upstreams: HashMap<String, Upstream>,
    /// Host ("" for `_`) → locations, in creation order.
    pub(super) servers: BTreeMap<String, Vec<Location>>,
    /// Canary Ingress → the reasons paths of it joined nothing.
    pub(super) dropped: BTreeMap<usize, Vec<Dropped>>,
    /// Canary Ingresses whose backend a path that joined nothing deleted.
    pub(super) deleted: BTreeSet<usize>,
    /// (host, path) → its locations' indices (a path has one per pathType).
    pub(super) by_path: HashMap<(String, String), Vec<usize>>,
    /// (host, upstream) → the first location that sends there.
    pub(super) first_to: HashMap<(String, String), usize>,
    /// Paths of main Ingresses whose Service's upstream a canary made first:
    /// (main, host, path, canary). ingress-nginx gives them no location.
    pub(super) shadowed: Vec<(usize, String, String, usize)>,
}

/// ingress-nginx's order (`store/store.go:1104-1114`).
pub(super) fn ordered(all: &[Ingress]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&all[a], &all[b]);
        a.created.cmp(&b.created).then_with(|| b.id().cmp(&a.id()))
    });
    order
}

pub(super) fn build(all: &[Ingress], order: &[usize]) -> Built {
    let mut upstreams: HashMap<String, Upstream> = HashMap::new();
    // controller.go createUpstreams: the first Ingress to name a Service and
    // port in a path makes its upstream, but every defaultBackend makes its
    // upstream anew (controller.go:1037): a later Ingress's defaultBackend
    // replaces the upstream, and with it a canary's traffic policy (a main's
    // leaves none: that canary gets no traffic).
    for &k in order {
        let i = &all[k];
        let upstream = |s: &ServiceRef| Upstream {
            service: s.clone(),
            no_server: i.canary.is_some(),
            policy_of: i.canary.is_some().then_some(k),
            made_by: k,
            alternatives: Vec::new(),
        };
        if let Some(s) = &i.default_backend {
            upstreams.insert(s.upstream(), upstream(s));
        }
        for s in i.path_backends() {
            upstreams.entry(s.upstream()).or_insert_with(|| upstream(s));
        }
    }
    // createServers (controller.go:1325-1381): the `_` server, and a server per host
    // of a main Ingress, made by the first one to name the host. Its root location
    // sends to that Ingress's defaultBackend, else to the controller's default
    // backend; an Ingress with a defaultBackend and no rules takes `_`'s root.
    let mut servers: BTreeMap<String, Vec<Location>> = BTreeMap::new();
    let root = |upstream: Option<String>, ingress: usize| Location {
        path: "/".into(),
        path_type: PathType::Prefix,
        upstream,
        ingress,
        default: true,
    };
    servers.insert(String::new(), vec![root(None, usize::MAX)]);
    for &k in order.iter().filter(|&&k| all[k].canary.is_none()) {
        let i = &all[k];
        let own_default = i.default_backend.as_ref().map(ServiceRef::upstream);
        if let Some(name) = &own_default {
            let catch_all = &mut servers.get_mut("").expect("made above")[0];
            if i.rules.is_empty() && catch_all.default && catch_all.upstream.is_none() {
                *catch_all = Location { default: false, ..root(Some(name.clone()), k) };
            }
        }
        for r in &i.rules {
            servers.entry(r.host.clone()).or_insert_with(|| vec![root(own_default.clone(), k)]);
        }
    }
    // getBackendServers (controller.go:745-870): every Ingress's paths become
    // locations. The first location of a path decides: same type, it stays (or a
    // default root is taken over); another type, a second one is added.
    let mut first_of_path: HashMap<(String, String), usize> = HashMap::new();
    for (host, locations) in &servers {
        first_of_path.insert((host.clone(), "/".to_owned()), locations.len() - 1);
    }
    let mut shadowed = Vec::new();
    for &k in order {
        for r in all[k].rules.iter().filter(|r| r.http) {
            let host = if servers.contains_key(&r.host) { r.host.clone() } else { String::new() };
            let locations = servers.get_mut(&host).expect("made above");
            for p in &r.paths {
                let Some(service) = &p.backend else { continue };
                let name = service.upstream();
                if upstreams[&name].no_server {
                    if all[k].canary.is_none() {
                        let canary = upstreams[&name].policy_of.unwrap_or(k);
                        shadowed.push((k, r.host.clone(), p.path.clone(), canary));
                    }
                    continue;
                }
                match first_of_path.get(&(host.clone(), p.path.clone())) {
                    Some(&at) if locations[at].path_type == p.path_type => {
                        let loc = &mut locations[at];
                        if loc.default {
                            *loc = Location {
                                path: p.path.clone(),
                                path_type: p.path_type,
                                upstream: Some(name),
                                ingress: k,
                                default: false,
                            };
                        }
                    }
                    first => {
                        if first.is_none() {
                            first_of_path.insert((host.clone(), p.path.clone()), locations.len());
                        }
                        locations.push(Location {
                            path: p.path.clone(),
                            path_type: p.path_type,
                            upstream: Some(name),
                            ingress: k,
                            default: false,
                        });
                    }
                }
            }
        }
    }
    let mut by_path: HashMap<(String, String), Vec<usize>> = HashMap::new();
    let mut first_to: HashMap<(String, String), usize> = HashMap::new();
    for (host, locations) in &servers {
        for (at, l) in locations.iter().enumerate() {
            by_path.entry((host.clone(), l.path.clone())).or_default().push(at);
            if let Some(u) = &l.upstream {
                first_to.entry((host.clone(), u.clone())).or_insert(at);
            }
        }
    }
    let mut built =
        Built { upstreams, servers, by_path, first_to, dropped: BTreeMap::new(), deleted: BTreeSet::new(), shadowed };
    // controller.go:923: canaries merge only when some main Ingress exists.
    if order.iter().any(|&k| all[k].canary.is_none()) {
        for &k in order.iter().filter(|&&k| all[k].canary.is_some()) {
            merge_alternatives(all, k, &mut built);
        }
    }
    built
}

/// `mergeAlternativeBackends` (controller.go:1610-1715) for canary Ingress `k`.
fn merge_alternatives(all: &[Ingress], k: usize, b: &mut Built) {
    let i = &all[k];
    // (host, (path, pathType) or None for defaultBackend, the canary's upstream)
    type Try = (String, Option<(String, PathType)>, String);
    let mut tries: Vec<Try> = Vec::new();
    if let Some(s) = &i.default_backend {
        tries.push((String::new(), None, s.upstream()));
    }
    for r in &i.rules {
        for p in r.paths.iter().filter(|_| r.http) {
            if let Some(s) = &p.backend {
                tries.push((r.host.clone(), Some((p.path.clone(), p.path_type)), s.upstream()));
            }
        }
    }
    for (host, path, alt) in tries {
        if !b.upstreams.contains_key(&alt) {
            continue; // "alternative backend has already been removed"
        }
        let Some(locations) = b.servers.get(&host) else {
            let path = path.map(|p| p.0).unwrap_or_default();
            b.dropped.entry(k).or_default().push(Dropped::NoServer { host, path });
            continue;
        };
        // controller.go:1686-1708, in location order: a location whose upstream is
        // gone is passed over, the first that sends to the canary's own upstream
        // ends the search, and each one of the path and pathType before it joins.
        let same_at = b.first_to.get(&(host.clone(), alt.clone())).copied();
        let candidates: Vec<usize> = match &path {
            None => (0..locations.len()).collect(),
            Some((p, t)) => b
                .by_path
                .get(&(host.clone(), p.clone()))
                .map(|v| v.iter().copied().filter(|&at| locations[at].path_type == *t).collect())
                .unwrap_or_default(),
        };
        let same = same_at.is_some();
        let mut joins = Vec::new();
        for at in candidates.into_iter().filter(|&at| same_at.is_none_or(|s| at < s)) {
            let Some(primary) = locations[at].upstream.as_ref().filter(|u| b.upstreams.contains_key(*u)) else {
                continue;
            };
            if !b.upstreams[primary].no_server {
                joins.push(primary.clone());
            }
        }
        let merged = !joins.is_empty();
        for primary in joins {
            let alternatives = &mut b.upstreams.get_mut(&primary).expect("a location's upstream").alternatives;
            if !alternatives.contains(&alt) {
                alternatives.push(alt.clone());
            }
        }
        let (p, t) = path.clone().unwrap_or((String::new(), PathType::Prefix));
        if same {
            b.dropped.entry(k).or_default().push(Dropped::SameAsMain { host, path: p });
        } else if !merged {
            b.upstreams.remove(&alt);
            b.deleted.insert(k);
            b.dropped.entry(k).or_default().push(match path {
                None => Dropped::CatchAll,
                Some(_) => Dropped::NoLocation { host, path: p, path_type: t },
            });
        }
    }
}
