//! Bad inputs each get a specific error, and the worker keeps serving.

use iluvatar_rpc as rpc;
use iluvatar_testkit::{WorkerProcess, async_req, invoke_req, register_req, result_json, timings};
use serde_json::json;

fn reg<'a>(name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["register", "--name", name, "--version", "1", "--image", "img"];
    v.extend_from_slice(extra);
    v
}

#[tokio::test]
async fn bad_inputs_get_specific_errors_and_the_worker_keeps_serving() {
    let w = WorkerProcess::start(json!({}));
    let mut c = w.client().await;
    let expect_err = |args: Vec<&str>, needles: &[&str]| {
        let err = w.cli_err(&args);
        for n in needles {
            assert!(err.contains(n), "cli {args:?}: stderr should mention {n:?}:\n{err}");
        }
    };

    // Registrations refused by the worker, each naming the field and bound.
    expect_err(reg("", &[]), &["registration failed", "function_name must not be empty"]);
    expect_err(reg("a b", &[]), &["function_name", "may only hold"]);
    expect_err(reg("f", &["--memory", "0"]), &["memory 0 MB is outside the allowed range 5..=4096 MB"]);
    expect_err(reg("f", &["--memory=-5"]), &["memory -5 MB is outside the allowed range"]);
    expect_err(reg("f", &["--memory", "5000"]), &["memory 5000 MB is outside the allowed range 5..=4096 MB"]);
    expect_err(reg("f", &["--cpu", "0"]), &["cpus 0 is outside the allowed range"]);
    expect_err(reg("f", &["--resource-timings-json", "{not json"]), &["resource_timings_json is invalid"]);
    expect_err(reg("f", &["--resource-timings-json", r#"{"cold": 1}"#]), &["resource_timings_json is invalid"]);
    expect_err(
        reg("f", &["--resource-timings-json", r#"{"cold_dur_ms": -1, "warm_dur_ms": 0}"#]),
        &["resource_timings_json is invalid", "not negative"],
    );
    // Refused by the CLI itself.
    expect_err(reg("f", &["--isolation", "podman"]), &["unknown isolation \"podman\"", "sim", "containerd"]);
    expect_err(reg("f", &["--server", "tcp"]), &["'tcp'", "[possible values: http, unix]"]);
    expect_err(reg("f", &["--language", "cobol"]), &["'cobol'", "[possible values: python3, none]"]);
    expect_err(reg("f", &["--network", "bridge"]), &["'bridge'", "[possible values: none, loopback]"]);

    // Through gRPC: the reference platform's backend names are served (by this sim-only
    // worker's default); a backend of ours that is not offered, and unknown bits, are refused.
    for (name, bit) in [("viacontainerd", rpc::isolation::CONTAINERD), ("viadocker", rpc::isolation::DOCKER)] {
        let mut req = register_req(name, "1", 128, "");
        req.isolate = bit;
        let r = c.register(req).await.unwrap().into_inner();
        assert!(r.success, "{name}: {r:?}");
    }
    let mut req = register_req("f", "1", 128, "");
    req.isolate = rpc::isolation::RUNTIME;
    let r = c.register(req).await.unwrap().into_inner();
    assert!(!r.success && r.error.contains("runtime") && r.error.contains("not offered"), "{r:?}");
    assert!(r.error.contains("sim"), "names what is offered: {r:?}");
    let mut req = register_req("f", "1", 128, "");
    req.isolate = 64;
    let r = c.register(req).await.unwrap().into_inner();
    assert!(!r.success && r.error.contains("unknown bits"), "{r:?}");
    let mut req = register_req("f", "1", 128, "");
    req.image_name = "has space".into();
    let r = c.register(req).await.unwrap().into_inner();
    assert!(!r.success && r.error.contains("whitespace"), "{r:?}");
    let mut req = register_req("f", "1", 128, "");
    req.parallel_invokes = 4;
    let r = c.register(req).await.unwrap().into_inner();
    assert!(!r.success && r.error.contains("parallel_invokes 4"), "{r:?}");
    let mut req = register_req("f", "1", 128, "");
    req.language = 7;
    let r = c.register(req).await.unwrap().into_inner();
    assert!(!r.success && r.error.contains("language 7"), "{r:?}");

    // The same name and version: different fields are a conflict, identical ones are fine.
    let ok = w.cli_ok(&reg("dup", &["--memory", "128"]));
    assert_eq!(ok["fqdn"], "dup-1");
    expect_err(
        reg("dup", &["--memory", "256"]),
        &["already registered with different fields", "memory_mb: registered 128, asked 256"],
    );
    let again = w.cli_ok(&reg("dup", &["--memory", "128"]));
    assert_eq!(again, json!({"success": true, "fqdn": "dup-1"}));
    // The memory bound itself is accepted.
    w.cli_ok(&["register", "--name", "big", "--version", "1", "--image", "img", "--memory", "4096"]);

    // Invocations of unknown functions, and bad arguments.
    expect_err(vec!["invoke", "--name", "ghost", "--version", "9"], &["ghost", "not registered", "not_registered"]);
    expect_err(
        vec!["invoke", "--name", "dup", "--version", "1", "-j", "[1, 2]"],
        &["--json-args must be a JSON object"],
    );
    expect_err(vec!["invoke", "--name", "dup", "--version", "1", "-j", "{oops"], &["--json-args is not valid JSON"]);
    expect_err(vec!["invoke", "--name", "dup", "--version", "1", "-a", "novalue"], &["\"novalue\" is not key=value"]);
    for (args, needle) in [
        ("{not json", "json_args is not valid JSON"),
        ("[1, 2]", "json_args must be a JSON object"),
        ("42", "json_args must be a JSON object"),
        (r#""text""#, "json_args must be a JSON object"),
        (r#"{"a": 1} trailing"#, "json_args is not valid JSON"),
    ] {
        let r = c.invoke(invoke_req("dup", "1", args)).await.unwrap().into_inner();
        assert!(!r.success, "json_args {args:?} must be refused: {r:?}");
        let v = result_json(&r);
        assert_eq!(v["kind"], "bad_arguments", "{v}");
        assert!(v["Error"].as_str().unwrap_or_default().contains(needle), "json_args {args:?}: {v}");
        assert_eq!(r.container_state, rpc::ContainerState::Error as i32);
    }
    let r = c.invoke(invoke_req("ghost", "9", "{}")).await.unwrap().into_inner();
    let v = result_json(&r);
    assert!(!r.success && v["kind"] == "not_registered", "{r:?}");
    assert!(
        v["Error"].as_str().unwrap().contains("\"ghost\"") && v["Error"].as_str().unwrap().contains("ghost-9"),
        "{v}"
    );

    expect_err(vec!["invoke-async-check", "--cookie", "deadbeef"], &["deadbeef", "unknown_cookie"]);
    expect_err(vec!["prewarm", "--name", "ghost", "--version", "1"], &["prewarm failed", "ghost", "not registered"]);
    expect_err(vec!["invoke-async", "--name", "ghost", "--version", "1"], &["ghost", "not registered"]);

    let e = c.invoke_async(async_req("ghost", "1", "{}")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("ghost"), "{e:?}");
    let e = c.invoke_async(async_req("dup", "1", "[]")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let p = c
        .prewarm(rpc::PrewarmRequest {
            function_name: "ghost".into(),
            function_version: "1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!p.success && p.message.contains("ghost"), "{p:?}");

    // Still serving, and nothing bad was registered.
    assert_eq!(w.cli_ok(&["ping"]), json!({"message": "Pong"}));
    let r = c.invoke(invoke_req("dup", "1", r#"{"fine": true}"#)).await.unwrap().into_inner();
    assert!(r.success, "{r:?}\n{}", w.log_context());
    assert_eq!(result_json(&r)["body"]["args"], json!({"fine": true}));
    let list = c.list_registered_funcs(rpc::ListFunctionRequest::default()).await.unwrap().into_inner();
    let mut names: Vec<String> = list.functions.iter().map(|f| f.function_name.clone()).collect();
    names.sort();
    assert_eq!(names, ["big", "dup", "viacontainerd", "viadocker"], "{list:?}");
    assert_eq!(w.metric("iluvatar_registrations_total"), 4.0);
    assert_eq!(w.metric("iluvatar_registered_functions"), 4.0);
    let h = c.health(rpc::HealthRequest::default()).await.unwrap().into_inner();
    assert_eq!(h.status, rpc::RpcHealthStatus::Healthy as i32);
    // A registration with valid timings still works after all the refusals.
    let r = c.register(register_req("timed", "1", 64, &timings(5, 1))).await.unwrap().into_inner();
    assert!(r.success, "{r:?}");
}
