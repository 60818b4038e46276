//! `import-ingress` on hostile input: a tenant writes an Ingress, the operator
//! runs the import. Nothing a tenant writes may add to the YAML, run in the
//! operator's terminal, stall the import, or take the other tenants' routing
//! with it. How the import routes is `ingress_nginx.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nginx-migration"))
}

fn tmp(name: &str, content: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nginx-migration-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn import(args: &[&str], path: &Path) -> Output {
    bin().arg("import-ingress").args(args).arg(path).output().unwrap()
}

fn ingress(name: &str, host: &str, path: &str, service: &str, annotations: &[(&str, &str)]) -> String {
    let mut a = String::new();
    for (k, v) in annotations {
        a.push_str(&format!("    nginx.ingress.kubernetes.io/{k}: {}\n", serde_json::to_string(v).unwrap()));
    }
    let annotations = if a.is_empty() { String::new() } else { format!("  annotations:\n{a}") };
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: shop\n{annotations}spec:\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - path: {}\n        pathType: Prefix\n        backend:\n          service:\n            name: {service}\n            port:\n              number: 80\n",
        serde_json::to_string(path).unwrap()
    )
}

/// Two honest tenants, each a main Ingress and its canary.
fn honest() -> String {
    let mut y = String::new();
    for t in ["a", "b"] {
        let host = format!("{t}.example.com");
        y += &ingress(t, &host, "/", &format!("{t}-v1"), &[]);
        y += &ingress(
            &format!("{t}-canary"),
            &host,
            "/",
            &format!("{t}-v2"),
            &[("canary", "true"), ("canary-weight", "10")],
        );
    }
    y
}

fn service_names(yaml: &[u8]) -> Vec<String> {
    let doc: serde_yaml::Value = serde_yaml::from_slice(yaml).unwrap();
    doc["services"].as_sequence().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect()
}

fn passes_check(yaml: &[u8]) {
    let path = tmp("checked.yaml", yaml);
    let out = bin().arg("check").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_newline_in_a_path_cannot_add_a_service() {
    let evil_path = "/x\n  - name: evil\n    hosts: [bank.example.com]\n    old_host: bank.example.com\n    old_backend: attacker.example:80\n    new_host: bank.example.com\n    new_backend: attacker.example:80\n#";
    let mut input = honest();
    input += &ingress("evil", "c.example.com", "/", "c-v1", &[]);
    input += &ingress("evil-canary", "c.example.com", evil_path, "c-v2", &[("canary", "true")]);
    let clean = import(&[], &tmp("honest.yaml", honest().as_bytes()));
    assert!(clean.status.success());
    let names = service_names(&clean.stdout);
    assert_eq!(names, ["shop-a", "shop-b"]);

    let out = import(&[], &tmp("evil.yaml", input.as_bytes()));
    let report = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(out.stdout.is_empty(), "a bad Ingress prints nothing without --partial");
    assert!(report.contains("evil.yaml:") && report.contains("is not a path"), "{report}");
    assert!(!report.contains('\n') || report.lines().all(|l| !l.starts_with("    hosts")), "{report}");

    let out = import(&["--partial"], &tmp("evil.yaml", input.as_bytes()));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(service_names(&out.stdout), names, "the same services as without the bad Ingress");
    passes_check(&out.stdout);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("attacker"));
}

