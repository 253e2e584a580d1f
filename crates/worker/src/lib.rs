//! The Ilúvatar worker: registry, invoker, container pool, isolation backends and the API
//! servers. The binary `iluvatar_worker` parses arguments and calls [`run`].

pub mod alarm;
pub mod api;
pub mod characteristics;
pub mod config;
pub mod env;
pub mod grpc;
pub mod http;
pub mod invoker;
pub mod isolation;
pub mod metrics;
pub mod pool;
pub mod registry;
pub mod state_lock;

use anyhow::Context;
use api::WorkerApi;
use config::WorkerConfig;
use iluvatar_core::Env;
use iluvatar_rpc::iluvatar_worker_server::IluvatarWorkerServer;
use iluvatar_service::serve::Listeners;
use std::future::Future;
use std::sync::Arc;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;

/// Runs a live worker until `stop` resolves (SIGINT/SIGTERM in the binary), then shuts
/// down gracefully. Prints one JSON line `{"event":"ready",...}` on stdout once serving.
pub async fn run(config: WorkerConfig, env: Env, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    // The check of every gRPC call and HTTP request, and the token sent to the controller.
    // Refuses to start when a token file is unusable, or when an API listens off loopback
    // without a token and the config does not say `auth.insecure`.
    let (auth, controller_auth) = iluvatar_rpc::auth::for_service(
        config::AuthConfig::path(&config.auth.token_file),
        "auth.controller_token_file",
        config::AuthConfig::path(&config.auth.controller_token_file),
        config.auth.insecure,
        &config.grpc.address,
        config.http.enabled.then_some(config.http.address.as_str()),
    )
    .map_err(anyhow::Error::msg)?;
    check_host(&config)?;
    let _lock = state_lock::StateLock::acquire(&config.state_dir)?;
    // Listen first: a port that is taken fails the start before anything is made.
    let listeners = Listeners::bind(&config.grpc, &config.http).await?;
    let api = WorkerApi::build(config.clone(), env, Arc::new(env::ProcStats::default()))?;
    for b in api.backends().all() {
        let cleaned = b.clean_leftovers().await.with_context(|| format!("cleaning up after the {} backend", b.name()));
        let removed = match cleaned {
            Ok(n) => n,
            Err(e) => {
                api.shutdown().await;
                return Err(e);
            }
        };
        if removed > 0 {
            tracing::info!(backend = b.name(), removed, "removed what an earlier run left behind");
        }
        b.start();
    }
    api.spawn_reaper();

    // Every call passes the token check first (before its message is decoded).
    let service = IluvatarWorkerServer::new(grpc::GrpcWorker(api.clone()))
        .max_decoding_message_size(iluvatar_rpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(iluvatar_rpc::MAX_MESSAGE_BYTES);
    let grpc = Routes::new(InterceptedService::new(service, auth.clone()));
    let serving = listeners.serve(grpc, http::router(api.clone()), &auth);
    let (grpc_local, http_local) = (serving.grpc_local, serving.http_local);
    serving.announce(&config.name, serde_json::json!({"backends": api.backends().names()}));
    tracing::info!(grpc = %grpc_local, http = ?http_local, "worker serving");
    if let Some(link) = config.controller.clone() {
        let host =
            if link.advertise_host.is_empty() { grpc_local.ip().to_string() } else { link.advertise_host.clone() };
        let me = iluvatar_rpc::RegisterWorkerRequest {
            name: config.name.clone(),
            host,
            port: grpc_local.port() as u32,
            memory: config.container_pool.memory_mb as i64,
            cpus: config.spec_limits().max_cpus,
            compute: iluvatar_rpc::compute::CPU,
            isolation: api.backends().all().iter().fold(0, |flags, b| flags | b.flag()),
            gpus: 0,
        };
        tokio::spawn(register_with_controller(link, me, controller_auth));
    }

    stop.await;
    tracing::info!("shutting down: no new work, finishing in-flight invocations");
    // Bounded: the grace, the invoker's last 5 s, then the removals; past that, each
    // backend's close (which removes whatever is left as leftovers), itself bounded.
    let bound = std::time::Duration::from_millis(config.shutdown.grace_ms) + std::time::Duration::from_secs(15);
    if tokio::time::timeout(bound, api.shutdown()).await.is_err() {
        tracing::warn!(bound_ms = bound.as_millis() as u64, "shutdown overran its bound; removing what is left");
        for b in api.backends().all() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(20), b.close()).await;
        }
    }
    // Servers finish the requests in flight, but an idle client connection must not hold
    // the shutdown forever.
    serving.stop(Some(std::time::Duration::from_secs(2))).await?;
    tracing::info!("worker stopped");
    Ok(())
}

