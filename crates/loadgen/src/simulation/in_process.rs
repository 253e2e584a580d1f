//! Workers in this process, called directly through the same [`Transport`] a live run
//! sends through: one worker, or a simulated cluster behind the controller's balancing
//! policy, whose load is each worker's in-flight count.

use crate::sending::transport::Transport;
use iluvatar_core::Fqdn;
use iluvatar_core::policy::{BalancerConfig, FixedCluster};
use iluvatar_rpc as rpc;
use iluvatar_worker::api::WorkerApi;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
