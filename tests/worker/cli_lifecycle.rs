//! The whole lifecycle through the CLI binary, including a restart.

use iluvatar_testkit::WorkerProcess;
use serde_json::{Value, json};

fn names(list: &Value) -> Vec<(String, String, String)> {
    list["functions"]
        .as_array()
        .unwrap_or_else(|| panic!("list printed no functions array: {list}"))
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (s("function_name"), s("function_version"), s("image_name"))
        })
        .collect()
}

#[test]
fn cli_register_invoke_prewarm_async_list_status_restart() {
    let mut w = WorkerProcess::start(json!({"name": "cli-worker"}));
    let image = "docker.io/alfuerst/hello-iluvatar-action:latest";

    let r =
        w.cli_ok(&["register", "--name", "hello", "--version", "1", "--image", image, "--memory", "128", "--cpu", "1"]);
    assert_eq!(r, json!({"success": true, "fqdn": "hello-1"}));

    // Cold, then warm; the sim backend echoes the arguments.
    let r = w.cli_ok(&["invoke", "--name", "hello", "--version", "1", "-a", "name=bob"]);
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["container_state"], "COLD", "{r}");
    assert_eq!(r["result"]["body"], json!({"sim": true, "fqdn": "hello-1", "args": {"name": "bob"}}), "{r}");
    assert_eq!(r["result"]["was_cold"], true, "{r}");
    assert!(r["result"]["timings"]["cold_start_us"].as_u64().is_some_and(|us| us > 0), "{r}");

    let r = w.cli_ok(&[
        "invoke",
        "--name",
        "hello",
        "--version",
        "1",
        "-j",
        r#"{"n": 3, "name": "x"}"#,
        "-a",
        "name=alice",
    ]);
    assert_eq!(r["container_state"], "WARM", "{r}");
    assert_eq!(r["result"]["body"]["args"], json!({"n": 3, "name": "alice"}), "-a overrides -j: {r}");
    assert_eq!(r["result"]["was_cold"], false, "{r}");
    assert_eq!(r["result"]["timings"]["cold_start_us"], 0, "{r}");

    // A prewarmed container serves the first invocation of a second function.
    let r = w.cli_ok(&["register", "--name", "greet", "--version", "2", "--image", "img/greet", "--memory", "64"]);
    assert_eq!(r["fqdn"], "greet-2");
    let r = w.cli_ok(&["prewarm", "--name", "greet", "--version", "2"]);
    assert_eq!(r["success"], true, "{r}");
    assert!(r["message"].as_str().unwrap_or_default().contains("greet-2"), "{r}");
    let r = w.cli_ok(&["invoke", "--name", "greet", "--version", "2"]);
    assert_eq!(r["container_state"], "PREWARM", "{r}");
    assert_eq!(r["result"]["body"]["args"], json!({}), "{r}");
    // Its first call, but it waited for no start: not cold (README, "What an invocation returns").
    assert_eq!(r["result"]["was_cold"], false, "{r}");
    assert_eq!(r["result"]["timings"]["cold_start_us"], 0, "{r}");
    let r = w.cli_ok(&["invoke", "--name", "greet", "--version", "2"]);
    assert_eq!(r["container_state"], "WARM", "{r}");

    // Async: a function that runs long enough to be seen pending.
    let slow = r#"{"cold_dur_ms": 1000, "warm_dur_ms": 1000}"#;
    w.cli_ok(&["register", "--name", "slow", "--version", "1", "--image", "img/slow", "--resource-timings-json", slow]);
    let r = w.cli_ok(&["invoke-async", "--name", "slow", "--version", "1", "-a", "k=v"]);
    assert_eq!(r["success"], true, "{r}");
    let cookie = r["cookie"].as_str().unwrap_or_else(|| panic!("no cookie: {r}")).to_string();
    assert!(!cookie.is_empty());
    let first = w.cli_ok(&["invoke-async-check", "--cookie", &cookie]);
    assert_eq!(first["pending"], true, "a 1 s invocation is still running right after it started: {first}");
    assert_eq!(first["success"], false, "{first}");
    let mut done = None;
    for _ in 0..200 {
        let r = w.cli_ok(&["invoke-async-check", "--cookie", &cookie]);
        if r.get("pending") != Some(&json!(true)) {
            done = Some(r);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let done = done.unwrap_or_else(|| w.fail("the async invocation stayed pending"));
    assert_eq!(done["success"], true, "{done}");
    assert_eq!(done["container_state"], "COLD", "{done}");
    assert_eq!(done["result"]["body"], json!({"sim": true, "fqdn": "slow-1", "args": {"k": "v"}}), "{done}");
    // A result is collected once.
    let err = w.cli_err(&["invoke-async-check", "--cookie", &cookie]);
    assert!(err.contains(&cookie) && err.contains("already collected"), "{err}");
    assert!(err.contains("unknown_cookie"), "{err}");

    let want = vec![
        ("greet".to_string(), "2".to_string(), "img/greet".to_string()),
        ("hello".to_string(), "1".to_string(), image.to_string()),
        ("slow".to_string(), "1".to_string(), "img/slow".to_string()),
    ];
    assert_eq!(names(&w.cli_ok(&["list"])), want);

    let s = w.cli_ok(&["status"]);
    assert_eq!(s["worker_name"], "cli-worker", "{s}");
    assert_eq!(s["num_running_funcs"], 0, "{s}");
    assert_eq!(s["cpu_queue_len"], 0, "{s}");
    // hello (128) + greet (64) + slow (128) idle in a 4096 MB pool.
    assert!((s["used_mem_pct"].as_f64().unwrap() - 320.0 * 100.0 / 4096.0).abs() < 1e-9, "{s}");
    assert!(s.get("functions").is_none() && s.get("functions_json").is_none(), "asked for the load only: {s}");
    // `--functions` adds what the worker learnt of each function: slow ran once, cold.
    let s = w.cli_ok(&["status", "--functions"]);
    let slow = &s["functions"]["slow-1"];
    assert_eq!(slow["memory_mb"], 128, "{s}");
    assert_eq!((slow["cold"]["count"].as_u64(), slow["warm"]["count"].as_u64()), (Some(1), Some(0)), "{s}");
    assert!(slow["cold"]["mean_us"].as_f64().is_some_and(|us| us > 0.0), "{s}");
    assert!(s["functions"]["greet-2"].is_object() && s["worker_name"] == "cli-worker", "{s}");
    assert_eq!(w.cli_ok(&["health"]), json!({"status": "HEALTHY"}));
    assert_eq!(w.cli_ok(&["ping"]), json!({"message": "Pong"}));

    // Registrations survive a restart; containers do not.
    let old_port = w.grpc_port;
    w.restart();
    assert_eq!(names(&w.cli_ok(&["list"])), want, "after restart (port {old_port} -> {})", w.grpc_port);
    let r = w.cli_ok(&["invoke", "--name", "hello", "--version", "1", "-a", "again=yes"]);
    assert_eq!(r["container_state"], "COLD", "{r}");
    assert_eq!(r["result"]["body"]["args"], json!({"again": "yes"}), "{r}");
    let r = w.cli_ok(&["invoke", "--name", "greet", "--version", "2"]);
    assert_eq!(r["container_state"], "COLD", "no prewarmed container survives a restart: {r}");
    assert_eq!(w.cli_ok(&["status"])["worker_name"], "cli-worker");
    // Clean removes the idle containers: the next invocation is cold again.
    assert_eq!(w.cli_ok(&["clean"]), json!({"success": true}));
    let r = w.cli_ok(&["invoke", "--name", "hello", "--version", "1"]);
    assert_eq!(r["container_state"], "COLD", "after clean: {r}");

    let st = w.stop();
    assert!(st.success(), "exit status after SIGTERM: {st}");
}
