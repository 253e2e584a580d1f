//! The controller's HTTP API: every route has an example in README ("HTTP API of the
//! controller") that answers as documented, run as written with curl against a real
//! controller and a sim worker; failures answer the status of their kind.

use iluvatar_testkit::cluster::*;
use iluvatar_testkit::{http_exchange, readme};
use serde_json::{Value, json};

#[test]
fn every_route_has_a_readme_example_that_answers_as_documented() {
    let ctl = Controller::start(json!({"type": "round_robin"}));
    let _w = Worker::start("worker", 0, &ctl);
    ctl.wait_healthy(1);
    let examples = readme::examples(&readme::readme(), "### HTTP API of the controller");
    let http = ctl.proc.addr("http");
    let (code, _, body) = http_exchange(&http, "GET", "/no/such/route", &[], None);
    assert_eq!(code, 404, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    let routes = listed["error"].as_str().and_then(|e| e.split("its routes: ").nth(1));
    let routes = routes.unwrap_or_else(|| panic!("no route list in {body}"));
    assert!(routes.split(", ").count() >= 11, "{routes}");
    for route in routes.split(", ") {
        let shown = examples.iter().any(|e| {
            let (method, path) = readme::request_of(&e.command, "C");
            readme::route_is(route, &method, &path)
        });
        assert!(shown, "README's HTTP API of the controller has no example of {route}");
    }
    readme::run(&examples, "C", &http);
}

#[test]
fn failures_answer_the_status_of_their_kind() {
    let ctl = Controller::start(json!({"type": "round_robin"}));
    let http = ctl.proc.addr("http");
    let post = |path: &str, body: Value| {
        let (code, _, text) = http_exchange(&http, "POST", path, &[], Some(&body.to_string()));
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        (code, v)
    };
    // Stored with no worker in service: it waits for one, and invocations have none.
    let f = json!({"function_name": "f", "function_version": "1", "image_name": "f", "memory": 16, "cpus": 1,
        "isolate": 32});
    let (code, v) = post("/register", f);
    assert_eq!((code, &v["success"]), (200, &json!(true)), "{v}");
    let (code, v) = post("/invoke", json!({"function_name": "f", "function_version": "1", "json_args": {"a": 1}}));
    assert_eq!((code, &v["kind"]), (503, &json!("no_worker")), "{v}");
    let (code, v) = post("/invoke_async", json!({"function_name": "g", "function_version": "1"}));
    assert_eq!((code, &v["kind"]), (404, &json!("not_registered")), "{v}");
    let (code, v) = post("/prewarm", json!({"function_name": "f", "function_version": "1"}));
    assert_eq!((code, &v["kind"]), (503, &json!("no_worker")), "{v}");
    let (code, v) = post("/register", json!({"function_name": "", "function_version": "1"}));
    assert_eq!((code, &v["kind"]), (400, &json!("bad_request")), "{v}");
    let (code, v) = post("/register_worker", json!({"name": "w", "host": "127.0.0.1", "prot": 1}));
    assert_eq!((code, &v["kind"]), (400, &json!("bad_request")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("unknown field `prot`"), "{v}");
    let (code, v) = post("/register_worker", json!({"name": "w", "host": "127.0.0.1"}));
    assert_eq!((code, &v["kind"]), (400, &json!("bad_request")), "{v}");
    let (code, _, text) = http_exchange(&http, "GET", "/invoke_async/nodot", &[], None);
    assert_eq!(code, 404, "{text}");
    assert!(text.contains(r#""kind":"unknown_cookie""#), "{text}");
    let (code, _, text) = http_exchange(&http, "PUT", "/workers/w", &[], None);
    assert_eq!(code, 405, "{text}");
}
