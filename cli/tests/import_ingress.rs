//! `import-ingress`: each documented behaviour of ingress-nginx's canary, as an
//! Ingress pair → the YAML the tool writes → requests through `explain`, which
//! must land where ingress-nginx would send them (main = old, canary = new).

use std::path::PathBuf;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nginx-migration"))
}

fn tmp(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nginx-migration-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn ingress(name: &str, host: &str, path: &str, service: &str, annotations: &[(&str, &str)]) -> String {
    let mut a = String::new();
    for (k, v) in annotations {
        a.push_str(&format!("    nginx.ingress.kubernetes.io/{k}: {v:?}\n"));
    }
    let annotations = if a.is_empty() { String::new() } else { format!("  annotations:\n{a}") };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: shop\n{annotations}spec:\n  ingressClassName: nginx\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - path: {path}\n        pathType: Prefix\n        backend:\n          service:\n            name: {service}\n            port:\n              number: 80\n"
    )
}

/// A main Ingress and its canary with these annotations (besides canary: "true").
fn pair(annotations: &[(&str, &str)]) -> String {
    let mut canary = vec![("canary", "true")];
    canary.extend_from_slice(annotations);
    format!(
        "{}---\n{}",
        ingress("web", "shop.example.com", "/", "web", &[]),
        ingress("web-canary", "shop.example.com", "/", "web-v2", &canary)
    )
}

struct Imported {
    yaml: PathBuf,
    report: String,
    status: i32,
}

fn import(name: &str, input: &str) -> Imported {
    let path = tmp(&format!("{name}.in.yaml"), input);
    let out = bin().arg("import-ingress").arg(&path).output().unwrap();
    let yaml = tmp(&format!("{name}.out.yaml"), &String::from_utf8(out.stdout).unwrap());
    Imported { yaml, report: String::from_utf8(out.stderr).unwrap(), status: out.status.code().unwrap() }
}

