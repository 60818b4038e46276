//! `explain`: one request through the engine's traced decision
//! (`decide_traced`, the function the module calls untraced), printed step by step.

use std::net::IpAddr;
use std::path::PathBuf;

use migration_engine::{
    args_of_query, cookie_to_mint, decide_traced, parse_header_line, BreakerCells, Breakers, CompiledConfig, Decision,
    HeaderLine, Outcome, OwnedRequest, Rule, ServiceChoice, StickyId, Trace, WithUserCookie,
};
use serde_json::json;

use crate::{Failed, Format};

#[derive(clap::Args)]
pub struct Args {
    /// The YAML file (a service document or a ConfigMap manifest).
    file: PathBuf,
    /// The request's Host (a port is ignored, as by the module).
    #[arg(long)]
    host: String,
    /// A request header line, `Name: value`, read as nginx reads one (HTTP/1.1): the
    /// spaces around the value are dropped (tabs stay); a name with a space or a
    /// control character is refused (nginx answers 400), one with another byte
    /// than letters, digits and `-` is left out as nginx leaves it out (with a note
    /// on stderr). Repeat for more (the first of a repeated name decides).
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = header_line)]
    headers: Vec<String>,
    /// The server has `underscores_in_headers on`: header names with `_` are kept
    /// (nginx's default, off, leaves such headers out of the request).
    #[arg(long)]
    underscores_in_headers: bool,
    /// A cookie, `name=value`; repeat for more. All are sent as one Cookie header,
    /// in order after any `--header 'Cookie: ...'`, and read as `$cookie_NAME`
    /// reads it (the module's own parser).
    #[arg(long = "cookie", value_name = "NAME=VALUE", value_parser = cookie)]
    cookies: Vec<String>,
    /// The query string, without `?` (`a=1&b=2`), as `$args` has it: nothing is
    /// decoded, a `#` ends it, and a space or a control character is refused
    /// (nginx answers 400).
    #[arg(long, value_name = "QUERY", value_parser = query)]
    args: Option<String>,
    /// The client address as `$remote_addr` gives it (after realip). Without it the
    /// request has no client address: ip rules and `from:` never match.
    #[arg(long, value_name = "ADDR")]
    ip: Option<IpAddr>,
    /// An nginx variable for `user_key: var:NAME`, `name=value`; repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = name_value)]
    vars: Vec<String>,
    /// Decide for this service whatever the Host (`migration_service NAME`).
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// Every service's fallback breaker is open (the new cluster is failing).
    #[arg(long)]
    fallback_open: bool,
    /// The percentage in force for the request's service, as a ramp may have moved
    /// it from the file's `migration.percentage` (`30`, `12.5`; at most two decimals).
    #[arg(long, value_name = "PERCENT", conflicts_with = "status", value_parser = percentage)]
    percentage: Option<u32>,
    /// A status document saved from the module (`curl -s http://127.0.0.1:9145/migration/status
    /// > status.json`): each service's percentage in force and ramp state are taken from it.
    #[arg(long, value_name = "STATUS.json")]
    status: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Breakers as `--fallback-open` asks: open, for every service with `fallback:`.
struct OpenBreakers(Vec<Option<BreakerCells>>);

impl OpenBreakers {
    fn new(config: &CompiledConfig) -> Self {
        OpenBreakers(
            config
                .services
                .iter()
                .map(|s| {
                    s.fallback.as_ref().map(|policy| {
                        let cells = BreakerCells::default();
                        for _ in 0..policy.failures {
                            cells.record(Outcome::Failure(502), None, policy.failures, 0);
                        }
                        cells
                    })
                })
                .collect(),
        )
    }
}

impl Breakers for OpenBreakers {
    fn breaker(&self, index: u32) -> Option<&BreakerCells> {
        self.0.get(index as usize)?.as_ref()
    }
    fn now_ms(&self) -> u64 {
        0
    }
}

/// The percentage in force and the ramp state per service, as `--percentage` or
/// `--status` says, over the breakers `--fallback-open` chose.
struct InForce<'a> {
    breakers: &'a dyn Breakers,
    /// `--percentage`: every service.
    everywhere: Option<u32>,
    /// `--status`: by service index; the ramp's state beside it.
    by_service: Vec<Option<(u32, String)>>,
}

impl Breakers for InForce<'_> {
    fn breaker(&self, index: u32) -> Option<&BreakerCells> {
        self.breakers.breaker(index)
    }
    fn now_ms(&self) -> u64 {
        self.breakers.now_ms()
    }
    fn ramp_in_force(&self, index: u32) -> Option<migration_engine::ramp::RampInForce> {
        let bp = self.everywhere.or_else(|| self.by_service.get(index as usize)?.as_ref().map(|(bp, _)| *bp))?;
        Some(migration_engine::ramp::RampInForce::unstamped(bp))
    }
}

