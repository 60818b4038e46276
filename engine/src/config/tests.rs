//! One test per class of configuration error, each asserting the message and its
//! location, plus the documents that must load.

use super::*;

const BASE: &str = "\
services:
  - name: api
    old_host: api.example
    old_backend: old.svc:8078
    new_host: api.kong.example
    new_backend: api.kong.example:443
";

fn err(text: &str) -> ConfigError {
    parse("m.yaml", text).expect_err("the document must be refused")
}

/// BASE plus `extra` (indented under the service).
fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

#[track_caller]
fn assert_err(text: &str, expected: &str) {
    assert_eq!(err(text).to_string(), expected);
}

#[test]
fn the_seed_configmap_loads_unchanged() {
    let text = include_str!("../../../nginx/configmap.yaml");
    let config = parse("configmap.yaml", text).unwrap();
    assert_eq!(config.services.len(), 1);
    let s = &config.services[0];
    assert_eq!(s.name.0, "api-name01");
    assert_eq!(s.migration.percentage, Percentage(2000));
    assert_eq!(s.new_backend.scheme, "https");
    assert_eq!(s.canary.header_rules.len(), 1);
}

#[test]
fn plain_document_loads_with_defaults() {
    let c = parse("m.yaml", BASE).unwrap();
    let s = &c.services[0];
    assert_eq!(s.hosts, vec![HostPattern("api.example".into())]);
    assert!(s.migration.enabled);
    assert_eq!(s.migration.strategy, Strategy::Weight);
    assert_eq!(s.migration.percentage, Percentage(0));
    assert_eq!(s.migration.user_key, UserKey::Header("x-user-id".into()));
    assert_eq!(c.version.len(), 16, "content hash stands in for a missing version");
}

#[test]
fn version_is_reported_as_written() {
    assert_eq!(parse("m.yaml", &format!("version: \"2026-11-24.1\"\n{BASE}")).unwrap().version, "2026-11-24.1");
    assert_eq!(parse("m.yaml", &format!("version: 7\n{BASE}")).unwrap().version, "7");
}

#[test]
fn content_hash_changes_with_content() {
    let a = parse("m.yaml", BASE).unwrap().version;
    let b = parse("m.yaml", &with("    migration: {percentage: 5}\n")).unwrap().version;
    assert_ne!(a, b);
}

#[test]
fn empty_services_list_is_valid() {
    assert!(parse("m.yaml", "services: []\n").unwrap().services.is_empty());
}

#[test]
fn syntax_error_is_located() {
    let e = err("services:\n  - name: [api\n");
    assert_eq!(e.file, "m.yaml");
    assert!(e.location.is_some(), "{e}");
    assert!(e.to_string().starts_with("m.yaml:"), "{e}");
}

#[test]
fn empty_file_is_refused() {
    assert_err("", "m.yaml: the document is empty; expected a mapping with `services` (`services: []` routes nothing)");
    assert_err(
        "  \n# only a comment\n",
        "m.yaml: the document is empty; expected a mapping with `services` (`services: []` routes nothing)",
    );
}

#[test]
fn missing_services_key_is_refused() {
    assert_err("version: x\n", "m.yaml:1:1: missing field `services`");
}

#[test]
fn unknown_key_is_refused() {
    assert_err(&with("    migraton: {}\n"), "m.yaml:7:5: services[0]: unknown field `migraton`, expected one of `name`, `hosts`, `old_host`, `old_backend`, `new_host`, `new_backend`, `migration`, `canary`, `fallback`");
    assert_err(&with("    migration:\n      percent: 5\n"), "m.yaml:8:7: services[0].migration: unknown field `percent`, expected one of `enabled`, `strategy`, `percentage`, `user_key`, `hash_salt`, `ramp`, `sticky`, `drain`");
}

#[test]
fn wrong_type_is_refused() {
    assert_err(
        &with("    migration:\n      enabled: \"yes\"\n"),
        "m.yaml:8:16: services[0].migration.enabled: wrong type: string \"yes\", expected a boolean",
    );
    assert_err(
        &with("    migration:\n      percentage: \"20\"\n"),
        "m.yaml:8:19: services[0].migration.percentage: wrong type: string \"20\", expected a number between 0 and 100",
    );
    assert_err("services: {}\n", "m.yaml:1:11: services: wrong type: map, expected a list of services");
}

#[test]
fn missing_required_field_is_refused() {
    assert_err("services:\n  - name: a\n    old_host: a\n", "m.yaml:2:5: services[0]: missing field `old_backend`");
}

#[test]
fn duplicate_service_name_is_refused() {
    let text = format!(
        "{BASE}  - name: api\n    old_host: b.example\n    old_backend: b:1\n    new_host: b\n    new_backend: b:2\n"
    );
    assert_err(&text, "m.yaml:7:11: services[1].name: duplicate service name \"api\" (first used by services[0])");
}

#[test]
fn host_claimed_by_two_services_is_refused() {
    let text = format!("{BASE}  - name: other\n    hosts: [API.example]\n    old_host: b.example\n    old_backend: b:1\n    new_host: b\n    new_backend: b:2\n");
    assert_err(
        &text,
        "m.yaml:8:13: services[1].hosts[0]: host \"api.example\" is already routed by services[0]; a host belongs to one service",
    );
    // Without `hosts`, the host is old_host's, and the error points there.
    let text = format!("{BASE}  - name: other\n    old_host: API.example\n    old_backend: b:1\n    new_host: b\n    new_backend: b:2\n");
    assert_err(
        &text,
        "m.yaml:8:15: services[1].old_host: host \"api.example\" is already routed by services[0]; a host belongs to one service",
    );
}

