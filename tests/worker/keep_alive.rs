//! Idle containers are removed after their keep-alive.

use iluvatar_testkit::{WorkerProcess, invoke_req, register_req, state_name, timings};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn idle_container_expires_after_ttl() {
    let w = WorkerProcess::start(
        json!({"container_pool": {"keep_alive": {"type": "fixed", "ttl_ms": 100}, "reap_interval_ms": 20}}),
    );
    let mut c = w.client().await;
    assert!(c.register(register_req("ka", "1", 64, &timings(10, 0))).await.unwrap().into_inner().success);

    let r = c.invoke(invoke_req("ka", "1", "{}")).await.unwrap().into_inner();
    assert_eq!(state_name(&r), "COLD", "{r:?}");
    let r = c.invoke(invoke_req("ka", "1", "{}")).await.unwrap().into_inner();
    assert_eq!(state_name(&r), "WARM", "right after the first, within the 100 ms keep-alive: {r:?}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.metric("iluvatar_keep_alive_expirations_total"), 1.0);
    assert_eq!(w.metric("iluvatar_containers{state=\"idle\"}"), 0.0);
    assert_eq!(w.metric("iluvatar_memory_used_mb"), 0.0);
    let r = c.invoke(invoke_req("ka", "1", "{}")).await.unwrap().into_inner();
    assert!(r.success, "{r:?}");
    assert_eq!(state_name(&r), "COLD", "the container expired: {r:?}");
    assert_eq!(w.metric("iluvatar_cold_starts_total"), 2.0);
}
