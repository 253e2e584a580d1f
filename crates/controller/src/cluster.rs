//! Membership: the workers that registered, each with a persistent gRPC channel, its
//! health, its last status, the functions it accepted or refused, and the controller's
//! count of its in-flight invocations. The list is replaced whole (copy on write) when a
//! worker joins or rejoins, so the invocation path only clones an `Arc`.

use iluvatar_core::policy::balance::WorkerView;
use iluvatar_rpc as rpc;
use iluvatar_rpc::auth::{ClientAuth, WorkerClient};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tonic::transport::Endpoint;

/// What a worker's last status said.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusFigures {
    pub queued: u64,
    pub running: u64,
    pub load_avg: f64,
    pub cpu_pct: f64,
    pub mem_pct: f64,
}

pub struct WorkerHandle {
    pub info: rpc::RegisterWorkerRequest,
    pub name: Arc<str>,
    /// `host:port`.
    pub address: String,
    client: WorkerClient,
    healthy: AtomicBool,
    /// A health check of this worker is running (at most one at a time).
    checking: AtomicBool,
    /// No health check of this handle has finished yet.
    unchecked: AtomicBool,
    inflight: AtomicU64,
    pub forwarded: AtomicU64,
    status: Mutex<StatusFigures>,
    registrations: RwLock<Registrations>,
}

/// What a worker answered to the registrations sent to it (through this handle).
#[derive(Debug, Default)]
struct Registrations {
    accepted: HashSet<String>,
    /// fqdn -> the worker's reason.
    refused: HashMap<String, String>,
}

/// Whether a `register_worker` may add a worker, given the member of that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// No member has the name.
    New,
    /// The member is this very worker (same address, same figures): nothing changes.
    Same,
    /// The member is at the same address with other figures (restarted with another
    /// config): it is replaced and synced again.
    Replace,
    /// The member is at another address: the newcomer is refused while that one is alive.
    OtherAddress,
}

/// Decides how `new` is admitted beside `existing`, the member of the same name.
pub fn admission(existing: Option<&rpc::RegisterWorkerRequest>, new: &rpc::RegisterWorkerRequest) -> Admission {
    match existing {
        None => Admission::New,
        Some(old) if (&old.host, old.port) != (&new.host, new.port) => Admission::OtherAddress,
        Some(old) if old == new => Admission::Same,
        Some(_) => Admission::Replace,
    }
}

/// Held while a health check of a worker runs; dropping it lets the next one start.
pub struct Checking(Arc<WorkerHandle>);

impl Drop for Checking {
    fn drop(&mut self) {
        self.0.checking.store(false, Ordering::SeqCst);
    }
}