#[test]
fn bad_service_name_is_refused() {
    assert_err(
        &BASE.replace("name: api", "name: \"api/v1\""),
        "m.yaml:2:11: services[0].name: \"api/v1\" has '/'; a service name is made of A-Z a-z 0-9 . _ -",
    );
}

#[test]
fn bad_cidr_is_refused() {
    assert_err(&with("    canary:\n      ip_rules:\n        - cidr: 10.0.0.0/33\n          target: new\n"),
        "m.yaml:9:17: services[0].canary.ip_rules[0].cidr: \"10.0.0.0/33\" is not a CIDR (a.b.c.d/len, ipv6/len or an address)");
    assert_err(&with("    canary:\n      ip_rules:\n        - cidrs: [10.0.0.0/8, 10.0.0.1/8]\n          target: new\n"),
        "m.yaml:9:31: services[0].canary.ip_rules[0].cidrs[1]: \"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?");
    assert_err(&with("    canary:\n      header_rules:\n        - header: X-A\n          present: true\n          target: new\n          from: [nope]\n"),
        "m.yaml:12:18: services[0].canary.header_rules[0].from[0]: \"nope\" is not a CIDR (a.b.c.d/len, ipv6/len or an address)");
}

#[test]
fn bad_regex_is_refused() {
    let e = err(&with(
        "    canary:\n      header_rules:\n        - header: X-A\n          pattern: \"a(b\"\n          target: new\n",
    ));
    assert_eq!(e.location, Some((10, 20)));
    assert_eq!(e.path, "services[0].canary.header_rules[0].pattern");
    assert!(e.message.starts_with("bad regex:"), "{e}");
}

#[test]
fn percentage_out_of_range_is_refused() {
    assert_err(
        &with("    migration:\n      percentage: 120\n"),
        "m.yaml:8:19: services[0].migration.percentage: must be between 0 and 100, got 120",
    );
    assert_err(
        &with("    migration:\n      percentage: -1\n"),
        "m.yaml:8:19: services[0].migration.percentage: must be between 0 and 100, got -1",
    );
    assert_err(
        &with("    migration:\n      percentage: 100.5\n"),
        "m.yaml:8:19: services[0].migration.percentage: must be between 0 and 100, got 100.5",
    );
}

#[test]
fn percentage_with_more_than_two_decimals_is_refused() {
    assert_err(
        &with("    migration:\n      percentage: 20.125\n"),
        "m.yaml:8:19: services[0].migration.percentage: at most two decimals are allowed, got 20.125",
    );
    let ok = parse("m.yaml", &with("    migration:\n      percentage: 33.33\n")).unwrap();
    assert_eq!(ok.services[0].migration.percentage, Percentage(3333));
}

#[test]
fn unknown_target_is_refused() {
    assert_err(
        &with("    canary:\n      user_rules:\n        - users: [a]\n          target: blue\n"),
        "m.yaml:10:19: services[0].canary.user_rules[0].target: must be new_cluster or old_cluster, got \"blue\"",
    );
}

#[test]
fn unknown_strategy_is_refused() {
    assert_err(
        &with("    migration:\n      strategy: random\n"),
        "m.yaml:8:17: services[0].migration.strategy: must be weight, user or ip, got \"random\"",
    );
}

#[test]
fn empty_header_name_is_refused() {
    assert_err(
        &with("    canary:\n      header_rules:\n        - header: \"\"\n          value: x\n          target: new\n"),
        "m.yaml:9:19: services[0].canary.header_rules[0].header: header name must not be empty",
    );
}

#[test]
fn bad_user_key_is_refused() {
    assert_err(&with("    migration:\n      user_key: session:uid\n"),
        "m.yaml:8:17: services[0].migration.user_key: must be header:NAME, cookie:NAME, arg:NAME or var:NAME, got \"session:uid\"");
}

#[test]
fn header_rule_needs_exactly_one_matcher() {
    assert_err(
        &with("    canary:\n      header_rules:\n        - header: X-A\n          target: new\n"),
        "m.yaml:9:11: services[0].canary.header_rules[0]: a header rule needs one of value, values, pattern or present",
    );
    assert_err(&with("    canary:\n      header_rules:\n        - header: X-A\n          present: true\n          target: new\n        - header: X-B\n          value: a\n          pattern: b\n          target: new\n"),
        "m.yaml:12:11: services[0].canary.header_rules[1]: a header rule takes only one of value, values, pattern or present");
}

#[test]
fn header_rule_reads_exactly_one_source() {
    assert_err(
        &with("    canary:\n      header_rules:\n        - value: x\n          target: new\n"),
        "m.yaml:9:11: services[0].canary.header_rules[0]: a header rule needs one of header, cookie or arg (what it reads)",
    );
    assert_err(
        &with("    canary:\n      header_rules:\n        - header: X-A\n          cookie: canary\n          value: x\n          target: new\n"),
        "m.yaml:10:19: services[0].canary.header_rules[0].cookie: a header rule reads one of header, cookie or arg; this one already reads header \"x-a\"",
    );
    assert_err(
        &with("    canary:\n      header_rules:\n        - {cookie: c, value: x, target: new}\n        - {arg: a, cookie: c, value: x, target: new}\n"),
        "m.yaml:10:17: services[0].canary.header_rules[1].arg: a header rule reads one of header, cookie or arg; this one already reads cookie \"c\"",
    );
}

