//! `replay`: every line of access logs decided by the engine, as the module
//! would have decided it, and counted per service.
//!
//! Weight decisions are random per request, so they are counted as expected
//! values: a request decided by a 20 % weight adds 0.2 to new and 0.8 to old.
//! A user is the user id read through the service's `user_key` (for strategy
//! `ip`, the client address); users are kept as 64-bit hashes of their ids
//! (a collision among a billion users has odds below 3 %). For each user the
//! chance that it reached a side at least once is `1 - Π(1 - p)` over its
//! requests: exact (0 or 1) when no weight decided them.
//!
//! A line for a service with `sticky` whose request carries no id is a client
//! that would have been given one (a random id): each such line is one new
//! user, counted in `minted` and, as an expected value, on each side. It is
//! decided as if it carried an id; when the id's hash decides, its share of new
//! is the percentage (the hash of a random id is uniform), as for weight.

use std::fs::File;
use std::io::{BufReader, ErrorKind, IsTerminal, Read};
use std::path::{Path, PathBuf};

use ahash::AHashMap;
use indicatif::{ProgressBar, ProgressStyle};
use migration_engine::config::Strategy;
use migration_engine::{
    cookie_to_mint, decide, CompiledConfig, Decision, RequestView, Rule, ServiceChoice, Target, WithUserCookie,
};
use serde_json::{json, Map, Value};

use crate::logformat::{Field, LogFormat};
use crate::{Failed, Format};

