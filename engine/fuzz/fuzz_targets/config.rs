//! `config`: arbitrary bytes as a configuration file.
//!
//! Nothing in a bad YAML file may crash the master (docs/yaml.md, "Errors"), and every
//! error names the file and, when located, a 1-based line and column. A file that
//! loads is then used: its compiled tables are evaluated on a few fixed requests
//! and its status is rendered as JSON and Prometheus text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use migration_engine::{
    decide, decide_with, load_str, load_str_checked, BreakerCells, BreakerState, Breakers, CompiledConfig, Counts,
    Decision, FallbackReport, Outcome, OwnedRequest, Rule, ServiceChoice, ServiceReport, StatusReport, Target,
};

const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // What nginx does with such a file: a located error, never a panic.
        let err = migration_engine::source_from_bytes(FILE, data.to_vec()).unwrap_err();
        check_error(&err);
        return;
    };
    match load_str_checked(FILE, text) {
        Err(err) => {
            check_error(&err);
            let again = load_str(FILE, text).expect_err("load_str accepts what load_str_checked rejects");
            assert_eq!(err, again, "load_str and load_str_checked disagree on the error");
        }
        Ok((config, warnings)) => {
            for w in &warnings {
                assert!(!w.to_string().is_empty());
                assert!(w.path.starts_with("services["), "warning without a service path: {w}");
            }
            exercise(&config);
            report(&config);
        }
    }
});

fn check_error(err: &migration_engine::ConfigError) {
    let shown = err.to_string();
    assert!(!shown.is_empty(), "empty error: {err:?}");
    assert!(shown.starts_with(FILE), "error does not start with the file name: {shown:?}");
    assert!(!err.message.is_empty(), "error without a message: {err:?}");
    if let Some((line, col)) = err.location {
        assert!(line >= 1 && col >= 1, "location {line}:{col} is not 1-based: {shown:?}");
        assert!(shown.starts_with(&format!("{FILE}:{line}:{col}: ")) || shown.starts_with(&format!("{FILE} (data.")));
    }
}

/// The fixed requests run against every configuration that loads.
fn requests(config: &CompiledConfig) -> Vec<OwnedRequest> {
    let mut out = vec![
        OwnedRequest::new("")
            .header("X-Migration-Target", "new")
            .header("Cookie", "uid=alice; a=b")
            .args("uid=bob&u=1")
            .client("10.20.1.2"),
        OwnedRequest::new("[2001:db8::1]:443").header("X-User-ID", "mallory").client("2001:db8::7"),
        OwnedRequest::new("a.b.c.d.e.f.example.com.:8080").header("x-user-id", "").header("X-Canary", "\u{ff}"),
    ];
    for (i, s) in config.services.iter().enumerate() {
        // The old host is often one of the service's hosts; the new host seldom.
        let mut r = OwnedRequest::new(&s.old.host)
            .header("X-User-ID", format!("user{i}"))
            .header("Cookie", format!("uid=u{i}"))
            .args(format!("uid=a{i}"))
            .client(if i % 2 == 0 { "10.0.0.1" } else { "::ffff:10.0.0.1" });
        r.headers.push((b"x-migration-target".to_vec(), if i % 2 == 0 { b"new".to_vec() } else { b"old".to_vec() }));
        out.push(r);
        out.push(OwnedRequest::new(&s.new.host));
        if i >= 4 {
            break;
        }
    }
    out
}

struct OneBreaker<'a> {
    cells: &'a [BreakerCells],
    now: u64,
}

impl Breakers for OneBreaker<'_> {
    fn breaker(&self, index: u32) -> Option<&BreakerCells> {
        self.cells.get(index as usize)
    }
    fn now_ms(&self) -> u64 {
        self.now
    }
}