#[test]
fn cookie_and_arg_rules_load_with_lowercase_names() {
    let c = parse(
        "m.yaml",
        &with("    canary:\n      header_rules:\n        - {cookie: Canary, value: always, target: new}\n        - {arg: Beta, present: true, target: new, from: [10.0.0.0/8]}\n"),
    )
    .unwrap();
    let rules = &c.services[0].canary.header_rules;
    assert_eq!(rules[0].source, RuleSource::Cookie("canary".into()));
    assert_eq!(rules[1].source, RuleSource::Arg("beta".into()));
}

#[test]
fn bad_cookie_and_arg_names_are_refused_where_they_are() {
    assert_err(
        &with("    canary:\n      header_rules:\n        - {cookie: 'a=b', value: x, target: new}\n"),
        "m.yaml:9:20: services[0].canary.header_rules[0].cookie: \"a=b\" has '=', which cannot appear in a cookie name",
    );
    assert_err(
        &with("    canary:\n      header_rules:\n        - {arg: '', value: x, target: new}\n"),
        "m.yaml:9:17: services[0].canary.header_rules[0].arg: arg name must not be empty",
    );
    assert_err(
        &with("    canary:\n      header_rules:\n        - {arg: 'a b', value: x, target: new}\n"),
        "m.yaml:9:17: services[0].canary.header_rules[0].arg: \"a b\" has ' ', which cannot appear in an arg name",
    );
}

#[test]
fn bad_backend_is_refused() {
    assert_err(
        &BASE.replace("old.svc:8078", "ftp://old.svc:21"),
        "m.yaml:4:18: services[0].old_backend: \"ftp://old.svc:21\": scheme must be http or https, got \"ftp\"",
    );
    assert_err(&BASE.replace("old.svc:8078", "old.svc:80/x"), "m.yaml:4:18: services[0].old_backend: \"old.svc:80/x\" has '/'; expected host:port, scheme://host:port or an upstream name");
}

#[test]
fn fallback_defaults_and_values() {
    let fallback = |extra: &str| parse("m.yaml", &with(extra)).unwrap().services[0].fallback.clone();
    assert_eq!(fallback(""), None);
    assert_eq!(
        fallback("    fallback: {}\n"),
        Some(Fallback { failures: 5, statuses: vec![502, 503, 504], cooldown_ms: 30_000 })
    );
    assert_eq!(
        fallback("    fallback: {failures: 3, statuses: [500, 502, 500], cooldown: 500ms}\n"),
        Some(Fallback { failures: 3, statuses: vec![500, 502], cooldown_ms: 500 })
    );
    for (cooldown, ms) in [("2m", 120_000), ("1h", 3_600_000), ("10", 10_000), ("\"45s\"", 45_000)] {
        assert_eq!(
            fallback(&format!("    fallback: {{cooldown: {cooldown}}}\n")).unwrap().cooldown_ms,
            ms,
            "{cooldown}"
        );
    }
}

#[test]
fn fallback_errors_are_located() {
    assert_err(
        &with("    fallback:\n      failures: 0\n"),
        "m.yaml:8:17: services[0].fallback.failures: must be from 1 to 1000, got 0",
    );
    assert_err(
        &with("    fallback:\n      statuses: [502, 600]\n"),
        "m.yaml:8:23: services[0].fallback.statuses[1]: must be an HTTP status from 100 to 599, got 600",
    );
    assert_err(&with("    fallback:\n      statuses: []\n"), "m.yaml:8:17: services[0].fallback.statuses: must list at least one status (connect errors and timeouts count anyway)");
    assert_err(
        &with("    fallback:\n      cooldown: soon\n"),
        "m.yaml:8:17: services[0].fallback.cooldown: must be a time such as 30s, 500ms or 2m, got \"soon\"",
    );
    assert_err(
        &with("    fallback:\n      cooldown: 10ms\n"),
        "m.yaml:8:17: services[0].fallback.cooldown: must be from 100ms to 24h, got \"10ms\"",
    );
    assert_err(
        &with("    fallback:\n      failure: 5\n"),
        "m.yaml:8:7: services[0].fallback: unknown field `failure`, expected one of `failures`, `statuses`, `cooldown`",
    );
}

#[test]
fn configmap_errors_point_into_the_manifest() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: m\ndata:\n  migration.yaml: |\n    services:\n      - name: a\n        old_host: a\n        old_backend: a:1\n        new_host: b\n        new_backend: b:2\n        migration:\n          percentage: 120\n";
    assert_err(
        text,
        "cm.yaml:14:23: services[0].migration.percentage: must be between 0 and 100, got 120"
            .replace("cm.yaml", "m.yaml")
            .as_str(),
    );
}

#[test]
fn configmap_with_quoted_document_names_the_key() {
    let text = "kind: ConfigMap\ndata:\n  migration.yaml: \"services: [1]\"\n";
    let e = err(text);
    assert_eq!(e.file, "m.yaml (data.migration.yaml)");
    assert_eq!(e.path, "services[0]");
}

