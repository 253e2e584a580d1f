//! gRPC front ends as thin adapters: [`grpc_adapter!`](crate::grpc_adapter) implements a
//! tonic service trait on a newtype around the daemon's API, each method handing the
//! request's message to the API's method of the same name.

/// `grpc_adapter!(Adapter: Trait for Api { method(Request) -> Response: kind; ... })`
/// defines `pub struct Adapter(pub Arc<Api>)` and implements `Trait` (a tonic server trait
/// of `iluvatar_rpc`) on it. The kind says how the API's method answers:
/// `sync` (the response), `async` (a future of it), `fallible` (a future of
/// `Result<Response, E: Into<Status>>`), `acknowledged` (a future of `Result<(), E>`; the
/// response is the empty message).
#[macro_export]
macro_rules! grpc_adapter {
    ($adapter:ident: $service:ident for $api:ty { $($method:ident($req:ident) -> $resp:ident: $kind:ident;)* }) => {
        pub struct $adapter(pub ::std::sync::Arc<$api>);

        #[$crate::grpc::reexport::tonic::async_trait]
        impl $service for $adapter {
            $(
                async fn $method(
                    &self,
                    r: $crate::grpc::reexport::tonic::Request<$crate::grpc::reexport::rpc::$req>,
                ) -> ::std::result::Result<
                    $crate::grpc::reexport::tonic::Response<$crate::grpc::reexport::rpc::$resp>,
                    $crate::grpc::reexport::tonic::Status,
                > {
                    let answer = $crate::grpc_adapter!(@answer $kind, self.0.$method(r.into_inner()), $resp);
                    Ok($crate::grpc::reexport::tonic::Response::new(answer))
                }
            )*
        }
    };
    (@answer sync, $call:expr, $resp:ident) => { $call };
    (@answer async, $call:expr, $resp:ident) => { $call.await };
    (@answer fallible, $call:expr, $resp:ident) => { $call.await? };
    (@answer acknowledged, $call:expr, $resp:ident) => {{
        $call.await?;
        $crate::grpc::reexport::rpc::$resp {}
    }};
}

/// What the macro names, so that its users need not.
#[doc(hidden)]
pub mod reexport {
    pub use iluvatar_rpc as rpc;
    pub use tonic;
}
