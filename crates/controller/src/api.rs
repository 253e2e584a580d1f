//! The controller's operations, shared by the gRPC and HTTP front ends: registrations
//! stored and fanned out to every worker, worker membership, and invocations forwarded to
//! the worker the balancer picks. Errors the protocol carries in-band stay in-band.

use crate::balance::{Balancer, ClusterView};
use crate::cluster::{Cluster, Members, StatusFigures, WorkerHandle};
use crate::config::ControllerConfig;
use crate::metrics::Metrics;
use crate::store::Store;
use iluvatar_core::{Env, Fqdn};
use iluvatar_rpc as rpc;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tonic::Status;

pub struct ControllerApi {
    config: ControllerConfig,
    env: Env,
    store: Store,
    functions: RwLock<HashMap<String, rpc::RegisterRequest>>,
    pub cluster: Cluster,
    balancer: Box<dyn Balancer>,
    pub metrics: Metrics,
}

/// How a forwarded call ended when it did not answer.
enum CallError {
    /// The worker was never reached (connection refused, connect timeout): safe to resend.
    NotReached(String),
    /// The worker had the request and failed or did not answer in time.
    Failed(String),
}

/// Whether a failed call could not have reached the worker. tonic reports a connection it
/// could not open as `Unavailable` with a connect error in the message or its source.
fn never_reached(s: &Status) -> bool {
    use std::error::Error;
    if s.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut text = s.message().to_lowercase();
    let mut source = s.source();
    while let Some(e) = source {
        text.push_str(&e.to_string().to_lowercase());
        source = e.source();
    }
    text.contains("connect error") || text.contains("connection refused") || text.contains("error trying to connect")
}

