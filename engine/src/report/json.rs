//! The JSON status document (docs/status.md), on one line, in pieces.

use std::fmt::Write;

use super::values::{rfc3339, Percentage};
use super::{Pieces, ServiceReport, StatusReport};
use crate::config::Target;
use crate::decide::Rule;
use crate::responses::CLASSES;

impl StatusReport<'_> {
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
    if let Some(minted) = s.sticky_minted {
        let _ = write!(out, ",\"sticky_minted\":{minted}");
    }
    let c = &s.connections;
    let _ = write!(
        out,
        ",\"connections\":{{\"old\":{},\"new\":{},\"misplaced\":{},\"drained\":{}}}",
        c.old,
        c.new,
        c.misplaced,
        c.drained[0] + c.drained[1]
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_str;
    use crate::report::tests::{report, YAML};

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
                r#""latency_p50_ms":{"old":null,"new":null},"latency_p99_ms":{"old":null,"new":null},"#,
                r#""connections":{"old":3,"new":2,"misplaced":1,"drained":9}},"#,
                r#"{"name":"shop","enabled":false,"strategy":"weight","percentage":0,"configured_percentage":20.5,"requests":{"old":4,"new":0},"#,
                r#""rules":{"header":0,"cidr":0,"user_list":0,"user_hash":0,"ip_hash":0,"weight":0,"disabled":4,"fallback":0},"#,
                r#""fallback":{"state":"half_open","consecutive_failures":5,"trips":2},"#,
                r#""responses":{"old":{"1xx":0,"2xx":0,"3xx":0,"4xx":0,"5xx":0,"failed":0,"aborted":0},"new":{"1xx":0,"2xx":0,"3xx":0,"4xx":0,"5xx":0,"failed":0,"aborted":0}},"#,
                r#""latency_p50_ms":{"old":null,"new":null},"latency_p99_ms":{"old":null,"new":null},"#,
                r#""connections":{"old":0,"new":0,"misplaced":0,"drained":0}}]}"#,
                "\n"
            )
        );
    }

    /// JSON strings escape every control character (RFC 8259), and nothing else.
    #[test]
    fn json_strings_escape_control_characters() {
        let mut out = String::new();
        json_string(&mut out, "a\u{1}b\u{1f} \u{7f}\t\"\\\u{e9}");
        assert_eq!(out, "\"a\\u0001b\\u001f \u{7f}\\t\\\"\\\\\u{e9}\"");
    }
}
