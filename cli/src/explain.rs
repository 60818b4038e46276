//! `explain`: one request through the engine's traced decision
//! (`decide_traced`, the function the module calls untraced), printed step by step.

use std::net::IpAddr;
use std::path::PathBuf;

use migration_engine::{
    decide_traced, BreakerCells, Breakers, CompiledConfig, Outcome, OwnedRequest, Rule, ServiceChoice, Trace,
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
    /// A request header, `Name: value`; repeat for more (the first of a repeated name decides).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A cookie, `name=value`; repeat for more (sent as one Cookie header, in order).
    #[arg(long = "cookie", value_name = "NAME=VALUE")]
    cookies: Vec<String>,
    /// The query string, without `?` (`a=1&b=2`), as `$args`.
    #[arg(long, value_name = "QUERY")]
    args: Option<String>,
    /// The client address as `$remote_addr` gives it (after realip). Without it the
    /// request has no client address: ip rules and `from:` never match.
    #[arg(long, value_name = "ADDR")]
    ip: Option<IpAddr>,
    /// An nginx variable for `user_key: var:NAME`, `name=value`; repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Decide for this service whatever the Host (`migration_service NAME`).
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// Every service's fallback breaker is open (the new cluster is failing).
    #[arg(long)]
    fallback_open: bool,
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
                            cells.record(Outcome::Failure(502), false, policy.failures, 0);
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

/// A uniform 32-bit number from the standard library's randomly keyed hasher.
pub fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
    h.finish() as u32
}

pub fn load(path: &std::path::Path) -> Result<CompiledConfig, Failed> {
    let file = path.display().to_string();
    migration_engine::read_source(path, migration_engine::source::DEFAULT_MAX_SIZE)
        .and_then(|text| migration_engine::load_str(&file, &text))
        .map_err(|e| Failed(Some(e.to_string())))
}

fn request(args: &Args) -> Result<OwnedRequest, Failed> {
    let mut r = OwnedRequest::new(&args.host);
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else {
            return Err(Failed(Some(format!("--header {h:?}: expected `Name: value`"))));
        };
        r = r.header(name.trim(), value.trim_start());
    }
    if !args.cookies.is_empty() {
        for c in &args.cookies {
            if !c.contains('=') {
                return Err(Failed(Some(format!("--cookie {c:?}: expected `name=value`"))));
            }
        }
        r = r.header("Cookie", args.cookies.join("; "));
    }
    if let Some(q) = &args.args {
        r = r.args(q.strip_prefix('?').unwrap_or(q));
    }
    if let Some(ip) = args.ip {
        r = r.client(&ip.to_string());
    }
    for v in &args.vars {
        let Some((name, value)) = v.split_once('=') else {
            return Err(Failed(Some(format!("--var {v:?}: expected `name=value`"))));
        };
        r = r.variable(name.trim_start_matches('$'), value);
    }
    Ok(r)
}

pub fn run(args: Args) -> Result<(), Failed> {
    let config = load(&args.file)?;
    let request = request(&args)?;
    let breakers = OpenBreakers::new(&config);
    let breakers: &dyn Breakers = if args.fallback_open { &breakers } else { &migration_engine::NoBreakers };
    let choice = args.service.as_deref().map_or(ServiceChoice::Auto, ServiceChoice::Named);
    let mut trace = Trace::default();
    let decision = decide_traced(&config, choice, &request, &mut random_u32, breakers, &mut trace);
    let service = decision.service.map(|i| &config.services[i as usize]);
    let endpoint = service.zip(decision.target).map(|(s, t)| s.endpoint(t));
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
            if decision.rule == Rule::Weight {
                println!("(a weight decision is drawn at random for every request: another run may differ)");
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
