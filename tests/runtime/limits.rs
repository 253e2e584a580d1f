//! What a function may write on the host is bounded: its socket directory is a tiny tmpfs,
//! and its stdout/stderr log stops at the configured size.

use crate::util::{RuntimeWorker, fixture};
use serde_json::json;

#[test]
fn the_socket_directory_and_the_log_are_bounded() {
    let w = RuntimeWorker::start(
        json!({"isolation": {"backends": [{"type": "runtime", "log_limit_mb": 4, "standby": 0}]}}),
    );
    w.register("writer", &fixture("writer"), 64);
    let r = w.invoke_ok("writer", r#"{"fill_kb": 1024}"#);
    assert_eq!(r["result"]["body"]["wrote"], false, "1 MB does not fit in the socket tmpfs: {r}");
    assert_eq!(r["result"]["body"]["errno"], 28, "ENOSPC: {r}");

    let r = w.invoke_ok("writer", r#"{"print_mb": 2}"#);
    assert_eq!(r["result"]["body"]["printed_mb"], 2, "{r}");
    let e = w.invoke_err("writer", r#"{"print_mb": 8}"#);
    let kind = e["result"]["kind"].as_str().unwrap_or_default().to_string();
    assert!(kind == "function_error" || kind == "container_failed", "printing past the limit fails: {e}");
    for log in std::fs::read_dir(w.state_dir.join("runtime/logs")).unwrap().flatten() {
        let len = log.metadata().unwrap().len();
        assert!(len <= 4 * 1024 * 1024, "{} holds {len} bytes, above the 4 MB limit", log.path().display());
    }
    let r = w.invoke_ok("writer", r#"{"fill_kb": 1}"#);
    assert_eq!(r["result"]["body"]["wrote"], true, "the worker keeps serving: {r}");
}
