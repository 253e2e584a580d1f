//! The simulation driver: a run (one worker, or a cluster behind the controller's
//! balancer) built from a worker config and a seed, its functions registered, its arrivals
//! paced on the virtual clock, and its results written as a live run's are.

use crate::results::{Outcome, Recorder, RunInfo, write_results};
use crate::sending::TID;
use crate::sending::arrivals::{Arrivals, Pacer, Sink, send};
use crate::sending::target::{Plan, requests};
use crate::sending::transport::{Transport, register_all};
use crate::simulation::in_process::{Balanced, InProcess};
use crate::simulation::overhead::ControllerOverhead;
use crate::simulation::worker::SimWorker;
use crate::workload::trace::{Arrival, FunctionMeta};
use anyhow::Context;
use iluvatar_core::Clock;
use iluvatar_core::policy::BalancerConfig;
use iluvatar_rpc as rpc;
use serde_json::{Value, json};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A simulated cluster: `workers` simulated workers behind the controller's balancer, and
/// the controller's own time per invocation drawn from the distribution in
/// `controller_overhead` (see [`crate::simulation::overhead`]; none without it).
#[derive(Clone)]
pub struct SimCluster {
    pub controller: SimController,
    pub workers: usize,
    pub controller_overhead: Option<PathBuf>,
}

/// What a simulated cluster takes from a controller's config file (the live controller's
/// own, JSON or TOML by its extension): the balancer. The other sections (listening, health
/// checks, forwarding, auth) have no part in a simulation and are not read. The file is
/// layered on the defaults as the controller layers it, without environment overrides
/// (a simulation's inputs are explicit).
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SimController {
    pub balancer: BalancerConfig,
}

impl SimController {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let config = iluvatar_service::config::load(&SimController::default(), path, Vec::new(), "")?;
        config.balancer.check().map_err(|e| anyhow::anyhow!("config is invalid: {e}"))?;
        Ok(config)
    }
}

/// The seeds of a simulated cluster from the run's seed: the balancer's, each worker's,
/// then the controller overhead's (SplitMix64's sequence from `seed`).
pub fn cluster_seeds(seed: u64, workers: usize) -> (u64, Vec<u64>, u64) {
    use iluvatar_core::Rng;
    let r = iluvatar_core::SplitMix64::new(seed);
    let balancer = r.next_u64();
    let workers = (0..workers).map(|_| r.next_u64()).collect();
    (balancer, workers, r.next_u64())
}

/// One simulation: a worker config, a seed, and how functions are set up.
pub struct SimRun {
    pub config: iluvatar_worker::config::WorkerConfig,
    pub seed: u64,
    pub version: String,
    /// The summary leaves out the invocations scheduled before this (s).
    pub warmup_s: f64,
    /// A cluster behind the controller's balancer instead of one worker.
    pub cluster: Option<SimCluster>,
}

impl SimRun {
    /// Builds a simulated worker (in the current paused runtime), registers and prewarms
    /// the functions, replays the arrivals on the virtual clock, shuts the worker down and
    /// writes the results to `out` as a live run does; returns the summary.
    pub async fn execute(
        &self,
        plans: &[Plan],
        meta: &[FunctionMeta],
        arrivals: Arc<Vec<Arrival>>,
        out: &Path,
        info: Value,
    ) -> anyhow::Result<Value> {
        self.execute_with_metrics(plans, meta, arrivals, out, info).await.map(|(summary, _)| summary)
    }

    /// [`execute`](Self::execute), also returning the workers' metrics text (Prometheus,
    /// one worker's after another's) read once every invocation has answered, before the
    /// workers shut down.
    pub async fn execute_with_metrics(
        &self,
        plans: &[Plan],
        meta: &[FunctionMeta],
        arrivals: Arc<Vec<Arrival>>,
        out: &Path,
        info: Value,
    ) -> anyhow::Result<(Value, String)> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        // The workers first: a bad input there (a controller overhead file) is refused
        // before any result file is written.
        let (workers, transport) = match &self.cluster {
            None => {
                let worker = SimWorker::build(self.config.clone(), self.seed, &Default::default())?;
                let transport = InProcess::single(worker.api.clone());
                (vec![worker], transport)
            }
            Some(c) => self.cluster(c)?,
        };
        let recorder = Recorder::create(&out.join("invocations.csv"), meta, &self.version, TID, arrivals.len())?;
        register_all(&transport, plans).await?;
        let clock = workers[0].clock.clone();
        let recorder = run_virtual(&transport, clock, requests(plans), arrivals, TID.into(), recorder).await?;
        let metrics: String = workers.iter().map(|w| w.api.metrics_text()).collect::<Vec<_>>().join("\n");
        for w in &workers {
            w.api.shutdown().await;
        }
        let recorded = recorder.finish()?;
        let mut target = json!({"setup": "simulation", "isolation": "sim", "seed": self.seed,
            "version": self.version, "prewarmed": crate::sending::target::prewarmed(plans),
            "worker_config": crate::simulation::worker::config_json(&self.config)});
        if let Some(c) = &self.cluster {
            target["target"] = "controller".into();
            target["workers"] = c.workers.into();
            target["balancer"] = serde_json::to_value(&c.controller.balancer)?;
            if let Some((o, _)) = transport.controller_overhead() {
                target["controller_overhead"] = o.describe();
            }
        }
        let info =
            RunInfo { wake_lateness_ns: Vec::new(), realtime: false, warmup_s: self.warmup_s, run: info, target };
        Ok((write_results(out, &recorded, meta, info)?, metrics))
    }

    /// The simulated workers of cluster `c` (in the current paused runtime) and the
    /// transport to them through the balancer.
    fn cluster(&self, c: &SimCluster) -> anyhow::Result<(Vec<SimWorker>, InProcess)> {
        let (balancer_seed, seeds, overhead_seed) = cluster_seeds(self.seed, c.workers);
        let overhead = match &c.controller_overhead {
            Some(p) => Some(Arc::new(ControllerOverhead::load(p, overhead_seed)?)),
            None => None,
        };
        let mut config = self.config.clone();
        config.controller = None;
        let names: Vec<String> = (0..c.workers).map(|i| format!("{}-{i}", config.name)).collect();
        let cpus = config.spec_limits().max_cpus;
        let specs = Default::default();
        let workers =
            seeds.iter().map(|&s| SimWorker::build(config.clone(), s, &specs)).collect::<anyhow::Result<Vec<_>>>()?;
        let ids: Vec<(String, u32)> = names.iter().map(|n| (n.clone(), cpus)).collect();
        let chooser = Arc::new(Balanced::new(&c.controller.balancer, balancer_seed, &ids));
        let apis = workers.iter().map(|w| w.api.clone()).collect();
        let mut transport = InProcess::cluster(apis, names, chooser);
        if let Some(o) = overhead {
            transport = transport.with_controller_overhead(o, workers[0].clock.clone());
        }
        Ok((workers, transport))
    }
}

