//! Simulation: the real worker (registry, invoker, queue policy, container pool, eviction,
//! memory accounting) built in this process with the `sim` backend, under a paused tokio
//! clock that jumps to the next timer whenever every task waits. Load reaches it through
//! [`InProcess`], the same [`Transport`] the replay loop uses for a live worker, and the
//! arrivals are paced on the virtual clock by [`run_virtual`]. Nothing here reads the OS
//! clock or OS randomness: the same inputs and seed give the same results, byte for byte.

use crate::results::{Outcome, SharedRecorder};
use crate::trace::Arrival;
use crate::transport::Transport;
use anyhow::Context;
use iluvatar_core::policy::{BalancerConfig, FixedCluster};
use iluvatar_core::{Clock, Env, Fqdn};
use iluvatar_rpc as rpc;
use iluvatar_worker::api::WorkerApi;
use iluvatar_worker::config::WorkerConfig;
use iluvatar_worker::env::{QuietHost, TokioClock};
use iluvatar_worker::isolation::BackendConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// The runtime a simulation runs on: one thread, the clock paused (virtual time).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()
}

/// A simulated worker's config: `file` (or the defaults) with `overrides` applied as
/// `section.key=value` pairs (the same as the worker's ILUVATAR_WORKER__section__key
/// environment overrides, which a simulation does not read: its inputs are explicit).
/// The isolation backends become the file's `sim` backend alone (a default one if it has
/// none), so that a live worker's config file works unchanged.
pub fn worker_config(file: Option<&Path>, overrides: &[(String, String)]) -> anyhow::Result<WorkerConfig> {
    let env = overrides
        .iter()
        .map(|(k, v)| (format!("{}{}", iluvatar_worker::config::ENV_PREFIX, k.replace('.', "__")), v.clone()));
    let mut config = WorkerConfig::load(file, env).context("loading the simulated worker's config")?;
    let sim: Vec<BackendConfig> =
        config.isolation.backends.iter().filter(|b| matches!(b, BackendConfig::Sim(_))).cloned().collect();
    config.isolation.backends = if sim.is_empty() { vec![BackendConfig::Sim(Default::default())] } else { sim };
    Ok(config)
}

/// The config as a summary records it: without the state directory, which is a temporary
/// directory that differs from run to run.
pub fn config_json(config: &WorkerConfig) -> serde_json::Value {
    let mut v = serde_json::to_value(config).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("state_dir");
    }
    v["invoker"]["concurrency"] = config.concurrency().into();
    v
}

/// A temporary state directory (the registry's store), removed on drop.
pub struct StateDir(PathBuf);

impl StateDir {
    pub fn new() -> std::io::Result<Self> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("iluvatar-sim-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(StateDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One simulated worker, built in the current (paused) runtime.
pub struct SimWorker {
    pub api: Arc<WorkerApi>,
    pub clock: Arc<dyn Clock>,
    _state: StateDir,
}

impl SimWorker {
    /// Builds the worker on a virtual clock starting at Unix time 0, seeded by `seed`, and
    /// starts its keep-alive reaper. Must run inside a runtime from [`runtime`].
    pub fn build(mut config: WorkerConfig, seed: u64) -> anyhow::Result<Self> {
        let state = StateDir::new().context("creating the simulated worker's state directory")?;
        config.state_dir = state.path().to_path_buf();
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(0));
        let env = Env::new(clock.clone(), seed);
        let api = WorkerApi::build(config, env, Arc::new(QuietHost)).context("building the simulated worker")?;
        api.spawn_reaper();
        Ok(SimWorker { api, clock, _state: state })
    }
}

/// Picks the worker an invocation goes to, given each worker's in-flight invocations (as
/// the transport counts them; `inflight.len()` is the number of workers).
pub trait Choose: Send + Sync {
    fn choose(&self, req: &rpc::InvokeRequest, inflight: &[u64]) -> usize;
}

/// The only choice there is with one worker.
pub struct First;

impl Choose for First {
    fn choose(&self, _req: &rpc::InvokeRequest, _inflight: &[u64]) -> usize {
        0
    }
}

/// The controller's balancing policy (the same code, `iluvatar_core::policy::balance`), over a
/// fixed set of simulated workers whose load is their in-flight count.
pub struct Balanced(pub FixedCluster);

impl Balanced {
    /// `workers` as (name, cpus), in the transport's order.
    pub fn new(config: &BalancerConfig, seed: u64, workers: &[(String, u32)]) -> Self {
        Balanced(FixedCluster::new(config, seed, workers))
    }
}

impl Choose for Balanced {
    fn choose(&self, req: &rpc::InvokeRequest, inflight: &[u64]) -> usize {
        let fqdn = Fqdn::new(&req.function_name, &req.function_version);
        self.0.choose(fqdn.as_str(), inflight).unwrap_or(0)
    }
}

/// Workers in this process, called directly: registrations go to every worker, prewarms
/// and invocations to the one `chooser` picks (one worker, or a simulated cluster behind a
/// balancer). The transport counts each worker's in-flight invocations, which is the load
/// the chooser sees. With `names`, results are annotated as the controller annotates them
/// (`"worker"` in json_result), so that the worker column names the simulated worker.
#[derive(Clone)]
pub struct InProcess {
    workers: Arc<[Arc<WorkerApi>]>,
    chooser: Arc<dyn Choose>,
    inflight: Arc<[AtomicU64]>,
    names: Option<Arc<[String]>>,
}

impl InProcess {
    pub fn new(workers: Vec<Arc<WorkerApi>>, chooser: Arc<dyn Choose>) -> Self {
        assert!(!workers.is_empty(), "at least one worker");
        let inflight = workers.iter().map(|_| AtomicU64::new(0)).collect();
        InProcess { workers: workers.into(), chooser, inflight, names: None }
    }