#[derive(clap::Args)]
pub struct Args {
    /// The YAML file to decide by.
    file: PathBuf,
    /// Access logs, plain or gzip (any file starting with gzip's magic bytes); `-`
    /// (or /dev/stdin, a FIFO) reads a pipe. Lines longer than 64 KiB are counted as
    /// unparsed without being held in memory.
    #[arg(required = true, value_name = "LOG")]
    logs: Vec<PathBuf>,
    /// The nginx log_format string the logs were written with (`combined` for nginx's predefined one).
    #[arg(long, value_name = "FORMAT")]
    log_format: String,
    /// A second YAML file: also count the requests and users that would move between the two.
    #[arg(long, value_name = "OTHER")]
    against: Option<PathBuf>,
    /// The Host of every request whose line names none: all of them when FORMAT has
    /// neither $host nor $http_host (nginx's `combined` has neither), else those
    /// whose field is empty or `-`.
    #[arg(long, value_name = "H", conflicts_with = "service")]
    host: Option<String>,
    /// Decide every line for this service, whatever its Host, as a location with
    /// `migration_service NAME` does.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// Print at most this many unparsable lines (all are counted).
    #[arg(long, default_value_t = 10, value_name = "N")]
    show_unparsed: usize,
    /// Never draw a progress bar (none is drawn when stderr is not a terminal anyway).
    #[arg(long)]
    no_progress: bool,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Per user: the chance that none of its requests went new, none went old, none
/// moved old→new, none moved new→old; and the rules that decided its requests
/// (bit `Rule::index`).
#[derive(Clone, Copy)]
struct User {
    not_new: f64,
    not_old: f64,
    no_up: f64,
    no_down: f64,
    rules: u16,
}

const NEW_USER: User = User { not_new: 1.0, not_old: 1.0, no_up: 1.0, no_down: 1.0, rules: 0 };
const _: () = assert!(Rule::COUNT <= 16, "User::rules holds one bit per rule");

#[derive(Default)]
struct ServiceStats {
    /// Expected requests to old and new.
    requests: [f64; 2],
    rules: [u64; Rule::COUNT],
    users: AHashMap<u64, User>,
    moved: [f64; 2],
    requests_without_user: u64,
    /// Requests that would be given an id (`sticky`): each one a new user.
    minted: u64,
    /// Those users: expected on old and new, expected moved old→new and new→old.
    minted_users: [f64; 2],
    minted_moved: [f64; 2],
    /// Those users by the rule that decided their request.
    minted_by_rule: [u64; Rule::COUNT],
}

#[derive(Default)]
pub struct Totals {
    lines: u64,
    unparsed: u64,
    unmatched: u64,
    services: Vec<ServiceStats>,
    shown: Vec<String>,
}

/// The chance that a decision sent its request to new.
fn new_share(config: &CompiledConfig, d: &Decision) -> Option<f64> {
    let target = d.target?;
    if d.rule == Rule::Weight {
        let s = &config.services[d.service? as usize];
        return Some(f64::from(s.percentage_bp) / 10_000.0);
    }
    Some(if target == Target::New { 1.0 } else { 0.0 })
}

/// The id a request given one is decided with: any id decides the steps before
/// the split as the random one would, and its hash is not used (see
/// [`decide_counted`]).
const PLACEHOLDER_ID: &[u8] = b"AAAAAAAAAAAAAAAAAAAAAA";

/// A request decided for counting: its decision, its chance of new, and
/// whether it would be given an id (`sticky`). Such a request is decided as if
/// it carried one; when the id's hash decides, its chance of new is the
/// percentage in force (the hash of a random id is uniform).
fn decide_counted<R: RequestView>(
    config: &CompiledConfig,
    choice: ServiceChoice<'_>,
    request: &R,
) -> (Decision, Option<f64>, bool) {
    // The draw is never used: weight decisions count as expected values.
    let Some(cookie) = cookie_to_mint(config, choice, request) else {
        let d = decide(config, choice, request, &mut || 0);
        return (d, new_share(config, &d), false);
    };
    let with = WithUserCookie { request, name: cookie.name.as_bytes(), value: PLACEHOLDER_ID };
    let d = decide(config, choice, &with, &mut || 0);
    let p = match d.rule {
        Rule::UserHash => d.target.map(|_| f64::from(d.percentage_bp) / 10_000.0),
        _ => new_share(config, &d),
    };
    (d, p, true)
}

fn user_hash(bytes: &[u8]) -> u64 {
    // Fixed keys: the same id is the same user in every file of the run.
    const KEYS: ahash::RandomState = ahash::RandomState::with_seeds(0x6d69_6772, 0x6174_696f, 0x6e2d_7573, 0x6572_7321);
    KEYS.hash_one(bytes)
}

struct Replayer<'c> {
    config: &'c CompiledConfig,
    against: Option<&'c CompiledConfig>,
    /// `--service`: the service of every line, in `config` and in `against`.
    service: Option<(ServiceChoice<'static>, ServiceChoice<'static>)>,
    format: LogFormat,
    totals: Totals,
    show_unparsed: usize,
    fields: Vec<Field>,
    scratch: Vec<u8>,
}

