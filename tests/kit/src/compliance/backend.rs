//! What every isolation backend must do (the promises of `IsolationBackend` and `Container`
//! in crates/worker/src/isolation/mod.rs), run in process on the backend the config builds,
//! and the metrics a worker offering it exports at /metrics:
//!
//! - its config survives JSON and TOML, and a worker accepts it;
//! - its name is its config type, its flag one bit, the one its functions carry;
//! - `clean_leftovers` on a clean state finds nothing, again and again;
//! - `check_reference` refuses a bad reference with `BadReference` naming the backend;
//!   `check_reference`, `prepare` and `registered` accept a good one, as a registration calls them;
//! - create -> call -> call -> remove: the container has the id it was given, a call
//!   returns the function's JSON with start <= end (Unix µs of now), only the first call is
//!   the first, a call starts after the previous one ended;
//! - remove leaves nothing on the host, so `clean_leftovers` then finds nothing either.
//!
//! A backend is one [`BackendCase`] and one line: `backend_compliance!(name, Case);`.

use super::{round_trip, type_tag};
use crate::{POLL, WorkerProcess, metric_value, unique_dir};
use iluvatar_core::FunctionSpec;
use iluvatar_rpc as rpc;
use iluvatar_worker::isolation::{
    BackendConfig, BackendContext, CallRequest, CreateRequest, IsolationBackend, IsolationError,
};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The live environment a worker gives its backends (the one internal API used here).
fn live_env() -> iluvatar_core::Env {
    iluvatar_worker::env::live_env()
}

/// A Python function's spec on one backend: version 1, one CPU, one call at a time.
pub fn function_spec(name: &str, image: &str, isolation: u32, memory_mb: u64, timings: &str) -> FunctionSpec {
    FunctionSpec {
        name: name.into(),
        version: "1".into(),
        image: image.into(),
        memory_mb,
        cpus: 1,
        parallel_invokes: 1,
        language: iluvatar_core::Language::Python3,
        compute: 1,
        isolation,
        container_server: 1,
        resource_timings_json: timings.into(),
        system_function: false,
    }
}

/// One backend under the suite.
pub trait BackendCase {
    /// A config of the backend as a worker in these tests can run it.
    fn config() -> BackendConfig;
    /// A function it runs; its call with [`args`](Self::args) returns JSON.
    fn function() -> FunctionSpec;
    /// A function whose reference it must refuse.
    fn bad_function() -> FunctionSpec;
    /// The arguments of the calls.
    fn args() -> &'static str {
        r#"{"name": "compliance"}"#
    }
    /// What of its containers is on the host for a worker with this `state_dir` (empty once
    /// every container was removed).
    fn leftovers(state_dir: &Path) -> Vec<String>;
    /// Series the backend's worker must export beyond [`METRICS`] (none today).
    fn extra_metrics() -> &'static [&'static str] {
        &[]
    }
}

/// Series every worker exports once it ran one cold invocation, whatever its backend, and
/// the least each must read then.
pub const METRICS: [(&str, f64); 7] = [
    ("iluvatar_invocations_total{outcome=\"success\"}", 1.0),
    ("iluvatar_cold_starts_total", 1.0),
    ("iluvatar_registrations_total", 1.0),
    ("iluvatar_registered_functions", 1.0),
    ("iluvatar_containers{state=\"idle\"}", 1.0),
    ("iluvatar_memory_used_mb", 1.0),
    ("iluvatar_cold_start_seconds_count", 1.0),
];

/// The config survives JSON and TOML; its type tag is the backend's name.
pub fn config_round_trip<C: BackendCase>() {
    let config = C::config();
    round_trip(&config);
    assert!(!type_tag(&config).is_empty());
}

/// Builds the backend of `C` on a fresh state dir, as a worker does.
pub fn build<C: BackendCase>(state_dir: &Path) -> Arc<dyn IsolationBackend> {
    let ctx = BackendContext { env: live_env(), state_dir: state_dir.to_path_buf(), beyond_loopback: false };
    C::config().build(&ctx).unwrap_or_else(|e| panic!("building {:?}: {e}", C::config()))
}