/// `30`, `12.5`, `0.01`, `30%` as basis points: at most two decimals, 0 to 100.
fn basis_points(text: &str) -> Option<u32> {
    let text = text.trim().trim_end_matches('%');
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || whole.len() > 3 || fraction.len() > 2 {
        return None;
    }
    if !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bp = whole.parse::<u32>().ok()? * 100 + format!("{fraction:0<2}").parse::<u32>().ok()?;
    (bp <= 10_000).then_some(bp)
}

/// Each service's `ramp.percentage` and `ramp.state` from a saved status document
/// (services without a ramp there: the file's percentage).
fn from_status(path: &std::path::Path, config: &CompiledConfig) -> Result<Vec<Option<(u32, String)>>, Failed> {
    let shown = path.display();
    let text = std::fs::read(path).map_err(|e| Failed(Some(format!("{shown}: {e}"))))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| Failed(Some(format!("{shown}: not a status document: {e}"))))?;
    let services = doc["services"]
        .as_array()
        .ok_or_else(|| Failed(Some(format!("{shown}: not a status document: no \"services\" list"))))?;
    let mut by_service = vec![None; config.services.len()];
    for s in services {
        let (Some(name), Some(ramp)) = (s["name"].as_str(), s.get("ramp").filter(|r| r.is_object())) else {
            continue;
        };
        let Some(index) = config.services.iter().position(|c| c.name == name) else { continue };
        let percentage = ramp["percentage"].as_f64().map(|p| p.to_string());
        let Some(bp) = percentage.as_deref().and_then(basis_points) else {
            return Err(Failed(Some(format!("{shown}: service {name:?}: ramp.percentage is not a percentage"))));
        };
        let state = ramp["state"].as_str().unwrap_or("unknown");
        by_service[index] = Some((bp, migration_engine::config::escape_controls(state)));
    }
    Ok(by_service)
}

/// A uniform 32-bit number from the standard library's randomly keyed hasher.
pub fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
    h.finish() as u32
}

/// 16 random bytes, for the id explain mints as the module would (the module
/// reads the kernel's; any uniform bytes show the same).
fn random_id() -> StickyId {
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(4) {
        chunk.copy_from_slice(&random_u32().to_le_bytes());
    }
    StickyId::from_random(bytes)
}

/// What `sticky` does to the request: nothing (its service has none), an id
/// read from the cookie, or a new id given to it.
struct Sticky {
    cookie: String,
    /// The id minted for this request, and its `Set-Cookie` value over plain
    /// HTTP and over TLS.
    minted: Option<(StickyId, String, String)>,
}

/// The chance that a request given a new id goes to new, over the id: the
/// percentage in force when the id's hash decides (the hash of a random id is
/// uniform), else 0 or 1 (a step before the split decided).
fn minted_new_probability(decision: &Decision) -> Option<f64> {
    let target = decision.target?;
    Some(match (decision.rule, target) {
        (Rule::UserHash, _) => f64::from(decision.percentage_bp) / 10_000.0,
        (_, migration_engine::Target::New) => 1.0,
        (_, migration_engine::Target::Old) => 0.0,
    })
}

pub fn load(path: &std::path::Path) -> Result<CompiledConfig, Failed> {
    let file = path.display().to_string();
    migration_engine::read_source(path, migration_engine::source::DEFAULT_MAX_SIZE)
        .and_then(|text| migration_engine::load_str(&file, &text))
        .map_err(|e| Failed(Some(e.to_string())))
}

/// `--header`: a line nginx would not answer with 400. Whether it keeps the
/// header depends on `--underscores-in-headers`, so that is decided later.
fn header_line(text: &str) -> Result<String, String> {
    if !text.contains(':') {
        // nginx would take the whole line as a name with an empty value; on a
        // command line that is far more likely a mistake.
        return Err("expected `Name: value` (write `Name:` for an empty value)".into());
    }
    match parse_header_line(text.as_bytes(), true) {
        HeaderLine::Refused(why) => Err(format!("nginx answers 400 Bad Request to this header line: {why}")),
        HeaderLine::Kept { .. } | HeaderLine::Ignored { .. } => Ok(text.to_owned()),
    }
}

/// `--var`, and the shape of a `--cookie`: `name=value` (a usage error, exit
/// status 2, without `=`).
fn name_value(text: &str) -> Result<String, String> {
    if !text.contains('=') {
        return Err("expected `name=value`".into());
    }
    Ok(text.to_owned())
}

