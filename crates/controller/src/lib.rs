//! The Ilúvatar controller: worker membership and health, registrations fanned out to every
//! worker, load balancing (its policies are `iluvatar_core::policy::balance`), and
//! invocation forwarding. The binary `iluvatar_controller` parses arguments and calls
//! [`run`]. Its benchmark is the load generator's `controller-bench`.

pub mod api;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod grpc;
mod health;
pub mod http;
pub mod metrics;
mod register;
pub mod store;

use anyhow::Context;
use api::ControllerApi;
use config::ControllerConfig;
use iluvatar_core::Env;
use iluvatar_rpc::iluvatar_controller_server::IluvatarControllerServer;
use std::future::Future;
use tokio::net::TcpListener;

/// Runs a controller until `stop` resolves (SIGINT/SIGTERM in the binary). Prints one JSON
/// line `{"event":"ready",...}` on stdout once serving.
pub async fn run(config: ControllerConfig, env: Env, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (auth, worker_auth) = auth(&config)?;
    let api = ControllerApi::build(config.clone(), env, worker_auth)?;
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
    api.spawn_health_checks();

    let (stop_servers, servers_stopped) = tokio::sync::watch::channel(false);
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    // Every call passes the token check first (before its message is decoded).
    let service = IluvatarControllerServer::new(grpc::GrpcController(api.clone()))
        .max_decoding_message_size(iluvatar_rpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(iluvatar_rpc::MAX_MESSAGE_BYTES);
    let grpc = tonic::transport::Server::builder()
        .add_service(tonic::service::interceptor::InterceptedService::new(service, auth.clone()))
        .serve_with_incoming_shutdown(incoming, wait_stop(servers_stopped.clone()));
    let grpc = tokio::spawn(grpc);
    let http = http_listener.map(|l| {
        let app = http::require_token(http::router(api.clone()), auth.clone());
        let stopped = wait_stop(servers_stopped.clone());
        tokio::spawn(async move { axum::serve(l, app).with_graceful_shutdown(stopped).await })
    });

    let ready = serde_json::json!({
        "event": "ready",
        "name": config.name,
        "grpc": grpc_local.to_string(),
        "http": http_local.map(|a| a.to_string()),
        "balancer": config.balancer.name(),
        "workers": api.cluster.snapshot().workers.len(),
        "functions": api.function_count(),
        "pid": std::process::id(),
        "auth": auth.requires_token(),
    });
    println!("{ready}");
    tracing::info!(grpc = %grpc_local, http = ?http_local, balancer = config.balancer.name(), "controller serving");

    stop.await;
    tracing::info!("shutting down: finishing in-flight requests");
    stop_servers.send_replace(true);
    grpc.await?.context("gRPC server failed")?;
    if let Some(h) = http {
        h.await?.context("HTTP server failed")?;
    }
    tracing::info!("controller stopped");
    Ok(())
}

/// The check of every gRPC call and HTTP request, and the token sent to workers.
/// Refuses to start when a token file is unusable, or when an API listens off loopback
/// without a token and the config does not say `auth.insecure`.
fn auth(config: &ControllerConfig) -> anyhow::Result<(iluvatar_rpc::auth::ServerAuth, iluvatar_rpc::auth::ClientAuth)> {
    use config::AuthConfig;
    let mut listens = vec![("grpc.address", config.grpc.address.as_str())];
    if config.http.enabled {
        listens.push(("http.address", config.http.address.as_str()));
    }
    let (server, client, exposed) = iluvatar_rpc::auth::configure_service(
        AuthConfig::path(&config.auth.token_file),
        "auth.worker_token_file",
        AuthConfig::path(&config.auth.worker_token_file),
        config.auth.insecure,
        &listens,
    )
    .map_err(anyhow::Error::msg)?;
    if exposed {
        tracing::warn!(?listens, "serving off loopback without authentication (auth.insecure = true)");
    }
    Ok((server, client))
}
