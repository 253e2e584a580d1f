//! Each fault gets its own clear error, the broken container is replaced, and the worker
//! keeps serving.

use crate::util::{RuntimeWorker, alive, code_req, fixture, procs, shipped};
use iluvatar_testkit::{invoke_req, result_json, state_name};
use serde_json::{Value, json};
use std::time::Duration;

/// Invokes `faults` (or a copy of it) with no fault; returns its container's hostname.
fn healthy(w: &RuntimeWorker, name: &str, state: &str) -> String {
    let r = w.invoke_ok(name, "{}");
    assert_eq!(r["container_state"], state, "{name}: {r}");
    assert_eq!(r["result"]["body"]["fine"], true, "{r}");
    r["result"]["body"]["container"].as_str().unwrap_or_else(|| panic!("no container name: {r}")).to_string()
}

fn hello_ok(w: &RuntimeWorker) {
    let r = w.invoke_ok("hello", r#"{"name": "again"}"#);
    assert_eq!(r["result"]["body"]["body"]["greeting"], "Hello again!", "{r}");
}

/// The `Error` message of a failure report, after checking its kind.
fn error_of(report: &Value, kind: &str) -> String {
    let res = &report["result"];
    assert_eq!(res["kind"], kind, "{report:#}");
    res["Error"].as_str().unwrap_or_else(|| panic!("no Error message: {report:#}")).to_string()
}

#[test]
fn faults_give_their_errors_and_the_worker_keeps_serving() {
    let mut w = RuntimeWorker::start(json!({}));
    w.register("hello", &shipped("hello"), 128);
    w.register("faults", &fixture("faults"), 128);
    w.register("small", &fixture("faults"), 64);
    hello_ok(&w);
    let c0 = healthy(&w, "faults", "COLD");

    // The function raises: its error, and the container stays in service.
    let r = w.invoke_err("faults", r#"{"raise": "boom at 42"}"#);
    let msg = error_of(&r, "function_error");
    assert!(msg.contains("ValueError: boom at 42"), "{msg}");
    assert_eq!(r["container_state"], "WARM", "{r}");
    let fe = &r["result"]["function_error"];
    assert_eq!((fe["kind"].as_str(), fe["message"].as_str()), (Some("ValueError"), Some("boom at 42")), "{r:#}");
    let tb = fe["traceback"].as_str().unwrap_or_default();
    assert!(tb.contains("/function/main.py") && tb.contains("ValueError: boom at 42"), "{tb}");
    assert_eq!(healthy(&w, "faults", "WARM"), c0, "a raising function keeps its container");
    hello_ok(&w);

    // It returns something JSON cannot carry.
    let r = w.invoke_err("faults", r#"{"non_json": true}"#);
    error_of(&r, "function_error");
    let fe = &r["result"]["function_error"];
    assert_eq!(fe["kind"], "NonJsonResult", "{r:#}");
    assert!(fe["message"].as_str().is_some_and(|m| m.contains("set")), "names what could not be encoded: {r:#}");
    assert_eq!(healthy(&w, "faults", "WARM"), c0);

    // It prints megabytes: its output goes to its log, the call succeeds.
    let r = w.invoke_ok("faults", r#"{"print_mb": 8}"#);
    assert_eq!(r["result"]["body"], json!({"printed_mb": 8}), "{r}");
    assert_eq!(healthy(&w, "faults", "WARM"), c0);

    // The agent dies mid-call: the container failed, and is never handed out again.
    let r = w.invoke_err("faults", r#"{"exit": 1}"#);
    let msg = error_of(&r, "container_failed");
    assert!(msg.contains("faults-1") && msg.contains("broke during the call"), "{msg}");
    assert!(msg.contains("closed the connection") || msg.contains("reset by peer"), "{msg}");
    assert_eq!(r["container_state"], "ERROR", "{r}");
    let c1 = healthy(&w, "faults", "COLD");
    assert_ne!(c1, c0, "the next call got a fresh container");
    assert_eq!(healthy(&w, "faults", "WARM"), c1);
    hello_ok(&w);

    // It exceeds its memory (64 MB): killed, and reported as such.
    let c2 = healthy(&w, "small", "COLD");
    let r = w.invoke_ok("small", r#"{"alloc_mb": 16}"#);
    assert_eq!(r["result"]["body"], json!({"allocated_mb": 16}), "within the limit: {r}");
    let r = w.invoke_err("small", r#"{"alloc_mb": 200}"#);
    let msg = error_of(&r, "out_of_memory");
    assert!(msg.contains("out of memory") && msg.contains("64 MB"), "{msg}");
    let lower = msg.to_lowercase();
    assert!(!lower.contains("broken pipe") && !lower.contains("connection"), "not a transport error: {msg}");
    assert_eq!(r["container_state"], "ERROR", "{r}");
    let c3 = healthy(&w, "small", "COLD");
    assert_ne!(c3, c2);

    // After all that: hello works, and only the three healthy containers are left.
    hello_ok(&w);
    assert!(w.is_running());
    assert_eq!(w.cli_ok(&["health"]), json!({"status": "HEALTHY"}));
    w.await_containers(3, Duration::from_secs(5));
    let st = w.stop();
    assert!(st.success(), "{st}\n{}", w.log_context());
    assert_eq!(w.container_cgroups(), Vec::<std::path::PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_the_timeout_is_killed_and_its_container_replaced() {
    let w = RuntimeWorker::start(json!({"invoker": {"invocation_timeout_ms": 1500}}));
    let mut c = w.client().await;
    let image = format!("code:{}", fixture("faults").display());
    let r = c.register(code_req("faults", &image, 128)).await.unwrap().into_inner();
    assert!(r.success, "{r:?}");
    let hello = format!("code:{}", shipped("hello").display());
    assert!(c.register(code_req("hello", &hello, 128)).await.unwrap().into_inner().success);

    let r = c.invoke(invoke_req("faults", "1", "{}")).await.unwrap().into_inner();
    assert!(r.success && state_name(&r) == "COLD", "{r:?}");
    let c0 = result_json(&r)["body"]["container"].clone();
    let cgroups = w.await_containers(1, Duration::from_secs(5));
    let pids = procs(&cgroups[0]);
    assert_eq!(pids.len(), 1, "{pids:?}");

    let call = c.invoke(invoke_req("faults", "1", r#"{"sleep_s": 10}"#));
    let r = tokio::time::timeout(Duration::from_secs(6), call)
        .await
        .unwrap_or_else(|_| w.fail("a 10 s call was not cut at the 1.5 s timeout"))
        .unwrap()
        .into_inner();
    assert!(!r.success, "{r:?}");
    let v = result_json(&r);
    assert_eq!(v["kind"], "timeout", "{v}");
    let msg = v["Error"].as_str().unwrap_or_default();
    assert!(msg.contains("faults-1") && msg.contains("1500 ms"), "{msg}");

    // The sleeping container is killed and removed...
    let gone = crate::util::eventually(Duration::from_secs(5), || !alive(pids[0]));
    assert!(gone, "the timed-out container's process {} still runs\n{}", pids[0], w.log_context());
    w.await_containers(0, Duration::from_secs(5));
    // ... and the next call gets a new one.
    let r = c.invoke(invoke_req("faults", "1", "{}")).await.unwrap().into_inner();
    assert!(r.success && state_name(&r) == "COLD", "{r:?}");
    assert_ne!(result_json(&r)["body"]["container"], c0);
    let r = c.invoke(invoke_req("hello", "1", "{}")).await.unwrap().into_inner();
    assert!(r.success, "{r:?}");
    drop(c);
}

#[test]
fn a_function_failing_at_import_fails_its_cold_start_with_the_import_error() {
    let w = RuntimeWorker::start(json!({}));
    w.register("broken", &fixture("import_error"), 64);
    w.register("hello", &shipped("hello"), 64);
    for _ in 0..2 {
        let r = w.invoke_err("broken", "{}");
        let msg = error_of(&r, "cold_start_failed");
        assert_eq!(r["container_state"], "ERROR", "{r}");
        assert!(msg.contains("broken-1") && msg.contains("failed to start"), "{msg}");
        assert!(
            msg.contains("ModuleNotFoundError") && msg.contains("iluvatar_e2e_no_such_module"),
            "the message includes the import error: {msg}"
        );
        w.await_containers(0, Duration::from_secs(5));
    }
    hello_ok(&w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_code_references_are_refused_at_registration() {
    let w = RuntimeWorker::start(json!({}));
    let mut c = w.client().await;

    // An absolute --code is sent as given (it may name a folder on the worker's machine);
    // the worker names the folder it did not find.
    let err = w.cli_err(&[
        "register",
        "--name",
        "ghost",
        "--version",
        "1",
        "--code",
        "/nonexistent/iluvatar-e2e",
        "--isolation",
        "runtime",
    ]);
    assert!(err.contains("code:/nonexistent/iluvatar-e2e is not a folder") && err.contains("does not exist"), "{err}");

    // A folder without main.py.
    let no_main = iluvatar_testkit::unique_dir("no-main");
    std::fs::write(no_main.join("handler.py"), "def main(args):\n    return {}\n").unwrap();
    let err = w.cli_err(&[
        "register",
        "--name",
        "nomain",
        "--version",
        "1",
        "--code",
        &no_main.display().to_string(),
        "--isolation",
        "runtime",
    ]);
    assert!(err.contains("registration failed") && err.contains("is not a folder holding main.py"), "{err}");
    assert!(err.contains(&no_main.display().to_string()), "{err}");

    for (image, needles) in [
        ("code:/nonexistent/iluvatar-e2e", &["/nonexistent/iluvatar-e2e", "does not exist"][..]),
        ("oci:/x", &["oci:/x"][..]),
        ("oci-archive:/nonexistent/x.tar", &["oci-archive:/nonexistent/x.tar"][..]),
        ("code:relative/folder", &["relative/folder", "not an absolute path"][..]),
        // With no scheme, a reference names a registry image (tests/runtime/registry.rs).
        ("Not A Reference", &["Not A Reference", "bad reference syntax", "code:/folder"][..]),
    ] {
        let r = c.register(code_req("bad", image, 64)).await.unwrap().into_inner();
        assert!(!r.success, "{image}: {r:?}");
        for n in needles {
            assert!(r.error.contains(n), "{image}: the error should mention {n:?}: {}", r.error);
        }
        assert!(r.error.contains("runtime"), "names the backend: {}", r.error);
    }
    std::fs::remove_dir_all(&no_main).unwrap();

    // Nothing was registered, and a good registration still works.
    assert_eq!(w.cli_ok(&["list"])["functions"], json!([]));
    drop(c);
    w.register("hello", &shipped("hello"), 64);
    hello_ok(&w);
}
