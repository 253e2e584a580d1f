//! The gRPC front end: `iluvatar_rpc.IluvatarWorker` over tonic, a thin adapter on `WorkerApi`.

use crate::api::WorkerApi;
use iluvatar_rpc::iluvatar_worker_server::IluvatarWorker;

iluvatar_service::grpc_adapter!(GrpcWorker: IluvatarWorker for WorkerApi {
    ping(PingRequest) -> PingResponse: sync;
    prewarm(PrewarmRequest) -> PrewarmResponse: async;
    invoke(InvokeRequest) -> InvokeResponse: async;
    invoke_async(InvokeAsyncRequest) -> InvokeAsyncResponse: fallible;
    invoke_async_check(InvokeAsyncLookupRequest) -> InvokeResponse: sync;
    register(RegisterRequest) -> RegisterResponse: async;
    health(HealthRequest) -> HealthResponse: sync;
    status(StatusRequest) -> StatusResponse: sync;
    clean(CleanRequest) -> CleanResponse: async;
    list_registered_funcs(ListFunctionRequest) -> ListFunctionResponse: sync;
    est_invoke_time(EstInvokeRequest) -> EstInvokeResponse: sync;
});
