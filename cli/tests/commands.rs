//! check, explain, replay and diff through the binary: exit statuses, the
//! fixed JSON keys, and what each promises.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

// The engine's tests' own MurmurHash2 and split_clients bounds.
#[path = "../../engine/tests/common/mod.rs"]
mod common;
use common::{admits, nginx_murmur2};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nginx-migration"))
}

fn tmp(name: &str, content: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nginx-migration-cmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn yaml(percentage: &str, strategy: &str, salt: &str) -> String {
    format!(
        "services:
  - name: api
    hosts: [api.example.com]
    old_host: api.example.com
    old_backend: api-old:80
    new_host: api.new.example.com
    new_backend: https://api-new:8443
    migration: {{strategy: {strategy}, percentage: {percentage}, hash_salt: {salt:?}}}
    canary:
      header_rules:
        - {{header: X-Migration-Target, value: new, target: new}}
        - {{cookie: canary, value: always, target: new, from: [10.0.0.0/8]}}
      ip_rules:
        - {{cidr: 192.168.0.0/16, target: old}}
      user_rules:
        - {{users: [alice], target: new}}
    fallback: {{failures: 3}}
"
    )
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn exit_statuses() {
    let good = tmp("good.yaml", yaml("20", "user", "").as_bytes());
    let bad = tmp("bad.yaml", yaml("120", "user", "").as_bytes());
    assert_eq!(bin().arg("check").arg(&good).status().unwrap().code(), Some(0));
    let out = bin().arg("check").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "nginx-migration: [emerg] {}:8:45: services[0].migration.percentage: must be between 0 and 100, got 120\n",
            bad.display()
        )
    );
    assert_eq!(bin().args(["check"]).status().unwrap().code(), Some(2), "no file");
    assert_eq!(bin().args(["frobnicate"]).status().unwrap().code(), Some(2));
    assert_eq!(bin().arg("explain").arg(&good).status().unwrap().code(), Some(2), "--host is required");
    assert_eq!(bin().arg("explain").arg(&bad).args(["--host", "x"]).status().unwrap().code(), Some(1));
    for command in ["check", "explain", "replay", "diff", "import-ingress"] {
        let out = bin().args([command, "--help"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stdout).contains("Example"), "{command} --help has an example");
    }
}

