//! `ramp`: a ramp's cells (`RampCells`), moved by several configurations at once.
//!
//! Every worker of every configuration an nginx holds (an older one after a
//! reload, before its signal) publishes and ticks the same cells in the shared
//! zone; a wrong move sends users to a cluster that failed its gate, or judges a
//! step on another step's responses. Arbitrary publications (the same ramp,
//! another ramp or percentage, none; enabled or not; another outcome), ticks (by
//! the cells' configuration or a stale one), stamps and records run on a clock
//! that only moves forward, next to a model of docs/ramp.md: every publication,
//! event, percentage, step, step start, window and last gate is the model's; a
//! stale or frozen tick changes nothing; a stamp records exactly while the
//! position is unchanged; and the README's invariants hold from one reading to
//! the next. Debug assertions are on: an overflow is a crash.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use migration_engine::config::ramp::{Gate, OnFailure, Ramp};
use migration_engine::ramp::{fingerprint, judge, GateReport, Publication, RampCells, RampEvent, RampStamp, RampState};
use migration_engine::responses::{ResponseCounts, BUCKETS, BUCKETS_S, CLASSES};
use migration_engine::Target;

/// The position word keeps 42 bits of Unix milliseconds (the year 2109): the
/// wall clock stays below.
const CLOCK_END: u64 = (1 << 42) - 1;
/// What `start:` can hold: RFC 3339 years 0000 to 9999, with offsets (a step
/// that began before 1970 shows as begun at 0).
const START_MIN: i64 = -62_167_305_540_000;
const START_MAX: i64 = 253_402_387_140_999;
/// `every` is at most 30 days in a configuration.
const EVERY_MAX: u64 = 30 * 86_400_000;
/// The bits of the position word: the restart count's, and the step start's.
const RESTART_MOD: u64 = 32;
const STARTED_MOD: i128 = 1 << 42;
/// Saved stamps per cells (requests in flight).
const IN_FLIGHT: usize = 16;

#[derive(Arbitrary, Debug)]
enum Every {
    Ms(u8),
    Seconds(u16),
    Any(u32),
}

#[derive(Arbitrary, Debug)]
enum Start {
    None,
    /// Milliseconds from the clock's first reading: seconds away,
    Near(i16),
    /// or days.
    Relative(i32),
    Absolute(i64),
}

