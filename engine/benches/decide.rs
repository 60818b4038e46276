//! The cost of one `decide()` call.
//!
//! * `one_service`: a typical service — two header rules, ten CIDRs, strategy user —
//!   with a request of ~10 ordinary headers that no rule matches, so the decision
//!   runs to the user hash.
//! * `large`: 1,000 services; the matched one has 100 header rules over 10 header
//!   names and 10,000 CIDRs of mixed, nested prefix lengths; the request carries two
//!   of the rule headers with values no rule matches and comes from an address no
//!   CIDR contains, so every step runs down to the user hash.
//! * `large_cidr_hit`: the same, from an address inside a deeply nested CIDR.
//!
//! `cargo bench -p migration-engine --bench decide`

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use migration_engine::{decide, load_str, CompiledConfig, OwnedRequest, Rule, ServiceChoice};

const TYPICAL_HEADERS: [(&str, &str); 8] = [
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
    ("Accept", "application/json, text/plain, */*"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Accept-Language", "en-US,en;q=0.9,zh-CN;q=0.8"),
    ("X-Request-ID", "7f3c2a9e-5b1d-4e8f-9a62-0c4d1e2f3a4b"),
    ("X-User-ID", "user-48213"),
    ("Cookie", "session=abc123def456; theme=dark; _ga=GA1.2.1234567890.1700000000"),
    ("X-Forwarded-For", "198.51.100.23, 10.0.0.1"),
];

/// A client that the generated tables must not contain.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 77);

fn typical_request(host: &str, client: &str) -> OwnedRequest {
    let mut r = OwnedRequest::new(host).header("Host", host);
    for (name, value) in TYPICAL_HEADERS {
        r = r.header(name, value);
    }
    r.client(client)
}

fn service_head(out: &mut String, name: &str, host: &str) {
    out.push_str(&format!(
        "  - name: {name}\n    hosts: [{host}]\n    old_host: {host}\n    old_backend: {name}.svc.cluster.local:8078\n    \
         new_host: {name}.kong.example\n    new_backend: {name}.kong.example:443\n"
    ));
}

fn one_service_config() -> CompiledConfig {
    let mut y = String::from("services:\n");
    service_head(&mut y, "api", "api.example.com");
    y.push_str(
        "    migration: {strategy: user, percentage: 20, user_key: 'header:X-User-ID'}
    canary:
      header_rules:
        - {header: X-Migration-Target, value: new, target: new_cluster}
        - {header: X-Canary, value: always, target: new_cluster}
      ip_rules:
        - {cidrs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 198.18.0.0/15], target: new_cluster}
        - {cidrs: [192.0.2.0/24, 198.51.100.0/24, 169.254.0.0/16, '2001:db8::/32', 'fd00::/8'], target: old_cluster}
",
    );
    load_str("bench.yaml", &y).expect("one_service config")
}

struct XorShift(u32);

impl XorShift {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

fn contains(net: (u32, u32), addr: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - net.1).unwrap_or(0);
    addr & mask == net.0
}

/// 10,000 distinct IPv4 networks, /8 to /32, about a third of them nested inside an
/// earlier one; none contains `OUTSIDE`. Deterministic.
fn generate_cidrs(n: usize) -> Vec<(u32, u32)> {
    let mut rng = XorShift(0x1234_5678);
    let mut seen = HashSet::new();
    let mut nets: Vec<(u32, u32)> = Vec::with_capacity(n);
    while nets.len() < n {
        let (base, len) = if !nets.is_empty() && rng.next() % 3 == 0 {
            // Nested: a longer prefix inside an earlier network.
            let parent = nets[rng.next() as usize % nets.len()];
            if parent.1 == 32 {
                continue;
            }
            let len = parent.1 + 1 + rng.next() % (32 - parent.1);
            (parent.0 | (rng.next() & u32::MAX.checked_shr(parent.1).unwrap_or(0)), len)
        } else {
            // Mostly long prefixes (as real allow-lists are), some short ones.
            let len = match rng.next() % 10 {
                0 => 8 + rng.next() % 8,
                1..=3 => 16 + rng.next() % 8,
                _ => 24 + rng.next() % 9,
            };
            (rng.next(), len)
        };
        let mask = u32::MAX << (32 - len);
        let net = (base & mask, len);
        if contains(net, u32::from(OUTSIDE)) || !seen.insert(net) {
            continue;
        }
        nets.push(net);
    }
    nets
}

