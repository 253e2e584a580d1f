//! The lifecycle through the generated gRPC client.

use iluvatar_rpc as rpc;
use iluvatar_testkit::{
    WorkerProcess, async_req, await_async, invoke_req, register_req, result_json, state_name, timings,
};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn grpc_register_invoke_async_list_status_estimate() {
    let w = WorkerProcess::start(json!({"name": "grpc-worker"}));
    let mut c = w.client().await;

    let pong = c.ping(rpc::PingRequest { message: "Ping".into(), transaction_id: "t".into() }).await.unwrap();
    assert_eq!(pong.into_inner().message, "Pong");

    let r = c.register(register_req("echo", "1", 128, &timings(20, 2))).await.unwrap().into_inner();
    assert_eq!((r.success, r.fqdn.as_str(), r.error.as_str()), (true, "echo-1", ""), "{r:?}");

    // Before any invocation the estimate comes from the registration: cold, 20 ms.
    let est = |fqdns: &[&str]| rpc::EstInvokeRequest {
        fqdns: fqdns.iter().map(|s| s.to_string()).collect(),
        transaction_id: "t".into(),
    };
    let e = c.est_invoke_time(est(&["echo-1", "nope-1"])).await.unwrap().into_inner().est_time;
    assert_eq!(e.len(), 2, "{e:?}");
    assert!((e[0] - 0.020).abs() < 1e-9, "registered cold_dur_ms 20 -> 0.020 s, got {e:?}");
    assert_eq!(e[1], 0.0, "{e:?}");

    let r = c.invoke(invoke_req("echo", "1", r#"{"x": 1}"#)).await.unwrap().into_inner();
    assert!(r.success, "{r:?}\n{}", w.log_context());
    assert_eq!(state_name(&r), "COLD", "{r:?}");
    assert_eq!(r.compute, rpc::compute::CPU);
    let v = result_json(&r);
    assert_eq!(v["body"], json!({"sim": true, "fqdn": "echo-1", "args": {"x": 1}}), "{v}");
    assert_eq!(v["was_cold"], true, "{v}");
    let t = &v["timings"];
    for k in ["queue_us", "acquire_us", "cold_start_us", "container_us", "function_us", "total_us"] {
        assert!(t[k].is_u64(), "timings.{k} missing: {v}");
    }
    assert!(t["cold_start_us"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(t["container_us"].as_u64().unwrap(), r.duration_us, "duration_us is the container round trip: {v}");
    assert!(t["total_us"].as_u64().unwrap() >= t["container_us"].as_u64().unwrap(), "{v}");
    assert!(v["end"].as_f64().unwrap() >= v["start"].as_f64().unwrap(), "{v}");

    let r = c.invoke(invoke_req("echo", "1", r#"{"x": 2}"#)).await.unwrap().into_inner();
    assert!(r.success, "{r:?}");
    assert_eq!(state_name(&r), "WARM", "{r:?}");
    let v = result_json(&r);
    assert_eq!(v["was_cold"], false, "{v}");
    assert_eq!(v["timings"]["cold_start_us"], 0, "{v}");
    assert_eq!(v["body"]["args"], json!({"x": 2}), "{v}");

    // Empty arguments mean {}.
    let r = c.invoke(invoke_req("echo", "1", "")).await.unwrap().into_inner();
    assert!(r.success, "{r:?}");
    assert_eq!(result_json(&r)["body"]["args"], json!({}));

    let a = c.invoke_async(async_req("echo", "1", r#"{"async": true}"#)).await.unwrap().into_inner();
    assert!(a.success && !a.lookup_cookie.is_empty(), "{a:?}");
    let r = await_async(&mut c, &a.lookup_cookie, Duration::from_secs(10)).await;
    assert!(r.success, "{r:?}");
    assert_eq!(state_name(&r), "WARM", "{r:?}");
    assert_eq!(result_json(&r)["body"]["args"], json!({"async": true}));
    let again = c
        .invoke_async_check(rpc::InvokeAsyncLookupRequest {
            lookup_cookie: a.lookup_cookie.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.success, "{again:?}");
    assert_eq!(result_json(&again)["kind"], "unknown_cookie", "{again:?}");

    let list = c.list_registered_funcs(rpc::ListFunctionRequest::default()).await.unwrap().into_inner();
    assert_eq!(list.functions.len(), 1, "{list:?}");
    let f = &list.functions[0];
    assert_eq!(
        (f.function_name.as_str(), f.function_version.as_str(), f.image_name.as_str()),
        ("echo", "1", "docker.io/example/echo:latest")
    );

    let s = c.status(rpc::StatusRequest::default()).await.unwrap().into_inner();
    assert_eq!(s.worker_name, "grpc-worker", "{s:?}");
    assert_eq!((s.num_running_funcs, s.cpu_queue_len), (0, 0), "{s:?}");
    assert!((s.used_mem_pct - 128.0 * 100.0 / 4096.0).abs() < 1e-9, "one idle 128 MB container: {s:?}");
    assert!(s.timestamp > 0, "{s:?}");

    let h = c.health(rpc::HealthRequest::default()).await.unwrap().into_inner();
    assert_eq!(h.status, rpc::RpcHealthStatus::Healthy as i32);

    // Now learnt from the invocations; still non-negative, and 0.0 for the unknown one.
    let e = c.est_invoke_time(est(&["nope-1", "echo-1"])).await.unwrap().into_inner().est_time;
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0], 0.0, "{e:?}");
    assert!(e[1].is_finite() && e[1] >= 0.0, "{e:?}");

    // clean removes idle containers.
    c.clean(rpc::CleanRequest::default()).await.unwrap();
    let r = c.invoke(invoke_req("echo", "1", "{}")).await.unwrap().into_inner();
    assert_eq!(state_name(&r), "COLD", "after clean: {r:?}");
}
