//! The benchmarks' lean gRPC client (`sending::lean`) against a real worker process on
//! loopback: answers, refusals, a token, many calls at once on one connection, and servers
//! that are not what they claim; then `control-plane` end to end with `--keep-cpus-awake`.

use iluvatar_load_gen::sending::lean::LeanClient;
use iluvatar_rpc as rpc;
use iluvatar_testkit::auth::token_file;
use iluvatar_testkit::loadgen::*;
use iluvatar_testkit::{WorkerProcess, s, unique_dir as temp_dir};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;
use tonic::Code;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn invoke(name: &str, tid: &str) -> rpc::InvokeRequest {
    rpc::InvokeRequest {
        function_name: name.into(),
        function_version: "1".into(),
        json_args: "{}".into(),
        transaction_id: tid.into(),
    }
}

/// Registers the zero-duration sim function `name` on `w`: a connected generated client and
/// the worker's endpoint.
async fn registered(w: &WorkerProcess, name: &str) -> (iluvatar_testkit::Client, String) {
    let mut c = w.client().await;
    let reg = iluvatar_load_gen::commands::control_plane::zero_function(name);
    assert!(c.register(reg).await.unwrap().into_inner().success);
    (c, format!("http://127.0.0.1:{}", w.grpc_port))
}

#[test]
fn calls_answer_like_the_generated_client_and_run_concurrently_on_one_connection() {
    let w = WorkerProcess::start(json!({"log_level": "warn"}));
    runtime().block_on(async {
        let (mut c, endpoint) = registered(&w, "lean").await;
        let lean = LeanClient::connect(&endpoint, &rpc::auth::ClientAuth::none()).await.unwrap();

        let r = lean.invoke(&invoke("lean", "t-1")).await.unwrap();
        assert!(r.success, "{}", r.json_result);
        let parsed = rpc::json_result::parse(&r.json_result).expect("the result is the worker's JSON");
        assert!(parsed.function_and_total_us().is_some(), "{}", r.json_result);
        // The next call, through tonic's client and then the lean one: the same warm answer.
        let t = c.invoke(invoke("lean", "t-2")).await.unwrap().into_inner();
        let r = lean.invoke(&invoke("lean", "t-2b")).await.unwrap();
        assert_eq!((t.success, t.container_state), (r.success, r.container_state));
        assert_eq!(r.container_state, rpc::ContainerState::Warm as i32);

        // A refusal is an answer (success false), not a transport error.
        let r = lean.invoke(&invoke("nobody", "t-3")).await.unwrap();
        assert!(!r.success && r.json_result.contains("nobody"), "{}", r.json_result);

        // 64 calls at once on clones of one connection, half of them refused: every one
        // answered, each with its own answer (the refusals name their own function).
        let calls = (0..64).map(|i| {
            let lean = lean.clone();
            let name = if i % 2 == 0 { "lean".to_string() } else { format!("nobody-{i}-x") };
            async move { (name.clone(), lean.invoke(&invoke(&name, &format!("many-{i}"))).await) }
        });
        for (name, answer) in join_all(calls).await {
            let r = answer.unwrap_or_else(|e| panic!("{name}: {e}"));
            if name == "lean" {
                assert!(r.success, "{}", r.json_result);
            } else {
                assert!(!r.success && r.json_result.contains(&name), "{name}: {}", r.json_result);
            }
        }
    });
}

