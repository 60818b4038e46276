//! Inputs found by the fuzz targets of engine/fuzz, kept as regression tests.

use migration_engine::{
    decide_with, load_str, BreakerCells, Breakers, Outcome, OwnedRequest, Rule, ServiceChoice, Target,
};

struct At(BreakerCells, u64);

impl Breakers for At {
    fn breaker(&self, index: u32) -> Option<&BreakerCells> {
        (index == 0).then_some(&self.0)
    }
    fn now_ms(&self) -> u64 {
        self.1
    }
}

/// `cargo fuzz run decide`: a half-open breaker asked for its trial at the last
/// millisecond of the clock (`u64::MAX`) panicked with "attempt to add with
/// overflow" in `BreakerCells::begin_trial`.
#[test]
fn a_trial_at_the_end_of_the_clock() {
    let config = load_str(
        "f.yaml",
        "services:\n  - name: api\n    old_host: api.example\n    old_backend: old:80\n    new_host: api.new\n    \
         new_backend: new:443\n    migration: {percentage: 100}\n    fallback: {failures: 1, cooldown: 100ms}\n",
    )
    .unwrap();
    let breakers = At(BreakerCells::default(), u64::MAX);
    breakers.0.record(Outcome::Failure(502), None, 1, 0);
    let request = OwnedRequest::new("api.example");
    let first = decide_with(&config, ServiceChoice::Auto, &request, &mut || 0, &breakers);
    assert_eq!((first.target, first.rule, first.trial.is_some()), (Some(Target::New), Rule::Weight, true));
    let second = decide_with(&config, ServiceChoice::Auto, &request, &mut || 0, &breakers);
    assert_eq!((second.target, second.rule, second.trial.is_some()), (Some(Target::Old), Rule::Fallback, false));
}

/// `cargo fuzz run config`: a ConfigMap whose `data` key carries a YAML tag
/// (`! s.yml:`) panicked in the lookup of the embedded document.
#[test]
fn configmap_with_a_tagged_data_key() {
    let err = load_str("f.yaml", "kind: ConfigMap\ndata:\n ! s.yaml:").unwrap_err();
    assert_eq!(err.to_string(), "f.yaml: data.s.yaml: must be a string holding the YAML document");
}