#[test]
fn check_json_has_the_fixed_keys() {
    let bad = tmp("bad-json.yaml", yaml("20", "sticky", "").as_bytes());
    let out = bin().args(["check", "--format", "json"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    let e = &v[0];
    assert_eq!(e["file"], bad.display().to_string());
    assert_eq!((e["line"].as_u64(), e["column"].as_u64()), (Some(8), Some(27)));
    assert_eq!(e["path"], "services[0].migration.strategy");
    assert_eq!(e["severity"], "error");
    assert_eq!(e["message"], "must be weight, user or ip, got \"sticky\"");
}

#[test]
fn explain_json_and_steps() {
    let file = tmp("explain.yaml", yaml("20", "user", "").as_bytes());
    let run = |args: &[&str]| {
        let out = bin().arg("explain").arg(&file).args(["--format", "json"]).args(args).output().unwrap();
        assert!(out.status.success());
        json(&out)
    };
    let v = run(&["--host", "API.example.com:8080", "--cookie", "canary=always", "--ip", "10.1.2.3"]);
    assert_eq!(
        (v["service"].as_str(), v["target"].as_str(), v["rule"].as_str()),
        (Some("api"), Some("new"), Some("header"))
    );
    assert_eq!(
        (v["backend"].as_str(), v["host"].as_str(), v["scheme"].as_str()),
        (Some("api-new:8443"), Some("api.new.example.com"), Some("https"))
    );
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(
        steps.iter().map(|s| s["step"].as_str().unwrap()).collect::<Vec<_>>(),
        ["service", "enabled", "header_rules[0]", "header_rules[1]"]
    );
    assert_eq!(
        steps[3]["why"],
        "cookie \"canary\" is \"always\", matches value \"always\", and client 10.1.2.3 is in from: -> new"
    );

    // From outside from:, the cookie falls through; a listed user is found.
    let v = run(&[
        "--host",
        "api.example.com",
        "--cookie",
        "canary=always",
        "--ip",
        "8.8.8.8",
        "--header",
        "X-User-ID: alice",
    ]);
    assert_eq!((v["target"].as_str(), v["rule"].as_str()), (Some("new"), Some("user_list")));

    // The hash, its threshold, and the key.
    let v = run(&["--host", "api.example.com", "--ip", "8.8.8.8", "--header", "X-User-ID: user-42"]);
    let last = v["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["step"], "user_hash");
    let why = last["why"].as_str().unwrap();
    let hash = nginx_murmur2(b"user-42");
    assert!(why.contains(&format!("murmur2 of user id \"user-42\" = {hash:#010x}")), "{why}");
    assert!(why.contains("threshold 0x33333333 for 20 %"), "{why}");

    // --fallback-open: the breaker's step decides after the header rules.
    let v = run(&["--host", "api.example.com", "--ip", "8.8.8.8", "--header", "X-User-ID: alice", "--fallback-open"]);
    assert_eq!((v["target"].as_str(), v["rule"].as_str()), (Some("old"), Some("fallback")));

    // No service: null service and target, rule none.
    let v = run(&["--host", "nowhere.example"]);
    assert!(v["service"].is_null() && v["target"].is_null() && v["backend"].is_null());
    assert_eq!(v["rule"], "none");
}

#[test]
fn explain_takes_the_percentage_in_force_from_a_ramp() {
    let file = tmp("explain-ramp.yaml", yaml("20", "user", "").as_bytes());
    // A user whose hash lies between the 20 % and 50 % bounds: old at the file's
    // 20 %, new where a ramp has reached 50 %.
    let user = (0..)
        .map(|i| format!("user-{i}"))
        .find(|u| {
            let share = f64::from(nginx_murmur2(u.as_bytes())) / 4_294_967_296.0;
            share > 0.21 && share < 0.49
        })
        .unwrap();
    let header = format!("X-User-ID: {user}");
    let explain = |extra: &[&str]| {
        bin()
            .arg("explain")
            .arg(&file)
            .args(["--format", "json", "--host", "api.example.com", "--ip", "8.8.8.8", "--header", &header])
            .args(extra)
            .output()
            .unwrap()
    };
    let side = |extra: &[&str]| {
        let out = explain(extra);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v = json(&out);
        assert_eq!(v["rule"], "user_hash");
        (v["target"].as_str().unwrap().to_owned(), v["percentage"].as_f64().unwrap(), v["ramp_state"].clone())
    };
    assert_eq!(side(&[]), ("old".into(), 20.0, Value::Null));
    assert_eq!(side(&["--percentage", "50"]), ("new".into(), 50.0, Value::Null));
    let status = |percentage: &str, state: &str| {
        tmp(
            &format!("status-{state}.json"),
            format!(
                r#"{{"version":"1","services":[{{"name":"other","ramp":null}},{{"name":"api","percentage":20,"ramp":{{"state":"{state}","step":1,"steps":3,"percentage":{percentage},"frozen":false}}}}]}}"#
            )
            .as_bytes(),
        )
    };
    let ramping = status("50", "ramping");
    assert_eq!(side(&["--status", ramping.to_str().unwrap()]), ("new".into(), 50.0, Value::from("ramping")));
    let rolled_back = status("0", "rolled_back");
    assert_eq!(side(&["--status", rolled_back.to_str().unwrap()]), ("old".into(), 0.0, Value::from("rolled_back")));
    // The text form says where the percentage came from.
    let out = bin()
        .arg("explain")
        .arg(&file)
        .args(["--host", "api.example.com", "--header", &header, "--status", ramping.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("percent  50 % in force (ramp ramping, from the status document)"), "{text}");
    assert!(text.contains("threshold 0x7fffffff for 50 %"), "{text}");
    // A bad value is a usage error (2), as a bad --header or --cookie is, and
    // so are both options at once; a bad status document is bad input (1).
    for bad in ["101", "12.345", "-1", "x"] {
        let out = explain(&[&format!("--percentage={bad}")]);
        assert_eq!(out.status.code(), Some(2), "--percentage {bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("expected 0 to 100, at most two decimals"), "{stderr}");
    }
    assert_eq!(explain(&["--var", "tenant"]).status.code(), Some(2), "--var without =");
    // A status value is shown escaped: it must not write to the terminal.
    let payload = status("50", "\\u001b]0;pwned\\u0007\\u001b[2J");
    let out = bin()
        .arg("explain")
        .arg(&file)
        .args(["--host", "api.example.com", "--header", &header, "--status", payload.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\u{1b}') && text.contains("ramp \\u{1b}]0;pwned"), "{text:?}");
    let not_status = tmp("not-status.json", b"[1, 2]");
    assert_eq!(explain(&["--status", not_status.to_str().unwrap()]).status.code(), Some(1));
    assert_eq!(explain(&["--percentage", "5", "--status", ramping.to_str().unwrap()]).status.code(), Some(2));
}

const FORMAT: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$host" "$http_x_user_id""#;

fn log_line(ip: &str, uri: &str, agent: &str, host: &str, user: &str) -> String {
    format!(
        "{ip} - - [27/Nov/2026:10:00:00 +0000] \"GET {uri} HTTP/1.1\" 200 12 \"-\" \"{agent}\" \"{host}\" \"{user}\"\n"
    )
}

#[test]
fn replay_counts_users_and_a_raise_moves_nobody_back() {
    let mut log = String::new();
    for u in 0..3000 {
        for _ in 0..2 {
            log.push_str(&log_line("8.8.8.8", "/", "curl", "api.example.com", &format!("user-{u}")));
        }
    }
    log.push_str("this line is not in the format\n");
    log.push_str(&log_line("10.1.2.3", "/?x=1", "a \\x22quoted\\x22 agent", "api.example.com", "-"));
    let path = tmp("access.log", log.as_bytes());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(log.as_bytes()).unwrap();
    let gz_path = tmp("access.log.gz", &gz.finish().unwrap());
    let low = tmp("low.yaml", yaml("20", "user", "").as_bytes());
    let high = tmp("high.yaml", yaml("30", "user", "").as_bytes());
    let salted = tmp("salted.yaml", yaml("20", "user", "v2").as_bytes());
    let replay = |log: &PathBuf, against: &PathBuf| {
        let out = bin()
            .arg("replay")
            .arg(&low)
            .arg(log)
            .args(["--log-format", FORMAT, "--format", "json", "--against"])
            .arg(against)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (json(&out), String::from_utf8(out.stderr).unwrap())
    };
    let (v, stderr) = replay(&path, &high);
    assert_eq!(v["lines"], 6002);
    assert_eq!(v["unparsed"], 1);
    assert!(stderr.contains("access.log:6001: not in the log format: this line is not in the format"), "{stderr}");
    let api = &v["services"]["api"];
    // Exactly split_clients' cohorts, by the test's own MurmurHash2 and bounds.
    let new_users = (0..3000).filter(|u| admits(2000, nginx_murmur2(format!("user-{u}").as_bytes()))).count();
    assert_eq!(api["users"]["new"], new_users as u64);
    assert_eq!(api["users"]["old"], 3000 - new_users as u64);
    assert_eq!(api["requests"]["new"].as_f64().unwrap(), (2 * new_users) as f64 + 0.2);
    // The request without a user id is a weight decision: 0.2 expected on new.
    assert_eq!(api["requests"]["old"].as_f64().unwrap(), (6000 - 2 * new_users) as f64 + 0.8);
    assert_eq!(api["rules"]["weight"], 1);
    // Distinct users per rule: every user id was decided by its hash; the one
    // request without an id (the weight decision) is nobody's.
    assert_eq!(api["users_by_rule"]["user_hash"], 3000);
    assert_eq!(api["users_by_rule"]["weight"], 0);
    assert_eq!(api["users_by_rule"]["header"], 0);
    // A raise from 20 % to 30 % on strategy user: some move up, nobody comes back.
    assert_eq!(api["moved"]["users"]["new_to_old"], 0);
    assert_eq!(api["moved"]["requests"]["new_to_old"], 0);
    let up = api["moved"]["users"]["old_to_new"].as_u64().unwrap();
    let expected_up = (0..3000)
        .filter(|u| {
            let h = nginx_murmur2(format!("user-{u}").as_bytes());
            admits(3000, h) && !admits(2000, h)
        })
        .count();
    assert_eq!(up, expected_up as u64);
    // The same through gzip.
    let (z, _) = replay(&gz_path, &high);
    assert_eq!(z["services"], v["services"]);
    // A salt change moves people both ways.
    let (s, _) = replay(&path, &salted);
    assert!(s["services"]["api"]["moved"]["users"]["new_to_old"].as_u64().unwrap() > 100);
}

#[test]
fn replay_a_raise_on_strategy_ip_moves_addresses_only_up() {
    let mut log = String::new();
    for i in 0..2000 {
        let ip = format!("198.51.{}.{}", i / 250, i % 250 + 1);
        log.push_str(&log_line(&ip, "/", "curl", "api.example.com", "-"));
    }
    let path = tmp("access-ip.log", log.as_bytes());
    // No ip rule of the test file holds 198.51.0.0/16.
    let low = tmp("ip-low.yaml", yaml("20", "ip", "").as_bytes());
    let high = tmp("ip-high.yaml", yaml("30", "ip", "").as_bytes());
    let out = bin()
        .arg("replay")
        .arg(&low)
        .arg(&path)
        .args(["--log-format", FORMAT, "--format", "json", "--against"])
        .arg(&high)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let api = &json(&out)["services"]["api"];
    assert_eq!(api["users_by_rule"]["ip_hash"], 2000);
    let up = (0..2000)
        .filter(|i| {
            let h = nginx_murmur2(format!("198.51.{}.{}", i / 250, i % 250 + 1).as_bytes());
            admits(3000, h) && !admits(2000, h)
        })
        .count();
    assert!(up > 100, "some addresses move up: {up}");
    assert_eq!(api["moved"]["users"]["old_to_new"], up as u64);
    assert_eq!(api["moved"]["users"]["new_to_old"], 0);
    assert_eq!(api["moved"]["requests"]["new_to_old"], 0);
}

#[test]
fn diff_reports_rules_percentages_and_exact_shares() {
    let a = tmp("a.yaml", yaml("20", "user", "").as_bytes());
    let b_text = yaml("30", "user", "").replace(
        "        - {cookie: canary, value: always, target: new, from: [10.0.0.0/8]}\n",
        "        - {arg: beta, present: true, target: new}\n",
    );
    let b = tmp("b.yaml", b_text.as_bytes());
    let out = bin().arg("diff").arg(&a).arg(&b).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("  migration.percentage: 20 -> 30\n"), "{text}");
    assert!(text.contains("  header_rules: + [1] {arg: beta, present: true, target: new}\n"), "{text}");
    assert!(
        text.contains("  header_rules: - [1] {cookie: canary, value: \"always\", target: new, from: [10.0.0.0/8]}\n"),
        "{text}"
    );
    assert!(text.contains("split: old -> new 10.0000 %, new -> old 0.0000 %"), "{text}");
    let out = bin()
        .args(["diff", "--format", "json"])
        .arg(&a)
        .arg(tmp("c.yaml", yaml("20", "user", "new-salt").as_bytes()))
        .output()
        .unwrap();
    let v = json(&out);
    let m = &v["services"]["api"]["moves"];
    assert_eq!(m["exact"], false);
    // Independent cohorts at 20 %: 0.8 × 0.2 each way.
    assert!((m["old_to_new"].as_f64().unwrap() - 0.16).abs() < 1e-6, "{m}");
    assert!(m["note"].as_str().unwrap().starts_with("hash_salt changed: the cohorts are drawn anew"), "{m}");
}

#[test]
fn diff_reports_services_added_and_removed_rules_reordered_and_a_strategy_change() {
    let service = |name: &str, migration: &str, rules: &str| {
        format!(
            "  - name: {name}\n    old_host: {name}.example.com\n    old_backend: {name}-old:80\n    \
             new_host: {name}.example.com\n    new_backend: {name}-new:80\n    migration: {migration}\n{rules}"
        )
    };
    let rules = |first: &str, second: &str| {
        format!("    canary:\n      header_rules:\n        - {first}\n        - {second}\n")
    };
    let (a_rule, b_rule) = ("{header: X-A, value: \"1\", target: new}", "{header: X-B, value: \"1\", target: old}");
    let a = tmp(
        "moves-a.yaml",
        format!(
            "services:\n{}{}",
            service("api", "{strategy: user, percentage: 20}", &rules(a_rule, b_rule)),
            service("gone", "{percentage: 0}", "")
        )
        .as_bytes(),
    );
    let b = tmp(
        "moves-b.yaml",
        format!(
            "services:\n{}{}",
            service("api", "{strategy: ip, percentage: 20}", &rules(b_rule, a_rule)),
            service("fresh", "{percentage: 5}", "")
        )
        .as_bytes(),
    );
    let out = bin().arg("diff").arg(&a).arg(&b).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("+ service fresh (added)\n"), "{text}");
    assert!(text.contains("- service gone (removed: its Hosts route nowhere)\n"), "{text}");
    assert!(text.contains("  migration.strategy: user -> ip\n"), "{text}");
    assert!(text.contains("  header_rules: moved [0] -> [1] {header: x-a, value: \"1\", target: new}\n"), "{text}");
    let v = json(&bin().args(["diff", "--format", "json"]).arg(&a).arg(&b).output().unwrap());
    assert_eq!(v["added"], serde_json::json!(["fresh"]));
    assert_eq!(v["removed"], serde_json::json!(["gone"]));
    let api = &v["services"]["api"];
    assert_eq!(api["rules"]["header_rules"]["added"], serde_json::json!([]));
    assert_eq!(api["rules"]["header_rules"]["reordered"].as_array().unwrap().len(), 1);
    // A new strategy draws the cohorts anew: independent 20 % cohorts, 0.8 x 0.2 each way.
    let m = &api["moves"];
    assert_eq!(m["exact"], false);
    for way in ["old_to_new", "new_to_old"] {
        assert!((m[way].as_f64().unwrap() - 0.16).abs() < 1e-6, "{way}: {m}");
    }
}

/// A ramp's `start:` with an offset out of range (`+99:99`) or with a second
/// sign (`+-1:00`) is refused where it is written, as nginx -t refuses it.
#[test]
fn check_refuses_a_ramp_start_whose_utc_offset_is_out_of_range() {
    let with_start = |offset: &str| {
        let text = yaml("20", "user", "").replace(
            "hash_salt: \"\"}",
            &format!(
                "hash_salt: \"\", ramp: {{steps: [20, 50], every: 10m, start: \"2026-11-30T09:00:00{offset}\"}}}}"
            ),
        );
        tmp("ramp-offset.yaml", text.as_bytes())
    };
    for good in ["Z", "+05:30", "-23:59", "-00:00"] {
        assert_eq!(bin().arg("check").arg(with_start(good)).status().unwrap().code(), Some(0), "{good}");
    }
    for offset in ["+99:99", "+-1:00", "+24:00", "-05:60"] {
        let file = with_start(offset);
        let out = bin().arg("check").arg(&file).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{offset}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let expected = format!(
            "nginx-migration: [emerg] {}:8:107: services[0].migration.ramp.start: must be a time such as \
             2026-11-30T09:00:00Z, got \"2026-11-30T09:00:00{}…\": its UTC offset \"{offset}\" must be Z, +HH:MM \
             or -HH:MM (hours 00 to 23, minutes 00 to 59)\n",
            file.display(),
            &offset[..5]
        );
        assert_eq!(stdout, expected, "{offset}");
    }
}

/// `--header`, `--cookie` and `--args` are read as nginx reads a request, so
/// explain decides what the module decides: the spaces around a header value
/// are dropped (not a tab), a header name nginx drops is dropped (unless
/// `--underscores-in-headers`), lines nginx answers with 400 are usage errors,
/// the Cookie header goes through the module's cookie parser, and `#` ends `$args`.
#[test]
fn explain_reads_headers_cookies_and_args_as_nginx_does() {
    let file = tmp(
        "explain-parse.yaml",
        b"services:
  - name: api
    old_host: api.example.com
    old_backend: old:80
    new_host: api.example.com
    new_backend: new:80
    migration: {percentage: 0}
    canary:
      header_rules:
        - {header: X-Beta, value: \"on\", target: new}
        - {header: X_Beta, value: \"on\", target: new}
        - {cookie: canary, value: always, target: new}
        - {arg: beta, value: \"1\", target: new}
",
    );
    let explain = |args: &[&str]| {
        bin()
            .arg("explain")
            .arg(&file)
            .args(["--host", "api.example.com", "--format", "json"])
            .args(args)
            .output()
            .unwrap()
    };
    // (target, the header rule that decided) for a request.
    let decided = |args: &[&str]| {
        let out = explain(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let v = json(&out);
        let rule = v["steps"].as_array().unwrap().iter().find(|s| s["matched"] == true && s["step"] != "service");
        (v["target"].as_str().unwrap().to_owned(), rule.map(|s| s["step"].as_str().unwrap().to_owned()))
    };
    let header_rule = |i: usize| ("new".to_owned(), Some(format!("header_rules[{i}]")));
    let no_rule = ("old".to_owned(), Some("weight".to_owned()));
    assert_eq!(decided(&["--header", "X-Beta: on "]), header_rule(0), "a trailing space is not part of the value");
    assert_eq!(decided(&["--header", "x-beta:   on"]), header_rule(0));
    assert_eq!(decided(&["--header", "X-Beta: on\t"]), no_rule, "nginx keeps a tab");
    // nginx leaves out a name with '_' unless underscores_in_headers is on.
    let out = explain(&["--header", "X_Beta: on"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("left out, as nginx leaves out a header whose name has '_'"));
    assert_eq!(decided(&["--header", "X_Beta: on"]), no_rule);
    assert_eq!(decided(&["--header", "X_Beta: on", "--underscores-in-headers"]), header_rule(1));
    // nginx answers 400: the request never reaches the module. A usage error.
    for bad in ["X Beta: on", "X-Beta : on", ": on", "X-Beta on"] {
        let out = explain(&["--header", bad]);
        assert_eq!(out.status.code(), Some(2), "--header {bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--header <NAME: VALUE>"), "{bad:?}");
    }
    // The Cookie header as the module reads it: its trailing space dropped as a
    // header's, a space before the next cookie kept as $cookie_canary keeps it.
    assert_eq!(decided(&["--cookie", "canary=always "]), header_rule(2));
    assert_eq!(decided(&["--cookie", "canary=always ", "--cookie", "x=1"]), no_rule);
    assert_eq!(decided(&["--header", "Cookie: a=1;canary=always"]), header_rule(2));
    assert_eq!(explain(&["--cookie", "canary"]).status.code(), Some(2));
    // $args ends at '#'; a space would end the request target.
    assert_eq!(decided(&["--args", "?beta=1#top"]), header_rule(3));
    assert_eq!(decided(&["--args", "BETA=1"]), header_rule(3), "argument names match case-insensitively");
    assert_eq!(explain(&["--args", "beta=1 x"]).status.code(), Some(2));
}

/// replay with `LOG` on stdin, fed by the test while the binary runs; the
/// JSON, stderr and exit status.
fn replay_stdin(log_name: &str, input: Vec<u8>, extra: &[&str]) -> (Value, String, Option<i32>) {
    use std::process::Stdio;
    let config = tmp("pipe.yaml", yaml("20", "user", "").as_bytes());
    let mut child = bin()
        .arg("replay")
        .arg(&config)
        .arg(log_name)
        .args(["--log-format", FORMAT, "--format", "json"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // The binary may stop reading early (a usage error): that is its answer.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (json(&out), String::from_utf8(out.stderr).unwrap(), out.status.code())
}

fn small_log() -> String {
    (0..500).map(|u| log_line("8.8.8.8", "/", "curl", "api.example.com", &format!("user-{u}"))).collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A log read from a pipe, plain or gzip, is read whole: the gzip sniff hands
/// back the bytes it read (they were lost: the first line never parsed, and
/// `-` was a file name).
#[test]
fn replay_reads_a_pipe_plain_and_gzip() {
    let log = small_log();
    for (name, input) in [
        ("-", log.clone().into_bytes()),
        ("/dev/stdin", log.clone().into_bytes()),
        ("-", gzip(log.as_bytes())),
        ("/dev/stdin", gzip(log.as_bytes())),
    ] {
        let (v, stderr, code) = replay_stdin(name, input, &[]);
        assert_eq!(code, Some(0), "{name}: {stderr}");
        assert_eq!((v["lines"].as_u64(), v["unparsed"].as_u64()), (Some(500), Some(0)), "{name}: {stderr}");
        assert_eq!(v["services"]["api"]["users_by_rule"]["user_hash"], 500, "{name}");
    }
    // Fewer bytes than the gzip magic: one line of one byte, not in the format.
    let (v, _, code) = replay_stdin("-", b"x".to_vec(), &[]);
    assert_eq!((code, v["lines"].as_u64(), v["unparsed"].as_u64()), (Some(0), Some(1), Some(1)));
}

/// A truncated .gz no longer aborts the run: what was read is counted and
/// printed, stderr says where the reading stopped, the other logs are read, and
/// the exit status is 1.
#[test]
fn replay_counts_what_a_truncated_gz_held_and_exits_1() {
    let log: String =
        (0..20_000).map(|u| log_line("8.8.8.8", "/", "curl", "api.example.com", &format!("user-{u}"))).collect();
    let gz = gzip(log.as_bytes());
    let cut = tmp("cut.log.gz", &gz[..gz.len() / 2]);
    let whole = tmp("whole.log", small_log().as_bytes());
    let config = tmp("cut.yaml", yaml("20", "user", "").as_bytes());
    let out = bin()
        .arg("replay")
        .arg(&config)
        .arg(&cut)
        .arg(&whole)
        .args(["--log-format", FORMAT, "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    let stderr = String::from_utf8(out.stderr).unwrap();
    let read = v["lines"].as_u64().unwrap() - 500;
    assert!(read > 1000 && read < 20_000, "part of the cut log is counted: {read}");
    let said = format!("{}: reading stopped after line {}", cut.display(), grouped(read));
    assert!(stderr.contains(&said), "{said:?} in {stderr}");
    assert!(stderr.contains("of the log, gunzipped)"), "{stderr}");
    assert_eq!(v["unparsed"], 0, "the cut line is not counted");
}

/// 12345678 as "12,345,678", as replay prints counts.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A line longer than 64 KiB is counted as unparsed, and its length is not
/// what replay needs in memory (a 2 GiB line took 2.1 GB).
#[test]
fn replay_counts_an_overlong_line_as_unparsed_without_holding_it() {
    let normal = log_line("8.8.8.8", "/", "curl", "api.example.com", "alice");
    let long = "x".repeat((1 << 20) + 64 * 1024);
    let mut log = format!("{normal}{long}\n{normal}");
    // A last line, without its newline, just over the limit.
    log.push_str(&"y".repeat(64 * 1024 + 1));
    let path = tmp("long-lines.log", log.as_bytes());
    let config = tmp("long-lines.yaml", yaml("20", "user", "").as_bytes());
    let out = bin().arg("replay").arg(&config).arg(&path).args(["--log-format", FORMAT, "--format", "json"]).output();
    let out = out.unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!((v["lines"].as_u64(), v["unparsed"].as_u64()), (Some(4), Some(2)));
    assert_eq!(v["services"]["api"]["users_by_rule"]["user_list"], 1);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(":2: 1,114,112 bytes, longer than the 65,536 a line may have: xxx"), "{stderr}");
    assert!(stderr.contains(":4: 65,537 bytes, longer than the 65,536 a line may have: yyy"), "{stderr}");
}

/// The peak memory of replay reading a 64 MiB line from a pipe stays far below
/// 64 MiB (Linux: VmHWM of /proc, sampled once everything was written).
#[cfg(target_os = "linux")]
#[test]
fn replay_memory_does_not_follow_the_longest_line() {
    use std::process::Stdio;
    let config = tmp("memory.yaml", yaml("20", "user", "").as_bytes());
    let mut child = bin()
        .arg("replay")
        .arg(&config)
        .arg("/dev/stdin")
        .args(["--log-format", FORMAT, "--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        stdin.write_all(&chunk).unwrap();
    }
    stdin.write_all(b"\n").unwrap();
    // All but the pipe's own buffer has been read by now; whatever replay holds
    // for the line, it holds it now.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(json(&out)["unparsed"], 1);
    assert!(peak_kib < 32 * 1024, "replay peaked at {peak_kib} KiB for a 64 MiB line");
}

/// Debian's default log is nginx's `combined`, which has no Host: every line
/// was "for no service", silently. `--host` names the Host of lines that name
/// none, `--service` decides every line for one service, and stderr says when
/// no line was for any service.
#[test]
fn replay_of_a_log_without_host_takes_host_or_service() {
    let combined =
        |ip: &str| format!("{ip} - - [27/Nov/2026:10:00:00 +0000] \"GET /?x=1 HTTP/1.1\" 200 12 \"-\" \"curl\"\n");
    let log: String = (0..100).map(|i| combined(&format!("10.9.0.{i}"))).collect();
    let path = tmp("combined.log", log.as_bytes());
    let config = tmp("combined.yaml", yaml("20", "ip", "").as_bytes());
    let replay = |log: &PathBuf, format: &str, extra: &[&str]| {
        let out = bin()
            .arg("replay")
            .arg(&config)
            .arg(log)
            .args(["--log-format", format, "--format", "json"])
            .args(extra)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stderr.clone()).unwrap(), out)
    };
    let (code, stderr, out) = replay(&path, "combined", &[]);
    assert_eq!(code, Some(0));
    assert_eq!(json(&out)["unmatched"], 100);
    assert!(
        stderr.contains("no line named a host that a service serves; logs without $host need --host or --service"),
        "{stderr}"
    );
    for extra in [&["--host", "API.example.com"][..], &["--service", "api"]] {
        let (code, stderr, out) = replay(&path, "combined", extra);
        assert_eq!(code, Some(0), "{extra:?}: {stderr}");
        let v = json(&out);
        assert_eq!(
            (v["unmatched"].as_u64(), v["services"]["api"]["users_by_rule"]["ip_hash"].as_u64()),
            (Some(0), Some(100))
        );
        assert!(!stderr.contains("no line"), "{extra:?}: {stderr}");
    }
    // A host nothing serves: said, with the --host given.
    let (_, stderr, _) = replay(&path, "combined", &["--host", "nowhere.example"]);
    assert!(stderr.contains("nor --host \"nowhere.example\" is one that a service of"), "{stderr}");
    // With $host in the format, --host fills only the lines whose field is '-';
    // a line naming another host stays that host's.
    let with_host = format!("{} $host", logformat_combined());
    let lines = [("10.9.1.1", "api.example.com"), ("10.9.1.2", "-"), ("10.9.1.3", "other.example")];
    let log: String = lines.iter().map(|(ip, host)| format!("{} {host}\n", combined(ip).trim_end())).collect();
    let hosted = tmp("combined-host.log", log.as_bytes());
    let (_, _, out) = replay(&hosted, &with_host, &["--host", "api.example.com"]);
    let v = json(&out);
    assert_eq!(
        (v["unmatched"].as_u64(), v["services"]["api"]["users_by_rule"]["ip_hash"].as_u64()),
        (Some(1), Some(2))
    );
    // --service decides every line for the service, whatever its host.
    let (_, _, out) = replay(&hosted, &with_host, &["--service", "api"]);
    assert_eq!(json(&out)["services"]["api"]["users_by_rule"]["ip_hash"], 3);
    // Both at once: a usage error; a service the file lacks: refused.
    assert_eq!(replay(&path, "combined", &["--host", "a", "--service", "api"]).0, Some(2));
    let (code, stderr, _) = replay(&path, "combined", &["--service", "nope"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--service \"nope\":") && stderr.contains("has no such service (it has api)"), "{stderr}");
}

/// --service with --against: the same service in both files.
#[test]
fn replay_service_against_another_file_counts_moves() {
    let log: String = (0..2000)
        .map(|i| {
            format!(
                "198.51.{}.{} - - [27/Nov/2026:10:00:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"c\"\n",
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    let path = tmp("combined-against.log", log.as_bytes());
    let low = tmp("combined-low.yaml", yaml("20", "ip", "").as_bytes());
    let high = tmp("combined-high.yaml", yaml("30", "ip", "").as_bytes());
    let out = bin()
        .arg("replay")
        .arg(&low)
        .arg(&path)
        .args(["--log-format", "combined", "--format", "json", "--service", "api", "--against"])
        .arg(&high)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let api = &json(&out)["services"]["api"];
    let up = (0..2000)
        .filter(|i| {
            let h = nginx_murmur2(format!("198.51.{}.{}", i / 250, i % 250 + 1).as_bytes());
            admits(3000, h) && !admits(2000, h)
        })
        .count();
    assert_eq!(api["moved"]["users"]["old_to_new"], up as u64);
    assert_eq!(api["moved"]["users"]["new_to_old"], 0);
}

/// nginx's predefined `combined` format, written out.
fn logformat_combined() -> &'static str {
    r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#
}

/// A service with `migration.ramp` (and anything else of `migration:`).
fn ramped(ramp: &str) -> String {
    format!(
        "services:
  - name: api
    old_host: api.example.com
    old_backend: api-old:80
    new_host: api.example.com
    new_backend: api-new:80
    migration: {{strategy: user, ramp: {ramp}}}
"
    )
}

fn diff_text(a: &str, b: &str) -> String {
    // Tests run in parallel: each pair of files has names of its own.
    static PAIRS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let pair = PAIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (a, b) = (tmp(&format!("diff-{pair}-a.yaml"), a.as_bytes()), tmp(&format!("diff-{pair}-b.yaml"), b.as_bytes()));
    let out = bin().arg("diff").arg(&a).arg(&b).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A changed ramp restarts in the module (a service at 100 % drops to its first
/// step): diff says every ramp field that changed and what the publication does
/// to the ramp, decided by the module's own publication code and fingerprints.
#[test]
fn diff_reports_ramp_changes_and_whether_the_ramp_restarts() {
    let base = "{steps: [5, 25, 100], every: 4h}";
    for (new, field) in [
        ("{steps: [5, 50, 100], every: 4h}", "  migration.ramp.steps: [5, 25, 100] -> [5, 50, 100]\n"),
        ("{steps: [5, 25, 100], every: 2h}", "  migration.ramp.every: 4h -> 2h\n"),
        ("{steps: [5, 25, 100], every: 4h, on_failure: hold}", "  migration.ramp.on_failure: rollback -> hold\n"),
        (
            "{steps: [5, 25, 100], every: 4h, gate: {max_error_rate: 1%}}",
            "  migration.ramp.gate: none -> {max_error_rate: 1%}\n",
        ),
    ] {
        let text = diff_text(&ramped(base), &ramped(new));
        assert!(text.contains(field), "{new}: {text}");
        assert!(
            text.contains("  ramp: restarts at step 1 of 3 (5 %), wherever it stood: a ramp that had reached 100 % drops to 5 %\n"),
            "{new}: {text}"
        );
        assert!(!text.contains("no changes"), "{text}");
    }
    // A gate limit changed inside a gate.
    let text = diff_text(
        &ramped("{steps: [5, 100], every: 4h, gate: {max_error_rate: 1%, max_p99: 800ms}}"),
        &ramped("{steps: [5, 100], every: 4h, gate: {max_error_rate: 0.5%, max_p99: 800ms}}"),
    );
    assert!(text.contains("  migration.ramp.gate.max_error_rate: 1% -> 0.5%\n"), "{text}");
    // A start in the past: the wall clock says which step.
    let text = diff_text(&ramped(base), &ramped("{steps: [5, 25, 100], every: 4h, start: \"2020-01-01T00:00:00Z\"}"));
    assert!(text.contains("  migration.ramp.start: none -> 2020-01-01T00:00:00Z\n"), "{text}");
    assert!(text.contains("  ramp: restarts at step 3 of 3 (100 %), on the wall clock"), "{text}");
    // A start in the future: scheduled.
    let text = diff_text(&ramped(base), &ramped("{steps: [5, 25, 100], every: 4h, start: \"2999-01-01T00:00:00Z\"}"));
    assert!(
        text.contains("  ramp: restarts scheduled: 0 % until 2999-01-01T00:00:00Z, then step 1 of 3 (5 %)"),
        "{text}"
    );
    // Only the salt changes: the ramp keeps its position, except a stopped one.
    let salted = ramped(base).replace("strategy: user,", "strategy: user, hash_salt: v2,");
    let text = diff_text(&ramped(base), &salted);
    assert!(text.contains("  migration.hash_salt: \"\" -> \"v2\"\n"), "{text}");
    assert!(
        text.contains(
            "  ramp: keeps its position (a held or rolled-back ramp starts again at step 1 of 3 (5 %): its \
             migration block or backends change)\n"
        ),
        "{text}"
    );
    // With a start long past, a stopped ramp starts again where the wall clock says.
    let started = "{steps: [5, 25, 100], every: 4h, start: \"2020-01-01T00:00:00Z\"}";
    let text =
        diff_text(&ramped(started), &ramped(started).replace("strategy: user,", "strategy: user, hash_salt: v2,"));
    assert!(
        text.contains("  ramp: keeps its position (a held or rolled-back ramp starts again at step 3 of 3 (100 %), on the wall clock"),
        "{text}"
    );
    // enabled: false keeps the ramp where it stands, frozen.
    let text = diff_text(&ramped(base), &ramped(base).replace("strategy: user,", "enabled: false, strategy: user,"));
    assert!(text.contains("  migration.enabled: true -> false\n"), "{text}");
    assert!(text.contains("change); enabled: false freezes it where it stands\n"), "{text}");
    // Added and removed.
    let plain = ramped(base).replace(&format!("ramp: {base}"), "percentage: 5");
    let text = diff_text(&plain, &ramped(base));
    assert!(text.contains("  migration.ramp: none -> {steps: [5, 25, 100], every: 4h}\n"), "{text}");
    assert!(text.contains("  ramp: starts at step 1 of 3 (5 %)"), "{text}");
    let text = diff_text(&ramped(base), &plain);
    assert!(text.contains("  ramp: ends: the file's percentage, 5 %, is in force from the publication"), "{text}");
    // The same ramp: no changes at all.
    assert_eq!(diff_text(&ramped(base), &ramped(base)), "no changes\n");

    // JSON: the existing keys stay, "ramp" is added.
    let (a, b) = (
        tmp("ramp-json-a.yaml", ramped(base).as_bytes()),
        tmp("ramp-json-b.yaml", ramped("{steps: [5, 50, 100], every: 4h}").as_bytes()),
    );
    let v = json(&bin().args(["diff", "--format", "json"]).arg(&a).arg(&b).output().unwrap());
    let api = &v["services"]["api"];
    for key in ["changed", "fields", "rules", "listed_users", "moves"] {
        assert!(api.get(key).is_some(), "{key}: {api}");
    }
    assert_eq!(api["changed"], true);
    let ramp = &api["ramp"];
    assert_eq!(
        (ramp["effect"].as_str(), ramp["step"].as_u64(), ramp["steps"].as_u64(), ramp["percentage"].as_f64()),
        (Some("restarts"), Some(1), Some(3), Some(5.0)),
        "{ramp}"
    );
    assert_eq!(ramp["state"], "ramping");
}

/// Changes of routing that diff did not see: a rule or a user list that differs
/// only after the 160 characters a line shows, and `fallback`.
#[test]
fn diff_sees_changes_past_the_shown_text_and_in_fallback() {
    let users = |last: &str| {
        let mut list: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
        list.push(last.to_owned());
        format!("[{}]", list.join(", "))
    };
    let from = |last: &str| {
        let mut list: Vec<String> = (0..20).map(|i| format!("10.{i}.0.0/16")).collect();
        list.push(last.to_owned());
        format!("[{}]", list.join(", "))
    };
    let file = |user: &str, net: &str, fallback: &str| {
        format!(
            "services:
  - name: api
    old_host: api.example.com
    old_backend: api-old:80
    new_host: api.example.com
    new_backend: api-new:80
    migration: {{strategy: user, percentage: 20}}
    canary:
      header_rules:
        - {{header: X-Beta, value: \"1\", target: new, from: {}}}
      ip_rules:
        - {{cidrs: {}, target: old}}
      user_rules:
        - {{users: {}, target: new}}
{fallback}",
            from(net),
            from(net),
            users(user)
        )
    };
    let a = file("zed", "192.168.0.0/16", "    fallback: {failures: 3}\n");
    let text = diff_text(&a, &file("zed", "172.16.0.0/12", "    fallback: {failures: 3}\n"));
    assert!(text.contains("  header_rules: - [0]"), "{text}");
    assert!(text.contains("  ip_rules: + [0]"), "{text}");
    let text = diff_text(&a, &file("zoe", "192.168.0.0/16", "    fallback: {failures: 3}\n"));
    assert!(text.contains("  user_rules: - [0]"), "{text}");
    let text = diff_text(&a, &file("zed", "192.168.0.0/16", "    fallback: {failures: 5, cooldown: 1m}\n"));
    assert!(text.contains("  fallback: {failures: 3, statuses: [502, 503, 504], cooldown: 30s} -> {failures: 5, statuses: [502, 503, 504], cooldown: 1m}\n"), "{text}");
    let text = diff_text(&a, &file("zed", "192.168.0.0/16", ""));
    assert!(text.contains("  fallback: {failures: 3, statuses: [502, 503, 504], cooldown: 30s} -> none\n"), "{text}");
    // Every other field that routes a request.
    for (from, to, line) in [
        (
            "old_host: api.example.com",
            "hosts: [api.example.com, www.example.com]\n    old_host: api.example.com",
            "  hosts: [api.example.com] -> [api.example.com, www.example.com]\n",
        ),
        (
            "new_backend: api-new:80",
            "new_backend: https://api-new:80",
            "  new_backend: http://api-new:80 -> https://api-new:80\n",
        ),
        (
            "old_backend: api-old:80",
            "old_backend: api-old2:80",
            "  old_backend: http://api-old:80 -> http://api-old2:80\n",
        ),
        (
            "new_host: api.example.com",
            "new_host: api.new.example.com",
            "  new_host: api.example.com -> api.new.example.com\n",
        ),
        ("{strategy: user,", "{enabled: false, strategy: user,", "  migration.enabled: true -> false\n"),
        (
            "{strategy: user,",
            "{user_key: \"cookie:uid\", strategy: user,",
            "  migration.user_key: header:x-user-id -> cookie:uid\n",
        ),
        ("{strategy: user,", "{hash_salt: s, strategy: user,", "  migration.hash_salt: \"\" -> \"s\"\n"),
        (
            "value: \"1\", target: new",
            "value: \"2\", target: new",
            "  header_rules: + [0] {header: x-beta, value: \"2\"",
        ),
    ] {
        let text = diff_text(&a, &a.replacen(from, to, 1));
        assert!(text.contains(line), "{line:?} in {text}");
    }
}

/// A log line is what a client sent: replay shows an unparsed one escaped, so
/// that an escape sequence in it never reaches the operator's terminal.
#[test]
fn replay_shows_unparsed_lines_escaped() {
    let config = tmp("escape.yaml", yaml("20", "user", "").as_bytes());
    let log = tmp("escape.log", b"\x1b]0;pwned\x07\x1b[2J\x9b31m not a log line\n");
    let out = bin().arg("replay").arg(&config).arg(&log).args(["--log-format", FORMAT]).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("not in the log format: \\u{1b}]0;pwned\\u{7}\\u{1b}[2J"), "{stderr:?}");
    assert!(!stderr.chars().any(|c| c.is_control() && c != '\n'), "{stderr:?}");
}

/// A gate limit that changes below the sixth decimal still restarts the ramp in
/// the module: diff shows the field and counts the service as changed.
#[test]
fn diff_shows_a_ramp_restart_however_small_the_change() {
    let file = |rate: &str| {
        tmp(
            &format!("gate-{rate}.yaml"),
            format!("services:\n  - name: shop\n    old_host: shop.example.com\n    old_backend: a:1\n    new_host: shop.example.com\n    new_backend: b:2\n    migration:\n      percentage: 1\n      ramp: {{steps: [1, 50, 100], every: 1h, gate: {{max_error_rate: {rate}}}}}\n").as_bytes(),
        )
    };
    let (a, b) = (file("0.01"), file("0.0100000001"));
    let out = bin().arg("diff").arg(&a).arg(&b).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("service shop:") && text.contains("max_error_rate: 1% -> 1.00000001%"), "{text}");
    let out = bin().args(["diff", "--format", "json"]).arg(&a).arg(&b).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["services"]["shop"]["changed"], true, "{v}");
    assert_eq!(v["services"]["shop"]["ramp"]["effect"], "restarts", "{v}");
}