/// `--percentage`: in basis points (a usage error, exit status 2, when it is not one).
fn percentage(text: &str) -> Result<u32, String> {
    basis_points(text).ok_or_else(|| "expected 0 to 100, at most two decimals".into())
}

/// `--cookie`: `name=value`, which fits in a Cookie header line.
fn cookie(text: &str) -> Result<String, String> {
    name_value(text)?;
    match parse_header_line(format!("Cookie: {text}").as_bytes(), false) {
        HeaderLine::Refused(why) => Err(format!("nginx answers 400 Bad Request to this Cookie header: {why}")),
        HeaderLine::Kept { .. } | HeaderLine::Ignored { .. } => Ok(text.to_owned()),
    }
}

/// `--args`: a query string nginx would accept in a request line (one leading
/// `?` is allowed and left out).
fn query(text: &str) -> Result<String, String> {
    let query = text.strip_prefix('?').unwrap_or(text);
    match args_of_query(query.as_bytes()) {
        Ok(_) => Ok(query.to_owned()),
        Err(why) => Err(format!("nginx answers 400 Bad Request to this query string: {why}")),
    }
}

/// Adds a header line to the request as nginx would: kept, or left out with a
/// note saying why (the trace then shows the header as absent, as the module
/// would see it).
fn add_header(r: &mut OwnedRequest, line: &str, underscores_in_headers: bool) -> Result<(), Failed> {
    match parse_header_line(line.as_bytes(), underscores_in_headers) {
        HeaderLine::Kept { name, value } => r.headers.push((name.to_ascii_lowercase(), value.to_vec())),
        HeaderLine::Ignored { byte: b'_', .. } => eprintln!(
            "nginx-migration: note: --header {line:?}: left out, as nginx leaves out a header whose name has '_' \
             (underscores_in_headers is off by default; --underscores-in-headers says the server has it on)"
        ),
        HeaderLine::Ignored { byte, .. } => eprintln!(
            "nginx-migration: note: --header {line:?}: left out, as nginx leaves out a header whose name has {:?} \
             (a name is letters, digits, '-' and, with underscores_in_headers on, '_'; ignore_invalid_headers \
             is on by default)",
            char::from(byte)
        ),
        HeaderLine::Refused(why) => return Err(Failed(Some(format!("--header {line:?}: {why}")))),
    }
    Ok(())
}

fn request(args: &Args) -> Result<OwnedRequest, Failed> {
    let mut r = OwnedRequest::new(&args.host);
    for h in &args.headers {
        add_header(&mut r, h, args.underscores_in_headers)?;
    }
    if !args.cookies.is_empty() {
        add_header(&mut r, &format!("Cookie: {}", args.cookies.join("; ")), false)?;
    }
    if let Some(q) = &args.args {
        let query = args_of_query(q.as_bytes()).map_err(|why| Failed(Some(format!("--args {q:?}: {why}"))))?;
        r = r.args(query);
    }
    if let Some(ip) = args.ip {
        r = r.client(&ip.to_string());
    }
    for v in &args.vars {
        // `name_value` let only `name=value` through.
        let (name, value) = v.split_once('=').unwrap_or((v, ""));
        r = r.variable(name.trim_start_matches('$'), value);
    }
    Ok(r)
}

