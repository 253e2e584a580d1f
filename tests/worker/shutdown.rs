//! Graceful shutdown on SIGTERM.

use iluvatar_rpc as rpc;
use iluvatar_testkit::{STOP_TIMEOUT, WorkerProcess, await_status, invoke_req, register_req, result_json, timings};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_invocation_fails_clearly_after_the_grace() {
    let mut w = WorkerProcess::start(json!({"shutdown": {"grace_ms": 300}}));
    let mut c = w.client().await;
    assert!(c.register(register_req("long", "1", 64, &timings(5000, 5000))).await.unwrap().into_inner().success);

    let mut c2 = c.clone();
    let call = tokio::spawn(async move { c2.invoke(invoke_req("long", "1", "{}")).await });
    await_status(&mut c, Duration::from_secs(5), "the invocation running", |s| s.num_running_funcs == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.terminate();

    let r = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| w.fail("the in-flight invoke did not return within 10 s of SIGTERM"))
        .unwrap();
    let r = r.unwrap_or_else(|status| w.fail(&format!("the in-flight invoke got a transport error: {status:?}")));
    let r = r.into_inner();
    assert!(!r.success, "{r:?}");
    let v = result_json(&r);
    assert_eq!(v["kind"], "shutting_down", "{v}");
    let msg = v["Error"].as_str().unwrap_or_default();
    assert!(msg.contains("shutting down") && msg.contains("long-1"), "{v}");

    let status = w.wait_exit(STOP_TIMEOUT);
    assert_eq!(status.code(), Some(0), "exit status {status}\n{}", w.log_context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_invocation_completes_within_the_default_grace() {
    let mut w = WorkerProcess::start(json!({}));
    let mut c = w.client().await;
    assert!(c.register(register_req("short", "1", 64, &timings(1000, 1000))).await.unwrap().into_inner().success);
    assert!(c.register(register_req("other", "1", 64, "")).await.unwrap().into_inner().success);

    let mut c2 = c.clone();
    let call = tokio::spawn(async move { c2.invoke(invoke_req("short", "1", r#"{"n": 1}"#)).await });
    await_status(&mut c, Duration::from_secs(5), "the invocation running", |s| s.num_running_funcs == 1).await;
    w.terminate();

    // While it drains, the worker refuses new work and says it is unhealthy.
    let mut unhealthy = false;
    for _ in 0..100 {
        let h = c.health(rpc::HealthRequest::default()).await.unwrap().into_inner();
        if h.status == rpc::RpcHealthStatus::Unhealthy as i32 {
            unhealthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(unhealthy, "health stayed HEALTHY after SIGTERM\n{}", w.log_context());
    let r = c.invoke(invoke_req("other", "1", "{}")).await.unwrap().into_inner();
    assert!(!r.success && result_json(&r)["kind"] == "shutting_down", "{r:?}");
    let reg = c.register(register_req("late", "1", 64, "")).await.unwrap().into_inner();
    assert!(!reg.success && reg.error.contains("shutting down"), "{reg:?}");

    let r = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| w.fail("the in-flight invoke did not return"))
        .unwrap()
        .unwrap_or_else(|status| w.fail(&format!("transport error: {status:?}")))
        .into_inner();
    assert!(r.success, "the in-flight invocation completes within the grace: {r:?}\n{}", w.log_context());
    assert_eq!(result_json(&r)["body"]["args"], json!({"n": 1}));
    let status = w.wait_exit(STOP_TIMEOUT);
    assert_eq!(status.code(), Some(0), "exit status {status}\n{}", w.log_context());
}

/// A SIGTERM that follows the ready line at once still shuts the worker down gracefully:
/// the handlers are installed before the line is printed. A shell waiting on the pipe sends
/// the signal the moment the line is read (a spawned `kill` is usually too slow).
#[test]
fn sigterm_right_after_the_ready_line_shuts_down_gracefully() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let dir = iluvatar_testkit::unique_dir("sigterm-race");
    let config = dir.join("worker.json");
    let state = dir.join("state").display().to_string();
    let body = json!({"state_dir": state, "grpc": {"port": 0}, "http": {"port": 0}, "isolation": {"backends": [{"type": "sim"}]}});
    std::fs::write(&config, body.to_string()).unwrap();
    for attempt in 0..20 {
        let mut worker = Command::new(iluvatar_testkit::bin("iluvatar_worker"))
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut killer = Command::new("sh")
            .args(["-c", "read _ && kill -TERM \"$0\"", &worker.id().to_string()])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(worker.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("\"ready\""), "{line}");
        killer.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert!(killer.wait().unwrap().success());
        let status = iluvatar_testkit::wait_timeout(&mut worker, STOP_TIMEOUT).unwrap_or_else(|| {
            let _ = worker.kill();
            panic!("attempt {attempt}: the worker did not exit")
        });
        assert_eq!(status.code(), Some(0), "attempt {attempt}: a SIGTERM after the ready line gave {status}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