#[derive(Arbitrary, Debug)]
struct GateSpec {
    min_requests: u8,
    /// Percent, 0 to 100.
    max_error_rate: Option<u8>,
    max_error_rate_vs_old: Option<u8>,
    max_p99_ms: Option<u32>,
    /// Sixteenths above 0.
    max_p99_vs_old: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct RampSpec {
    first: u16,
    gaps: Vec<u16>,
    /// End on 100 %.
    full: bool,
    every: Every,
    start: Start,
    gate: Option<GateSpec>,
    hold: bool,
}

/// A configuration: a ramp of the pool, the service's percentage (None: the
/// first step) and its migration block and backends (the outcome).
#[derive(Arbitrary, Debug)]
struct ConfigSpec {
    ramp: u8,
    percentage: Option<u16>,
    outcome: u8,
}

#[derive(Arbitrary, Debug)]
enum ClockStart {
    Zero,
    /// 2026-11-30 and a bit.
    Today(u32),
    Any(u64),
}

#[derive(Arbitrary, Debug)]
enum Delta {
    None,
    Ms(u8),
    Short(u16),
    Long(u32),
    Far(u64),
}

#[derive(Arbitrary, Debug)]
enum Which {
    /// In force now.
    Fresh,
    /// Taken earlier (a request in flight).
    Saved(u8),
}

#[derive(Arbitrary, Debug)]
enum OpKind {
    /// A process publishes its configuration (a reload, a `watch=`), maybe with
    /// another migration block or backends than the configuration's (an edit).
    Publish { config: u8, outcome: Option<u8>, enabled: bool },
    /// A configuration where the service has no ramp.
    Unpublish { outcome: u8, enabled: bool },
    /// A worker of a configuration (the cells' one, or a stale one) ticks.
    Tick { config: u8 },
    /// A decision reads the percentage in force.
    Stamp,
    /// A response of the split ends.
    Record { stamp: Which, new: bool, class: u8, upstream_us: Option<u32> },
}

#[derive(Arbitrary, Debug)]
struct Op {
    /// Which service's cells (two services, side by side).
    second: bool,
    after: Delta,
    kind: OpKind,
}

#[derive(Arbitrary, Debug)]
struct Input {
    clock: ClockStart,
    ramps: Vec<RampSpec>,
    configs: Vec<ConfigSpec>,
    ops: Vec<Op>,
}

struct Config {
    ramp: Ramp,
    fingerprint: u64,
    outcome: u64,
}

fn ramp_of(spec: &RampSpec, clock0: u64) -> Ramp {
    let mut steps = vec![1 + u32::from(spec.first) % 10_000];
    for gap in spec.gaps.iter().take(15) {
        let next = steps[steps.len() - 1] + 1 + u32::from(*gap) % 2_500;
        if next > 10_000 {
            break;
        }
        steps.push(next);
    }
    if spec.full && steps[steps.len() - 1] < 10_000 {
        steps.push(10_000);
    }
    let every_ms = match spec.every {
        Every::Ms(ms) => 1 + u64::from(ms),
        Every::Seconds(s) => 1_000 * (1 + u64::from(s)),
        Every::Any(ms) => 1 + u64::from(ms) % EVERY_MAX,
    };
    let start_ms = match spec.start {
        Start::None => None,
        Start::Near(d) => Some((clock0 as i64 + i64::from(d)).clamp(START_MIN, START_MAX)),
        Start::Relative(d) => Some((clock0 as i64 + i64::from(d)).clamp(START_MIN, START_MAX)),
        Start::Absolute(t) => Some(START_MIN + t.rem_euclid(START_MAX - START_MIN + 1)),
    };
    let rate = |v: Option<u8>| v.map(|v| f64::from(v % 101) / 100.0);
    let gate = spec.gate.as_ref().map(|g| Gate {
        min_requests: u64::from(g.min_requests % 8),
        max_error_rate: rate(g.max_error_rate),
        max_error_rate_vs_old: rate(g.max_error_rate_vs_old),
        max_p99_ms: g.max_p99_ms.map(u64::from),
        max_p99_vs_old: g.max_p99_vs_old.map(|v| (1.0 + f64::from(v)) / 16.0),
    });
    let on_failure = if spec.hold { OnFailure::Hold } else { OnFailure::Rollback };
    Ramp { steps, every_ms, start_ms, gate, on_failure }
}

/// The position as docs/ramp.md describes it: `started` is when the step began
/// (for `scheduled`, when it will), in plain integers.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Pos {
    state: RampState,
    step: usize,
    started: i128,
}

/// The position word as the cells hold it, for a stamp: what `record` compares.
type Word = (u64, i128, usize, RampState);

struct Saved {
    stamp: RampStamp,
    /// The model's count of position changes when it was taken.
    changes: u64,
    word: Word,
    /// The model's count of restarts when it was taken.
    all_restarts: u64,
}

/// One service's cells as the documentation says they move.
#[derive(Default)]
struct Model {
    /// The configuration that started the ramp in the cells (and its position).
    held: Option<(usize, Pos)>,
    fingerprint: u64,
    outcome: u64,
    frozen_since: u64,
    /// Restarts of the cells, publications without a ramp between them included.
    restarts: u64,
    /// Changes of the position word: transitions, restarts, thaws, removals.
    changes: u64,
    /// Restarts (thaws included), never reset.
    all_restarts: u64,
    window: ResponseCounts,
    last_gate: Option<GateReport>,
    saved: Vec<Saved>,
}

fn is_stopped(state: RampState) -> bool {
    matches!(state, RampState::Held | RampState::RolledBack)
}

fn in_force(ramp: &Ramp, pos: &Pos) -> u32 {
    match pos.state {
        RampState::Scheduled | RampState::RolledBack => 0,
        _ => ramp.steps[pos.step],
    }
}

impl Model {
    fn word(&self, configs: &[Config]) -> Option<Word> {
        let (held, pos) = self.held?;
        let bp = configs[held].ramp.steps[pos.step] as usize;
        Some((self.restarts % RESTART_MOD, pos.started.rem_euclid(STARTED_MOD), bp, pos.state))
    }

