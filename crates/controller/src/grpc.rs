//! The gRPC front ends: `iluvatar_rpc.IluvatarController` (the public protocol's service)
//! and `iluvatar_rpc.IluvatarClusterAdmin` (this implementation's membership changes) over
//! tonic, thin adapters on `ControllerApi`.

use crate::api::ControllerApi;
use iluvatar_rpc::iluvatar_cluster_admin_server::IluvatarClusterAdmin;
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

iluvatar_service::grpc_adapter!(GrpcClusterAdmin: IluvatarClusterAdmin for ControllerApi {
    deregister_worker(DeregisterWorkerRequest) -> DeregisterWorkerResponse: fallible;
});
