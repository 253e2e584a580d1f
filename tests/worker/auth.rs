//! Bearer-token authentication of the worker: every gRPC call, HTTP request and CLI call
//! without the token, or with a wrong one, is refused with a clear message while the
//! worker keeps serving; a worker listening off loopback refuses to start without a token
//! unless its config says `auth.insecure`.

use iluvatar_rpc as rpc;
use iluvatar_testkit::auth::{self, refused, token_file};
use iluvatar_testkit::*;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

/// A gRPC client of the worker sending `token` (none: no header).
async fn client_with(w: &WorkerProcess, token: Option<&str>) -> rpc::auth::WorkerClient {
    auth::worker_client(format!("http://127.0.0.1:{}", w.grpc_port), token).await
}

fn ping() -> rpc::PingRequest {
    auth::ping("e2e-auth")
}

#[tokio::test]
async fn every_grpc_call_http_request_and_cli_call_needs_the_token() {
    let dir = unique_dir("auth-tokens");
    let good = token_file(&dir, "token", "e2e-secret-7f3a\n", 0o600);
    let w = WorkerProcess::start(json!({"auth": {"token_file": good}}));
    assert_eq!(w.ready["auth"], true, "{}", w.ready);

    // gRPC: no token, a wrong one, another scheme; registrations and invocations included.
    let reg = register_req("guarded", "1", 16, &timings(5, 1));
    for (token, why) in
        [(None, "missing token"), (Some("e2e-secret-7f3b"), "wrong token"), (Some("e2e-secret-7f3"), "wrong token")]
    {
        let mut c = client_with(&w, token).await;
        refused(c.ping(ping()).await, why, "ping");
        refused(c.register(reg.clone()).await, why, "register");
        refused(c.invoke(invoke_req("guarded", "1", "{}")).await, why, "invoke");
        refused(c.status(rpc::StatusRequest::default()).await, why, "status");
        refused(c.list_registered_funcs(rpc::ListFunctionRequest::default()).await, why, "list");
    }
    // The plain generated client (no interceptor) is refused the same way.
    refused(w.client().await.ping(ping()).await, "missing token", "ping without an interceptor");

    // The right token: nothing above got through, and everything is served.
    let mut c = client_with(&w, Some("e2e-secret-7f3a")).await;
    assert_eq!(c.ping(ping()).await.expect("ping with the token").into_inner().message, "Pong");
    let listed = c.list_registered_funcs(rpc::ListFunctionRequest::default()).await.unwrap().into_inner();
    assert!(listed.functions.is_empty(), "a refused registration got through: {listed:?}");
    let r = c.register(reg).await.unwrap().into_inner();
    assert!(r.success, "{}", r.error);
    let r = c.invoke(invoke_req("guarded", "1", "{}")).await.unwrap().into_inner();
    assert!(r.success, "{}", r.json_result);

    // HTTP: every route, /metrics and unknown paths included.
    let bearer = |t: &str| format!("Bearer {t}");
    let invoke_body = r#"{"function_name":"guarded","function_version":"1","json_args":"{}"}"#;
    for (method, path, body) in [
        ("GET", "/ping", None),
        ("GET", "/metrics", None),
        ("POST", "/invoke", Some(invoke_body)),
        ("GET", "/nope", None),
    ] {
        let wrong = bearer("e2e-secret-7f3");
        for (headers, why) in [
            (vec![], "missing token"),
            (vec![("Authorization", wrong.as_str())], "wrong token"),
            (vec![("Authorization", "Basic ZTJlLXNlY3JldC03ZjNh")], "not `Bearer <token>`"),
        ] {
            let (code, head, text) = http_exchange(&w.http_addr, method, path, &headers, body);
            assert_eq!(code, 401, "{method} {path} {headers:?}: {text}");
            assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(v["error"].as_str().unwrap_or("").contains(why), "{method} {path}: {v}");
        }
    }
    let right = bearer("e2e-secret-7f3a");
    let (code, _, text) = http_exchange(&w.http_addr, "GET", "/ping", &[("authorization", &right)], None);
    assert_eq!(code, 200, "{text}");
    let (code, _, text) =
        http_exchange(&w.http_addr, "POST", "/invoke", &[("Authorization", &right)], Some(invoke_body));
    assert_eq!(code, 200, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["success"], true, "{text}");
    let (code, _, text) = http_exchange(&w.http_addr, "GET", "/metrics", &[("Authorization", &right)], None);
    assert!(code == 200 && text.contains("iluvatar_"), "{code}: {text}");

    // The CLI: --token-file or ILUVATAR_TOKEN_FILE; a wrong or unsafe file is named.
    let e = w.cli_err(&["ping"]);
    assert!(e.contains("missing token"), "{e}");
    let bad = token_file(&dir, "bad", "e2e-secret-7f3", 0o600);
    let e = w.cli_err(&["--token-file", bad.to_str().unwrap(), "status"]);
    assert!(e.contains("wrong token"), "{e}");
    let open = token_file(&dir, "open", "e2e-secret-7f3a", 0o644);
    let e = w.cli_err(&["--token-file", open.to_str().unwrap(), "ping"]);
    assert!(e.contains("accessible by its group and others") && e.contains("chmod 600"), "{e}");
    assert_eq!(w.cli_ok(&["--token-file", good.to_str().unwrap(), "ping"])["message"], "Pong");
    let mut cmd = Command::new(bin("iluvatar_worker_cli"));
    cmd.args(["--port", &w.grpc_port.to_string(), "list"]).env("ILUVATAR_TOKEN_FILE", &good);
    let out = output_timeout(cmd, Duration::from_secs(30));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("guarded"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs the worker binary with `config` and expects it to refuse to start; its stderr.
fn refused_start(config: Value) -> String {
    let mut config = config;
    config["isolation"] = json!({"backends": [{"type": "sim"}]});
    auth::refused_start("iluvatar_worker", config)
}

#[tokio::test]
async fn off_loopback_a_worker_needs_a_token_or_insecure() {
    let any = json!({"address": "0.0.0.0", "port": 0});
    let lo = json!({"address": "127.0.0.1", "port": 0});
    let e = refused_start(json!({"grpc": any, "http": {"enabled": false, "address": "127.0.0.1", "port": 0}}));
    assert!(e.contains("grpc.address \"0.0.0.0\" is not a loopback address"), "{e}");
    assert!(e.contains("auth.token_file") && e.contains("auth.insecure = true"), "both ways out: {e}");
    let e = refused_start(json!({"grpc": lo, "http": {"enabled": true, "address": "::", "port": 0}}));
    assert!(e.contains("http.address \"::\""), "{e}");

    // Unusable token files are refused by reason, wherever the worker listens.
    let dir = unique_dir("auth-files");
    for (name, text, mode, why) in [
        ("empty", " \n", 0o600, "is empty"),
        ("group", "tok", 0o640, "accessible by its group (mode 0640)"),
        ("others", "tok", 0o604, "accessible by others (mode 0604)"),
    ] {
        let f = token_file(&dir, name, text, mode);
        let e = refused_start(json!({"grpc": lo, "auth": {"token_file": f}}));
        assert!(e.contains("auth.token_file") && e.contains(why), "{name}: {e}");
    }
    let e = refused_start(json!({"grpc": lo, "auth": {"token_file": dir.join("absent")}}));
    assert!(e.contains("cannot read token file") && e.contains("absent"), "{e}");
    let good = token_file(&dir, "good", "tok", 0o600);
    let e =
        refused_start(json!({"grpc": lo, "auth": {"token_file": good, "controller_token_file": dir.join("absent")}}));
    assert!(e.contains("auth.controller_token_file"), "{e}");

    // `insecure` allows it (no token asked), and a token allows it too (a token asked).
    let w = WorkerProcess::start(json!({"grpc": any, "http": {"address": "0.0.0.0"}, "auth": {"insecure": true}}));
    assert_eq!(w.ready["auth"], false, "{}", w.ready);
    assert!(w.ready["grpc"].as_str().unwrap().starts_with("0.0.0.0:"), "{}", w.ready);
    assert_eq!(client_with(&w, None).await.ping(ping()).await.expect("insecure serves").into_inner().message, "Pong");
    let w = WorkerProcess::start(json!({"grpc": any, "http": {"address": "0.0.0.0"}, "auth": {"token_file": good}}));
    assert_eq!(w.ready["auth"], true, "{}", w.ready);
    refused(client_with(&w, None).await.ping(ping()).await, "missing token", "ping");
    assert!(client_with(&w, Some("tok")).await.ping(ping()).await.is_ok());
    // Loopback without a token keeps working as before.
    let w = WorkerProcess::start(json!({}));
    assert_eq!(w.ready["auth"], false);
    assert_eq!(w.cli_ok(&["ping"])["message"], "Pong");
    drop(w);
    std::fs::remove_dir_all(dir).unwrap();
}