/// Runs every future at once (tasks on this thread) and gives their outputs in order.
async fn join_all<F>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[test]
fn the_token_is_sent_and_a_refusal_names_it() {
    let dir = temp_dir("lean-auth");
    let token = token_file(&dir, "worker-token", "lean-token-3\n", 0o600);
    let worker = daemon(
        "iluvatar_worker",
        &dir,
        json!({"isolation": {"backends": [{"type": "sim"}]}, "grpc": {"address": "127.0.0.1", "port": 0},
            "http": {"enabled": false}, "state_dir": dir.join("worker"), "log_level": "warn",
            "auth": {"token_file": token}}),
    );
    let endpoint = format!("http://127.0.0.1:{}", worker.port());
    runtime().block_on(async {
        let none = LeanClient::connect(&endpoint, &rpc::auth::ClientAuth::none()).await.unwrap();
        let e = none.invoke(&invoke("f", "t")).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e}");
        assert!(e.message().contains("missing token"), "{e}");

        let auth = rpc::auth::ClientAuth::from_file(Some(&token)).unwrap();
        let with = LeanClient::connect(&endpoint, &auth).await.unwrap();
        // Through the token check: the worker answers (the function is unknown).
        let r = with.invoke(&invoke("f", "t")).await.unwrap();
        assert!(!r.success && r.json_result.contains("\"f"), "{}", r.json_result);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server on loopback that answers every connection with `answer` and closes it.
fn impostor(answer: &'static [u8]) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(answer);
        }
    });
    port
}

#[test]
fn a_server_that_is_not_grpc_fails_the_call_promptly() {
    runtime().block_on(async {
        for answer in [&b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..], b"", b"\x00\x00\x12\x04garbage"] {
            let port = impostor(answer);
            let endpoint = format!("http://127.0.0.1:{port}");
            let outcome = tokio::time::timeout(Duration::from_secs(10), async {
                let c =
                    LeanClient::connect(&endpoint, &rpc::auth::ClientAuth::none()).await.map_err(|e| e.to_string())?;
                c.invoke(&invoke("f", "t")).await.map_err(|e| e.to_string())
            })
            .await
            .expect("the call neither answered nor failed in 10 s");
            assert!(outcome.is_err(), "{:?} answered {outcome:?}", String::from_utf8_lossy(answer));
        }
        let e = LeanClient::connect("https://127.0.0.1:1", &rpc::auth::ClientAuth::none()).await.err().unwrap();
        assert!(e.to_string().contains("only http://"), "{e}");
    });
}

#[test]
fn control_plane_measures_with_lean_clients_and_awake_cpus() {
    let d = temp_dir("control-plane");
    let out = d.join("cp.json");
    let o = load_gen(&[
        "control-plane",
        "--clients",
        "1,3",
        "--duration-s",
        "0.5",
        "--warmup-s",
        "0.1",
        "--keep-cpus-awake",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{o:?}");
    let report: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(report["keep_cpus_awake"], true);
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.iter().map(|s| s["clients"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 3]);
    for step in steps {
        assert!(step["requests"].as_u64().unwrap() > 10 && step["errors"] == 0, "{step}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_open_loop_sends_every_invocation_on_schedule_over_its_connections() {
    let w = WorkerProcess::start(json!({"log_level": "warn"}));
    runtime().block_on(async {
        let (_, endpoint) = registered(&w, "open").await;
        let run = |target: &str, rate: f64, ms: u64, connections: usize, name: &str| {
            let (target, req) = (target.to_string(), invoke(name, "o"));
            async move {
                iluvatar_load_gen::sending::open_loop::run(&target, rate, Duration::from_millis(ms), connections, req)
                    .await
            }
        };
        let r = run(&endpoint, 200.0, 500, 3, "open").await.unwrap();
        assert_eq!((r.sent, r.errors), (100, 0), "{:?}", r.first_error);
        assert_eq!((r.latency.len(), r.lateness.len()), (100, 100));
        // A refused function: every call is counted as an error, none lost.
        let r = run(&endpoint, 100.0, 200, 2, "nobody").await.unwrap();
        assert_eq!((r.sent, r.errors, r.latency.len()), (20, 20, 0));
        assert!(r.first_error.unwrap().contains("nobody"));
        // Nothing listens: the run fails before sending, naming the address.
        let e = run("http://127.0.0.1:1", 10.0, 100, 1, "x").await.err().unwrap();
        assert!(format!("{e:#}").contains("127.0.0.1:1"), "{e:#}");
    });
}
