//! The status document of docs/status.md: JSON, and the Prometheus text exposition
//! format (version 0.0.4), rendered from a plain snapshot of the shared counters.
//! No nginx and no I/O here, so both formats are unit-tested byte for byte.
//!
//! This module holds the snapshot both formats read ([`StatusReport`] and its
//! parts) and [`Pieces`], which produces either body a piece at a time; each
//! format lives in its own file (`json.rs`, `prometheus.rs`), and how both write
//! percentages and timestamps in `values.rs`.

mod json;
mod prometheus;
mod values;

use crate::compiled::CompiledService;
use crate::config::{Strategy, Target};
use crate::decide::Rule;
use crate::ramp::{FailedLimit, GateReport, RampState};
use crate::responses::ResponseCounts;

pub use values::rfc3339;

/// Requests counted per target × rule, indexed by [`Target::index`] and
/// [`Rule::index`].
pub type Counts = [[u64; Rule::COUNT]; 2];

/// The state of a service's fallback breaker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BreakerState {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The value of the `migration_fallback_state` gauge.
    pub fn gauge(self) -> u8 {
        self as u8
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FallbackReport {
    pub state: BreakerState,
    pub consecutive_failures: u64,
    pub trips: u64,
}

#[derive(Clone, Debug)]
pub struct ServiceReport<'a> {
    pub name: &'a str,
    pub enabled: bool,
    pub strategy: Strategy,
    /// The percentage in force: a ramp's step, 0 after a rollback or while the
    /// service is disabled.
    pub percentage_bp: u32,
    /// The file's own `percentage`.
    pub configured_percentage_bp: u32,
    pub counts: Counts,
    pub fallback: FallbackReport,
    /// Responses per target (docs/status.md, "Responses per target").
    pub responses: ResponseCounts,
    /// Where the service's ramp stands, when it has one.
    pub ramp: Option<RampReport>,
    /// Ids handed out by `sticky` (a `Set-Cookie` sent), when the service has it.
    pub sticky_minted: Option<u64>,
    /// Long-lived requests (docs/drain.md).
    pub connections: ConnectionsReport,
}

/// A service's long-lived requests: open now per target, how many of them are
/// misplaced now, and how many misplaced ones were closed (per target they were on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionsReport {
    pub old: u64,
    pub new: u64,
    pub misplaced: u64,
    pub drained: [u64; 2],
}

/// A ramp, as the status shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct RampReport {
    pub state: RampState,
    /// The current step, counted from 1 (as the log counts), of `steps`.
    pub step: usize,
    pub steps: usize,
    /// The percentage in force, in basis points.
    pub percentage_bp: u32,
    /// When the next step is due (Unix ms); None on the last step or when stopped.
    pub next_step_at_ms: Option<u64>,
    pub last_gate: Option<GateReport>,
    /// The limits the last gate failed, with their values and the measured ones.
    pub failed: Vec<FailedLimit>,
    /// `enabled: false` stops the ramp where it is.
    pub frozen: bool,
}

impl<'a> ServiceReport<'a> {
    pub fn new(service: &'a CompiledService, counts: Counts, fallback: FallbackReport) -> Self {
        ServiceReport {
            name: &service.name,
            enabled: service.enabled,
            strategy: service.strategy,
            percentage_bp: if service.enabled { service.percentage_bp } else { 0 },
            configured_percentage_bp: service.percentage_bp,
            counts,
            fallback,
            responses: ResponseCounts::default(),
            ramp: None,
            sticky_minted: service.sticky().map(|_| 0),
            connections: ConnectionsReport::default(),
        }
    }

    pub fn with_connections(mut self, connections: ConnectionsReport) -> Self {
        self.connections = connections;
        self
    }

    /// The ids `sticky` handed out (kept only for a service that has `sticky`).
    pub fn with_sticky_minted(mut self, minted: u64) -> Self {
        if self.sticky_minted.is_some() {
            self.sticky_minted = Some(minted);
        }
        self
    }

    pub fn with_responses(mut self, responses: ResponseCounts) -> Self {
        self.responses = responses;
        self
    }

