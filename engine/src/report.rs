//! The status document of SPEC "Status": JSON, and the Prometheus text exposition
//! format (version 0.0.4), rendered from a plain snapshot of the shared counters.
//! No nginx and no I/O here, so both formats are unit-tested byte for byte.

use std::fmt::Write;

use crate::compiled::CompiledService;
use crate::config::{Strategy, Target};
use crate::decide::Rule;
use crate::ramp::{FailedLimit, GateReport, RampState};
use crate::responses::{ResponseCounts, BUCKETS_S, CLASSES};

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
    /// Responses per target (SPEC "Responses per target").
    pub responses: ResponseCounts,
    /// Where the service's ramp stands, when it has one.
    pub ramp: Option<RampReport>,
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
        }
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

/// The rules that can send a request to `target`: `disabled` and `fallback`
/// only ever send to old, so their `new` series would be noise.
fn rules_for(target: Target) -> impl Iterator<Item = Rule> {
    Rule::ALL.into_iter().filter(move |&rule| match rule {
        Rule::None => false,
        Rule::Disabled | Rule::Fallback => target == Target::Old,
        _ => true,
    })
}

impl StatusReport<'_> {
    /// The JSON document of SPEC "Status", on one line (the pieces of
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

    /// The JSON document up to its list of services.
    fn json_head(&self, out: &mut String) {
        out.push_str("{\"version\":");
        json_string(out, self.version);
        let _ = write!(out, ",\"generation\":{},\"loaded_at\":", self.generation);
        json_string(out, &rfc3339(self.loaded_at));
        out.push_str(",\"source\":");
        json_string(out, self.source);
        let _ = write!(out, ",\"unmatched\":{},\"file\":", self.unmatched);
        match &self.file.refused {
            None => out.push_str("{\"state\":\"ok\",\"error\":null,\"since\":null}"),
            Some((error, since)) => {
                out.push_str("{\"state\":\"refused\",\"error\":");
                json_string(out, error);
                out.push_str(",\"since\":");
                json_string(out, &rfc3339(*since));
                out.push('}');
            }
        }
        out.push_str(",\"services\":[");
    }
}