#[test]
fn configmap_takes_its_only_yaml_key() {
    let text = "kind: ConfigMap\ndata:\n  routes.yaml: |\n    services: []\n";
    assert!(parse("m.yaml", text).unwrap().services.is_empty());
    assert_err("kind: ConfigMap\ndata:\n  a.txt: x\n", "m.yaml: data: the ConfigMap has no migration.yaml key");
}

#[test]
fn multiple_errors_report_the_first() {
    // Reading stops at the first problem, as nginx -t does.
    let e = err(&with("    migration:\n      percentage: 120\n      strategy: nope\n"));
    assert_eq!(e.path, "services[0].migration.percentage");
}

/// Found by `cargo fuzz run config` (engine/fuzz): a `data` key with a YAML tag
/// (`! s.yml:`) was listed by its text but then looked up untagged, and the
/// lookup panicked (`Option::unwrap()` on `None`) instead of reading or refusing it.
#[test]
fn configmap_with_a_tagged_data_key_does_not_panic() {
    assert_err("kind: ConfigMap\ndata:\n ! s.yaml:", "m.yaml: data.s.yaml: must be a string holding the YAML document");
    assert_err(
        "kind: ConfigMap\ndata:\n  ! migration.yaml: [1]\n",
        "m.yaml: data.migration.yaml: must be a string holding the YAML document",
    );
    let text = "kind: ConfigMap\ndata:\n  ! routes.yaml: |\n    services: []\n";
    assert!(parse("m.yaml", text).unwrap().services.is_empty());
}

/// A ConfigMap caught half-written: `services:` and nothing after it must not
/// load as `services: []` (which routes nothing).
#[test]
fn services_without_a_value_is_refused() {
    for text in ["version: \"2\"\nservices:\n", "version: \"2\"\nservices:", "services: ~\n", "services: null\n"] {
        let e = err(text);
        assert_eq!(e.path, "services", "{text:?}");
        assert!(e.message.starts_with("has no value; write `services: []` to route nothing"), "{text:?}: {e}");
        assert!(e.location.is_some(), "{text:?}: {e}");
    }
    let cm = "kind: ConfigMap\ndata:\n  migration.yaml: |\n    version: \"2\"\n    services:\n";
    assert_eq!(err(cm).path, "services");
}

#[test]
fn percentages_are_exact_to_two_decimals() {
    for bad in ["99.999999999", "0.000000001", "20.001", "0.005", "33.333"] {
        assert_err(
            &with(&format!("    migration:\n      percentage: {bad}\n")),
            &format!("m.yaml:8:19: services[0].migration.percentage: at most two decimals are allowed, got {bad}"),
        );
    }
    for (good, bp) in [("20.15", 2015), ("0.01", 1), ("99.99", 9999), ("0.1", 10), ("33.3", 3330), ("100.0", 10000)] {
        let c = parse("m.yaml", &with(&format!("    migration:\n      percentage: {good}\n"))).unwrap();
        assert_eq!(c.services[0].migration.percentage, Percentage(bp), "{good}");
    }
}

#[test]
fn a_numeric_version_is_reported_as_written() {
    for written in ["1.10", "1e3", "007", "2.50", "-1", "0x1F"] {
        let c = parse("m.yaml", &format!("version: {written}\n{BASE}")).unwrap();
        assert_eq!(c.version, written);
    }
    let cm = "kind: ConfigMap\ndata:\n  migration.yaml: |\n    version: 1.10\n    services: []\n";
    assert_eq!(parse("m.yaml", cm).unwrap().version, "1.10");
}

/// Errors found across a mapping's fields point at the field itself.
#[test]
fn cross_field_errors_point_at_the_field() {
    assert_err(
        &BASE.replace("  - name: api\n", "  - name: api\n    hosts: []\n"),
        "m.yaml:3:12: services[0].hosts: must list at least one host (leave it out to use old_host)",
    );
    assert_err(
        &with("    canary:\n      header_rules:\n        - header: X-A\n          values: []\n          target: new\n"),
        "m.yaml:10:19: services[0].canary.header_rules[0].values: must list at least one value",
    );
    assert_err(
        &with("    canary:\n      header_rules:\n        - header: X-A\n          present: true\n          target: new\n          from: []\n"),
        "m.yaml:12:17: services[0].canary.header_rules[0].from: must list at least one network (leave it out to allow every client)",
    );
    assert_err(
        &with("    canary:\n      ip_rules:\n        - target: new\n          cidrs: []\n"),
        "m.yaml:10:18: services[0].canary.ip_rules[0].cidrs: must list at least one network",
    );
    assert_err(
        &with("    canary:\n      user_rules:\n        - target: new\n          users: []\n"),
        "m.yaml:10:18: services[0].canary.user_rules[0].users: must list at least one user id",
    );
    assert_err(
        &with("    fallback:\n      cooldown: 1s\n      statuses: []\n"),
        "m.yaml:9:17: services[0].fallback.statuses: must list at least one status (connect errors and timeouts count anyway)",
    );
    let text = format!("{BASE}  - name: two\n    hosts: [b.example, API.example]\n    old_host: b.example\n    old_backend: b:1\n    new_host: b\n    new_backend: b:2\n");
    assert_err(
        &text,
        "m.yaml:8:24: services[1].hosts[1]: host \"api.example\" is already routed by services[0]; a host belongs to one service",
    );
}

