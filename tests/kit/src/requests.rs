//! gRPC requests as the tests send them, reading answers, and polling the worker API.

use crate::worker::Client;
use crate::{POLL, steps};
use iluvatar_rpc as rpc;
use serde_json::{Value, json};
use std::time::Duration;

/// A registration as the CLI would send it, for the sim backend's default isolation.
pub fn register_req(name: &str, version: &str, memory_mb: i64, timings: &str) -> rpc::RegisterRequest {
    rpc::RegisterRequest {
        function_name: name.into(),
        function_version: version.into(),
        image_name: format!("docker.io/example/{name}:latest"),
        memory: memory_mb,
        cpus: 1,
        parallel_invokes: 1,
        transaction_id: format!("e2e-register-{name}"),
        language: rpc::LanguageRuntime::Python3 as i32,
        compute: rpc::compute::CPU,
        isolate: 0,
        container_server: 1,
        resource_timings_json: timings.into(),
        system_function: false,
    }
}

/// `{"cold_dur_ms": cold, "warm_dur_ms": warm}`.
pub fn timings(cold_ms: u64, warm_ms: u64) -> String {
    json!({"cold_dur_ms": cold_ms, "warm_dur_ms": warm_ms}).to_string()
}

pub fn invoke_req(name: &str, version: &str, json_args: &str) -> rpc::InvokeRequest {
    rpc::InvokeRequest {
        function_name: name.into(),
        function_version: version.into(),
        json_args: json_args.into(),
        transaction_id: format!("e2e-invoke-{name}"),
    }
}

pub fn async_req(name: &str, version: &str, json_args: &str) -> rpc::InvokeAsyncRequest {
    rpc::InvokeAsyncRequest {
        function_name: name.into(),
        function_version: version.into(),
        json_args: json_args.into(),
        transaction_id: format!("e2e-async-{name}"),
    }
}

/// `json_result` of an invocation, parsed.
pub fn result_json(r: &rpc::InvokeResponse) -> Value {
    serde_json::from_str(&r.json_result).unwrap_or_else(|e| panic!("json_result is not JSON ({e}): {r:?}"))
}

/// The name of a response's container state.
pub fn state_name(r: &rpc::InvokeResponse) -> &'static str {
    rpc::ContainerState::try_from(r.container_state).map(|s| s.as_str_name()).unwrap_or("UNKNOWN")
}

/// Whether an async check answered "still running".
pub fn is_pending(r: &rpc::InvokeResponse) -> bool {
    serde_json::from_str::<Value>(&r.json_result).ok().is_some_and(|v| v.get("Pending").is_some())
}

/// Polls `invoke_async_check` until the invocation is no longer pending; panics after
/// `timeout`.
pub async fn await_async(c: &mut Client, cookie: &str, timeout: Duration) -> rpc::InvokeResponse {
    for _ in 0..steps(timeout) {
        let req = rpc::InvokeAsyncLookupRequest { lookup_cookie: cookie.into(), transaction_id: "e2e-check".into() };
        let r = c.invoke_async_check(req).await.expect("invoke_async_check RPC").into_inner();
        if !is_pending(&r) {
            return r;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("async invocation {cookie} still pending after {timeout:?}")
}

/// Polls `status` until `pred` holds; panics after `timeout`.
pub async fn await_status(
    c: &mut Client,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&rpc::StatusResponse) -> bool,
) -> rpc::StatusResponse {
    let mut last = None;
    for _ in 0..steps(timeout) {
        let s = c.status(rpc::StatusRequest::default()).await.expect("status RPC").into_inner();
        if pred(&s) {
            return s;
        }
        last = Some(s);
        tokio::time::sleep(POLL).await;
    }
    panic!("status did not show {what} within {timeout:?}; last: {last:?}")
}
