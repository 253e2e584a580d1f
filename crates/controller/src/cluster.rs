//! Membership: the workers that registered, each with a persistent gRPC channel, its
//! health, its last status and the controller's count of its in-flight invocations.
//! The list is replaced whole (copy on write) when a worker joins or rejoins, so the
//! invocation path only clones an `Arc`.

use crate::balance::WorkerView;
use iluvatar_rpc as rpc;
use iluvatar_rpc::iluvatar_worker_client::IluvatarWorkerClient;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// What a worker's last status said.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusFigures {
    pub queued: u64,
    pub running: u64,
    pub load_avg: f64,
}

pub struct WorkerHandle {
    pub info: rpc::RegisterWorkerRequest,
    pub name: Arc<str>,
    /// `host:port`.
    pub address: String,
    client: IluvatarWorkerClient<Channel>,
    healthy: AtomicBool,
    inflight: AtomicU64,
    pub forwarded: AtomicU64,
    status: Mutex<StatusFigures>,
}

impl WorkerHandle {
    fn new(info: rpc::RegisterWorkerRequest, connect_timeout: Duration) -> Result<Self, String> {
        let address = format!("{}:{}", info.host, info.port);
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| format!("worker {:?} has an unusable address {address:?}: {e}", info.name))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        // Lazy: the channel connects on first use and reconnects after a failure, so a
        // worker restarted at the same address is reached again without a new handle.
        let client = IluvatarWorkerClient::new(endpoint.connect_lazy());
        Ok(WorkerHandle {
            name: info.name.as_str().into(),
            address,
            info,
            client,
            healthy: AtomicBool::new(false),
            inflight: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            status: Mutex::new(StatusFigures::default()),
        })
    }

    /// A client on the worker's shared channel (cloning is cheap; connections are reused).
    pub fn client(&self) -> IluvatarWorkerClient<Channel> {
        self.client.clone()
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets health; true when it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }

    pub fn set_status(&self, s: StatusFigures) {
        *self.status.lock().unwrap() = s;
    }

    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Counts an invocation in flight until the guard drops.
    pub fn start_invocation(self: &Arc<Self>) -> InFlight {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn view(&self, available: bool) -> WorkerView {
        let s = *self.status.lock().unwrap();
        WorkerView {
            name: self.name.clone(),
            cpus: self.info.cpus,
            inflight: self.inflight(),
            queued: s.queued,
            running: s.running,
            load_avg: s.load_avg,
            available: available && self.is_healthy(),
        }
    }
}

pub struct InFlight(Arc<WorkerHandle>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The workers at one moment, ordered by name; `version` changes with the set.
pub struct Members {
    pub version: u64,
    pub workers: Vec<Arc<WorkerHandle>>,
}

impl Members {
    /// What the balancer sees; `skip` are indices already tried for this invocation.
    pub fn view(&self, skip: &[usize]) -> Vec<WorkerView> {
        self.workers.iter().enumerate().map(|(i, w)| w.view(!skip.contains(&i))).collect()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<WorkerHandle>> {
        self.workers.iter().find(|w| &*w.name == name)
    }
}

pub struct Cluster {
    members: RwLock<Arc<Members>>,
    connect_timeout: Duration,
}

impl Cluster {
    pub fn new(connect_timeout: Duration) -> Self {
        Cluster { members: RwLock::new(Arc::new(Members { version: 0, workers: Vec::new() })), connect_timeout }
    }

    pub fn snapshot(&self) -> Arc<Members> {
        self.members.read().unwrap().clone()
    }

    /// Adds a worker, or replaces the one of the same name (a restarted worker may have a
    /// new address). The new handle starts unhealthy until it is checked and synced.
    pub fn upsert(&self, info: rpc::RegisterWorkerRequest) -> Result<Arc<WorkerHandle>, String> {
        let handle = Arc::new(WorkerHandle::new(info, self.connect_timeout)?);
        let mut members = self.members.write().unwrap();
        let mut workers: Vec<_> = members.workers.iter().filter(|w| w.name != handle.name).cloned().collect();
        workers.push(handle.clone());
        workers.sort_by(|a, b| a.name.cmp(&b.name));
        *members = Arc::new(Members { version: members.version + 1, workers });
        Ok(handle)
    }
}