/// Where `explain` sends a request: (target, rule).
fn explain(yaml: &PathBuf, args: &[&str]) -> (String, String) {
    let out: Output = bin()
        .arg("explain")
        .arg(yaml)
        .args(["--host", "shop.example.com", "--format", "json"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (v["target"].as_str().unwrap_or("-").to_owned(), v["rule"].as_str().unwrap().to_owned())
}

#[track_caller]
fn lands(yaml: &PathBuf, args: &[&str], target: &str, rule: &str) {
    assert_eq!(
        explain(yaml, args),
        (target.to_owned(), rule.to_owned()),
        "{args:?}\n{}",
        std::fs::read_to_string(yaml).unwrap()
    );
}

#[track_caller]
fn passes_check(yaml: &PathBuf) {
    let out = bin().arg("check").arg(yaml).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(yaml).unwrap()
    );
}

#[test]
fn backends_hosts_and_names_come_from_the_pair() {
    let i = import("plain", &pair(&[]));
    assert_eq!(i.status, 0, "{}", i.report);
    passes_check(&i.yaml);
    let text = std::fs::read_to_string(&i.yaml).unwrap();
    assert!(text.contains("  - name: shop-web\n"), "{text}");
    assert!(text.contains("old_backend: \"web.shop.svc.cluster.local:80\""), "{text}");
    assert!(text.contains("new_backend: \"web-v2.shop.svc.cluster.local:80\""), "{text}");
    assert!(text.contains("hosts: [\"shop.example.com\"]"), "{text}");
    // No weight annotation: weight 0, so everything stays on main.
    lands(&i.yaml, &[], "old", "weight");
}

#[test]
fn canary_by_header_alone_always_never_and_fall_through() {
    let i = import("header", &pair(&[("canary-by-header", "X-Canary"), ("canary-weight", "100")]));
    passes_check(&i.yaml);
    lands(&i.yaml, &["--header", "X-Canary: always"], "new", "header");
    lands(&i.yaml, &["--header", "X-Canary: never"], "old", "header");
    // Anything else falls through (here to a weight of 100).
    lands(&i.yaml, &["--header", "X-Canary: sometimes"], "new", "weight");
    lands(&i.yaml, &[], "new", "weight");
    assert!(
        i.report.contains("mapped       shop/web-canary: nginx.ingress.kubernetes.io/canary-by-header"),
        "{}",
        i.report
    );
}

#[test]
fn never_does_not_fall_through_to_the_cookie() {
    let i = import("never", &pair(&[("canary-by-header", "X-Canary"), ("canary-by-cookie", "canary")]));
    lands(&i.yaml, &["--header", "X-Canary: never", "--cookie", "canary=always"], "old", "header");
    lands(&i.yaml, &["--header", "X-Canary: other", "--cookie", "canary=always"], "new", "header");
}

#[test]
fn canary_by_header_value_only_that_value_and_always_means_nothing() {
    let i = import(
        "value",
        &pair(&[
            ("canary-by-header", "X-Canary"),
            ("canary-by-header-value", "beta"),
            ("canary-by-header-pattern", "^b"),
        ]),
    );
    passes_check(&i.yaml);
    lands(&i.yaml, &["--header", "X-Canary: beta"], "new", "header");
    lands(&i.yaml, &["--header", "X-Canary: always"], "old", "weight");
    lands(&i.yaml, &["--header", "X-Canary: never"], "old", "weight");
    lands(&i.yaml, &["--header", "X-Canary: betamax"], "old", "weight");
    assert!(i.report.contains("canary-by-header-pattern: ignored, as ingress-nginx ignores it"), "{}", i.report);
}

#[test]
fn canary_by_header_pattern_matches_or_falls_through() {
    let i = import(
        "pattern",
        &pair(&[
            ("canary-by-header", "X-Region"),
            ("canary-by-header-pattern", "^eu-(west|north)"),
            ("canary-by-cookie", "canary"),
        ]),
    );
    passes_check(&i.yaml);
    lands(&i.yaml, &["--header", "X-Region: eu-west-1"], "new", "header");
    lands(&i.yaml, &["--header", "X-Region: us-east-1"], "old", "weight");
    lands(&i.yaml, &["--header", "X-Region: always"], "old", "weight");
    lands(&i.yaml, &["--header", "X-Region: us-east-1", "--cookie", "canary=always"], "new", "header");
}

#[test]
fn an_invalid_pattern_is_refused_with_its_location() {
    let i = import("badpattern", &pair(&[("canary-by-header", "X-Region"), ("canary-by-header-pattern", "^eu-(west")]));
    assert_eq!(i.status, 1, "{}", i.report);
    // The annotation's value, in the second document of the stream: line 28, column 59.
    let want = format!(
        "{}:",
        tmp(
            "badpattern.in.yaml",
            &pair(&[("canary-by-header", "X-Region"), ("canary-by-header-pattern", "^eu-(west")])
        )
        .display()
    );
    let error = i
        .report
        .lines()
        .find(|l| l.contains("canary-by-header-pattern: bad regex"))
        .unwrap_or_else(|| panic!("{}", i.report));
    assert!(error.starts_with(&format!("nginx-migration: {want}28:59: ")), "{error}");
    assert!(error.contains("ingress-nginx would log the error and send every request to the main backend"), "{error}");
    passes_check(&i.yaml);
}

#[test]
fn canary_by_cookie_always_never_else_weight() {
    let i = import("cookie", &pair(&[("canary-by-cookie", "canary"), ("canary-weight", "0")]));
    passes_check(&i.yaml);
    lands(&i.yaml, &["--cookie", "canary=always"], "new", "header");
    lands(&i.yaml, &["--cookie", "canary=never"], "old", "header");
    lands(&i.yaml, &["--cookie", "canary=maybe"], "old", "weight");
    // The cookie is read as $cookie_canary reads it: names case-insensitive, first occurrence.
    lands(&i.yaml, &["--cookie", "CANARY=always", "--cookie", "canary=never"], "new", "header");
}

#[test]
fn weight_of_total_to_the_hundredth() {
    for (weight, total, percentage, exact) in [
        ("20", None, "20", true),
        ("1", Some("3"), "1", true),
        ("1", Some("300"), "0.33", false),
        ("250", Some("1000"), "25", true),
        ("150", None, "100", true),
    ] {
        let mut a = vec![("canary-weight", weight)];
        if let Some(t) = total {
            a.push(("canary-weight-total", t));
        }
        let i = import(&format!("weight-{weight}-{}", total.unwrap_or("x")), &pair(&a));
        passes_check(&i.yaml);
        let text = std::fs::read_to_string(&i.yaml).unwrap();
        assert!(
            text.contains(&format!("      strategy: weight\n      percentage: {percentage}\n")),
            "{weight}/{total:?}: {text}"
        );
        let kind = if exact { "mapped       " } else { "approximate  " };
        assert!(
            i.report.contains(&format!("{kind}shop/web-canary: nginx.ingress.kubernetes.io/canary-weight")),
            "{}",
            i.report
        );
    }
    // 100 % lands on the canary, with the probability in the trace.
    let i = import("weight-all", &pair(&[("canary-weight", "100")]));
    lands(&i.yaml, &[], "new", "weight");
}

#[test]
fn a_canary_without_a_main_ingress_gets_nothing() {
    let input =
        ingress("lonely", "other.example.com", "/", "lonely-v2", &[("canary", "true"), ("canary-weight", "50")]);
    let i = import("lonely", &input);
    assert_eq!(i.status, 0);
    let text = std::fs::read_to_string(&i.yaml).unwrap();
    assert!(text.contains("services: []"), "{text}");
    assert!(
        i.report.contains(
            "no main Ingress serves host other.example.com path /: ingress-nginx sends this canary nothing there"
        ),
        "{}",
        i.report
    );
    passes_check(&i.yaml);
}

#[test]
fn canary_not_true_is_a_plain_ingress() {
    let input = format!(
        "{}---\n{}",
        ingress("web", "shop.example.com", "/", "web", &[]),
        ingress("web-canary", "shop.example.com", "/", "web-v2", &[("canary", "false"), ("canary-weight", "50")])
    );
    let i = import("not-canary", &input);
    assert!(std::fs::read_to_string(&i.yaml).unwrap().contains("services: []"));
}

#[test]
fn paths_that_differ_need_locations() {
    let main = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: shop}\nspec:\n  rules:\n  - host: shop.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}\n";
    let canary =
        ingress("api-canary", "shop.example.com", "/api", "api-v2", &[("canary", "true"), ("canary-weight", "10")]);
    // As `kubectl get ingress -A -o yaml` prints them: a List.
    let list = format!("apiVersion: v1\nkind: List\nitems:\n{}{}", indent_item(main), indent_item(&canary));
    let i = import("paths", &list);
    passes_check(&i.yaml);
    let text = std::fs::read_to_string(&i.yaml).unwrap();
    assert!(text.contains("old_backend: \"api.shop.svc.cluster.local:8080\""), "{text}");
    assert!(text.contains("new_backend: \"api-v2.shop.svc.cluster.local:80\""), "{text}");
    assert!(i.report.contains("location /api { migration on; migration_service shop-web;"), "{}", i.report);
}

