//! The gRPC front end: `iluvatar_rpc.IluvatarWorker` over tonic, a thin adapter on `WorkerApi`.

use crate::api::WorkerApi;
use iluvatar_rpc as rpc;
use iluvatar_rpc::iluvatar_worker_server::IluvatarWorker;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct GrpcWorker(pub Arc<WorkerApi>);

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl IluvatarWorker for GrpcWorker {
    async fn ping(&self, r: Request<rpc::PingRequest>) -> Reply<rpc::PingResponse> {
        Ok(Response::new(self.0.ping(r.into_inner())))
    }
    async fn prewarm(&self, r: Request<rpc::PrewarmRequest>) -> Reply<rpc::PrewarmResponse> {
        Ok(Response::new(self.0.prewarm(r.into_inner()).await))
    }
    async fn invoke(&self, r: Request<rpc::InvokeRequest>) -> Reply<rpc::InvokeResponse> {
        Ok(Response::new(self.0.invoke(r.into_inner()).await))
    }
    async fn invoke_async(&self, r: Request<rpc::InvokeAsyncRequest>) -> Reply<rpc::InvokeAsyncResponse> {
        Ok(Response::new(self.0.invoke_async(r.into_inner()).await?))
    }
    async fn invoke_async_check(&self, r: Request<rpc::InvokeAsyncLookupRequest>) -> Reply<rpc::InvokeResponse> {
        Ok(Response::new(self.0.invoke_async_check(r.into_inner())))
    }
    async fn register(&self, r: Request<rpc::RegisterRequest>) -> Reply<rpc::RegisterResponse> {
        Ok(Response::new(self.0.register(r.into_inner()).await))
    }
    async fn health(&self, r: Request<rpc::HealthRequest>) -> Reply<rpc::HealthResponse> {
        Ok(Response::new(self.0.health(r.into_inner())))
    }
    async fn status(&self, r: Request<rpc::StatusRequest>) -> Reply<rpc::StatusResponse> {
        Ok(Response::new(self.0.status(r.into_inner())))
    }
    async fn clean(&self, r: Request<rpc::CleanRequest>) -> Reply<rpc::CleanResponse> {
        Ok(Response::new(self.0.clean(r.into_inner()).await))
    }
    async fn list_registered_funcs(&self, r: Request<rpc::ListFunctionRequest>) -> Reply<rpc::ListFunctionResponse> {
        Ok(Response::new(self.0.list_registered_funcs(r.into_inner())))
    }
    async fn est_invoke_time(&self, r: Request<rpc::EstInvokeRequest>) -> Reply<rpc::EstInvokeResponse> {
        Ok(Response::new(self.0.est_invoke_time(r.into_inner())))
    }
}