    fn publish(&mut self, configs: &[Config], index: usize, outcome: u64, enabled: bool, now: u64) -> Publication {
        let config = &configs[index];
        let ramp = &config.ramp;
        if let Some((_, pos)) = &mut self.held {
            if self.fingerprint == config.fingerprint && !(is_stopped(pos.state) && self.outcome != outcome) {
                self.outcome = outcome;
                if !enabled && self.frozen_since == 0 {
                    self.frozen_since = now.max(1);
                } else if enabled && self.frozen_since != 0 {
                    // Without start the frozen time does not count toward `every`.
                    if ramp.start_ms.is_none() {
                        pos.started += i128::from(now.saturating_sub(self.frozen_since));
                        self.restarts += 1;
                        self.all_restarts += 1;
                        self.changes += 1;
                    }
                    self.frozen_since = 0;
                }
                return Publication::Kept;
            }
        }
        let last = ramp.steps.len() - 1;
        let every = i128::from(ramp.every_ms);
        let now_i = i128::from(now);
        let pos = match ramp.start_ms.map(i128::from) {
            Some(start) if now_i < start => Pos { state: RampState::Scheduled, step: 0, started: start },
            Some(start) => {
                let step = ((now_i - start) / every).min(last as i128) as usize;
                let state = if step == last { RampState::Done } else { RampState::Ramping };
                Pos { state, step, started: (start + step as i128 * every).max(0) }
            }
            None => {
                let state = if last == 0 { RampState::Done } else { RampState::Ramping };
                Pos { state, step: 0, started: now_i }
            }
        };
        // A publication without the ramp kept the count.
        self.restarts += 1;
        self.all_restarts += 1;
        self.held = Some((index, pos));
        self.fingerprint = config.fingerprint;
        self.outcome = outcome;
        self.frozen_since = if enabled { 0 } else { now.max(1) };
        self.changes += 1;
        self.window = ResponseCounts::default();
        self.last_gate = None;
        Publication::Started
    }

    fn unpublish(&mut self) {
        self.held = None;
        self.fingerprint = 0;
        self.frozen_since = 0;
        self.changes += 1;
    }

    fn tick(&mut self, configs: &[Config], index: usize, now: u64) -> Option<RampEvent> {
        let (held, pos) = self.held?;
        if self.frozen_since != 0 || configs[index].fingerprint != self.fingerprint {
            return None;
        }
        if !matches!(pos.state, RampState::Scheduled | RampState::Ramping) {
            return None;
        }
        let ramp = &configs[held].ramp;
        let last = ramp.steps.len() - 1;
        let every = i128::from(ramp.every_ms);
        let now_i = i128::from(now);
        let start = ramp.start_ms.map(i128::from);
        let due = match start {
            Some(start) if now_i < start => return None,
            Some(start) => ((now_i - start) / every).min(last as i128) as usize,
            None if now_i >= pos.started + every => pos.step + 1,
            None => pos.step,
        };
        if pos.state == RampState::Ramping && due <= pos.step {
            return None;
        }
        if let (RampState::Ramping, Some(gate)) = (pos.state, &ramp.gate) {
            let report = judge(gate, &self.window);
            self.last_gate = Some(report.clone());
            match report.verdict {
                // Without a start, low traffic waits; with one, the step begins on time.
                "waiting" if start.is_none() => return None,
                "fail" => {
                    let state = match ramp.on_failure {
                        OnFailure::Hold => RampState::Held,
                        OnFailure::Rollback => RampState::RolledBack,
                    };
                    self.held = Some((held, Pos { state, ..pos }));
                    self.changes += 1;
                    return Some(RampEvent::Failed { step: pos.step, action: ramp.on_failure, gate: report });
                }
                _ => {}
            }
        }
        let done = due == last;
        let state = if done { RampState::Done } else { RampState::Ramping };
        let started = start.map_or(now_i, |s| (s + due as i128 * every).max(0));
        self.held = Some((held, Pos { state, step: due, started }));
        self.changes += 1;
        self.window = ResponseCounts::default();
        Some(RampEvent::Advanced { step: due, percentage_bp: ramp.steps[due], done })
    }
}