impl Replayer<'_> {
    fn unparsed(&mut self, why: impl FnOnce() -> String) {
        self.totals.unparsed += 1;
        if self.totals.shown.len() < self.show_unparsed {
            self.totals.shown.push(why());
        }
    }

    fn line(&mut self, file: &str, number: u64, line: LogLine<'_>) {
        self.totals.lines += 1;
        let line = match line {
            LogLine::Whole(line) => line,
            LogLine::TooLong { start, length } => {
                return self.unparsed(|| {
                    let shown = String::from_utf8_lossy(start);
                    let (length, max) = (grouped(length as f64), grouped(MAX_LINE as f64));
                    format!("{file}:{number}: {length} bytes, longer than the {max} a line may have: {shown}")
                });
            }
        };
        if !self.format.split(line, &mut self.fields, &mut self.scratch) {
            return self.unparsed(|| {
                let shown = String::from_utf8_lossy(&line[..line.len().min(SHOWN_BYTES)]);
                format!("{file}:{number}: not in the log format: {shown}")
            });
        }
        let request = self.format.view(line, &self.fields, &self.scratch);
        let (choice, other_choice) = self.service.unwrap_or((ServiceChoice::Auto, ServiceChoice::Auto));
        let (d, p, minted) = decide_counted(self.config, choice, &request);
        let (Some(index), Some(p)) = (d.service, p) else {
            self.totals.unmatched += 1;
            return;
        };
        let service = &self.config.services[index as usize];
        let stats = &mut self.totals.services[index as usize];
        stats.requests[0] += 1.0 - p;
        stats.requests[1] += p;
        stats.rules[d.rule.index()] += 1;
        let (mut up, mut down) = (0.0, 0.0);
        if let Some(other) = self.against {
            if let (_, Some(q), _) = decide_counted(other, other_choice, &request) {
                // One coin per request for both files: what the change itself moves.
                up = (q - p).max(0.0);
                down = (p - q).max(0.0);
                stats.moved[0] += up;
                stats.moved[1] += down;
            }
        }
        if minted {
            // A new user, not one of the ids seen: one request, so its chances
            // are the request's.
            stats.minted += 1;
            stats.minted_users[0] += 1.0 - p;
            stats.minted_users[1] += p;
            stats.minted_moved[0] += up;
            stats.minted_moved[1] += down;
            stats.minted_by_rule[d.rule.index()] += 1;
            return;
        }
        let user = match service.strategy {
            Strategy::Ip => Some(request_addr(&request)),
            _ => service.user_id(&request),
        };
        let Some(user) = user else {
            stats.requests_without_user += 1;
            return;
        };
        let u = stats.users.entry(user_hash(user)).or_insert(NEW_USER);
        u.not_new *= 1.0 - p;
        u.not_old *= p;
        u.no_up *= 1.0 - up;
        u.no_down *= 1.0 - down;
        u.rules |= 1 << d.rule.index();
    }
}

fn request_addr<'a>(r: &'a crate::logformat::LineRequest<'a>) -> &'a [u8] {
    r.client_addr_text()
}

/// The longest line replay reads: a longer one is counted as unparsed without
/// being held, so that memory never follows the longest line of a log.
pub const MAX_LINE: usize = 64 * 1024;

/// How much of an unparsed line is shown.
const SHOWN_BYTES: usize = 120;

/// One line of a log: whole, or only its first bytes when it is longer than
/// [`MAX_LINE`] (with its length).
enum LogLine<'a> {
    Whole(&'a [u8]),
    TooLong { start: &'a [u8], length: u64 },
}

/// Where the reading of a log stopped before its end.
struct Stopped {
    /// Complete lines read (and counted) before the error.
    lines: u64,
    /// Bytes of the log read (after gunzip).
    offset: u64,
    error: std::io::Error,
}

/// Opens a log (`-` for stdin) as its lines' bytes, gunzipped when it starts
/// with gzip's magic bytes (then true). The file is opened and read once: a pipe or a FIFO
/// cannot be read again, so the two bytes sniffed are handed back in front.
fn open_log(path: &Path, progress: &ProgressBar) -> std::io::Result<(Box<dyn Read>, bool)> {
    let input: Box<dyn Read> =
        if path.as_os_str() == "-" { Box::new(std::io::stdin().lock()) } else { Box::new(File::open(path)?) };
    let mut input = progress.wrap_read(input);
    // A pipe may deliver fewer bytes than asked (even one), so read until two
    // or the end rather than peeking once at a buffer.
    let mut magic = [0u8; 2];
    let mut sniffed = 0;
    while sniffed < magic.len() {
        match input.read(&mut magic[sniffed..]) {
            Ok(0) => break,
            Ok(n) => sniffed += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let whole = std::io::Cursor::new(magic[..sniffed].to_vec()).chain(input);
    Ok(if magic[..sniffed] == [0x1f, 0x8b] {
        (Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, whole))), true)
    } else {
        (Box::new(whole), false)
    })
}

