//! How requests reach a target: the one abstraction the replay loop sends through. A live
//! worker is reached over gRPC ([`Grpc`]), a live controller too ([`ControllerGrpc`]);
//! simulated workers are called in process (`simulation::in_process::InProcess`). All take
//! and return the protocol's messages.

use anyhow::{Context, bail};
use iluvatar_rpc as rpc;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::sending::lean::LeanClient;
use crate::sending::target::Plan;

/// The operations of the worker protocol that a load run uses.
pub trait Transport: Clone + Send + Sync + 'static {
    fn register(&self, req: rpc::RegisterRequest)
    -> impl Future<Output = anyhow::Result<rpc::RegisterResponse>> + Send;
    fn prewarm(&self, req: rpc::PrewarmRequest) -> impl Future<Output = anyhow::Result<rpc::PrewarmResponse>> + Send;
    /// An invocation's response, or why none came (a transport error, as text).
    fn invoke(&self, req: rpc::InvokeRequest) -> impl Future<Output = Result<rpc::InvokeResponse, String>> + Send;
}

/// A transport over gRPC connections to one target: registrations and prewarms through one
/// channel of the generated client type, invocations through [`LeanClient`]s (one
/// connection each, spread round robin) on the target's invoke method. The worker's and the
/// controller's services take the same messages, so one definition serves both.
macro_rules! grpc_transport {
    ($(#[$doc:meta])* $name:ident, $client:ty, $invoke:expr) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            client: $client,
            lean: Arc<Vec<LeanClient>>,
            next: Arc<AtomicUsize>,
        }

        impl $name {
            /// `client` for registering and prewarming, `lean` connections for invoking.
            pub fn new(client: $client, lean: Vec<LeanClient>) -> Self {
                assert!(!lean.is_empty(), "at least one connection to invoke through");
                $name { client, lean: Arc::new(lean), next: Arc::new(AtomicUsize::new(0)) }
            }

            fn lean(&self) -> &LeanClient {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                &self.lean[i % self.lean.len()]
            }
        }

        impl Transport for $name {
            async fn register(&self, req: rpc::RegisterRequest) -> anyhow::Result<rpc::RegisterResponse> {
                Ok(self.client.clone().register(req).await?.into_inner())
            }

            async fn prewarm(&self, req: rpc::PrewarmRequest) -> anyhow::Result<rpc::PrewarmResponse> {
                Ok(self.client.clone().prewarm(req).await?.into_inner())
            }

            async fn invoke(&self, req: rpc::InvokeRequest) -> Result<rpc::InvokeResponse, String> {
                self.lean()
                    .unary($invoke, &req)
                    .await
                    .map_err(|s| format!("gRPC error: {} ({})", s.message(), s.code()))
            }
        }
    };
}

grpc_transport!(
    /// gRPC connections to one live worker.
    Grpc,
    rpc::auth::WorkerClient,
    crate::sending::lean::WORKER_INVOKE
);

grpc_transport!(
    /// gRPC channels to a live controller (the `IluvatarController` service). Results carry
    /// the controller's annotations (`"worker"`, `timings.controller_us`,
    /// `timings.worker_rpc_us`).
    ControllerGrpc,
    rpc::auth::ControllerClient,
    crate::sending::lean::CONTROLLER_INVOKE
);

/// Registers every function, then prewarms each plan's containers.
pub async fn register_all(t: &impl Transport, plans: &[Plan]) -> anyhow::Result<()> {
    for p in plans {
        let r = t.register(p.register.clone()).await.context("registering")?;
        if !r.success {
            bail!("registering {}-{}: {}", p.register.function_name, p.register.function_version, r.error);
        }
    }
    for p in plans {
        for i in 0..p.prewarm {
            let r = t
                .prewarm(rpc::PrewarmRequest {
                    function_name: p.register.function_name.clone(),
                    function_version: p.register.function_version.clone(),
                    transaction_id: format!("prewarm-{}-{i}", p.register.function_name),
                    compute: rpc::compute::CPU,
                })
                .await
                .context("prewarming")?;
            if !r.success {
                bail!("prewarming {}: {}", p.register.function_name, r.message);
            }
        }
    }
    Ok(())
}
