//! Responses per target (docs/status.md, "Responses per target"):
//! for every routed request, the status class of the response and the upstream
//! response time in a histogram with Prometheus's default buckets, per service
//! and target. Atomics, so the nginx layer keeps them in its shared zone (exact
//! across workers); a snapshot is a plain copy, and the difference of two
//! snapshots is the window a ramp step is judged on.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Target;

/// Upper bounds of the histogram's buckets, in seconds (Prometheus's defaults);
/// a last bucket, `+Inf`, takes the rest.
pub const BUCKETS_S: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// The same bounds in microseconds, for the request path's integer compare.
const BUCKETS_US: [u64; 11] =
    [5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000];
pub const BUCKETS: usize = BUCKETS_S.len() + 1;

/// The classes a response is counted in: `1xx`..`5xx`, `failed` when no
/// upstream response came (a refused connection, a timeout, a name that does not
/// resolve), or `aborted` when the client left before the upstream answered
/// (nginx's 499). An aborted request tells nothing of the cluster: it is neither
/// an error nor a response in the totals and rates, and has no latency sample,
/// so a client that hangs up on purpose cannot move a ramp's gate.
pub const CLASSES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "failed", "aborted"];
pub const FAILED: usize = 5;
pub const ABORTED: usize = 6;

/// The class index of a status (100..599); None for anything else.
pub fn class_of(status: u16) -> Option<usize> {
    (100..600).contains(&status).then(|| usize::from(status / 100 - 1))
}

/// Whether a response's `Content-Type` is a server-sent event stream
/// (`text/event-stream`, any case, parameters allowed): its upstream time is
/// how long the stream stayed open, not how fast the cluster answered, so it
/// gives no latency sample, as an upgraded connection gives none.
pub fn is_event_stream(content_type: &[u8]) -> bool {
    const TYPE: &[u8] = b"text/event-stream";
    content_type.len() >= TYPE.len()
        && content_type[..TYPE.len()].eq_ignore_ascii_case(TYPE)
        && matches!(content_type.get(TYPE.len()), None | Some(b';' | b' ' | b'\t'))
}

/// Whether a response's `Content-Type` is gRPC's (`application/grpc`, any
/// case, or a subtype such as `application/grpc+proto`; parameters allowed).
/// Not gRPC-Web (`application/grpc-web`), whose status travels in the body.
pub fn is_grpc(content_type: &[u8]) -> bool {
    const TYPE: &[u8] = b"application/grpc";
    content_type.len() >= TYPE.len()
        && content_type[..TYPE.len()].eq_ignore_ascii_case(TYPE)
        && matches!(content_type.get(TYPE.len()), None | Some(b'+' | b';' | b' ' | b'\t'))
}

/// The HTTP status a gRPC response's `grpc-status` stands for. A gRPC error
/// is an HTTP 200 with the error in its trailers: counted by its status line
/// it would be a success. The mapping is Google's (google.rpc.Code, as
/// grpc-gateway applies it): 14 UNAVAILABLE is a 503, 4 DEADLINE_EXCEEDED a
/// 504, 13 INTERNAL a 500, 5 NOT_FOUND a 404, 1 CANCELLED a 499; but 12
/// UNIMPLEMENTED, a 501 there, is a 404 (a method that does not exist). A
/// value that is not a code reads as 2 UNKNOWN, a 500, as gRPC clients read it.
pub fn grpc_http_status(grpc_status: &[u8]) -> u16 {
    let code = std::str::from_utf8(grpc_status).ok().and_then(|s| s.trim().parse::<u32>().ok());
    match code {
        Some(0) => 200,
        Some(1) => 499,
        Some(3 | 9 | 11) => 400,
        Some(4) => 504,
        Some(5) => 404,
        Some(6 | 10) => 409,
        Some(7) => 403,
        Some(8) => 429,
        // Google maps it to 501; but any client gets it by calling a method
        // that does not exist, as it gets a 404 for a path.
        Some(12) => 404,
        Some(14) => 503,
        Some(16) => 401,
        // 2 UNKNOWN, 13 INTERNAL, 15 DATA_LOSS, and what is not a code.
        _ => 500,
    }
}