/// Adds one response to a window, as `ResponseCells::record` counts it.
fn add(window: &mut ResponseCounts, target: Target, class: usize, upstream_us: Option<u64>) {
    let t = target.index();
    if class < CLASSES.len() {
        window.classes[t][class] += 1;
    }
    if let Some(us) = upstream_us {
        let bucket = BUCKETS_S.iter().position(|&s| us <= (s * 1e6).round() as u64).unwrap_or(BUCKETS - 1);
        window.buckets[t][bucket] += 1;
        window.sum_us[t] += us;
    }
}

/// Every counter of `b` at least `a`'s.
fn grows(a: &ResponseCounts, b: &ResponseCounts) -> bool {
    let pairs = |x: &[u64], y: &[u64]| x.iter().zip(y).all(|(x, y)| x <= y);
    (0..2).all(|t| {
        pairs(&a.classes[t], &b.classes[t]) && pairs(&a.buckets[t], &b.buckets[t]) && a.sum_us[t] <= b.sum_us[t]
    })
}

/// Everything the cells show.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    state: Option<RampState>,
    percentage: Option<u32>,
    /// `in_force()`: the percentage and whether a stamp came with it.
    in_force: Option<(u32, bool)>,
    /// The step as a process compiled from the cells' ramp reads it.
    step: usize,
    started: u64,
    frozen: bool,
    window: ResponseCounts,
    last_gate: Option<GateReport>,
}

fn seen(cells: &RampCells, ramp: Option<&Ramp>) -> Seen {
    Seen {
        state: cells.state(),
        percentage: cells.percentage_in_force(),
        in_force: cells.in_force().map(|f| (f.bp, f.stamp.is_some())),
        step: ramp.map_or(0, |r| cells.step(r)),
        started: cells.step_started_ms(),
        frozen: cells.frozen(),
        window: cells.window(),
        last_gate: cells.last_gate(),
    }
}

fn same_gate(a: &GateReport, b: &GateReport) -> bool {
    let close = |x: f64, y: f64, eps: f64| (x - y).abs() <= eps;
    let p99 = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => close(x, y, 1e-3),
        (x, y) => x.is_none() && y.is_none(),
    };
    a.verdict == b.verdict
        && a.failed == b.failed
        && a.new_requests == b.new_requests
        && a.old_requests == b.old_requests
        && close(a.new_error_rate, b.new_error_rate, 1e-8)
        && close(a.old_error_rate, b.old_error_rate, 1e-8)
        && p99(a.new_p99_ms, b.new_p99_ms)
        && p99(a.old_p99_ms, b.old_p99_ms)
}

/// The cells show what the model says.
fn check_model(model: &Model, configs: &[Config], s: &Seen) {
    let Some((held, pos)) = &model.held else {
        assert_eq!((s.state, s.percentage, s.in_force, s.started, s.frozen), (None, None, None, 0, false), "no ramp");
        return;
    };
    let ramp = &configs[*held].ramp;
    let bp = in_force(ramp, pos);
    assert_eq!(s.state, Some(pos.state), "state; model {pos:?}");
    assert_eq!(s.step, pos.step, "step; model {pos:?}");
    assert_eq!(s.percentage, Some(bp), "percentage in force; model {pos:?}");
    assert_eq!(s.in_force, Some((bp, true)), "in_force() reads what percentage_in_force() reads, with a stamp");
    // A step that began before 1970 cannot be told in u64; one after 2109 not in the word.
    if (0..STARTED_MOD).contains(&pos.started) {
        assert_eq!(i128::from(s.started), pos.started, "step_started_ms; model {pos:?}");
    }
    assert_eq!(s.frozen, model.frozen_since != 0, "frozen");
    assert_eq!(s.window, model.window, "the step's window");
    match (&s.last_gate, &model.last_gate) {
        (Some(a), Some(b)) => assert!(same_gate(a, b), "last gate {a:?}, expected {b:?}"),
        (a, b) => assert_eq!(a.is_none(), b.is_none(), "last gate {a:?}, expected {b:?}"),
    }
}

