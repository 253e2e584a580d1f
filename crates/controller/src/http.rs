//! The HTTP/JSON front end (axum): the controller's operations with the protocol's field
//! names, `GET /workers`, `GET /functions`, and `/metrics` in the Prometheus text format.

use crate::api::ControllerApi;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use iluvatar_rpc as rpc;
use std::sync::Arc;

type Api = State<Arc<ControllerApi>>;

fn status_error(s: tonic::Status) -> Response {
    let code = match s.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::AlreadyExists => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(serde_json::json!({"error": s.message()}))).into_response()
}

pub fn router(api: Arc<ControllerApi>) -> Router {
    Router::new()
        .route("/ping", get(|State(a): Api| async move { Json(a.ping(Default::default())) }))
        .route(
            "/register",
            post(|State(a): Api, Json(r): Json<rpc::RegisterRequest>| async move { Json(a.register(r).await) }),
        )
        .route(
            "/invoke",
            post(|State(a): Api, Json(r): Json<rpc::InvokeRequest>| async move { Json(a.invoke(r).await) }),
        )
        .route(
            "/invoke_async",
            post(|State(a): Api, Json(r): Json<rpc::InvokeAsyncRequest>| async move {
                a.invoke_async(r).await.map(Json).map_err(status_error)
            }),
        )
        .route(
            "/invoke_async/{cookie}",
            get(|State(a): Api, Path(lookup_cookie): Path<String>| async move {
                Json(a.invoke_async_check(rpc::InvokeAsyncLookupRequest { lookup_cookie, ..Default::default() }).await)
            }),
        )
        .route(
            "/prewarm",
            post(|State(a): Api, Json(r): Json<rpc::PrewarmRequest>| async move { Json(a.prewarm(r).await) }),
        )
        .route(
            "/register_worker",
            post(|State(a): Api, Json(r): Json<rpc::RegisterWorkerRequest>| async move {
                a.register_worker(r).await.map(|_| Json(rpc::RegisterWorkerResponse {})).map_err(status_error)
            }),
        )
        .route("/workers", get(|State(a): Api| async move { Json(a.workers_json()) }))
        .route("/functions", get(|State(a): Api| async move { Json(a.functions_json()) }))
        .route(
            "/metrics",
            get(|State(a): Api| async move {
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], a.metrics_text())
            }),
        )
        // A body may carry one payload, escaped inside JSON (at most twice its size).
        .layer(axum::extract::DefaultBodyLimit::max(2 * iluvatar_rpc::MAX_MESSAGE_BYTES))
        .with_state(api)
}