/// One service's object in the JSON document.
fn json_service(s: &ServiceReport<'_>, out: &mut String) {
    out.push_str("{\"name\":");
    json_string(out, s.name);
    let _ = write!(
            out,
            ",\"enabled\":{},\"strategy\":\"{}\",\"percentage\":{},\"configured_percentage\":{},\"requests\":{{\"old\":{},\"new\":{}}},\"rules\":{{",
            s.enabled,
            s.strategy.as_str(),
            Percentage(s.percentage_bp),
            Percentage(s.configured_percentage_bp),
            s.requests(Target::Old),
            s.requests(Target::New)
        );
    for (j, rule) in Rule::ALL.iter().filter(|&&r| r != Rule::None).enumerate() {
        let _ = write!(out, "{}\"{}\":{}", if j > 0 { "," } else { "" }, rule.as_str(), s.rule_total(*rule));
    }
    let _ = write!(
        out,
        "}},\"fallback\":{{\"state\":\"{}\",\"consecutive_failures\":{},\"trips\":{}}}",
        s.fallback.state.as_str(),
        s.fallback.consecutive_failures,
        s.fallback.trips
    );
    out.push_str(",\"responses\":{");
    for (i, target) in [Target::Old, Target::New].into_iter().enumerate() {
        let _ = write!(out, "{}\"{}\":{{", if i > 0 { "," } else { "" }, target.as_str());
        for (k, class) in CLASSES.iter().enumerate() {
            let _ =
                write!(out, "{}\"{class}\":{}", if k > 0 { "," } else { "" }, s.responses.classes[target.index()][k]);
        }
        out.push('}');
    }
    out.push('}');
    for (name, q) in [("latency_p50_ms", 0.5), ("latency_p99_ms", 0.99)] {
        let _ = write!(out, ",\"{name}\":{{");
        for (i, target) in [Target::Old, Target::New].into_iter().enumerate() {
            let _ = write!(out, "{}\"{}\":", if i > 0 { "," } else { "" }, target.as_str());
            json_number(out, s.responses.quantile(target, q).map(|seconds| seconds * 1000.0));
        }
        out.push('}');
    }
    if let Some(ramp) = &s.ramp {
        let _ = write!(
            out,
            ",\"ramp\":{{\"state\":\"{}\",\"step\":{},\"steps\":{},\"percentage\":{},\"frozen\":{},\"next_step_at\":",
            ramp.state.as_str(),
            ramp.step,
            ramp.steps,
            Percentage(ramp.percentage_bp),
            ramp.frozen
        );
        match ramp.next_step_at_ms {
            Some(ms) => json_string(out, &rfc3339(ms / 1000)),
            None => out.push_str("null"),
        }
        out.push_str(",\"last_gate\":");
        match &ramp.last_gate {
            None => out.push_str("null"),
            Some(g) => {
                let _ = write!(out, "{{\"verdict\":\"{}\",\"failed\":[", g.verdict);
                for (i, f) in ramp.failed.iter().enumerate() {
                    let _ = write!(out, "{}{{\"limit\":\"{}\",\"value\":", if i > 0 { "," } else { "" }, f.limit);
                    json_number(out, Some(f.value));
                    out.push_str(",\"measured\":");
                    json_number(out, Some(f.measured));
                    out.push('}');
                }
                let _ = write!(
                    out,
                    "],\"new_requests\":{},\"old_requests\":{},\"new_error_rate\":",
                    g.new_requests, g.old_requests
                );
                json_number(out, Some(g.new_error_rate));
                out.push_str(",\"old_error_rate\":");
                json_number(out, Some(g.old_error_rate));
                out.push_str(",\"new_p99_ms\":");
                json_number(out, g.new_p99_ms);
                out.push_str(",\"old_p99_ms\":");
                json_number(out, g.old_p99_ms);
                out.push('}');
            }
        }
        out.push('}');
    }
    out.push('}');
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

impl Pieces {
    /// Appends the next piece of the JSON document to `out`, stopping at a part's
    /// end or once `out` holds `budget` bytes; false once the document is whole.
    pub fn next_json<'s>(
        &mut self,
        head: &StatusReport<'_>,
        count: usize,
        service: impl Fn(usize) -> Option<ServiceReport<'s>>,
        budget: usize,
        out: &mut String,
    ) -> bool {
        match self.part {
            0 => {
                head.json_head(out);
                self.part = 1;
            }
            1 => {
                while self.service < count && (out.is_empty() || out.len() < budget) {
                    if let Some(s) = service(self.service) {
                        if self.written > 0 {
                            out.push(',');
                        }
                        json_service(&s, out);
                        self.written += 1;
                    }
                    self.service += 1;
                }
                if self.service >= count {
                    self.part = 2;
                }
            }
            _ => {
                out.push_str("]}\n");
                return false;
            }
        }
        true
    }

    /// Appends the next piece of the Prometheus exposition to `out`: a family's
    /// header and series, stopping at the family's end or once `out` holds
    /// `budget` bytes; false once the exposition is whole.
    pub fn next_prometheus<'s>(
        &mut self,
        head: &StatusReport<'_>,
        count: usize,
        service: impl Fn(usize) -> Option<ServiceReport<'s>>,
        budget: usize,
        out: &mut String,
    ) -> bool {
        let Some(f) = FAMILIES.get(self.part) else { return false };
        if self.service == 0 {
            family(out, f.name, f.kind, f.help);
        }
        match f.series {
            Series::Global(write) => {
                write(head, out);
                self.service = count;
            }
            Series::PerService(write) => {
                // At least one service a piece, so that a header longer than the
                // budget never stalls it.
                while self.service < count {
                    if let Some(s) = service(self.service) {
                        write(&s, out);
                    }
                    self.service += 1;
                    if out.len() >= budget {
                        break;
                    }
                }
                if count == 0 {
                    self.service = 0;
                }
            }
        }
        if self.service >= count {
            self.part += 1;
            self.service = 0;
        }
        self.part < FAMILIES.len()
    }
}

