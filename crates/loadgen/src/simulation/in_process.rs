//! Workers in this process, called directly through the same [`Transport`] a live run
//! sends through: one worker, or a simulated cluster behind the controller's balancing
//! policy, whose load is each worker's in-flight count.

use crate::sending::transport::Transport;
use crate::simulation::overhead::ControllerOverhead;
use iluvatar_core::policy::{BalancerConfig, FixedCluster};
use iluvatar_core::{Clock, Fqdn};
use iluvatar_rpc as rpc;
use iluvatar_worker::api::WorkerApi;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Picks the worker an invocation of `fqdn` goes to. It is told every change of a worker's
/// in-flight invocations (as the transport counts them), so that a choice among a thousand
/// workers does not read a thousand counts.
pub trait Choose: Send + Sync {
    fn choose(&self, fqdn: &str) -> usize;
    /// Worker `worker` now has `inflight` invocations in flight.
    fn inflight(&self, _worker: usize, _inflight: u64) {}
}

/// The only choice there is with one worker.
pub struct First;

impl Choose for First {
    fn choose(&self, _fqdn: &str) -> usize {
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
    fn choose(&self, fqdn: &str) -> usize {
        self.0.pick(fqdn).unwrap_or(0)
    }

    fn inflight(&self, worker: usize, inflight: u64) {
        self.0.set_inflight(worker, inflight);
    }
}

/// Workers in this process, called directly: prewarms and invocations go to the one
/// `chooser` picks (one worker, or a simulated cluster behind a balancer), registrations
/// to every worker (see [`Registrations`] for when). The transport counts each worker's
/// in-flight invocations, which is the load the chooser sees. With `names`, results are
/// annotated as the controller annotates them (`"worker"` in json_result), so that the
/// worker column names the simulated worker.
#[derive(Clone)]
pub struct InProcess {
    workers: Arc<[Arc<WorkerApi>]>,
    chooser: Arc<dyn Choose>,
    inflight: Arc<[AtomicU64]>,
    names: Option<Arc<[String]>>,
    controller: Option<(Arc<ControllerOverhead>, Arc<dyn Clock>)>,
    /// `None`: every registration reaches every worker at once.
    registrations: Option<Arc<Registrations>>,
}

/// A simulated cluster's registrations, made where they are needed. A function is
/// registered on the first worker when the run registers it (that worker's answer is the
/// run's), and on another worker just before the first invocation or prewarm of it is sent
/// there. Registering takes no virtual time and changes nothing else in a worker (an
/// in-memory registry takes no turn of the scheduler either), so a run gives the same
/// results as with every worker registering every function first, at a cost that grows
/// with the invocations instead of with workers times functions.
#[derive(Default)]
struct Registrations {
    /// By fqdn: the function's number and its registration.
    functions: Mutex<HashMap<String, (usize, rpc::RegisterRequest)>>,
    /// Per worker, a bit per function number: registered there.
    done: Mutex<Vec<Vec<u64>>>,
}

impl Registrations {
    /// Marks function `f` registered on worker `w`; whether it was not yet.
    fn mark(&self, w: usize, f: usize) -> bool {
        let mut done = self.done.lock().unwrap();
        if done.len() <= w {
            done.resize_with(w + 1, Vec::new);
        }
        let bits = &mut done[w];
        if bits.len() <= f / 64 {
            bits.resize(f / 64 + 1, 0);
        }
        let (word, bit) = (&mut bits[f / 64], 1u64 << (f % 64));
        let new = *word & bit == 0;
        *word |= bit;
        new
    }
}

impl InProcess {
    pub fn new(workers: Vec<Arc<WorkerApi>>, chooser: Arc<dyn Choose>) -> Self {
        assert!(!workers.is_empty(), "at least one worker");
        let inflight = workers.iter().map(|_| AtomicU64::new(0)).collect();
        InProcess { workers: workers.into(), chooser, inflight, names: None, controller: None, registrations: None }
    }

    pub fn single(worker: Arc<WorkerApi>) -> Self {
        InProcess::new(vec![worker], Arc::new(First))
    }

    /// A simulated cluster: `workers` named `names` (same order), behind `chooser`, each
    /// registering a function when it is first sent it (see [`Registrations`]).
    pub fn cluster(workers: Vec<Arc<WorkerApi>>, names: Vec<String>, chooser: Arc<dyn Choose>) -> Self {
        assert_eq!(workers.len(), names.len(), "one name per worker");
        let registrations = Some(Default::default());
        InProcess { names: Some(names.into()), registrations, ..InProcess::new(workers, chooser) }
    }