    pub fn single(worker: Arc<WorkerApi>) -> Self {
        InProcess::new(vec![worker], Arc::new(First))
    }

    /// A simulated cluster: `workers` named `names` (same order), behind `chooser`.
    pub fn cluster(workers: Vec<Arc<WorkerApi>>, names: Vec<String>, chooser: Arc<dyn Choose>) -> Self {
        assert_eq!(workers.len(), names.len(), "one name per worker");
        InProcess { names: Some(names.into()), ..InProcess::new(workers, chooser) }
    }

    /// The workers' in-flight invocations now.
    pub fn inflight(&self) -> Vec<u64> {
        self.inflight.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    fn pick(&self, req: &rpc::InvokeRequest) -> usize {
        if self.workers.len() == 1 {
            return 0;
        }
        self.chooser.choose(req, &self.inflight()) % self.workers.len()
    }
}

/// Counts an invocation in flight on a worker until dropped.
struct Counted<'a>(&'a AtomicU64);

impl<'a> Counted<'a> {
    fn new(c: &'a AtomicU64) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Counted(c)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Transport for InProcess {
    async fn register(&self, req: rpc::RegisterRequest) -> anyhow::Result<rpc::RegisterResponse> {
        let mut last = None;
        for w in self.workers.iter() {
            let r = w.register(req.clone()).await;
            if !r.success {
                return Ok(r);
            }
            last = Some(r);
        }
        Ok(last.expect("at least one worker"))
    }

    async fn prewarm(&self, req: rpc::PrewarmRequest) -> anyhow::Result<rpc::PrewarmResponse> {
        let probe = rpc::InvokeRequest {
            function_name: req.function_name.clone(),
            function_version: req.function_version.clone(),
            ..Default::default()
        };
        let i = self.pick(&probe);
        let _counted = Counted::new(&self.inflight[i]);
        let mut r = self.workers[i].prewarm(req).await;
        if let Some(names) = &self.names {
            r.message = format!("{} (worker {})", r.message, names[i]);
        }
        Ok(r)
    }

    async fn invoke(&self, req: rpc::InvokeRequest) -> Result<rpc::InvokeResponse, String> {
        let i = self.pick(&req);
        let _counted = Counted::new(&self.inflight[i]);
        let mut r = self.workers[i].invoke(req).await;
        if let Some(names) = &self.names {
            rpc::json_result::annotate(&mut r.json_result, &names[i], None);
        }
        Ok(r)
    }
}

/// Sends `arrivals` through `transport` on the virtual `clock`, each at its time from now
/// (tokio's timers have whole-millisecond ticks, so a send is up to 1 ms late, as the
/// lateness column shows), and records every outcome; returns once all have answered.
/// Each invocation runs in its own task (as a request would in a live worker); an
/// invocation whose task died without an outcome is reported by the recorder.
pub async fn run_virtual<T: Transport>(
    transport: &T,
    clock: Arc<dyn Clock>,
    requests: Vec<rpc::InvokeRequest>,
    arrivals: Arc<Vec<Arrival>>,
    tid_prefix: String,
    recorder: SharedRecorder,
) -> anyhow::Result<()> {
    let zero = clock.now();
    recorder.lock().unwrap().set_start_unix_s(clock.unix_time_us() as f64 / 1e6);
    let ns = move |d: Duration| d.saturating_sub(zero).as_nanos() as u64;
    let running = Arc::new(Running { count: AtomicUsize::new(0), idle: tokio::sync::Notify::new() });
    for (i, a) in arrivals.iter().enumerate() {
        let at = zero + Duration::from_nanos((a.time_ms * 1e6) as u64);
        let mut now = clock.now();
        if at > now {
            tokio::time::sleep(at - now).await;
            now = clock.now();
        }
        let mut req = requests[a.func].clone();
        req.transaction_id.clear();
        req.transaction_id.push_str(&tid_prefix);
        req.transaction_id.push('-');
        crate::results::push_u64(&mut req.transaction_id, i as u64);
        let (t, rec, clock, func) = (transport.clone(), recorder.clone(), clock.clone(), a.func);
        let guard = Running::enter(&running);
        tokio::spawn(async move {
            let response = t.invoke(req).await;
            let o = Outcome { func, scheduled_ns: ns(at), sent_ns: ns(now), done_ns: ns(clock.now()), response };
            rec.lock().unwrap().record(i, o);
            drop(guard);
        });
    }
    while running.count.load(Ordering::Acquire) > 0 {
        running.idle.notified().await;
    }
    Ok(())
}

/// The invocations in flight, and a notification when the last one ends.
struct Running {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One invocation in flight; counted out when dropped (also if its task panics).
struct InFlight(Arc<Running>);

impl Running {
    fn enter(r: &Arc<Running>) -> InFlight {
        r.count.fetch_add(1, Ordering::AcqRel);
        InFlight(r.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            // notify_one keeps a permit if nobody waits yet, so the wake-up is not lost.
            self.0.idle.notify_one();
        }
    }
}
