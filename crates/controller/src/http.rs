//! The HTTP/JSON front end (axum): the controller's operations with the protocol's field
//! names, `GET /workers`, `DELETE /workers/{name}`, `GET /functions`, and `/metrics` in the
//! Prometheus text format. As the worker's: failures are HTTP statuses chosen by their kind
//! (`iluvatar_service::http::status_of`), request bodies refuse unknown fields by name, and
//! `json_args` may be a JSON object.

use crate::api::ControllerApi;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use iluvatar_rpc as rpc;
use iluvatar_service::http::{JsonBody, failed_response, failure, invocation, json_fallbacks};
use std::sync::Arc;

type Api = State<Arc<ControllerApi>>;

/// Every route, for the answer to a path that is none of them.
const ROUTES: &str = "GET /ping, POST /register, POST /invoke, POST /invoke_async, GET /invoke_async/{cookie}, \
                      POST /prewarm, POST /register_worker, GET /workers, DELETE /workers/{name}, GET /functions, \
                      GET /metrics";

/// A gRPC status as an HTTP failure; `missing` and `invalid` are the kinds of `NotFound`
/// and `InvalidArgument` for the route.
fn status_error(s: tonic::Status, missing: &str, invalid: &str) -> Response {
    let kind = match s.code() {
        tonic::Code::NotFound => missing,
        tonic::Code::InvalidArgument => invalid,
        tonic::Code::AlreadyExists => "conflict",
        tonic::Code::ResourceExhausted => "too_many_async",
        tonic::Code::Unavailable => "unavailable",
        _ => "internal",
    };
    failure(kind, s.message())
}

pub fn router(api: Arc<ControllerApi>) -> Router {
    let routes = Router::new()
        .route("/ping", get(|State(a): Api| async move { Json(a.ping(Default::default())) }))
        .route("/register", post(register))
        .route("/invoke", post(|State(a): Api, JsonBody(r)| async move { invocation(a.invoke(r).await) }))
        .route(
            "/invoke_async",
            post(|State(a): Api, JsonBody(r)| async move {
                match a.invoke_async(r).await {
                    Ok(r) => Json(r).into_response(),
                    Err(s) => status_error(s, "not_registered", "bad_arguments"),
                }
            }),
        )
        .route(
            "/invoke_async/{cookie}",
            get(|State(a): Api, Path(lookup_cookie): Path<String>| async move {
                let check = rpc::InvokeAsyncLookupRequest { lookup_cookie, ..Default::default() };
                invocation(a.invoke_async_check(check).await)
            }),
        )
        .route("/prewarm", post(prewarm))
        .route(
            "/register_worker",
            post(|State(a): Api, JsonBody(r)| async move {
                match a.register_worker(r).await {
                    Ok(()) => Json(rpc::RegisterWorkerResponse {}).into_response(),
                    Err(s) => status_error(s, "not_found", "bad_request"),
                }
            }),
        )
        .route("/workers", get(|State(a): Api| async move { Json(a.workers_json()) }))
        .route(
            "/workers/{name}",
            axum::routing::delete(|State(a): Api, Path(name): Path<String>| async move {
                match a.deregister_worker(rpc::DeregisterWorkerRequest { name, ..Default::default() }).await {
                    Ok(r) => Json(r).into_response(),
                    Err(s) => status_error(s, "unknown_worker", "bad_request"),
                }
            }),
        )
        .route("/functions", get(|State(a): Api| async move { Json(a.functions_json()) }))
        .route(
            "/metrics",
            get(|State(a): Api| async move {
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], a.metrics_text())
            }),
        );
    json_fallbacks(routes, "controller", ROUTES)
        // A body may carry one payload, escaped inside JSON (at most twice its size).
        .layer(axum::extract::DefaultBodyLimit::max(2 * iluvatar_rpc::MAX_MESSAGE_BYTES))
        .with_state(api)
}

async fn register(State(a): Api, JsonBody(r): JsonBody<rpc::RegisterRequest>) -> Response {
    match a.register_outcome(r).await {
        (r, _) if r.success => Json(r).into_response(),
        (r, kind) => failed_response(kind, &r.error.clone(), &r),
    }
}

async fn prewarm(State(a): Api, JsonBody(r): JsonBody<rpc::PrewarmRequest>) -> Response {
    match a.prewarm_outcome(r).await {
        (r, _) if r.success => Json(r).into_response(),
        (r, kind) => failed_response(kind, &r.message.clone(), &r),
    }
}