/// Where a Prometheus family's series come from.
#[derive(Clone, Copy)]
enum Series {
    /// Lines of one service (none for a service it does not apply to).
    PerService(fn(&ServiceReport<'_>, &mut String)),
    /// Lines of the configuration as a whole.
    Global(fn(&StatusReport<'_>, &mut String)),
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    series: Series,
}

/// The families, in the order they are exposed.
const FAMILIES: [Family; 15] = [
    Family {
        name: "migration_requests_total",
        kind: "counter",
        help: "Requests routed, by service, target and the rule that decided.",
        series: Series::PerService(|s, out| {
            for target in [Target::Old, Target::New] {
                for rule in rules_for(target) {
                    out.push_str("migration_requests_total{service=");
                    label_value(out, s.name);
                    let _ = writeln!(
                        out,
                        ",target=\"{}\",rule=\"{}\"}} {}",
                        target.as_str(),
                        rule.as_str(),
                        s.counts[target.index()][rule.index()]
                    );
                }
            }
        }),
    },
    Family {
        name: "migration_unmatched_requests_total",
        kind: "counter",
        help: "Requests whose Host matched no service (rule none).",
        series: Series::Global(|h, out| {
            let _ = writeln!(out, "migration_unmatched_requests_total {}", h.unmatched);
        }),
    },
    Family {
        name: "migration_percentage",
        kind: "gauge",
        help: "The percentage of the split in force, 0 to 100 (a ramp's step; 0 after a rollback or while disabled).",
        series: Series::PerService(|s, out| {
            out.push_str("migration_percentage{service=");
            label_value(out, s.name);
            let _ = writeln!(out, "}} {}", Percentage(s.percentage_bp));
        }),
    },
    Family {
        name: "migration_configured_percentage",
        kind: "gauge",
        help: "The percentage the file configures for the split, 0 to 100.",
        series: Series::PerService(|s, out| {
            out.push_str("migration_configured_percentage{service=");
            label_value(out, s.name);
            let _ = writeln!(out, "}} {}", Percentage(s.configured_percentage_bp));
        }),
    },
    Family {
        name: "migration_enabled",
        kind: "gauge",
        help: "1 when the migration of the service is enabled, 0 when everything goes to old.",
        series: Series::PerService(|s, out| {
            out.push_str("migration_enabled{service=");
            label_value(out, s.name);
            let _ = writeln!(out, "}} {}", u8::from(s.enabled));
        }),
    },
    Family {
        name: "migration_fallback_state",
        kind: "gauge",
        help: "Fallback breaker of the service: 0 closed, 1 open, 2 half-open.",
        series: Series::PerService(|s, out| {
            out.push_str("migration_fallback_state{service=");
            label_value(out, s.name);
            let _ = writeln!(out, "}} {}", s.fallback.state.gauge());
        }),
    },
    Family {
        name: "migration_fallback_trips_total",
        kind: "counter",
        help: "Times the fallback breaker of the service opened.",
        series: Series::PerService(|s, out| {
            out.push_str("migration_fallback_trips_total{service=");
            label_value(out, s.name);
            let _ = writeln!(out, "}} {}", s.fallback.trips);
        }),
    },
    Family {
        name: "migration_responses_total",
        kind: "counter",
        help: "Responses of routed requests, by service, target and status class (failed: no upstream response).",
        series: Series::PerService(|s, out| {
            for target in [Target::Old, Target::New] {
                for (k, class) in CLASSES.iter().enumerate() {
                    out.push_str("migration_responses_total{service=");
                    label_value(out, s.name);
                    let _ = writeln!(
                        out,
                        ",target=\"{}\",class=\"{class}\"}} {}",
                        target.as_str(),
                        s.responses.classes[target.index()][k]
                    );
                }
            }
        }),
    },
    Family {
        name: "migration_upstream_response_seconds",
        kind: "histogram",
        help: "Upstream response time of routed requests, by service and target.",
        series: Series::PerService(|s, out| {
            for target in [Target::Old, Target::New] {
                let t = target.index();
                let mut cumulative = 0;
                for (i, &count) in s.responses.buckets[t].iter().enumerate() {
                    cumulative += count;
                    out.push_str("migration_upstream_response_seconds_bucket{service=");
                    label_value(out, s.name);
                    let le = BUCKETS_S.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
                    let _ = writeln!(out, ",target=\"{}\",le=\"{le}\"}} {cumulative}", target.as_str());
                }
                out.push_str("migration_upstream_response_seconds_sum{service=");
                label_value(out, s.name);
                let _ = writeln!(out, ",target=\"{}\"}} {}", target.as_str(), s.responses.sum_us[t] as f64 / 1e6);
                out.push_str("migration_upstream_response_seconds_count{service=");
                label_value(out, s.name);
                let _ = writeln!(out, ",target=\"{}\"}} {cumulative}", target.as_str());
            }
        }),
    },
    Family {
        name: "migration_ramp_percentage",
        kind: "gauge",
        help: "The percentage a service's ramp puts in force.",
        series: Series::PerService(|s, out| {
            if let Some(ramp) = &s.ramp {
                out.push_str("migration_ramp_percentage{service=");
                label_value(out, s.name);
                let _ = writeln!(out, "}} {}", Percentage(ramp.percentage_bp));
            }
        }),
    },
    Family {
        name: "migration_ramp_state",
        kind: "gauge",
        help: "1 for the state a service's ramp is in, 0 for the others.",
        series: Series::PerService(|s, out| {
            let Some(ramp) = &s.ramp else { return };
            for state in RampState::ALL {
                out.push_str("migration_ramp_state{service=");
                label_value(out, s.name);
                let _ = writeln!(out, ",state=\"{}\"}} {}", state.as_str(), u8::from(state == ramp.state));
            }
        }),
    },
    Family {
        name: "migration_config_generation",
        kind: "gauge",
        help: "Generation of the published configuration; grows by one at every publication.",
        series: Series::Global(|h, out| {
            let _ = writeln!(out, "migration_config_generation {}", h.generation);
        }),
    },
    Family {
        name: "migration_config_loaded_timestamp_seconds",
        kind: "gauge",
        help: "When the published configuration was loaded, in Unix seconds.",
        series: Series::Global(|h, out| {
            let _ = writeln!(out, "migration_config_loaded_timestamp_seconds {}", h.loaded_at);
        }),
    },
    Family {
        name: "migration_config_info",
        kind: "gauge",
        help: "The published configuration: its version and source file.",
        series: Series::Global(|h, out| {
            out.push_str("migration_config_info{version=");
            label_value(out, h.version);
            out.push_str(",source=");
            label_value(out, h.source);
            out.push_str("} 1\n");
        }),
    },
    Family {
        name: "migration_config_file_refused",
        kind: "gauge",
        help: "1 while the last change of the configuration file was refused (the published configuration stays).",
        series: Series::Global(|h, out| {
            out.push_str("migration_config_file_refused{source=");
            label_value(out, h.source);
            let _ = writeln!(out, "}} {}", u8::from(h.file.refused.is_some()));
        }),
    },
];

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

/// A label value in double quotes, with `\`, `"` and newline escaped as the text
/// format requires.
fn label_value(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number in JSON (at most three decimals), or `null`.
fn json_number(out: &mut String, value: Option<f64>) {
    match value {
        Some(v) if v.is_finite() => {
            let text = format!("{v:.3}");
            let text = text.trim_end_matches('0').trim_end_matches('.');
            // A tiny negative value rounds to "-0": JSON's zero is 0.
            out.push_str(if text == "-0" { "0" } else { text });
        }
        _ => out.push_str("null"),
    }
}

fn json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A percentage in basis points, printed as a number with no needless zeros:
/// 2000 → `20`, 2050 → `20.5`, 3333 → `33.33`.
struct Percentage(u32);

impl std::fmt::Display for Percentage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "{whole}"),
            f2 if f2 % 10 == 0 => write!(f, "{whole}.{}", f2 / 10),
            f2 => write!(f, "{whole}.{f2:02}"),
        }
    }
}

/// Unix seconds as an RFC 3339 UTC timestamp (`2026-11-26T01:30:00Z`).
pub fn rfc3339(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {

    #[test]
    fn json_numbers_have_at_most_three_decimals_and_non_finite_is_null() {
        for (value, text) in [
            (None, "null"),
            (Some(f64::INFINITY), "null"),
            (Some(f64::NEG_INFINITY), "null"),
            (Some(f64::NAN), "null"),
            (Some(0.0), "0"),
            (Some(-0.0004), "0"),
            (Some(-1.25), "-1.25"),
            (Some(1.5), "1.5"),
            (Some(12.3456), "12.346"),
            (Some(100.0), "100"),
            (Some(0.0004), "0"),
        ] {
            let mut out = String::new();
            json_number(&mut out, value);
            assert_eq!(out, text, "{value:?}");
        }
    }

    use super::*;
    use crate::load_str;

    const YAML: &str = "version: \"v\\\"1\\\\\"\nservices:\n  - name: api\n    old_host: api.example\n    old_backend: old:80\n    new_host: api.new\n    new_backend: new:443\n    migration: {percentage: 33.33, strategy: user}\n  - name: shop\n    old_host: shop.example\n    old_backend: old:80\n    new_host: shop.new\n    new_backend: new:443\n    migration: {enabled: false, percentage: 20.5}\n";

    fn counts(entries: &[(Target, Rule, u64)]) -> Counts {
        let mut c = [[0; Rule::COUNT]; 2];
        for &(t, r, n) in entries {
            c[t.index()][r.index()] = n;
        }
        c
    }

    fn report(config: &crate::CompiledConfig) -> StatusReport<'_> {
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
                ),
                ServiceReport::new(
                    &config.services[1],
                    counts(&[(Target::Old, Rule::Disabled, 4)]),
                    FallbackReport { state: BreakerState::HalfOpen, consecutive_failures: 5, trips: 2 },
                ),
            ],
        }
    }

    #[test]
    fn json_has_the_spec_shape_and_escapes_strings() {
        let config = load_str("m.yaml", YAML).unwrap();
        let json = report(&config).to_json();
        assert_eq!(
            json,
            concat!(
                r#"{"version":"v\"1\\","generation":7,"loaded_at":"2026-11-26T01:30:00Z","source":"/etc/nginx/m\"igration.yaml","unmatched":3,"#,
                r#""file":{"state":"ok","error":null,"since":null},"services":["#,
                r#"{"name":"api","enabled":true,"strategy":"user","percentage":33.33,"configured_percentage":33.33,"requests":{"old":6,"new":2},"#,
                r#""rules":{"header":3,"cidr":0,"user_list":0,"user_hash":5,"ip_hash":0,"weight":0,"disabled":0,"fallback":0},"#,
                r#""fallback":{"state":"closed","consecutive_failures":0,"trips":0},"#,
                r#""responses":{"old":{"1xx":0,"2xx":0,"3xx":0,"4xx":0,"5xx":0,"failed":0,"aborted":0},"new":{"1xx":0,"2xx":0,"3xx":0,"4xx":0,"5xx":0,"failed":0,"aborted":0}},"#,
                r#""latency_p50_ms":{"old":null,"new":null},"latency_p99_ms":{"old":null,"new":null}},"#,
                r#"{"name":"shop","enabled":false,"strategy":"weight","percentage":0,"configured_percentage":20.5,"requests":{"old":4,"new":0},"#,
                r#""rules":{"header":0,"cidr":0,"user_list":0,"user_hash":0,"ip_hash":0,"weight":0,"disabled":4,"fallback":0},"#,
                r#""fallback":{"state":"half_open","consecutive_failures":5,"trips":2},"#,
                r#""responses":{"old":{"1xx":0,"2xx":0,"3xx":0,"4xx":0,"5xx":0,"failed":0,"aborted":0},"new":{"1xx":0,"2xx":0,"3xx":0,"4xx":0,"5xx":0,"failed":0,"aborted":0}},"#,
                r#""latency_p50_ms":{"old":null,"new":null},"latency_p99_ms":{"old":null,"new":null}}]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn prometheus_lists_every_possible_series_with_help_and_type() {
        let config = load_str("m.yaml", YAML).unwrap();
        let text = report(&config).to_prometheus();
        let series: Vec<&str> = text.lines().filter(|l| l.starts_with("migration_requests_total{")).collect();
        // 8 rules to old, 6 to new (disabled and fallback never send to new), per service.
        assert_eq!(series.len(), 2 * 14);
        assert!(series.contains(&r#"migration_requests_total{service="api",target="new",rule="header"} 2"#));
        assert!(series.contains(&r#"migration_requests_total{service="api",target="old",rule="user_hash"} 5"#));
        assert!(series.contains(&r#"migration_requests_total{service="shop",target="old",rule="disabled"} 4"#));
        assert!(!text.contains(r#"target="new",rule="disabled""#));
        assert!(text.contains("migration_fallback_state{service=\"shop\"} 2\n"));
        assert!(text.contains("migration_percentage{service=\"api\"} 33.33\n"));
        assert!(text.contains("migration_config_generation 7\n"));
        assert!(text.contains("migration_unmatched_requests_total 3\n"));
        assert!(
            text.contains("migration_config_info{version=\"v\\\"1\\\\\",source=\"/etc/nginx/m\\\"igration.yaml\"} 1\n")
        );
        // Every sample belongs to a family announced just before it by HELP and TYPE.
        let mut announced = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                announced.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = announced.last().map(String::as_str).unwrap_or("");
                let histogram_sample =
                    ["_bucket", "_sum", "_count"].iter().any(|suffix| name.strip_suffix(suffix) == Some(family));
                assert!(name == family || histogram_sample, "{line} is not of {family}");
            }
        }
        assert_eq!(text.matches("# HELP ").count(), announced.len());
    }

    /// Every sample, by value: the request series from the counts `report` was
    /// given, and each gauge from the test's own configuration and snapshot.
    #[test]
    fn prometheus_samples_have_the_values_of_the_snapshot() {
        let config = load_str("m.yaml", YAML).unwrap();
        let text = report(&config).to_prometheus();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let mut expected: Vec<String> = Vec::new();
        let nonzero = [
            ("api", "new", "header", 2),
            ("api", "old", "header", 1),
            ("api", "old", "user_hash", 5),
            ("shop", "old", "disabled", 4),
        ];
        for service in ["api", "shop"] {
            for target in ["old", "new"] {
                for rule in ["header", "cidr", "user_list", "user_hash", "ip_hash", "weight", "disabled", "fallback"] {
                    if target == "new" && (rule == "disabled" || rule == "fallback") {
                        continue;
                    }
                    let n = nonzero.iter().find(|e| (e.0, e.1, e.2) == (service, target, rule)).map_or(0, |e| e.3);
                    expected.push(format!(
                        "migration_requests_total{{service=\"{service}\",target=\"{target}\",rule=\"{rule}\"}} {n}"
                    ));
                }
            }
        }
        expected.extend(
            [
                "migration_unmatched_requests_total 3",
                "migration_percentage{service=\"api\"} 33.33",
                "migration_percentage{service=\"shop\"} 0",
                "migration_configured_percentage{service=\"api\"} 33.33",
                "migration_configured_percentage{service=\"shop\"} 20.5",
                "migration_enabled{service=\"api\"} 1",
                "migration_enabled{service=\"shop\"} 0",
                "migration_fallback_state{service=\"api\"} 0",
                "migration_fallback_state{service=\"shop\"} 2",
                "migration_fallback_trips_total{service=\"api\"} 0",
                "migration_fallback_trips_total{service=\"shop\"} 2",
            ]
            .map(String::from),
        );
        // No responses in this snapshot: every series of both families, at 0.
        for service in ["api", "shop"] {
            for target in ["old", "new"] {
                for class in ["1xx", "2xx", "3xx", "4xx", "5xx", "failed", "aborted"] {
                    expected.push(format!(
                        "migration_responses_total{{service=\"{service}\",target=\"{target}\",class=\"{class}\"}} 0"
                    ));
                }
            }
        }
        for service in ["api", "shop"] {
            for target in ["old", "new"] {
                let labels = format!("service=\"{service}\",target=\"{target}\"");
                for le in ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"] {
                    expected.push(format!("migration_upstream_response_seconds_bucket{{{labels},le=\"{le}\"}} 0"));
                }
                expected.push(format!("migration_upstream_response_seconds_sum{{{labels}}} 0"));
                expected.push(format!("migration_upstream_response_seconds_count{{{labels}}} 0"));
            }
        }
        expected.extend(
            [
                "migration_config_generation 7",
                "migration_config_loaded_timestamp_seconds 1795656600",
                "migration_config_info{version=\"v\\\"1\\\\\",source=\"/etc/nginx/m\\\"igration.yaml\"} 1",
                "migration_config_file_refused{source=\"/etc/nginx/m\\\"igration.yaml\"} 0",
            ]
            .map(String::from),
        );
        assert_eq!(samples, expected);
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
        while pieces.next_prometheus(&r, 2, only_shop, usize::MAX, &mut text) {}
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

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        let mut out = String::new();
        label_value(&mut out, "a\\b\"c\nd");
        assert_eq!(out, r#""a\\b\"c\nd""#);
    }

    #[test]
    fn percentages_print_without_needless_zeros() {
        let p = |bp| Percentage(bp).to_string();
        assert_eq!([p(0), p(2000), p(2050), p(3333), p(5), p(10000)], ["0", "20", "20.5", "33.33", "0.05", "100"]);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_656_600), "2026-11-26T01:30:00Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        // The century rules (values from Python's datetime): 2100, 2200 and 2300
        // are not leap years, 2400 is; the era's last day is Feb 29 of 2400.
        assert_eq!(rfc3339(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(rfc3339(7_263_216_000), "2200-03-01T00:00:00Z");
        assert_eq!(rfc3339(10_418_846_400), "2300-02-28T12:00:00Z");
        assert_eq!(rfc3339(13_569_465_599), "2399-12-31T23:59:59Z");
        assert_eq!(rfc3339(13_574_563_200), "2400-02-29T00:00:00Z");
        assert_eq!(rfc3339(13_574_649_600), "2400-03-01T00:00:00Z");
    }

    /// JSON strings escape every control character (RFC 8259), and nothing else.
    #[test]
    fn json_strings_escape_control_characters() {
        let mut out = String::new();
        json_string(&mut out, "a\u{1}b\u{1f} \u{7f}\t\"\\\u{e9}");
        assert_eq!(out, "\"a\\u0001b\\u001f \u{7f}\\t\\\"\\\\\u{e9}\"");
    }
}
