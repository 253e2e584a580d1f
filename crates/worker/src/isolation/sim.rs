//! The simulated backend: no process at all. A container takes the function's cold or warm
//! duration on the `Env` clock (virtual in simulation, real in a live worker), and memory is
//! accounted by the pool exactly as for real containers. With measured samples in the
//! registration's timings, each duration is drawn from them with the `Env`'s seeded
//! generator: a simulation then has the measured spread, and its seed matters.

use super::{
    BackendContext, BackendFactory, BoxFuture, CallRequest, CallResult, Container, CreateRequest, IsolationBackend,
    IsolationError,
};
use iluvatar_core::{Env, FunctionSpec, ResourceTimings};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
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

impl BackendFactory for SimConfig {
    fn build(&self, ctx: &BackendContext) -> Result<Arc<dyn IsolationBackend>, IsolationError> {
        Ok(Arc::new(SimBackend::new(self.clone(), ctx.env.clone())))
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

    /// How long a new container of `spec` takes to start, and its calls' durations.
    fn model(&self, spec: &FunctionSpec) -> (Duration, Durations) {
        let t = match spec.timings() {
            Ok(Some(t)) => t,
            _ => ResourceTimings {
                cold_ms: self.config.default_cold_ms,
                warm_ms: self.config.default_warm_ms,
                ..Default::default()
            },
        };
        let mut warm = Durations::new(ms(t.warm_ms), &t.warm_samples_ms, &t.warm_idle_ms);
        let cold = Durations::new(ms(t.cold_ms), &t.cold_samples_ms, &[]);
        // The cold invocation (start plus first call) takes a cold duration in all: the
        // first call takes a warm one, and the start the rest (none if the warm one is
        // longer).
        let (cold, first) = (cold.draw(None, &self.env), warm.draw(None, &self.env));
        warm.first = Some(first);
        (cold.saturating_sub(first), warm)
    }
}

/// A duration in whole milliseconds, the nearest: tokio's timers (and so virtual time) tick
/// every millisecond and round a sleep up to the next tick, which would otherwise add half
/// a millisecond to every duration on average.
fn ms(x: f64) -> Duration {
    Duration::from_millis(x.max(0.0).round() as u64)
}

/// Idle times are told apart by decade: under 10 ms, 10-100 ms, 100 ms-1 s, 1-10 s, more.
const IDLE_CLASSES: usize = 5;

fn idle_class(idle_ms: f64) -> usize {
    let mut bound = 10.0;
    for class in 0..IDLE_CLASSES - 1 {
        if idle_ms < bound {
            return class;
        }
        bound *= 10.0;
    }
    IDLE_CLASSES - 1
}

/// A container's call durations: drawn from measured samples (seeded by the `Env`), else
/// fixed; the first call's is decided at creation. Samples that come with the idle time
/// before them are drawn from those measured after a similar idle time (the nearest class
/// that has any): on a real machine a call after a long idle time is slower.
#[derive(Default)]
struct Durations {
    fixed: Duration,
    samples: Vec<Duration>,
    by_idle: [Vec<Duration>; IDLE_CLASSES],
    first: Option<Duration>,
}

impl Durations {
    fn new(fixed: Duration, samples_ms: &[f64], idle_ms: &[f64]) -> Self {
        let samples: Vec<Duration> = samples_ms.iter().map(|x| ms(*x)).collect();
        let mut by_idle: [Vec<Duration>; IDLE_CLASSES] = Default::default();
        if idle_ms.len() == samples.len() {
            for (d, idle) in samples.iter().zip(idle_ms) {
                by_idle[idle_class(*idle)].push(*d);
            }
        }
        Durations { fixed, samples, by_idle, first: None }
    }

    /// A duration for a call after `idle` (unknown: None).
    fn draw(&self, idle: Option<Duration>, env: &Env) -> Duration {
        let mut pool = &self.samples;
        if let Some(idle) = idle {
            let c = idle_class(idle.as_secs_f64() * 1e3);
            // The class itself, then its neighbours one, two... apart (the shorter first).
            let nearest = (0..IDLE_CLASSES)
                .flat_map(|d| [c.checked_sub(d), Some(c + d)])
                .flatten()
                .find(|&k| k < IDLE_CLASSES && !self.by_idle[k].is_empty());
            if let Some(k) = nearest {
                pool = &self.by_idle[k];
            }
        }
        match pool.len() {
            0 => self.fixed,
            1 => pool[0],
            n => pool[(env.rng.next_u64() % n as u64) as usize],
        }
    }

    fn call(&self, first_call: bool, idle: Option<Duration>, env: &Env) -> Duration {
        match self.first {
            Some(d) if first_call => d,
            _ => self.draw(idle, env),
        }
    }
}

impl IsolationBackend for SimBackend {
    fn flag(&self) -> u32 {
        iluvatar_rpc::isolation::SIM
    }

    fn check_reference(&self, spec: &FunctionSpec) -> Result<(), IsolationError> {
        if spec.image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(IsolationError::BadReference {
                backend: self.name(),
                reference: spec.image.clone(),
                why: "a reference may not contain whitespace or control characters".into(),
            });
        }
        Ok(())
    }

    fn create<'a>(&'a self, req: CreateRequest<'a>) -> BoxFuture<'a, Result<Box<dyn Container>, IsolationError>> {
        Box::pin(async move {
            let (startup, durations) = self.model(req.spec);
            if !startup.is_zero() {
                tokio::time::sleep(startup).await;
            }
            let c: Box<dyn Container> = Box::new(SimContainer {
                id: req.container_id.to_string(),
                output_head: format!(r#"{{"sim":true,"fqdn":{},"args":"#, serde_json::Value::from(req.spec.fqdn().0)),
                durations,
                calls: AtomicU64::new(0),
                last_end_us: AtomicU64::new(0),
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
    /// The result up to the arguments: `{"sim":true,"fqdn":"NAME-VERSION","args":`.
    output_head: String,
    durations: Durations,
    calls: AtomicU64,
    /// When the last call ended (Unix µs), for the idle time before the next.
    last_end_us: AtomicU64,
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
            let idle = start_unix_us.saturating_sub(self.last_end_us.load(Ordering::Relaxed));
            let call = self.durations.call(first_call, Some(Duration::from_micros(idle)), &self.env);
            if !call.is_zero() {
                tokio::time::sleep(call).await;
            }
            let end_unix_us = self.env.clock.unix_time_us();
            self.last_end_us.store(end_unix_us, Ordering::Relaxed);
            let mut output = String::with_capacity(self.output_head.len() + req.args.len() + 1);
            output.push_str(&self.output_head);
            output.push_str(req.args);
            output.push('}');
            Ok(CallResult { output: Ok(output), start_unix_us, end_unix_us, first_call })
        })
    }
}