    /// The service's ramp: its percentage is the one in force.
    pub fn with_ramp(mut self, ramp: Option<RampReport>) -> Self {
        if let Some(ramp) = &ramp {
            self.percentage_bp = ramp.percentage_bp;
        }
        self.ramp = ramp;
        self
    }

    fn requests(&self, target: Target) -> u64 {
        self.counts[target.index()].iter().sum()
    }

    fn rule_total(&self, rule: Rule) -> u64 {
        self.counts[0][rule.index()] + self.counts[1][rule.index()]
    }
}

/// One snapshot of the status: the published configuration and its counters.
#[derive(Clone, Debug)]
pub struct StatusReport<'a> {
    pub version: &'a str,
    pub generation: u64,
    /// When this generation was published, in seconds since the Unix epoch.
    pub loaded_at: u64,
    pub source: &'a str,
    /// Requests for which no service matched (`$migration_rule=none`).
    pub unmatched: u64,
    /// The watched file's own state.
    pub file: FileState,
    pub services: Vec<ServiceReport<'a>>,
}

/// The configuration file's state: `refused` from a change that was refused (its
/// error, and since when, in Unix seconds) until a good one is published or the
/// file is back to the published content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileState {
    pub refused: Option<(String, u64)>,
}

impl StatusReport<'_> {
    /// The JSON document of docs/status.md, on one line (the pieces of
    /// [`Pieces::next_json`], joined).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(256 + 384 * self.services.len());
        let mut pieces = Pieces::default();
        while pieces.next_json(self, self.services.len(), |i| self.services.get(i).cloned(), usize::MAX, &mut out) {}
        out
    }

    /// The Prometheus text exposition format: every family with its `# HELP` and
    /// `# TYPE`, every series of a service present from its first scrape (zeros
    /// included, so that `rate()` sees the first request). The pieces of
    /// [`Pieces::next_prometheus`], joined.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(1024 + 2048 * self.services.len());
        let mut pieces = Pieces::default();
        while pieces.next_prometheus(self, self.services.len(), |i| self.services.get(i).cloned(), usize::MAX, &mut out)
        {
        }
        out
    }
}