impl ControllerApi {
    /// Opens the store and rebuilds the function table and the membership from it.
    pub fn build(config: ControllerConfig, env: Env) -> anyhow::Result<Arc<Self>> {
        let (store, loaded) = Store::open(&config.state_dir)?;
        let cluster = Cluster::new(Duration::from_millis(config.forward.connect_timeout_ms));
        for w in loaded.workers {
            cluster.upsert(w).map_err(anyhow::Error::msg)?;
        }
        let balancer = config.balancer.build(env.seed);
        Ok(Arc::new(ControllerApi {
            functions: RwLock::new(loaded.functions.into_iter().collect()),
            store,
            cluster,
            balancer,
            metrics: Metrics::default(),
            config,
            env,
        }))
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    pub fn function_count(&self) -> usize {
        self.functions.read().unwrap().len()
    }

    pub fn ping(&self, _req: rpc::PingRequest) -> rpc::PingResponse {
        rpc::PingResponse { message: "Pong".into() }
    }

    /// Sends a registration to every healthy worker, then stores it. It fails only when
    /// every worker that answered refused it (their reason is returned); workers that are
    /// down or join later get it when they (re)join.
    pub async fn register(&self, req: rpc::RegisterRequest) -> rpc::RegisterResponse {
        let fail = |error: String| rpc::RegisterResponse { success: false, fqdn: String::new(), error };
        if req.function_name.is_empty() || req.function_version.is_empty() {
            return fail("function_name and function_version must not be empty".into());
        }
        let fqdn = Fqdn::new(&req.function_name, &req.function_version).0;
        if let Some(old) = self.functions.read().unwrap().get(&fqdn)
            && !same_function(old, &req)
        {
            return fail(format!(
                "function {fqdn} is already registered with different fields; register a new version instead"
            ));
        }
        let members = self.cluster.snapshot();
        let targets: Vec<_> = members.workers.iter().filter(|w| w.is_healthy()).cloned().collect();
        let mut tasks = Vec::new();
        for w in &targets {
            let (mut c, r) = (w.client(), req.clone());
            tasks.push(tokio::spawn(async move { c.register(r).await }));
        }
        let (mut accepted, mut refusals) = (0, Vec::new());
        for (w, t) in targets.iter().zip(tasks) {
            match t.await {
                Ok(Ok(r)) if r.get_ref().success => accepted += 1,
                Ok(Ok(r)) => refusals.push(format!("{}: {}", w.name, r.into_inner().error)),
                Ok(Err(s)) => {
                    tracing::warn!(worker = %w.name, fqdn, error = %s.message(), "registration not delivered; sent again when the worker rejoins")
                }
                Err(e) => tracing::warn!(worker = %w.name, fqdn, error = %e, "registration task failed"),
            }
        }
        if accepted == 0 && !refusals.is_empty() {
            return fail(format!("the workers refused the registration: {}", refusals.join("; ")));
        }
        if let Err(e) = self.store.put_function(&fqdn, &req).await {
            return fail(e.to_string());
        }
        self.functions.write().unwrap().insert(fqdn.clone(), req.clone());
        self.push_to_joining(&targets, &req).await;
        self.metrics.registrations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(fqdn, accepted, refused = refusals.len(), "registered");
        let error = if refusals.is_empty() { String::new() } else { format!("refused by {}", refusals.join("; ")) };
        rpc::RegisterResponse { success: true, fqdn, error }
    }

    /// Sends a registration, now in the function table, to every member that was not among
    /// `done`: a worker joining meanwhile may have been synced from the table before the
    /// registration was in it. Waits (boundedly) so that no worker is in service without it.
    async fn push_to_joining(&self, done: &[Arc<WorkerHandle>], req: &rpc::RegisterRequest) {
        let limit = Duration::from_millis(self.config.forward.connect_timeout_ms + self.config.health.timeout_ms);
        let members = self.cluster.snapshot();
        let tasks: Vec<_> = members
            .workers
            .iter()
            .filter(|w| !done.iter().any(|d| Arc::ptr_eq(d, w)))
            .map(|w| {
                let (mut c, r) = (w.client(), req.clone());
                tokio::spawn(async move { tokio::time::timeout(limit, c.register(r)).await })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Adds (or replaces) a worker, stores it, and brings it into service once it has every
    /// registration.
    pub async fn register_worker(self: &Arc<Self>, req: rpc::RegisterWorkerRequest) -> Result<(), Status> {
        if req.name.is_empty() || req.host.is_empty() || req.port == 0 || req.port > u16::MAX as u32 {
            return Err(Status::invalid_argument(format!(
                "a worker needs a name, a host and a port (got name {:?}, host {:?}, port {})",
                req.name, req.host, req.port
            )));
        }
        self.store.put_worker(&req).await.map_err(|e| Status::unavailable(e.to_string()))?;
        let handle = self.cluster.upsert(req).map_err(Status::invalid_argument)?;
        self.metrics.worker_registrations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(worker = %handle.name, address = handle.address, "worker registered");
        let api = self.clone();
        tokio::spawn(async move { api.check(&handle).await });
        Ok(())
    }

    /// Pushes every registration to a worker; false if the worker could not be reached.
    async fn sync(&self, w: &WorkerHandle) -> bool {
        let all: Vec<rpc::RegisterRequest> = self.functions.read().unwrap().values().cloned().collect();
        for r in all {
            match w.client().register(r.clone()).await {
                Ok(resp) if !resp.get_ref().success => {
                    tracing::warn!(worker = %w.name, function = r.function_name, error = resp.into_inner().error, "worker refused a registration")
                }
                Ok(_) => {}
                Err(s) => {
                    tracing::warn!(worker = %w.name, error = %s.message(), "cannot sync registrations");
                    return false;
                }
            }
        }
        true
    }

    /// One health check: health, then status; a worker coming (back) into service is
    /// synced first.
    pub async fn check(&self, w: &WorkerHandle) {
        let timeout = Duration::from_millis(self.config.health.timeout_ms);
        let tid = || "health".to_string();
        let health =
            tokio::time::timeout(timeout, w.client().health(rpc::HealthRequest { transaction_id: tid() })).await;
        let healthy = matches!(&health, Ok(Ok(r)) if r.get_ref().status == rpc::RpcHealthStatus::Healthy as i32);
        if healthy
            && let Ok(Ok(s)) =
                tokio::time::timeout(timeout, w.client().status(rpc::StatusRequest { transaction_id: tid() })).await
        {
            let s = s.into_inner();
            // Keep only the load that is not this controller's own in-flight invocations:
            // those are counted exactly, and a status taken while one of them ran would
            // otherwise count it again until the next poll (and push CH off its home).
            let mine = w.inflight();
            let running = s.num_running_funcs as u64;
            w.set_status(StatusFigures {
                queued: s.cpu_queue_len.saturating_sub(mine.saturating_sub(running)),
                running: running.saturating_sub(mine),
                load_avg: s.cpu_load_avg,
            });
        }
        if healthy && !w.is_healthy() {
            if self.sync(w).await && w.set_healthy(true) {
                tracing::info!(worker = %w.name, address = w.address, "worker in service");
            }
        } else if !healthy && w.set_healthy(false) {
            let why = match health {
                Ok(Ok(_)) => "it reports itself unhealthy".to_string(),
                Ok(Err(s)) => s.message().to_string(),
                Err(_) => format!("no answer within {timeout:?}"),
            };
            tracing::warn!(worker = %w.name, address = w.address, why, "worker out of service");
        }
    }

    /// Checks every worker every `health.interval_ms`, forever.
    pub fn spawn_health_checks(self: &Arc<Self>) {
        let api = self.clone();
        let every = Duration::from_millis(self.config.health.interval_ms);
        tokio::spawn(async move {
            loop {
                let members = api.cluster.snapshot();
                let checks: Vec<_> = members
                    .workers
                    .iter()
                    .map(|w| {
                        let (api, w) = (api.clone(), w.clone());
                        tokio::spawn(async move { api.check(&w).await })
                    })
                    .collect();
                for c in checks {
                    let _ = c.await;
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    /// The worker for `fqdn` among those not yet tried.
    fn pick(&self, fqdn: &str, members: &Members, tried: &[usize]) -> Option<usize> {
        let workers = members.view(tried);
        self.balancer.choose(fqdn, &ClusterView { version: members.version, workers: &workers })
    }

    /// Runs `call` on the balancer's choice, resending to another worker while the chosen
    /// one cannot be reached. Returns the answer, the worker and the call's own duration.
    async fn forward<T, F, Fut>(
        &self,
        fqdn: &str,
        call: F,
    ) -> Result<(T, Arc<WorkerHandle>, Duration), (&'static str, String)>
    where
        F: Fn(Arc<WorkerHandle>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let members = self.cluster.snapshot();
        let mut tried = Vec::new();
        let mut unreachable = Vec::new();
        let limit = Duration::from_millis(self.config.forward.invoke_timeout_ms);
        for _ in 0..=self.config.forward.retries {
            let Some(i) = self.pick(fqdn, &members, &tried) else { break };
            let w = members.workers[i].clone();
            let _inflight = w.start_invocation();
            let t = self.env.now();
            let outcome = match tokio::time::timeout(limit, call(w.clone())).await {
                Ok(Ok(r)) => return Ok((r.into_inner(), w, self.env.now().saturating_sub(t))),
                Ok(Err(s)) if never_reached(&s) => CallError::NotReached(s.message().to_string()),
                Ok(Err(s)) => CallError::Failed(format!("{}: {}", s.code(), s.message())),
                Err(_) => CallError::Failed(format!("no answer within {limit:?}")),
            };
            match outcome {
                CallError::NotReached(why) => {
                    if w.set_healthy(false) {
                        tracing::warn!(worker = %w.name, address = w.address, why, "worker unreachable: out of service");
                    }
                    self.metrics.retries.fetch_add(1, Ordering::Relaxed);
                    unreachable.push(format!("{} ({why})", w.name));
                    tried.push(i);
                }
                CallError::Failed(why) => {
                    self.metrics.worker_failures.fetch_add(1, Ordering::Relaxed);
                    return Err((
                        "worker_failed",
                        format!("worker {} at {} failed during the call: {why}", w.name, w.address),
                    ));
                }
            }
        }
        let tried =
            if unreachable.is_empty() { String::new() } else { format!("; unreachable: {}", unreachable.join(", ")) };
        Err(("no_worker", format!("no healthy worker can take {fqdn} ({} known{tried})", members.workers.len())))
    }

    fn not_registered(&self, name: &str, version: &str) -> Option<String> {
        let fqdn = Fqdn::new(name, version);
        (!self.functions.read().unwrap().contains_key(fqdn.as_str())).then(|| {
            format!("function {name:?} version {version:?} is not registered (fqdn {fqdn}); register it first")
        })
    }

    pub async fn invoke(&self, req: rpc::InvokeRequest) -> rpc::InvokeResponse {
        let t0 = self.env.now();
        if let Some(e) = self.not_registered(&req.function_name, &req.function_version) {
            return self.failed(error_response("not_registered", &e));
        }
        let fqdn = Fqdn::new(&req.function_name, &req.function_version).0;
        let result = self.forward(&fqdn, |w| {
            let (mut c, r) = (w.client(), req.clone());
            async move { c.invoke(r).await }
        });
        match result.await {
            Ok((mut r, w, call)) => {
                let total = self.env.now().saturating_sub(t0);
                let overhead_us = total.saturating_sub(call).as_micros() as u64;
                self.metrics.latency.observe_us(total.as_micros() as u64);
                self.metrics.overhead.observe_us(overhead_us);
                let counter = if r.success { &self.metrics.invocations_ok } else { &self.metrics.invocations_failed };
                counter.fetch_add(1, Ordering::Relaxed);
                annotate(&mut r.json_result, &w.name, Some((overhead_us, call.as_micros() as u64)));
                r
            }
            Err((kind, e)) => self.failed(error_response(kind, &e)),
        }
    }

    fn failed(&self, r: rpc::InvokeResponse) -> rpc::InvokeResponse {
        self.metrics.invocations_failed.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// Starts an invocation on a worker; the cookie names the worker (`worker.cookie`) so
    /// that the check goes to it, even after a controller restart.
    pub async fn invoke_async(&self, req: rpc::InvokeAsyncRequest) -> Result<rpc::InvokeAsyncResponse, Status> {
        if let Some(e) = self.not_registered(&req.function_name, &req.function_version) {
            return Err(Status::not_found(e));
        }
        let fqdn = Fqdn::new(&req.function_name, &req.function_version).0;
        let result = self.forward(&fqdn, |w| {
            let (mut c, r) = (w.client(), req.clone());
            async move { c.invoke_async(r).await }
        });
        match result.await {
            Ok((r, w, _)) => Ok(rpc::InvokeAsyncResponse {
                lookup_cookie: format!("{}.{}", w.name, r.lookup_cookie),
                success: r.success,
            }),
            Err((_, e)) => Err(Status::unavailable(e)),
        }
    }

    pub async fn invoke_async_check(&self, req: rpc::InvokeAsyncLookupRequest) -> rpc::InvokeResponse {
        let Some((name, cookie)) = req.lookup_cookie.rsplit_once('.') else {
            return error_response(
                "unknown_cookie",
                &format!("{:?} is not a cookie this controller gave", req.lookup_cookie),
            );
        };
        let members = self.cluster.snapshot();
        let Some(w) = members.get(name) else {
            return error_response(
                "unknown_cookie",
                &format!("cookie {:?} names worker {name:?}, which is not a member", req.lookup_cookie),
            );
        };
        let r = rpc::InvokeAsyncLookupRequest { lookup_cookie: cookie.to_string(), transaction_id: req.transaction_id };
        match w.client().invoke_async_check(r).await {
            Ok(r) => {
                let mut r = r.into_inner();
                annotate(&mut r.json_result, &w.name, None);
                r
            }
            Err(s) => error_response(
                "worker_failed",
                &format!("worker {} at {} did not answer the check: {}", w.name, w.address, s.message()),
            ),
        }
    }

    /// Prewarms on the worker the balancer would send the function to.
    pub async fn prewarm(&self, req: rpc::PrewarmRequest) -> rpc::PrewarmResponse {
        if let Some(message) = self.not_registered(&req.function_name, &req.function_version) {
            return rpc::PrewarmResponse { success: false, message };
        }
        let fqdn = Fqdn::new(&req.function_name, &req.function_version).0;
        let result = self.forward(&fqdn, |w| {
            let (mut c, r) = (w.client(), req.clone());
            async move { c.prewarm(r).await }
        });
        match result.await {
            Ok((mut r, w, _)) => {
                r.message = format!("{} (worker {})", r.message, w.name);
                r
            }
            Err((_, message)) => rpc::PrewarmResponse { success: false, message },
        }
    }

    /// Workers and their state, for HTTP users.
    pub fn workers_json(&self) -> serde_json::Value {
        let members = self.cluster.snapshot();
        let list: Vec<_> = members
            .workers
            .iter()
            .map(|w| {
                serde_json::json!({"name": &*w.name, "address": w.address, "healthy": w.is_healthy(),
                    "inflight": w.inflight(), "forwarded": w.forwarded.load(Ordering::Relaxed),
                    "cpus": w.info.cpus, "memory": w.info.memory})
            })
            .collect();
        serde_json::json!({"balancer": self.config.balancer.name(), "workers": list})
    }

    pub fn functions_json(&self) -> rpc::ListFunctionResponse {
        let mut functions: Vec<_> = self
            .functions
            .read()
            .unwrap()
            .values()
            .map(|r| rpc::RegisteredFunction {
                function_name: r.function_name.clone(),
                function_version: r.function_version.clone(),
                image_name: r.image_name.clone(),
            })
            .collect();
        functions.sort_by(|a, b| (&a.function_name, &a.function_version).cmp(&(&b.function_name, &b.function_version)));
        rpc::ListFunctionResponse { functions }
    }

    pub fn metrics_text(&self) -> String {
        self.metrics.render(&self.cluster.snapshot(), self.function_count())
    }
}

/// Two registrations of one fqdn are the same function when every field but the
/// transaction id matches.
fn same_function(a: &rpc::RegisterRequest, b: &rpc::RegisterRequest) -> bool {
    rpc::RegisterRequest { transaction_id: String::new(), ..a.clone() }
        == rpc::RegisterRequest { transaction_id: String::new(), ..b.clone() }
}

fn error_response(kind: &str, message: &str) -> rpc::InvokeResponse {
    rpc::InvokeResponse {
        json_result: serde_json::json!({"Error": message, "kind": kind}).to_string(),
        success: false,
        duration_us: 0,
        compute: rpc::compute::CPU,
        container_state: rpc::ContainerState::Error as i32,
    }
}

/// Adds the worker's name and the controller's timings to a worker's JSON result without
/// parsing it: `"worker"` at the top level, and `controller_us` (the controller's own time)
/// and `worker_rpc_us` (the call to the worker) inside `"timings"`, which the worker writes
/// last and flat.
pub fn annotate(json: &mut String, worker: &str, timings: Option<(u64, u64)>) {
    if !json.ends_with('}') {
        return;
    }
    if let Some((controller_us, worker_rpc_us)) = timings {
        let fields = format!("\"controller_us\":{controller_us},\"worker_rpc_us\":{worker_rpc_us}");
        match json.rfind("\"timings\":{").and_then(|at| json[at..].find('}').map(|end| at + end)) {
            Some(end) if json[..end].ends_with('{') => json.insert_str(end, &fields),
            Some(end) => json.insert_str(end, &format!(",{fields}")),
            None => json.insert_str(json.len() - 1, &format!(",\"timings\":{{{fields}}}")),
        }
    }
    let name = serde_json::to_string(worker).unwrap_or_default();
    json.insert_str(json.len() - 1, &format!(",\"worker\":{name}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotate_keeps_the_json_valid() {
        let cases = [
            r#"{"body":{"timings":{"x":1}},"start":1.0,"timings":{"queue_us":3,"total_us":9}}"#,
            r#"{"Error":"x","kind":"timeout","timings":{}}"#,
            r#"{"Error":"x","kind":"timeout"}"#,
        ];
        for c in cases {
            let mut s = c.to_string();
            annotate(&mut s, "w\"1", Some((5, 40)));
            let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(v["timings"]["controller_us"], 5, "{s}");
            assert_eq!(v["timings"]["worker_rpc_us"], 40, "{s}");
            assert_eq!(v["worker"], "w\"1", "{s}");
        }
        let mut s = r#"{"body":1,"timings":{"queue_us":3}}"#.to_string();
        annotate(&mut s, "w", Some((1, 2)));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["timings"]["queue_us"], 3);
    }
}