const SERVICES: usize = 1000;
const MATCHED: usize = 617;
const HEADER_NAMES: usize = 10;

/// Returns the config and an address inside a deeply nested CIDR of the matched service.
fn large_config() -> (CompiledConfig, String) {
    let nets = generate_cidrs(10_000);
    let mut y = String::with_capacity(2 << 20);
    y.push_str("services:\n");
    for i in 0..SERVICES {
        let name = format!("svc{i:04}");
        service_head(&mut y, &name, &format!("{name}.apps.example.com"));
        if i != MATCHED {
            y.push_str("    migration: {strategy: weight, percentage: 10}\n");
            continue;
        }
        y.push_str("    migration: {strategy: user, percentage: 20, user_key: 'header:X-User-ID'}\n");
        y.push_str("    canary:\n      header_rules:\n");
        for r in 0..100 {
            let header = format!("X-Rule-{}", r % HEADER_NAMES);
            let target = if r % 2 == 0 { "new_cluster" } else { "old_cluster" };
            let matcher = match r % 5 {
                3 => format!("values: [a{r}, b{r}, c{r}]"),
                4 => format!("pattern: '^canary-{r}-[a-z]+$'"),
                _ => format!("value: v{r}"),
            };
            y.push_str(&format!("        - {{header: {header}, {matcher}, target: {target}}}\n"));
        }
        y.push_str("      ip_rules:\n");
        // 100 rules of 100 networks each.
        for (r, chunk) in nets.chunks(100).enumerate() {
            let list: Vec<String> = chunk.iter().map(|&(a, l)| format!("{}/{l}", Ipv4Addr::from(a))).collect();
            let target = if r % 2 == 0 { "new_cluster" } else { "old_cluster" };
            y.push_str(&format!("        - {{cidrs: [{}], target: {target}}}\n", list.join(", ")));
        }
    }
    let config = load_str("bench-large.yaml", &y).expect("large config");
    // The deepest network that has a parent: an address inside it hits a nested CIDR.
    let inner =
        nets.iter().filter(|n| nets.iter().any(|p| p.1 < n.1 && contains(*p, n.0))).max_by_key(|n| n.1).unwrap();
    (config, Ipv4Addr::from(inner.0 | u32::MAX.checked_shr(inner.1).unwrap_or(0)).to_string())
}

fn large_request(host: &str, client: &str) -> OwnedRequest {
    typical_request(host, client).header("X-Rule-3", "v-nomatch").header("X-Rule-7", "canary-7-UPPER")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));

    let config = one_service_config();
    let request = typical_request("api.example.com", &OUTSIDE.to_string());
    let d = decide(&config, ServiceChoice::Auto, &request, &mut || 0);
    assert_eq!(d.rule, Rule::UserHash, "one_service must run to the user hash");
    group.bench_function("one_service", |b| {
        b.iter(|| decide(black_box(&config), ServiceChoice::Auto, black_box(&request), &mut || black_box(0)))
    });

    let (large, hit) = large_config();
    let host = format!("svc{MATCHED:04}.apps.example.com");
    let miss_request = large_request(&host, &OUTSIDE.to_string());
    let d = decide(&large, ServiceChoice::Auto, &miss_request, &mut || 0);
    assert_eq!((d.service, d.rule), (Some(MATCHED as u32), Rule::UserHash), "large must run to the user hash");
    group.bench_function("large", |b| {
        b.iter(|| decide(black_box(&large), ServiceChoice::Auto, black_box(&miss_request), &mut || black_box(0)))
    });

    let hit_request = large_request(&host, &hit);
    let d = decide(&large, ServiceChoice::Auto, &hit_request, &mut || 0);
    assert_eq!((d.service, d.rule), (Some(MATCHED as u32), Rule::Cidr), "large_cidr_hit must end at a CIDR ({hit})");
    group.bench_function("large_cidr_hit", |b| {
        b.iter(|| decide(black_box(&large), ServiceChoice::Auto, black_box(&hit_request), &mut || black_box(0)))
    });

    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
