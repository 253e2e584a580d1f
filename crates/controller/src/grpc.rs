//! The gRPC front end: `iluvatar_rpc.IluvatarController` over tonic, a thin adapter on
//! `ControllerApi`.

use crate::api::ControllerApi;
use iluvatar_rpc as rpc;
use iluvatar_rpc::iluvatar_controller_server::IluvatarController;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct GrpcController(pub Arc<ControllerApi>);

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl IluvatarController for GrpcController {
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
        Ok(Response::new(self.0.invoke_async_check(r.into_inner()).await))
    }
    async fn register(&self, r: Request<rpc::RegisterRequest>) -> Reply<rpc::RegisterResponse> {
        Ok(Response::new(self.0.register(r.into_inner()).await))
    }
    async fn register_worker(&self, r: Request<rpc::RegisterWorkerRequest>) -> Reply<rpc::RegisterWorkerResponse> {
        self.0.register_worker(r.into_inner()).await?;
        Ok(Response::new(rpc::RegisterWorkerResponse {}))
    }
}