    /// Every registration reaches every worker at once, as a live controller sends them
    /// (the same results as registering where needed, at a cost of workers times
    /// functions).
    pub fn registering_everywhere(self) -> Self {
        InProcess { registrations: None, ..self }
    }

    /// The workers' in-flight invocations now.
    pub fn inflight(&self) -> Vec<u64> {
        self.inflight.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    /// The controller's overhead, if the cluster simulates one.
    pub fn controller_overhead(&self) -> Option<&(Arc<ControllerOverhead>, Arc<dyn Clock>)> {
        self.controller.as_ref()
    }

    /// A cluster whose controller takes `overhead` of its own for every invocation, before
    /// the invocation reaches its worker, on `clock` (the workers' virtual clock); results
    /// carry it as a live controller's do (`timings.controller_us`, and `worker_rpc_us`: the
    /// worker's part).
    pub fn with_controller_overhead(self, overhead: Arc<ControllerOverhead>, clock: Arc<dyn Clock>) -> Self {
        InProcess { controller: Some((overhead, clock)), ..self }
    }

    /// The worker for `fqdn`, which holds its registration (if the run registered it).
    async fn pick(&self, fqdn: &str) -> Result<usize, String> {
        if self.workers.len() == 1 {
            return Ok(0);
        }
        let i = self.chooser.choose(fqdn) % self.workers.len();
        let Some(regs) = &self.registrations else { return Ok(i) };
        let request = {
            let functions = regs.functions.lock().unwrap();
            match functions.get(fqdn) {
                Some((f, req)) if regs.mark(i, *f) => Some(req.clone()),
                _ => None,
            }
        };
        if let Some(req) = request {
            let r = self.workers[i].register(req).await;
            if !r.success {
                return Err(format!("registering {fqdn} on worker {i} before sending it there: {}", r.error));
            }
        }
        Ok(i)
    }

    /// Counts an invocation in flight on worker `i` until dropped.
    fn counted(&self, i: usize) -> Counted<'_> {
        let n = self.inflight[i].fetch_add(1, Ordering::Relaxed) + 1;
        self.chooser.inflight(i, n);
        Counted(self, i)
    }
}

/// An invocation in flight on a worker, counted out when dropped.
struct Counted<'a>(&'a InProcess, usize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        let Counted(t, i) = *self;
        let n = t.inflight[i].fetch_sub(1, Ordering::Relaxed) - 1;
        t.chooser.inflight(i, n);
    }
}

impl Transport for InProcess {
    async fn register(&self, req: rpc::RegisterRequest) -> anyhow::Result<rpc::RegisterResponse> {
        if let Some(regs) = &self.registrations {
            let r = self.workers[0].register(req.clone()).await;
            if r.success {
                let fqdn = Fqdn::new(&req.function_name, &req.function_version).0;
                let mut functions = regs.functions.lock().unwrap();
                let f = functions.get(&fqdn).map(|(f, _)| *f).unwrap_or(functions.len());
                regs.mark(0, f);
                functions.insert(fqdn, (f, req));
            }
            return Ok(r);
        }
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
        let fqdn = Fqdn::new(&req.function_name, &req.function_version);
        let i = self.pick(fqdn.as_str()).await.map_err(anyhow::Error::msg)?;
        let _counted = self.counted(i);
        let mut r = self.workers[i].prewarm(req).await;
        if let Some(names) = &self.names {
            r.message = format!("{} (worker {})", r.message, names[i]);
        }
        Ok(r)
    }

    async fn invoke(&self, req: rpc::InvokeRequest) -> Result<rpc::InvokeResponse, String> {
        let overhead = self.controller.as_ref().map(|(o, clock)| (o.draw(), clock));
        if let Some(((_, advance), _)) = overhead
            && !advance.is_zero()
        {
            tokio::time::sleep(advance).await;
        }
        let i = if self.workers.len() == 1 {
            0
        } else {
            self.pick(Fqdn::new(&req.function_name, &req.function_version).as_str()).await?
        };
        let _counted = self.counted(i);
        let sent = overhead.map(|(_, clock)| clock.now());
        let mut r = self.workers[i].invoke(req).await;
        if let Some(names) = &self.names {
            let timings = overhead.zip(sent).map(|(((drawn, _), clock), sent)| {
                (drawn.as_micros() as u64, clock.now().saturating_sub(sent).as_micros() as u64)
            });
            rpc::json_result::annotate(&mut r.json_result, &names[i], timings);
        }
        Ok(r)
    }
}