#[test]
fn values_that_look_like_yaml_stay_values() {
    let input = ingress("web", "shop.example.com", "/", "web", &[])
        + &ingress(
            "web-canary",
            "shop.example.com",
            "/",
            "web-v2",
            &[("canary", "true"), ("canary-by-header", "X-Canary"), ("canary-by-header-value", "a: b")],
        );
    let out = import(&[], &tmp("yamlish.yaml", input.as_bytes()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    passes_check(&out.stdout);
    let doc: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["services"][0]["canary"]["header_rules"][0]["value"].as_str(), Some("a: b"));
}

#[test]
fn control_characters_never_reach_the_terminal() {
    let payload = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m\u{202e}\u{2028}\u{200b}";
    let input = ingress("web", "shop.example.com", "/", "web", &[("rewrite-target", payload)])
        + &ingress(
            "web-canary",
            "shop.example.com",
            "/",
            "web-v2",
            &[("canary", "true"), ("canary-by-header-value", payload)],
        )
        + &ingress(&format!("bad{payload}"), "x.example.com", "/", "x", &[]);
    let file = tmp(&format!("term{}.yaml", "\u{1b}[2J"), input.as_bytes());
    for format in ["text", "json"] {
        let out = import(&["--partial", "--format", format], &file);
        let all = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
        let text = String::from_utf8(all).unwrap();
        let invisible = |c: char| matches!(c, '\u{202e}' | '\u{2028}' | '\u{200b}');
        assert!(!text.chars().any(|c| (c.is_control() && c != '\n') || invisible(c)), "{format}: {text:?}");
        assert!(text.contains("\\u{1b}]0;pwned"), "{format}: the payload is shown escaped: {text}");
    }
}

#[test]
fn one_bad_ingress_does_not_take_the_others() {
    let mut input = honest();
    input += &ingress("c", "c.example.com", "/", "c-v1", &[]);
    input += &ingress(
        "c-canary",
        "c.example.com",
        "/",
        "c-v2",
        &[("canary", "true"), ("canary-by-header", "X-Canary"), ("canary-by-header-value", "on\u{7f}")],
    );
    let file = tmp("del.yaml", input.as_bytes());
    let out = import(&[], &file);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let report = String::from_utf8(out.stderr).unwrap();
    assert!(report.contains("del.yaml:") && report.contains("on\\u{7f}"), "{report}");
    assert!(report.contains("1 bad Ingress: nothing printed; --partial prints the rest"), "{report}");
    let out = import(&["--partial"], &file);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(service_names(&out.stdout), ["shop-a", "shop-b"], "the bad canary is left out, its main has no canary");
    passes_check(&out.stdout);
}

/// Runs with a deadline: a hostile input must be refused, never waited for.
fn import_within(path: &Path, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let child = bin().arg("import-ingress").arg(path).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    // Output is read while the command runs (a full pipe would stall it).
    std::thread::spawn(move || done.send(child.wait_with_output().unwrap()));
    match finished.recv_timeout(limit) {
        Ok(out) => (out, start.elapsed()),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{} still running after {limit:?}", path.display());
        }
    }
}

#[test]
fn bombs_deep_nesting_and_special_files_are_refused_at_once() {
    // 25 KB of aliases: serde_yaml alone took 10 s and 2.5 GB on this.
    let mut bomb = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for (k, prev) in ('b'..='z').zip('a'..='y') {
        bomb += &format!("{k}: &{k} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n");
    }
    while bomb.len() < 25_000 {
        bomb += "# padding\n";
    }
    let deep = "[".repeat(100_000);
    let fifo = std::env::temp_dir().join(format!("nginx-migration-import-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let cases: Vec<(PathBuf, &str)> = vec![
        (tmp("bomb.yaml", bomb.as_bytes()), "bomb.yaml:1:4: anchors and aliases"),
        (tmp("deep.yaml", deep.as_bytes()), "nested more than"),
        (fifo.clone(), "is a FIFO, not a regular file"),
        (PathBuf::from("/dev/zero"), "is a device, not a regular file"),
        (tmp("binary.yaml", b"kind: Ingress\n\xff\xfe"), "binary.yaml:2:1: the file is not valid UTF-8"),
    ];
    for (path, expected) in cases {
        let (out, took) = import_within(&path, Duration::from_secs(10));
        let report = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{}: {report}", path.display());
        assert!(report.contains(expected), "{}: {report}", path.display());
        assert!(out.stdout.is_empty());
        eprintln!("{}: refused in {took:?}", path.display());
    }
    let _ = std::fs::remove_file(&fifo);
}

#[test]
fn ten_thousand_ingresses_import_in_one_pass() {
    // The shape of `kubectl get ingress -A -o yaml`: a List. 4,000 pairs, and
    // 2,000 bad Ingresses (each an error to locate: the old import re-parsed the
    // whole file for every one).
    let mut y = String::from("apiVersion: v1\nkind: List\nitems:\n");
    let item = |name: &str, host: &str, service: &str, annotations: &str| {
        format!("- apiVersion: networking.k8s.io/v1\n  kind: Ingress\n  metadata:\n    name: {name}\n    namespace: shop\n    annotations: {{{annotations}}}\n  spec:\n    rules:\n    - host: {host}\n      http:\n        paths:\n        - path: /\n          pathType: Prefix\n          backend:\n            service: {{name: {service}, port: {{number: 80}}}}\n")
    };
    for n in 0..4_000 {
        let host = format!("h{n}.example.com");
        y += &item(&format!("m{n}"), &host, "web", "");
        y += &item(
            &format!("c{n}"),
            &host,
            "web-v2",
            "nginx.ingress.kubernetes.io/canary: \"true\", nginx.ingress.kubernetes.io/canary-weight: \"5\"",
        );
    }
    for n in 0..2_000 {
        y += &item(&format!("bad{n}"), "bad host", "web", "");
    }
    let file = tmp("many.yaml", y.as_bytes());
    let (out, took) = import_within(&file, Duration::from_secs(60));
    let report = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(report.matches("is not a host name").count(), 2_000);
    assert!(report.contains("many.yaml:"), "errors are located");
    let out = bin().args(["import-ingress", "--partial"]).arg(&file).output().unwrap();
    assert_eq!(service_names(&out.stdout).len(), 4_000);
    eprintln!("10,000 Ingresses ({} bytes): {took:?}", y.len());
}

#[test]
fn a_repeated_items_key_is_refused() {
    // Readers disagree on which `items:` counts: the file's Ingresses are unknown.
    let input =
        "apiVersion: v1\nkind: List\nitems:\n- {kind: Ingress, metadata: {name: a, namespace: shop}}\nitems: []\n";
    let out = import(&[], &tmp("items.yaml", input.as_bytes()));
    let report = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("the key \"items\" is repeated"), "{report}");
    assert!(out.stdout.is_empty());
}

