//! A simulated worker: the real worker built in this process with the `sim` backend on a
//! virtual clock and its registry in memory, and its config (a live worker's file works
//! unchanged).

use anyhow::Context;
use iluvatar_core::{Clock, Env};
use iluvatar_service::config::ConfigError;
use iluvatar_worker::api::WorkerApi;
use iluvatar_worker::config::WorkerConfig;
use iluvatar_worker::env::{QuietHost, TokioClock};
use iluvatar_worker::isolation::BackendConfig;
use iluvatar_worker::registry::{Registry, SharedSpecs};
use std::path::Path;
use std::sync::Arc;

/// The runtime a simulation runs on: one thread, the clock paused (virtual time).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()
}

/// A simulated worker's config: `file` (or the defaults) with `overrides` applied as
/// `section.key=value` pairs (the same as the worker's ILUVATAR_WORKER__section__key
/// environment overrides, which a simulation does not read: its inputs are explicit).
/// The isolation backends become the file's `sim` backend alone (a default one if it has
/// none), so that a live worker's config file works unchanged. `invoker.concurrency` must
/// be set: 0 (the live default) means the machine's cores, which would make the results
/// depend on the machine the simulation runs on.
pub fn worker_config(file: Option<&Path>, overrides: &[(String, String)]) -> anyhow::Result<WorkerConfig> {
    let var = |k: &str| format!("{}{}", iluvatar_worker::config::ENV_PREFIX, k.replace('.', "__"));
    let env = overrides.iter().map(|(k, v)| (var(k), v.clone()));
    let mut config = WorkerConfig::load(file, env)
        .map_err(|e| match e {
            // An override is a grid value here, not an environment variable.
            ConfigError::EnvField { var: v, key, message } => match overrides.iter().find(|(k, _)| var(k) == v) {
                Some((k, value)) => anyhow::anyhow!("{k}={value}: {key}: {message}"),
                None => anyhow::anyhow!("{key}: {message}"),
            },
            e => e.into(),
        })
        .context("loading the simulated worker's config")?;
    if config.invoker.concurrency == 0 {
        let from = match file {
            Some(f) => format!("in {}", f.display()),
            None => "by default (no --worker-config)".into(),
        };
        anyhow::bail!(
            "invoker.concurrency is 0 {from}: on a live worker that means as many invocations at once as the \
             machine has cores, which a simulation must not depend on. Set invoker.concurrency in the worker \
             config (e.g. the live worker's core count: {{\"invoker\": {{\"concurrency\": 4}}}})"
        );
    }
    let sim: Vec<BackendConfig> =
        config.isolation.backends.iter().filter(|b| matches!(b, BackendConfig::Sim(_))).cloned().collect();
    config.isolation.backends = if sim.is_empty() { vec![BackendConfig::Sim(Default::default())] } else { sim };
    Ok(config)
}

/// The config as a summary records it: without the state directory, which a simulated
/// worker does not use.
pub fn config_json(config: &WorkerConfig) -> serde_json::Value {
    let mut v = serde_json::to_value(config).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("state_dir");
    }
    v["invoker"]["concurrency"] = config.concurrency().into();
    v
}

/// One simulated worker, built in the current (paused) runtime.
pub struct SimWorker {
    pub api: Arc<WorkerApi>,
    pub clock: Arc<dyn Clock>,
}

impl SimWorker {
    /// Builds the worker on a virtual clock starting at Unix time 0, seeded by `seed`, with
    /// its registry in memory (nothing is written to disk: the `sim` backend uses no state
    /// directory, and a simulated worker is never restarted) holding the specs in `specs`
    /// (one set for a simulation's workers), and starts its keep-alive reaper. Must run inside a runtime from [`runtime`].
    pub fn build(config: WorkerConfig, seed: u64, specs: &Arc<SharedSpecs>) -> anyhow::Result<Self> {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(0));
        let env = Env::new(clock.clone(), seed);
        let registry = Registry::in_memory(Some(specs.clone()));
        let api = WorkerApi::build_with(config, env, Arc::new(QuietHost), registry)
            .context("building the simulated worker")?;
        api.spawn_reaper();
        Ok(SimWorker { api, clock })
    }
}
