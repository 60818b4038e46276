//! The Prometheus text exposition format (version 0.0.4) of the status: every
//! family with its `# HELP` and `# TYPE`, in pieces.

use std::fmt::Write;

use super::values::Percentage;
use super::{Pieces, ServiceReport, StatusReport};
use crate::config::Target;
use crate::decide::Rule;
use crate::ramp::RampState;
use crate::responses::{BUCKETS_S, CLASSES};

/// The rules that can send a request to `target`: `disabled` and `fallback`
/// only ever send to old, so their `new` series would be noise.
fn rules_for(target: Target) -> impl Iterator<Item = Rule> {
    Rule::ALL.into_iter().filter(move |&rule| match rule {
        Rule::None => false,
        Rule::Disabled | Rule::Fallback => target == Target::Old,
        _ => true,
    })
}

impl Pieces {
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
const FAMILIES: [Family; 19] = [
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
        name: "migration_sticky_minted_total",
        kind: "counter",
        help: "Ids handed out by sticky to clients that carried none (a Set-Cookie sent).",
        series: Series::PerService(|s, out| {
            if let Some(minted) = s.sticky_minted {
                out.push_str("migration_sticky_minted_total{service=");
                label_value(out, s.name);
                let _ = writeln!(out, "}} {minted}");
            }
        }),
    },
    Family {
        name: "migration_connections",
        kind: "gauge",
        help: "Long-lived requests (WebSockets, streams) open now, per target.",
        series: Series::PerService(|s, out| {
            for (target, n) in [(Target::Old, s.connections.old), (Target::New, s.connections.new)] {
                out.push_str("migration_connections{service=");
                label_value(out, s.name);
                let _ = writeln!(out, ",target=\"{}\"}} {n}", target.as_str());
            }
        }),
    },
    Family {
        name: "migration_connections_misplaced",
        kind: "gauge",
        help: "Long-lived requests open now on the side the service no longer sends them to.",
        series: Series::PerService(|s, out| {
            out.push_str("migration_connections_misplaced{service=");
            label_value(out, s.name);
            let _ = writeln!(out, "}} {}", s.connections.misplaced);
        }),
    },
    Family {
        name: "migration_connections_drained_total",
        kind: "counter",
        help: "Misplaced long-lived requests closed by drain, per target they were on.",
        series: Series::PerService(|s, out| {
            for target in [Target::Old, Target::New] {
                out.push_str("migration_connections_drained_total{service=");
                label_value(out, s.name);
                let _ = writeln!(out, ",target=\"{}\"}} {}", target.as_str(), s.connections.drained[target.index()]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_str;
    use crate::report::tests::{report, YAML};

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
                "migration_connections{service=\"api\",target=\"old\"} 3",
                "migration_connections{service=\"api\",target=\"new\"} 2",
                "migration_connections{service=\"shop\",target=\"old\"} 0",
                "migration_connections{service=\"shop\",target=\"new\"} 0",
                "migration_connections_misplaced{service=\"api\"} 1",
                "migration_connections_misplaced{service=\"shop\"} 0",
                "migration_connections_drained_total{service=\"api\",target=\"old\"} 4",
                "migration_connections_drained_total{service=\"api\",target=\"new\"} 5",
                "migration_connections_drained_total{service=\"shop\",target=\"old\"} 0",
                "migration_connections_drained_total{service=\"shop\",target=\"new\"} 0",
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
    fn label_values_escape_backslash_quote_and_newline() {
        let mut out = String::new();
        label_value(&mut out, "a\\b\"c\nd");
        assert_eq!(out, r#""a\\b\"c\nd""#);
    }
}
