//! The HTTP/JSON front end (axum): the same operations as gRPC with the same message
//! fields as JSON (enums as their numbers), plus `/metrics` in the Prometheus text format.

use crate::api::{ApiError, WorkerApi};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use iluvatar_rpc as rpc;
use std::sync::Arc;

type Api = State<Arc<WorkerApi>>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::ResourceExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
        };
        (code, Json(serde_json::json!({"error": self.to_string()}))).into_response()
    }
}

pub fn router(api: Arc<WorkerApi>) -> Router {
    Router::new()
        .route("/ping", get(|State(a): Api| async move { Json(a.ping(Default::default())) }))
        .route("/register", post(|State(a): Api, Json(r): Json<rpc::RegisterRequest>| async move { Json(a.register(r).await) }))
        .route("/invoke", post(|State(a): Api, Json(r): Json<rpc::InvokeRequest>| async move { Json(a.invoke(r).await) }))
        .route(
            "/invoke_async",
            post(|State(a): Api, Json(r): Json<rpc::InvokeAsyncRequest>| async move { a.invoke_async(r).await.map(Json) }),
        )
        .route(
            "/invoke_async/{cookie}",
            get(|State(a): Api, Path(lookup_cookie): Path<String>| async move {
                Json(a.invoke_async_check(rpc::InvokeAsyncLookupRequest { lookup_cookie, ..Default::default() }))
            }),
        )
        .route("/prewarm", post(|State(a): Api, Json(r): Json<rpc::PrewarmRequest>| async move { Json(a.prewarm(r).await) }))
        .route("/status", get(|State(a): Api| async move { Json(a.status(Default::default())) }))
        .route("/health", get(|State(a): Api| async move { Json(a.health(Default::default())) }))
        .route("/functions", get(|State(a): Api| async move { Json(a.list_registered_funcs(Default::default())) }))
        .route("/functions/characteristics", get(|State(a): Api| async move { Json(a.characteristics()) }))
        .route("/clean", post(|State(a): Api| async move { Json(a.clean(Default::default()).await) }))
        .route(
            "/est_invoke_time",
            post(|State(a): Api, Json(r): Json<rpc::EstInvokeRequest>| async move { Json(a.est_invoke_time(r)) }),
        )
        .route(
            "/metrics",
            get(|State(a): Api| async move {
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], a.metrics_text())
            }),
        )
        // A body may carry one payload, escaped inside JSON (at most twice its size).
        .layer(axum::extract::DefaultBodyLimit::max(2 * rpc::MAX_MESSAGE_BYTES))
        .with_state(api)
}
