//! The worker's operations, shared by the gRPC and HTTP front ends. Requests and responses
//! are the protocol's messages; errors that the protocol carries in-band (invoke, register,
//! prewarm) are answered in-band, the rest as `ApiError`.

use crate::config::WorkerConfig;
use crate::env::HostStats;
use crate::invoker::{InvokeError, Invoker, InvokerSettings, Outcome};
use crate::isolation::{BackendContext, Backends, ChooseError, IsolationError};
use crate::metrics::{Gauges, Metrics};
use crate::pool::{Acquire, ContainerPool, PoolPolicies};
use crate::registry::{Registered, Registry, RegistryError};
use iluvatar_core::{ContainerState, Env, Fqdn, FunctionSpec, Language, SpecError};
use iluvatar_rpc as rpc;
use iluvatar_rpc::json_result;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

/// An operation's failure that the protocol does not carry in-band: the variant is the
/// status (gRPC and HTTP), the cause inside says what happened.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    NotFound(NotRegistered),
    #[error(transparent)]
    InvalidArgument(BadArgs),
    #[error(transparent)]
    Unavailable(ShuttingDown),
    #[error(transparent)]
    ResourceExhausted(TooManyAsync),
}

#[derive(Debug, thiserror::Error)]
#[error("function {name:?} version {version:?} is not registered (fqdn {fqdn}); register it first")]
pub struct NotRegistered {
    pub name: String,
    pub version: String,
    pub fqdn: Fqdn,
}

/// Why an invocation's `json_args` is refused.
#[derive(Debug, thiserror::Error)]
pub enum BadArgs {
    #[error("json_args is {len} bytes, over the largest payload of {max} bytes", max = rpc::MAX_PAYLOAD_BYTES)]
    TooLarge { len: usize },
    #[error("json_args must be a JSON object, got {0:?}")]
    NotObject(String),
    #[error("json_args is not valid JSON ({source}): {text:?}")]
    NotJson { source: serde_json::Error, text: String },
}

#[derive(Debug, thiserror::Error)]
#[error("the worker is shutting down")]
pub struct ShuttingDown;

#[derive(Debug, thiserror::Error)]
#[error("{pending} async results are waiting to be collected (the limit); collect some with invoke_async_check")]
pub struct TooManyAsync {
    pub pending: usize,
}

/// Why a registration is refused (answered in-band, as its message).
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    ShuttingDown(#[from] ShuttingDown),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Backend(#[from] ChooseError),
    #[error(transparent)]
    Reference(#[from] IsolationError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl ApiError {
    /// The failure's kind, as HTTP answers name it.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) => "not_registered",
            ApiError::InvalidArgument(_) => "bad_arguments",
            ApiError::Unavailable(_) => "shutting_down",
            ApiError::ResourceExhausted(_) => "too_many_async",
        }
    }
}

impl RegisterError {
    /// The refusal's kind, as HTTP answers name it: the client's mistake (`bad_request`,
    /// `conflict`), or the worker's state (`shutting_down`, `unavailable`, `internal`).
    pub fn kind(&self) -> &'static str {
        match self {
            RegisterError::ShuttingDown(_) => "shutting_down",
            RegisterError::Spec(_) | RegisterError::Backend(_) => "bad_request",
            RegisterError::Reference(IsolationError::BadReference { .. }) => "bad_request",
            RegisterError::Reference(IsolationError::Exhausted(_)) => "unavailable",
            RegisterError::Reference(_) => "internal",
            RegisterError::Registry(RegistryError::Conflict { .. }) => "conflict",
            RegisterError::Registry(RegistryError::Store(_)) => "internal",
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let message = e.to_string();
        match e {
            ApiError::NotFound(_) => tonic::Status::not_found(message),
            ApiError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            ApiError::Unavailable(_) => tonic::Status::unavailable(message),
            ApiError::ResourceExhausted(_) => tonic::Status::resource_exhausted(message),
        }
    }
}

enum AsyncSlot {
    Pending,
    /// The result, and when it was ready (it expires `async_result_ttl_ms` later).
    Done(rpc::InvokeResponse, Duration),
}

pub struct WorkerApi {
    config: WorkerConfig,
    /// The config's limits, read once (the host's cores are a file read each time).
    limits: iluvatar_core::SpecLimits,
    env: Env,
    registry: Registry,
    backends: Backends,
    pool: Arc<ContainerPool>,
    invoker: Arc<Invoker>,
    metrics: Arc<Metrics>,
    host: Arc<dyn HostStats>,
    async_results: Mutex<HashMap<String, AsyncSlot>>,
    shutting_down: AtomicBool,
}