/// Where a status body produced in pieces stands. The nginx layer writes a
/// piece, lets the event loop run (and the client read) before the next, and
/// keeps only one piece in memory: a 10,000-service scrape neither holds the
/// event loop nor buffers the whole body per connection. Services are asked for
/// by index as they are written (`service(i)`: None skips one), so their
/// counters are read when their piece is made.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pieces {
    part: usize,
    service: usize,
    written: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_str;

    pub(super) const YAML: &str = "version: \"v\\\"1\\\\\"\nservices:\n  - name: api\n    old_host: api.example\n    old_backend: old:80\n    new_host: api.new\n    new_backend: new:443\n    migration: {percentage: 33.33, strategy: user}\n  - name: shop\n    old_host: shop.example\n    old_backend: old:80\n    new_host: shop.new\n    new_backend: new:443\n    migration: {enabled: false, percentage: 20.5}\n";

    pub(super) fn counts(entries: &[(Target, Rule, u64)]) -> Counts {
        let mut c = [[0; Rule::COUNT]; 2];
        for &(t, r, n) in entries {
            c[t.index()][r.index()] = n;
        }
        c
    }

    pub(super) fn report(config: &crate::CompiledConfig) -> StatusReport<'_> {
        StatusReport {
            version: &config.version,
            generation: 7,
            loaded_at: 1_795_656_600,
            source: "/etc/nginx/m\"igration.yaml",
            unmatched: 3,
            file: FileState::default(),
            services: vec![
                ServiceReport::new(
                    &config.services[0],
                    counts(&[
                        (Target::New, Rule::Header, 2),
                        (Target::Old, Rule::Header, 1),
                        (Target::Old, Rule::UserHash, 5),
                    ]),
                    FallbackReport::default(),
                )
                .with_connections(ConnectionsReport { old: 3, new: 2, misplaced: 1, drained: [4, 5] }),
                ServiceReport::new(
                    &config.services[1],
                    counts(&[(Target::Old, Rule::Disabled, 4)]),
                    FallbackReport { state: BreakerState::HalfOpen, consecutive_failures: 5, trips: 2 },
                ),
            ],
        }
    }

    #[test]
    fn breaker_states_and_their_gauges() {
        assert_eq!(
            [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen].map(|s| (s.as_str(), s.gauge())),
            [("closed", 0), ("open", 1), ("half_open", 2)]
        );
        assert_eq!(BreakerState::default(), BreakerState::Closed);
    }

    #[test]
    fn responses_latencies_and_ramps() {
        use crate::ramp::{GateReport, RampState};
        let config = load_str("m.yaml", YAML).unwrap();
        let mut responses = ResponseCounts::default();
        responses.classes[1] = [0, 18, 0, 1, 1, 0, 3];
        responses.buckets[1][0] = 10; // 10 in (0, 5 ms]
        responses.buckets[1][1] = 10; // 10 in (5, 10 ms]
        responses.sum_us[1] = 120_000;
        responses.classes[0][5] = 2;
        let ramp = RampReport {
            state: RampState::Ramping,
            step: 2,
            steps: 4,
            percentage_bp: 1000,
            next_step_at_ms: Some(1_795_656_660_000),
            last_gate: Some(GateReport {
                verdict: "pass",
                reason: String::new(),
                failed: 0,
                new_requests: 20,
                old_requests: 2,
                new_error_rate: 0.05,
                old_error_rate: 1.0,
                new_p99_ms: Some(9.9),
                old_p99_ms: None,
            }),
            failed: vec![FailedLimit { limit: "max_p99", value: 800.0, measured: 912.5 }],
            frozen: false,
        };
        let mut r = report(&config);
        r.services[0] = r.services[0].clone().with_responses(responses).with_ramp(Some(ramp));
        let json = r.to_json();
        assert!(json.contains(concat!(
            r#""responses":{"old":{"1xx":0,"2xx":0,"3xx":0,"4xx":0,"5xx":0,"failed":2,"aborted":0},"new":{"1xx":0,"2xx":18,"3xx":0,"4xx":1,"5xx":1,"failed":0,"aborted":3}},"#,
            r#""latency_p50_ms":{"old":null,"new":5},"latency_p99_ms":{"old":null,"new":9.9},"#,
            r#""connections":{"old":3,"new":2,"misplaced":1,"drained":9},"#,
            r#""ramp":{"state":"ramping","step":2,"steps":4,"percentage":10,"frozen":false,"next_step_at":"2026-11-26T01:31:00Z","#,
            r#""last_gate":{"verdict":"pass","failed":[{"limit":"max_p99","value":800,"measured":912.5}],"new_requests":20,"old_requests":2,"new_error_rate":0.05,"old_error_rate":1,"new_p99_ms":9.9,"old_p99_ms":null}}}"#
        )), "{json}");
        let text = r.to_prometheus();
        for line in [
            r#"migration_responses_total{service="api",target="new",class="2xx"} 18"#,
            r#"migration_responses_total{service="api",target="old",class="failed"} 2"#,
            r#"migration_upstream_response_seconds_bucket{service="api",target="new",le="0.005"} 10"#,
            r#"migration_upstream_response_seconds_bucket{service="api",target="new",le="0.01"} 20"#,
            r#"migration_upstream_response_seconds_bucket{service="api",target="new",le="+Inf"} 20"#,
            r#"migration_upstream_response_seconds_sum{service="api",target="new"} 0.12"#,
            r#"migration_upstream_response_seconds_count{service="api",target="new"} 20"#,
            r#"migration_ramp_percentage{service="api"} 10"#,
            r#"migration_percentage{service="api"} 10"#,
            r#"migration_configured_percentage{service="api"} 33.33"#,
            r#"migration_responses_total{service="api",target="new",class="aborted"} 3"#,
            r#"migration_ramp_state{service="api",state="ramping"} 1"#,
            r#"migration_ramp_state{service="api",state="done"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        assert!(!text.contains(r#"migration_ramp_percentage{service="shop"}"#), "no ramp, no series");
    }

    /// Pieces of any budget join into the whole document; each piece stays
    /// within its budget plus one service's (or one family header's) worth.
    #[test]
    fn pieces_join_into_the_whole_and_stay_bounded() {
        let config = load_str("m.yaml", YAML).unwrap();
        let r = report(&config);
        let many: Vec<ServiceReport<'_>> = (0..300).map(|i| r.services[i % 2].clone()).collect();
        let whole = StatusReport { services: many.clone(), ..report(&config) };
        for budget in [1, 100, 4096] {
            for prometheus in [false, true] {
                let (mut joined, mut pieces, mut largest) = (String::new(), Pieces::default(), 0);
                loop {
                    let mut piece = String::new();
                    let more = if prometheus {
                        pieces.next_prometheus(&r, many.len(), |i| many.get(i).cloned(), budget, &mut piece)
                    } else {
                        pieces.next_json(&r, many.len(), |i| many.get(i).cloned(), budget, &mut piece)
                    };
                    largest = largest.max(piece.len());
                    joined.push_str(&piece);
                    if !more {
                        break;
                    }
                }
                let expected = if prometheus { whole.to_prometheus() } else { whole.to_json() };
                assert_eq!(joined, expected, "budget {budget}, prometheus {prometheus}");
                assert!(largest <= budget + 4096, "a piece of {largest} bytes for a budget of {budget}");
            }
        }
    }

    /// A piece ends as soon as it holds its budget: one byte short of it takes
    /// the next service, the budget itself does not.
    #[test]
    fn a_json_piece_ends_once_it_holds_its_budget() {
        let config = load_str("m.yaml", YAML).unwrap();
        let r = report(&config);
        let first_service_piece = |budget: usize| {
            let mut pieces = Pieces::default();
            let mut head = String::new();
            assert!(pieces.next_json(&r, 2, |i| r.services.get(i).cloned(), budget, &mut head));
            let mut piece = String::new();
            pieces.next_json(&r, 2, |i| r.services.get(i).cloned(), budget, &mut piece);
            piece
        };
        let one = first_service_piece(1);
        assert!(one.starts_with(r#"{"name":"api","#) && !one.contains(r#""name":"shop""#), "{one}");
        assert_eq!(first_service_piece(one.len()), one);
        assert!(first_service_piece(one.len() + 1).contains(r#""name":"shop""#));
    }

    /// A service the source no longer has (None) is left out, commas and all:
    /// `?service=NAME` is a source of one.
    #[test]
    fn pieces_skip_services_the_source_lacks() {
        let config = load_str("m.yaml", YAML).unwrap();
        let r = report(&config);
        let only_shop = |i: usize| (i == 1).then(|| r.services[1].clone());
        let mut out = String::new();
        let mut pieces = Pieces::default();
        while pieces.next_json(&r, 2, only_shop, usize::MAX, &mut out) {}
        assert!(out.contains(r#""services":[{"name":"shop","#), "{out}");
        assert!(!out.contains(r#""name":"api""#) && out.ends_with("}]}\n"), "{out}");
        let mut text = String::new();
        let mut pieces = Pieces::default();
        let mut calls = 1;
        while pieces.next_prometheus(&r, 2, only_shop, usize::MAX, &mut text) {
            calls += 1;
        }
        // Unbounded, a piece is a family: the call that writes the last one says
        // it is the last (a status writer would otherwise ask once more).
        assert_eq!(calls, text.matches("# TYPE ").count(), "one call a family");
        assert!(text.contains("migration_enabled{service=\"shop\"} 0\n"));
        assert!(!text.contains("service=\"api\""));
    }

    #[test]
    fn a_refused_file_is_in_both_formats() {
        let config = load_str("m.yaml", YAML).unwrap();
        let mut r = report(&config);
        r.file = FileState { refused: Some(("m.yaml:3:1: \"bad\"".into(), 1_795_656_600)) };
        assert!(r
            .to_json()
            .contains(r#""file":{"state":"refused","error":"m.yaml:3:1: \"bad\"","since":"2026-11-26T01:30:00Z"},"#));
        assert!(r
            .to_prometheus()
            .contains("migration_config_file_refused{source=\"/etc/nginx/m\\\"igration.yaml\"} 1\n"));
    }
}
