//! What every HTTP/JSON front end shares: the token check in front of all its routes.

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

/// 401 with `WWW-Authenticate: Bearer` and `{"error": ...}`.
pub fn unauthorized(why: Refusal) -> Response {
    let challenge = [(axum::http::header::WWW_AUTHENTICATE, "Bearer realm=\"iluvatar\"")];
    (StatusCode::UNAUTHORIZED, challenge, Json(serde_json::json!({"error": why.to_string()}))).into_response()
}
