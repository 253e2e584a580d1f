//! The memory pool: eviction of idle containers, and a clear no_memory error when a
//! running container holds the memory past memory_wait_ms.

use iluvatar_testkit::{
    WorkerProcess, async_req, await_async, invoke_req, register_req, result_json, state_name, timings,
};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_then_no_memory_while_a_long_invocation_holds_the_pool() {
    let w = WorkerProcess::start(json!({"container_pool": {"memory_mb": 256}, "invoker": {"memory_wait_ms": 300}}));
    let mut c = w.client().await;
    for (name, t) in [("a", timings(10, 0)), ("b", timings(10, 0)), ("c", timings(2000, 2000))] {
        let r = c.register(register_req(name, "1", 200, &t)).await.unwrap().into_inner();
        assert!(r.success, "{r:?}");
    }

    let r = c.invoke(invoke_req("a", "1", "{}")).await.unwrap().into_inner();
    assert!(r.success && state_name(&r) == "COLD", "{r:?}");
    assert_eq!(w.metric("iluvatar_memory_used_mb"), 200.0);
    assert_eq!(w.metric("iluvatar_evictions_total"), 0.0);

    // B needs 200 MB of 256 with A idle on 200: A is evicted.
    let r = c.invoke(invoke_req("b", "1", "{}")).await.unwrap().into_inner();
    assert!(r.success && state_name(&r) == "COLD", "{r:?}\n{}", w.log_context());
    assert_eq!(w.metric("iluvatar_evictions_total"), 1.0);
    assert_eq!(w.metric("iluvatar_memory_used_mb"), 200.0);
    assert_eq!(w.metric("iluvatar_containers{state=\"idle\"}"), 1.0);

    // C runs for 2 s; it evicts the idle B and holds 200 MB while it runs.
    let a = c.invoke_async(async_req("c", "1", r#"{"long": true}"#)).await.unwrap().into_inner();
    w.wait_metric("iluvatar_containers{state=\"busy\"}", 1.0, Duration::from_secs(5));
    assert_eq!(w.metric("iluvatar_containers{state=\"idle\"}"), 0.0);
    assert_eq!(w.metric("iluvatar_memory_used_mb"), 200.0);
    assert_eq!(w.metric("iluvatar_evictions_total"), 2.0);

    // Nothing idle to evict: B waits memory_wait_ms, then fails with no_memory.
    let r = c.invoke(invoke_req("b", "1", "{}")).await.unwrap().into_inner();
    assert!(!r.success, "B cannot fit while C runs: {r:?}");
    let v = result_json(&r);
    assert_eq!(v["kind"], "no_memory", "{v}");
    let msg = v["Error"].as_str().unwrap_or_default();
    assert!(msg.contains("not enough memory") && msg.contains("b-1"), "{v}");
    assert!(msg.contains("needs 200 MB") && msg.contains("56 of 256 MB are free"), "{v}");
    assert_eq!(state_name(&r), "ERROR");
    assert_eq!(w.metric("iluvatar_invocations_total{outcome=\"error\"}"), 1.0);

    // C finishes; its container goes idle and is evicted for B.
    let done = await_async(&mut c, &a.lookup_cookie, Duration::from_secs(15)).await;
    assert!(done.success && state_name(&done) == "COLD", "{done:?}");
    let r = c.invoke(invoke_req("b", "1", "{}")).await.unwrap().into_inner();
    assert!(r.success && state_name(&r) == "COLD", "{r:?}\n{}", w.log_context());
    assert_eq!(w.metric("iluvatar_evictions_total"), 3.0);
    assert_eq!(w.metric("iluvatar_memory_used_mb"), 200.0);
}