/// The invariants of a ramp's cells, from one reading to the next, whatever the model says.
fn check_move(
    ramp: Option<&Ramp>,
    before: &Seen,
    after: &Seen,
    publication: Option<Publication>,
    event: Option<&RampEvent>,
) {
    let restarted = matches!(publication, Some(Publication::Started | Publication::None));
    if let (Some(ramp), Some(state), Some(bp)) = (ramp, after.state, after.percentage) {
        let last = ramp.steps.len() - 1;
        assert!(bp == 0 || ramp.steps.contains(&bp), "{bp} in force, steps {:?}", ramp.steps);
        assert_eq!(bp == 0, matches!(state, RampState::Scheduled | RampState::RolledBack), "{bp} in force, {state:?}");
        if state == RampState::Done {
            assert_eq!(after.step, last, "done is the last step");
        }
        if state == RampState::Scheduled {
            assert_eq!(after.step, 0, "scheduled is before the first step");
        }
    }
    match event {
        Some(RampEvent::Advanced { .. }) => assert_eq!(after.window, ResponseCounts::default(), "a step begins empty"),
        _ if restarted && after.state.is_some() => {
            assert_eq!(after.window, ResponseCounts::default(), "a restart begins empty");
            assert_eq!(after.last_gate, None, "a restart forgets the last gate");
        }
        _ if after.state.is_some() => assert!(grows(&before.window, &after.window), "the window only grows"),
        _ => {}
    }
    if restarted {
        return;
    }
    match (before.state, after.state) {
        (None, after) => assert_eq!(after, None, "a ramp appears only when published"),
        (Some(_), None) => panic!("a ramp disappears only when unpublished"),
        (Some(b), Some(a)) => {
            assert!(after.step >= before.step, "steps only move forward: {} then {}", before.step, after.step);
            if matches!(b, RampState::Held | RampState::RolledBack | RampState::Done) {
                assert_eq!((a, after.step), (b, before.step), "{b:?} stays until a publication starts again");
            }
            if a == RampState::Scheduled {
                assert_eq!(b, RampState::Scheduled, "no way back to scheduled");
            }
        }
    }
    if event.is_none() && publication.is_none() {
        assert_eq!(
            (before.state, before.step, before.percentage, before.started),
            (after.state, after.step, after.percentage, after.started),
            "the position moves only with an event, a publication or a thaw"
        );
    }
}

fn advance(now: u64, delta: &Delta) -> u64 {
    let d = match *delta {
        Delta::None => 0,
        Delta::Ms(ms) => u64::from(ms),
        Delta::Short(ms) => u64::from(ms),
        Delta::Long(ms) => u64::from(ms),
        Delta::Far(ms) => ms,
    };
    now.saturating_add(d).min(CLOCK_END)
}

