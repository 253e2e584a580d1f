//! The concurrency limit queues invocations.

use iluvatar_testkit::{WorkerProcess, await_status, invoke_req, register_req, result_json, state_name, timings};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_one_queues_the_rest() {
    let w = WorkerProcess::start(json!({"invoker": {"concurrency": 1}}));
    let mut c = w.client().await;
    assert!(c.register(register_req("q", "1", 64, &timings(200, 200))).await.unwrap().into_inner().success);

    let calls: Vec<_> = (0..3)
        .map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move { c.invoke(invoke_req("q", "1", &format!(r#"{{"i": {i}}}"#))).await })
        })
        .collect();
    // While the first runs (200 ms), the others wait in the queue.
    let s = await_status(&mut c, Duration::from_secs(5), "a queued invocation", |s| s.cpu_queue_len >= 1).await;
    assert!(s.num_running_funcs <= 1, "one slot: {s:?}");
    let mut states = Vec::new();
    let mut queued = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        let r = call.await.unwrap().unwrap().into_inner();
        assert!(r.success, "{r:?}\n{}", w.log_context());
        let v = result_json(&r);
        assert_eq!(v["body"]["args"], json!({"i": i}), "{v}");
        states.push(state_name(&r));
        queued.push(v["timings"]["queue_us"].as_u64().unwrap_or_else(|| panic!("no timings.queue_us: {v}")));
    }
    // One slot, so one container, reused in turn.
    states.sort();
    assert_eq!(states, ["COLD", "WARM", "WARM"], "queued: {queued:?}");
    assert!(queued.iter().any(|q| *q > 0), "someone waited in the queue: {queued:?}");
    assert_eq!(w.metric("iluvatar_cold_starts_total"), 1.0);
    assert_eq!(w.metric("iluvatar_invocations_total{outcome=\"success\"}"), 3.0);
    assert_eq!(w.metric("iluvatar_queue_length"), 0.0);
    assert_eq!(w.metric("iluvatar_running_invocations"), 0.0);
}