pub fn run(args: Args) -> Result<(), Failed> {
    let config = load(&args.file)?;
    let request = request(&args)?;
    let breakers = OpenBreakers::new(&config);
    let breakers: &dyn Breakers = if args.fallback_open { &breakers } else { &migration_engine::NoBreakers };
    let everywhere = args.percentage;
    let by_service = match &args.status {
        Some(path) => from_status(path, &config)?,
        None => Vec::new(),
    };
    let breakers = InForce { breakers, everywhere, by_service };
    let choice = args.service.as_deref().map_or(ServiceChoice::Auto, ServiceChoice::Named);
    let mut trace = Trace::default();
    // A request to a service with `sticky` that carries no id is given one and
    // decided as if it had carried it, as the module decides it.
    let mint = cookie_to_mint(&config, choice, &request).map(|cookie| (cookie, random_id()));
    let decision = match &mint {
        Some((cookie, id)) => {
            let with = WithUserCookie { request: &request, name: cookie.name.as_bytes(), value: id.as_bytes() };
            decide_traced(&config, choice, &with, &mut random_u32, &breakers, &mut trace)
        }
        None => decide_traced(&config, choice, &request, &mut random_u32, &breakers, &mut trace),
    };
    let service = decision.service.map(|i| &config.services[i as usize]);
    let sticky = service.and_then(|s| s.sticky()).map(|cookie| Sticky {
        cookie: cookie.name.to_string(),
        minted: mint.as_ref().map(|(c, id)| (*id, c.header_value(id, false), c.header_value(id, true))),
    });
    let new_probability = mint.as_ref().and_then(|_| minted_new_probability(&decision));
    let endpoint = service.zip(decision.target).map(|(s, t)| s.endpoint(t));
    // The percentage the split used, and where it came from.
    let in_force = decision.service.map(|i| {
        let ramp = breakers.by_service.get(i as usize).and_then(|r| r.as_ref()).map(|(_, state)| state.as_str());
        let from = match (everywhere, ramp) {
            (Some(_), _) => "--percentage".to_owned(),
            (None, Some(state)) => format!("ramp {state}, from the status document"),
            (None, None) => "the file".to_owned(),
        };
        (decision.percentage_bp, ramp, from)
    });
    match args.format {
        Format::Json => {
            let steps: Vec<_> =
                trace.steps.iter().map(|s| json!({"step": s.step, "matched": s.matched, "why": s.why})).collect();
            let doc = json!({
                "service": service.map(|s| s.name.as_str()),
                "target": decision.target.map(|t| t.as_str()),
                "rule": decision.rule.as_str(),
                "backend": endpoint.map(|e| e.backend.as_str()),
                "host": endpoint.map(|e| e.host.as_str()),
                "scheme": endpoint.map(|e| e.scheme),
                "percentage": in_force.as_ref().map(|(bp, _, _)| f64::from(*bp) / 100.0),
                "ramp_state": in_force.as_ref().and_then(|(_, ramp, _)| *ramp),
                "sticky": sticky.as_ref().map(|s| {
                    let minted = s.minted.as_ref();
                    json!({
                        "cookie": s.cookie,
                        "minted": minted.is_some(),
                        "id": minted.map(|(id, _, _)| id.as_str()),
                        "set_cookie": minted.map(|(_, http, _)| http),
                        "set_cookie_tls": minted.map(|(_, _, tls)| tls),
                        "new_probability": new_probability,
                    })
                }),
                "steps": steps,
            });
            println!("{}", serde_json::to_string_pretty(&doc).expect("JSON of strings"));
        }
        Format::Text => {
            let dash = "-";
            println!("service  {}", service.map_or(dash, |s| s.name.as_str()));
            println!("target   {}", decision.target.map_or(dash, |t| t.as_str()));
            println!("rule     {}", decision.rule.as_str());
            println!("backend  {}", endpoint.map_or(dash, |e| e.backend.as_str()));
            println!("host     {}", endpoint.map_or(dash, |e| e.host.as_str()));
            println!("scheme   {}", endpoint.map_or(dash, |e| e.scheme));
            if let Some((bp, _, from)) = &in_force {
                println!("percent  {} % in force ({from})", migration_engine::trace::percentage_text(*bp));
            }
            if let Some(s) = &sticky {
                // A cookie name is an HTTP token: nothing to escape.
                let cookie = &s.cookie;
                match &s.minted {
                    None => println!("sticky   the request carries an id in cookie {cookie:?}: none is given"),
                    Some((id, http, tls)) => {
                        println!(
                            "sticky   no id in cookie {cookie:?}: the client is given a new one, {:?}, and the request \
                             is decided with it",
                            id.as_str()
                        );
                        let over_tls = if http == tls { "" } else { " (over TLS: with Secure)" };
                        println!("         Set-Cookie: {http}{over_tls}");
                    }
                }
            }
            if decision.rule == Rule::Weight {
                println!("(a weight decision is drawn at random for every request: another run may differ)");
            }
            match new_probability {
                Some(_) if decision.rule == Rule::UserHash => println!(
                    "(a new id is random, and so is its hash: it lands on new with probability {} %; this run's \
                     id -> {}, another run may differ)",
                    migration_engine::trace::percentage_text(decision.percentage_bp),
                    decision.target.map_or("-", |t| t.as_str())
                ),
                Some(_) => println!(
                    "(rule {} decided before the split: {} whatever the new id; the client still gets it)",
                    decision.rule.as_str(),
                    decision.target.map_or("-", |t| t.as_str())
                ),
                None => {}
            }
            println!();
            println!("steps, in decision order:");
            let width = trace.steps.iter().map(|s| s.step.len()).max().unwrap_or(0);
            for s in &trace.steps {
                let mark = if s.matched { "yes" } else { "no " };
                println!("  {:width$}  {mark}  {}", s.step, s.why);
            }
        }
    }
    Ok(())
}
