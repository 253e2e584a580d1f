//! Images that run a function server of the reference platform's protocol (HTTP on port
//! 8080 inside the container's own network namespace, or its Unix-socket variant) instead
//! of our agent: registered as the reference platform's tools do (isolation CONTAINERD,
//! container_server HTTP) through gRPC, invoked cold and warm, with function errors, servers
//! that crash, hang or answer garbage, images that run no server, and cold starts under load.

use crate::images::build_image;
use crate::util::{RuntimeWorker, cmdline, fixture, proc_status, shipped};
use iluvatar_rpc as rpc;
use iluvatar_testkit::{Client, invoke_req, result_json, state_name};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds an image of `function` whose entrypoint is `server` (`http`, `unix`), or the
/// given entrypoint (JSON list) with the function in /app.
pub(crate) fn server_image(function: &Path, dir: &Path, tag: &str, server: &str, entrypoint: Option<&str>) -> PathBuf {
    if server == "agent" {
        return build_image(function, dir, tag);
    }
    let script = iluvatar_testkit::fixtures::tests_dir().join("../scripts/build-python-image.py");
    let out = dir.join(format!("{tag}.tar"));
    let mut cmd = Command::new("python3");
    cmd.arg(&script).args(["--function", &function.display().to_string(), "--out", &out.display().to_string()]);
    cmd.args(["--tag", tag, "--server", server]);
    if let Some(e) = entrypoint {
        cmd.args(["--entrypoint", e]);
    }
    let st = cmd.output().expect("running build-python-image.py");
    assert!(st.status.success(), "building the image failed: {}", String::from_utf8_lossy(&st.stderr));
    out
}

/// A registration as the reference platform's CLI and load generator send it.
fn reference_req(name: &str, archive: &Path, tag: &str, container_server: u32) -> rpc::RegisterRequest {
    rpc::RegisterRequest {
        function_name: name.into(),
        function_version: "1".into(),
        image_name: format!("oci-archive:{}:{tag}", archive.display()),
        memory: 128,
        cpus: 1,
        parallel_invokes: 1,
        transaction_id: format!("ref-register-{name}"),
        language: rpc::LanguageRuntime::Python3 as i32,
        compute: rpc::compute::CPU,
        isolate: rpc::isolation::CONTAINERD,
        container_server,
        resource_timings_json: String::new(),
        system_function: false,
    }
}

async fn register(c: &mut Client, req: rpc::RegisterRequest) {
    let name = req.function_name.clone();
    let r = c.register(req).await.unwrap().into_inner();
    assert!(r.success, "registering {name}: {r:?}");
}

async fn invoke(c: &mut Client, name: &str, args: Value) -> (rpc::InvokeResponse, Value) {
    let r = c.invoke(invoke_req(name, "1", &args.to_string())).await.unwrap().into_inner();
    let v = result_json(&r);
    (r, v)
}

/// Invokes and expects success in `state` ("" for either); returns the result's JSON.
async fn ok(w: &RuntimeWorker, c: &mut Client, name: &str, args: Value, state: &str) -> Value {
    let (r, v) = invoke(c, name, args.clone()).await;
    assert!(r.success, "{name} {args}: {v}\n{}", w.log_context());
    if !state.is_empty() {
        assert_eq!(state_name(&r), state, "{name} {args}: {v}");
    }
    assert_eq!(v["was_cold"], state_name(&r) == "COLD", "the server's was_cold matches the container's state: {v}");
    v
}

