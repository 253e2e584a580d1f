//! The HTTP/JSON API and /metrics, over a bare TCP socket.

use iluvatar_testkit::{WorkerProcess, metric_value, readme};
use serde_json::{Value, json};

fn parse(what: &str, code: u16, body: &str) -> Value {
    assert_eq!(code, 200, "{what}: {body}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body}"))
}

#[test]
fn http_api_and_metrics() {
    let w = WorkerProcess::start(json!({"name": "http-worker"}));
    let get = |path: &str| {
        let (code, body) = w.http_get(path);
        parse(&format!("GET {path}"), code, &body)
    };
    let post = |path: &str, body: Value| {
        let (code, text) = w.http_post_json(path, &body.to_string());
        parse(&format!("POST {path} {body}"), code, &text)
    };

    assert_eq!(get("/ping"), json!({"message": "Pong"}));

    let r = post(
        "/register",
        json!({"function_name": "web", "function_version": "1", "image_name": "img/web", "memory": 64, "cpus": 1,
               "resource_timings_json": "{\"cold_dur_ms\": 5, \"warm_dur_ms\": 1}"}),
    );
    assert_eq!(r, json!({"success": true, "fqdn": "web-1", "error": ""}));
    // A refused registration answers 400, with the protocol's fields and its kind.
    let body = json!({"function_name": "web2", "function_version": "1", "image_name": "i", "memory": 0});
    let (code, text) = w.http_post_json("/register", &body.to_string());
    assert_eq!(code, 400, "{text}");
    let r: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((&r["success"], &r["kind"]), (&json!(false), &json!("bad_request")), "{r}");
    assert!(r["error"].as_str().unwrap().contains("memory 0 MB"), "{r}");

    let inv = json!({"function_name": "web", "function_version": "1", "json_args": "{\"q\": \"x\"}"});
    let r = post("/invoke", inv.clone());
    assert_eq!(r["success"], true, "{r}\n{}", w.log_context());
    assert_eq!(r["container_state"], 2, "COLD as its number: {r}");
    let res: Value = serde_json::from_str(r["json_result"].as_str().unwrap()).unwrap();
    assert_eq!(res["body"], json!({"sim": true, "fqdn": "web-1", "args": {"q": "x"}}), "{res}");
    let r = post("/invoke", inv);
    assert_eq!(r["container_state"], 4, "WARM: {r}");
    let (code, text) = w.http_post_json("/invoke", r#"{"function_name": "nope", "function_version": "1"}"#);
    assert_eq!(code, 404, "{text}");
    let r: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((&r["success"], &r["kind"]), (&json!(false), &json!("not_registered")), "{r}");
    assert!(r["json_result"].as_str().unwrap().contains("not_registered"), "{r}");

    let a = post("/invoke_async", json!({"function_name": "web", "function_version": "1", "json_args": "{}"}));
    let cookie = a["lookup_cookie"].as_str().unwrap_or_else(|| panic!("{a}")).to_string();
    let mut done = None;
    for _ in 0..250 {
        let (code, text) = w.http_get(&format!("/invoke_async/{cookie}"));
        if code != 202 {
            done = Some(parse("the async result", code, &text));
            break;
        }
        assert!(text.contains("Pending"), "202 while it runs: {text}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let done = done.unwrap_or_else(|| w.fail("async invocation stayed pending"));
    assert_eq!(done["success"], true, "{done}");
    let (code, text) = w.http_get(&format!("/invoke_async/{cookie}"));
    assert_eq!(code, 404, "collected once: {text}");
    assert!(text.contains(r#""kind":"unknown_cookie""#), "{text}");
    let (code, body) = w.http_post_json("/invoke_async", r#"{"function_name": "nope", "function_version": "1"}"#);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("nope"), "{body}");
    let (code, body) =
        w.http_post_json("/invoke_async", r#"{"function_name": "web", "function_version": "1", "json_args": "[]"}"#);
    assert_eq!(code, 400, "{body}");

    let s = get("/status");
    assert_eq!(s["worker_name"], "http-worker", "{s}");
    assert_eq!(s["num_running_funcs"], 0, "{s}");
    assert_eq!(get("/health"), json!({"status": 0}));
    let f = get("/functions");
    assert_eq!(f, json!({"functions": [{"function_name": "web", "function_version": "1", "image_name": "img/web"}]}));
    let c = get("/functions/characteristics");
    let web = &c["functions"]["web-1"];
    assert_eq!(web["memory_mb"], 64, "{c}");
    assert_eq!((web["cold"]["count"].as_u64(), web["warm"]["count"].as_u64()), (Some(1), Some(2)), "{c}");
    assert_eq!((web["exec"]["count"].as_u64(), web["iat"]["count"].as_u64()), (Some(3), Some(2)), "{c}");
    for stat in ["min_us", "max_us", "mean_us", "latest_us", "smoothed_us"] {
        assert!(web["warm"][stat].as_f64().is_some_and(|x| x > 0.0), "warm {stat}: {c}");
    }
    let e = post("/est_invoke_time", json!({"fqdns": ["web-1", "other-1"]}));
    let est = e["est_time"].as_array().unwrap_or_else(|| panic!("{e}"));
    assert!(est[0].as_f64().unwrap() >= 0.0 && est[1].as_f64() == Some(0.0), "{e}");

    let m = w.metrics();
    for series in [
        "iluvatar_invocations_total{outcome=\"success\"}",
        "iluvatar_invocations_total{outcome=\"error\"}",
        "iluvatar_cold_starts_total",
        "iluvatar_queue_length",
        "iluvatar_containers{state=\"idle\"}",
        "iluvatar_containers{state=\"busy\"}",
        "iluvatar_memory_used_mb",
        "iluvatar_invocation_duration_seconds_bucket{le=\"+Inf\"}",
        "iluvatar_invocation_duration_seconds_count",
    ] {
        assert!(metric_value(&m, series).is_some(), "/metrics lacks {series}:\n{m}");
    }
    assert!(m.contains("# TYPE iluvatar_invocation_duration_seconds histogram"), "{m}");
    assert_eq!(metric_value(&m, "iluvatar_invocations_total{outcome=\"success\"}"), Some(3.0), "{m}");
    assert_eq!(
        metric_value(&m, "iluvatar_invocations_total{outcome=\"error\"}"),
        Some(0.0),
        "refused before the invoker: {m}"
    );
    assert_eq!(metric_value(&m, "iluvatar_cold_starts_total"), Some(1.0), "{m}");
    assert_eq!(metric_value(&m, "iluvatar_containers{state=\"idle\"}"), Some(1.0), "{m}");
    assert_eq!(metric_value(&m, "iluvatar_memory_used_mb"), Some(64.0), "{m}");
    assert_eq!(metric_value(&m, "iluvatar_queue_length"), Some(0.0), "{m}");
    assert_eq!(metric_value(&m, "iluvatar_invocation_duration_seconds_count"), Some(3.0), "{m}");
    assert_eq!(metric_value(&m, "iluvatar_registered_functions"), Some(1.0), "{m}");
    // Memory-seconds run up to the moment of reading: a container has been held since the
    // first invocation, idle part of that time.
    let held = metric_value(&m, "iluvatar_pool_memory_held_mb_seconds").unwrap_or_else(|| panic!("{m}"));
    let idle = metric_value(&m, "iluvatar_pool_memory_idle_mb_seconds").unwrap_or_else(|| panic!("{m}"));
    assert!(held > 0.0 && idle > 0.0 && idle <= held, "held {held}, idle {idle}");
    assert!(m.contains("# TYPE iluvatar_pool_memory_held_mb_seconds counter"), "{m}");
    assert_eq!(metric_value(&m, "iluvatar_function_samples{fqdn=\"web-1\",kind=\"warm\"}"), Some(2.0), "{m}");
    assert_eq!(metric_value(&m, "iluvatar_function_memory_mb{fqdn=\"web-1\"}"), Some(64.0), "{m}");
    assert!(
        metric_value(&m, "iluvatar_function_time_seconds{fqdn=\"web-1\",kind=\"cold\",stat=\"max\"}")
            .is_some_and(|x| x > 0.0),
        "{m}"
    );
    std::thread::sleep(std::time::Duration::from_millis(50));
    let later = w.metric("iluvatar_pool_memory_idle_mb_seconds");
    assert!(
        later >= idle + 64.0 * 0.05 * 0.9,
        "an idle 64 MB container accrues while nothing changes: {idle} -> {later}"
    );

    // Malformed or mistyped bodies are client errors, and the worker carries on.
    for (path, body) in [
        ("/invoke", "{not json"),
        ("/register", "{\"function_name\": "),
        ("/register", r#"{"function_name": "x", "memory": "lots"}"#),
        ("/invoke", "[1, 2]"),
    ] {
        let (code, text) = w.http_post_json(path, body);
        assert!((400..500).contains(&code), "POST {path} {body:?} answered {code}: {text}");
    }
    let (code, _) = w.http_get("/no/such/route");
    assert_eq!(code, 404);
    let r = post("/clean", json!({}));
    assert_eq!(r, json!({}));
    assert_eq!(w.metric("iluvatar_containers{state=\"idle\"}"), 0.0);
    assert_eq!(get("/ping"), json!({"message": "Pong"}));
}

/// Every route the worker serves has an example in README's "HTTP API", and every example
/// there answers what the README shows, run as written (curl) against a real worker.
#[test]
fn every_route_has_a_readme_example_that_answers_as_documented() {
    let w = WorkerProcess::start(json!({"name": "readme-worker"}));
    let examples = readme::examples(&readme::readme(), "### HTTP API");
    // The routes, as the worker lists them for a path it does not serve.
    let (code, body) = w.http_get("/no/such/route");
    assert_eq!(code, 404, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    let routes = listed["error"].as_str().and_then(|e| e.split("its routes: ").nth(1));
    let routes = routes.unwrap_or_else(|| panic!("no route list in {body}"));
    assert!(routes.split(", ").count() >= 13, "{routes}");
    for route in routes.split(", ") {
        let shown = examples.iter().any(|e| {
            let (method, path) = readme::request_of(&e.command, "H");
            readme::route_is(route, &method, &path)
        });
        assert!(shown, "README's HTTP API has no example of {route}");
    }
    readme::run(&examples, "H", &w.http_addr);
}

/// Each failure answers the status of its kind, as over gRPC: a timeout 504, no memory 503,
/// a full queue 429.
#[test]
fn failures_answer_the_status_of_their_kind() {
    let w = WorkerProcess::start(json!({
        "invoker": {"concurrency": 2, "max_queued": 1, "invocation_timeout_ms": 1500, "memory_wait_ms": 100},
        "container_pool": {"memory_mb": 256},
    }));
    let register = |name: &str, memory: u64, ms: u64| {
        let body = json!({"function_name": name, "function_version": "1", "image_name": name, "memory": memory,
            "cpus": 1, "isolate": 32, "resource_timings_json": {"cold_dur_ms": ms, "warm_dur_ms": ms}});
        let (code, text) = w.http_post_json("/register", &body.to_string());
        assert_eq!(code, 200, "{text}");
    };
    let invoke_body = |name: &str| json!({"function_name": name, "function_version": "1"}).to_string();
    let failed = |name: &str, status: u16, kind: &str| {
        let (code, text) = w.http_post_json("/invoke", &invoke_body(name));
        assert_eq!(code, status, "{name}: {text}\n{}", w.log_context());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((&v["kind"], &v["success"]), (&json!(kind), &json!(false)), "{v}");
        assert!(v["json_result"].as_str().unwrap().contains(kind), "the protocol's answer is kept: {v}");
    };
    let in_background = |name: &str| {
        let (addr, body) = (w.http_addr.clone(), invoke_body(name));
        std::thread::spawn(move || iluvatar_testkit::http_post_json(&addr, "/invoke", &body))
    };
    let wait_status = |field: &str, want: u64| {
        let ok = iluvatar_testkit::eventually(std::time::Duration::from_secs(10), || {
            let (_, s) = w.http_get("/status");
            serde_json::from_str::<Value>(&s).unwrap()[field].as_u64() == Some(want)
        });
        assert!(ok, "{field} never became {want}: {}", w.http_get("/status").1);
    };

    register("slow", 16, 5000);
    failed("slow", 504, "timeout");

    register("big", 200, 1000);
    register("big2", 200, 10);
    let holding = in_background("big");
    wait_status("num_running_funcs", 1);
    failed("big2", 503, "no_memory");
    assert_eq!(holding.join().unwrap().0, 200);

    register("hold", 8, 1000);
    let running: Vec<_> = (0..2).map(|_| in_background("hold")).collect();
    wait_status("num_running_funcs", 2);
    let queued = in_background("hold");
    wait_status("cpu_queue_len", 1);
    failed("hold", 429, "queue_full");
    for t in running.into_iter().chain([queued]) {
        assert_eq!(t.join().unwrap().0, 200);
    }
}

/// Hostile bodies (too large, deeply nested, not the message, not JSON) sent from many threads
/// at once each get their answer (a 4xx, or a success for valid JSON however deep), and the
/// worker keeps serving; a gRPC client on the HTTP port is told where it is.
#[tokio::test]
async fn hostile_bodies_are_refused_while_the_worker_serves() {
    let w = WorkerProcess::start(json!({}));
    let reg = json!({"function_name": "f", "function_version": "1", "image_name": "f", "memory": 16, "cpus": 1,
        "isolate": 32, "resource_timings_json": {"cold_dur_ms": 2, "warm_dur_ms": 1}});
    assert_eq!(w.http_post_json("/register", &reg.to_string()).0, 200);
    let deep_array = format!(r#"{{"function_name":"f","function_version":"1","json_args":{}}}"#, "[".repeat(100_000));
    // Valid however deep: passed on as text, never parsed recursively by the worker.
    let deep_object = format!(
        r#"{{"function_name":"f","function_version":"1","json_args":{}1{}}}"#,
        r#"{"a":"#.repeat(100_000),
        "}".repeat(100_000)
    );
    let huge =
        format!(r#"{{"function_name":"f","function_version":"1","json_args":{{"pad":"{}"}}}}"#, "x".repeat(9 << 20));
    let cases: Vec<(String, u16)> = vec![
        (deep_array, 400),
        (deep_object, 200),
        (huge, 413),
        (r#""just a string""#.to_string(), 400),
        (r#"{"function_name":"f","function_version":"1","json_args":{"a":1}"#.to_string(), 400),
        (r#"{"function_name":"f","function_version":"1","transaction_idd":"t"}"#.to_string(), 400),
    ];
    let addr = w.http_addr.clone();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let (addr, cases) = (addr.clone(), cases.clone());
            std::thread::spawn(move || {
                for round in 0..4 {
                    for (body, want) in &cases {
                        let (code, text) = iluvatar_testkit::http_post_json(&addr, "/invoke", body);
                        assert_eq!(code, *want, "thread {t} round {round}: {}...: {text}", &body[..body.len().min(80)]);
                        if *want != 200 {
                            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
                            assert!(v["error"].is_string() && v["kind"].is_string(), "{v}");
                        }
                    }
                    let good = r#"{"function_name":"f","function_version":"1","json_args":{"round":1}}"#;
                    let (code, text) = iluvatar_testkit::http_post_json(&addr, "/invoke", good);
                    assert_eq!(code, 200, "{text}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // A gRPC client on the HTTP port gets a status saying so.
    let mut grpc = iluvatar_testkit::worker::connect(format!("http://{}", w.http_addr)).await.unwrap();
    let s = grpc.ping(iluvatar_rpc::PingRequest::default()).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unimplemented, "{s:?}");
    assert!(s.message().contains("HTTP/JSON port of the worker, not its gRPC port"), "{s:?}");
    assert_eq!(w.metric("iluvatar_invocations_total{outcome=\"success\"}"), 48.0, "6 threads x 4 rounds x 2");
}