/// Sends `register_worker` to the controller until it succeeds (the controller may start
/// later than the worker), then again every `heartbeat_ms` (a heartbeat: the controller
/// ignores a member registering again, and a controller restarted without its state learns
/// the worker again). Failures are logged at the first of a run and every tenth after, and
/// the first success after failures is logged.
async fn register_with_controller(
    link: config::ControllerLink,
    me: iluvatar_rpc::RegisterWorkerRequest,
    auth: iluvatar_rpc::auth::ClientAuth,
) {
    use std::time::Duration;
    // register_worker only stores the worker (it may ask an old member of the same name
    // for its health first): a few seconds are ample.
    const CALL_DEADLINE: Duration = Duration::from_secs(5);
    let endpoint = format!("http://{}:{}", link.address, link.port);
    let channel = match tonic::transport::Endpoint::from_shared(endpoint.clone()) {
        Ok(e) => e.connect_timeout(CALL_DEADLINE).timeout(CALL_DEADLINE).connect_lazy(),
        Err(e) => {
            tracing::error!(controller = endpoint, error = %e, "the controller's address is unusable; not registering");
            return;
        }
    };
    let mut client = iluvatar_rpc::auth::controller_client(channel, auth);
    let (mut registered, mut failures) = (false, 0u64);
    loop {
        let result = match tokio::time::timeout(CALL_DEADLINE, client.register_worker(me.clone())).await {
            Ok(r) => r.map(|_| ()).map_err(|s| s.message().to_string()),
            Err(_) => Err(format!("no answer within {CALL_DEADLINE:?}")),
        };
        match result {
            Ok(()) => {
                if !registered || failures > 0 {
                    tracing::info!(controller = endpoint, failed_attempts = failures, "registered with the controller");
                }
                (registered, failures) = (true, 0);
                if link.heartbeat_ms == 0 {
                    return;
                }
            }
            Err(e) => {
                failures += 1;
                if failures % 10 == 1 {
                    tracing::warn!(
                        controller = endpoint,
                        failures,
                        error = e,
                        "cannot register with the controller; retrying"
                    );
                }
            }
        }
        let pause = if failures == 0 { link.heartbeat_ms } else { link.retry_ms };
        tokio::time::sleep(Duration::from_millis(pause.max(1))).await;
    }
}

/// Removes whatever earlier runs left behind (containers and their files); registrations
/// are kept. Returns how many things each backend removed.
/// Whether this process can run every configured backend (the runtime backend needs root),
/// before the state directory or anything else is touched: a non-root start then says so
/// rather than failing on a file it may not create.
fn check_host(config: &WorkerConfig) -> anyhow::Result<()> {
    for b in &config.isolation.backends {
        b.check_host().context("the isolation backends cannot run here")?;
    }
    Ok(())
}

pub async fn clean(config: &WorkerConfig, env: Env) -> anyhow::Result<Vec<(String, usize)>> {
    check_host(config)?;
    let _lock = state_lock::StateLock::acquire(&config.state_dir)?;
    // Cleaning serves no client: where the worker listens does not matter.
    let ctx = isolation::BackendContext { env, state_dir: config.state_dir.clone(), beyond_loopback: false };
    let backends = isolation::Backends::build(&config.isolation.backends, &ctx)?;
    // What registered functions use (dependency layers) is kept: the backends learn it first.
    let registry = registry::Registry::open(&config.state_dir)?;
    for spec in registry.list() {
        if let Some(Err(e)) = backends.get(spec.isolation).map(|b| b.registered(&spec)) {
            tracing::warn!(fqdn = %spec.fqdn(), error = %e, "a registered function cannot be used until registered again");
        }
    }
    let mut removed = Vec::new();
    for b in backends.all() {
        let n = b.clean_leftovers().await.with_context(|| format!("cleaning the {} backend", b.name()))?;
        b.close().await;
        removed.push((b.name().to_string(), n));
    }
    Ok(removed)
}