#[test]
fn output_that_nginx_would_refuse_is_not_printed() {
    // 90 pairs with 200 KB header values (within the API's 256 KiB per object):
    // the YAML would pass the 16 MiB a configuration may have.
    let value = "v".repeat(200_000);
    let mut input = String::new();
    for n in 0..90 {
        let host = format!("h{n}.example.com");
        input += &ingress(&format!("m{n}"), &host, "/", "web", &[]);
        input += &ingress(
            &format!("c{n}"),
            &host,
            "/",
            "web-v2",
            &[("canary", "true"), ("canary-by-header", "X-Canary"), ("canary-by-header-value", &value)],
        );
    }
    let out = import(&[], &tmp("huge.yaml", input.as_bytes()));
    let report = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(report.contains("would be more than 16777216 bytes, the most a configuration may have"), "{report}");
}

#[test]
fn a_huge_header_value_joining_many_hosts_stops_at_the_limit_in_bounded_memory() {
    // One main Ingress with 1,000 hosts, one canary with a 200 KB header value
    // joining them all: 200 MB of YAML had it been written whole (the import
    // once built it, then parsed it: 6.3 s and 800 MB for this 390 KB input).
    // Under a 512 MiB address-space limit it must still refuse, cleanly.
    let value = "v".repeat(200_000);
    let hosts: String = (0..1000)
        .map(|n| format!("  - host: h{n}.example.com\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service:\n            name: web\n            port:\n              number: 80\n"))
        .collect();
    let mut input = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: main\n  namespace: shop\nspec:\n  rules:\n{hosts}"
    );
    input += &ingress(
        "canary",
        "h0.example.com",
        "/",
        "web-v2",
        &[("canary", "true"), ("canary-by-header", "X-Canary"), ("canary-by-header-value", &value)],
    );
    let path = tmp("amplified.yaml", input.as_bytes());
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 524288 && exec \"$0\" import-ingress \"$1\"")
        .arg(env!("CARGO_BIN_EXE_nginx-migration"))
        .arg(&path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(out.stdout.is_empty());
    assert!(report.contains("would be more than 16777216 bytes"), "{report}");
    assert!(report.contains("1000 services in all"), "{report}");
}

#[test]
fn an_ingress_without_a_namespace_needs_the_one_kubectl_would_give() {
    // Manifests kept in a repository often name none: kubectl apply -n decides.
    let input = (ingress("web", "shop.example.com", "/", "web", &[])
        + &ingress("web-canary", "shop.example.com", "/", "web-v2", &[("canary", "true"), ("canary-weight", "10")]))
        .replace("  namespace: shop\n", "");
    let path = tmp("no-namespace.yaml", input.as_bytes());
    let out = import(&[], &path);
    let report = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(out.stdout.is_empty(), "no guess at the default namespace");
    assert!(report.contains("no-namespace.yaml:5:3: the Ingress names no metadata.namespace"), "{report}");
    let out = import(&["--namespace", "shop"], &path);
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(yaml.contains("old_backend: web.shop.svc.cluster.local:80"), "{yaml}");
    assert!(yaml.contains("new_backend: web-v2.shop.svc.cluster.local:80"), "{yaml}");
    let out = import(&["--namespace", "Shop_1"], &path);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8(out.stderr).unwrap().contains("not a namespace name"));
}
