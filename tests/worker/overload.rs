//! Bounded memory under overload: a full queue fails at once with `queue_full`, async
//! results expire uncollected, arguments past the largest payload are refused, async
//! cookies cannot be guessed, and a second worker (or `clean`) on a busy state dir is refused.

use iluvatar_testkit::{WorkerProcess, async_req, invoke_req, register_req, result_json, timings};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_queue_full_at_once_and_every_call_is_answered() {
    let w = WorkerProcess::start(json!({"invoker": {"concurrency": 1, "max_queued": 3}}));
    let mut c = w.client().await;
    let r = c.register(register_req("slow", "1", 64, &timings(300, 300))).await.unwrap().into_inner();
    assert!(r.success, "{r:?}");
    // 1 runs, 3 wait, the other 8 are refused at once.
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let mut c = c.clone();
            tokio::spawn(async move { c.invoke(invoke_req("slow", "1", "{}")).await })
        })
        .collect();
    let (mut ok, mut full) = (0, 0);
    for call in calls {
        let r = call.await.unwrap().expect("every call gets an answer").into_inner();
        if r.success {
            ok += 1;
            continue;
        }
        let v = result_json(&r);
        assert_eq!(v["kind"], "queue_full", "{v}");
        let msg = v["Error"].as_str().unwrap_or_default();
        assert!(msg.contains("queue is full") && msg.contains("slow-1"), "{msg}");
        full += 1;
    }
    assert_eq!(ok + full, 12);
    assert!(ok >= 4, "the running call and the 3 queued succeed: {ok} ok, {full} full");
    assert!(full >= 1, "12 calls at once over 1 slot and 3 places: some must be refused ({ok} ok)");
    // The worker still serves.
    let r = c.invoke(invoke_req("slow", "1", "{}")).await.unwrap().into_inner();
    assert!(r.success, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncollected_async_results_expire_and_cookies_are_128_random_bits() {
    let w = WorkerProcess::start(json!({
        "invoker": {"async_result_ttl_ms": 200},
        "container_pool": {"reap_interval_ms": 50},
    }));
    let mut c = w.client().await;
    let r = c.register(register_req("f", "1", 64, &timings(5, 1))).await.unwrap().into_inner();
    assert!(r.success, "{r:?}");
    let mut cookies = Vec::new();
    for _ in 0..3 {
        let a = c.invoke_async(async_req("f", "1", "{}")).await.unwrap().into_inner();
        let ck = a.lookup_cookie;
        assert!(ck.len() == 32 && ck.chars().all(|ch| ch.is_ascii_hexdigit()), "cookie {ck:?}");
        cookies.push(ck);
    }
    // Not two outputs of one counter: no shared halves, all distinct.
    let halves: std::collections::HashSet<&str> = cookies.iter().flat_map(|c| [&c[..16], &c[16..]]).collect();
    assert_eq!(halves.len(), 6, "{cookies:?}");
    // Collected in time: the result.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = c
        .invoke_async_check(rpc::InvokeAsyncLookupRequest {
            lookup_cookie: cookies[0].clone(),
            transaction_id: "t".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(first.success, "{first:?}");
    // Left past the TTL: gone, with a clear answer.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let late = c
        .invoke_async_check(rpc::InvokeAsyncLookupRequest {
            lookup_cookie: cookies[1].clone(),
            transaction_id: "t".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let v = result_json(&late);
    assert_eq!(v["kind"], "unknown_cookie", "{v}");
    assert!(v["Error"].as_str().unwrap_or_default().contains("expired"), "{v}");
}

use iluvatar_rpc as rpc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_past_the_largest_payload_are_refused_by_name() {
    let w = WorkerProcess::start(json!({}));
    let mut c = w.client().await;
    let r = c.register(register_req("f", "1", 64, &timings(5, 1))).await.unwrap().into_inner();
    assert!(r.success, "{r:?}");
    let pad = "x".repeat(rpc::MAX_PAYLOAD_BYTES);
    let big = format!(r#"{{"pad": "{pad}"}}"#);
    let r = c.invoke(invoke_req("f", "1", &big)).await.expect("answered in-band, not a transport error");
    let v = result_json(r.get_ref());
    assert_eq!(v["kind"], "bad_arguments", "{v}");
    let msg = v["Error"].as_str().unwrap_or_default();
    assert!(msg.contains("largest payload") && msg.contains(&rpc::MAX_PAYLOAD_BYTES.to_string()), "{msg}");
    // Just under the limit is carried.
    let pad = "x".repeat(rpc::MAX_PAYLOAD_BYTES - 64);
    let fits = format!(r#"{{"pad": "{pad}"}}"#);
    let r = c.invoke(invoke_req("f", "1", &fits)).await.unwrap().into_inner();
    assert!(r.success, "{}", &r.json_result[..r.json_result.len().min(300)]);
}

#[test]
fn a_second_worker_and_clean_are_refused_on_a_busy_state_dir() {
    let w = WorkerProcess::start(json!({}));
    let out = iluvatar_testkit::output_timeout(
        {
            let mut cmd = std::process::Command::new(iluvatar_testkit::bin("iluvatar_worker"));
            cmd.arg("-c").arg(&w.config_path).arg("clean");
            cmd
        },
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "clean must refuse while the worker runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by a running worker") && err.contains(&format!("pid {}", w.pid())), "{err}");
    // A second worker on the same state dir (other ports) is refused the same way.
    let mut second: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&w.config_path).unwrap()).expect("the config is JSON");
    second["grpc"]["port"] = json!(0);
    second["http"]["port"] = json!(0);
    let path = w.dir.join("second.json");
    std::fs::write(&path, second.to_string()).unwrap();
    let out = iluvatar_testkit::output_timeout(
        {
            let mut cmd = std::process::Command::new(iluvatar_testkit::bin("iluvatar_worker"));
            cmd.arg("-c").arg(&path);
            cmd
        },
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by a running worker") && err.contains(&format!("pid {}", w.pid())), "{err}");
}
