//! `import-ingress` against ingress-nginx itself: each case is an Ingress set, the
//! requests ingress-nginx (controller v1.15.1) would route, and where it sends
//! them (main = old, canary = new), with the source line that decides it. The
//! generated YAML must pass `check` and `explain` must send every request where
//! ingress-nginx did, or the case must say, in the report, which requests differ.
//!
//! Sources (ingress-nginx repository):
//! * B = rootfs/etc/nginx/lua/balancer.lua (`route_to_alternative_balancer`)
//! * C = internal/ingress/controller/controller.go
//! * M = internal/ingress/annotations/canary/main.go
//! * P = internal/ingress/annotations/parser/main.go, V = parser/validators.go
//! * S = internal/ingress/controller/store/store.go, U = controller/util.go

use std::path::{Path, PathBuf};
use std::process::Command;

/// `NGINX_MIGRATION_BIN` runs the cases against another build (an older import).
fn bin() -> Command {
    Command::new(std::env::var_os("NGINX_MIGRATION_BIN").unwrap_or(env!("CARGO_BIN_EXE_nginx-migration").into()))
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("nginx-migration-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A path of an Ingress: host, path, pathType, Service, port.
#[derive(Clone, Copy)]
struct P(&'static str, &'static str, &'static str, &'static str, u16);

const H: &str = "shop.example.com";
const MAIN: P = P(H, "/", "Prefix", "web", 80);
const NEW: P = P(H, "/", "Prefix", "web-v2", 80);

fn object(name: &str, created: &str, annotations: &[(&str, &str)], paths: &[P]) -> String {
    let mut y =
        format!("---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: shop\n");
    if !created.is_empty() {
        y.push_str(&format!("  creationTimestamp: \"{created}\"\n"));
    }
    if !annotations.is_empty() {
        y.push_str("  annotations:\n");
        for (k, v) in annotations {
            y.push_str(&format!("    nginx.ingress.kubernetes.io/{k}: {}\n", serde_json::to_string(v).unwrap()));
        }
    }
    y.push_str("spec:\n  rules:\n");
    let mut hosts: Vec<&str> = paths.iter().map(|p| p.0).collect();
    hosts.dedup();
    for host in hosts {
        if host.is_empty() {
            y.push_str("  - http:\n      paths:\n");
        } else {
            y.push_str(&format!("  - host: \"{host}\"\n    http:\n      paths:\n"));
        }
        for p in paths.iter().filter(|p| p.0 == host) {
            y.push_str(&format!(
                "      - path: \"{}\"\n        pathType: {}\n        backend:\n          service:\n            name: {}\n            port:\n              number: {}\n",
                p.1, p.2, p.3, p.4
            ));
        }
    }
    y
}

/// The object with `spec.defaultBackend` naming `service`, port 80.
fn with_default_backend(object: String, service: &str) -> String {
    let backend =
        format!("spec:\n  defaultBackend:\n    service:\n      name: {service}\n      port:\n        number: 80\n");
    let object = object.replace("spec:\n  rules:\n", &format!("{backend}  rules:\n"));
    object.strip_suffix("  rules:\n").map_or(object.clone(), str::to_owned)
}

fn main_ingress() -> String {
    object("web", "", &[], &[MAIN])
}

fn canary(name: &str, annotations: &[(&str, &str)], paths: &[P]) -> String {
    let mut a = vec![("canary", "true")];
    a.extend_from_slice(annotations);
    object(name, "", &a, paths)
}

/// The usual pair: main `web` and canary `web-canary` on shop.example.com `/`.
fn pair(annotations: &[(&str, &str)]) -> String {
    main_ingress() + &canary("web-canary", annotations, &[NEW])
}

/// A request: explain's arguments after the file, and where ingress-nginx sends it
/// (`new`, `old`, or `-` for a request the output sends to no service, which
/// is main: nginx.conf's own proxy_pass).
type Request = (&'static [&'static str], &'static str);

struct Case {
    name: &'static str,
    /// The ingress-nginx source that decides it.
    source: &'static str,
    input: String,
    /// import-ingress's exit status.
    exit: i32,
    /// How many services the YAML holds.
    services: usize,
    requests: Vec<Request>,
    /// Text the YAML must hold.
    yaml: Vec<&'static str>,
    /// Text the report (stderr) must hold.
    report: Vec<&'static str>,
    /// The report says which requests route differently from ingress-nginx.
    reported: bool,
}

fn case(name: &'static str, source: &'static str, input: String) -> Case {
    Case {
        name,
        source,
        input,
        exit: 0,
        services: 1,
        requests: Vec::new(),
        yaml: Vec::new(),
        report: Vec::new(),
        reported: false,
    }
}

impl Case {
    fn requests(mut self, r: &[Request]) -> Self {
        self.requests.extend_from_slice(r);
        self
    }
    fn services(mut self, n: usize) -> Self {
        self.services = n;
        self
    }
    fn yaml(mut self, text: &'static str) -> Self {
        self.yaml.push(text);
        self
    }
    fn report(mut self, text: &'static str) -> Self {
        self.report.push(text);
        self
    }
    fn reported(mut self, text: &'static str) -> Self {
        self.reported = true;
        self.report(text)
    }
    fn exit(mut self, code: i32) -> Self {
        self.exit = code;
        self
    }
}

fn target(yaml: &Path, host: &str, args: &[&str]) -> Result<String, String> {
    let mut cmd = bin();
    cmd.arg("explain").arg(yaml).args(["--format", "json"]);
    if !args.contains(&"--host") {
        cmd.args(["--host", host]);
    }
    let out = cmd.args(args).output().unwrap();
    if !out.status.success() {
        return Err(format!("explain {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Ok(v["target"].as_str().unwrap_or("-").to_owned())
}

/// Runs one case; the problems found, none when it holds.
fn run(c: &Case, n: usize) -> Vec<String> {
    let mut problems = Vec::new();
    let input = dir().join(format!("{n:02}-in.yaml"));
    std::fs::write(&input, &c.input).unwrap();
    let out = bin().arg("import-ingress").arg(&input).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    if out.status.code() != Some(c.exit) {
        problems.push(format!("exit {:?}, expected {}", out.status.code(), c.exit));
    }
    for text in &c.report {
        if !stderr.contains(text) {
            problems.push(format!("the report lacks {text:?}"));
        }
    }
    if c.exit != 0 {
        if !stdout.is_empty() {
            problems.push("a refused import printed YAML".into());
        }
        return with_context(problems, &stdout, &stderr);
    }
    let yaml = dir().join(format!("{n:02}-out.yaml"));
    std::fs::write(&yaml, &stdout).unwrap();
    let check = bin().arg("check").arg(&yaml).output().unwrap();
    if !check.status.success() {
        problems.push(format!("check fails: {}", String::from_utf8_lossy(&check.stderr)));
        return with_context(problems, &stdout, &stderr);
    }
    let doc: serde_yaml::Value = serde_yaml::from_str(&stdout).unwrap();
    let services = doc["services"].as_sequence().map_or(0, Vec::len);
    if services != c.services {
        problems.push(format!("{services} services, expected {}", c.services));
    }
    for text in &c.yaml {
        if !stdout.contains(text) {
            problems.push(format!("the YAML lacks {text:?}"));
        }
    }
    let host = doc["services"][0]["old_host"].as_str().unwrap_or(H).to_owned();
    for (args, expected) in &c.requests {
        match target(&yaml, &host, args) {
            Ok(t) if t == *expected => {}
            Ok(t) => problems.push(format!("{args:?} went {t}, ingress-nginx sends it {expected}")),
            Err(e) => problems.push(e),
        }
    }
    with_context(problems, &stdout, &stderr)
}

fn with_context(mut problems: Vec<String>, stdout: &str, stderr: &str) -> Vec<String> {
    if !problems.is_empty() {
        problems.push(format!("--- stdout\n{stdout}--- stderr\n{stderr}"));
    }
    problems
}

const ALWAYS: &[&str] = &["--header", "X-Canary: always"];
const NEVER: &[&str] = &["--header", "X-Canary: never"];
const NONE: &[&str] = &[];
const COOKIE_ALWAYS: &[&str] = &["--cookie", "canary=always"];
const COOKIE_NEVER: &[&str] = &["--cookie", "canary=never"];

fn cases() -> Vec<Case> {
    let hdr = &[("canary-by-header", "X-Canary")][..];
    vec![
        // --- canary-by-header ---------------------------------------------------
        case("header always goes to the canary", "B:251", pair(hdr)).requests(&[(ALWAYS, "new"), (NONE, "old")]),
        case(
            "header never goes to main, cookie or not",
            "B:253-254",
            pair(&[("canary-by-header", "X-Canary"), ("canary-by-cookie", "canary"), ("canary-weight", "100")]),
        )
        .requests(&[(&["--header", "X-Canary: never", "--cookie", "canary=always"], "old")]),
        case(
            "another header value falls through to the weight",
            "B:250-256",
            pair(&[("canary-by-header", "X-Canary"), ("canary-weight", "100")]),
        )
        .requests(&[(&["--header", "X-Canary: maybe"], "new"), (NEVER, "old")]),
        case("no header goes by the weight", "B:235", pair(hdr)).requests(&[(NONE, "old")]),
        case("X_Canary is the request's X-Canary", "B:232-234", pair(&[("canary-by-header", "X_Canary")]))
            .requests(&[(ALWAYS, "new"), (NEVER, "old")])
            .report("reads \"X_Canary\" as the request header X-Canary"),
        case(
            "header names are case-insensitive",
            "B:234 (ngx.var lowercases)",
            pair(&[("canary-by-header", "x-canary")]),
        )
        .requests(&[(&["--header", "X-CANARY: always"], "new")]),
        case("always is case-sensitive", "B:251", pair(hdr)).requests(&[(&["--header", "X-Canary: Always"], "old")]),
        case(
            "header value matches",
            "B:238",
            pair(&[("canary-by-header", "X-Canary"), ("canary-by-header-value", "on")]),
        )
        .requests(&[(&["--header", "X-Canary: on"], "new"), (ALWAYS, "old")]),
        case(
            "header value: other values fall through to the cookie",
            "B:237-241, B:259",
            pair(&[("canary-by-header", "X-Canary"), ("canary-by-header-value", "on"), ("canary-by-cookie", "canary")]),
        )
        .requests(&[(&["--header", "X-Canary: off", "--cookie", "canary=always"], "new")]),
        case(
            "header value wins over a pattern",
            "B:237-242",
            pair(&[
                ("canary-by-header", "X-Canary"),
                ("canary-by-header-value", "on"),
                ("canary-by-header-pattern", "^o"),
            ]),
        )
        .requests(&[(&["--header", "X-Canary: off"], "old"), (&["--header", "X-Canary: on"], "new")])
        .report("ignored when canary-by-header-value is set"),
        case(
            "header value is trimmed",
            "P:231",
            pair(&[("canary-by-header", "X-Canary"), ("canary-by-header-value", " on ")]),
        )
        .requests(&[(&["--header", "X-Canary: on"], "new")]),
        case(
            "pattern matches",
            "B:243-244",
            pair(&[("canary-by-header", "X-Canary"), ("canary-by-header-pattern", "^(on|yes)$")]),
        )
        .requests(&[(&["--header", "X-Canary: yes"], "new"), (&["--header", "X-Canary: no"], "old")]),
        case(
            "pattern is searched, not anchored",
            "B:243 (ngx.re.match, no anchor)",
            pair(&[("canary-by-header", "X-Canary"), ("canary-by-header-pattern", "beta")]),
        )
        .requests(&[(&["--header", "X-Canary: xbetax"], "new")]),
        case(
            "no pattern match falls through to the cookie",
            "B:243-250, B:259",
            pair(&[
                ("canary-by-header", "X-Canary"),
                ("canary-by-header-pattern", "^on$"),
                ("canary-by-cookie", "canary"),
            ]),
        )
        .requests(&[(&["--header", "X-Canary: off", "--cookie", "canary=always"], "new")]),
        case(
            "a broken pattern sends the header's requests to main",
            "B:246-249 (e2e canary.go's pattern)",
            pair(&[
                ("canary-by-header", "X-Canary"),
                ("canary-by-header-pattern", "[][**da?$&*"),
                ("canary-by-cookie", "canary"),
            ]),
        )
        .requests(&[(&["--header", "X-Canary: always", "--cookie", "canary=always"], "old")])
        .report("PCRE refuses the pattern"),
        case(
            "a broken pattern leaves requests without the header to cookie and weight",
            "B:235, B:259",
            pair(&[
                ("canary-by-header", "X-Canary"),
                ("canary-by-header-pattern", "[][**da?$&*"),
                ("canary-by-cookie", "canary"),
                ("canary-weight", "100"),
            ]),
        )
        .requests(&[(COOKIE_ALWAYS, "new"), (COOKIE_NEVER, "old"), (NONE, "new")]),
        case(
            "a look-ahead the module cannot express is reported",
            "B:243 (PCRE)",
            pair(&[
                ("canary-by-header", "X-Canary"),
                ("canary-by-header-pattern", "^Do(?=C)"),
                ("canary-by-cookie", "canary"),
            ]),
        )
        .requests(&[(COOKIE_ALWAYS, "new"), (&["--header", "X-Canary: Dox"], "old")])
        .reported("a request whose X-Canary matches it goes to the canary in ingress-nginx"),
        case(
            "header value without a header has no effect",
            "B:235",
            pair(&[("canary-by-header-value", "on"), ("canary-by-cookie", "canary")]),
        )
        .requests(&[(&["--header", "X-Canary: on"], "old"), (COOKIE_ALWAYS, "new")])
        .report("no effect without canary-by-header"),
        case(
            "a header name nginx drops is never read",
            "B:234 (ignore_invalid_headers)",
            pair(&[("canary-by-header", "x.canary"), ("canary-by-cookie", "canary")]),
        )
        .requests(&[(COOKIE_ALWAYS, "new"), (NONE, "old")])
        .report("never reads \"x.canary\""),
        case("a repeated header is reported", "B:234 (nginx 1.23+ joins repeated headers)", pair(hdr))
            .reported("joins the values"),
        case(
            "an empty header annotation is no header",
            "P:121",
            pair(&[("canary-by-header", ""), ("canary-by-cookie", "canary")]),
        )
        .requests(&[(ALWAYS, "old"), (COOKIE_ALWAYS, "new")]),
        // --- canary-by-cookie ---------------------------------------------------
        case("cookie always goes to the canary", "B:261", pair(&[("canary-by-cookie", "canary")]))
            .requests(&[(COOKIE_ALWAYS, "new")]),
        case(
            "cookie never goes to main whatever the weight",
            "B:263",
            pair(&[("canary-by-cookie", "canary"), ("canary-weight", "100")]),
        )
        .requests(&[(COOKIE_NEVER, "old"), (NONE, "new")]),
        case(
            "another cookie value goes by the weight",
            "B:259-266, B:272",
            pair(&[("canary-by-cookie", "canary"), ("canary-weight", "100")]),
        )
        .requests(&[(&["--cookie", "canary=yes"], "new")]),
        case(
            "the header is asked before the cookie",
            "B:253 before B:259",
            pair(&[("canary-by-header", "X-Canary"), ("canary-by-cookie", "canary")]),
        )
        .requests(&[
            (&["--header", "X-Canary: never", "--cookie", "canary=always"], "old"),
            (&["--header", "X-Canary: always", "--cookie", "canary=never"], "new"),
        ]),
        case(
            "the first of repeated cookies counts",
            "B:259 ($cookie_ reads the first)",
            pair(&[("canary-by-cookie", "canary")]),
        )
        .requests(&[(&["--cookie", "canary=never", "--cookie", "canary=always"], "old")]),
        // --- canary-weight ----------------------------------------------------------
        case("weight 0 sends nothing", "B:272", pair(&[("canary-weight", "0")]))
            .requests(&[(NONE, "old")])
            .yaml("percentage: 0"),
        case("weight 100 sends everything", "B:272", pair(&[("canary-weight", "100")]))
            .requests(&[(NONE, "new")])
            .yaml("percentage: 100"),
        case("weight 30", "B:272", pair(&[("canary-weight", "30")])).yaml("percentage: 30"),
        case(
            "weight 1 of 1000 is 0.1 %",
            "B:269-272",
            pair(&[("canary-weight", "1"), ("canary-weight-total", "1000")]),
        )
        .yaml("percentage: 0.1"),
        case("a total below 100 counts as 100", "B:269", pair(&[("canary-weight", "1"), ("canary-weight-total", "3")]))
            .yaml("percentage: 1"),
        case(
            "a weight finer than 0.01 % is rounded and reported",
            "B:272",
            pair(&[("canary-weight", "1"), ("canary-weight-total", "30000")]),
        )
        .yaml("percentage: 0")
        .reported("rounded to 0.01 %"),
        case(
            "weight abc is 0 and the header rule stays",
            "M:134-138, P:133",
            pair(&[("canary-weight", "abc"), ("canary-by-header", "X-Canary")]),
        )
        .requests(&[(ALWAYS, "new"), (NONE, "old")])
        .yaml("percentage: 0")
        .report("ingress-nginx uses 0"),
        case("a negative weight never matches", "B:272", pair(&[("canary-weight", "-10")]))
            .requests(&[(NONE, "old")])
            .report("a negative weight never matches"),
        case("a weight over the total always matches", "B:272", pair(&[("canary-weight", "200")]))
            .requests(&[(NONE, "new")]),
        case("total abc is 100", "M:142-146", pair(&[("canary-weight", "50"), ("canary-weight-total", "abc")]))
            .yaml("percentage: 50"),
        case("a weight with a space is not an integer", "P:133 (strconv.Atoi)", pair(&[("canary-weight", " 5")]))
            .yaml("percentage: 0"),
        // --- canary ---------------------------------------------------------------------
        case(
            "canary True is a canary",
            "P:108 (strconv.ParseBool)",
            main_ingress() + &object("web-canary", "", &[("canary", "True"), ("canary-weight", "100")], &[NEW]),
        )
        .requests(&[(NONE, "new")]),
        case(
            "canary 1 is a canary",
            "P:108",
            main_ingress() + &object("web-canary", "", &[("canary", "1"), ("canary-weight", "100")], &[NEW]),
        )
        .requests(&[(NONE, "new")]),
        case(
            "canary t is a canary",
            "P:108",
            main_ingress() + &object("web-canary", "", &[("canary", "t"), ("canary-weight", "100")], &[NEW]),
        )
        .requests(&[(NONE, "new")]),
        case(
            "canary yes with canary annotations is a main Ingress",
            "M:124-129, M:181-183",
            object("web", "2024-01-01T00:00:00Z", &[], &[MAIN])
                + &object("web-canary", "2024-01-02T00:00:00Z", &[("canary", "yes"), ("canary-weight", "100")], &[NEW]),
        )
        .services(0)
        .requests(&[(NONE, "-")])
        .report("configured but not enabled"),
        case(
            "canary false is a plain Ingress",
            "M:124",
            main_ingress()
                + &object(
                    "web-canary",
                    "",
                    &[("canary", "false")],
                    &[P("other.example.com", "/", "Prefix", "web-v2", 80)],
                ),
        )
        .services(0),
        case("a canary with no rules sends nothing", "B:272 (weight 0)", pair(&[]))
            .requests(&[(ALWAYS, "old"), (NONE, "old")])
            .yaml("percentage: 0"),
        // --- what a canary joins ---------------------------------------------------------
        case(
            "pathType must be equal",
            "C:1701, C:1711",
            main_ingress() + &canary("web-canary", hdr, &[P(H, "/", "Exact", "web-v2", 80)]),
        )
        .services(0)
        .requests(&[(ALWAYS, "-")])
        .report("pathType Exact"),
        case(
            "an empty path is /",
            "S:940-944",
            main_ingress() + &canary("web-canary", hdr, &[P(H, "", "Prefix", "web-v2", 80)]),
        )
        .requests(&[(ALWAYS, "new")]),
        case(
            "ImplementationSpecific is Prefix",
            "S:947, internal/k8s/main.go:176-182",
            object("web", "", &[], &[P(H, "/", "ImplementationSpecific", "web", 80)])
                + &canary("web-canary", &[("canary-weight", "100")], &[NEW]),
        )
        .requests(&[(NONE, "new")]),
        case(
            "a main's defaultBackend is its hosts' root location",
            "C:1335-1341, C:1371-1378, C:1701",
            with_default_backend(object("web", "", &[], &[P(H, "/api", "Prefix", "api", 80)]), "web")
                + &canary("web-canary", hdr, &[NEW]),
        )
        .requests(&[(&["--host", "shop-web.by-location.invalid", "--header", "X-Canary: always"], "new")])
        .report("location / { migration on; migration_service shop-web;"),
        case(
            "a defaultBackend elsewhere keeps the host from being whole",
            "C:1371-1378",
            with_default_backend(object("web", "", &[], &[P(H, "/app", "Prefix", "web", 80)]), "other")
                + &canary("web-canary", hdr, &[P(H, "/app", "Prefix", "web-v2", 80)]),
        )
        .yaml("shop-web.by-location.invalid")
        .report("location /app/ {")
        .report("location = /app {"),
        case(
            "a catch-all canary joins a catch-all main",
            "C:1343-1348, C:1614-1640",
            with_default_backend(object("web", "", &[], &[]), "web")
                + &with_default_backend(
                    object("web-canary", "", &[("canary", "true"), ("canary-weight", "10")], &[]),
                    "web-v2",
                ),
        )
        .services(0)
        .report("catch-all server _"),
        case(
            "a later canary's defaultBackend takes over a main's upstream: no location there",
            "C:1037, C:807",
            object("main-a", "2024-01-01T00:00:00Z", &[], &[P("a.example.com", "/", "Prefix", "web", 80)])
                + &with_default_backend(object("zz-canary", "2024-02-01T00:00:00Z", &[("canary", "true")], &[]), "web")
                + &object(
                    "aa-canary",
                    "2024-02-01T00:00:00Z",
                    &[("canary", "true")],
                    &[P("a.example.com", "/", "Prefix", "web-v2", 80)],
                ),
        )
        .services(0)
        .reported("made again by its defaultBackend"),
        case(
            "a later main's defaultBackend on the canary's Service resets its policy: the canary gets nothing",
            "C:1037, C:1578-1580, balancer.lua:258-276",
            object("web", "2024-01-01T00:00:00Z", &[], &[MAIN])
                + &object(
                    "web-canary",
                    "2024-01-02T00:00:00Z",
                    &[("canary", "true"), ("canary-weight", "50"), ("canary-by-header", "X-Canary")],
                    &[NEW],
                )
                + &with_default_backend(object("web-preview", "2024-01-03T00:00:00Z", &[], &[]), "web-v2"),
        )
        .services(0)
        .reported("made again by the defaultBackend of shop/web-preview"),
        case(
            "a canary host no main serves gets nothing",
            "C:1678-1685",
            main_ingress() + &canary("web-canary", hdr, &[P("other.example.com", "/", "Prefix", "web-v2", 80)]),
        )
        .services(0)
        .report("no main Ingress serves host"),
        case(
            "one path that joins nothing deletes the whole canary",
            "C:1711",
            main_ingress() + &canary("web-canary", hdr, &[NEW, P(H, "/nowhere", "Prefix", "web-v2", 80)]),
        )
        .services(0)
        .requests(&[(ALWAYS, "-")])
        .report("none of its paths get traffic"),
        case(
            "a canary on /a also canaries /b of the same Service",
            "C:1601, B:205",
            object("web", "", &[], &[P(H, "/a", "Prefix", "web", 80), P(H, "/b", "Prefix", "web", 80)])
                + &canary("web-canary", hdr, &[P(H, "/a", "Prefix", "web-v2", 80)]),
        )
        .requests(&[(&["--host", "shop-web.by-location.invalid", "--header", "X-Canary: always"], "new")])
        .report("serves paths /a, /b of this host"),
        case(
            "a whole host is one whose root is the canaried upstream too",
            "C:1601, C:836-848",
            object("web", "", &[], &[MAIN, P(H, "/b", "Prefix", "web", 80)]) + &canary("web-canary", hdr, &[NEW]),
        )
        .requests(&[(ALWAYS, "new")])
        .yaml("- shop.example.com"),
        case(
            "affinity comes from any main Ingress on the upstream",
            "C:875-897, B:195-197",
            object("web", "", &[], &[MAIN])
                + &object("web-sticky", "", &[("affinity", "cookie")], &[P(H, "/cart", "Prefix", "web", 80)])
                + &canary("web-canary", &[("canary-by-cookie", "canary")], &[NEW]),
        )
        .reported("holds a valid INGRESSCOOKIE cookie of shop/web-sticky"),
        case(
            "a pattern the two dialects read differently is not written",
            "B:243 (PCRE reads [a&&b] as a class of a, & and b)",
            pair(&[("canary-by-header", "X-Canary"), ("canary-by-header-pattern", "^[a&&b]$")]),
        )
        .requests(&[(&["--header", "X-Canary: &"], "old")])
        .reported("is PCRE the module's regular expressions cannot express"),
        case(
            "different Services per path need locations",
            "C:1701",
            object("web", "", &[], &[P(H, "/a", "Prefix", "web", 80), P(H, "/b", "Prefix", "api", 80)])
                + &canary("web-canary", hdr, &[P(H, "/a", "Prefix", "web-v2", 80)]),
        )
        .requests(&[(&["--host", "shop-web.by-location.invalid", "--header", "X-Canary: always"], "new")])
        .yaml("shop-web.by-location.invalid")
        .report("location /a/ { migration on; migration_service shop-web;")
        .report("location = /a { migration on; migration_service shop-web;"),
        case(
            "a host with a use-regex main gets no suggested blocks: its locations are regular expressions",
            "template.go:506-537",
            object(
                "web",
                "",
                &[("use-regex", "true")],
                &[P(H, "/a", "Prefix", "web", 80), P(H, "/b", "Prefix", "api", 80)],
            ) + &canary("web-canary", hdr, &[P(H, "/a", "Prefix", "web-v2", 80)]),
        )
        .yaml("shop-web.by-location.invalid")
        .report("write those locations by hand, each with `migration on; migration_service shop-web;`"),
        case(
            "a suggested location is quoted where nginx.conf would read the path otherwise",
            "location.go:33-100",
            object(
                "web",
                "",
                &[],
                &[P(H, "/a;b{c}", "ImplementationSpecific", "web", 80), P(H, "/d", "Prefix", "api", 80)],
            ) + &canary("web-canary", hdr, &[P(H, "/a;b{c}", "ImplementationSpecific", "web-v2", 80)]),
        )
        .yaml("shop-web.by-location.invalid")
        .report("location \"/a;b{c}/\" { migration on;")
        .report("location = \"/a;b{c}\" { migration on;"),
        case(
            "two canaries on two paths of one host are two services",
            "C:1601",
            object("web", "", &[], &[P(H, "/a", "Prefix", "web", 80), P(H, "/b", "Prefix", "api", 80)])
                + &canary("web-canary", hdr, &[P(H, "/a", "Prefix", "web-v2", 80)])
                + &canary("api-canary", &[("canary-weight", "100")], &[P(H, "/b", "Prefix", "api-v2", 80)]),
        )
        .services(2),
        case(
            "the older of two canaries wins",
            "S:1113, B:205",
            main_ingress()
                + &object(
                    "b-old",
                    "2024-01-01T00:00:00Z",
                    &[("canary", "true"), ("canary-weight", "100")],
                    &[P(H, "/", "Prefix", "v-old", 80)],
                )
                + &object("a-new", "2024-02-01T00:00:00Z", &[("canary", "true")], &[P(H, "/", "Prefix", "v-new", 80)]),
        )
        .requests(&[(NONE, "new")])
        .yaml("v-old.shop.svc")
        .report("ingress-nginx consults only the first"),
        case(
            "at the same time, the name that sorts last wins",
            "S:1107-1111",
            main_ingress()
                + &object("a-canary", "", &[("canary", "true")], &[P(H, "/", "Prefix", "v-a", 80)])
                + &object(
                    "b-canary",
                    "",
                    &[("canary", "true"), ("canary-weight", "100")],
                    &[P(H, "/", "Prefix", "v-b", 80)],
                ),
        )
        .requests(&[(NONE, "new")])
        .yaml("v-b.shop.svc")
        .report("the input has no creationTimestamp for one of them, so this order is not the cluster's"),
        case(
            "creation times are compared as times, offsets included",
            "S:1105-1113",
            main_ingress()
                + &object(
                    "b-canary",
                    "2024-01-02T01:00:00+02:00",
                    &[("canary", "true"), ("canary-weight", "100")],
                    &[P(H, "/", "Prefix", "v-b", 80)],
                )
                + &object("a-canary", "2024-01-01T23:30:00Z", &[("canary", "true")], &[P(H, "/", "Prefix", "v-a", 80)]),
        )
        .requests(&[(NONE, "new")])
        .yaml("v-b.shop.svc"),
        case(
            "a canary of the main's own Service splits nothing",
            "C:1694-1699",
            object("web", "2024-01-01T00:00:00Z", &[], &[MAIN])
                + &object(
                    "web-canary",
                    "2024-02-01T00:00:00Z",
                    &[("canary", "true")],
                    &[P(H, "/", "Prefix", "web", 80)],
                ),
        )
        .services(0)
        .report("nothing to split"),
        case(
            "a canary that names the main's Service first takes its location away",
            "C:1096, C:807-809",
            main_ingress() + &canary("web-canary", hdr, &[P(H, "/", "Prefix", "web", 80)]),
        )
        .services(0)
        .reported("serves no location there"),
        case(
            "an upstream on two hosts is canaried on both",
            "C:1601 (one upstream per Service and port, U:50)",
            object("web", "", &[], &[MAIN])
                + &object("web-other", "", &[], &[P("other.example.com", "/", "Prefix", "web", 80)])
                + &canary("web-canary", hdr, &[NEW]),
        )
        .services(2)
        .requests(&[(&["--host", "other.example.com", "--header", "X-Canary: always"], "new")]),
        case(
            "a wildcard host is reported and left out",
            "C:1656 (server per host)",
            object("web", "", &[], &[P("*.example.com", "/", "Prefix", "web", 80)])
                + &canary("web-canary", hdr, &[P("*.example.com", "/", "Prefix", "web-v2", 80)]),
        )
        .services(0)
        .report("is a wildcard"),
        case(
            "a rule without host is the catch-all server",
            "C:1654-1657",
            object("web", "", &[], &[P("", "/", "Prefix", "web", 80)])
                + &canary("web-canary", hdr, &[P("", "/", "Prefix", "web-v2", 80)]),
        )
        .services(0)
        .report("catch-all server _"),
        case(
            "the first main Ingress of a path is old",
            "C:816-833, S:1113",
            object("web", "2024-01-01T00:00:00Z", &[], &[MAIN])
                + &object("web-late", "2024-03-01T00:00:00Z", &[], &[P(H, "/", "Prefix", "late", 80)])
                + &canary("web-canary", hdr, &[NEW]),
        )
        .yaml("old_backend: web.shop.svc.cluster.local:80"),
        case("canaries without any main Ingress get nothing", "C:923", canary("web-canary", hdr, &[NEW])).services(0),
        case(
            "HTTPS backends stay HTTPS",
            "annotations.md backend-protocol; the main's annotations apply",
            object("web", "", &[("backend-protocol", "HTTPS")], &[MAIN]) + &canary("web-canary", hdr, &[NEW]),
        )
        .yaml("old_backend: https://web.shop.svc.cluster.local:80")
        .yaml("new_backend: https://web-v2.shop.svc.cluster.local:80"),
        case(
            "gRPC backends are left out",
            "annotations.md backend-protocol",
            object("web", "", &[("backend-protocol", "GRPC")], &[MAIN]) + &canary("web-canary", hdr, &[NEW]),
        )
        .services(0)
        .report("proxies HTTP and HTTPS only"),
        case("a canary's other annotations are ignored", "annotations.md, Canary", pair(&[("rewrite-target", "/x")]))
            .report("ignores it on a canary Ingress"),
        case(
            "session affinity keeps a client on its side before any rule",
            "B:195-197, B:218-221",
            object("web", "", &[("affinity", "cookie")], &[MAIN])
                + &canary("web-canary", &[("canary-weight", "10"), ("canary-by-header", "X-Canary")], &[NEW]),
        )
        .requests(&[(ALWAYS, "new")])
        .reported("approximate  shop/web-canary: nginx.ingress.kubernetes.io/canary-by-header: header rules")
        .report("holds a valid INGRESSCOOKIE cookie of shop/web")
        .report("strategy: user with user_key: cookie:INGRESSCOOKIE"),
        case(
            "legacy affinity still keeps the main's clients on main",
            "B:195-197 (C:1597 only stops the canary copying it)",
            object("web", "", &[("affinity", "cookie"), ("session-cookie-name", "route")], &[MAIN])
                + &canary("web-canary", &[("canary-weight", "10"), ("affinity-canary-behavior", "legacy")], &[NEW]),
        )
        .reported("approximate  shop/web-canary: nginx.ingress.kubernetes.io/canary-weight")
        .report("holds a valid route cookie"),
        // --- what cannot be read ---------------------------------------------------------
        case(
            "a named port is reported, never printed without a port",
            "U:55-56",
            object("web", "", &[], &[MAIN]) + &canary("web-canary", hdr, &[NEW]).replace("number: 80", "name: http"),
        )
        .services(0)
        .report("names its port \"http\""),
        case(
            "a value validation refuses is a bad Ingress",
            "V:68, V:242-246",
            pair(&[("canary-by-header", "X-Canary"), ("canary-by-header-value", "a=b")]),
        )
        .exit(1)
        .report("annotation validation refuses"),
        case(
            "a pattern validation refuses is a bad Ingress",
            "V:55",
            pair(&[("canary-by-header", "X-Canary"), ("canary-by-header-pattern", "a b")]),
        )
        .exit(1)
        .report("--enable-annotation-validation"),
        case(
            "a Critical-risk annotation makes the Ingress depend on the risk level",
            "internal/ingress/annotations/annotations.go:186-188, S:949-952, config.go:769",
            object("web", "", &[("configuration-snippet", "more_set_headers x;")], &[MAIN])
                + &canary("web-canary", hdr, &[NEW]),
        )
        .exit(1)
        .report("annotations-risk-level High, the default"),
        case(
            "a value the validation refuses on an Ingress that is no canary leaves it a main",
            "canary/main.go:148-153, :180-183, annotations.go:199-201",
            object("web", "", &[("canary", "false"), ("canary-by-header", "X,Canary")], &[MAIN])
                + &canary("web-canary", hdr, &[NEW]),
        )
        .requests(&[(&["--host", H, "--header", "X-Canary: always"], "new")])
        .report("ingress-nginx routes it as a main Ingress either way"),
        case(
            "a canary rule without http stops ingress-nginx's sync",
            "C:1653-1659",
            main_ingress()
                + &canary("web-canary", hdr, &[NEW]).replace("  rules:\n", "  rules:\n  - host: other.example.com\n"),
        )
        .exit(1)
        .report("a canary Ingress's rule without http"),
        case(
            "a path the deep inspection refuses drops the Ingress",
            "store.go:445-449, inspector/rules.go:25-29, pkg/flags/flags.go:229",
            object("web", "", &[], &[P(H, "/docs/etc/nginx", "Prefix", "web", 80)])
                + &canary("web-canary", hdr, &[P(H, "/docs/etc/nginx", "Prefix", "web-v2", 80)]),
        )
        .exit(1)
        .report("matches ingress-nginx's deep inspection (/etc/nginx"),
        case(
            "a Critical-risk annotation without the prefix drops the Ingress too",
            "parser/validators.go:253-266, parser/main.go:196-198",
            object("web", "", &[("server-snippet", "return 200;")], &[MAIN])
                .replace("nginx.ingress.kubernetes.io/server-snippet", "server-snippet")
                + &canary("web-canary", hdr, &[NEW]),
        )
        .exit(1)
        .report("server-snippet is a Critical-risk annotation"),
        case(
            "a DEL byte in a header value is a bad Ingress",
            "V:68",
            pair(&[("canary-by-header", "X-Canary"), ("canary-by-header-value", "on\u{7f}")]),
        )
        .exit(1)
        .report("\\u{7f}"),
    ]
}

/// extensions/v1beta1 and kind: List are read too.
fn legacy_list() -> Case {
    let input = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: extensions/v1beta1\n  kind: Ingress\n  metadata: {name: web, namespace: shop}\n  spec:\n    rules:\n    - host: shop.example.com\n      http:\n        paths:\n        - path: /\n          backend: {serviceName: web, servicePort: 80}\n- apiVersion: extensions/v1beta1\n  kind: Ingress\n  metadata:\n    name: web-canary\n    namespace: shop\n    annotations: {nginx.ingress.kubernetes.io/canary: \"true\", nginx.ingress.kubernetes.io/canary-weight: \"100\"}\n  spec:\n    rules:\n    - host: shop.example.com\n      http:\n        paths:\n        - path: /\n          backend: {serviceName: web-v2, servicePort: 80}\n";
    case("extensions/v1beta1 in a List", "C:1096 (upstreams from serviceName/servicePort)", input.into())
        .requests(&[(NONE, "new")])
}

#[test]
fn every_case_routes_as_ingress_nginx_or_says_how_it_differs() {
    let mut all = cases();
    all.push(legacy_list());
    let mut failed = Vec::new();
    for (n, c) in all.iter().enumerate() {
        let problems = run(c, n);
        if !problems.is_empty() {
            failed.push(format!("case {n} {:?} ({}):\n  {}", c.name, c.source, problems.join("\n  ")));
        }
    }
    let reported = all.iter().filter(|c| c.reported).count();
    for f in &failed {
        eprintln!("FAILED {}", f.lines().next().unwrap_or(""));
    }
    eprintln!("{} cases: {} agree with ingress-nginx, {reported} differ and say how", all.len(), all.len() - reported);
    assert!(all.len() >= 55, "the conformance set has {} cases", all.len());
    assert!(failed.is_empty(), "{} of {} cases fail:\n{}", failed.len(), all.len(), failed.join("\n"));
}
