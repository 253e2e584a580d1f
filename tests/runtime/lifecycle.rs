//! The shipped hello function, cold then warm, through the CLI.

use crate::util::{RuntimeWorker, cmdline, proc_status, procs, shipped};
use serde_json::json;
use std::time::Duration;

#[test]
fn hello_cold_then_warm_through_the_cli() {
    let mut w = RuntimeWorker::start(json!({"name": "runtime-hello"}));
    let code = shipped("hello");
    w.register("hello", &code, 128);
    let list = w.cli_ok(&["list"]);
    assert_eq!(list["functions"][0]["image_name"], format!("code:{}", code.display()), "{list}");

    let r = w.invoke_ok("hello", r#"{"name": "bob"}"#);
    assert_eq!(r["container_state"], "COLD", "{r}");
    assert_eq!(r["result"]["body"], json!({"body": {"greeting": "Hello bob!"}}), "{r}");
    assert_eq!(r["result"]["was_cold"], true, "{r}");
    assert!(r["result"]["timings"]["cold_start_us"].as_u64().is_some_and(|us| us > 0), "{r}");
    let (start, end) = (r["result"]["start"].as_f64().unwrap(), r["result"]["end"].as_f64().unwrap());
    assert!(start > 1.6e9 && end >= start, "in-function start/end are Unix seconds: {r}");

    let r = w.invoke_ok("hello", r#"{"name": "alice"}"#);
    assert_eq!(r["container_state"], "WARM", "{r}");
    assert_eq!(r["result"]["body"], json!({"body": {"greeting": "Hello alice!"}}), "{r}");
    assert_eq!(r["result"]["was_cold"], false, "{r}");
    assert_eq!(r["result"]["timings"]["cold_start_us"], 0, "{r}");
    let r = w.invoke_ok("hello", "{}");
    assert_eq!(r["result"]["body"]["body"]["greeting"], "Hello stranger!", "{r}");

    // One container served all three: one process, the agent, as nobody in its user
    // namespace (the host's 1,000,000 + 65534 by default).
    let containers = w.await_containers(1, Duration::from_secs(5));
    let pids = procs(&containers[0]);
    assert_eq!(pids.len(), 1, "one process in {}: {pids:?}", containers[0].display());
    assert_eq!(cmdline(pids[0]), "/usr/bin/python3 -u /iluvatar/agent/agent.py");
    let uid = proc_status(pids[0], "Uid").unwrap_or_default();
    assert_eq!(uid.split_whitespace().collect::<Vec<_>>(), ["1065534"; 4], "Uid: {uid}");

    let st = w.stop();
    assert!(st.success(), "exit status after SIGTERM: {st}\n{}", w.log_context());
    assert!(!crate::util::alive(pids[0]), "the container's agent outlived the worker");
    assert_eq!(w.container_cgroups(), Vec::<std::path::PathBuf>::new());
}
