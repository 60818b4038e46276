//! Build script of the module crate: passes nginx's feature flags on as
//! `ngx_feature="..."` cfgs (as the ngx crate does), tells the code which nginx
//! version it is built against where the bindings differ (`ngx_cookie_array`:
//! before nginx 1.23 the Cookie headers are an array, `headers_in.cookies`; since,
//! a linked list, `headers_in.cookie`), and records where the nginx we link against
//! was built, so `scripts/install-prefix.sh` installs that very binary into
//! `target/nginx/` (a stale nginx-sys build directory must never be picked).

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES_CHECK");
    println!(
        "cargo::rustc-check-cfg=cfg(ngx_feature, values({}))",
        env::var("DEP_NGINX_FEATURES_CHECK").unwrap_or_else(|_| "any()".into())
    );
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES");
    if let Ok(features) = env::var("DEP_NGINX_FEATURES") {
        for feature in features.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            println!("cargo::rustc-cfg=ngx_feature=\"{feature}\"");
        }
    }

    // nginx-sys reads NGINX_VERSION_NUMBER (e.g. 1022001) from the nginx it binds.
    println!("cargo::rustc-check-cfg=cfg(ngx_cookie_array)");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    let version: u64 = env::var("DEP_NGINX_VERSION_NUMBER").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    if version != 0 && version < 1_023_000 {
        println!("cargo::rustc-cfg=ngx_cookie_array");
    }

    println!("cargo::rerun-if-env-changed=DEP_NGINX_BUILD_DIR");
    let Ok(build_dir) = env::var("DEP_NGINX_BUILD_DIR") else {
        return;
    };
    // OUT_DIR is <target>/<profile>/build/<crate>-<hash>/out.
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    if let Some(profile_dir) = out_dir.ancestors().nth(3) {
        let record = profile_dir.join("nginx-build-dir");
        if fs::read_to_string(&record).ok().as_deref() != Some(build_dir.as_str()) {
            fs::write(&record, &build_dir).expect("write nginx-build-dir");
        }
    }
}