/// The promises of the traits, on the backend `C` builds (in a runtime of its own).
pub fn trait_promises<C: BackendCase>() {
    let state = unique_dir("compliance");
    let backend = build::<C>(&state);
    promises::<C>(backend.as_ref(), &state);
    let _ = std::fs::remove_dir_all(&state);
}

/// The promises of the traits, on `backend` (built on `state_dir`).
pub fn promises<C: BackendCase>(backend: &dyn IsolationBackend, state_dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let name = type_tag(&C::config());
        assert_eq!(backend.name(), name, "a backend's name is its config type");
        assert!(backend.flag().is_power_of_two(), "{name}: a flag is one bit, not {:#x}", backend.flag());
        assert_eq!(C::function().isolation, backend.flag(), "{name}: its functions carry its flag");

        for round in 0..2 {
            let n = backend.clean_leftovers().await.unwrap_or_else(|e| panic!("{name}: clean_leftovers: {e}"));
            assert_eq!(n, 0, "{name}: clean_leftovers on a clean state (round {round})");
        }
        match backend.check_reference(&C::bad_function()) {
            Err(IsolationError::BadReference { backend: b, reference, .. }) => {
                assert_eq!(b, name, "BadReference names the backend");
                assert_eq!(reference, C::bad_function().image, "BadReference names the reference");
            }
            other => panic!("{name}: check_reference({:?}) should be BadReference: {other:?}", C::bad_function().image),
        }

        let spec = C::function();
        backend.check_reference(&spec).unwrap_or_else(|e| panic!("{name}: check_reference: {e}"));
        backend.prepare(&spec).await.unwrap_or_else(|e| panic!("{name}: prepare: {e}"));
        backend.registered(&spec).unwrap_or_else(|e| panic!("{name}: registered: {e}"));
        backend.start();
        let req = CreateRequest { spec: &spec, container_id: "compliance-1", tid: "compliance-create" };
        let container = backend.create(req).await.unwrap_or_else(|e| panic!("{name}: create: {e}"));
        assert_eq!(container.id(), "compliance-1", "{name}: a container has the id it was given");

        let mut last_end = 0;
        for call in 0..2 {
            let before = live_env().clock.unix_time_us();
            let r = container.call(CallRequest { args: C::args(), tid: "compliance-call" }).await;
            let r = r.unwrap_or_else(|e| panic!("{name}: call {call}: {e}"));
            let output = r.output.as_ref().unwrap_or_else(|e| panic!("{name}: call {call} raised {e:?}"));
            serde_json::from_str::<Value>(output).unwrap_or_else(|e| panic!("{name}: output {output:?}: {e}"));
            assert_eq!(r.first_call, call == 0, "{name}: only the first call is the first ({r:?})");
            assert!(r.start_unix_us <= r.end_unix_us, "{name}: a call ends after it starts ({r:?})");
            assert!(r.start_unix_us + 1_000_000 >= before, "{name}: timestamps are Unix µs of now ({r:?})");
            assert!(r.start_unix_us >= last_end, "{name}: a call starts after the previous one ended ({r:?})");
            last_end = r.end_unix_us;
        }

        backend.remove(container).await.unwrap_or_else(|e| panic!("{name}: remove: {e}"));
        let left = wait_for_nothing(|| C::leftovers(state_dir)).await;
        assert!(left.is_empty(), "{name}: remove left {left:?}");
        let n = backend.clean_leftovers().await.unwrap_or_else(|e| panic!("{name}: clean_leftovers: {e}"));
        assert_eq!(n, 0, "{name}: clean_leftovers after every container was removed");
        backend.close().await;
    });
}

