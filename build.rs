//! Build script of the module crate: passes nginx's feature flags on as
//! `ngx_feature="..."` cfgs (as the ngx crate does), and records where the nginx we
//! link against was built, so `scripts/install-prefix.sh` installs that very binary
//! into `target/nginx/` (a stale nginx-sys build directory must never be picked).

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