#[test]
fn ipv6_literal_hosts_load_and_wildcards_never_go_upstream() {
    let c = parse("m.yaml", &BASE.replace("old_host: api.example", "old_host: \"[2001:DB8:0::1]:8080\"")).unwrap();
    assert_eq!(c.services[0].hosts, vec![HostPattern("[2001:db8::1]".into())]);
    let c = parse("m.yaml", &BASE.replace("  - name: api\n", "  - name: api\n    hosts: [\"[::1]\", api.example]\n"))
        .unwrap();
    assert_eq!(c.services[0].hosts[0], HostPattern("[::1]".into()));
    assert_err(
        &BASE.replace("  - name: api\n", "  - name: api\n    hosts: [\"[::1\"]\n"),
        "m.yaml:3:13: services[0].hosts[0]: \"[::1\" is not an IPv6 literal; write it as [2001:db8::1] or [2001:db8::1]:8080",
    );
    assert_err(
        &BASE.replace("old_host: api.example", "old_host: '*.api.example'"),
        "m.yaml:3:15: services[0].old_host: \"*.api.example\" is sent upstream as the Host header, so it cannot be a wildcard; list wildcards in `hosts`",
    );
    assert_err(
        &BASE.replace("new_host: api.kong.example", "new_host: '*.kong.example'"),
        "m.yaml:5:15: services[0].new_host: \"*.kong.example\" is sent upstream as the Host header, so it cannot be a wildcard; list wildcards in `hosts`",
    );
}

#[test]
fn configmap_reads_only_yaml_keys() {
    let text = "kind: ConfigMap\ndata:\n  a.yaml: |\n    services: []\n  b.yml: |\n    nope\n";
    assert!(parse("m.yaml", text).unwrap().services.is_empty(), "a.yaml is the only *.yaml key");
    assert_err(
        "kind: ConfigMap\ndata:\n  b.yml: |\n    services: []\n",
        "m.yaml: data: the ConfigMap has no migration.yaml key (a *.yml key is not read: name it migration.yaml)",
    );
}

#[test]
fn anchors_aliases_and_deep_nesting_are_refused_at_their_place() {
    let bomb_items: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
    let bomb = format!("x: &a [{}]\ny: [{}]\nservices: []\n", bomb_items.join(","), vec!["*a"; 20_000].join(","));
    assert_err(&bomb, "m.yaml:1:4: anchors and aliases (&name, *name) are not allowed: the schema never needs them, and aliases can make a small file expand without bound");
    assert_err(
        &with("    canary: &c {}\n"),
        "m.yaml:7:13: anchors and aliases (&name, *name) are not allowed: the schema never needs them, and aliases can make a small file expand without bound",
    );
    let deep = format!("services: {}\n", "[".repeat(80_000));
    let e = err(&deep);
    assert_eq!(e.message, "collections are nested more than 32 deep; the schema needs far fewer");
    assert_eq!(e.location.map(|l| l.0), Some(1), "{e}");
    let deep_block =
        format!("services:\n{}", (0..40).map(|i| format!("{}- ", " ".repeat(i * 2))).collect::<Vec<_>>().join("\n"));
    assert_err(&deep_block, "m.yaml:33:63: collections are nested more than 32 deep; the schema needs far fewer");
    let cm = "kind: ConfigMap\ndata:\n  migration.yaml: |\n    services: &s []\n";
    assert_err(cm, "m.yaml:4:15: anchors and aliases (&name, *name) are not allowed: the schema never needs them, and aliases can make a small file expand without bound");
}