impl WorkerApi {
    /// Builds a worker from its config: opens the registry, builds the backends (which
    /// remove what an earlier run left behind is up to `clean`), the pool and the invoker.
    pub fn build(config: WorkerConfig, env: Env, host: Arc<dyn HostStats>) -> anyhow::Result<Arc<Self>> {
        let registry = Registry::open(&config.state_dir)?;
        Self::build_with(config, env, host, registry)
    }

    /// [`build`](Self::build) with a registry of the caller's: a simulated worker's is
    /// [`Registry::in_memory`].
    pub fn build_with(
        config: WorkerConfig,
        env: Env,
        host: Arc<dyn HostStats>,
        registry: Registry,
    ) -> anyhow::Result<Arc<Self>> {
        use anyhow::Context;
        let loopback = |a: &str| crate::isolation::runtime::roots::is_loopback(a);
        let beyond_loopback =
            !loopback(&config.grpc.address) || (config.http.enabled && !loopback(&config.http.address));
        let ctx = BackendContext { env: env.clone(), state_dir: config.state_dir.clone(), beyond_loopback };
        let backends = Backends::build(&config.isolation.backends, &ctx).context("building isolation backends")?;
        // Stored registrations are opened (and checked) again, as when they were registered.
        for spec in registry.list() {
            if let Some(Err(e)) = backends.get(spec.isolation).map(|b| b.registered(&spec)) {
                tracing::warn!(fqdn = %spec.fqdn(), error = %e, "a registered function cannot be used until registered again");
            }
        }
        let metrics = Arc::new(Metrics::default());
        let p = &config.container_pool;
        let policies = PoolPolicies {
            eviction: p.eviction.build(),
            keep_alive: p.keep_alive.build(),
            memory_wait: Duration::from_millis(config.invoker.memory_wait_ms),
        };
        let pool = Arc::new(ContainerPool::new(p.memory_mb, backends.clone(), policies, env.clone(), metrics.clone()));
        let settings = InvokerSettings {
            concurrency: config.concurrency(),
            queue: config.invoker.queue.clone(),
            timeout: Duration::from_millis(config.invoker.invocation_timeout_ms),
            max_queued: config.invoker.max_queued,
        };
        let invoker = Invoker::new(settings, pool.clone(), env.clone(), metrics.clone());
        Ok(Arc::new(WorkerApi {
            limits: config.spec_limits(),
            config,
            env,
            registry,
            backends,
            pool,
            invoker,
            metrics,
            host,
            async_results: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
        }))
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Removes idle containers past their keep-alive, starts the keep-alive policy's
    /// pre-warms and drops expired async results, on ticks `reap_interval_ms` apart, until
    /// shutdown. It sleeps through the ticks at which nothing is due (see [`crate::alarm`]).
    pub fn spawn_reaper(self: &Arc<Self>) {
        let api = self.clone();
        let every = Duration::from_millis(self.config.container_pool.reap_interval_ms);
        tokio::spawn(async move {
            let mut tick = api.env.now();
            loop {
                let alarm = api.pool.alarm();
                alarm.planning();
                if api.shutting_down.load(Ordering::SeqCst) {
                    return;
                }
                // What fell due while the reaper slept or worked is handled on the next tick.
                let due = api.pool.next_due().into_iter().chain(api.next_async_expiry()).min();
                let wake = due.map(|d| crate::alarm::next_tick(tick, every, d.max(api.env.now())));
                alarm.plan(wake, every);
                let Some(wake) = wake else {
                    alarm.rung().await;
                    continue;
                };
                tokio::select! {
                    _ = tokio::time::sleep(wake.saturating_sub(api.env.now())) => {}
                    _ = alarm.rung() => continue,
                }
                tick = wake;
                api.metrics.reaper_runs.fetch_add(1, Ordering::Relaxed);
                api.pool.reap_expired().await;
                api.pool.prewarm_due(|fqdn| api.registry.get(fqdn)).await;
                api.expire_async_results();
            }
        });
    }

    /// When the earliest uncollected async result expires.
    fn next_async_expiry(&self) -> Option<Duration> {
        let ttl = Duration::from_millis(self.config.invoker.async_result_ttl_ms);
        let results = self.async_results.lock().unwrap();
        results
            .values()
            .filter_map(|slot| if let AsyncSlot::Done(_, ready) = slot { Some(*ready + ttl) } else { None })
            .min()
    }

    /// Drops async results nobody collected within `async_result_ttl_ms`.
    fn expire_async_results(&self) {
        let ttl = Duration::from_millis(self.config.invoker.async_result_ttl_ms);
        let now = self.env.now();
        let mut results = self.async_results.lock().unwrap();
        let before = results.len();
        results.retain(|_, slot| !matches!(slot, AsyncSlot::Done(_, ready) if now.saturating_sub(*ready) >= ttl));
        let dropped = before - results.len();
        if dropped > 0 {
            tracing::info!(dropped, ttl_ms = ttl.as_millis() as u64, "async results expired uncollected");
        }
    }

    /// Stops taking work, lets in-flight invocations finish within the grace, fails the
    /// rest, and removes every container.
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.pool.alarm().ring();
        self.invoker.shutdown(Duration::from_millis(self.config.shutdown.grace_ms)).await;
        let removed = self.pool.close(Duration::from_secs(10)).await;
        for b in self.backends.all() {
            b.close().await;
        }
        tracing::info!(removed, "containers removed");
    }

