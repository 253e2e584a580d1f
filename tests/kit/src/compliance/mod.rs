//! Compliance suites: what every isolation backend ([`backend`]) and every policy
//! ([`policy`]: queue, eviction, keep-alive, balancing) must do, written once and run for
//! each. A new backend or policy is one line in a test target:
//!
//! - `iluvatar_testkit::backend_compliance!(sim, SimCase);` (tests/worker/compliance.rs),
//! - `compliance!(balancer_round_robin: balancer_suite(BalancerConfig::RoundRobin));`
//!   (tests/policy/main.rs, which also refuses to compile while a config variant is missing).
//!
//! Each suite also runs against a deliberately broken implementation (tests/policy,
//! tests/worker/compliance.rs) to show that it can fail.

pub mod backend;
pub mod policy;

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// `value` survives JSON and TOML (the two config formats) unchanged.
pub fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let json = serde_json::to_string(value).unwrap_or_else(|e| panic!("{value:?} does not serialize to JSON: {e}"));
    let back: T = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json} does not parse back: {e}"));
    assert_eq!(&back, value, "JSON round trip through {json}");
    let text = toml::to_string(value).unwrap_or_else(|e| panic!("{value:?} does not serialize to TOML: {e}"));
    let back: T = toml::from_str(&text).unwrap_or_else(|e| panic!("TOML {text:?} does not parse back: {e}"));
    assert_eq!(&back, value, "TOML round trip through {text:?}");
}

/// The `type` tag a `#[serde(tag = "type")]` config is written with.
pub fn type_tag<T: Serialize + Debug>(value: &T) -> String {
    let v = serde_json::to_value(value).unwrap();
    v["type"].as_str().unwrap_or_else(|| panic!("{value:?} has no type tag: {v}")).to_string()
}

/// A small deterministic generator (SplitMix64) for the suites' random cases: the same
/// cases on every run, without a dependency.
pub struct Cases(u64);

impl Cases {
    pub fn new(seed: u64) -> Self {
        Cases(seed)
    }

    pub fn draw(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.draw() % n.max(1)
    }
}