fn check(config: &CompiledConfig, d: &Decision, choice: ServiceChoice<'_>) {
    assert_eq!(d.target.is_none(), d.rule == Rule::None, "{d:?}");
    assert_eq!(d.service.is_none(), d.target.is_none(), "{d:?}");
    if matches!(d.rule, Rule::Disabled | Rule::Fallback) {
        assert_eq!(d.target, Some(Target::Old), "{d:?}");
    }
    if d.trial.is_some() {
        assert_eq!(d.target, Some(Target::New), "{d:?}");
    }
    if let Some(i) = d.service {
        let s = &config.services[i as usize];
        assert_eq!(s.enabled, d.rule != Rule::Disabled, "{d:?} for {}", s.name);
        if d.rule == Rule::Fallback || d.trial.is_some() {
            assert!(s.fallback.is_some(), "{d:?} for a service without fallback");
        }
    }
    if let ServiceChoice::Named(name) = choice {
        let i = d.service.expect("a named service that exists always decides");
        assert_eq!(config.services[i as usize].name, name);
    }
}

fn exercise(config: &CompiledConfig) {
    let requests = requests(config);
    // Breakers: one open (cooling down), one half-open, the rest closed.
    let cells: Vec<BreakerCells> = (0..config.services.len()).map(|_| BreakerCells::default()).collect();
    for (i, c) in cells.iter().enumerate() {
        match i % 3 {
            1 => {
                c.record(Outcome::Failure(502), None, 1, 1_000);
            }
            2 => {
                c.record(Outcome::Failure(503), None, 1, 0);
                c.gate(86_400_001, 1);
            }
            _ => {}
        }
    }
    let breakers = OneBreaker { cells: &cells, now: 1_001 };
    let mut seed = 0x9e37_79b9u32;
    let mut draw = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for r in &requests {
        let auto = decide(config, ServiceChoice::Auto, r, &mut draw);
        check(config, &auto, ServiceChoice::Auto);
        assert!(auto.trial.is_none() && auto.rule != Rule::Fallback, "no breakers, no fallback: {auto:?}");
        let with = decide_with(config, ServiceChoice::Auto, r, &mut draw, &breakers);
        check(config, &with, ServiceChoice::Auto);
        assert_eq!(auto.service, with.service);
        if matches!(auto.rule, Rule::Header | Rule::Disabled) {
            assert_eq!(auto, with, "breakers do not matter before step 4");
        }
        for s in config.services.iter().take(5) {
            let choice = ServiceChoice::Named(&s.name);
            check(config, &decide(config, choice, r, &mut draw), choice);
            check(config, &decide_with(config, choice, r, &mut draw, &breakers), choice);
        }
    }
    let unknown = ServiceChoice::Named("no such service, surely");
    assert_eq!(decide(config, unknown, &requests[0], &mut draw), Decision::NO_SERVICE);
}

fn report(config: &CompiledConfig) {
    let services: Vec<ServiceReport<'_>> = config
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut counts: Counts = [[0; Rule::COUNT]; 2];
            for (t, row) in counts.iter_mut().enumerate() {
                for (r, n) in row.iter_mut().enumerate() {
                    *n = (i * 31 + t * 7 + r) as u64;
                }
            }
            let state = [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen][i % 3];
            ServiceReport::new(s, counts, FallbackReport { state, consecutive_failures: i as u64, trips: 2 * i as u64 })
        })
        .collect();
    let n = services.len();
    let status = StatusReport {
        version: &config.version,
        generation: u64::MAX,
        loaded_at: u64::from(u32::MAX) * 7,
        source: "/etc/nginx/\"fuzz\"\\.yaml\n",
        unmatched: 1,
        file: migration_engine::FileState { refused: Some((config.version.clone(), u64::from(u32::MAX))) },
        services,
    };
    let json = status.to_json();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad JSON ({e}): {json}"));
    assert_eq!(value["version"].as_str(), Some(config.version.as_str()));
    assert_eq!(value["services"].as_array().map(Vec::len), Some(n));
    for (s, v) in config.services.iter().zip(value["services"].as_array().unwrap()) {
        assert_eq!(v["name"].as_str(), Some(s.name.as_str()));
    }
    let text = status.to_prometheus();
    // 9 families with HELP and TYPE; per service 14 request series and 4 gauges;
    // unmatched, generation, loaded_at and info once each.
    assert_eq!(text.lines().count(), 18 + 4 + 18 * n, "{text}");
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        assert!(series.starts_with("migration_"), "{line:?}");
        assert!(value.parse::<f64>().is_ok(), "bad sample value in {line:?}");
        if let Some(labels) = series.split_once('{').map(|(_, l)| l) {
            assert!(labels.ends_with('}'), "{line:?}");
        }
    }
}