/// Reads a log line by line, in large chunks, with memory bounded by
/// [`MAX_LINE`] whatever its lines' lengths. Stops at the first read error, with
/// the lines before it given out.
fn read_lines(mut reader: impl Read, mut each: impl FnMut(u64, LogLine<'_>)) -> Result<(), Stopped> {
    // Larger than MAX_LINE: after a partial line of at most MAX_LINE bytes is
    // moved to the front, a read always has room.
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    let mut number = 0u64;
    let mut offset = 0u64;
    // The line being read over, too long to keep: its first bytes and its length so far.
    let mut too_long: Option<(Vec<u8>, u64)> = None;
    loop {
        let n = match reader.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(Stopped { lines: number, offset, error }),
        };
        offset += n as u64;
        let end = filled + n;
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', &buf[filled..end]) {
            let at = filled + newline;
            number += 1;
            if let Some((first, length)) = too_long.take() {
                each(number, LogLine::TooLong { start: &first, length: length + at as u64 });
            } else if at - start > MAX_LINE {
                let shown = &buf[start..start + SHOWN_BYTES];
                each(number, LogLine::TooLong { start: shown, length: (at - start) as u64 });
            } else if at > start {
                each(number, LogLine::Whole(&buf[start..at]));
            }
            start = at + 1;
        }
        let rest = end - start;
        if n == 0 {
            // The end: a last line without a newline.
            if let Some((first, length)) = too_long {
                each(number + 1, LogLine::TooLong { start: &first, length });
            } else if rest > MAX_LINE {
                let shown = &buf[start..start + SHOWN_BYTES];
                each(number + 1, LogLine::TooLong { start: shown, length: rest as u64 });
            } else if rest > 0 {
                each(number + 1, LogLine::Whole(&buf[start..end]));
            }
            return Ok(());
        }
        if let Some((_, length)) = &mut too_long {
            *length += rest as u64;
            filled = 0;
        } else if rest > MAX_LINE {
            too_long = Some((buf[start..start + SHOWN_BYTES].to_vec(), rest as u64));
            filled = 0;
        } else {
            buf.copy_within(start..end, 0);
            filled = rest;
        }
    }
}

fn progress_bar(args: &Args) -> ProgressBar {
    if args.no_progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let total: u64 = args.logs.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}")
            .expect("a valid template"),
    );
    bar
}

/// Whether the log format records cookie `name`: `$cookie_NAME` or `$http_cookie`.
fn records_cookie(format: &str, name: &str) -> bool {
    let format = if format == "combined" { crate::logformat::COMBINED } else { format };
    let wanted = format!("cookie_{}", name.to_ascii_lowercase());
    format.split('$').skip(1).any(|rest| {
        let var = match rest.strip_prefix('{') {
            Some(braced) => braced.split('}').next().unwrap_or_default(),
            None => rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or_default(),
        };
        let var = var.to_ascii_lowercase();
        var == "http_cookie" || var == wanted
    })
}

/// `--service NAME` as the service at its index of `config` (read from `file`).
fn service_named(config: &CompiledConfig, file: &Path, name: &str) -> Result<ServiceChoice<'static>, Failed> {
    match config.services.iter().position(|s| s.name == name) {
        Some(index) => Ok(ServiceChoice::Index(index as u32)),
        None => {
            let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
            Err(Failed(Some(format!(
                "--service {name:?}: {} has no such service (it has {})",
                file.display(),
                names.join(", ")
            ))))
        }
    }
}

