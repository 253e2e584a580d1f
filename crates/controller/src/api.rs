//! The controller's operations, shared by the gRPC and HTTP front ends: invocations
//! forwarded to the worker the balancer picks, and the listings. Registrations and
//! membership are in register.rs, health checks in health.rs. Every call to a worker has a
//! deadline (`within`). Errors the protocol carries in-band stay in-band.

use crate::cluster::{Cluster, Members, WorkerHandle};
use crate::config::ControllerConfig;
use crate::metrics::Metrics;
use crate::store::Store;
use iluvatar_core::policy::balance::{Balancer, ClusterView};
use iluvatar_core::{Env, Fqdn};
use iluvatar_rpc as rpc;
use iluvatar_rpc::json_result;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tonic::Status;

pub struct ControllerApi {
    pub(crate) config: ControllerConfig,
    env: Env,
    pub(crate) store: Store,
    pub(crate) functions: RwLock<HashMap<String, rpc::RegisterRequest>>,
    pub cluster: Cluster,
    balancer: Box<dyn Balancer>,
    pub metrics: Metrics,
    /// One registration of a given fqdn at a time (fqdn -> its lock).
    pub(crate) registering: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One change of membership at a time.
    pub(crate) joining: tokio::sync::Mutex<()>,
}

/// How a call to a worker ended when it did not answer.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The worker was never reached (connection refused, connect timeout): safe to resend.
    NotReached(String),
    /// The worker had the request and failed or did not answer in time.
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotReached(why) | CallError::Failed(why) => f.write_str(why),
        }
    }
}

