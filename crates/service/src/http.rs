//! What every HTTP/JSON front end shares: the token check in front of all its routes, JSON
//! bodies read with errors that name the field, failures as `{"error", "kind"}` with the
//! status of their kind, and JSON answers where no route matches.

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use iluvatar_rpc::auth::{Refusal, ServerAuth};

/// `router` with every request (`/metrics` and unknown paths included) checked against
/// `auth`: a missing or wrong token answers 401 with a JSON error naming the problem.
pub fn require_token(router: Router, auth: ServerAuth) -> Router {
    if !auth.requires_token() {
        return router;
    }
    router.layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
        let checked = auth.check(req.headers().get(axum::http::header::AUTHORIZATION).map(|v| v.as_bytes()));
        async move {
            match checked {
                Ok(()) => next.run(req).await,
                Err(why) => unauthorized(why),
            }
        }
    }))
}

/// 401 with `WWW-Authenticate: Bearer` and `{"error": ..., "kind": "unauthenticated"}`.
pub fn unauthorized(why: Refusal) -> Response {
    let challenge = [(axum::http::header::WWW_AUTHENTICATE, "Bearer realm=\"iluvatar\"")];
    let body = serde_json::json!({"error": why.to_string(), "kind": "unauthenticated"});
    (StatusCode::UNAUTHORIZED, challenge, Json(body)).into_response()
}

/// The HTTP status of a failure `kind`, the stable snake_case name the APIs give every
/// failure (in `json_result`'s `kind` for invocations, beside `error` elsewhere): the same
/// kinds as over gRPC, each in a class a client can act on.
pub fn status_of(kind: &str) -> StatusCode {
    match kind {
        "bad_request" | "bad_arguments" => StatusCode::BAD_REQUEST,
        "not_found" | "not_registered" | "unknown_cookie" | "unknown_worker" => StatusCode::NOT_FOUND,
        "conflict" => StatusCode::CONFLICT,
        "too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "unsupported_media_type" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "refused" => StatusCode::UNPROCESSABLE_ENTITY,
        "queue_full" | "too_many_async" => StatusCode::TOO_MANY_REQUESTS,
        // The function (or its container) failed, not the platform in front of it.
        "function_error" | "out_of_memory" | "container_failed" | "cold_start_failed" | "prewarm_failed"
        | "worker_failed" => StatusCode::BAD_GATEWAY,
        "no_memory" | "shutting_down" | "no_worker" | "unavailable" | "unhealthy" => StatusCode::SERVICE_UNAVAILABLE,
        "timeout" => StatusCode::GATEWAY_TIMEOUT,
        "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A failure: `{"error": message, "kind": kind}` with the kind's status.
pub fn failure(kind: &str, message: &str) -> Response {
    (status_of(kind), Json(serde_json::json!({"error": message, "kind": kind}))).into_response()
}

/// A protocol response that reports a failure in-band (`success: false`): its own fields,
/// plus `error` and `kind` when they are not among them, with the kind's status.
pub fn failed_response(kind: &str, message: &str, response: &impl serde::Serialize) -> Response {
    let json = |v: &str| serde_json::Value::from(v).to_string();
    // Appended to the protocol's fields, which keep their order.
    let mut body = serde_json::to_string(response).unwrap_or_else(|_| "{}".into());
    let has_error = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&body)
        .is_ok_and(|fields| fields.contains_key("error"));
    body.pop();
    if body.len() > 1 {
        body.push(',');
    }
    if !has_error {
        body.push_str(&format!("\"error\":{},", json(message)));
    }
    body.push_str(&format!("\"kind\":{}}}", json(kind)));
    let content_type = [(axum::http::header::CONTENT_TYPE, "application/json")];
    (status_of(kind), content_type, body).into_response()
}

/// An invocation's answer: 200 with the protocol's response when it succeeded; else the
/// status of its kind (from `json_result`), with `error` and `kind` beside the protocol's
/// fields; 202 for an async invocation still running.
pub fn invocation(r: iluvatar_rpc::InvokeResponse) -> Response {
    if r.success {
        return Json(r).into_response();
    }
    let view = iluvatar_rpc::json_result::parse(&r.json_result).unwrap_or_default();
    if view.pending.is_some() {
        return (StatusCode::ACCEPTED, Json(r)).into_response();
    }
    let kind = view.kind.as_deref().unwrap_or("internal");
    failed_response(kind, view.error.as_deref().unwrap_or("the invocation failed"), &r)
}

/// A request body read as JSON into `T` (a protocol request). Refusals are JSON failures
/// that name the problem: a field that does not exist, the field whose value has the wrong
/// type, malformed JSON, a missing `Content-Type: application/json` (required, so that a
/// web page cannot post to the API without the browser asking first), a body too large.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(failure(
                "unsupported_media_type",
                "the body must be JSON sent with the header Content-Type: application/json \
                 (curl: --json BODY, or -H 'content-type: application/json' -d BODY)",
            ));
        }
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(failure("too_large", &format!("the request body is too large: {}", e.body_text())));
            }
            Err(e) => return Err(failure("bad_request", &format!("cannot read the request body: {}", e.body_text()))),
        };
        parse_body(&bytes).map(JsonBody).map_err(|why| failure("bad_request", &why))
    }
}