/// Sends `arrivals` through `transport` on the virtual `clock`, each at its time from now
/// (tokio's timers have whole-millisecond ticks, so a send is up to 1 ms late, as the
/// lateness column shows), and records every outcome; returns the recorder once all have
/// answered. Each invocation runs in its own task (as a request would in a live worker); an
/// invocation whose task died without an outcome is reported by the recorder. The recorder
/// runs on a thread of its own (reading results and writing rows is a sixth of the work),
/// fed in the order outcomes come, which the virtual clock decides: the rows are the same.
pub async fn run_virtual<T: Transport>(
    transport: &T,
    clock: Arc<dyn Clock>,
    requests: Vec<rpc::InvokeRequest>,
    arrivals: Arc<Vec<Arrival>>,
    tid_prefix: String,
    mut recorder: Recorder,
) -> anyhow::Result<Recorder> {
    let zero = clock.now();
    recorder.set_start_unix_s(clock.unix_time_us() as f64 / 1e6);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(usize, Outcome)>>(16);
    let writer = std::thread::Builder::new()
        .name("sim-recorder".into())
        .spawn(move || {
            while let Ok(batch) = rx.recv() {
                batch.into_iter().for_each(|(i, o)| recorder.record(i, o));
            }
            recorder
        })
        .context("starting the recorder's thread")?;
    let running = Arc::new(Running { count: AtomicUsize::new(0), idle: tokio::sync::Notify::new() });
    let batch = Arc::new(Mutex::new(Batch { tx: Some(tx), outcomes: Vec::with_capacity(BATCH) }));
    let sink = ToRecorder { batch: batch.clone(), running: running.clone() };
    let what = Arrivals { requests: &requests, arrivals: &arrivals, tid_prefix: &tid_prefix };
    let handle = tokio::runtime::Handle::current();
    send(what, &VirtualClock { clock, zero }, transport, &sink, &handle, None).await;
    while running.count.load(Ordering::Acquire) > 0 {
        running.idle.notified().await;
    }
    // The last batch, then the end: whatever still holds a sink, the recorder stops here.
    let mut b = batch.lock().unwrap();
    b.send();
    b.tx = None;
    drop(b);
    writer.join().map_err(|_| anyhow::anyhow!("the recorder's thread panicked"))
}

/// Outcomes go to the recorder's thread in batches: one hand-over per outcome would cost
/// a thread wake-up each.
const BATCH: usize = 4096;

struct Batch {
    tx: Option<std::sync::mpsc::SyncSender<Vec<(usize, Outcome)>>>,
    outcomes: Vec<(usize, Outcome)>,
}

impl Batch {
    fn send(&mut self) {
        let full = std::mem::replace(&mut self.outcomes, Vec::with_capacity(BATCH));
        // Fails only if the recorder's thread is gone, which its join reports.
        if let Some(tx) = &self.tx {
            let _ = tx.send(full);
        }
    }
}

/// The simulation's virtual clock from the run's zero; waiting is a tokio timer.
#[derive(Clone)]
struct VirtualClock {
    clock: Arc<dyn Clock>,
    zero: Duration,
}

impl Pacer for VirtualClock {
    fn now_ns(&self) -> u64 {
        self.clock.now().saturating_sub(self.zero).as_nanos() as u64
    }

    fn wait_until(&self, at_ns: u64) -> impl Future<Output = ()> + Send {
        let at = self.zero + Duration::from_nanos(at_ns);
        let now = self.clock.now();
        async move {
            if at > now {
                tokio::time::sleep(at - now).await;
            }
        }
    }
}

/// Invocations send their outcome to the recorder's thread, and are counted while in
/// flight.
#[derive(Clone)]
struct ToRecorder {
    batch: Arc<Mutex<Batch>>,
    running: Arc<Running>,
}

impl Sink for ToRecorder {
    type InFlight = InFlight;

    fn sending(&self) -> InFlight {
        Running::enter(&self.running)
    }

    fn record(&self, index: usize, outcome: Outcome) {
        let mut b = self.batch.lock().unwrap();
        b.outcomes.push((index, outcome));
        if b.outcomes.len() >= BATCH {
            b.send();
        }
    }
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

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod cluster_tests;
