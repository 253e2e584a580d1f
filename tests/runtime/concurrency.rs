//! Two functions run at the same time, each in its own container.

use crate::util::{RuntimeWorker, code_req, shipped};
use iluvatar_testkit::{invoke_req, result_json, state_name};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_functions_invoked_concurrently_overlap() {
    let w = RuntimeWorker::start(json!({"invoker": {"concurrency": 2}}));
    let mut c = w.client().await;
    let image = format!("code:{}", shipped("synthetic").display());
    for name in ["syn_a", "syn_b"] {
        let r = c.register(code_req(name, &image, 128)).await.unwrap().into_inner();
        assert!(r.success, "{r:?}");
    }
    for (round, state) in [(0, "COLD"), (1, "WARM")] {
        let calls: Vec<_> = ["syn_a", "syn_b"]
            .into_iter()
            .map(|name| {
                let mut c = c.clone();
                tokio::spawn(async move { c.invoke(invoke_req(name, "1", r#"{"sleep_ms": 500}"#)).await })
            })
            .collect();
        let mut spans = Vec::new();
        for call in calls {
            let r = call.await.unwrap().unwrap().into_inner();
            assert!(r.success, "round {round}: {r:?}\n{}", w.log_context());
            assert_eq!(state_name(&r), state, "round {round}: {r:?}");
            let v = result_json(&r);
            assert!(v["body"]["body"]["slept_ms"].as_f64().is_some_and(|ms| ms >= 500.0), "{v}");
            spans.push((v["start"].as_f64().unwrap(), v["end"].as_f64().unwrap()));
        }
        let (a, b) = (spans[0], spans[1]);
        let overlap = a.1.min(b.1) - a.0.max(b.0);
        assert!(overlap > 0.2, "round {round}: the two calls ran {a:?} and {b:?}, overlapping {overlap:.3} s");
    }
    drop(c);
    w.await_containers(2, std::time::Duration::from_secs(5));
}