/// `T` from a JSON body, or what is wrong with it, naming the field where there is one.
pub fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || inner.is_eof() || inner.is_syntax() || inner.to_string().starts_with("unknown field") {
            format!("the body is not the JSON expected: {inner}")
        } else {
            format!("field {path}: {inner}")
        }
    })?;
    de.end().map_err(|e| format!("the body is not the JSON expected: {e}"))?;
    Ok(value)
}

/// Answers what no route serves with a JSON failure instead of an empty body: an unknown
/// path (404, naming the service's routes), a known path with another method (405), and a
/// gRPC call sent to the HTTP port (a gRPC status saying so, which gRPC clients show).
pub fn json_fallbacks<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    service: &'static str,
    routes: &'static str,
) -> Router<S> {
    router
        .fallback(move |req: axum::extract::Request| async move {
            if is_grpc(&req) {
                return grpc_on_http_port(service);
            }
            let message = format!("{service} has no route {} {}; its routes: {routes}", req.method(), req.uri().path());
            failure("not_found", &message)
        })
        .method_not_allowed_fallback(move |req: axum::extract::Request| async move {
            if is_grpc(&req) {
                return grpc_on_http_port(service);
            }
            let message = format!("{} does not take {}; its routes: {routes}", req.uri().path(), req.method());
            failure("method_not_allowed", &message)
        })
}

fn is_grpc(req: &axum::extract::Request) -> bool {
    req.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A gRPC answer (status UNIMPLEMENTED, in the headers) to a gRPC call on the HTTP port.
fn grpc_on_http_port(service: &str) -> Response {
    let message = format!(
        "this is the HTTP/JSON port of the {service}, not its gRPC port (grpc.port in its config; its ready line \
         prints both)"
    );
    // grpc-message is percent-encoded: keep to characters that need no escaping.
    let encoded: String = message
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b".-_~/(),;:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let headers = [
        (axum::http::header::CONTENT_TYPE, "application/grpc".to_string()),
        (axum::http::HeaderName::from_static("grpc-status"), "12".to_string()),
        (axum::http::HeaderName::from_static("grpc-message"), encoded),
    ];
    (StatusCode::OK, headers).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(r: Response) -> (StatusCode, String) {
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[test]
    fn bodies_are_refused_naming_the_field_or_the_problem() {
        let e = parse_body::<iluvatar_rpc::InvokeRequest>(br#"{"function_nmae": "f"}"#).unwrap_err();
        assert!(e.starts_with("the body is not the JSON expected: unknown field `function_nmae`"), "{e}");
        let e = parse_body::<iluvatar_rpc::RegisterRequest>(br#"{"memory": "lots"}"#).unwrap_err();
        assert!(e.starts_with("field memory: invalid type: string \"lots\", expected i64"), "{e}");
        let e = parse_body::<iluvatar_rpc::RegisterRequest>(br#"{"memory": 1} trailing"#).unwrap_err();
        assert!(e.contains("trailing characters"), "{e}");
        let e = parse_body::<iluvatar_rpc::RegisterRequest>(b"").unwrap_err();
        assert!(e.contains("EOF"), "{e}");
        let r = parse_body::<iluvatar_rpc::InvokeRequest>(br#"{"function_name": "f", "json_args": {"a": 1}}"#);
        assert_eq!(r.unwrap().json_args, r#"{"a": 1}"#);
    }

    #[tokio::test]
    async fn failures_keep_the_protocol_fields_and_add_error_and_kind() {
        let r = iluvatar_rpc::PrewarmResponse { success: false, message: "no \"memory\"".into() };
        let (status, body) = body_of(failed_response("no_memory", "no \"memory\"", &r)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, r#"{"success":false,"message":"no \"memory\"","error":"no \"memory\"","kind":"no_memory"}"#);
        // A response with its own error field keeps it, once.
        let r = iluvatar_rpc::RegisterResponse { success: false, fqdn: String::new(), error: "taken".into() };
        let (status, body) = body_of(failed_response("conflict", "taken", &r)).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body, r#"{"success":false,"fqdn":"","error":"taken","kind":"conflict"}"#);
        let (status, body) = body_of(failure("bad_request", "x")).await;
        assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, r#"{"error":"x","kind":"bad_request"}"#));
    }

    #[tokio::test]
    async fn invocations_answer_the_status_of_their_kind() {
        let answer = |json_result: String, success: bool| iluvatar_rpc::InvokeResponse {
            json_result,
            success,
            ..Default::default()
        };
        let json_result = iluvatar_rpc::json_result::error;
        for (kind, status) in [
            ("bad_arguments", 400),
            ("not_registered", 404),
            ("unknown_cookie", 404),
            ("queue_full", 429),
            ("function_error", 502),
            ("worker_failed", 502),
            ("no_memory", 503),
            ("no_worker", 503),
            ("timeout", 504),
            ("something_new", 500),
        ] {
            let (got, body) = body_of(invocation(answer(json_result(kind, "m", None, None), false))).await;
            assert_eq!(got.as_u16(), status, "{kind}: {body}");
            assert!(body.ends_with(&format!(r#""error":"m","kind":"{kind}"}}"#)), "{body}");
        }
        let pending = iluvatar_rpc::json_result::pending("running");
        assert_eq!(invocation(answer(pending, false)).status(), StatusCode::ACCEPTED);
        assert_eq!(invocation(answer("{}".into(), true)).status(), StatusCode::OK);
    }
}