#[test]
fn messages_quote_only_a_short_escaped_prefix() {
    let shadow = "root:$6$saltsaltsalt$hashhashhashhashhashhashhashhashhashhash:19000:0:99999:7:::\n";
    let e = err(shadow).to_string();
    assert!(!e.contains("hashhash"), "{e}");
    let e = err("services: []\n\"evil\\nkey\": 1\n").to_string();
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn ramps_load_and_their_errors_are_located() {
    let ok = parse(
        "m.yaml",
        &with("    migration:\n      strategy: user\n      ramp:\n        steps: [1, 5, 12.5, 100]\n        every: 10m\n        start: 2026-11-30T09:00:00Z\n        gate: {min_requests: 200, max_error_rate: 1%, max_error_rate_vs_old: 0.005, max_p99: 800ms, max_p99_vs_old: 1.5}\n        on_failure: hold\n"),
    )
    .unwrap();
    let m = &ok.services[0].migration;
    assert_eq!(m.percentage, Percentage(100), "with a ramp, the percentage is its first step");
    let ramp = m.ramp.as_ref().unwrap();
    assert_eq!(
        (ramp.steps.as_slice(), ramp.every_ms, ramp.start_ms),
        (&[100, 500, 1250, 10000][..], 600_000, Some(1_796_029_200_000))
    );
    let gate = ramp.gate.as_ref().unwrap();
    assert_eq!(
        (gate.min_requests, gate.max_error_rate, gate.max_error_rate_vs_old, gate.max_p99_ms, gate.max_p99_vs_old),
        (200, Some(0.01), Some(0.005), Some(800), Some(1.5))
    );
    assert_eq!(ramp.on_failure, ramp::OnFailure::Hold);
    let bad = |ramp: &str| err(&with(&format!("    migration:\n      ramp: {ramp}\n"))).to_string();
    assert_eq!(
        bad("{steps: [10, 5], every: 1m}"),
        "m.yaml:8:26: services[0].migration.ramp.steps[1]: steps must increase strictly: 5 comes after 10"
    );
    assert_eq!(
        bad("{steps: [0, 5], every: 1m}"),
        "m.yaml:8:22: services[0].migration.ramp.steps[0]: a step must be from 0.01 to 100"
    );
    assert_eq!(
        bad("{steps: [], every: 1m}"),
        "m.yaml:8:21: services[0].migration.ramp.steps: must list at least one percentage"
    );
    assert_eq!(
        bad("{steps: [5], every: 31d}"),
        "m.yaml:8:33: services[0].migration.ramp.every: must be from 100ms to 30d"
    );
    assert_eq!(
        bad("{steps: [5.001], every: 1m}"),
        "m.yaml:8:22: services[0].migration.ramp.steps[0]: at most two decimals are allowed, got 5.001"
    );
    assert_eq!(
        bad("{steps: [5], every: 1m, start: tomorrow}"),
        "m.yaml:8:44: services[0].migration.ramp.start: must be a time such as 2026-11-30T09:00:00Z, got \"tomorrow\""
    );
    assert_eq!(bad("{steps: [5], every: 1m, gate: {max_error_rate: 2}}"), "m.yaml:8:60: services[0].migration.ramp.gate.max_error_rate: must be a share from 0 to 1 (or 0% to 100%), got 2");
    assert_eq!(
        bad("{steps: [5], every: 1m, on_failure: retry}"),
        "m.yaml:8:49: services[0].migration.ramp.on_failure: must be rollback or hold, got \"retry\""
    );
    assert_eq!(
        err(&with("    migration:\n      percentage: 20\n      ramp: {steps: [5, 100], every: 1m}\n")).to_string(),
        "m.yaml:8:19: services[0].migration.percentage: with a ramp, percentage is left out or equal to the first step (5), got 20"
    );
    // every: up to 30 days; each gate field names what it expected of a wrong type;
    // a ratio is above 0 and finite.
    assert!(parse("m.yaml", &with("    migration:\n      ramp: {steps: [5], every: 30d}\n")).is_ok());
    for (ramp, message) in [
        ("{steps: [5], every: 31d}", "services[0].migration.ramp.every: must be from 100ms to 30d"),
        (
            "{steps: [5], every: [1]}",
            "services[0].migration.ramp.every: wrong type: sequence, expected a time such as 500ms, 30s, 10m, 2h or 1d",
        ),
        (
            "{steps: [5], every: 1m, gate: {max_error_rate: [1]}}",
            "services[0].migration.ramp.gate.max_error_rate: wrong type: sequence, expected a share such as 1% or 0.01",
        ),
        (
            "{steps: [5], every: 1m, gate: {max_p99_vs_old: [1]}}",
            "services[0].migration.ramp.gate.max_p99_vs_old: wrong type: sequence, expected a ratio such as 1.5",
        ),
        (
            "{steps: [5], every: 1m, gate: {max_p99_vs_old: 0}}",
            "services[0].migration.ramp.gate.max_p99_vs_old: must be a ratio above 0, got 0",
        ),
        (
            "{steps: [5], every: 1m, gate: {max_p99_vs_old: .inf}}",
            "services[0].migration.ramp.gate.max_p99_vs_old: must be a ratio above 0, got inf",
        ),
    ] {
        let text = bad(ramp);
        assert!(text.ends_with(message), "{ramp}: {text}");
    }
    assert!(parse(
        "m.yaml",
        &with("    migration:\n      ramp: {steps: [5], every: 1m, gate: {max_p99_vs_old: 0.5}}\n")
    )
    .is_ok());
    assert!(bad("{steps: [5], every: 1m, start: [1]}").ends_with(
        "services[0].migration.ramp.start: wrong type: sequence, expected a time such as 2026-11-30T09:00:00Z"
    ));
    let explicit =
        parse("m.yaml", &with("    migration:\n      ramp: {steps: [5], every: 1m, on_failure: rollback}\n")).unwrap();
    assert_eq!(explicit.services[0].migration.ramp.as_ref().unwrap().on_failure, ramp::OnFailure::Rollback);
    assert!(bad("{steps: [5], every: 1m, on_failure: [1]}")
        .ends_with("services[0].migration.ramp.on_failure: wrong type: sequence, expected rollback or hold"));
    // Equal to the first step: the same as leaving it out.
    let same =
        parse("m.yaml", &with("    migration:\n      percentage: 5\n      ramp: {steps: [5, 100], every: 1m}\n"))
            .unwrap();
    assert_eq!(same.services[0].migration.percentage, Percentage(500));
}

/// The duration fields (`ramp.every`, `ramp.gate.max_p99`, `fallback.cooldown`)
/// read times with one parser: each accepts and refuses the same texts, `d`
/// included, and only their ranges (100ms to 30d, none, 100ms to 24h) differ.
#[test]
fn duration_fields_read_the_same_times() {
    let every = |t: &str| parse("m.yaml", &with(&format!("    migration:\n      ramp: {{steps: [5], every: {t}}}\n")));
    let max_p99 = |t: &str| {
        parse(
            "m.yaml",
            &with(&format!("    migration:\n      ramp: {{steps: [5], every: 1m, gate: {{max_p99: {t}}}}}\n")),
        )
    };
    let cooldown = |t: &str| parse("m.yaml", &with(&format!("    fallback: {{cooldown: {t}}}\n")));
    for (t, ms) in
        [("100ms", 100), ("30", 30_000), ("\"45s\"", 45_000), ("2m", 120_000), ("1h", 3_600_000), ("1d", 86_400_000)]
    {
        let ramp = every(t).unwrap().services[0].migration.ramp.clone().unwrap();
        assert_eq!(ramp.every_ms, ms, "every: {t}");
        let gate = max_p99(t).unwrap().services[0].migration.ramp.clone().unwrap().gate.unwrap();
        assert_eq!(gate.max_p99_ms, Some(ms), "max_p99: {t}");
        assert_eq!(cooldown(t).unwrap().services[0].fallback.as_ref().unwrap().cooldown_ms, ms, "cooldown: {t}");
    }
    for t in ["soon", "1.5s", "1w", "1D", "-1s", "10 m", "1ms2"] {
        let ramp_units = format!("must be a time such as 500ms, 30s, 10m, 2h or 1d, got {t:?}");
        assert_eq!(every(t).unwrap_err().message, ramp_units);
        assert_eq!(max_p99(t).unwrap_err().message, ramp_units);
        assert_eq!(cooldown(t).unwrap_err().message, format!("must be a time such as 30s, 500ms or 2m, got {t:?}"));
    }
    // Each field keeps its range.
    assert_eq!(every("31d").unwrap_err().message, "must be from 100ms to 30d");
    assert_eq!(cooldown("2d").unwrap_err().message, "must be from 100ms to 24h, got \"2d\"");
    assert_eq!(
        max_p99("31d").unwrap().services[0].migration.ramp.clone().unwrap().gate.unwrap().max_p99_ms,
        Some(31 * 86_400_000)
    );
}

const STICKY: &str = "    migration:\n      strategy: user\n      user_key: cookie:mig_uid\n";

#[test]
fn sticky_defaults_and_values() {
    use sticky::{SameSite, Secure, Sticky};
    let sticky =
        |extra: &str| parse("m.yaml", &with(&format!("{STICKY}{extra}"))).unwrap().services[0].migration.sticky.clone();
    assert_eq!(sticky(""), None);
    assert_eq!(
        sticky("      sticky: {}\n"),
        Some(Sticky {
            max_age_s: 30 * 86_400,
            path: "/".into(),
            domain: None,
            secure: Secure::Auto,
            same_site: SameSite::Lax,
            http_only: true
        })
    );
    assert_eq!(
        sticky("      sticky: {max_age: 0, path: /shop, domain: .Example.COM, secure: true, same_site: None, http_only: false}\n"),
        Some(Sticky {
            max_age_s: 0,
            path: "/shop".into(),
            domain: Some("example.com".into()),
            secure: Secure::Always,
            same_site: SameSite::None,
            http_only: false
        })
    );
    for (text, seconds) in [("12h", 43_200), ("400d", 34_560_000), ("90", 90), ("\"1m\"", 60)] {
        assert_eq!(sticky(&format!("      sticky: {{max_age: {text}}}\n")).unwrap().max_age_s, seconds, "{text}");
    }
    assert_eq!(sticky("      sticky: {secure: auto}\n").unwrap().secure, Secure::Auto);
    assert_eq!(sticky("      sticky: {secure: false}\n").unwrap().secure, Secure::Never);
    // Quoted, as a ConfigMap templated by a tool often writes them.
    assert_eq!(sticky("      sticky: {secure: \"false\"}\n").unwrap().secure, Secure::Never);
    assert_eq!(sticky("      sticky: {secure: \"true\"}\n").unwrap().secure, Secure::Always);
    for (text, same_site) in
        [("lax", SameSite::Lax), ("Strict", SameSite::Strict), ("none, secure: true", SameSite::None)]
    {
        assert_eq!(sticky(&format!("      sticky: {{same_site: {text}}}\n")).unwrap().same_site, same_site, "{text}");
    }
}

#[test]
fn sticky_mistakes_are_located() {
    let sticky = |migration: &str, extra: &str| with(&format!("{migration}      sticky: {{{extra}}}\n"));
    assert_err(
        &sticky("    migration:\n      strategy: user\n", ""),
        "m.yaml:9:15: services[0].migration.sticky: needs user_key: cookie:NAME (the minted id goes back as that cookie), got user_key: header:x-user-id",
    );
    assert_err(
        &sticky("    migration:\n      user_key: cookie:u\n", ""),
        "m.yaml:9:15: services[0].migration.sticky: needs strategy: user (only the user hash keeps an id on one side; weight and ip ignore it)",
    );
    assert_err(
        &sticky("    migration:\n      strategy: user\n      user_key: cookie:a(b\n", ""),
        "m.yaml:9:17: services[0].migration.user_key: sticky sends cookie \"a(b\" back in Set-Cookie, and '(' cannot appear in a cookie's name",
    );
    assert_err(
        &sticky(STICKY, "same_site: none"),
        "m.yaml:10:27: services[0].migration.sticky.same_site: none needs secure: true (browsers refuse a SameSite=None cookie without Secure)",
    );
    assert_err(
        &sticky(STICKY, "same_site: none, secure: auto"),
        "m.yaml:10:27: services[0].migration.sticky.same_site: none needs secure: true (browsers refuse a SameSite=None cookie without Secure)",
    );
    assert_err(
        &sticky(STICKY, "max_age: 500ms"),
        "m.yaml:10:25: services[0].migration.sticky.max_age: must be whole seconds (a cookie's Max-Age is), got \"500ms\"",
    );
    assert_err(
        &sticky(STICKY, "max_age: 401d"),
        "m.yaml:10:25: services[0].migration.sticky.max_age: must be at most 400d (browsers cap a cookie's lifetime there), got \"401d\"",
    );
    assert_err(
        &sticky(STICKY, "max_age: soon"),
        "m.yaml:10:25: services[0].migration.sticky.max_age: must be a time such as 30d, 12h or 0, got \"soon\"",
    );
    assert_err(
        &sticky(STICKY, "path: shop"),
        "m.yaml:10:22: services[0].migration.sticky.path: must start with '/', got \"shop\"",
    );
    assert_err(
        &sticky(STICKY, "path: \"/a;b\""),
        "m.yaml:10:22: services[0].migration.sticky.path: \"/a;b\": ';' cannot appear in a cookie's path",
    );
    assert_err(
        &sticky(STICKY, "domain: \"a b\""),
        "m.yaml:10:24: services[0].migration.sticky.domain: \"a b\" has ' '; a cookie's domain is a host name such as example.com",
    );
    for domain in ["example..com", "example.com.", "..example.com"] {
        assert_err(
            &sticky(STICKY, &format!("domain: \"{domain}\"")),
            &format!(
                "m.yaml:10:24: services[0].migration.sticky.domain: \"{domain}\" is not a host name such as example.com"
            ),
        );
    }
    assert_err(
        &sticky(STICKY, "secure: maybe"),
        "m.yaml:10:24: services[0].migration.sticky.secure: must be auto, true or false, got \"maybe\"",
    );
    assert_err(
        &sticky(STICKY, "same_site: loose"),
        "m.yaml:10:27: services[0].migration.sticky.same_site: must be lax, strict or none, got \"loose\"",
    );
    assert_err(
        &sticky(STICKY, "same_site: 1"),
        "m.yaml:10:27: services[0].migration.sticky.same_site: wrong type: integer `1`, expected lax, strict or none",
    );
    assert_err(
        &sticky(STICKY, "http_only: yes"),
        "m.yaml:10:27: services[0].migration.sticky.http_only: wrong type: string \"yes\", expected a boolean",
    );
    assert_err(
        &sticky(STICKY, "maxage: 1d"),
        "m.yaml:10:16: services[0].migration.sticky: unknown field `maxage`, expected one of `max_age`, `path`, `domain`, `secure`, `same_site`, `http_only`",
    );
}

#[test]
fn drain_loads_and_its_errors_are_located() {
    let config = parse("m.yaml", &with("    migration:\n      drain: {rate: 20/s, after: 2s}\n")).unwrap();
    let drain = config.services[0].migration.drain.expect("drain");
    assert_eq!((drain.interval_us, drain.after_ms), (50_000, 2_000));
    let config = parse("m.yaml", &with("    migration:\n      drain: {rate: 30/m}\n")).unwrap();
    let drain = config.services[0].migration.drain.expect("drain");
    assert_eq!((drain.interval_us, drain.after_ms), (2_000_000, 5_000), "after defaults to 5s");
    assert_eq!(drain.rate_text(), "30/m", "as the YAML writes it (the CLI's diff shows it)");
    // The fastest rate either way: 10000/s is 600000/m.
    let config = parse("m.yaml", &with("    migration:\n      drain: {rate: 600000/m}\n")).unwrap();
    let drain = config.services[0].migration.drain.expect("drain");
    assert_eq!((drain.interval_us, drain.rate_text()), (100, "600000/m".to_string()));
    assert_err(
        &with("    migration:\n      drain:\n        rate: 600001/m\n"),
        "m.yaml:9:15: services[0].migration.drain.rate: must be from 1/m to 10000/s, got \"600001/m\"",
    );
    assert_err(
        &with("    migration:\n      drain: {after: 2s}\n"),
        "m.yaml:8:14: services[0].migration.drain: missing field `rate` (how many misplaced connections to close per second, e.g. 20/s)",
    );
    assert_err(
        &with("    migration:\n      drain:\n        rate: 20/h\n"),
        "m.yaml:9:15: services[0].migration.drain.rate: must be a rate such as 20/s or 30/m, got \"20/h\"",
    );
    assert_err(
        &with("    migration:\n      drain:\n        rate: 20000/s\n"),
        "m.yaml:9:15: services[0].migration.drain.rate: must be from 1/m to 10000/s, got \"20000/s\"",
    );
    assert_err(
        &with("    migration:\n      drain:\n        rate: 1/s\n        after: 50ms\n"),
        "m.yaml:10:16: services[0].migration.drain.after: must be from 100ms to 24h, got \"50ms\"",
    );
    assert_err(
        &with("    migration:\n      drain:\n        rate: 1/s\n        burst: 5\n"),
        "m.yaml:10:9: services[0].migration.drain: unknown field `burst`, expected `rate` or `after`",
    );
}
