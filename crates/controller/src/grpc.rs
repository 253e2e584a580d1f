//! The gRPC front end: `iluvatar_rpc.IluvatarController` over tonic, a thin adapter on
//! `ControllerApi`.

use crate::api::ControllerApi;
use iluvatar_rpc::iluvatar_controller_server::IluvatarController;

iluvatar_service::grpc_adapter!(GrpcController: IluvatarController for ControllerApi {
    ping(PingRequest) -> PingResponse: sync;
    prewarm(PrewarmRequest) -> PrewarmResponse: async;
    invoke(InvokeRequest) -> InvokeResponse: async;
    invoke_async(InvokeAsyncRequest) -> InvokeAsyncResponse: fallible;
    invoke_async_check(InvokeAsyncLookupRequest) -> InvokeResponse: async;
    register(RegisterRequest) -> RegisterResponse: async;
    register_worker(RegisterWorkerRequest) -> RegisterWorkerResponse: acknowledged;
});