/// A gRPC call's deadline, from its `grpc-timeout` header (1 to 8 digits and
/// a unit: `H`, `M`, `S`, `m`, `u`, `n`), in microseconds, rounded up. None
/// for what is not one.
pub fn grpc_timeout_us(value: &[u8]) -> Option<u64> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => n * 3_600_000_000,
        b'M' => n * 60_000_000,
        b'S' => n * 1_000_000,
        b'm' => n * 1_000,
        b'u' => n,
        b'n' => n.div_ceil(1_000),
        _ => return None,
    })
}

/// A service's response counters, both targets. Zeroed is empty.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ResponseCells {
    classes: [[AtomicU64; CLASSES.len()]; 2],
    buckets: [[AtomicU64; BUCKETS]; 2],
    sum_us: [AtomicU64; 2],
}

impl ResponseCells {
    /// Counts one response of `target`: its class, and its upstream response time
    /// when it had one. A few relaxed increments, no lock.
    #[inline]
    pub fn record(&self, target: Target, class: usize, upstream_us: Option<u64>) {
        let t = target.index();
        if let Some(cell) = self.classes[t].get(class) {
            cell.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(us) = upstream_us {
            let bucket = BUCKETS_US.iter().position(|&bound| us <= bound).unwrap_or(BUCKETS - 1);
            self.buckets[t][bucket].fetch_add(1, Ordering::Relaxed);
            self.sum_us[t].fetch_add(us, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> ResponseCounts {
        let mut out = ResponseCounts::default();
        for t in 0..2 {
            for (n, cell) in out.classes[t].iter_mut().zip(&self.classes[t]) {
                *n = cell.load(Ordering::Relaxed);
            }
            for (n, cell) in out.buckets[t].iter_mut().zip(&self.buckets[t]) {
                *n = cell.load(Ordering::Relaxed);
            }
            out.sum_us[t] = self.sum_us[t].load(Ordering::Relaxed);
        }
        out
    }

    /// Sets every counter to `counts` (a ramp step's window start kept in the zone).
    pub fn store(&self, counts: &ResponseCounts) {
        for t in 0..2 {
            for (cell, &n) in self.classes[t].iter().zip(&counts.classes[t]) {
                cell.store(n, Ordering::Relaxed);
            }
            for (cell, &n) in self.buckets[t].iter().zip(&counts.buckets[t]) {
                cell.store(n, Ordering::Relaxed);
            }
            self.sum_us[t].store(counts.sum_us[t], Ordering::Relaxed);
        }
    }
}

/// A copy of [`ResponseCells`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponseCounts {
    /// Per target (old, new) and class.
    pub classes: [[u64; CLASSES.len()]; 2],
    /// Per target and bucket, not cumulative.
    pub buckets: [[u64; BUCKETS]; 2],
    pub sum_us: [u64; 2],
}

impl ResponseCounts {
    /// Adds `other`'s counts (the cells of several processes, summed).
    pub fn add(&mut self, other: &ResponseCounts) {
        for t in 0..2 {
            for (n, o) in self.classes[t].iter_mut().zip(&other.classes[t]) {
                *n += o;
            }
            for (n, o) in self.buckets[t].iter_mut().zip(&other.buckets[t]) {
                *n += o;
            }
            self.sum_us[t] += other.sum_us[t];
        }
    }

    /// What was counted since `earlier` (counters only grow; a reset reads as 0).
    pub fn since(&self, earlier: &ResponseCounts) -> ResponseCounts {
        let mut out = *self;
        for t in 0..2 {
            for (n, e) in out.classes[t].iter_mut().zip(&earlier.classes[t]) {
                *n = n.saturating_sub(*e);
            }
            for (n, e) in out.buckets[t].iter_mut().zip(&earlier.buckets[t]) {
                *n = n.saturating_sub(*e);
            }
            out.sum_us[t] = out.sum_us[t].saturating_sub(earlier.sum_us[t]);
        }
        out
    }

    /// Responses of `target`, every class but `aborted`.
    pub fn total(&self, target: Target) -> u64 {
        self.classes[target.index()][..ABORTED].iter().sum()
    }

    /// 5xx and failed responses of `target`.
    pub fn errors(&self, target: Target) -> u64 {
        let c = &self.classes[target.index()];
        c[4] + c[FAILED]
    }

    /// Errors over responses; 0 with no response.
    pub fn error_rate(&self, target: Target) -> f64 {
        match self.total(target) {
            0 => 0.0,
            total => self.errors(target) as f64 / total as f64,
        }
    }

    /// The `q` quantile of `target`'s upstream response time, in seconds, as
    /// Prometheus's `histogram_quantile` computes it from the same buckets
    /// (linear within a bucket, the first starting at 0; a rank in `+Inf` gives
    /// the largest finite bound). None with no observation.
    pub fn quantile(&self, target: Target, q: f64) -> Option<f64> {
        let buckets = &self.buckets[target.index()];
        let total: u64 = buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &count) in buckets.iter().enumerate() {
            let cumulative = below + count;
            if (cumulative as f64) >= rank && count > 0 {
                if i == BUCKETS - 1 {
                    return Some(BUCKETS_S[BUCKETS_S.len() - 1]);
                }
                let start = if i == 0 { 0.0 } else { BUCKETS_S[i - 1] };
                let end = BUCKETS_S[i];
                return Some(start + (end - start) * ((rank - below as f64) / count as f64));
            }
            below = cumulative;
        }
        Some(BUCKETS_S[BUCKETS_S.len() - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_stream_is_told_by_its_content_type() {
        for yes in
            ["text/event-stream", "Text/Event-Stream", "text/event-stream; charset=utf-8", "text/event-stream ;x=1"]
        {
            assert!(is_event_stream(yes.as_bytes()), "{yes}");
        }
        for no in ["", "text/event", "text/event-streams", "text/html", "application/json", "text/event-stream-x"] {
            assert!(!is_event_stream(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn a_grpc_response_is_told_by_its_content_type_but_grpc_web_is_not() {
        for yes in ["application/grpc", "Application/GRPC", "application/grpc+proto", "application/grpc; charset=x"] {
            assert!(is_grpc(yes.as_bytes()), "{yes}");
        }
        for no in ["", "application/grp", "application/grpc-web", "application/grpc-web+proto", "application/json"] {
            assert!(!is_grpc(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn a_grpc_status_counts_as_the_http_status_it_stands_for() {
        let cases: &[(&str, u16)] = &[
            ("0", 200),
            ("1", 499),
            ("2", 500),
            ("3", 400),
            ("4", 504),
            ("5", 404),
            ("6", 409),
            ("7", 403),
            ("8", 429),
            ("9", 400),
            ("10", 409),
            ("11", 400),
            ("12", 404),
            ("13", 500),
            ("14", 503),
            ("15", 500),
            ("16", 401),
            (" 14 ", 503),
            ("17", 500),
            ("", 500),
            ("x", 500),
            ("-1", 500),
            ("99999999999999999999", 500),
        ];
        for &(value, status) in cases {
            assert_eq!(grpc_http_status(value.as_bytes()), status, "grpc-status {value:?}");
        }
        assert_eq!(class_of(grpc_http_status(b"14")), Some(4), "UNAVAILABLE is a 5xx");
    }

    #[test]
    fn a_grpc_timeout_is_read_in_microseconds() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1H", Some(3_600_000_000)),
            ("2M", Some(120_000_000)),
            ("10S", Some(10_000_000)),
            ("250m", Some(250_000)),
            ("7u", Some(7)),
            ("1n", Some(1)),
            ("1500n", Some(2)),
            ("99999999S", Some(99_999_999_000_000)),
            ("123456789S", None),
            ("S", None),
            ("10", None),
            ("10s", None),
            ("-1S", None),
            ("1 S", None),
            ("", None),
        ];
        for &(value, us) in cases {
            assert_eq!(grpc_timeout_us(value.as_bytes()), us, "grpc-timeout {value:?}");
        }
    }

    #[test]
    fn classes_and_buckets() {
        assert_eq!(class_of(200), Some(1));
        assert_eq!(class_of(503), Some(4));
        assert_eq!(class_of(99), None);
        assert_eq!(class_of(600), None);
        let cells = ResponseCells::default();
        cells.record(Target::New, 1, Some(5_000));
        cells.record(Target::New, 1, Some(5_001));
        cells.record(Target::New, 4, Some(20_000_000));
        cells.record(Target::Old, FAILED, None);
        let s = cells.snapshot();
        assert_eq!(s.buckets[1][0], 1, "5 ms is in the le=0.005 bucket");
        assert_eq!(s.buckets[1][1], 1);
        assert_eq!(s.buckets[1][BUCKETS - 1], 1, "20 s is in +Inf");
        assert_eq!((s.total(Target::New), s.errors(Target::New), s.errors(Target::Old)), (3, 1, 1));
        assert_eq!(s.sum_us[1], 20_010_001);
    }

    #[test]
    fn the_cells_of_several_workers_add_up_field_by_field() {
        let (a, b) = (ResponseCells::default(), ResponseCells::default());
        a.record(Target::New, 1, Some(5_000));
        a.record(Target::Old, 4, Some(700));
        b.record(Target::New, 1, Some(20_000_000));
        b.record(Target::New, FAILED, None);
        let mut sum = ResponseCounts::default();
        sum.add(&a.snapshot());
        sum.add(&b.snapshot());
        assert_eq!(sum.sum_us, [700, 20_005_000], "the latency sums add up");
        assert_eq!((sum.classes[1][1], sum.classes[1][FAILED], sum.classes[0][4]), (2, 1, 1));
        assert_eq!((sum.buckets[1][0], sum.buckets[1][BUCKETS - 1]), (1, 1));
    }

    #[test]
    fn aborted_requests_are_neither_responses_nor_errors() {
        let cells = ResponseCells::default();
        cells.record(Target::New, 1, Some(5_000));
        cells.record(Target::New, 4, Some(5_000));
        for _ in 0..25 {
            cells.record(Target::New, ABORTED, None);
        }
        let s = cells.snapshot();
        assert_eq!(s.classes[1][ABORTED], 25, "counted under their own key");
        assert_eq!((s.total(Target::New), s.errors(Target::New), s.error_rate(Target::New)), (2, 1, 0.5));
        assert_eq!(s.buckets[1].iter().sum::<u64>(), 2, "no latency sample");
    }

    /// The values Prometheus's histogram_quantile gives for the same buckets.
    #[test]
    fn quantiles_as_prometheus_computes_them() {
        let mut c = ResponseCounts::default();
        // 10 in (0, 5 ms], 10 in (5, 10 ms].
        c.buckets[1][0] = 10;
        c.buckets[1][1] = 10;
        assert_eq!(c.quantile(Target::New, 0.5), Some(0.005));
        assert!((c.quantile(Target::New, 0.75).unwrap() - 0.0075).abs() < 1e-12);
        assert!((c.quantile(Target::New, 0.99).unwrap() - 0.0099).abs() < 1e-12);
        assert_eq!(c.quantile(Target::Old, 0.5), None);
        // Everything above 10 s: the largest finite bound.
        let mut slow = ResponseCounts::default();
        slow.buckets[0][BUCKETS - 1] = 3;
        assert_eq!(slow.quantile(Target::Old, 0.99), Some(10.0));
        // A rank past a non-empty bucket lies in a later one (buckets of unequal
        // widths: 1 in (0, 5 ms], 9 in (10, 25 ms]); q = 0 is the start of the
        // first non-empty bucket.
        let mut uneven = ResponseCounts::default();
        uneven.buckets[1][0] = 1;
        uneven.buckets[1][2] = 9;
        let median = uneven.quantile(Target::New, 0.5).unwrap();
        assert!((median - (0.010 + 0.015 * 4.0 / 9.0)).abs() < 1e-12, "{median}");
        let mut late = ResponseCounts::default();
        late.buckets[0][3] = 4;
        assert_eq!(late.quantile(Target::Old, 0.0), Some(0.025));
        assert!((late.quantile(Target::Old, 0.25).unwrap() - 0.03125).abs() < 1e-12);
        // A quantile that is not a number ranks nowhere: the largest finite bound.
        assert_eq!(uneven.quantile(Target::New, f64::NAN), Some(10.0));
        // The cells hold what is stored in them (a ramp step's window).
        let cells = ResponseCells::default();
        cells.store(&uneven);
        assert_eq!(cells.snapshot(), uneven);
        // Windows.
        let later = ResponseCounts { classes: [[0, 7, 0, 0, 2, 1, 0], [0; 7]], ..c };
        let window = later.since(&c);
        assert_eq!((window.total(Target::Old), window.error_rate(Target::Old)), (10, 0.3));
        assert_eq!(window.buckets[1], [0; BUCKETS], "no new response since");
    }
}