    pub fn ping(&self, _req: rpc::PingRequest) -> rpc::PingResponse {
        rpc::PingResponse { message: "Pong".into() }
    }

    pub async fn register(&self, req: rpc::RegisterRequest) -> rpc::RegisterResponse {
        match self.register_outcome(req).await {
            Ok(fqdn) => rpc::RegisterResponse { success: true, fqdn, error: String::new() },
            Err(e) => rpc::RegisterResponse { success: false, fqdn: String::new(), error: e.to_string() },
        }
    }

    /// A registration's fqdn, or why it was refused (typed, for the HTTP status).
    pub async fn register_outcome(&self, req: rpc::RegisterRequest) -> Result<String, RegisterError> {
        // Info level: registrations, prewarms and cleans are not the warm path, and their
        // info events then carry the tid at the default level.
        let span = tracing::info_span!("register", tid = %req.transaction_id);
        self.register_checked(req).instrument(span).await
    }

    async fn register_checked(&self, req: rpc::RegisterRequest) -> Result<String, RegisterError> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(ShuttingDown.into());
        }
        let spec = self.spec_from(req)?;
        let fqdn = spec.fqdn().0;
        let backend = self.backends.get(spec.isolation).cloned();
        // Refused before anything is pulled for it.
        self.registry.check(&spec)?;
        // An image is pulled and unpacked, a dependency layer built, now: not at the first
        // invocation (a registration that answers success can start containers).
        let prepared = match &backend {
            Some(b) => b.prepare(&spec).await?,
            None => None,
        };
        let outcome = self.registry.register(spec).await?;
        // The backend keeps what it checked (an opened folder) for the function's life.
        if let (Some(b), Some(spec)) = (backend, self.registry.get(&fqdn)) {
            b.registered(&spec)?;
        }
        if outcome == Registered::New {
            self.metrics.registrations.fetch_add(1, Ordering::Relaxed);
        }
        match prepared {
            Some(prepared) => tracing::info!(fqdn, ?outcome, prepared, "registered"),
            None => tracing::info!(fqdn, ?outcome, "registered"),
        }
        Ok(fqdn)
    }

    /// Turns a registration into a checked spec, or says what is wrong with it.
    fn spec_from(&self, r: rpc::RegisterRequest) -> Result<FunctionSpec, RegisterError> {
        let limits = self.limits;
        let memory_mb = u64::try_from(r.memory).ok().filter(|m| *m > 0).ok_or(SpecError::Memory {
            got: r.memory,
            min: limits.min_memory_mb,
            max: limits.max_memory_mb,
        })?;
        let language = match r.language {
            0 => Language::NoLang,
            1 => Language::Python3,
            x => return Err(SpecError::Language(x).into()),
        };
        let backend = self.backends.choose(r.isolate)?.clone();
        let spec = FunctionSpec {
            name: r.function_name,
            version: r.function_version,
            image: r.image_name,
            memory_mb,
            cpus: r.cpus,
            parallel_invokes: r.parallel_invokes.max(1),
            language,
            compute: if r.compute == 0 { rpc::compute::CPU } else { r.compute },
            isolation: backend.flag(),
            container_server: r.container_server,
            resource_timings_json: r.resource_timings_json,
            system_function: r.system_function,
        };
        spec.validate(&limits)?;
        backend.check_reference(&spec)?;
        Ok(spec)
    }

    /// Finds a registered function, or says which one is missing.
    fn lookup(&self, name: &str, version: &str) -> Result<Arc<FunctionSpec>, ApiError> {
        let fqdn = Fqdn::new(name, version);
        self.registry.get(fqdn.as_str()).ok_or_else(|| {
            ApiError::NotFound(NotRegistered { name: name.to_string(), version: version.to_string(), fqdn })
        })
    }

    pub async fn invoke(&self, req: rpc::InvokeRequest) -> rpc::InvokeResponse {
        match self.admit(&req.function_name, &req.function_version, req.json_args) {
            Ok((spec, args)) => {
                // The invocation's span: every hop below (queue, pool, backend, agent) is
                // inside it, so their events carry the tid. Debug level: when off (the
                // default info level), creating it is a level check, nothing allocated.
                let span = tracing::debug_span!("invoke", tid = %req.transaction_id);
                respond(self.invoker.invoke(spec, args, req.transaction_id).instrument(span).await)
            }
            Err((kind, e)) => error_response(kind, &e.to_string(), ContainerState::Error, None),
        }
    }

    /// Checks an invocation before it is queued: the worker is serving, the function
    /// exists, the arguments are a JSON object.
    fn admit(
        &self,
        name: &str,
        version: &str,
        json_args: String,
    ) -> Result<(Arc<FunctionSpec>, String), (&'static str, ApiError)> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(("shutting_down", ApiError::Unavailable(ShuttingDown)));
        }
        let spec = self.lookup(name, version).map_err(|e| ("not_registered", e))?;
        let args = check_args(json_args).map_err(|e| ("bad_arguments", e))?;
        Ok((spec, args))
    }

    pub async fn invoke_async(
        self: &Arc<Self>,
        req: rpc::InvokeAsyncRequest,
    ) -> Result<rpc::InvokeAsyncResponse, ApiError> {
        let (spec, args) = self.admit(&req.function_name, &req.function_version, req.json_args).map_err(|(_, e)| e)?;
        // Unguessable: a cookie is the only key to a result, and collecting it removes it.
        let cookie = crate::env::os_random_id();
        {
            let mut results = self.async_results.lock().unwrap();
            if results.len() >= self.config.invoker.max_pending_async {
                return Err(ApiError::ResourceExhausted(TooManyAsync { pending: results.len() }));
            }
            results.insert(cookie.clone(), AsyncSlot::Pending);
        }
        let api = self.clone();
        let key = cookie.clone();
        let span = tracing::debug_span!("invoke_async", tid = %req.transaction_id);
        let work = async move {
            let response = respond(api.invoker.invoke(spec, args, req.transaction_id).await);
            let ready = api.env.now();
            api.async_results.lock().unwrap().insert(key, AsyncSlot::Done(response, ready));
            api.pool.alarm().due(ready + Duration::from_millis(api.config.invoker.async_result_ttl_ms));
        };
        tokio::spawn(work.instrument(span));
        Ok(rpc::InvokeAsyncResponse { lookup_cookie: cookie, success: true })
    }

    /// The result of an async invocation, once: a pending one says so, a collected or
    /// unknown cookie is an error.
    pub fn invoke_async_check(&self, req: rpc::InvokeAsyncLookupRequest) -> rpc::InvokeResponse {
        let mut results = self.async_results.lock().unwrap();
        match results.get(&req.lookup_cookie) {
            Some(AsyncSlot::Done(..)) => match results.remove(&req.lookup_cookie) {
                Some(AsyncSlot::Done(r, _)) => r,
                _ => unreachable!("checked under the same lock"),
            },
            Some(AsyncSlot::Pending) => rpc::InvokeResponse {
                json_result: json_result::pending(&format!("invocation {} is still running", req.lookup_cookie)),
                success: false,
                duration_us: 0,
                compute: 0,
                container_state: rpc::ContainerState::Error as i32,
            },
            None => error_response(
                "unknown_cookie",
                &format!(
                    "no async invocation has cookie {:?}: it is unknown, its result was already collected, or it expired uncollected",
                    req.lookup_cookie
                ),
                ContainerState::Error,
                None,
            ),
        }
    }

    /// Starts a container for the function and keeps it idle. The work runs in its own
    /// task: a client that gives up midway (a deadline, a dropped connection) cannot leak
    /// the memory reserved for the container, nor the container.
    pub async fn prewarm(self: &Arc<Self>, req: rpc::PrewarmRequest) -> rpc::PrewarmResponse {
        match self.prewarm_outcome(req).await {
            Ok(message) => rpc::PrewarmResponse { success: true, message },
            Err((_, message)) => rpc::PrewarmResponse { success: false, message },
        }
    }

    /// A prewarm's message, or its failure's kind (as invocations name them) and message.
    pub async fn prewarm_outcome(self: &Arc<Self>, req: rpc::PrewarmRequest) -> Result<String, (&'static str, String)> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(("shutting_down", ShuttingDown.to_string()));
        }
        let spec = self.lookup(&req.function_name, &req.function_version).map_err(|e| (e.kind(), e.to_string()))?;
        let pool = self.pool.clone();
        let span = tracing::info_span!("prewarm", tid = %req.transaction_id);
        let work = tokio::spawn(async move {
            match pool.acquire(&spec, &req.transaction_id, Acquire::Prewarm).instrument(span).await {
                Ok(lease) => {
                    let took = lease.cold_start.unwrap_or_default();
                    let message = format!("prewarmed a container for {} in {} us", spec.fqdn(), took.as_micros());
                    pool.release_prewarmed(lease);
                    Ok(message)
                }
                Err(e) => {
                    let e = InvokeError::Pool(e);
                    Err((e.kind(), e.to_string()))
                }
            }
        });
        work.await.unwrap_or_else(|e| Err(("internal", format!("the prewarm failed: {e}"))))
    }

    pub fn status(&self, req: rpc::StatusRequest) -> rpc::StatusResponse {
        let (queued, running) = self.invoker.load();
        let pool = self.pool.snapshot();
        rpc::StatusResponse {
            cpu_queue_len: queued as u64,
            gpu_queue_len: 0,
            used_mem_pct: pool.used_mb as f64 * 100.0 / pool.total_mb as f64,
            cpu_util: self.host.cpu_util(),
            cpu_load_avg: self.host.load_avg(),
            gpu_load_avg: 0.0,
            num_running_funcs: running as u32,
            worker_name: self.config.name.clone(),
            timestamp: self.env.clock.unix_time_us() / 1000,
            functions_json: if req.functions { self.characteristics().to_string() } else { String::new() },
        }
    }

    pub fn health(&self, _req: rpc::HealthRequest) -> rpc::HealthResponse {
        let status = if self.shutting_down.load(Ordering::Relaxed) {
            rpc::RpcHealthStatus::Unhealthy
        } else {
            rpc::RpcHealthStatus::Healthy
        };
        rpc::HealthResponse { status: status as i32 }
    }

    /// Removes every idle container, then what no registered function uses (dependency
    /// layers), in a task of its own so that a client that gives up
    /// midway cannot orphan the containers already taken out of the pool.
    pub async fn clean(&self, req: rpc::CleanRequest) -> rpc::CleanResponse {
        let pool = self.pool.clone();
        let span = tracing::info_span!("clean", tid = %req.transaction_id);
        let backends = self.backends.clone();
        let work = async move {
            let removed = pool.remove_idle().await;
            let mut unused = 0;
            for b in backends.all() {
                unused += b.remove_unused().await;
            }
            (removed, unused)
        };
        let work = tokio::spawn(work.instrument(span.clone()));
        let (removed, unused) = work.await.unwrap_or((0, 0));
        span.in_scope(|| tracing::info!(removed, unused, "clean"));
        rpc::CleanResponse {}
    }

    pub fn list_registered_funcs(&self, _req: rpc::ListFunctionRequest) -> rpc::ListFunctionResponse {
        let functions = self
            .registry
            .list()
            .iter()
            .map(|s| rpc::RegisteredFunction {
                function_name: s.name.clone(),
                function_version: s.version.clone(),
                // Environment values in a code reference are never shown.
                image_name: iluvatar_core::shown_reference(&s.image),
            })
            .collect();
        rpc::ListFunctionResponse { functions }
    }

    /// Estimated seconds per fqdn; 0.0 for a function that is not registered.
    pub fn est_invoke_time(&self, req: rpc::EstInvokeRequest) -> rpc::EstInvokeResponse {
        let est_time = req
            .fqdns
            .iter()
            .map(|f| self.registry.get(f).map(|s| self.invoker.estimate(&s).as_secs_f64()).unwrap_or(0.0))
            .collect();
        rpc::EstInvokeResponse { est_time }
    }

    pub fn metrics_text(&self) -> String {
        let (queue_len, running) = self.invoker.load();
        let pool = self.pool.snapshot();
        let usage = self.pool.memory_usage();
        let mut text = self.metrics.render(&Gauges {
            queue_len,
            running,
            containers_idle: pool.idle,
            containers_busy: pool.busy,
            memory_used_mb: pool.used_mb,
            memory_total_mb: pool.total_mb,
            registered_functions: self.registry.len(),
            memory_held_mb_seconds: usage.held_mb_seconds(),
            memory_idle_mb_seconds: usage.idle_mb_seconds(),
        });
        self.invoker.characteristics().render(&mut text);
        text
    }

    /// The characteristics map (what the worker learnt of each function), as JSON:
    /// `{"functions": {"<fqdn>": {"memory_mb", "cold", "warm", "exec", "iat"}}}`, each time
    /// a summary in microseconds (count, min, max, mean, latest, smoothed).
    pub fn characteristics(&self) -> serde_json::Value {
        let all = self.invoker.characteristics().snapshot();
        let functions: serde_json::Map<String, serde_json::Value> =
            all.into_iter().map(|(fqdn, c)| (fqdn, serde_json::to_value(c).unwrap_or_default())).collect();
        serde_json::json!({ "functions": functions })
    }
}

