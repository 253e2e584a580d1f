//! End-to-end: bearer tokens on the controller (gRPC and HTTP), between the controller and
//! its workers (the controller's token for `register_worker`, the workers' token for the
//! controller's calls), and the refusal to serve off loopback without a token.

use iluvatar_rpc as rpc;
use iluvatar_testkit::auth::{self, refused, token_file};
use iluvatar_testkit::cluster::*;
use iluvatar_testkit::{bin, http_exchange, unique_dir};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

async fn controller_client(ctl: &Controller, token: Option<&str>) -> rpc::auth::ControllerClient {
    auth::controller_client(format!("http://127.0.0.1:{}", ctl.proc.port()), token).await
}

async fn worker_client(w: &Worker, token: Option<&str>) -> rpc::auth::WorkerClient {
    auth::worker_client(format!("http://{}", w.proc.grpc()), token).await
}

/// One HTTP/1.1 exchange with the controller's HTTP API: (status, head, body).
fn http(ctl: &Controller, method: &str, path: &str, authorization: Option<&str>, body: &str) -> (u16, String, String) {
    let headers: Vec<(&str, &str)> = authorization.iter().map(|a| ("Authorization", *a)).collect();
    http_exchange(&ctl.proc.addr("http"), method, path, &headers, Some(body))
}

