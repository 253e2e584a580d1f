//! Every queue policy under a storm: many cold starts while warm calls run, a third of the
//! callers gone midway, memory tight enough that the eviction policy works, and a
//! keep-alive that learns. Afterwards nothing is left queued or running, every caller that
//! stayed got its answer, and the worker still serves. Sequential tests hide races in the
//! policies' bookkeeping (an entry never taken, a turn never given back); this is where
//! they would show.

use iluvatar_testkit::{WorkerProcess, invoke_req, register_req, result_json, timings};
use serde_json::json;
use std::time::Duration;

const FUNCTIONS: usize = 12;
const CALLS: usize = 150;

async fn storm(queue: &str) {
    let w = WorkerProcess::start(json!({
        "invoker": {"concurrency": 3, "queue": {"type": queue}},
        "container_pool": {
            "memory_mb": 1024,
            "eviction": {"type": "gdsf"},
            "keep_alive": {"type": "hybrid", "bin_ms": 100, "bins": 50, "min_samples": 3, "fallback_ttl_ms": 2000},
        },
    }));
    let mut c = w.client().await;
    for f in 0..FUNCTIONS {
        // Sizes 128..384 MB, so at most a few fit at once; cold 20..130 ms, warm 2..35 ms.
        let r = register_req(
            &format!("s{f}"),
            "1",
            128 * (1 + (f % 3) as i64),
            &timings(20 + 10 * f as u64, 2 + 3 * f as u64),
        );
        assert!(c.register(r).await.unwrap().into_inner().success, "{queue}: register s{f}");
    }
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let mut c = c.clone();
            // A skewed mix: a third of the calls go to s0 and s1, which stay warm.
            let f = if i % 3 == 0 { i % 2 } else { i % FUNCTIONS };
            let queue = queue.to_string();
            tokio::spawn(async move {
                let call = c.invoke(invoke_req(&format!("s{f}"), "1", &json!({"i": i}).to_string()));
                if i % 3 == 1 {
                    // This caller gives up midway: the request is dropped.
                    tokio::time::timeout(Duration::from_millis(5 + (i % 40) as u64), call).await.ok().map(|r| (i, r))
                } else {
                    // Bounded, so that a policy that loses an entry fails here, not by hanging.
                    let r = tokio::time::timeout(Duration::from_secs(60), call).await;
                    Some((i, r.unwrap_or_else(|_| panic!("{queue}: call {i} unanswered after 60 s"))))
                }
            })
        })
        .collect();
    let mut answered = 0;
    for call in calls {
        let Some((i, r)) = call.await.unwrap() else { continue };
        let r = r.unwrap_or_else(|e| panic!("{queue}: call {i}: {e}\n{}", w.log_context())).into_inner();
        assert!(r.success, "{queue}: call {i}: {r:?}\n{}", w.log_context());
        assert_eq!(result_json(&r)["body"]["args"]["i"], json!(i), "{queue}: call {i} got another's answer");
        answered += 1;
    }
    assert!(answered >= CALLS * 2 / 3, "{queue}: {answered} of {CALLS} answered");
    assert!(
        w.metric("iluvatar_evictions_total") > 0.0,
        "{queue}: memory never ran short, so eviction was not exercised"
    );
    assert!(w.metric("iluvatar_queue_wait_seconds_sum") > 0.0, "{queue}: nothing ever waited in the queue");
    // Dropped callers' invocations finish or leave the queue; none stays.
    w.wait_metric("iluvatar_queue_length", 0.0, Duration::from_secs(20));
    w.wait_metric("iluvatar_running_invocations", 0.0, Duration::from_secs(20));
    // Still serving: one more call to each function.
    for f in 0..FUNCTIONS {
        let r = c.invoke(invoke_req(&format!("s{f}"), "1", "{}")).await.unwrap().into_inner();
        assert!(r.success, "{queue}: after the storm, s{f}: {r:?}\n{}", w.log_context());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_queue_policy_survives_a_storm_with_dropped_callers() {
    for queue in ["fcfs", "sjf", "eedf", "iat", "cold_priority", "fair"] {
        storm(queue).await;
    }
}
