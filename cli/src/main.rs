//! `nginx-migration`: the operator's command-line tool for
//! ngx_http_migration_module. Argument parsing and output only: every
//! validation message, warning and decision comes from the engine crate that the
//! module itself runs, so the tool's answers are the module's answers.
//!
//! Exit status: 0 good, 1 the input is bad or a check failed, 2 usage error.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod check;
mod diff;
mod explain;
mod ingress;
mod kyaml;
mod logformat;
mod replay;

/// Checks, explains, replays and compares ngx_http_migration_module
/// configurations, with the module's own engine.
#[derive(Parser)]
#[command(name = "nginx-migration", version, propagate_version = true, max_term_width = 100)]
#[command(after_help = "Exit status: 0 good, 1 the input is bad or a check failed, 2 usage error.\n\
Run `nginx-migration COMMAND --help` for a command's options and an example.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Lines for people (and grep).
    #[default]
    Text,
    /// One JSON document on stdout.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validates files exactly as `nginx -t` does: the same errors and warnings, byte for byte.
    #[command(after_help = "\
Each problem is printed as nginx -t prints it, with `nginx-migration:` for `nginx:` and without
nginx -t's ` in nginx.conf:LINE` (there is no nginx.conf here):

  nginx-migration: [emerg] m.yaml:8:19: services[0].migration.percentage: must be between 0 and 100, got 120
  nginx-migration: [warn] migration: m.yaml: services[0].canary.ip_rules[1]: never matches: ...

Examples:
  nginx-migration check /etc/nginx/migration.yaml
  nginx-migration check --format json k8s/configmap.yaml > annotations.json")]
    Check {
        /// YAML files (a service document or a whole ConfigMap manifest).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Warnings fail the check too (exit status 1).
        #[arg(long)]
        strict: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Decides one request and shows every step tried, in decision order.
    #[command(after_help = "\
Examples:
  nginx-migration explain migration.yaml --host api.example.com --header 'X-User-ID: alice'
  nginx-migration explain migration.yaml --host api.example.com --cookie 'canary=always' --ip 10.1.2.3
  nginx-migration explain migration.yaml --host api.example.com --args 'beta=1&x=2' --format json")]
    Explain(explain::Args),
    /// Decides every line of nginx access logs and counts where the traffic goes.
    #[command(after_help = "\
FORMAT is the log_format string as written in nginx.conf. The variables $remote_addr, $host,
$http_*, $cookie_*, $arg_*, $args, $request and $request_uri feed the decision; others are skipped.
Fields must be written with nginx's default escaping (escape=default), as nginx does.
A line longer than 64 KiB is counted as unparsed (it is never held in memory). LOG `-` reads
stdin. A log that cannot be read to its end (a truncated .gz) is reported with where reading
stopped; what was read is still counted and printed, and the exit status is 1.

A request's Host is $host, else $http_host: nginx's `combined` format has neither, so give
--host H (the Host of every line that names none) or --service NAME (every line decided for
that service, as in a location with `migration_service NAME`).

Examples:
  nginx-migration replay migration.yaml /var/log/nginx/access.log.1 /var/log/nginx/access.log.2.gz \\
    --log-format '$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\" $host \"$http_x_user_id\"'
  nginx-migration replay today.yaml access.log --log-format combined --host api.example.com --against tomorrow.yaml
  zcat /var/log/nginx/api.access.log.*.gz | nginx-migration replay migration.yaml - --log-format combined --service api")]
    Replay(replay::Args),
    /// Shows what changes between two files, what happens to each ramp, and the share of users that moves each way.
    #[command(after_help = "\
Examples:
  nginx-migration diff migration.yaml migration.yaml.new
  git show HEAD~1:k8s/migration.yaml > /tmp/old.yaml && nginx-migration diff /tmp/old.yaml k8s/migration.yaml")]
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Turns ingress-nginx canary Ingress pairs into a migration.yaml (stdout), with a report (stderr).
    #[command(name = "import-ingress")]
    #[command(after_help = "\
Reads Kubernetes YAML: single objects, `kind: List`, multi-document streams.

Examples:
  kubectl get ingress -A -o yaml > ingresses.yaml
  nginx-migration import-ingress ingresses.yaml > migration.yaml
  nginx-migration check migration.yaml")]
    ImportIngress {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// With a bad Ingress, still print the YAML of the others (exit status 1 all the same).
        #[arg(long)]
        partial: bool,
        /// The namespace of Ingresses whose metadata names none (manifests from a
        /// repository), as `kubectl apply -n NAMESPACE` places them; without it
        /// such an Ingress is a bad one: its Services' namespace is not known.
        #[arg(long, value_name = "NAMESPACE", value_parser = ingress::namespace_arg)]
        namespace: Option<String>,
        /// `json`: the report on stderr becomes {\"mapped\",\"approximate\",\"unmapped\"}.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

/// A failed command: exit status 1, its message already printed or printed here.
pub struct Failed(pub Option<String>);

impl<E: std::fmt::Display> From<E> for Failed {
    fn from(e: E) -> Self {
        Failed(Some(e.to_string()))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { files, strict, format } => check::run(&files, strict, format),
        Command::Explain(args) => explain::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Diff { old, new, format } => diff::run(&old, &new, format),
        Command::ImportIngress { files, partial, namespace, format } => {
            ingress::run(&files, partial, namespace.as_deref(), format)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed(message)) => {
            if let Some(message) = message {
                eprintln!("nginx-migration: {message}");
            }
            ExitCode::from(1)
        }
    }
}
