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
    assert_eq!(read_source(&path).unwrap(), text);
    let config = load_file(&path).unwrap();
    assert_eq!(target_of(&config, &OwnedRequest::new("api.example")), (Some(Target::New), Rule::Weight));

    let missing = dir.join("missing.yaml");
    let e = read_source(&missing).unwrap_err();
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