fn ping() -> rpc::PingRequest {
    auth::ping("auth")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_checks_the_token_on_every_grpc_call_and_http_request() {
    let dir = unique_dir("auth");
    let token = token_file(&dir, "token", "ctl-token-91\n", 0o600);
    // On 0.0.0.0 (the tests' default) with a token: no `insecure` needed.
    let mut ctl = Controller::start_with(json!({"auth": {"token_file": token}}), &unique_dir("controller-state"));
    assert_eq!(ctl.proc.ready["auth"], true, "{}", ctl.proc.ready);
    let intruder = worker_info("intruder", "127.0.0.1", 1);

    for (t, why) in
        [(None, "missing token"), (Some("ctl-token-9"), "wrong token"), (Some("ctl-token-911"), "wrong token")]
    {
        let mut c = controller_client(&ctl, t).await;
        refused(c.ping(ping()).await, why, "ping");
        refused(c.register_worker(intruder.clone()).await, why, "register_worker");
        refused(c.register(function("f", 1)).await, why, "register");
        refused(c.invoke(invoke_req("f")).await, why, "invoke");
    }
    // The plain generated client is refused too.
    refused(ctl.client().await.ping(ping()).await, "missing token", "ping without an interceptor");

    // HTTP: every route, /register_worker and /metrics included.
    let bad_worker = serde_json::to_string(&intruder).unwrap();
    for (method, path, body) in
        [("GET", "/workers", ""), ("GET", "/metrics", ""), ("POST", "/register_worker", bad_worker.as_str())]
    {
        for (authorization, why) in [
            (None, "missing token"),
            (Some("Bearer ctl-token-9"), "wrong token"),
            (Some("Token ctl-token-91"), "not `Bearer <token>`"),
        ] {
            let (code, head, text) = http(&ctl, method, path, authorization, body);
            assert_eq!(code, 401, "{method} {path} {authorization:?}: {text}");
            assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(v["error"].as_str().unwrap_or("").contains(why), "{method} {path}: {v}");
        }
    }

    // The right token, after all those refusals: served, and no intruder got in.
    let mut c = controller_client(&ctl, Some("ctl-token-91")).await;
    assert_eq!(c.ping(ping()).await.expect("ping with the token").into_inner().message, "Pong");
    let (code, _, text) = http(&ctl, "GET", "/workers", Some("Bearer ctl-token-91"), "");
    assert_eq!(code, 200, "{text}");
    assert!(!text.contains("intruder"), "a refused register_worker got in: {text}");
    let (code, _, text) = http(&ctl, "GET", "/metrics", Some("bearer ctl-token-91"), "");
    assert_eq!(code, 200, "{text}");
    ctl.token = Some("ctl-token-91".into());
    assert!(ctl.worker("intruder").is_none());

    // The CLI with --controller and --token-file.
    let cli = |extra: &[&str]| {
        Command::new(bin("iluvatar_worker_cli"))
            .args(["--controller", "--address", "127.0.0.1", "--port", &ctl.proc.port().to_string()])
            .args(extra)
            .arg("ping")
            .env_remove("ILUVATAR_TOKEN_FILE")
            .output()
            .unwrap()
    };
    let out = cli(&[]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("missing token"), "{out:?}");
    let out = cli(&["--token-file", token.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_and_a_worker_with_tokens_register_and_invoke_end_to_end() {
    let dir = unique_dir("auth");
    // Clients hold the controller's token; only the controller holds the workers' token.
    let ctl_token = token_file(&dir, "controller", "ctl-token-22", 0o600);
    let wrk_token = token_file(&dir, "worker", "wrk-token-33", 0o400);
    let auth = json!({"token_file": ctl_token, "worker_token_file": wrk_token});
    let mut ctl = Controller::start_with(json!({"auth": auth}), &unique_dir("controller-state"));
    ctl.token = Some("ctl-token-22".into());
    let w = Worker::start_with(
        "w0",
        0,
        &ctl,
        json!({"auth": {"token_file": wrk_token, "controller_token_file": ctl_token}}),
    );
    assert_eq!(w.proc.ready["auth"], true, "{}", w.proc.ready);
    // register_worker carried the controller's token; health checks carry the worker's.
    ctl.wait_healthy(1);

    let mut c = controller_client(&ctl, Some("ctl-token-22")).await;
    let r = c.register(function("f", 1)).await.unwrap().into_inner();
    assert!(r.success, "{}", r.error);
    for _ in 0..3 {
        let r = c.invoke(invoke_req("f")).await.unwrap().into_inner();
        assert_eq!(outcome(&r), Ok("w0".to_string()), "{}", r.json_result);
    }
    let r = c.prewarm(rpc::PrewarmRequest {
        function_name: "f".into(),
        function_version: "1".into(),
        ..Default::default()
    });
    assert!(r.await.unwrap().into_inner().success);

    // The worker itself takes its own token only: not the controller's, not none.
    refused(worker_client(&w, None).await.ping(ping()).await, "missing token", "worker ping");
    refused(worker_client(&w, Some("ctl-token-22")).await.ping(ping()).await, "wrong token", "worker ping");
    let mut direct = worker_client(&w, Some("wrk-token-33")).await;
    let listed = direct.list_registered_funcs(rpc::ListFunctionRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.functions.len(), 1, "the controller's registration reached the worker: {listed:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_between_controller_and_workers_keep_them_apart() {
    let dir = unique_dir("auth");
    let ctl_token = token_file(&dir, "controller", "ctl-token-44", 0o600);
    let wrk_token = token_file(&dir, "worker", "wrk-token-55", 0o600);
    let stale = token_file(&dir, "stale", "wrk-token-54", 0o600);
    // The controller holds a stale worker token.
    let auth = json!({"token_file": ctl_token, "worker_token_file": stale});
    let mut ctl = Controller::start_with(json!({"auth": auth}), &unique_dir("controller-state"));
    ctl.token = Some("ctl-token-44".into());
    // w0 registers with the right controller token; w1 with a wrong one.
    let w0 = Worker::start_with(
        "w0",
        0,
        &ctl,
        json!({"auth": {"token_file": wrk_token, "controller_token_file": ctl_token}}),
    );
    let w1 =
        Worker::start_with("w1", 1, &ctl, json!({"auth": {"token_file": wrk_token, "controller_token_file": stale}}));

    // w0 joins but never comes into service: the controller's checks are refused.
    let w = ctl.wait_worker("w0", false, 200);
    assert_eq!(w["healthy"], false);
    // w1 is told its token is wrong and is never listed.
    let mut told = false;
    for _ in 0..200 {
        if w1.proc.log_text().contains("wrong token") {
            told = true;
            break;
        }
        std::thread::sleep(POLL);
    }
    assert!(told, "w1 does not say why it cannot register:\n{}", w1.proc.log_text());
    std::thread::sleep(Duration::from_millis(600));
    assert!(ctl.worker("w1").is_none(), "{}", ctl.http_get("/workers"));
    assert_eq!(ctl.worker("w0").unwrap()["healthy"], false, "{}", ctl.http_get("/workers"));
    let log = ctl.proc.log_text();
    assert!(log.contains("worker out of service") && log.contains("wrong token"), "the controller says why:\n{log}");
    // Nothing can run: no worker is in service.
    let mut c = controller_client(&ctl, Some("ctl-token-44")).await;
    let _ = c.register(function("f", 1)).await.unwrap();
    let r = c.invoke(invoke_req("f")).await.unwrap().into_inner();
    assert!(!r.success, "{}", r.json_result);
    drop((w0, w1));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs the controller binary with `config`; expects it to refuse to start within 20 s.
fn refused_start(config: Value) -> String {
    auth::refused_start("iluvatar_controller", config)
}

#[test]
fn off_loopback_a_controller_needs_a_token_or_insecure() {
    let lo = json!({"address": "127.0.0.1", "port": 0});
    let e = refused_start(
        json!({"grpc": {"address": "0.0.0.0", "port": 0}, "http": {"enabled": false, "address": "127.0.0.1", "port": 0}}),
    );
    assert!(e.contains("grpc.address \"0.0.0.0\" is not a loopback address"), "{e}");
    assert!(e.contains("auth.token_file") && e.contains("auth.insecure = true"), "both ways out: {e}");
    let e = refused_start(json!({"grpc": lo, "http": {"enabled": true, "address": "10.1.2.3", "port": 0}}));
    assert!(e.contains("http.address \"10.1.2.3\""), "{e}");
    let dir = unique_dir("auth-files");
    let open = token_file(&dir, "open", "tok", 0o644);
    let e = refused_start(json!({"grpc": lo, "auth": {"token_file": open}}));
    assert!(e.contains("auth.token_file") && e.contains("accessible by its group and others"), "{e}");
    let empty = token_file(&dir, "empty", "\n", 0o600);
    let e = refused_start(json!({"grpc": lo, "auth": {"worker_token_file": empty}}));
    assert!(e.contains("auth.worker_token_file") && e.contains("is empty"), "{e}");

    // `insecure` allows it; loopback without a token is allowed as before.
    let ctl = Controller::start_with(json!({"auth": {"insecure": true}}), &unique_dir("controller-state"));
    assert_eq!((ctl.proc.ready["auth"].as_bool(), ctl.healthy_workers()), (Some(false), 0));
    let ctl = Controller::start_with(json!({"grpc": lo, "auth": {}}), &unique_dir("controller-state"));
    assert_eq!(ctl.proc.ready["auth"], false, "{}", ctl.proc.ready);
    std::fs::remove_dir_all(dir).unwrap();
}