impl WorkerHandle {
    fn new(
        info: rpc::RegisterWorkerRequest,
        connect_timeout: Duration,
        call_limit: Duration,
        auth: ClientAuth,
    ) -> Result<Self, String> {
        let address = format!("{}:{}", info.host, info.port);
        // Every call also has its own, shorter deadline (api.rs); the endpoint's timeout is
        // the backstop, so that no call to a worker can wait forever.
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| format!("worker {:?} has an unusable address {address:?}: {e}", info.name))?
            .connect_timeout(connect_timeout)
            .timeout(call_limit)
            .tcp_nodelay(true);
        // Lazy: the channel connects on first use and reconnects after a failure, so a
        // worker restarted at the same address is reached again without a new handle.
        let client = rpc::auth::worker_client(endpoint.connect_lazy(), auth);
        Ok(WorkerHandle {
            name: info.name.as_str().into(),
            address,
            info,
            client,
            healthy: AtomicBool::new(false),
            checking: AtomicBool::new(false),
            unchecked: AtomicBool::new(true),
            inflight: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            status: Mutex::new(StatusFigures::default()),
            registrations: RwLock::new(Registrations::default()),
        })
    }

    /// Starts a health check unless one of this worker is already running.
    pub fn begin_check(self: &Arc<Self>) -> Option<Checking> {
        (!self.checking.swap(true, Ordering::SeqCst)).then(|| Checking(self.clone()))
    }

    /// True the first time only: whether this is the handle's first health check (a worker
    /// that fails it was never in service, so its reason is logged although nothing changed).
    pub fn first_check(&self) -> bool {
        self.unchecked.swap(false, Ordering::SeqCst)
    }

    /// Records that the worker accepted `fqdn`: invocations of it may go there.
    pub fn accepted(&self, fqdn: &str) {
        let mut r = self.registrations.write().unwrap();
        r.refused.remove(fqdn);
        r.accepted.insert(fqdn.to_string());
    }

    /// Records that the worker refused `fqdn` (it holds another spec of it, or cannot run
    /// it): invocations of it never go there.
    pub fn refused(&self, fqdn: &str, why: &str) {
        let mut r = self.registrations.write().unwrap();
        r.accepted.remove(fqdn);
        r.refused.insert(fqdn.to_string(), why.to_string());
    }

    /// Whether the worker accepted `fqdn`.
    pub fn holds(&self, fqdn: &str) -> bool {
        self.registrations.read().unwrap().accepted.contains(fqdn)
    }

    /// Whether the worker answered a registration of `fqdn` (accepted or refused).
    pub fn answered(&self, fqdn: &str) -> bool {
        let r = self.registrations.read().unwrap();
        r.accepted.contains(fqdn) || r.refused.contains_key(fqdn)
    }

    /// Forgets every answer: a worker coming back into service is sent every registration
    /// again (it may have restarted and lost them).
    pub fn forget_registrations(&self) {
        *self.registrations.write().unwrap() = Registrations::default();
    }

    /// Why the worker refused `fqdn`, if it did.
    pub fn refusal(&self, fqdn: &str) -> Option<String> {
        self.registrations.read().unwrap().refused.get(fqdn).cloned()
    }

    /// The functions the worker refused, with its reasons, sorted.
    pub fn refusals(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> =
            self.registrations.read().unwrap().refused.iter().map(|(f, why)| (f.clone(), why.clone())).collect();
        v.sort();
        v
    }

    /// A client on the worker's shared channel (cloning is cheap; connections are reused).
    pub fn client(&self) -> WorkerClient {
        self.client.clone()
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// Sets health; true when it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::SeqCst) != healthy
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

    fn view(&self, fqdn: &str, available: bool) -> WorkerView {
        let s = *self.status.lock().unwrap();
        WorkerView {
            name: self.name.clone(),
            cpus: self.info.cpus,
            inflight: self.inflight(),
            queued: s.queued,
            running: s.running,
            load_avg: s.load_avg,
            cpu_pct: s.cpu_pct,
            mem_pct: s.mem_pct,
            available: available && self.is_healthy() && self.holds(fqdn),
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
    /// What the balancer sees for `fqdn`: a worker is available when it is in service,
    /// accepted `fqdn`, and is not among `skip` (indices already tried for this invocation).
    pub fn view(&self, fqdn: &str, skip: &[usize]) -> Vec<WorkerView> {
        self.workers.iter().enumerate().map(|(i, w)| w.view(fqdn, !skip.contains(&i))).collect()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<WorkerHandle>> {
        self.workers.iter().find(|w| &*w.name == name)
    }
}

pub struct Cluster {
    members: RwLock<Arc<Members>>,
    connect_timeout: Duration,
    call_limit: Duration,
    /// Sent on every call to a worker.
    auth: ClientAuth,
}

impl Cluster {
    /// `call_limit` bounds every call on a worker's channel (the longest deadline of all);
    /// `auth` is the token sent to workers.
    pub fn new(connect_timeout: Duration, call_limit: Duration, auth: ClientAuth) -> Self {
        Cluster {
            members: RwLock::new(Arc::new(Members { version: 0, workers: Vec::new() })),
            connect_timeout,
            call_limit,
            auth,
        }
    }

    pub fn snapshot(&self) -> Arc<Members> {
        self.members.read().unwrap().clone()
    }

    /// Adds a worker, or replaces the one of the same name (a restarted worker may have a
    /// new address). The new handle starts unhealthy until it is checked and synced.
    pub fn upsert(&self, info: rpc::RegisterWorkerRequest) -> Result<Arc<WorkerHandle>, String> {
        let handle = Arc::new(WorkerHandle::new(info, self.connect_timeout, self.call_limit, self.auth.clone())?);
        let mut members = self.members.write().unwrap();
        let mut workers: Vec<_> = members.workers.iter().filter(|w| w.name != handle.name).cloned().collect();
        workers.push(handle.clone());
        workers.sort_by(|a, b| a.name.cmp(&b.name));
        *members = Arc::new(Members { version: members.version + 1, workers });
        Ok(handle)
    }

    /// Takes the worker named `name` out of the membership: the balancer and the health
    /// checks no longer see it (invocations already on it finish). `None` if no member has
    /// the name.
    pub fn remove(&self, name: &str) -> Option<Arc<WorkerHandle>> {
        let mut members = self.members.write().unwrap();
        let gone = members.get(name).cloned()?;
        let workers = members.workers.iter().filter(|w| &*w.name != name).cloned().collect();
        *members = Arc::new(Members { version: members.version + 1, workers });
        Some(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, port: u32) -> rpc::RegisterWorkerRequest {
        rpc::RegisterWorkerRequest { name: name.into(), host: "127.0.0.1".into(), port, cpus: 2, ..Default::default() }
    }

    #[test]
    fn a_name_is_admitted_once_per_address() {
        let a = info("w", 7000);
        assert_eq!(admission(None, &a), Admission::New);
        assert_eq!(admission(Some(&a), &a.clone()), Admission::Same);
        assert_eq!(admission(Some(&a), &rpc::RegisterWorkerRequest { cpus: 4, ..a.clone() }), Admission::Replace);
        assert_eq!(admission(Some(&a), &info("w", 7001)), Admission::OtherAddress);
        let other_host = rpc::RegisterWorkerRequest { host: "10.0.0.2".into(), ..a.clone() };
        assert_eq!(admission(Some(&a), &other_host), Admission::OtherAddress);
    }

    #[tokio::test]
    async fn only_workers_in_service_that_accepted_a_function_are_available_for_it() {
        let cluster = Cluster::new(Duration::from_secs(1), Duration::from_secs(1), ClientAuth::none());
        let w0 = cluster.upsert(info("w0", 7000)).unwrap();
        let w1 = cluster.upsert(info("w1", 7001)).unwrap();
        let w2 = cluster.upsert(info("w2", 7002)).unwrap();
        for w in [&w0, &w1, &w2] {
            w.set_healthy(true);
            w.accepted("f-1");
        }
        w1.refused("f-1", "function f-1 is already registered with different fields (memory_mb 32 -> 16)");
        w2.set_healthy(false);
        let members = cluster.snapshot();
        let available = |fqdn: &str, skip: &[usize]| -> Vec<bool> {
            members.view(fqdn, skip).iter().map(|v| v.available).collect()
        };
        assert_eq!(available("f-1", &[]), [true, false, false]);
        assert_eq!(available("f-1", &[0]), [false, false, false]);
        assert_eq!(available("g-1", &[]), [false, false, false], "nobody accepted g-1");
        assert!(!w1.holds("f-1") && w1.answered("f-1") && !w1.answered("g-1"));
        assert_eq!(w1.refusals().len(), 1);
        w1.accepted("f-1");
        assert!(w1.refusals().is_empty() && w1.holds("f-1"));
        w1.forget_registrations();
        assert!(!w1.answered("f-1"));
    }

    #[tokio::test]
    async fn a_removed_worker_is_no_longer_a_member() {
        let cluster = Cluster::new(Duration::from_secs(1), Duration::from_secs(1), ClientAuth::none());
        cluster.upsert(info("w0", 7000)).unwrap();
        cluster.upsert(info("w1", 7001)).unwrap();
        let before = cluster.snapshot().version;
        assert_eq!(cluster.remove("w0").map(|w| w.address.clone()), Some("127.0.0.1:7000".to_string()));
        let after = cluster.snapshot();
        assert!(after.version > before, "a new version: the balancers see another set");
        assert_eq!(after.workers.iter().map(|w| &*w.name).collect::<Vec<_>>(), ["w1"]);
        assert!(cluster.remove("w0").is_none(), "already gone");
    }

    #[tokio::test]
    async fn one_health_check_per_worker_at_a_time() {
        let cluster = Cluster::new(Duration::from_secs(1), Duration::from_secs(1), ClientAuth::none());
        let w = cluster.upsert(info("w", 7000)).unwrap();
        let first = w.begin_check().expect("no check running");
        assert!(w.begin_check().is_none(), "a second check must wait for the first");
        drop(first);
        assert!(w.begin_check().is_some());
    }
}
