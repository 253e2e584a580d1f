//! The HTTP/JSON front end (axum): the same operations as gRPC with the same message
//! fields as JSON (enums as their numbers), plus `/metrics` in the Prometheus text format.
//! Unlike gRPC, failures are HTTP statuses: each failure's kind (the one gRPC answers carry
//! in-band) picks the status (`iluvatar_service::http::status_of`), and the body keeps the
//! protocol's fields with `error` and `kind` added. Request bodies are the protocol's
//! messages, unknown fields refused by name; `json_args` may be a JSON object.

use crate::api::{ApiError, WorkerApi};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use iluvatar_rpc as rpc;
use iluvatar_service::http::{JsonBody, failed_response, failure, invocation, json_fallbacks};
use std::sync::Arc;

type Api = State<Arc<WorkerApi>>;

/// Every route, for the answer to a path that is none of them.
const ROUTES: &str = "GET /ping, POST /register, POST /invoke, POST /invoke_async, GET /invoke_async/{cookie}, \
                      POST /prewarm, GET /status, GET /health, GET /functions, GET /functions/characteristics, \
                      POST /clean, POST /est_invoke_time, GET /metrics";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        failure(self.kind(), &self.to_string())
    }
}

pub fn router(api: Arc<WorkerApi>) -> Router {
    let routes = Router::new()
        .route("/ping", get(|State(a): Api| async move { Json(a.ping(Default::default())) }))
        .route("/register", post(register))
        .route("/invoke", post(|State(a): Api, JsonBody(r)| async move { invocation(a.invoke(r).await) }))
        .route("/invoke_async", post(|State(a): Api, JsonBody(r)| async move { a.invoke_async(r).await.map(Json) }))
        .route(
            "/invoke_async/{cookie}",
            get(|State(a): Api, Path(lookup_cookie): Path<String>| async move {
                invocation(a.invoke_async_check(rpc::InvokeAsyncLookupRequest { lookup_cookie, ..Default::default() }))
            }),
        )
        .route("/prewarm", post(prewarm))
        .route("/status", get(|State(a): Api| async move { Json(a.status(Default::default())) }))
        .route("/health", get(health))
        .route("/functions", get(|State(a): Api| async move { Json(a.list_registered_funcs(Default::default())) }))
        .route("/functions/characteristics", get(|State(a): Api| async move { Json(a.characteristics()) }))
        .route("/clean", post(|State(a): Api| async move { Json(a.clean(Default::default()).await) }))
        .route("/est_invoke_time", post(|State(a): Api, JsonBody(r)| async move { Json(a.est_invoke_time(r)) }))
        .route(
            "/metrics",
            get(|State(a): Api| async move {
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], a.metrics_text())
            }),
        );
    json_fallbacks(routes, "worker", ROUTES)
        // A body may carry one payload, escaped inside JSON (at most twice its size).
        .layer(axum::extract::DefaultBodyLimit::max(2 * rpc::MAX_MESSAGE_BYTES))
        .with_state(api)
}

async fn register(State(a): Api, JsonBody(r): JsonBody<rpc::RegisterRequest>) -> Response {
    match a.register_outcome(r).await {
        Ok(fqdn) => Json(rpc::RegisterResponse { success: true, fqdn, error: String::new() }).into_response(),
        Err(e) => {
            let error = e.to_string();
            let r = rpc::RegisterResponse { success: false, fqdn: String::new(), error: error.clone() };
            failed_response(e.kind(), &error, &r)
        }
    }
}

async fn prewarm(State(a): Api, JsonBody(r): JsonBody<rpc::PrewarmRequest>) -> Response {
    match a.prewarm_outcome(r).await {
        Ok(message) => Json(rpc::PrewarmResponse { success: true, message }).into_response(),
        Err((kind, message)) => {
            let r = rpc::PrewarmResponse { success: false, message: message.clone() };
            failed_response(kind, &message, &r)
        }
    }
}

/// 200 when healthy, 503 when not (shutting down), with the protocol's answer either way.
async fn health(State(a): Api) -> Response {
    let h = a.health(Default::default());
    if h.status == rpc::RpcHealthStatus::Healthy as i32 {
        Json(h).into_response()
    } else {
        failed_response("unhealthy", "the worker is shutting down", &h)
    }
}
