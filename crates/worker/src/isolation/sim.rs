//! The simulated backend: no process at all. A container takes the function's cold or warm
//! duration on the `Env` clock (virtual in simulation, real in a live worker), and memory is
//! accounted by the pool exactly as for real containers.

use super::{BoxFuture, CallRequest, CallResult, Container, CreateRequest, IsolationBackend, IsolationError};
use iluvatar_core::{Env, FunctionSpec};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Durations for functions registered without `resource_timings_json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// End-to-end time of a cold invocation (container start plus the call).
    pub default_cold_ms: f64,
    /// Time of a warm call.
    pub default_warm_ms: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig { default_cold_ms: 50.0, default_warm_ms: 1.0 }
    }
}

pub struct SimBackend {
    config: SimConfig,
    env: Env,
}

impl SimBackend {
    pub fn new(config: SimConfig, env: Env) -> Self {
        SimBackend { config, env }
    }

    /// (start-up time, call time) of a function.
    fn durations(&self, spec: &FunctionSpec) -> (Duration, Duration) {
        let (cold, warm) = match spec.timings() {
            Ok(Some(t)) => (t.cold_ms, t.warm_ms),
            _ => (self.config.default_cold_ms, self.config.default_warm_ms),
        };
        let ms = |x: f64| Duration::from_secs_f64(x.max(0.0) / 1000.0);
        (ms(cold - warm), ms(warm))
    }
}

impl IsolationBackend for SimBackend {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn flag(&self) -> u32 {
        iluvatar_rpc::isolation::SIM
    }

    fn check_reference(&self, spec: &FunctionSpec) -> Result<(), IsolationError> {
        if spec.image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(IsolationError::BadReference {
                backend: "sim",
                reference: spec.image.clone(),
                why: "a reference may not contain whitespace or control characters".into(),
            });
        }
        Ok(())
    }

    fn create<'a>(&'a self, req: CreateRequest<'a>) -> BoxFuture<'a, Result<Box<dyn Container>, IsolationError>> {
        Box::pin(async move {
            let (startup, call) = self.durations(req.spec);
            if !startup.is_zero() {
                tokio::time::sleep(startup).await;
            }
            let c: Box<dyn Container> = Box::new(SimContainer {
                id: req.container_id.to_string(),
                fqdn: req.spec.fqdn().0,
                call,
                calls: AtomicU64::new(0),
                env: self.env.clone(),
            });
            Ok(c)
        })
    }

    fn remove<'a>(&'a self, _container: Box<dyn Container>) -> BoxFuture<'a, Result<(), IsolationError>> {
        Box::pin(async { Ok(()) })
    }

    fn clean_leftovers(&self) -> BoxFuture<'_, Result<usize, IsolationError>> {
        Box::pin(async { Ok(0) })
    }
}

struct SimContainer {
    id: String,
    fqdn: String,
    call: Duration,
    calls: AtomicU64,
    env: Env,
}

impl Container for SimContainer {
    fn id(&self) -> &str {
        &self.id
    }

    fn call<'a>(&'a self, req: CallRequest<'a>) -> BoxFuture<'a, Result<CallResult, IsolationError>> {
        Box::pin(async move {
            let first_call = self.calls.fetch_add(1, Ordering::Relaxed) == 0;
            let start_unix_us = self.env.clock.unix_time_us();
            if !self.call.is_zero() {
                tokio::time::sleep(self.call).await;
            }
            let end_unix_us = self.env.clock.unix_time_us();
            let output = format!(r#"{{"sim":true,"fqdn":{:?},"args":{}}}"#, self.fqdn, req.args);
            Ok(CallResult { output: Ok(output), start_unix_us, end_unix_us, first_call })
        })
    }
}
