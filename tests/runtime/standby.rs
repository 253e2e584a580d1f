//! Standby containers: started ahead of any function; a cold start of a code function takes
//! one, mounts the function's folder read-only into it, sets its limits and imports it.

use crate::util::{RuntimeWorker, eventually, fixture, read_trim};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

fn memory_limits(w: &RuntimeWorker) -> Vec<u64> {
    let mut v: Vec<u64> = w
        .containers()
        .iter()
        .map(|c: &PathBuf| read_trim(&c.join("memory.limit_in_bytes")).parse::<u64>().unwrap_or(0) / (1024 * 1024))
        .collect();
    v.sort();
    v
}

#[test]
fn a_cold_start_takes_a_standby_container_and_the_pool_refills() {
    let mut w = RuntimeWorker::start(json!({"isolation": {"backends": [{"type": "runtime", "standby": 2}]}}));
    let two = eventually(Duration::from_secs(10), || w.containers().len() == 2);
    assert!(two, "two standby containers start: {:?}\n{}", w.containers(), w.log_context());
    // A container's cgroup appears a moment before libcontainer writes its limits.
    let limited = eventually(Duration::from_secs(5), || memory_limits(&w) == vec![64, 64]);
    assert!(limited, "standby containers have the standby memory limit: {:?}", memory_limits(&w));

    let code = fixture("standby_probe");
    let image = format!("code:{}?PROBE_WORD=hi", code.display());
    let r = w.cli_ok(&["register", "--name", "sp", "--version", "1", "--image", &image, "--memory", "96"]);
    assert_eq!(r["success"], true, "{r}");
    let r = w.invoke_ok("sp", r#"{"name": "x"}"#);
    assert_eq!(r["container_state"], "COLD", "{r}");
    let body = &r["result"]["body"];
    assert_eq!(body["files"], json!(["main.py"]), "the function's folder is mounted: {r}");
    assert_eq!(body["wrote_function_dir"], false, "read-only: {r}");
    assert_eq!(body["word"], "hi", "the registration's environment: {r}");
    assert_eq!(body["name"], "x", "{r}");
    assert_eq!(r["result"]["was_cold"], true, "{r}");
    let r = w.invoke_ok("sp", "{}");
    assert_eq!(r["container_state"], "WARM", "{r}");

    // The given container has the function's limit, and a new standby replaces it.
    let refilled = eventually(Duration::from_secs(10), || memory_limits(&w) == vec![64, 64, 96]);
    assert!(refilled, "limits {:?}\n{}", memory_limits(&w), w.log_context());

    // A function failing at import through a standby container fails its cold start.
    w.register("broken", &fixture("import_error"), 64);
    let e = w.invoke_err("broken", "{}");
    assert_eq!(e["result"]["kind"], "cold_start_failed", "{e}");

    let st = w.stop();
    assert!(st.success(), "{st}\n{}", w.log_context());
    assert_eq!(w.containers(), Vec::<PathBuf>::new(), "no container cgroup left");
    assert_eq!(w.host_mounts_under_dir(), Vec::<String>::new(), "no mount left");
    for sub in ["root", "bundles", "sockets", "logs", "slots", "staging"] {
        assert_eq!(w.runtime_entries(sub), Vec::<String>::new(), "state_dir/runtime/{sub} is empty");
    }
}
