//! Edges that the decision tests do not reach, each found by a mutant that
//! survived the other suites (`make mutants`): reading the file, the content
//! hash, the breaker policy's statuses, lengths at the limits of the engine's
//! fast paths. Expected values come from the specifications (FNV-1a, HTTP),
//! never from the engine.

use std::io::Write;
use std::net::IpAddr;

use migration_engine::cidr::CidrTable;
use migration_engine::{
    content_hash, decide, load_file, load_str, read_source, source_from_bytes, Breakers, NoBreakers, OwnedRequest,
    Rule, ServiceChoice, Target,
};

fn service(body: &str) -> String {
    format!(
        "services:\n  - name: api\n    hosts: ['*.example.com', api.example]\n    old_host: api.example\n    \
         old_backend: old:80\n    new_host: api.example\n    new_backend: new:80\n{body}"
    )
}

fn target_of(config: &migration_engine::CompiledConfig, request: &OwnedRequest) -> (Option<Target>, Rule) {
    let d = decide(config, ServiceChoice::Auto, request, &mut || 0);
    (d.target, d.rule)
}

#[test]
fn read_source_gives_the_file_or_a_located_error() {
    let dir = std::env::temp_dir().join(format!("migration-engine-edges-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.yaml");
    let text = service("    migration: {percentage: 100}\n");
    std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
    let max = migration_engine::source::DEFAULT_MAX_SIZE;
    assert_eq!(read_source(&path, max).unwrap(), text);
    assert!(read_source(&path, text.len() as u64 - 1).unwrap_err().message.contains("more than max_size"));
    assert_eq!(read_source(&path, text.len() as u64).unwrap(), text);
    let config = load_file(&path).unwrap();
    assert_eq!(target_of(&config, &OwnedRequest::new("api.example")), (Some(Target::New), Rule::Weight));

    let missing = dir.join("missing.yaml");
    let e = read_source(&missing, max).unwrap_err();
    assert_eq!(e.file, missing.display().to_string());
    assert!(e.message.starts_with("cannot read the file: "), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bytes_that_are_not_utf8_are_located_by_line_and_column() {
    assert_eq!(source_from_bytes("f", b"a: 1\n".to_vec()).unwrap(), "a: 1\n");
    assert_eq!(source_from_bytes("f", Vec::new()).unwrap(), "");
    for (bytes, line, column) in [
        (&b"\xff"[..], 1, 1),
        (b"ab\xff", 1, 3),
        (b"a\nbc\n\n  x\xc3(", 4, 4),
        (b"\n\n\n\xe2\x82", 4, 1),
        (b"caf\xc3\xa9\n\xe9", 2, 1),
    ] {
        let e = source_from_bytes("m.yaml", bytes.to_vec()).unwrap_err();
        assert_eq!(e.to_string(), format!("m.yaml:{line}:{column}: the file is not valid UTF-8"), "{bytes:?}");
    }
}

/// FNV-1a 64, test vectors of its specification (draft-eastlake-fnv).
#[test]
fn content_hash_is_fnv1a_64() {
    assert_eq!(content_hash(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(content_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(content_hash(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn cidr_table_counts_its_networks() {
    let empty = CidrTable::new(std::iter::empty());
    assert_eq!((empty.len(), empty.is_empty()), (0, true));
    let nets = ["10.0.0.0/8", "2001:db8::/32", "10.0.0.0/8"].map(|n| n.parse().unwrap());
    let table = CidrTable::new(nets.into_iter().zip(0..));
    assert_eq!((table.len(), table.is_empty()), (3, false));
    assert!(table.contains("10.1.2.3".parse::<IpAddr>().unwrap()));
    assert!(!table.contains("11.0.0.0".parse::<IpAddr>().unwrap()));
}

/// `statuses` are upstream statuses, 100 to 599; anything else never counts.
#[test]
fn fallback_statuses_are_exactly_those_listed() {
    let config = load_str("m.yaml", &service("    fallback: {statuses: [100, 163, 164, 500, 502, 599]}\n")).unwrap();
    let policy = config.services[0].fallback.as_ref().unwrap();
    for status in [100, 163, 164, 500, 502, 599] {
        assert!(policy.is_failure(status), "{status}");
    }
    for status in
        [0, 99, 101, 162, 165, 200, 227, 228, 291, 292, 355, 356, 419, 420, 483, 484, 501, 503, 598, 600, 612, 65535]
    {
        assert!(!policy.is_failure(status), "{status}");
    }
    let default = load_str("m.yaml", &service("    fallback: {}\n")).unwrap();
    let policy = default.services[0].fallback.as_ref().unwrap();
    let failing: Vec<u16> = (0..=700).filter(|&s| policy.is_failure(s)).collect();
    assert_eq!(failing, [502, 503, 504]);
}

/// The breakers of callers that keep none: none at all, and a clock that is
/// never read.
#[test]
fn no_breakers_has_no_breaker_and_a_still_clock() {
    assert!(NoBreakers.breaker(0).is_none());
    assert!(NoBreakers.breaker(u32::MAX).is_none());
    assert_eq!(NoBreakers.now_ms(), 0);
}

/// Header names up to and past 64 bytes: the engine skips names whose length no
/// rule has, through a 64-bit mask of lengths.
#[test]
fn header_names_of_every_length_around_64_bytes() {
    for len in [1, 2, 62, 63, 64, 65, 100] {
        let name = format!("x{}", "a".repeat(len - 1));
        let other = format!("y{}", "a".repeat(len - 1));
        let c = load_str(
            "m.yaml",
            &service(&format!(
                "    canary:\n      header_rules:\n        - {{header: {name}, value: v, target: new}}\n"
            )),
        )
        .unwrap();
        let hit = OwnedRequest::new("api.example").header(&other, "v").header(&name.to_uppercase(), "v");
        assert_eq!(target_of(&c, &hit), (Some(Target::New), Rule::Header), "{len} bytes");
        let miss = OwnedRequest::new("api.example").header(&other, "v");
        assert_eq!(target_of(&c, &miss), (Some(Target::Old), Rule::Weight), "{len} bytes");
    }
}

/// A Host of up to 255 bytes is matched (DNS names are at most 253, plus a port
/// or a final dot); a longer one matches nothing, and does not panic.
#[test]
fn host_lengths_at_the_limit() {
    let c = load_str("m.yaml", &service("")).unwrap();
    let host = |len: usize| format!("{}.example.com", "a".repeat(len - ".example.com".len()));
    for len in [13, 254, 255] {
        assert_eq!(
            decide(&c, ServiceChoice::Auto, &OwnedRequest::new(&host(len)), &mut || 0).service,
            Some(0),
            "{len} bytes"
        );
    }
    for len in [256, 300, 4096] {
        assert_eq!(decide(&c, ServiceChoice::Auto, &OwnedRequest::new(&host(len)), &mut || 0).service, None);
    }
    assert_eq!(decide(&c, ServiceChoice::Auto, &OwnedRequest::new(""), &mut || 0).service, None);
    assert_eq!(decide(&c, ServiceChoice::Auto, &OwnedRequest::new(":80"), &mut || 0).service, None);
}

const MANIFEST_HEAD: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: m\ndata:\n  migration.yaml: ";

/// A ConfigMap's literal block (`|`, `|-` or `|+`) maps line for line onto the
/// manifest, so errors point into the manifest, syntax errors included; another
/// style (folded `>`, an explicit indentation) is located in the embedded
/// document, named as such.
#[test]
fn configmap_errors_are_located_in_the_manifest_for_every_literal_block_style() {
    let invalid = "\n    services:\n      - name: a\n        old_host: a\n        old_backend: a:1\n        new_host: b\n        \
                   new_backend: b:2\n        migration:\n          percentage: 120\n";
    let syntax = "\n    services:\n      - name: a: b\n";
    for style in ["|", "|-", "|+"] {
        let e = load_str("m.yaml", &format!("{MANIFEST_HEAD}{style}{invalid}")).unwrap_err();
        assert_eq!(e.to_string(), "m.yaml:14:23: services[0].migration.percentage: must be between 0 and 100, got 120");
        let e = load_str("m.yaml", &format!("{MANIFEST_HEAD}{style}{syntax}")).unwrap_err();
        assert_eq!(e.to_string(), "m.yaml:8:16: mapping values are not allowed in this context", "{style}");
    }
    for style in [">", "|2"] {
        let e = load_str("m.yaml", &format!("{MANIFEST_HEAD}{style}{syntax}")).unwrap_err();
        assert_eq!(e.to_string(), "m.yaml (data.migration.yaml):2:12: mapping values are not allowed in this context");
    }
}

/// What serde says a value should have been, for each kind of mapping.
#[test]
fn wrong_types_say_what_was_expected() {
    let base = "services:\n  - name: api\n    old_host: a.example\n    old_backend: o:80\n    new_host: a.example\n    new_backend: n:80\n";
    for (doc, message) in [
        (
            format!("{base}    canary: {{header_rules: [5]}}\n"),
            "m.yaml:7:29: services[0].canary.header_rules[0]: wrong type: integer `5`, expected a mapping",
        ),
        (
            format!("{base}    fallback: 5\n"),
            "m.yaml:7:15: services[0].fallback: wrong type: integer `5`, expected a mapping",
        ),
        ("services: 5\n".into(), "m.yaml:1:11: services: wrong type: integer `5`, expected a list of services"),
        ("services: [5]\n".into(), "m.yaml:1:12: services[0]: wrong type: integer `5`, expected a service mapping"),
        (
            "version: [1]\nservices: []\n".into(),
            "m.yaml:1:10: version: wrong type: sequence, expected a version string",
        ),
        ("version: \"\"\nservices: []\n".into(), "m.yaml:1:10: version: must be a non-empty single-line string"),
        ("version: \"a\\nb\"\nservices: []\n".into(), "m.yaml:1:10: version: must be a non-empty single-line string"),
    ] {
        assert_eq!(load_str("m.yaml", &doc).unwrap_err().to_string(), message);
    }
    assert_eq!(load_str("m.yaml", "version: v1.2\nservices: []\n").unwrap().version, "v1.2");
}

/// serde's messages: a path is split off only when there is one, its wording
/// is ours ("wrong type"), and what it quotes is one line.
#[test]
fn serde_messages_without_a_path_and_with_control_characters() {
    let e = load_str("m.yaml", "5\n").unwrap_err();
    assert_eq!((e.path.as_str(), e.location), ("", Some((1, 1))));
    assert!(e.message.starts_with("wrong type: integer `5`, expected "), "{e}");
    let e = load_str("m.yaml", "\"ser\\u0007vices\": []\n").unwrap_err();
    // Control characters are escaped when the error is printed (error.log gets one line).
    assert!(e.to_string().starts_with("m.yaml:1:1: unknown field `ser\\u{7}vices`, expected "), "{e}");
    let e = load_str("m.yaml", "services: []\n\"a\\tb\\nc\": 1\n").unwrap_err();
    assert!(e.to_string().starts_with("m.yaml:2:1: unknown field `a\\tb\\nc`"), "{e}");
}

/// Quoted parts of messages are cut at 24 characters, never inside an escape,
/// and a backslash escapes only inside double quotes.
#[test]
fn quoted_parts_of_messages_are_cut_whole() {
    for (doc, message) in [
        ("services: []\n\"a\\\\\": 1\n", "m.yaml:2:1: unknown field `a\\`, expected `version` or `services`"),
        (
            "services: []\n\"abcdefghijklmnopqrstuvwx\": 1\n",
            "m.yaml:2:1: unknown field `abcdefghijklmnopqrstuvwx`, expected `version` or `services`",
        ),
        (
            "services: []\n\"abcdefghijklmnopqrstuvwxy\": 1\n",
            "m.yaml:2:1: unknown field `abcdefghijklmnopqrstuvwx…`, expected `version` or `services`",
        ),
        (
            "services:\n  - name: \"xxxxxxxxxxxxxxxxxxxxxxx\\nb\"\n",
            "m.yaml:2:11: services[0].name: \"xxxxxxxxxxxxxxxxxxxxxxx…\" has '\\n'; a service name is made of A-Z a-z 0-9 . _ -",
        ),
        (
            "services:\n  - name: \"xxxxxxxxxxxxxxxxxxxxxx\\\\b\"\n",
            "m.yaml:2:11: services[0].name: \"xxxxxxxxxxxxxxxxxxxxxx\\\\…\" has '\\\\'; a service name is made of A-Z a-z 0-9 . _ -",
        ),
    ] {
        assert_eq!(load_str("m.yaml", doc).unwrap_err().to_string(), message);
    }
}

/// An escaped quote inside a double-quoted excerpt does not end it.
#[test]
fn an_escaped_quote_does_not_end_an_excerpt() {
    let doc = format!("services:\n  - name: 'a\"{}'\n", "b".repeat(30));
    let e = load_str("m.yaml", &doc).unwrap_err().to_string();
    assert!(e.starts_with(r#"m.yaml:2:11: services[0].name: "a\"bbbbbbbbbbbbbbbbbbbbb…" has '"'"#), "{e}");
}

/// A second YAML document is refused as such, whatever it holds (the first
/// pass reads only the first); an explicit end of the first is fine.
#[test]
fn a_second_document_is_refused_as_a_second_document() {
    for doc in ["services: []\n---\nservices: []\n", "services: []\n---\na: &x 1\n"] {
        assert_eq!(
            load_str("m.yaml", doc).unwrap_err().to_string(),
            "m.yaml: deserializing from YAML containing more than one document is not supported"
        );
    }
    assert!(load_str("m.yaml", "services: []\n...\n").is_ok());
}

/// Cross-field errors are located at the field, in any item of any list.
#[test]
fn duplicates_are_located_at_the_repeating_field() {
    let svc = |n: &str, h: &str| {
        format!(
            "  - name: {n}\n    hosts: [{h}]\n    old_host: {n}.example\n    old_backend: o:80\n    new_host: {n}.example\n    \
             new_backend: n:80\n"
        )
    };
    let doc = format!("services:\n{}{}{}", svc("a", "a.example"), svc("b", "b.example"), svc("a", "c.example"));
    assert_eq!(
        load_str("m.yaml", &doc).unwrap_err().to_string(),
        "m.yaml:14:11: services[2].name: duplicate service name \"a\" (first used by services[0])"
    );
    let doc = format!("services:\n{}{}", svc("a", "a.example"), svc("b", "b.example, a.example"));
    assert_eq!(
        load_str("m.yaml", &doc).unwrap_err().to_string(),
        "m.yaml:9:24: services[1].hosts[1]: host \"a.example\" is already routed by services[0]; a host belongs to one service"
    );
}

/// A ConfigMap is told by its top-level `kind`, wherever it stands; a `kind`
/// inside a key that is a collection, or nested under `kind`, is no kind.
#[test]
fn a_configmap_is_told_by_its_top_level_kind_only() {
    for doc in [
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: m}\ndata:\n  migration.yaml: |\n    services: []\n",
        "kind: ConfigMap\napiVersion: v1\nmetadata: {name: m}\ndata:\n  migration.yaml: |\n    services: []\n",
    ] {
        assert!(load_str("m.yaml", doc).unwrap().services.is_empty(), "{doc}");
    }
    assert_eq!(
        load_str("m.yaml", "? [{kind: x}]\n: 1\nkind: ConfigMap\n").unwrap_err().to_string(),
        "m.yaml: data: a ConfigMap needs a `data` mapping holding migration.yaml"
    );
    // A top-level key that is itself a mapping holding kind: ConfigMap.
    assert_eq!(
        load_str("m.yaml", "? {kind: ConfigMap}\n: 1\n").unwrap_err().to_string(),
        "m.yaml:1:3: wrong type: map, expected field identifier"
    );
    for doc in ["kind:\n  ? [ConfigMap]\n  : 1\nservices: []\n", "kind: {? ConfigMap : 1}\n"] {
        assert_eq!(
            load_str("m.yaml", doc).unwrap_err().to_string(),
            "m.yaml:1:1: unknown field `kind`, expected `version` or `services`",
            "{doc}"
        );
    }
}

/// What saphyr refuses and libyaml would take (a tab inside a flow sequence) is
/// reported with saphyr's words, at saphyr's 1-based position.
#[test]
fn yaml_only_the_first_pass_refuses_is_located() {
    let e = load_str("m.yaml", "services: [\n\t]\n").unwrap_err();
    assert_eq!(e.location, Some((2, 2)));
    assert!(e.to_string().starts_with("m.yaml:2:2: not valid YAML: tabs"), "{e}");
}

/// A YAML parser's message is quoted whole: it holds no value of the file, and
/// cut to an excerpt it no longer says what is wrong.
#[test]
fn a_parser_message_is_quoted_whole() {
    let e = load_str("m.yaml", "version:\tx\nservices: []\n").unwrap_err();
    assert_eq!(e.to_string(), "m.yaml:1:10: not valid YAML: ':' must be followed by a valid YAML whitespace");
}

/// A host may repeat within its own service (in any case); only another
/// service may not claim it.
#[test]
fn a_service_may_list_its_own_host_twice() {
    let doc =
        "services:\n  - name: api\n    hosts: [api.example, API.example, api.example]\n    old_host: a.example\n    \
               old_backend: o:80\n    new_host: a.example\n    new_backend: n:80\n";
    let c = load_str("m.yaml", doc).unwrap();
    assert_eq!(decide(&c, ServiceChoice::Auto, &OwnedRequest::new("api.example"), &mut || 0).service, Some(0));
}

/// An IPv6 literal Host, as nginx keeps it ("[2001:db8::1]"), with or without
/// a port.
#[test]
fn ipv6_literal_hosts_with_and_without_a_port() {
    let doc =
        "services:\n  - name: api\n    hosts: ['[2001:db8::1]']\n    old_host: a.example\n    old_backend: o:80\n    \
               new_host: a.example\n    new_backend: n:80\n";
    let c = load_str("m.yaml", doc).unwrap();
    for host in ["[2001:db8::1]", "[2001:db8::1]:8080", "[2001:DB8::1]:443"] {
        assert_eq!(decide(&c, ServiceChoice::Auto, &OwnedRequest::new(host), &mut || 0).service, Some(0), "{host}");
    }
    for host in ["[2001:db8::2]", "[2001:db8::1", "2001:db8::1"] {
        assert_eq!(decide(&c, ServiceChoice::Auto, &OwnedRequest::new(host), &mut || 0).service, None, "{host}");
    }
}

/// `nginx -t`'s shadowing warning for a value after a `values:` list names
/// only values the list holds.
#[test]
fn a_value_after_a_values_list_is_shadowed_only_when_listed() {
    let doc = |second: &str| {
        format!(
            "services:\n  - name: api\n    old_host: a.example\n    old_backend: o:80\n    new_host: a.example\n    \
             new_backend: n:80\n    canary:\n      header_rules:\n        - {{header: X-A, values: [a, b], target: new}}\n        \
             - {{header: X-A, value: {second}, target: old}}\n"
        )
    };
    let (_, warnings) = migration_engine::load_str_checked("m.yaml", &doc("c")).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let (_, warnings) = migration_engine::load_str_checked("m.yaml", &doc("b")).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].to_string().contains("never matches"), "{}", warnings[0]);
}

/// The values of a service at the edges of what they accept: ports (empty, 5
/// and 6 digits, 0, 65535, 65536, letters) in hosts, IPv6 literals and
/// backends; each character a host or a backend refuses; -0 as a percentage;
/// what a wrong type of each fallback field was expected to be.
#[test]
fn service_values_at_their_edges() {
    let doc = |hosts: &str, old_host: &str, backend: &str, extra: &str| {
        format!(
            "services:\n  - name: api\n    hosts: [{hosts}]\n    old_host: {old_host}\n    old_backend: {backend}\n    \
             new_host: n.example\n    new_backend: n:80\n{extra}"
        )
    };
    let ok = |hosts: &str, old_host: &str, backend: &str, extra: &str| {
        let c = load_str("m.yaml", &doc(hosts, old_host, backend, extra)).unwrap_or_else(|e| panic!("{e}"));
        (c.services[0].old.backend.clone(), c.services[0].old.scheme)
    };
    let err = |hosts: &str, old_host: &str, backend: &str, extra: &str| {
        load_str("m.yaml", &doc(hosts, old_host, backend, extra)).unwrap_err().to_string()
    };
    let host = "m.yaml:3:13: services[0].hosts[0]: ";
    for (h, why) in [
        ("'[::1]:'", r#""[::1]:": bad port """#),
        ("'[::1]:123456'", r#""[::1]:123456": bad port "123456""#),
        ("'[::1]:8a'", r#""[::1]:8a": bad port "8a""#),
        ("'a.example:'", r#""a.example:": bad port """#),
        ("'a.example:123456'", r#""a.example:123456": bad port "123456""#),
        ("'a.example:8x'", r#""a.example:8x": bad port "8x""#),
    ] {
        assert_eq!(err(h, "a", "o:80", ""), format!("{host}{why}"));
    }
    ok("'[::1]:12345', 'a.example:12345'", "a", "o:80", "");
    let old_host = "is not a host name (spaces, control characters and '/' are not allowed)";
    for (h, shown) in
        [("'a b'", r#""a b""#), ("\"a\\x7f\"", r#""a\u{7f}""#), ("a/b", r#""a/b""#), ("\"a\\tb\"", r#""a\tb""#)]
    {
        assert_eq!(err("a.example", h, "o:80", ""), format!("m.yaml:4:15: services[0].old_host: {shown} {old_host}"));
    }
    let backend = "m.yaml:5:18: services[0].old_backend: ";
    for (b, why) in [
        ("'a b:80'", r#""a b:80" has ' '"#),
        ("\"a\\x01:80\"", r#""a\u{1}:80" has '\u{1}'"#),
        ("a/b", r#""a/b" has '/'"#),
        ("'a?b'", r#""a?b" has '?'"#),
        ("'a#b'", r##""a#b" has '#'"##),
        ("'a$b'", r#""a$b" has '$'"#),
    ] {
        assert_eq!(
            err("a.example", "a", b, ""),
            format!("{backend}{why}; expected host:port, scheme://host:port or an upstream name")
        );
    }
    for (b, port) in [("'a:'", ""), ("'a:x'", "x"), ("'a:0'", "0"), ("'a:65536'", "65536")] {
        let shown = b.trim_matches('\'');
        assert_eq!(err("a.example", "a", b, ""), format!("{backend}\"{shown}\": bad port \"{port}\""));
    }
    assert_eq!(ok("a.example", "a", "'a:65535'", ""), ("a:65535".into(), "http"));
    assert_eq!(ok("a.example", "a", "'[::1]'", ""), ("[::1]".into(), "http"));
    assert_eq!(ok("a.example", "a", "'[::1]:443'", ""), ("[::1]:443".into(), "https"));
    // An IPv6 literal without "::": its last colon is inside the brackets.
    assert_eq!(ok("a.example", "a", "'[2001:db8:0:0:0:0:0:1]'", ""), ("[2001:db8:0:0:0:0:0:1]".into(), "http"));
    assert_eq!(ok("a.example", "a", "o:80", "    migration: {percentage: -0}\n"), ("o:80".into(), "http"));
    assert_eq!(
        err("a.example", "a", "o:80", "    migration: {percentage: -1}\n"),
        "m.yaml:8:29: services[0].migration.percentage: must be between 0 and 100, got -1"
    );
    for (extra, message) in [
        (
            "    canary: {header_rules: [{header: X, pattern: '(', target: new}]}\n",
            "m.yaml:8:50: services[0].canary.header_rules[0].pattern: bad regex: regex parse error:; (; ^; error: unclosed group",
        ),
        (
            "    fallback: {failures: x}\n",
            "m.yaml:8:26: services[0].fallback.failures: wrong type: string \"x\", expected a whole number from 1 to 1000",
        ),
        (
            "    fallback: {statuses: [x]}\n",
            "m.yaml:8:27: services[0].fallback.statuses[0]: wrong type: string \"x\", expected an HTTP status from 100 to 599",
        ),
        (
            "    fallback: {cooldown: [1]}\n",
            "m.yaml:8:26: services[0].fallback.cooldown: wrong type: sequence, expected a time such as 30s, 500ms or 2m",
        ),
    ] {
        assert_eq!(err("a.example", "a", "o:80", extra), message);
    }
}

/// Which services decide by the client address (the nginx layer warns when
/// realip could change it after the decision): ip rules, strategy ip, or a
/// header rule with `from:`; nothing else.
#[test]
fn services_that_use_the_client_address() {
    let uses = |extra: &str| {
        let doc = format!(
            "services:\n  - name: api\n    old_host: a.example\n    old_backend: o:80\n    new_host: a.example\n    \
             new_backend: n:80\n{extra}"
        );
        load_str("m.yaml", &doc).unwrap().services[0].uses_client_address()
    };
    assert!(uses("    canary: {ip_rules: [{cidr: 10.0.0.0/8, target: new}]}\n"));
    assert!(uses("    migration: {strategy: ip, percentage: 5}\n"));
    assert!(uses("    canary: {header_rules: [{header: X-A, present: true, target: new, from: [10.0.0.0/8]}]}\n"));
    assert!(!uses(""));
    assert!(!uses("    migration: {strategy: user, percentage: 5}\n"));
    assert!(!uses("    canary: {header_rules: [{header: X-A, present: true, target: new}], user_rules: [{users: [u], target: new}]}\n"));
}

/// `ServiceChoice::Index`: a service by its position; one past the end is none.
#[test]
fn a_service_by_index() {
    let doc = "services:\n  - name: a\n    old_host: a.example\n    old_backend: o:80\n    new_host: a.example\n    \
               new_backend: n:80\n  - name: b\n    old_host: b.example\n    old_backend: o:80\n    new_host: b.example\n    \
               new_backend: n:80\n";
    let c = load_str("m.yaml", doc).unwrap();
    let by = |i: u32| decide(&c, ServiceChoice::Index(i), &OwnedRequest::new("nowhere.example"), &mut || 0).service;
    assert_eq!([by(0), by(1), by(2), by(u32::MAX)], [Some(0), Some(1), None, None]);
}

/// A request view that knows no nginx variables (the trait's default): a
/// `var:` user key finds no user id, so the split is by weight.
#[test]
fn a_view_without_variables_has_no_var_user_id() {
    struct Bare;
    impl migration_engine::RequestView for Bare {
        fn host(&self) -> &[u8] {
            b"api.example"
        }
        fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
            std::iter::empty()
        }
        fn cookie(&self, _: &[u8]) -> Option<&[u8]> {
            None
        }
        fn arg(&self, _: &[u8]) -> Option<&[u8]> {
            None
        }
        fn client_ip(&self) -> Option<IpAddr> {
            None
        }
        fn client_addr_text(&self) -> &[u8] {
            b""
        }
    }
    let c =
        load_str("m.yaml", &service("    migration: {strategy: user, percentage: 100, user_key: 'var:remote_user'}\n"))
            .unwrap();
    let d = decide(&c, ServiceChoice::Auto, &Bare, &mut || 0);
    assert_eq!((d.target, d.rule), (Some(Target::New), Rule::Weight));
    let with = OwnedRequest::new("api.example").variable("remote_user", "alice");
    assert_eq!(target_of(&c, &with), (Some(Target::New), Rule::UserHash));
}

/// The shadowing lint lists at most 10 of anything, then says how many more.
#[test]
fn the_lint_lists_ten_then_counts() {
    let warnings = |rules: &[String]| -> Vec<String> {
        let doc = format!(
            "services:\n  - name: api\n    old_host: a.example\n    old_backend: o:80\n    new_host: a.example\n    \
             new_backend: n:80\n    canary:\n      header_rules:\n{}",
            rules.iter().map(|r| format!("        - {r}\n")).collect::<String>()
        );
        migration_engine::load_str_checked("m.yaml", &doc).unwrap().1.iter().map(|w| w.to_string()).collect()
    };
    let values = |range: std::ops::Range<usize>| range.map(|i| format!("v{i}")).collect::<Vec<_>>().join(", ");
    let single = |i: usize| format!("{{header: X-A, value: v{i}, target: new}}");
    let list = |range: std::ops::Range<usize>| format!("{{header: X-A, values: [{}], target: old}}", values(range));
    for n in [10, 12] {
        // One earlier rule covers every value: its details, listed.
        let w = warnings(&[list(0..n).replace("old", "new"), list(0..n)]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].matches("value \\\"v").count() + w[0].matches("value \"v").count(), n.min(10), "{}", w[0]);
        assert_eq!(w[0].contains(" more"), n > 10, "{}", w[0]);
        // As many earlier rules, one value each.
        let mut rules: Vec<String> = (0..n).map(single).collect();
        rules.push(list(0..n));
        let w = warnings(&rules);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].matches("]: value").count(), n.min(10), "{}", w[0]);
        assert_eq!(w[0].contains(&format!("and {} more", n - 10)), n > 10, "{}", w[0]);
        assert!(!w[0].contains("and 0 more"), "{}", w[0]);
        // Some entries covered, one not: each covered entry, up to 10, then a count.
        let mut rules: Vec<String> = (0..n).map(single).collect();
        rules.push(format!("{{header: X-A, values: [{}, fresh], target: old}}", values(0..n)));
        let w = warnings(&rules);
        assert_eq!(w.iter().filter(|w| w.contains(".values[")).count(), n.min(10), "{w:?}");
        assert_eq!(w.iter().filter(|w| w.contains("more entries never match")).count(), usize::from(n > 10), "{w:?}");
    }
}

/// The rule named as covering a value is the earliest one: a value rule before
/// a pattern that also matches.
#[test]
fn the_lint_names_the_earliest_covering_rule() {
    let doc = "services:\n  - name: api\n    old_host: a.example\n    old_backend: o:80\n    new_host: a.example\n    \
               new_backend: n:80\n    canary:\n      header_rules:\n        - {header: X-A, value: a, target: new}\n        \
               - {header: X-A, pattern: '^a', target: new}\n        - {header: X-A, value: a, target: old}\n";
    let w = migration_engine::load_str_checked("m.yaml", doc).unwrap().1;
    let text: Vec<String> = w.iter().map(|w| w.to_string()).collect();
    assert!(
        text.iter()
            .any(|w| w
                .starts_with("services[0].canary.header_rules[2]: never matches: services[0].canary.header_rules[0] ")),
        "{text:?}"
    );
}

/// Beyond its budget of pattern checks (200,000) the lint stops looking for
/// patterns that shadow values, and says so: 400 patterns by 400 values stay
/// within it, 450 by 450 do not.
#[test]
fn the_lint_has_a_budget_for_patterns() {
    let warnings = |n: usize| {
        let mut rules = String::new();
        for i in 0..n {
            rules.push_str(&format!("        - {{header: X-A, pattern: '^p{i}$', target: new}}\n"));
        }
        for i in 0..n {
            rules.push_str(&format!("        - {{header: X-A, value: v{i}, target: old}}\n"));
        }
        let doc = format!(
            "services:\n  - name: api\n    old_host: a.example\n    old_backend: o:80\n    new_host: a.example\n    \
             new_backend: n:80\n    canary:\n      header_rules:\n{rules}"
        );
        migration_engine::load_str_checked("m.yaml", &doc).unwrap().1
    };
    assert!(warnings(400).is_empty());
    let w = warnings(450);
    assert_eq!(w.len(), 1, "{w:?}");
}

/// `max_size=`'s default is 16m (docs/module.md), and a file's stamp keeps its times to
/// the nanosecond, so that a write within the same second is still a change.
#[test]
fn the_default_max_size_and_file_stamps_to_the_nanosecond() {
    use migration_engine::source::{FileStamp, DEFAULT_MAX_SIZE};
    assert_eq!(DEFAULT_MAX_SIZE, 16 * 1024 * 1024);
    let dir = std::env::temp_dir().join(format!("migration-engine-stamp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.yaml");
    let file = std::fs::File::create(&path).unwrap();
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
    file.set_modified(when).unwrap();
    drop(file);
    let stamp = FileStamp::at(&path).unwrap();
    assert_eq!(stamp.mtime_ns, 1_700_000_000_123_456_789);
    assert_eq!(stamp.size, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A file longer than its stat said (one that grew after the check; here a
/// /proc file, whose stat size is 0) is refused, not cut at max_size.
#[test]
fn a_file_longer_than_its_stat_is_refused_not_cut() {
    let path = std::path::Path::new("/proc/self/status");
    if !path.exists() {
        return;
    }
    let e = read_source(path, 10).unwrap_err();
    assert!(e.message.starts_with("grew past max_size (10 bytes)"), "{e}");
}

/// `config::locate_in_file` (the line and column of a field, for the located
/// warnings of `nginx-migration check --format json`), in a document and in the
/// same document as a ConfigMap's literal block (shifted by the block's place).
#[test]
fn fields_are_located_in_documents_and_configmaps() {
    let doc = "services:
  - name: api
    old_host: a.example
    old_backend: a:80
    new_host: a.example
    new_backend: b:80
    canary:
      ip_rules:
        - {cidr: 10.0.0.0/8, target: new}
        - {cidr: 10.1.0.0/16, target: old}
";
    let locate = migration_engine::config::locate_in_file;
    assert_eq!(locate(doc, "services[0].canary.ip_rules[1]"), Some((10, 11)));
    assert_eq!(locate(doc, "services[0].canary.ip_rules[0]"), Some((9, 11)));
    assert_eq!(locate(doc, "services[0].old_backend"), Some((4, 18)));
    assert_eq!(locate(doc, "services[1]"), None);
    let indented: String = doc.lines().map(|l| format!("    {l}\n")).collect();
    let manifest =
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: m}}\ndata:\n  migration.yaml: |\n{indented}");
    assert_eq!(locate(&manifest, "services[0].canary.ip_rules[1]"), Some((15, 15)));
    assert_eq!(locate(&manifest, "services[0].old_backend"), Some((9, 22)));
    assert_eq!(locate("services: [", "services[0]"), None, "not YAML");
}
