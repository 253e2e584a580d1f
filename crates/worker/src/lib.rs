//! The Ilúvatar worker: registry, invoker, container pool, isolation backends and the API
//! servers. The binary `iluvatar_worker` parses arguments and calls [`run`].

pub mod api;
pub mod config;
pub mod env;
pub mod grpc;
pub mod http;
pub mod invoker;
pub mod isolation;
pub mod metrics;
pub mod pool;
pub mod registry;

use anyhow::Context;
use api::WorkerApi;
use config::WorkerConfig;
use iluvatar_core::Env;
use iluvatar_rpc::iluvatar_worker_server::IluvatarWorkerServer;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Runs a live worker until `stop` resolves (SIGINT/SIGTERM in the binary), then shuts
/// down gracefully. Prints one JSON line `{"event":"ready",...}` on stdout once serving.
pub async fn run(config: WorkerConfig, env: Env, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let api = WorkerApi::build(config.clone(), env, Arc::new(env::ProcStats::default()))?;
    let grpc_addr = format!("{}:{}", config.grpc.address, config.grpc.port);
    let grpc_listener =
        TcpListener::bind(&grpc_addr).await.with_context(|| format!("cannot listen for gRPC on {grpc_addr}"))?;
    let grpc_local = grpc_listener.local_addr()?;
    let (http_local, http_listener) = if config.http.enabled {
        let addr = format!("{}:{}", config.http.address, config.http.port);
        let l = TcpListener::bind(&addr).await.with_context(|| format!("cannot listen for HTTP on {addr}"))?;
        (Some(l.local_addr()?), Some(l))
    } else {
        (None, None)
    };
    for b in api.backends().all() {
        let removed =
            b.clean_leftovers().await.with_context(|| format!("cleaning up after the {} backend", b.name()))?;
        if removed > 0 {
            tracing::info!(backend = b.name(), removed, "removed what an earlier run left behind");
        }
    }
    api.spawn_reaper();

    let (stop_servers, servers_stopped) = tokio::sync::watch::channel(false);
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let grpc = tonic::transport::Server::builder()
        .add_service(IluvatarWorkerServer::new(grpc::GrpcWorker(api.clone())))
        .serve_with_incoming_shutdown(incoming, wait_stop(servers_stopped.clone()));
    let grpc = tokio::spawn(grpc);
    let http = http_listener.map(|l| {
        let app = http::router(api.clone());
        let stopped = wait_stop(servers_stopped.clone());
        tokio::spawn(async move { axum::serve(l, app).with_graceful_shutdown(stopped).await })
    });

    let ready = serde_json::json!({
        "event": "ready",
        "name": config.name,
        "grpc": grpc_local.to_string(),
        "http": http_local.map(|a| a.to_string()),
        "backends": api.backends().names(),
        "pid": std::process::id(),
    });
    println!("{ready}");
    tracing::info!(grpc = %grpc_local, http = ?http_local, "worker serving");

    stop.await;
    tracing::info!("shutting down: no new work, finishing in-flight invocations");
    api.shutdown().await;
    stop_servers.send_replace(true);
    // Servers finish the requests in flight, but an idle client connection must not hold
    // the shutdown forever.
    let servers = async {
        grpc.await?.context("gRPC server failed")?;
        if let Some(h) = http {
            h.await?.context("HTTP server failed")?;
        }
        anyhow::Ok(())
    };
    if tokio::time::timeout(std::time::Duration::from_secs(2), servers).await.is_err() {
        tracing::warn!("client connections still open after 2 s; closing them");
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// Removes whatever earlier runs left behind (containers and their files); registrations
/// are kept. Returns how many things each backend removed.
pub async fn clean(config: &WorkerConfig, env: Env) -> anyhow::Result<Vec<(String, usize)>> {
    let ctx = isolation::BackendContext { env, state_dir: config.state_dir.clone() };
    let backends = isolation::Backends::build(&config.isolation.backends, &ctx)?;
    let mut removed = Vec::new();
    for b in backends.all() {
        let n = b.clean_leftovers().await.with_context(|| format!("cleaning the {} backend", b.name()))?;
        removed.push((b.name().to_string(), n));
    }
    Ok(removed)
}