/// Runs one call to a worker under a deadline: every call the controller makes to a worker
/// goes through here (or through `forward`, which uses it).
pub(crate) async fn within<T>(
    limit: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) if never_reached(&s) => Err(CallError::NotReached(format!("not reached: {}", s.message()))),
        Ok(Err(s)) => Err(CallError::Failed(format!("{}: {}", s.code(), s.message()))),
        Err(_) => Err(CallError::Failed(format!("no answer within {limit:?}"))),
    }
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
    /// `worker_auth` is the token sent to workers.
    pub fn build(
        config: ControllerConfig,
        env: Env,
        worker_auth: iluvatar_rpc::auth::ClientAuth,
    ) -> anyhow::Result<Arc<Self>> {
        let (store, loaded) = Store::open(&config.state_dir)?;
        let longest = [config.forward.invoke_timeout_ms, config.forward.control_timeout_ms, config.health.timeout_ms]
            .into_iter()
            .max()
            .unwrap_or_default();
        let cluster = Cluster::new(
            Duration::from_millis(config.forward.connect_timeout_ms),
            Duration::from_millis(longest.saturating_add(1_000)),
            worker_auth,
        );
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
            registering: Mutex::new(HashMap::new()),
            joining: tokio::sync::Mutex::new(()),
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

    pub(crate) fn control_timeout(&self) -> Duration {
        Duration::from_millis(self.config.forward.control_timeout_ms)
    }

    pub(crate) fn health_timeout(&self) -> Duration {
        Duration::from_millis(self.config.health.timeout_ms)
    }

    /// The worker for `fqdn` among those in service that accepted it and were not yet tried.
    fn pick(&self, fqdn: &str, members: &Members, tried: &[usize]) -> Option<usize> {
        let workers = members.view(fqdn, tried);
        self.balancer.choose(fqdn, &ClusterView { version: members.version, workers: &workers })
    }

    /// Runs `call` on the balancer's choice under `limit`, resending to another worker while
    /// the chosen one cannot be reached. Returns the answer, the worker and the call's own
    /// duration.
    async fn forward<T, F, Fut>(
        &self,
        fqdn: &str,
        limit: Duration,
        call: F,
    ) -> Result<(T, Arc<WorkerHandle>, Duration), (&'static str, String)>
    where
        F: Fn(Arc<WorkerHandle>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let members = self.cluster.snapshot();
        let mut tried = Vec::new();
        let mut unreachable = Vec::new();
        for _ in 0..=self.config.forward.retries {
            let Some(i) = self.pick(fqdn, &members, &tried) else { break };
            let w = members.workers[i].clone();
            let _inflight = w.start_invocation();
            let t = self.env.now();
            match within(limit, call(w.clone())).await {
                Ok(r) => return Ok((r, w, self.env.now().saturating_sub(t))),
                Err(CallError::NotReached(why)) => {
                    if w.set_healthy(false) {
                        tracing::warn!(worker = %w.name, address = w.address, why, "worker unreachable: out of service");
                    }
                    self.metrics.retries.fetch_add(1, Ordering::Relaxed);
                    unreachable.push(format!("{} ({why})", w.name));
                    tried.push(i);
                }
                Err(CallError::Failed(why)) => {
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
        let refused: Vec<_> =
            members.workers.iter().filter_map(|w| w.refusal(fqdn).map(|why| format!("{} ({why})", w.name))).collect();
        let refused = if refused.is_empty() { String::new() } else { format!("; refused it: {}", refused.join(", ")) };
        Err((
            "no_worker",
            format!(
                "no worker in service holds {fqdn} and can take it ({} known{tried}{refused})",
                members.workers.len()
            ),
        ))
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
        if req.json_args.len() > rpc::MAX_PAYLOAD_BYTES {
            let e = format!(
                "json_args is {} bytes, over the largest payload of {} bytes",
                req.json_args.len(),
                rpc::MAX_PAYLOAD_BYTES
            );
            return self.failed(error_response("bad_arguments", &e));
        }
        let fqdn = Fqdn::new(&req.function_name, &req.function_version).0;
        let limit = Duration::from_millis(self.config.forward.invoke_timeout_ms);
        let result = self.forward(&fqdn, limit, |w| {
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
                json_result::annotate(&mut r.json_result, &w.name, Some((overhead_us, call.as_micros() as u64)));
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
        if req.json_args.len() > rpc::MAX_PAYLOAD_BYTES {
            return Err(Status::invalid_argument(format!(
                "json_args is {} bytes, over the largest payload of {} bytes",
                req.json_args.len(),
                rpc::MAX_PAYLOAD_BYTES
            )));
        }
        let fqdn = Fqdn::new(&req.function_name, &req.function_version).0;
        let result = self.forward(&fqdn, self.control_timeout(), |w| {
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

    /// Fetches an async result from the worker the cookie names. A worker that is gone (not
    /// a member, unreachable, or silent past the deadline) answers `worker_failed`.
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
                "worker_failed",
                &format!(
                    "cookie {:?} names worker {name:?}, which is not a member (this controller lost its state, or \
                     never knew it); its result cannot be fetched",
                    req.lookup_cookie
                ),
            );
        };
        let r = rpc::InvokeAsyncLookupRequest { lookup_cookie: cookie.to_string(), transaction_id: req.transaction_id };
        match within(self.control_timeout(), w.client().invoke_async_check(r)).await {
            Ok(mut r) => {
                json_result::annotate(&mut r.json_result, &w.name, None);
                r
            }
            Err(e) => error_response(
                "worker_failed",
                &format!(
                    "worker {} at {}, which ran this invocation, did not answer the check: {e}",
                    w.name, w.address
                ),
            ),
        }
    }

    /// Prewarms on the worker the balancer would send the function to.
    pub async fn prewarm(&self, req: rpc::PrewarmRequest) -> rpc::PrewarmResponse {
        let (r, _) = self.prewarm_outcome(req).await;
        r
    }

    /// A prewarm's answer and, when it failed, the failure's kind (for the HTTP status):
    /// `not_registered`, `no_worker`, `worker_failed`, or `prewarm_failed` (the worker's
    /// own refusal, named in the message).
    pub async fn prewarm_outcome(&self, req: rpc::PrewarmRequest) -> (rpc::PrewarmResponse, &'static str) {
        if let Some(message) = self.not_registered(&req.function_name, &req.function_version) {
            return (rpc::PrewarmResponse { success: false, message }, "not_registered");
        }
        let fqdn = Fqdn::new(&req.function_name, &req.function_version).0;
        // A prewarm starts a container: it gets an invocation's deadline.
        let limit = Duration::from_millis(self.config.forward.invoke_timeout_ms);
        let result = self.forward(&fqdn, limit, |w| {
            let (mut c, r) = (w.client(), req.clone());
            async move { c.prewarm(r).await }
        });
        match result.await {
            Ok((mut r, w, _)) => {
                r.message = format!("{} (worker {})", r.message, w.name);
                (r, "prewarm_failed")
            }
            Err((kind, message)) => (rpc::PrewarmResponse { success: false, message }, kind),
        }
    }

    /// Workers and their state, for HTTP users.
    pub fn workers_json(&self) -> serde_json::Value {
        let members = self.cluster.snapshot();
        let list: Vec<_> = members
            .workers
            .iter()
            .map(|w| {
                let refused: serde_json::Map<String, serde_json::Value> =
                    w.refusals().into_iter().map(|(f, why)| (f, why.into())).collect();
                serde_json::json!({"name": &*w.name, "address": w.address, "healthy": w.is_healthy(),
                    "inflight": w.inflight(), "forwarded": w.forwarded.load(Ordering::Relaxed),
                    "cpus": w.info.cpus, "memory": w.info.memory, "refused": refused})
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
                // Environment values in a code reference are never shown.
                image_name: iluvatar_core::shown_reference(&r.image_name),
            })
            .collect();
        functions.sort_by(|a, b| (&a.function_name, &a.function_version).cmp(&(&b.function_name, &b.function_version)));
        rpc::ListFunctionResponse { functions }
    }

    pub fn metrics_text(&self) -> String {
        self.metrics.render(&self.cluster.snapshot(), self.function_count())
    }
}

pub(crate) fn error_response(kind: &str, message: &str) -> rpc::InvokeResponse {
    rpc::InvokeResponse {
        json_result: json_result::error(kind, message, None, None),
        success: false,
        duration_us: 0,
        compute: rpc::compute::CPU,
        container_state: rpc::ContainerState::Error as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_without_an_answer_fails_at_its_deadline_and_says_so() {
        let silent = std::future::pending::<Result<tonic::Response<()>, Status>>();
        let e = within(Duration::from_millis(10), silent).await.unwrap_err();
        assert!(matches!(&e, CallError::Failed(why) if why == "no answer within 10ms"), "{e:?}");
        let refused =
            async { Err::<tonic::Response<()>, _>(Status::unavailable("tcp connect error: Connection refused")) };
        assert!(matches!(within(Duration::from_secs(1), refused).await, Err(CallError::NotReached(_))));
        let failed = async { Err::<tonic::Response<()>, _>(Status::internal("boom")) };
        let e = within(Duration::from_secs(1), failed).await.unwrap_err();
        assert!(matches!(&e, CallError::Failed(why) if why.contains("boom")), "{e:?}");
        let answered = async { Ok(tonic::Response::new(7)) };
        assert_eq!(within(Duration::from_secs(1), answered).await.unwrap(), 7);
    }
}