/// Arguments must be a JSON object; empty means `{}`.
fn check_args(json_args: String) -> Result<String, ApiError> {
    if json_args.len() > rpc::MAX_PAYLOAD_BYTES {
        return Err(ApiError::InvalidArgument(BadArgs::TooLarge { len: json_args.len() }));
    }
    if json_args.trim().is_empty() {
        return Ok("{}".into());
    }
    // Checks the syntax without building a value; the first character tells the type.
    match serde_json::from_str::<serde::de::IgnoredAny>(&json_args) {
        Ok(_) if json_args.trim_start().starts_with('{') => Ok(json_args),
        Ok(_) => Err(ApiError::InvalidArgument(BadArgs::NotObject(json_args))),
        Err(source) => Err(ApiError::InvalidArgument(BadArgs::NotJson { source, text: json_args })),
    }
}

fn proto_state(s: ContainerState) -> i32 {
    let state = match s {
        ContainerState::Error => rpc::ContainerState::Error,
        ContainerState::Unhealthy => rpc::ContainerState::Unhealthy,
        ContainerState::Cold => rpc::ContainerState::Cold,
        ContainerState::Prewarm => rpc::ContainerState::Prewarm,
        ContainerState::Warm => rpc::ContainerState::Warm,
    };
    state as i32
}