/// Invokes and expects a failure of `kind` whose message holds every needle.
async fn fails(c: &mut Client, name: &str, args: Value, kind: &str, needles: &[&str]) -> Value {
    let (r, v) = invoke(c, name, args.clone()).await;
    assert!(!r.success, "{name} {args} should fail: {v}");
    assert_eq!(v["kind"], kind, "{name} {args}: {v}");
    let msg = v["Error"].as_str().unwrap_or_default();
    for n in needles {
        assert!(msg.contains(n), "{name} {args}: the error should mention {n:?}: {msg}");
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_http_images_run_cold_and_warm_as_the_reference_tools_register_them() {
    let w = RuntimeWorker::start(json!({"invoker": {"invocation_timeout_ms": 4000}}));
    let mut c = w.client().await;
    let hello = server_image(&shipped("hello"), &w.dir, "hello", "http", None);
    let faults = server_image(&fixture("faults"), &w.dir, "faults", "http", None);
    register(&mut c, reference_req("hello", &hello, "hello", rpc::container_server::HTTP)).await;
    register(&mut c, reference_req("faults", &faults, "faults", rpc::container_server::HTTP)).await;
    let said = w.log_text().matches("are served by the runtime backend").count();
    assert_eq!(said, 1, "the CONTAINERD mapping is said once in the log:\n{}", w.log_text());

    let v = ok(&w, &mut c, "hello", json!({"name": "ref"}), "COLD").await;
    assert_eq!(v["body"], json!({"body": {"greeting": "Hello ref!"}}), "{v}");
    let (start, end) = (v["start"].as_f64().unwrap(), v["end"].as_f64().unwrap());
    assert!(start > 1.6e9 && start <= end, "the server's times are Unix times: {v}");
    let t = &v["timings"];
    assert!(t["function_us"].as_f64().unwrap() <= t["container_us"].as_f64().unwrap(), "{v}");
    let v2 = ok(&w, &mut c, "hello", json!({"name": "again"}), "WARM").await;
    assert_eq!(v2["body"]["body"]["greeting"], "Hello again!", "{v2}");
    assert!(v2["start"].as_f64().unwrap() >= end, "the warm call ran after the cold one: {v} {v2}");

    // The server runs confined as every container: in the worker's cgroups, as the
    // user-namespaced nobody, with loopback as its only network.
    let pids = w.container_pids();
    let server = pids.iter().find(|p| cmdline(**p).contains("function_server.py http")).copied();
    let server =
        server.unwrap_or_else(|| panic!("no server among {:?}", pids.iter().map(|p| cmdline(*p)).collect::<Vec<_>>()));
    let uid = proc_status(server, "Uid").unwrap();
    assert_eq!(uid.split_whitespace().next(), Some("1065534"), "{uid}");
    let net = std::fs::read_to_string(format!("/proc/{server}/net/dev")).unwrap();
    let interfaces: Vec<&str> = net.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(interfaces, ["lo"], "{net}");

    // A function error: the container stays and serves the next call.
    let e = fails(&mut c, "faults", json!({"raise": "boom"}), "function_error", &["ValueError", "boom"]).await;
    assert_eq!(e["function_error"]["kind"], "ValueError", "{e}");
    assert!(e["function_error"]["traceback"].as_str().unwrap().contains("main.py"), "{e}");
    let v = ok(&w, &mut c, "faults", json!({}), "WARM").await;
    assert_eq!(v["body"]["fine"], true, "{v}");
    fails(&mut c, "faults", json!({"non_json": true}), "function_error", &["TypeError"]).await;
    // A server that dies mid-call, one that runs past the timeout: clear errors, and the
    // next call gets a new container.
    fails(&mut c, "faults", json!({"exit": 3}), "container_failed", &["function server", "exited"]).await;
    ok(&w, &mut c, "faults", json!({}), "COLD").await;
    fails(&mut c, "faults", json!({"sleep_s": 30}), "timeout", &["4000 ms"]).await;
    ok(&w, &mut c, "faults", json!({}), "COLD").await;
    fails(&mut c, "faults", json!({"alloc_mb": 400}), "out_of_memory", &["128 MB"]).await;
    ok(&w, &mut c, "faults", json!({}), "COLD").await;
    ok(&w, &mut c, "hello", json!({"name": "still"}), "WARM").await;

    // A function whose import fails: the server says so at its status check.
    let broken = server_image(&fixture("import_error"), &w.dir, "broken", "http", None);
    register(&mut c, reference_req("broken", &broken, "broken", rpc::container_server::HTTP)).await;
    fails(&mut c, "broken", json!({}), "cold_start_failed", &["could not import", "iluvatar_e2e_no_such_module"]).await;
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_variant_and_agent_images_are_told_apart() {
    let w = RuntimeWorker::start(json!({}));
    let mut c = w.client().await;
    let unix = server_image(&fixture("faults"), &w.dir, "faults", "unix", None);
    register(&mut c, reference_req("sock", &unix, "faults", rpc::container_server::UNIX_SOCKET)).await;
    let v = ok(&w, &mut c, "sock", json!({}), "COLD").await;
    assert_eq!(v["body"]["fine"], true, "{v}");
    ok(&w, &mut c, "sock", json!({}), "WARM").await;
    fails(&mut c, "sock", json!({"raise": "sockboom"}), "function_error", &["ValueError", "sockboom"]).await;
    ok(&w, &mut c, "sock", json!({}), "WARM").await;
    fails(&mut c, "sock", json!({"exit": 4}), "container_failed", &["function server"]).await;
    ok(&w, &mut c, "sock", json!({}), "COLD").await;

    // An image running our agent speaks our protocol whatever container_server says (0,
    // the protocol's default, is also what "unset" looks like).
    let agent = server_image(&shipped("hello"), &w.dir, "agent", "agent", None);
    register(&mut c, reference_req("agent", &agent, "agent", rpc::container_server::HTTP)).await;
    let v = ok(&w, &mut c, "agent", json!({"name": "agent"}), "COLD").await;
    assert_eq!(v["body"]["body"]["greeting"], "Hello agent!", "{v}");
    assert!(w.container_pids().iter().any(|p| cmdline(*p).contains("/iluvatar/agent/agent.py")));
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_servers_get_clear_errors_and_the_worker_keeps_serving() {
    let w = RuntimeWorker::start(json!({"invoker": {"invocation_timeout_ms": 2500}}));
    let mut c = w.client().await;
    let entry = r#"["/usr/bin/python3.11", "-u", "/app/main.py"]"#;
    let hostile = server_image(&fixture("hostile_server"), &w.dir, "hostile", "http", Some(entry));
    register(&mut c, reference_req("hostile", &hostile, "hostile", rpc::container_server::HTTP)).await;
    let hello = server_image(&shipped("hello"), &w.dir, "hello", "http", None);
    register(&mut c, reference_req("hello", &hello, "hello", rpc::container_server::HTTP)).await;
    ok(&w, &mut c, "hello", json!({}), "COLD").await;

    let mode = |m: &str| json!({"mode": m});
    // Well-formed answers in every framing; a server that closes after each answer (as
    // gunicorn's sync workers do) is reconnected to.
    let v = ok(&w, &mut c, "hostile", mode("ok"), "COLD").await;
    assert_eq!(v["body"], json!({"mode": "ok"}), "{v}");
    assert_eq!(ok(&w, &mut c, "hostile", mode("chunked_ok"), "WARM").await["body"]["mode"], "chunked_ok");
    for _ in 0..3 {
        assert_eq!(ok(&w, &mut c, "hostile", mode("close_ok"), "WARM").await["body"]["mode"], "close_ok");
    }
    // A whole answer of another status (Flask answers a function's unserialisable error so)
    // fails the call and keeps the container.
    let e = fails(
        &mut c,
        "hostile",
        mode("html_500"),
        "function_error",
        &["server_error", "HTTP 500", "Internal Server Error"],
    )
    .await;
    assert_eq!(e["function_error"]["kind"], "server_error", "{e}");
    ok(&w, &mut c, "hostile", mode("ok"), "WARM").await;
    let cases: [(&str, &str, &[&str]); 10] = [
        ("garbage", "container_failed", &["not HTTP/1.x", "SPAM"]),
        ("not_json", "container_failed", &["not JSON"]),
        ("bad_result", "container_failed", &["user_result that is not JSON"]),
        ("huge_header", "container_failed", &["head over 16384 bytes"]),
        ("huge_body", "container_failed", &["exceeds the largest payload"]),
        ("huge_chunks", "container_failed", &["exceeds the largest payload"]),
        ("slow", "timeout", &["2500 ms"]),
        ("hang", "timeout", &["2500 ms"]),
        ("close", "container_failed", &["function server closed the connection"]),
        ("crash", "container_failed", &["function server exited"]),
    ];
    for (m, kind, needles) in cases {
        // A new container after each failure (a broken one is never reused).
        ok(&w, &mut c, "hostile", mode("ok"), "").await;
        fails(&mut c, "hostile", mode(m), kind, needles).await;
        // Between them, the other function is served as ever.
        ok(&w, &mut c, "hello", json!({}), "WARM").await;
    }
    drop(c);
    let rss = std::fs::read_to_string(format!("/proc/{}/status", w.pid())).unwrap();
    let kb: u64 =
        rss.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(kb < 512 * 1024, "the worker did not buffer the hostile answers: {kb} kB resident");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_that_run_no_server_are_refused_or_fail_their_cold_start_clearly() {
    let w = RuntimeWorker::start(
        json!({"isolation": {"backends": [{"type": "runtime", "standby": 0, "start_timeout_ms": 2000}]}}),
    );
    let mut c = w.client().await;
    let hello = shipped("hello");
    // Nothing to run: refused at registration, from the image's config.
    let none = server_image(&hello, &w.dir, "none", "http", Some("[]"));
    let r = c.register(reference_req("none", &none, "none", 0)).await.unwrap().into_inner();
    assert!(!r.success && r.error.contains("neither Entrypoint nor Cmd"), "{r:?}");
    assert!(r.error.contains("neither Ilúvatar's agent nor a function server"), "{r:?}");

    // A program that never listens, one that exits, one that accepts and never answers.
    let py = "/usr/bin/python3.11";
    let sleeper = server_image(
        &hello,
        &w.dir,
        "sleeper",
        "http",
        Some(&format!(r#"["{py}", "-c", "import time; time.sleep(600)"]"#)),
    );
    let quitter =
        server_image(&hello, &w.dir, "quitter", "http", Some(&format!(r#"["{py}", "-c", "print('bye now')"]"#)));
    let entry = format!(r#"["{py}", "-u", "/app/main.py", "mute"]"#);
    let mute = server_image(&fixture("hostile_server"), &w.dir, "mute", "http", Some(&entry));
    for (name, archive) in [("sleeper", &sleeper), ("quitter", &quitter), ("mute", &mute)] {
        register(&mut c, reference_req(name, archive, name, rpc::container_server::HTTP)).await;
    }
    fails(
        &mut c,
        "sleeper",
        json!({}),
        "cold_start_failed",
        &["no function server answered GET / on 127.0.0.1:8080", "/iluvatar/agent/agent.py", "start timeout"],
    )
    .await;
    fails(&mut c, "quitter", json!({}), "cold_start_failed", &["function server exited before answering", "bye now"])
        .await;
    fails(
        &mut c,
        "mute",
        json!({}),
        "cold_start_failed",
        &["no function server answered GET /", "hostile server listening"],
    )
    .await;
    // The socket variant's image registered as HTTP: it never answers on the port.
    let unix = server_image(&hello, &w.dir, "unix", "unix", None);
    register(&mut c, reference_req("wrongserver", &unix, "unix", rpc::container_server::HTTP)).await;
    fails(&mut c, "wrongserver", json!({}), "cold_start_failed", &["no function server answered GET /"]).await;
    register(&mut c, reference_req("rightserver", &unix, "unix", rpc::container_server::UNIX_SOCKET)).await;
    let v = ok(&w, &mut c, "rightserver", json!({"name": "sock"}), "COLD").await;
    assert_eq!(v["body"]["body"]["greeting"], "Hello sock!", "{v}");
    drop(c);
    w.await_containers(1, std::time::Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_starts_run_while_warm_calls_go_on() {
    let w = RuntimeWorker::start(json!({"invoker": {"concurrency": 8}, "container_pool": {"memory_mb": 4096}}));
    let mut c = w.client().await;
    let hello = server_image(&shipped("hello"), &w.dir, "hello", "http", None);
    register(&mut c, reference_req("warm", &hello, "hello", rpc::container_server::HTTP)).await;
    ok(&w, &mut c, "warm", json!({}), "COLD").await;
    let names: Vec<String> = (0..6).map(|i| format!("cold{i}")).collect();
    for n in &names {
        register(&mut c, reference_req(n, &hello, "hello", rpc::container_server::HTTP)).await;
    }
    register(&mut c, reference_req("same", &hello, "hello", rpc::container_server::HTTP)).await;
    let mut colds = Vec::new();
    for n in names.iter().cloned().chain(["same", "same", "same"].map(String::from)) {
        let mut c = c.clone();
        colds.push(tokio::spawn(async move { c.invoke(invoke_req(&n, "1", &json!({"name": n}).to_string())).await }));
    }
    let mut warm_calls = 0;
    while colds.iter().any(|t| !t.is_finished()) || warm_calls < 20 {
        let v = ok(&w, &mut c, "warm", json!({"name": "w"}), "WARM").await;
        assert_eq!(v["body"]["body"]["greeting"], "Hello w!", "{v}");
        warm_calls += 1;
    }
    let mut cold_states = 0;
    for t in colds {
        let r = t.await.unwrap().unwrap().into_inner();
        let v = result_json(&r);
        assert!(r.success, "{v}\n{}", w.log_context());
        assert_eq!(v["was_cold"], state_name(&r) == "COLD", "{v}");
        cold_states += usize::from(state_name(&r) == "COLD");
    }
    assert!(cold_states >= 7, "every new function started cold, and \"same\" at least once ({cold_states})");
    drop(c);
}
