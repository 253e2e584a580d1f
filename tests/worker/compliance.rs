//! The backend compliance suite (iluvatar_testkit::compliance::backend) on the sim
//! backend, and the proof that the suite fails a backend that breaks a promise.

use iluvatar_core::FunctionSpec;
use iluvatar_testkit::compliance::backend::{BackendCase, build, function_spec, promises};
use iluvatar_testkit::unique_dir;
use iluvatar_worker::isolation::sim::SimConfig;
use iluvatar_worker::isolation::{
    BackendConfig, BoxFuture, CallRequest, CallResult, Container, CreateRequest, IsolationBackend, IsolationError,
};
use std::path::Path;
use std::sync::Arc;

pub struct SimCase;

impl BackendCase for SimCase {
    fn config() -> BackendConfig {
        BackendConfig::Sim(SimConfig { default_cold_ms: 20.0, default_warm_ms: 2.0 })
    }

    fn function() -> FunctionSpec {
        let timings = r#"{"cold_dur_ms": 30, "warm_dur_ms": 5}"#;
        function_spec("compliance", "sim", iluvatar_rpc::isolation::SIM, 64, timings)
    }

    fn bad_function() -> FunctionSpec {
        FunctionSpec { image: "a reference\twith whitespace".into(), ..Self::function() }
    }

    /// The sim backend keeps nothing on the host: its state dir stays empty.
    fn leftovers(state_dir: &Path) -> Vec<String> {
        let entries = std::fs::read_dir(state_dir).into_iter().flatten().flatten();
        entries.map(|e| e.path().display().to_string()).collect()
    }
}

iluvatar_testkit::backend_compliance!(sim, SimCase);

/// The sim backend with containers that say every call is their first.
struct Forgetful(Arc<dyn IsolationBackend>);
struct ForgetfulContainer(Box<dyn Container>);

impl Container for ForgetfulContainer {
    fn id(&self) -> &str {
        self.0.id()
    }
    fn call<'a>(&'a self, req: CallRequest<'a>) -> BoxFuture<'a, Result<CallResult, IsolationError>> {
        Box::pin(async move { self.0.call(req).await.map(|r| CallResult { first_call: true, ..r }) })
    }
}

impl IsolationBackend for Forgetful {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn flag(&self) -> u32 {
        self.0.flag()
    }
    fn check_reference(&self, spec: &FunctionSpec) -> Result<(), IsolationError> {
        self.0.check_reference(spec)
    }
    fn create<'a>(&'a self, req: CreateRequest<'a>) -> BoxFuture<'a, Result<Box<dyn Container>, IsolationError>> {
        Box::pin(async move {
            let c = self.0.create(req).await?;
            Ok(Box::new(ForgetfulContainer(c)) as Box<dyn Container>)
        })
    }
    fn remove<'a>(&'a self, container: Box<dyn Container>) -> BoxFuture<'a, Result<(), IsolationError>> {
        self.0.remove(container)
    }
    fn clean_leftovers(&self) -> BoxFuture<'_, Result<usize, IsolationError>> {
        self.0.clean_leftovers()
    }
}

#[test]
fn the_backend_suite_fails_a_backend_that_breaks_a_promise() {
    let state = unique_dir("compliance-broken");
    let broken = Forgetful(build::<SimCase>(&state));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| promises::<SimCase>(&broken, &state)));
    assert!(r.is_err(), "the suite passed a backend whose every call is the first");
    let _ = std::fs::remove_dir_all(&state);
}