fn error_response(kind: &str, message: &str, state: ContainerState, outcome: Option<&Outcome>) -> rpc::InvokeResponse {
    let function_error = outcome.and_then(|o| o.output.as_ref().err()).map(|fe| json!(fe));
    rpc::InvokeResponse {
        json_result: json_result::error(kind, message, outcome.map(|o| &o.timings), function_error),
        success: false,
        duration_us: outcome.map(|o| o.timings.container_us).unwrap_or(0),
        compute: rpc::compute::CPU,
        container_state: proto_state(state),
    }
}

/// The protocol's answer for an invocation. A result's JSON is the function's value under
/// `body`, with the in-function start and end (Unix seconds), `was_cold`, and the worker's
/// timing breakdown. `was_cold` is true exactly when the invocation waited for its container
/// to start (state COLD; `cold_start_us` is that start): a prewarmed container's first call
/// is PREWARM and not cold, though it is the container's first call.
fn respond(result: Result<Outcome, InvokeError>) -> rpc::InvokeResponse {
    match result {
        Ok(o) => match &o.output {
            Ok(body) => rpc::InvokeResponse {
                json_result: json_result::success(
                    body,
                    o.start_unix_us,
                    o.end_unix_us,
                    o.state == ContainerState::Cold,
                    &o.timings,
                ),
                success: true,
                duration_us: o.timings.container_us,
                compute: rpc::compute::CPU,
                container_state: proto_state(o.state),
            },
            Err(fe) => {
                let msg = format!("the function raised {}: {}", fe.kind, fe.message);
                error_response("function_error", &msg, o.state, Some(&o))
            }
        },
        Err(e) => error_response(e.kind(), &e.to_string(), ContainerState::Error, None),
    }
}

#[cfg(test)]
#[path = "api_spans.rs"]
mod spans;