fn indent_item(doc: &str) -> String {
    let mut out = String::new();
    for (k, line) in doc.lines().enumerate() {
        out.push_str(if k == 0 { "- " } else { "  " });
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn affinity_and_other_annotations_are_reported_not_mapped() {
    let i = import(
        "affinity",
        &pair(&[
            ("canary-weight", "30"),
            ("affinity", "cookie"),
            ("session-cookie-name", "route"),
            ("rewrite-target", "/"),
        ]),
    );
    assert!(
        i.report
            .contains("not mapped   shop/web-canary: nginx.ingress.kubernetes.io/affinity: session affinity (cookie)"),
        "{}",
        i.report
    );
    assert!(i.report.contains("use strategy: user with user_key: cookie:route"), "{}", i.report);
    assert!(i.report.contains("nginx.ingress.kubernetes.io/rewrite-target: not a canary annotation"), "{}", i.report);
    let json = bin()
        .args(["import-ingress", "--format", "json"])
        .arg(tmp("affinity.in.yaml", &pair(&[("canary-weight", "30"), ("affinity", "cookie")])))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stderr).unwrap();
    assert!(v["mapped"].as_array().unwrap().iter().any(|m| m["annotation"] == "canary-weight"));
    assert!(v["unmapped"].as_array().unwrap().iter().any(|m| m["annotation"] == "affinity"));
    assert!(v["approximate"].is_array());
}

#[test]
fn named_ports_are_reported() {
    let input = pair(&[("canary-weight", "5")]).replacen("              number: 80\n", "              name: http\n", 1);
    let i = import("named-port", &input);
    passes_check(&i.yaml);
    assert!(
        i.report.contains("uses the named port \"http\": write its number in old_backend of shop-web"),
        "{}",
        i.report
    );
}