/// `f()` once it is empty, or what it still shows after 5 s.
async fn wait_for_nothing(f: impl Fn() -> Vec<String>) -> Vec<String> {
    for _ in 0..250 {
        if f().is_empty() {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    f()
}

/// A worker offering only this backend accepts its config, runs one cold invocation on it,
/// and exports every series of [`METRICS`] (and the backend's extra ones) with at least
/// their least values.
pub fn metrics<C: BackendCase>() {
    let config = serde_json::to_value(C::config()).unwrap();
    let mut w = WorkerProcess::start(json!({"isolation": {"backends": [config]}}));
    let spec = C::function();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = w.client().await;
        let reg = rpc::RegisterRequest {
            image_name: spec.image.clone(),
            isolate: spec.isolation,
            ..crate::register_req(&spec.name, &spec.version, spec.memory_mb as i64, &spec.resource_timings_json)
        };
        let r = c.register(reg).await.unwrap_or_else(|e| w.fail(&format!("register: {e}"))).into_inner();
        assert!(r.success, "register: {r:?}");
        let inv = rpc::InvokeRequest {
            function_name: spec.name.clone(),
            function_version: spec.version.clone(),
            json_args: C::args().into(),
            transaction_id: "compliance-invoke".into(),
        };
        let r = c.invoke(inv).await.unwrap_or_else(|e| w.fail(&format!("invoke: {e}"))).into_inner();
        assert!(r.success, "invoke: {r:?}");
    });
    drop(rt);
    let text = w.metrics();
    for (series, least) in METRICS {
        let v = metric_value(&text, series).unwrap_or_else(|| w.fail(&format!("no {series} in /metrics:\n{text}")));
        assert!(v >= least, "{series} is {v}, at least {least} expected after a cold invocation:\n{text}");
    }
    for series in C::extra_metrics() {
        assert!(metric_value(&text, series).is_some(), "no {series} in /metrics:\n{text}");
    }
    // A graceful stop removes the containers; `clean` then finds what it missed.
    let status = w.stop();
    assert!(status.success(), "the worker exited with {status} on SIGTERM");
    let mut clean = std::process::Command::new(crate::bin("iluvatar_worker"));
    clean.arg("-c").arg(&w.config_path).arg("clean").env("RUST_LIB_BACKTRACE", "0");
    let out = crate::output_timeout(clean, Duration::from_secs(60));
    assert!(out.status.success(), "clean after the worker: {}", String::from_utf8_lossy(&out.stderr));
}

/// The suite of a backend as tests: `backend_compliance!(sim, SimCase);` makes a module
/// `sim` with one test per part.
#[macro_export]
macro_rules! backend_compliance {
    ($module:ident, $case:ty) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn config_round_trips() {
                $crate::compliance::backend::config_round_trip::<$case>()
            }
            #[test]
            fn keeps_the_trait_promises() {
                $crate::compliance::backend::trait_promises::<$case>()
            }
            #[test]
            fn exports_the_metrics() {
                $crate::compliance::backend::metrics::<$case>()
            }
        }
    };
}

/// The suite of a backend in a test binary without the libtest harness (`harness = false`),
/// for backends that need their own code first in `main` (the runtime backend's launcher):
/// runs each part whose name contains the first argument (all without one), prints a line
/// per part as libtest does, and exits non-zero if one failed.
pub fn run_main<C: BackendCase>(module: &str) {
    let parts: [(&str, fn()); 3] = [
        ("config_round_trips", config_round_trip::<C>),
        ("keeps_the_trait_promises", trait_promises::<C>),
        ("exports_the_metrics", metrics::<C>),
    ];
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_default();
    let chosen: Vec<_> =
        parts.iter().map(|(n, f)| (format!("{module}::{n}"), f)).filter(|(n, _)| n.contains(&filter)).collect();
    println!("\nrunning {} tests", chosen.len());
    let mut failed = Vec::new();
    for (name, part) in &chosen {
        let ok = std::panic::catch_unwind(*part).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(name.clone());
        }
    }
    let result = if failed.is_empty() { "ok" } else { "FAILED" };
    println!("\ntest result: {result}. {} passed; {} failed", chosen.len() - failed.len(), failed.len());
    if !failed.is_empty() {
        println!("failures: {failed:?}");
        std::process::exit(101);
    }
}
