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