pub fn run(args: Args) -> Result<(), Failed> {
    let mut format = LogFormat::parse(&args.log_format).map_err(|e| Failed(Some(format!("--log-format: {e}"))))?;
    if let Some(host) = &args.host {
        format.set_default_host(host.as_bytes());
    }
    if !format.has_host() && args.host.is_none() && args.service.is_none() {
        eprintln!(
            "nginx-migration: warning: the log format has neither $host nor $http_host: no line can match a \
             service by its Host (--host H or --service NAME says whose requests the log holds)"
        );
    }
    let config = crate::explain::load(&args.file)?;
    let against = args.against.as_deref().map(crate::explain::load).transpose()?;
    let mut warned: Vec<(&str, &str)> = Vec::new();
    for s in config.services.iter().chain(against.iter().flat_map(|a| &a.services)) {
        let Some(cookie) = s.sticky().filter(|c| !records_cookie(&args.log_format, &c.name)) else { continue };
        if !warned.contains(&(s.name.as_str(), &*cookie.name)) {
            warned.push((s.name.as_str(), &cookie.name));
            eprintln!(
                "nginx-migration: warning: service {} has sticky, but the log format records neither $cookie_{} nor \
                 $http_cookie: every line for it counts as a client without an id, given one",
                s.name, cookie.name
            );
        }
    }
    let service = match &args.service {
        Some(name) => Some((
            service_named(&config, &args.file, name)?,
            match (&against, &args.against) {
                (Some(other), Some(file)) => service_named(other, file, name)?,
                _ => ServiceChoice::Auto,
            },
        )),
        None => None,
    };
    let progress = progress_bar(&args);
    let mut r = Replayer {
        config: &config,
        against: against.as_ref(),
        service,
        format,
        totals: Totals {
            services: config.services.iter().map(|_| ServiceStats::default()).collect(),
            ..Totals::default()
        },
        show_unparsed: args.show_unparsed,
        fields: Vec::new(),
        scratch: Vec::new(),
    };
    let started = std::time::Instant::now();
    // A log that cannot be read to its end (a truncated .gz, a missing file)
    // does not lose the others: each is said, the counts are printed, exit 1.
    let mut incomplete = Vec::new();
    for log in &args.logs {
        let name = log.display().to_string();
        progress.set_message(name.clone());
        let (reader, gzip) = match open_log(log, &progress) {
            Ok(opened) => opened,
            Err(e) => {
                incomplete.push(format!("{name}: {e}; not read"));
                continue;
            }
        };
        if let Err(stopped) = read_lines(reader, |number, line| r.line(&name, number, line)) {
            incomplete.push(format!(
                "{name}: reading stopped after line {} (byte {} of the log{}): {}; the lines before it are counted",
                grouped(stopped.lines as f64),
                grouped(stopped.offset as f64),
                if gzip { ", gunzipped" } else { "" },
                stopped.error
            ));
        }
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    let totals = r.totals;
    // A log line is what a client sent: shown escaped, so that it cannot write
    // to the operator's terminal.
    for shown in &totals.shown {
        eprintln!("nginx-migration: {}", migration_engine::config::escape_controls(shown));
    }
    if totals.unparsed > totals.shown.len() as u64 {
        eprintln!("nginx-migration: {} lines could not be parsed ({} shown)", totals.unparsed, totals.shown.len());
    }
    for problem in &incomplete {
        eprintln!("nginx-migration: {problem}");
    }
    let parsed = totals.lines - totals.unparsed;
    if parsed > 0 && totals.unmatched == parsed {
        match &args.host {
            Some(host) => eprintln!(
                "nginx-migration: no line was for a service: neither the hosts the lines name nor --host {host:?} \
                 is one that a service of {} serves",
                args.file.display()
            ),
            None => eprintln!(
                "nginx-migration: no line named a host that a service serves; logs without $host need --host or \
                 --service"
            ),
        }
    }
    match args.format {
        Format::Json => print_json(&config, &totals, against.is_some()),
        Format::Text => print_text(&config, &totals, against.is_some(), elapsed),
    }
    if incomplete.is_empty() {
        Ok(())
    } else {
        Err(Failed(None))
    }
}

/// A count that is whole when no weight decision went into it.
fn number(x: f64) -> Value {
    let rounded = (x * 100.0).round() / 100.0;
    if rounded.fract() == 0.0 && rounded.abs() < 9.0e15 {
        json!(rounded as i64)
    } else {
        json!(rounded)
    }
}

/// Users on each side: the ids seen, and the users given an id.
fn users(stats: &ServiceStats) -> [f64; 2] {
    let [old, new] = stats.minted_users;
    stats.users.values().fold([old, new], |[old, new], u| [old + 1.0 - u.not_old, new + 1.0 - u.not_new])
}

/// Distinct users whose requests `rule` decided (a user may count under several rules).
fn users_by_rule(stats: &ServiceStats) -> [u64; Rule::COUNT] {
    let mut counts = stats.minted_by_rule;
    for u in stats.users.values() {
        for (i, count) in counts.iter_mut().enumerate() {
            *count += u64::from(u.rules >> i & 1);
        }
    }
    counts
}

fn moved_users(stats: &ServiceStats) -> [f64; 2] {
    let [up, down] = stats.minted_moved;
    stats.users.values().fold([up, down], |[up, down], u| [up + 1.0 - u.no_up, down + 1.0 - u.no_down])
}

fn print_json(config: &CompiledConfig, totals: &Totals, against: bool) {
    let mut services = Map::new();
    for (s, stats) in config.services.iter().zip(&totals.services) {
        let [uo, un] = users(stats);
        let rules: Map<String, Value> = Rule::ALL
            .iter()
            .filter(|r| **r != Rule::None)
            .map(|r| (r.as_str().to_owned(), json!(stats.rules[r.index()])))
            .collect();
        let by_rule = users_by_rule(stats);
        let users_by_rule: Map<String, Value> = Rule::ALL
            .iter()
            .filter(|r| **r != Rule::None)
            .map(|r| (r.as_str().to_owned(), json!(by_rule[r.index()])))
            .collect();
        let mut entry = json!({
            "requests": {"old": number(stats.requests[0]), "new": number(stats.requests[1])},
            "users": {"old": number(uo), "new": number(un)},
            "rules": rules,
            "users_by_rule": users_by_rule,
        });
        if s.sticky().is_some() {
            entry["users"]["minted"] = json!(stats.minted);
        }
        if against {
            let [mu, md] = moved_users(stats);
            entry["moved"] = json!({
                "requests": {"old_to_new": number(stats.moved[0]), "new_to_old": number(stats.moved[1])},
                "users": {"old_to_new": number(mu), "new_to_old": number(md)},
            });
        }
        services.insert(s.name.clone(), entry);
    }
    let doc = json!({"lines": totals.lines, "unparsed": totals.unparsed, "unmatched": totals.unmatched, "services": services});
    println!("{}", serde_json::to_string_pretty(&doc).expect("JSON of numbers"));
}

/// `1234567.25` as `1,234,567.25`; whole numbers without decimals.
fn grouped(x: f64) -> String {
    let rounded = (x * 100.0).round() / 100.0;
    let whole = rounded.trunc() as i64;
    let digits = whole.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if whole < 0 {
        out.insert(0, '-');
    }
    let cents = ((rounded - rounded.trunc()).abs() * 100.0).round() as u64;
    if cents > 0 {
        out.push_str(&format!(".{cents:02}"));
    }
    out
}

fn print_text(config: &CompiledConfig, totals: &Totals, against: bool, elapsed: std::time::Duration) {
    let rate = totals.lines as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "{} lines ({} unparsed, {} for no service) in {:.2} s, {} lines/s",
        grouped(totals.lines as f64),
        grouped(totals.unparsed as f64),
        grouped(totals.unmatched as f64),
        elapsed.as_secs_f64(),
        grouped(rate.round())
    );
    for (s, stats) in config.services.iter().zip(&totals.services) {
        let total = stats.requests[0] + stats.requests[1];
        let share = |x: f64| if total > 0.0 { format!(" ({:.2} %)", 100.0 * x / total) } else { String::new() };
        println!();
        println!("service {}: {} requests", s.name, grouped(total));
        println!(
            "  requests  old {}{}  new {}{}",
            grouped(stats.requests[0]),
            share(stats.requests[0]),
            grouped(stats.requests[1]),
            share(stats.requests[1])
        );
        let [uo, un] = users(stats);
        let without = if s.sticky().is_some() {
            format!("{} requests would be given an id (sticky), each one more user", grouped(stats.minted as f64))
        } else {
            format!("{} requests without a user id", grouped(stats.requests_without_user as f64))
        };
        println!(
            "  users     old {}  new {}  ({} distinct; {without})",
            grouped(uo),
            grouped(un),
            grouped(stats.users.len() as f64),
        );
        let by_rule = users_by_rule(stats);
        let rules: Vec<String> = Rule::ALL
            .iter()
            .filter(|r| stats.rules[r.index()] > 0)
            .map(|r| {
                let (requests, users) = (stats.rules[r.index()] as f64, by_rule[r.index()] as f64);
                format!("{} {} ({} users)", r.as_str(), grouped(requests), grouped(users))
            })
            .collect();
        println!("  rules     {}", if rules.is_empty() { "-".to_owned() } else { rules.join(", ") });
        if stats.rules[Rule::Weight.index()] > 0 {
            println!("            (weight decisions counted as expected values)");
        }
        if stats.minted_by_rule[Rule::UserHash.index()] > 0 {
            println!(
                "            (requests given an id counted as expected values: a new id goes new with the \
                 percentage's probability)"
            );
        }
        if against {
            let [mu, md] = moved_users(stats);
            println!(
                "  moved     requests old→new {}  new→old {};  users old→new {}  new→old {}",
                grouped(stats.moved[0]),
                grouped(stats.moved[1]),
                grouped(mu),
                grouped(md)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its bytes in pieces of the given sizes, in turn: lines cut
    /// anywhere by the reads, as a pipe cuts them.
    struct Pieces<'a> {
        bytes: &'a [u8],
        sizes: &'a [usize],
        turn: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.sizes[self.turn % self.sizes.len()].min(out.len()).min(self.bytes.len());
            self.turn += 1;
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn lines_at_and_over_the_limit_whatever_the_reads() {
        let lengths = [3, 0, MAX_LINE, MAX_LINE + 1, 5, 3 * MAX_LINE, (2 << 20) + 7, 1, MAX_LINE + 1];
        let mut log = Vec::new();
        for (i, &length) in lengths.iter().enumerate() {
            log.extend(std::iter::repeat_n(b'a' + i as u8, length));
            if i + 1 < lengths.len() {
                log.push(b'\n');
            }
        }
        // An empty line is numbered but not given out.
        let expected: Vec<(u64, bool, u64)> = lengths
            .iter()
            .enumerate()
            .filter(|(_, &length)| length > 0)
            .map(|(i, &length)| (i as u64 + 1, length > MAX_LINE, length as u64))
            .collect();
        for sizes in [&[1 << 20][..], &[1], &[7, MAX_LINE - 1, 3], &[MAX_LINE + 1], &[100_000, 1]] {
            let mut seen = Vec::new();
            let reader = Pieces { bytes: &log, sizes, turn: 0 };
            let read = read_lines(reader, |number, line| match line {
                LogLine::Whole(bytes) => {
                    assert!(bytes.iter().all(|&b| b == bytes[0]), "line {number} is one line");
                    seen.push((number, false, bytes.len() as u64));
                }
                LogLine::TooLong { start, length } => {
                    assert_eq!(start.len(), SHOWN_BYTES);
                    assert_eq!(start[0], b'a' + number as u8 - 1, "line {number} starts as it did");
                    seen.push((number, true, length));
                }
            });
            assert!(read.is_ok());
            assert_eq!(seen, expected, "reads of {sizes:?}");
        }
    }
}
