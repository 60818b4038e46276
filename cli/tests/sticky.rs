//! `migration.sticky` in explain and replay: a request without an id is given a
//! new one and decided with it; its side is random only where the split decides.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

// The engine's tests' own MurmurHash2 and split_clients bounds.
#[path = "../../engine/tests/common/mod.rs"]
mod common;
use common::{admits, nginx_murmur2};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nginx-migration"))
}

fn tmp(name: &str, content: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nginx-migration-sticky-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `shop` with sticky (30 %, cookie mig_uid, a header rule), `plain` without.
fn config(percentage: u32, enabled: bool) -> String {
    format!(
        "services:
  - name: shop
    old_host: shop.example.com
    old_backend: shop-old:80
    new_host: shop.example.com
    new_backend: shop-new:80
    migration:
      enabled: {enabled}
      strategy: user
      percentage: {percentage}
      user_key: cookie:mig_uid
      sticky: {{}}
    canary:
      header_rules:
        - {{header: X-Beta, value: \"on\", target: new}}
  - name: plain
    old_host: plain.example.com
    old_backend: plain-old:80
    new_host: plain.example.com
    new_backend: plain-new:80
    migration: {{strategy: user, percentage: 30, user_key: cookie:mig_uid}}
"
    )
}

fn explain(file: &PathBuf, args: &[&str]) -> Output {
    bin().arg("explain").arg(file).args(args).output().unwrap()
}

fn steps(v: &Value) -> Vec<&str> {
    v["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect()
}

#[test]
fn explain_gives_a_request_without_an_id_a_new_one_and_decides_with_it() {
    let file = tmp("explain.yaml", config(30, true).as_bytes());
    let mut ids = Vec::new();
    for _ in 0..20 {
        let v = json(&explain(&file, &["--host", "shop.example.com", "--format", "json"]));
        let sticky = &v["sticky"];
        assert_eq!((sticky["cookie"].as_str(), sticky["minted"].as_bool()), (Some("mig_uid"), Some(true)), "{v}");
        let id = sticky["id"].as_str().unwrap().to_owned();
        assert!(id.len() == 22 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{id}");
        assert_eq!(sticky["new_probability"].as_f64(), Some(0.3));
        assert_eq!(sticky["set_cookie"], format!("mig_uid={id}; Max-Age=2592000; Path=/; HttpOnly; SameSite=Lax"));
        assert_eq!(
            sticky["set_cookie_tls"],
            format!("mig_uid={id}; Max-Age=2592000; Path=/; Secure; HttpOnly; SameSite=Lax")
        );
        // Decided as the module decides it: the hash of the new id, split_clients' bound.
        assert_eq!(v["rule"], "user_hash");
        let new = admits(3000, nginx_murmur2(id.as_bytes()));
        assert_eq!(v["target"], if new { "new" } else { "old" }, "{id}");
        // The steps before the split as for any request; the split hashes the new id.
        assert_eq!(steps(&v), ["service", "enabled", "header_rules[0]", "fallback", "user_rules", "user_hash"]);
        let last = v["steps"][5]["why"].as_str().unwrap();
        assert!(last.contains(&format!("murmur2 of user id \"{id}\"")), "{last}");
        // The client coming back with its id lands where it was sent, and is given none.
        let cookie = format!("mig_uid={id}");
        let back = json(&explain(&file, &["--host", "shop.example.com", "--cookie", &cookie, "--format", "json"]));
        assert_eq!(
            (&back["target"], &back["rule"], &back["sticky"]["minted"]),
            (&v["target"], &v["rule"], &false.into())
        );
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "a new id every run");
    // An empty cookie is no id; a ramp's percentage in force is the probability.
    let v = json(&explain(&file, &["--host", "shop.example.com", "--cookie", "mig_uid=", "--format", "json"]));
    assert_eq!(v["sticky"]["minted"], true);
    let v = json(&explain(&file, &["--host", "shop.example.com", "--percentage", "12.5", "--format", "json"]));
    assert_eq!(v["sticky"]["new_probability"].as_f64(), Some(0.125));
    // The text says it.
    let out = explain(&file, &["--host", "shop.example.com"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("sticky   no id in cookie \"mig_uid\": the client is given a new one, \""), "{text}");
    assert!(text.contains("         Set-Cookie: mig_uid="), "{text}");
    assert!(text.contains("; Max-Age=2592000; Path=/; HttpOnly; SameSite=Lax (over TLS: with Secure)\n"), "{text}");
    assert!(text.contains("(a new id is random, and so is its hash: it lands on new with probability 30 %;"), "{text}");
}

#[test]
fn explain_with_the_cookie_reads_the_id_and_gives_none() {
    let file = tmp("explain-carried.yaml", config(30, true).as_bytes());
    let args = ["--host", "shop.example.com", "--cookie", "theme=dark", "--cookie", "mig_uid=user-42"];
    let v = json(&explain(&file, &[&args[..], &["--format", "json"]].concat()));
    let sticky = &v["sticky"];
    assert_eq!((sticky["cookie"].as_str(), sticky["minted"].as_bool()), (Some("mig_uid"), Some(false)));
    for key in ["id", "set_cookie", "set_cookie_tls", "new_probability"] {
        assert!(sticky[key].is_null(), "{key}: {sticky}");
    }
    let new = admits(3000, nginx_murmur2(b"user-42"));
    assert_eq!((v["rule"].as_str(), v["target"].as_str()), (Some("user_hash"), Some(if new { "new" } else { "old" })));
    assert!(v["steps"][5]["why"].as_str().unwrap().contains("murmur2 of user id \"user-42\""));
    // Deterministic: the same answer every run.
    for _ in 0..3 {
        assert_eq!(json(&explain(&file, &[&args[..], &["--format", "json"]].concat())), v);
    }
    let text = String::from_utf8(explain(&file, &args).stdout).unwrap();
    assert!(text.contains("sticky   the request carries an id in cookie \"mig_uid\": none is given\n"), "{text}");
    assert!(!text.contains("Set-Cookie") && !text.contains("probability"), "{text}");
    // A service without sticky: no sticky line, `sticky` null, a weight draw as ever.
    let v = json(&explain(&file, &["--host", "plain.example.com", "--format", "json"]));
    assert!(v["sticky"].is_null());
    assert_eq!(v["rule"], "weight");
    let text = String::from_utf8(explain(&file, &["--host", "plain.example.com"]).stdout).unwrap();
    assert!(!text.contains("sticky"), "{text}");
}

#[test]
fn explain_a_step_before_the_split_decides_and_the_client_still_gets_an_id() {
    let file = tmp("explain-header.yaml", config(30, true).as_bytes());
    let v = json(&explain(&file, &["--host", "shop.example.com", "--header", "X-Beta: on", "--format", "json"]));
    assert_eq!((v["rule"].as_str(), v["target"].as_str()), (Some("header"), Some("new")));
    assert_eq!(steps(&v), ["service", "enabled", "header_rules[0]"]);
    assert_eq!(v["sticky"]["minted"], true);
    assert_eq!(v["sticky"]["id"].as_str().map(str::len), Some(22));
    assert_eq!(v["sticky"]["new_probability"].as_f64(), Some(1.0));
    let text = String::from_utf8(explain(&file, &["--host", "shop.example.com", "--header", "X-Beta: on"]).stdout);
    let text = text.unwrap();
    assert!(text.contains("sticky   no id in cookie \"mig_uid\": the client is given a new one"), "{text}");
    assert!(
        text.contains("(rule header decided before the split: new whatever the new id; the client still gets it)"),
        "{text}"
    );
    // The rollback switch: old, and still an id.
    let off = tmp("explain-off.yaml", config(30, false).as_bytes());
    let v = json(&explain(&off, &["--host", "shop.example.com", "--format", "json"]));
    assert_eq!((v["rule"].as_str(), v["target"].as_str()), (Some("disabled"), Some("old")));
    assert_eq!((v["sticky"]["minted"].as_bool(), v["sticky"]["new_probability"].as_f64()), (Some(true), Some(0.0)));
}

const FORMAT: &str = r#"$remote_addr "$host" "$cookie_mig_uid" "$http_x_beta""#;

fn line(host: &str, id: &str, beta: &str) -> String {
    format!("192.0.2.1 \"{host}\" \"{id}\" \"{beta}\"\n")
}

/// 200 users with an id (each once), 100 requests without one, 20 without one
/// that a header rule sends new, and 10 for the service without sticky.
fn log() -> PathBuf {
    static LOG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LOG.get_or_init(write_log).clone()
}

fn write_log() -> PathBuf {
    let mut log: String = (0..200).map(|u| line("shop.example.com", &format!("user-{u}"), "-")).collect();
    log.extend((0..100).map(|_| line("shop.example.com", "-", "-")));
    log.extend((0..20).map(|_| line("shop.example.com", "-", "on")));
    log.extend((0..10).map(|_| line("plain.example.com", "-", "-")));
    tmp("access.log", log.as_bytes())
}

fn replay(config: &PathBuf, format: &str, extra: &[&str]) -> Output {
    bin().arg("replay").arg(config).arg(log()).args(["--log-format", format]).args(extra).output().unwrap()
}

fn near(v: &Value, expected: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - expected).abs() < 0.005)
}

#[test]
fn replay_counts_the_requests_that_would_be_given_an_id() {
    let low = tmp("replay-30.yaml", config(30, true).as_bytes());
    let high = tmp("replay-50.yaml", config(50, true).as_bytes());
    let out = replay(&low, FORMAT, &["--format", "json", "--against", high.to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
    let v = json(&out);
    let shop = &v["services"]["shop"];
    let hashes: Vec<u32> = (0..200).map(|u| nginx_murmur2(format!("user-{u}").as_bytes())).collect();
    let new_ids = hashes.iter().filter(|&&h| admits(3000, h)).count() as f64;
    // 120 new users: 100 on new with 30 % each (expected values), 20 new by the header rule.
    assert_eq!(shop["users"]["minted"], 120);
    assert!(near(&shop["users"]["new"], new_ids + 30.0 + 20.0), "{shop}");
    assert!(near(&shop["users"]["old"], 200.0 - new_ids + 70.0), "{shop}");
    assert!(near(&shop["requests"]["new"], new_ids + 30.0 + 20.0), "{shop}");
    assert_eq!((shop["rules"]["user_hash"].as_u64(), shop["rules"]["header"].as_u64()), (Some(300), Some(20)));
    assert_eq!(shop["rules"]["weight"], 0, "no request is drawn by weight");
    assert_eq!(shop["users_by_rule"]["user_hash"], 300);
    assert_eq!(shop["users_by_rule"]["header"], 20);
    // 30 % -> 50 %: ids move by their hash, new users by 20 % each; none comes back.
    let up = hashes.iter().filter(|&&h| admits(5000, h) && !admits(3000, h)).count() as f64;
    assert!(near(&shop["moved"]["users"]["old_to_new"], up + 20.0), "{shop}");
    assert!(near(&shop["moved"]["requests"]["old_to_new"], up + 20.0), "{shop}");
    assert_eq!(
        (shop["moved"]["users"]["new_to_old"].as_u64(), shop["moved"]["requests"]["new_to_old"].as_u64()),
        (Some(0), Some(0))
    );
    // The service without sticky: its users as ever, no `minted`.
    let plain = &v["services"]["plain"];
    assert_eq!(plain["users"].as_object().unwrap().keys().collect::<Vec<_>>(), ["new", "old"]);
    assert_eq!((plain["users"]["old"].as_u64(), plain["users"]["new"].as_u64()), (Some(0), Some(0)));
    assert_eq!(plain["rules"]["weight"], 10);

    let out = replay(&low, FORMAT, &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("(200 distinct; 120 requests would be given an id (sticky), each one more user)"), "{text}");
    assert!(text.contains(
        "(requests given an id counted as expected values: a new id goes new with the percentage's probability)"
    ));
    assert!(text.contains("(0 distinct; 10 requests without a user id)"), "{text}");
}

#[test]
fn replay_warns_when_the_log_cannot_say_who_carried_the_cookie() {
    let config = tmp("replay-warn.yaml", config(30, true).as_bytes());
    let warning = "warning: service shop has sticky, but the log format records neither $cookie_mig_uid nor \
                   $http_cookie: every line for it counts as a client without an id, given one";
    let without = r#"$remote_addr "$host" "$cookie_other" "$http_x_beta""#;
    let out = replay(&config, without, &["--format", "json"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(warning), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json(&out)["services"]["shop"]["users"]["minted"], 320, "every line for shop");
    for with in [
        FORMAT,
        r#"$remote_addr "$host" "$http_cookie" "$http_x_beta""#,
        r#"$remote_addr "$host" "${COOKIE_MIG_UID}" "$http_x_beta""#,
    ] {
        let out = replay(&config, with, &["--format", "json"]);
        assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "{with}");
    }
}

#[test]
fn diff_reports_a_changed_sticky() {
    let a = tmp("diff-a.yaml", config(30, true).as_bytes());
    let without = config(30, true).replace("      sticky: {}\n", "");
    let b = tmp("diff-b.yaml", without.as_bytes());
    let out = bin().arg("diff").arg(&a).arg(&b).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(
            "migration.sticky: max_age 2592000s, path /, domain none, secure Auto, same_site Lax, http_only true -> none"
        ),
        "{text}"
    );
    let c = tmp("diff-c.yaml", config(30, true).replace("sticky: {}", "sticky: {domain: example.com}").as_bytes());
    let out = bin().arg("diff").arg(&a).arg(&c).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("domain none, ") && text.contains("domain example.com, "), "{text}");
}

#[test]
fn diff_reports_a_changed_drain() {
    let a = tmp("diff-drain-a.yaml", config(30, true).as_bytes());
    let with =
        config(30, true).replace("      sticky: {}\n", "      sticky: {}\n      drain: {rate: 30/m, after: 1500ms}\n");
    let b = tmp("diff-drain-b.yaml", with.as_bytes());
    let out = bin().arg("diff").arg(&a).arg(&b).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("migration.drain: none -> rate 30/m, after 1500ms"), "{text}");
}
