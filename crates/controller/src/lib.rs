//! The Ilúvatar controller: worker membership and health, registrations fanned out to every
//! worker, load balancing (its policies are `iluvatar_core::policy::balance`), and
//! invocation forwarding. The binary `iluvatar_controller` parses arguments and calls
//! [`run`]. Its benchmark is the load generator's `controller-bench`.

pub mod api;
pub mod cluster;
pub mod config;
pub mod grpc;
mod health;
pub mod http;
pub mod metrics;
mod register;
pub mod store;

use api::ControllerApi;
use config::ControllerConfig;
use iluvatar_core::Env;
use iluvatar_rpc::iluvatar_cluster_admin_server::IluvatarClusterAdminServer;
use iluvatar_rpc::iluvatar_controller_server::IluvatarControllerServer;
use iluvatar_service::serve::Listeners;
use std::future::Future;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;

/// Runs a controller until `stop` resolves (SIGINT/SIGTERM in the binary). Prints one JSON
/// line `{"event":"ready",...}` on stdout once serving.
pub async fn run(config: ControllerConfig, env: Env, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    // The check of every gRPC call and HTTP request, and the token sent to the workers.
    // Refuses to start when a token file is unusable, or when an API listens off loopback
    // without a token and the config does not say `auth.insecure`.
    let (auth, worker_auth) = iluvatar_rpc::auth::for_service(
        config::AuthConfig::path(&config.auth.token_file),
        "auth.worker_token_file",
        config::AuthConfig::path(&config.auth.worker_token_file),
        config.auth.insecure,
        &config.grpc.address,
        config.http.enabled.then_some(config.http.address.as_str()),
    )
    .map_err(anyhow::Error::msg)?;
    let api = ControllerApi::build(config.clone(), env, worker_auth)?;
    let listeners = Listeners::bind(&config.grpc, &config.http).await?;
    api.spawn_health_checks();

    // Every call passes the token check first (before its message is decoded).
    let service = IluvatarControllerServer::new(grpc::GrpcController(api.clone()))
        .max_decoding_message_size(iluvatar_rpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(iluvatar_rpc::MAX_MESSAGE_BYTES);
    let admin = IluvatarClusterAdminServer::new(grpc::GrpcClusterAdmin(api.clone()));
    let grpc = Routes::new(InterceptedService::new(service, auth.clone()))
        .add_service(InterceptedService::new(admin, auth.clone()));
    let serving = listeners.serve(grpc, http::router(api.clone()), &auth);
    let (grpc_local, http_local) = (serving.grpc_local, serving.http_local);
    serving.announce(
        &config.name,
        serde_json::json!({
            "balancer": config.balancer.name(),
            "workers": api.cluster.snapshot().workers.len(),
            "functions": api.function_count(),
        }),
    );
    tracing::info!(grpc = %grpc_local, http = ?http_local, balancer = config.balancer.name(), "controller serving");

    stop.await;
    tracing::info!("shutting down: finishing in-flight requests");
    serving.stop(None).await?;
    tracing::info!("controller stopped");
    Ok(())
}