fuzz_target!(|input: Input| {
    let mut now = match input.clock {
        ClockStart::Zero => 0,
        ClockStart::Today(ms) => 1_796_029_200_000 + u64::from(ms),
        ClockStart::Any(ms) => ms % (CLOCK_END + 1),
    };
    let default_ramp = [RampSpec {
        first: 99,
        gaps: vec![899],
        full: true,
        every: Every::Ms(99),
        start: Start::None,
        gate: None,
        hold: false,
    }];
    let ramps: Vec<Ramp> = (if input.ramps.is_empty() { &default_ramp[..] } else { &input.ramps[..] })
        .iter()
        .take(4)
        .map(|spec| ramp_of(spec, now))
        .collect();
    let default_config = [ConfigSpec { ramp: 0, percentage: None, outcome: 0 }];
    let configs: Vec<Config> = (if input.configs.is_empty() { &default_config[..] } else { &input.configs[..] })
        .iter()
        .take(4)
        .map(|c| {
            let ramp = ramps[usize::from(c.ramp) % ramps.len()].clone();
            let percentage = c.percentage.map_or(ramp.steps[0], |p| u32::from(p) % 10_001);
            Config { fingerprint: fingerprint(&ramp, percentage), outcome: 2 * u64::from(c.outcome % 4) + 1, ramp }
        })
        .collect();

    let all = [RampCells::default(), RampCells::default()];
    let mut models = [Model::default(), Model::default()];

    for op in input.ops.iter().take(256) {
        now = advance(now, &op.after);
        let i = usize::from(op.second);
        let (cells, model) = (&all[i], &mut models[i]);
        let held_ramp = |m: &Model| m.held.map(|(h, _)| configs[h].ramp.clone());
        let ramp_before = held_ramp(model);
        let before = seen(cells, ramp_before.as_ref());
        let mut publication = None;
        let mut event = None;
        match op.kind {
            OpKind::Publish { config, outcome, enabled } => {
                let index = usize::from(config) % configs.len();
                let c = &configs[index];
                let outcome = outcome.map_or(c.outcome, |o| 2 * u64::from(o % 4) + 1);
                let got = cells.publish(Some(&c.ramp), c.fingerprint, outcome, enabled, now);
                let want = model.publish(&configs, index, outcome, enabled, now);
                assert_eq!(got, want, "publication of config {index}, enabled {enabled}, at {now}");
                publication = Some(got);
            }
            OpKind::Unpublish { outcome, enabled } => {
                let got = cells.publish(None, 0, 2 * u64::from(outcome) + 1, enabled, now);
                assert_eq!(got, Publication::None);
                model.unpublish();
                publication = Some(got);
            }
            OpKind::Tick { config } => {
                let index = usize::from(config) % configs.len();
                let c = &configs[index];
                let stale = model.held.is_none() || c.fingerprint != model.fingerprint || model.frozen_since != 0;
                event = cells.tick(&c.ramp, c.fingerprint, now);
                let want = model.tick(&configs, index, now);
                assert_eq!(event, want, "tick of config {index} at {now}");
                if stale {
                    assert_eq!(event, None);
                    assert_eq!(seen(cells, ramp_before.as_ref()), before, "a stale or frozen tick changes nothing");
                }
            }
            OpKind::Stamp => {
                let stamp = cells.in_force().and_then(|f| f.stamp);
                assert_eq!(stamp.is_some(), model.held.is_some(), "a stamp exactly when a ramp is in the cells");
                if let (Some(stamp), Some(word)) = (stamp, model.word(&configs)) {
                    if model.saved.len() == IN_FLIGHT {
                        model.saved.remove(0);
                    }
                    let all_restarts = model.all_restarts;
                    model.saved.push(Saved { stamp, changes: model.changes, word, all_restarts });
                }
            }
            OpKind::Record { ref stamp, new, class, upstream_us } => {
                let target = if new { Target::New } else { Target::Old };
                let class = usize::from(class % (CLASSES.len() as u8 + 1));
                let upstream_us = upstream_us.map(u64::from);
                let saved = match *stamp {
                    Which::Saved(k) if !model.saved.is_empty() => {
                        let s = &model.saved[usize::from(k) % model.saved.len()];
                        Some((s.stamp, s.changes, Some(s.word), s.all_restarts))
                    }
                    _ => cells
                        .in_force()
                        .and_then(|f| f.stamp)
                        .map(|s| (s, model.changes, model.word(&configs), model.all_restarts)),
                };
                if let Some((stamp, changes, word, all_restarts)) = saved {
                    let got = cells.record(stamp, target, class, upstream_us);
                    // What the cells compare: the word the stamp was read from with theirs.
                    assert_eq!(got, word == model.word(&configs), "record compares the position word");
                    // What the documentation promises: no change of the word since.
                    let unchanged = changes == model.changes;
                    // The restart count has 5 bits: after 32 restarts the word (and a
                    // stamp read with it) may come back (docs of `Position`).
                    let wrapped = model.all_restarts - all_restarts >= RESTART_MOD;
                    if !(got && !unchanged && wrapped) {
                        assert_eq!(got, unchanged, "a stamp records exactly while the position is unchanged");
                    }
                    if got {
                        add(&mut model.window, target, class, upstream_us);
                    }
                }
            }
        }
        let ramp_after = held_ramp(model);
        let after = seen(cells, ramp_after.as_ref());
        check_model(model, &configs, &after);
        check_move(ramp_after.as_ref(), &before, &after, publication, event.as_ref());
        if let Some(RampEvent::Failed { .. }) = event {
            assert_eq!(after.window, before.window, "a failed step keeps its window");
            assert_eq!(after.last_gate.as_ref().map(|g| g.verdict), Some("fail"));
        }
        // The other service's cells are untouched.
        let other = &models[1 - i];
        check_model(other, &configs, &seen(&all[1 - i], held_ramp(other).as_ref()));
    }
});
